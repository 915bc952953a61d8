"""The clustering input check (pipeline.clustering.input_check): one read of every file for the vectors and the ids.

Real Parquet on a moto S3 server behind the counting proxy (tests/s3_fault_proxy.py), the session's local Ray.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.job import run_cluster
from pipeline.config import StorageConfig, parse_config
from pipeline.storage import resolve

pytestmark = pytest.mark.slow


class Stop(Exception):
    pass


def test_the_input_check_reads_each_file_once(ray_session, s3_bucket, proxy, monkeypatch):
    """The vectors' check and the duplicate-id check each read every input file (the vectors, then the ids again)
    before k-means: +1-6 s at 1M x 384. One read serves both now: up to the job's own dataset read, every file but
    the first (whose footer the job opens to plan) is fetched with the GETs of one read of its columns."""
    client, bucket = s3_bucket
    rng = np.random.default_rng(0)
    for f in range(3):
        x = rng.normal(size=(300, 16)).astype(np.float32)
        table = pa.table({"id": [f"f{f}-{i}" for i in range(300)], "embedding": pa.array(list(x))})
        body = io.BytesIO()
        pq.write_table(table, body, row_group_size=100)
        client.put_object(Bucket=bucket, Key=f"emb/part-{f}.parquet", Body=body.getvalue())
    storage = StorageConfig(endpoint_url=proxy.url)

    def gets(key: str) -> int:
        return proxy.forwarded[("GET", f"/{bucket}/{key}")]

    one_read = {}
    for f in range(3):  # one read of a file's columns, as a task reads it
        loc = resolve(f"s3://{bucket}/emb/part-{f}.parquet", storage)
        before = gets(f"emb/part-{f}.parquet")
        for _ in pq.ParquetFile(loc.path, filesystem=loc.fs).iter_batches(columns=["embedding", "id"]):
            pass
        one_read[f] = gets(f"emb/part-{f}.parquet") - before
    assert all(n > 0 for n in one_read.values())
    proxy.forwarded.clear()

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(ray.data, "read_parquet", stop)  # the job's dataset read: the checks are done
    cfg = parse_config(
        ClusterConfig,
        {
            "input": {"uri": f"s3://{bucket}/emb"},
            "output": {"uri": f"s3://{bucket}/out"},
            "storage": {"endpoint_url": proxy.url},
            "clustering": {"k": 2},
        },
    )
    with pytest.raises(Stop):
        run_cluster(cfg)
    assert {f: gets(f"emb/part-{f}.parquet") for f in (1, 2)} == {1: one_read[1], 2: one_read[2]}


@pytest.mark.parametrize(
    ("second", "said"),
    [
        (
            {"id": ["x"], "vector": [[1.0, 0.0]], "text": ["t"]},
            (
                r"part-1.parquet: column 'embedding' \(read by the job\) not found; its columns are \['id', 'vector', "
                r"'text'\], while part-0.parquet has it: .* rename the column in that file, or move the file out"
            ),
        ),
        ({"embedding": [[1.0, 0.0]], "text": ["t"]}, r"part-1.parquet: column 'id' \(read by the job\) not found"),
        ({"id": ["x"], "embedding": [[1.0, 0.0]]}, r"part-1.parquet: column 'text' \(read by the job\) not found"),
        (  # two files of two widths: both are named (it named the later one alone: which is the odd one?)
            {"id": ["x"], "embedding": [[1.0, 0.0, 0.0]], "text": ["t"]},
            (
                r"part-1.parquet: embedding column 'embedding': the vector of 'x' has 3 values, the input's first "
                r"\(in .*/part-0.parquet\) has 2; all vectors must have the same dim"
            ),
        ),
        (  # another tool's missing vector: it was 'the vector of 'y' has 2 values, row 0's has 0'
            {"id": ["x", "y"], "embedding": [[], [0.0, 1.0]], "text": ["t", "u"]},
            r"part-1.parquet: embedding column 'embedding' has 1 empty vectors \(no values; the first: 'x'\)",
        ),
        (  # another tool's ids that are not one value: the cast failed in the Ray task, a Ray traceback
            {"id": [[1, 2]], "embedding": [[1.0, 0.0]], "text": ["t"]},
            r"part-1.parquet: the id column \(input.id_column 'id'\) has type list<element: int64>; an id is one text",
        ),
        (
            {"id": [{"doc": 1}], "embedding": [[1.0, 0.0]], "text": ["t"]},
            r"part-1.parquet: the id column \(input.id_column 'id'\) has type struct<doc: int64>",
        ),
        (  # bytes ids (a digest) that are not UTF-8: ArrowInvalid in the Ray task
            {"id": pa.array([b"ok", b"\xff\xfe"]), "embedding": [[1.0, 0.0], [0.0, 1.0]], "text": ["t", "u"]},
            r"part-1.parquet: row 1 \(rows from 0 in the file\) has an id that is not UTF-8 text \(b'\\xff\\xfe'",
        ),
        (  # pandas' integer ids with a gap are float64 with NaN: the row was clustered under the id 'nan'
            {"id": [7.0, float("nan")], "embedding": [[1.0, 0.0], [0.0, 1.0]], "text": ["t", "u"]},
            r"part-1.parquet: row 1 \(rows from 0 in the file\) has a NaN id \(pandas' missing value\)",
        ),
        (
            {"id": ["x", None], "embedding": [[1.0, 0.0], [0.0, 1.0]], "text": ["t", "u"]},
            (
                r"part-1.parquet: row 1 \(rows from 0 in the file\) has a null id \(input.id_column 'id'\): .* drop "
                "those rows or fill their ids"
            ),
        ),
    ],
)
def test_a_later_file_of_another_shape_is_named_with_its_row_and_what_to_do(tmp_path, second, said):
    """Only the first file's schema was checked: a later file without the embedding or id column failed 'cannot
    read .../part-1.parquet as parquet: KeyError: ...' (read as a corrupt file), one without a carried column failed
    later in a Ray Data block, and a null id failed there too naming neither file nor row. Plain function, no Ray."""
    from pipeline.clustering.input_check import checked_file_digests
    from pipeline.clustering.job import inspect_input
    from pipeline.errors import UserError

    pq.write_table(pa.table({"id": ["a"], "embedding": [[1.0, 0.0]], "text": ["t"]}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table(second), tmp_path / "part-1.parquet")
    raw = {"input": {"uri": str(tmp_path), "text_column": "text"}, "output": {"uri": "o"}, "clustering": {"k": 1}}
    root, files = resolve(str(tmp_path), StorageConfig()), ["part-0.parquet", "part-1.parquet"]
    dim, paths, dim_from = inspect_input(parse_config(ClusterConfig, raw), root, files)
    checked_file_digests(root, files[0], 0, "embedding", paths, "id", False, dim, 4, files[0], dim_from)
    with pytest.raises(UserError, match=said):
        checked_file_digests(root, files[1], 1, "embedding", paths, "id", False, dim, 4, files[0], dim_from)


def test_an_embedding_column_of_another_type_names_the_file_and_what_to_do(tmp_path):
    from pipeline.clustering.job import inspect_input
    from pipeline.errors import UserError

    pq.write_table(pa.table({"id": ["a"], "embedding": ["0.1,0.2"]}), tmp_path / "part-0.parquet")
    raw = {"input": {"uri": str(tmp_path)}, "output": {"uri": "o"}, "clustering": {"k": 1}}
    with pytest.raises(
        UserError,
        match=r"part-0.parquet: embedding column 'embedding' has type string, expected a list of floats; set "
        r"input.embedding_column to a column of float vectors",
    ):
        inspect_input(parse_config(ClusterConfig, raw), resolve(str(tmp_path), StorageConfig()), ["part-0.parquet"])


def test_files_that_disagree_on_a_columns_type_are_read_as_one_schema_or_refused_naming_two():
    """Ray Data merged a sample of the files' schemas and failed on string ids beside integer ids; read_schema gives
    the read one schema: ids as strings, a top-level embedding as list<float32>, other columns promoted; a column
    that cannot be promoted is refused naming two files and their types."""
    from pipeline.clustering.input_check import read_schema
    from pipeline.clustering.vectors import InputColumnError

    paths = {"embedding": ("embedding",), "id": ("id",), "n": ("n",)}
    a = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), 8)), ("n", pa.int32())])
    b = pa.schema([("id", pa.int64()), ("embedding", pa.large_list(pa.float64())), ("n", pa.int64())])
    assert read_schema([("a", a), ("a2", a)], paths, "id", "embedding") is None  # they agree: Ray infers it
    assert read_schema([("a", a), ("b", b)], paths, "id", "embedding") == pa.schema(
        [("id", pa.string()), ("embedding", pa.list_(pa.float32())), ("n", pa.int64())]
    )
    c = a.set(2, pa.field("n", pa.list_(pa.int32())))
    with pytest.raises(InputColumnError, match=r"column 'n' has type int32 in a but list<item: int32> in c"):
        read_schema([("a", a), ("b", b), ("c", c)], paths, "id", "embedding")


def test_files_that_disagree_on_a_nested_id_or_vector_type_are_read_as_the_top_level_ones():
    """The same mix inside a struct (id_column: meta.id, embedding_column: meta.vec) was refused ("column 'meta' has
    type struct<id: string> ... struct<id: int64>"): the struct is now rebuilt along the id's and the vector's paths,
    the id a string, the vector list<float32>, its other fields promoted (in first-seen order); a field that cannot
    be promoted is refused by its dotted name."""
    from pipeline.clustering.input_check import read_schema
    from pipeline.clustering.vectors import InputColumnError

    paths = {"meta.vec": ("meta", "vec"), "meta.id": ("meta", "id")}

    def meta(*fields):
        return pa.schema([("meta", pa.struct(list(fields)))])

    a = meta(("id", pa.string()), ("n", pa.int32()), ("vec", pa.list_(pa.float16(), 8)))
    b = meta(("vec", pa.large_list(pa.float64())), ("id", pa.int64()), ("n", pa.int64()))
    c = meta(("id", pa.float64()), ("n", pa.int32()), ("vec", pa.list_(pa.float32())))
    want = meta(("id", pa.string()), ("n", pa.int64()), ("vec", pa.list_(pa.float32())))
    assert read_schema([("a", a), ("b", b), ("c", c)], paths, "meta.id", "meta.vec") == want
    deeper = {"doc.meta.id": ("doc", "meta", "id"), "embedding": ("embedding",)}
    top = [("embedding", pa.list_(pa.float32()))]
    one = pa.schema([("doc", pa.struct([("meta", pa.struct([("id", pa.int64())]))])), *top])
    two = pa.schema([("doc", pa.struct([("meta", pa.struct([("id", pa.string())]))])), *top])
    assert read_schema([("1", one), ("2", two)], deeper, "doc.meta.id", "embedding").field("doc").type == (
        two.field("doc").type
    )
    odd = meta(("id", pa.string()), ("n", pa.list_(pa.int32())), ("vec", pa.list_(pa.float32())))
    with pytest.raises(InputColumnError, match=r"column 'meta.n' has type int32 in a but list<item: int32> in odd"):
        read_schema([("a", a), ("odd", odd)], paths, "meta.id", "meta.vec")


@pytest.mark.parametrize("texts", [pa.array([["a", "b"]]), pa.array([{"en": "a"}])])
def test_a_text_column_dedup_cannot_count_is_refused_before_the_fit(tmp_path, texts):
    """dedup keep: longest counts the characters of input.text_column: a list or struct column (another tool's
    tokens, a translation struct) failed as a Ray Data UserCodeException in the assignment pass, after the whole fit.
    Now the first file's check names it; other keeps carry such a column as it is."""
    from pipeline.clustering.job import inspect_input
    from pipeline.errors import UserError

    pq.write_table(pa.table({"id": ["a"], "embedding": [[1.0, 0.0]], "text": texts}), tmp_path / "part-0.parquet")
    raw = {
        "input": {"uri": str(tmp_path), "text_column": "text"},
        "output": {"uri": "o"},
        "clustering": {"k": 1, "dedup": {"eps": 0.01, "keep": "longest"}},
    }
    root = resolve(str(tmp_path), StorageConfig())
    with pytest.raises(
        UserError, match=r"part-0.parquet: input.text_column 'text' has type (list|struct)<.*>, and dedup"
    ):
        inspect_input(parse_config(ClusterConfig, raw), root, ["part-0.parquet"])
    raw["clustering"]["dedup"]["keep"] = "first"
    assert inspect_input(parse_config(ClusterConfig, raw), root, ["part-0.parquet"])[0] == 2


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary(), pa.binary_view(), pa.binary(3)], ids=str)
def test_a_text_that_is_not_utf8_is_counted_as_decoded_with_replacement_for_dedup_keep_longest(kind):
    """Bytes texts that are not UTF-8 failed as a Ray Data UserCodeException ('Invalid UTF8 payload') in the
    assignment pass, after the whole fit; then as an error naming the row. A tie-break between near copies is no
    reason to stop: such a text counts the characters of its decoding with U+FFFD per bad sequence (errors="replace")."""
    from pipeline.clustering.distributed import text_lengths

    values = [b"abc", None, b"\xff\xfe\xe9"] if kind != pa.binary(3) else [b"abc", None, b"a\xe9b"]
    texts = pa.chunked_array([pa.array(values, kind)])
    got = text_lengths(texts, "text", ["d0", "d1", "d2"])
    assert got.to_pylist() == [3, 0, len(values[2].decode("utf-8", "replace"))]
    assert got.type == text_lengths(pa.chunked_array([pa.array(["ab"])]), "text", ["d"]).type
