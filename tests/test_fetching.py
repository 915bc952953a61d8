"""A pack's files fetched ahead of the one being read (pipeline.fetching): overlapped round trips, rows in file order,
a transient fault on one file retried, a file that cannot be read named."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from s3_fault_proxy import FaultRule

from pipeline.columns import FILE_DONE, ROW, SOURCE
from pipeline.config import StorageConfig
from pipeline.fetching import fetched_ahead
from pipeline.file_formats import InputFileError
from pipeline.reading import ReadSpec
from pipeline.storage import list_inputs
from pipeline.transient_errors import TransientStorageError, retrying
from pipeline.units import plan_units, read_unit

FILES = 40


def rows_of(f: int) -> list[dict]:
    return [{"id": f"{f}-{r}", "text": f"file {f} row {r}"} for r in range(1 + f % 3)]


def expected(files: int = FILES) -> list[tuple[str, int, str]]:
    """(source, row, id) of every row of the pack, in file order."""
    return [(f"f{f:02d}.jsonl", r, row["id"]) for f in range(files) for r, row in enumerate(rows_of(f))]


def read_pack(uri: str, storage: StorageConfig) -> pa.Table:
    root, listed = list_inputs(uri, storage)
    [pack] = plan_units(root, listed, "jsonl", 256 << 20)
    assert len(pack.paths) == len(listed)
    spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column="id", keep_columns=())
    return pa.concat_tables(read_unit(spec, pack))


def in_order(table: pa.Table) -> list[tuple[str, int, str]]:
    return list(zip(table.column(SOURCE).to_pylist(), table.column(ROW).to_pylist(), table.column("id").to_pylist()))


@pytest.fixture
def s3_pack(s3_bucket):
    client, bucket = s3_bucket
    for f in range(FILES):
        body = "".join(json.dumps(r) + "\n" for r in rows_of(f)).encode()
        client.put_object(Bucket=bucket, Key=f"corpus/f{f:02d}.jsonl", Body=body)
    return client, bucket


def test_a_local_pack_reads_its_rows_in_file_order(tmp_path):
    for f in range(FILES):
        (tmp_path / f"f{f:02d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_of(f)))
    got = read_pack(str(tmp_path), StorageConfig())
    assert in_order(got) == expected()
    assert sum(got.column(FILE_DONE).to_pylist()) == FILES


def test_a_pack_on_a_slow_store_overlaps_its_fetches_rows_in_file_order_and_a_fault_retried(s3_pack, proxy):
    """Every request waits 50 ms (a store far away) and the first GET of one file is a 503: the pack's files were
    fetched one at a time (the proxy never held two requests at once); now several are in flight, the rows still
    come in file order, and the faulted file fails the read as a transient error naming it, which the read stage
    retries (Ray Data's retried_map_errors; here pipeline.transient_errors.retrying) and then reads."""
    _, bucket = s3_pack
    proxy.latency = 0.05
    proxy.rules = [FaultRule(("GET",), rf"^/{bucket}/corpus/f07\.jsonl$", count=1, kinds=(503,))]
    storage = StorageConfig(endpoint_url=proxy.url)
    with pytest.raises(TransientStorageError, match=r"f07\.jsonl"):
        read_pack(f"s3://{bucket}/corpus", storage)
    proxy.rules = [FaultRule(("GET",), rf"^/{bucket}/corpus/f07\.jsonl$", count=1, kinds=(503,))]
    got = retrying(read_pack, retries=2)(f"s3://{bucket}/corpus", storage)
    assert in_order(got) == expected()
    assert proxy.rules[0].injected == 1 and proxy.retries_seen() >= 1
    assert proxy.max_in_flight > 1


def test_a_file_of_the_pack_that_cannot_be_read_is_named(s3_pack, proxy):
    """A file that is gone by the time its turn comes (deleted after the listing) fails the read naming it, even
    though it was fetched ahead of its turn."""
    client, bucket = s3_pack
    root, listed = list_inputs(f"s3://{bucket}/corpus", StorageConfig(endpoint_url=proxy.url))
    [pack] = plan_units(root, listed, "jsonl", 256 << 20)
    client.delete_object(Bucket=bucket, Key="corpus/f05.jsonl")
    spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column="id", keep_columns=())
    with pytest.raises(InputFileError, match=r"f05\.jsonl"):
        list(read_unit(spec, pack))


def test_fetched_ahead_holds_at_most_its_window_beyond_the_current_file(tmp_path, monkeypatch):
    """With a window of 3, no more than the current file and the 3 after it are opened while it is read: memory
    stays bounded however many files the pack has."""
    import pyarrow.fs as pafs

    import pipeline.fetching
    from pipeline.file_formats import open_input

    opened: list[str] = []
    monkeypatch.setattr(pipeline.fetching, "open_input", lambda fs, path: opened.append(path) or open_input(fs, path))
    paths = []
    for f in range(10):
        (tmp_path / f"{f}.txt").write_text(f"{f}\n")
        paths.append(str(tmp_path / f"{f}.txt"))
    with fetched_ahead(pafs.LocalFileSystem(), paths, ahead=3) as openers:
        for k, opener in enumerate(openers):
            assert opener().read() == f"{k}\n".encode()
            assert len(opened) <= k + 1 + 3
    assert sorted(opened) == sorted(paths)
