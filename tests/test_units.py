"""Units (pipeline.units) and the pure part of the duplicate-id pass: planning, reading, tallying, bucketing."""

from __future__ import annotations

import gzip
import itertools

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.columns import FILE_DONE
from pipeline.config import StorageConfig
from pipeline.duplicate_ids import bucket_duplicates, duplicate_error, id_digests, read_units
from pipeline.reading import REJECT, ROW, SOURCE, ReadSpec
from pipeline.storage import list_inputs, resolve
from pipeline.units import (
    UNIT,
    UNIT_ROWS,
    Unit,
    UnitProgress,
    file_groups,
    plan_units,
    read_unit,
    split_ranges,
    unit_items,
    units_of,
)
from pipeline.writing import STATS_SCHEMA, unit_file_name, unit_of_file


def test_split_ranges_closes_a_range_once_it_reaches_the_limit():
    assert split_ranges([5, 5, 5, 5, 5], 10) == [(0, 2), (2, 4), (4, 5)]
    assert split_ranges([50, 1], 10) == [(0, 1), (1, 2)]
    assert split_ranges([], 10) == [(0, 0)]


@pytest.fixture
def corpus(tmp_path):
    table = pa.table({"id": [f"r{i}" for i in range(100)], "text": [f"text {i}" for i in range(100)]})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=10)
    pq.write_table(table.slice(0, 5), tmp_path / "small.parquet")
    return tmp_path


def test_large_parquet_files_split_into_row_group_units_read_with_file_row_numbers(corpus):
    root, listed = list_inputs(str(corpus), StorageConfig())
    big = next(f for f in listed if f.path == "big.parquet")
    units = plan_units(root, listed, "parquet", unit_bytes=big.size // 3)
    assert [u.path for u in units].count("small.parquet") == 1
    split = [u for u in units if u.path == "big.parquet"]
    assert len(split) >= 2 and split[0].row_groups[0] == 0 and split[-1].row_groups[1] == 10
    assert all(a.row_groups[1] == b.row_groups[0] for a, b in itertools.pairwise(split))
    assert len({u.key for u in units}) == len(units)
    spec = ReadSpec(root=root, format="parquet", text_column="text", id_column="id", keep_columns=())
    rows = []
    for unit in split:
        blocks = list(read_unit(spec, unit))
        got = pa.concat_tables(blocks)
        assert set(got.column(UNIT).to_pylist()) == {unit.key}
        assert blocks[-1].column(UNIT_ROWS)[0].as_py() == got.num_rows  # the count rides on the last block
        rows += got.column(ROW).to_pylist()
        assert got.column("id").to_pylist() == [f"r{r}" for r in got.column(ROW).to_pylist()]
    assert rows == list(range(100))
    assert plan_units(root, listed, "parquet", unit_bytes=10 * big.size) == [
        Unit("big.parquet", 0),
        Unit("small.parquet", 1),
    ]


def stats(unit: str, rows: int, unit_rows: int = -1, rejected: int = 0) -> pa.Table:
    row = {name: 0 for name in STATS_SCHEMA.names}
    row.update({UNIT: unit, UNIT_ROWS: unit_rows, "rows": rows, "rows_embedded": rows - rejected})
    row.update(rows_rejected=rejected, embed_seconds=0.0, actor_vectors=[(f"actor-{unit}", rows - rejected)])
    row.update(read_as=[], actor_started=[(f"actor-{unit}", 100.0 + rows)], tokenized_at=200.0 + rows)
    return pa.Table.from_pylist([row], schema=STATS_SCHEMA)


def test_unit_progress_completes_a_unit_when_its_rows_are_written_and_catches_extra_rows():
    a, b, empty = Unit("a.jsonl", 0), Unit("b.jsonl", 1), Unit("empty.jsonl", 2)
    progress = UnitProgress([a, b, empty])
    assert progress.add(stats(a.key, 3)) == []
    done = progress.add(stats(a.key, 2, unit_rows=5, rejected=1))
    assert done == [(a, {**dict.fromkeys(done[0][1], 0), "rows": 5, "rows_embedded": 4, "rows_rejected": 1})]
    assert progress.open == {}  # a completed unit leaves the driver's tallies
    progress.add(stats(b.key, 1))
    assert progress.actor_vectors == {f"actor-{a.key}": 4, f"actor-{b.key}": 1}  # the summary's vectors_per_actor
    # the summary's start-up timings: each actor's earliest start, the latest row tokenized
    assert progress.actor_started == {f"actor-{a.key}": 102.0, f"actor-{b.key}": 101.0}
    assert progress.tokenized_at == 203.0
    with pytest.raises(RuntimeError, match="b.jsonl: 1 of -1 rows written"):
        progress.finish()
    with pytest.raises(RuntimeError, match="b.jsonl: 3 rows written for 2 read"):
        progress.add(stats(b.key, 2, unit_rows=2))
    assert [u for u, _ in UnitProgress([empty]).finish()] == [empty]


def test_output_file_names_carry_the_unit_key():
    group = pa.table({ROW: pa.array([3, 4], pa.int64()), "chunk_index": pa.array([0, 0], pa.int32())})
    name = unit_file_name(group, "0123456789abcdef")
    assert name == unit_file_name(group, "0123456789abcdef")  # deterministic: a retried write overwrites
    assert unit_of_file(f"{name}-0000.parquet") == unit_of_file(f"{name}.parquet") == "0123456789abcdef"
    assert unit_of_file("part-0123456789abcdef0123-0000.parquet") is None  # not written per unit
    # two blocks of a pack of files with the same row counts: the same row numbers, other files, other names
    first = group.append_column(SOURCE, pa.array(["a.jsonl", "b.jsonl"]))
    second = group.append_column(SOURCE, pa.array(["c.jsonl", "d.jsonl"]))
    assert unit_file_name(first, "0123456789abcdef") != unit_file_name(second, "0123456789abcdef")


def test_bucket_keeps_the_first_row_of_each_id_in_file_order(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id":"x","text":"1"}\n{"id":"y","text":"2"}\n{"id":"x","text":"3"}\n')
    (tmp_path / "b.jsonl").write_text('{"id":"y","text":"4"}\n{"id":"x","text":""}\n{"id":"z","text":"5"}\n')
    root = resolve(str(tmp_path), StorageConfig())
    spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column="id", keep_columns=())
    # b is read first: the order of the input to a bucket must not matter
    digests = pa.concat_tables([id_digests(spec, Unit("b.jsonl", 1), 4), id_digests(spec, Unit("a.jsonl", 0), 4)])
    assert digests.num_rows == 5  # the empty text is a reject already and takes no part
    dups = bucket_duplicates(digests, ["a.jsonl", "b.jsonl"]).sort_by(
        [("file_index", "ascending"), ("row", "ascending")]
    )
    assert list(zip(dups.column("file_index").to_pylist(), dups.column("row").to_pylist())) == [(0, 2), (1, 0)]
    assert dups.column("reason").to_pylist() == [
        "duplicate id (first at a.jsonl row 0)",
        "duplicate id (first at a.jsonl row 1)",
    ]
    err = duplicate_error(2, dups.to_pylist(), ["a.jsonl", "b.jsonl"])
    assert str(err).startswith("2 rows repeat an earlier id: a.jsonl row 2 repeats a.jsonl row 0; b.jsonl row 0")


def tiny_files(folder, count: int, first: int = 0) -> list[str]:
    """`count` JSONL files of 1-3 rows, ids `<file>-<row>`."""
    names = []
    for f in range(first, first + count):
        name = f"d{f % 3}/f{f:04d}.jsonl"
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(
            "".join(f'{{"id": "{f}-{r}", "text": "row {r} of {f}"}}\n' for r in range(1 + f % 3))
        )
        names.append(name)
    return names


def test_small_files_are_packed_into_units_read_as_few_blocks(tmp_path, monkeypatch):
    """Thousands of tiny files were a unit each: one read task, one marker and at least one output file per file
    (4,000 files of 1-3 rows: 4,000 Parquet files and 4.2x the wall time of the same rows in one file;
    bench/results/corpus_shapes.md). Consecutive small files are now one unit, read as one block."""
    monkeypatch.setattr("pipeline.units.PACK_FILES", 50)
    tiny_files(tmp_path, 250)
    (tmp_path / "d1" / "large.jsonl").write_text('{"id": "L", "text": "' + "x" * 7000 + '"}\n')
    root, listed = list_inputs(str(tmp_path), StorageConfig())
    size = {f.path: f.size for f in listed}
    index = {f.path: i for i, f in enumerate(listed)}
    for unit_bytes, limit in ((16 * 6000, 6000), (16 * 1000, 1000)):  # packs closed by their file count, their bytes
        units = plan_units(root, listed, "jsonl", unit_bytes)
        assert [p for u in units for p in u.paths] == [f.path for f in listed]  # every file once, in listing order
        assert [u for u in units if "d1/large.jsonl" in u.paths] == [Unit("d1/large.jsonl", index["d1/large.jsonl"])]
        for unit, after in itertools.pairwise(units):
            assert unit.parts() == [Unit(p, unit.file_index + k) for k, p in enumerate(unit.paths)]
            if unit.path == "d1/large.jsonl" or after.path == "d1/large.jsonl":
                continue
            assert len(unit.paths) <= 50 and sum(size[p] for p in unit.paths) <= limit
            assert len(unit.paths) == 50 or sum(size[p] for p in (*unit.paths, after.path)) > limit
        assert len({u.key for u in units}) == len(units)
    assert [len(u.paths) for u in plan_units(root, listed, "jsonl", 16 * 6000)] == [50, 50, 50, 17, 1, 50, 33]

    pack = plan_units(root, listed, "jsonl", 16 * 6000)[1]  # 1-row files of d0, 2-row files of d1
    assert pack.record()["files"] == list(pack.paths) and units_of(pa.Table.from_pylist(unit_items([pack]))) == [pack]
    spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column="id", keep_columns=())
    blocks = list(read_unit(spec, pack))
    assert len(blocks) == 1  # 50 files: one block, not 50
    got = blocks[0]
    assert got.column(UNIT_ROWS).to_pylist()[-1] == got.num_rows == sum(
        1 + int(p[-10:-6]) % 3 for p in pack.paths
    ) and set(got.column(UNIT).to_pylist()) == {pack.key}
    assert got.column(SOURCE).to_pylist() == [p for p in pack.paths for _ in range(1 + int(p[-10:-6]) % 3)]
    assert got.column("id").to_pylist() == [
        f"{int(s[-10:-6])}-{r}" for s, r in zip(got.column(SOURCE).to_pylist(), got.column(ROW).to_pylist())
    ]
    assert pc.sum(got.column(FILE_DONE)).as_py() == 50  # each file's last row: the progress counts files


def test_a_pack_rejects_each_files_repeats_under_its_own_file_index(tmp_path):
    """The duplicate-id pass and the read stage take a pack file by file: digests and repeats carry each file's
    own position in the listing, so a repeat names the file of the first copy."""
    tiny_files(tmp_path, 6)
    (tmp_path / "d2" / "f0005.jsonl").write_text('{"id": "1-0", "text": "a later copy"}\n')  # id of d1/f0001 row 0
    root, listed = list_inputs(str(tmp_path), StorageConfig())
    [pack] = plan_units(root, listed, "jsonl", 256 << 20)
    files = [f.path for f in listed]
    spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column="id", keep_columns=())
    digests = id_digests(spec, pack, 4)
    source = dict(zip(range(len(files)), files))
    assert sorted(set(digests.column("file_index").to_pylist())) == list(range(6))
    dups = bucket_duplicates(digests, files)
    assert dups.to_pylist() == [
        {
            "file_index": 5,
            "row": 0,
            "first_file_index": 2,
            "first_row": 0,
            "reason": "duplicate id (first at d1/f0001.jsonl row 0)",
        }
    ]
    assert source[5] == "d2/f0005.jsonl"
    pq.write_table(dups, tmp_path / "dups.parquet")  # laid out as the pre-pass writes them: by file
    out = tmp_path / "_dups" / "file_index=5"
    out.mkdir(parents=True)
    pq.write_table(dups.drop_columns(["file_index"]), out / "part-0.parquet")
    rows = pa.concat_tables(
        read_units(pa.Table.from_pylist(unit_items([pack])), spec, resolve(str(tmp_path / "_dups"), StorageConfig()))
    )
    rejected = rows.filter(pc.invert(pc.is_null(rows.column(REJECT))))
    assert list(zip(rejected.column(SOURCE).to_pylist(), rejected.column(REJECT).to_pylist())) == [
        ("d2/f0005.jsonl", "duplicate id (first at d1/f0001.jsonl row 0)")
    ]


def test_file_groups_give_each_file_once_by_unit(corpus):
    """The kept-column pass reads whole files: one task per unit's files (a pack is one task; it was one per file),
    and a Parquet file split into row-group units once."""
    tiny_files(corpus, 5)
    root, listed = list_inputs(str(corpus), StorageConfig())
    big = next(f for f in listed if f.path == "big.parquet")
    units = plan_units(root, listed, None, unit_bytes=big.size // 3)
    assert sum(u.path == "big.parquet" for u in units) >= 2
    groups = file_groups(units)
    assert [p for g in groups for p in g] == [f.path for f in listed]
    assert ["big.parquet"] in groups and len(groups) < len(listed)


def corrupt_parquet_files() -> dict[str, bytes]:
    """Parquet files as interrupted copies and stray files leave them, by what is wrong."""
    good = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(10)], "text": ["t"] * 10}), good)
    data = good.getvalue().to_pybytes()
    return {
        "cut.parquet": data[:-12],  # footer cut off
        "length.parquet": data[:-8] + (10**6).to_bytes(4, "little") + b"PAR1",  # a footer length past the start
        "magic.parquet": b"PAR1",
        "thrift.parquet": data[:4] + b"\x00" * (len(data) - 12) + data[-8:],  # footer bytes garbled
        "json.parquet": b'{"id": "j", "text": "not parquet at all"}\n',  # named .parquet, but JSON Lines
    }


@pytest.mark.parametrize("unit_bytes", [1 << 20, 64], ids=["packed", "one file per unit, footers read at plan"])
@pytest.mark.parametrize("keep", [(), ("meta",)], ids=["", "kept column"])
def test_a_corrupt_file_is_one_reject_row_of_its_unit_and_the_rest_is_read(tmp_path, unit_bytes, keep):
    """A corrupt Parquet file failed the job when its read task reached it, maybe hours into a run, after other
    units were committed (and the rerun failed there again, or was refused once the file was repaired). Now the
    file is one reject row naming it and what to do, wherever it is in the listing; the other files are read."""
    good = pa.table({"id": ["g0", "g1"], "text": ["one", "two"], "meta": [1, 2]})
    names = []
    for k, (name, data) in enumerate(corrupt_parquet_files().items()):
        pq.write_table(good.set_column(0, "id", pa.array([f"{k}-a", f"{k}-b"])), tmp_path / f"{k}-good.parquet")
        (tmp_path / f"{k}-{name}").write_bytes(data)
        names.append(f"{k}-{name}")
    (tmp_path / "5-zero.parquet").write_bytes(b"")  # a writer that crashed: no rows, no reject
    root, listed = list_inputs(str(tmp_path), StorageConfig())
    units = plan_units(root, listed, None, unit_bytes)
    assert [p for u in units for p in u.paths] == [f.path for f in listed]
    assert (len(units) == 1) == (unit_bytes > 64)
    spec = ReadSpec(root=root, format=None, text_column="text", id_column="id", keep_columns=keep)
    got = pa.concat_tables([b for u in units for b in read_unit(spec, u)], promote_options="permissive")
    rejects = got.filter(pc.invert(pc.is_null(got.column(REJECT))))
    assert sorted(got.filter(pc.is_null(got.column(REJECT))).column("id").to_pylist()) == sorted(
        f"{k}-{ab}" for k in range(5) for ab in "ab"
    )
    assert rejects.column(SOURCE).to_pylist() == names and rejects.column(ROW).to_pylist() == [0] * 5
    for name, reason in zip(names, rejects.column(REJECT).to_pylist()):
        assert reason.startswith(
            (
                f"unreadable file: cannot read {tmp_path}/{name} as parquet",
                f"unreadable file: {tmp_path}/{name} is read as parquet but looks like",
            )
        ), reason
    assert all("embed it on its own" in r for r in rejects.column(REJECT).to_pylist()[:4])
    assert pc.sum(got.column(FILE_DONE)).as_py() == 10  # the corrupt files count as done (the empty one: no row)


def test_a_gzip_file_cut_short_keeps_the_rows_before_the_cut_and_rejects_the_rest(tmp_path):
    rows = b"".join(b'{"id": "r%d", "text": "row %d %s"}\n' % (i, i, bytes(range(97, 123))) for i in range(30000))
    data = gzip.compress(rows)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])
    root, listed = list_inputs(str(tmp_path), StorageConfig())
    spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column="id", keep_columns=())
    (unit,) = plan_units(root, listed, None, 1 << 20)
    got = pa.concat_tables(read_unit(spec, unit))
    kept = got.column(ROW).to_pylist()[:-1]
    assert kept == list(range(len(kept))) and len(kept) % 8192 == 0 and len(kept) >= 8192
    assert got.column(REJECT).to_pylist()[:-1] == [None] * len(kept)
    assert got.column(ROW)[-1].as_py() == len(kept)
    assert got.column(REJECT)[-1].as_py().startswith(f"unreadable file from row {len(kept)} on: cannot read ")
    assert got.column(UNIT_ROWS)[-1].as_py() == len(kept) + 1


def test_a_listed_file_whose_folder_this_node_lacks_is_named_not_read_as_no_rows(tmp_path):
    """A read task on a node without the input (a local path only the head has, a node added after the start's
    check: pipeline.node_paths) found every file gone and read it as no rows; the driver's node still had the files,
    so its check committed the units without them. A file deleted since the listing, its folder still there, is
    still no rows here (the driver's check names it)."""
    import shutil

    from pipeline.file_formats import InputFileError

    tiny_files(tmp_path, 6)  # d0/f0000, d1/f0001, d2/f0002, d0/f0003, ...
    root, listed = list_inputs(str(tmp_path), StorageConfig())
    [pack] = plan_units(root, listed, "jsonl", 256 << 20)
    spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column="id", keep_columns=())
    (tmp_path / "d0" / "f0000.jsonl").unlink()  # deleted since the listing
    rows = pa.concat_tables(read_units(pa.Table.from_pylist(unit_items([pack])), spec, None))
    assert sorted(set(rows.column(SOURCE).to_pylist())) == sorted(f"d{f % 3}/f{f:04d}.jsonl" for f in range(1, 6))
    shutil.rmtree(tmp_path / "d1")  # this node has no such folder
    with pytest.raises(InputFileError) as err:
        list(read_units(pa.Table.from_pylist(unit_items([pack])), spec, None))
    assert str(err.value).startswith(
        f"cannot read d1/f0001.jsonl of {tmp_path}: its folder {tmp_path}/d1 does not exist on the node that read it ("
    )
    assert "the input is a local path that this node does not have" in str(err.value)
