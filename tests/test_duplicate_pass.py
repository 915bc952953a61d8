"""The duplicate-id pre-pass gives the same repeats whether one task sees every digest or a hash shuffle splits them."""

from __future__ import annotations

import json
import shutil

import pyarrow.dataset as pads
import pytest

from pipeline import commit, duplicate_pass
from pipeline.config import ComputeConfig, StorageConfig
from pipeline.duplicate_ids import DuplicateIdError, file_duplicates
from pipeline.reading import ReadSpec
from pipeline.storage import list_inputs, resolve
from pipeline.units import plan_units

pytestmark = pytest.mark.slow
# 3 files; ids repeat within a file, across files, and one id three times
FILES = {
    "a.jsonl": ["x", "y", "x", "z"],
    "b.jsonl": ["y", "w", "q"],
    "c.jsonl": ["q", "x", "v"],
}
EXPECTED = {  # (file index, row) -> (first file index, first row)
    (0, 2): (0, 0),
    (1, 0): (0, 1),
    (2, 0): (1, 2),
    (2, 1): (0, 0),
}


def run_pass(root, out, policy: str) -> int:
    storage = StorageConfig()
    base, listed = list_inputs(str(root), storage)
    spec = ReadSpec(root=base, format="jsonl", text_column="text", id_column="id", keep_columns=())
    units = plan_units(base, listed, "jsonl", 1 << 28)
    target = resolve(str(out), storage)
    compute = ComputeConfig(cpus_per_io_task=0.5)
    return duplicate_pass.find_duplicate_ids(units, [f.path for f in listed], spec, policy, target, compute)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for name, ids in FILES.items():
        (root / name).write_text("".join(json.dumps({"id": i, "text": f"text {i}"}) + "\n" for i in ids))
    return root


@pytest.mark.parametrize("one_task_rows", [10**9, 0], ids=["one-task", "hash-shuffle"])
def test_repeats_are_the_same_with_or_without_the_shuffle(ray_session, corpus, tmp_path, monkeypatch, one_task_rows):
    """Up to ONE_TASK_ROWS ids one task finds and writes the repeats: no Ray Data pipeline runs (it ran two, to
    collect and to write them, more work than the whole pass on a small corpus: every nightly re-embed's)."""
    monkeypatch.setattr(duplicate_pass, "ONE_TASK_ROWS", one_task_rows)
    datasets = []
    from_refs = ray_session.data.from_arrow_refs
    monkeypatch.setattr(ray_session.data, "from_arrow_refs", lambda *a, **k: datasets.append(1) or from_refs(*a, **k))
    out = tmp_path / "dups"
    assert run_pass(corpus, out, "keep_first") == len(EXPECTED)
    assert len(datasets) == (0 if one_task_rows else 1)  # old code: 1 in the one-task case
    target = resolve(str(out), StorageConfig())
    assert commit.is_committed(target)
    found = {}
    for index in range(len(FILES)):
        for row, reason in file_duplicates(target, index).items():
            found[(index, row)] = reason
    names = list(FILES)
    assert found == {key: f"duplicate id (first at {names[f]} row {r})" for key, (f, r) in EXPECTED.items()}
    written = pads.dataset(str(out), format="parquet", partitioning="hive").to_table()
    assert written.num_rows == len(EXPECTED)


@pytest.mark.parametrize("one_task_rows", [10**9, 0], ids=["one-task", "hash-shuffle"])
def test_error_policy_names_the_first_repeats(ray_session, corpus, tmp_path, monkeypatch, one_task_rows):
    monkeypatch.setattr(duplicate_pass, "ONE_TASK_ROWS", one_task_rows)
    with pytest.raises(
        DuplicateIdError,
        match=r"^4 rows repeat an earlier id: a\.jsonl row 2 repeats a\.jsonl row 0; b\.jsonl row 0 repeats a\.jsonl "
        r"row 1; c\.jsonl row 0 repeats b\.jsonl row 2; c\.jsonl row 1 repeats a\.jsonl row 0 \(set",
    ):
        run_pass(corpus, tmp_path / "dups", "error")
    assert not (tmp_path / "dups").exists()


def test_a_reembed_night_reads_the_ids_of_changed_files_only_and_gives_the_same_repeats(ray_session, corpus, tmp_path):
    """The re-embed job's pass read the ids of every listed file each night anything changed: its cost grew with the
    corpus, not with the change. Each file's digests are now kept under its key (path, size, change token): a file
    whose key is unchanged is not read (here its bytes are replaced by text that is not JSON: reading it would reject
    every row, and its repeats would be gone), a changed key is read, and the kept digests of files no longer listed
    are deleted. The repeats are the ones a pass reading every file finds."""
    from pipeline.config import EmbedConfig
    from pipeline.objects import list_tree
    from pipeline.reembed.duplicates import check_ids, kept_digest_files

    storage = StorageConfig()
    base, listed = list_inputs(str(corpus), storage)
    files = [f.path for f in listed]
    spec = ReadSpec(root=base, format="jsonl", text_column="text", id_column="id", keep_columns=())
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": str(corpus), "format": "jsonl", "id_column": "id"}, "output": {"uri": "o"}}
    )
    kept_at = resolve(str(tmp_path / "ids"), storage)
    keys = {path: f"{path}-v1" for path in files}
    sizes = {f.path: f.size for f in listed}  # as the job passes them: the three small files are one unit
    first = check_ids(cfg, spec, files, resolve(str(tmp_path / "d1"), storage), sizes, keys, kept_at)
    assert len(list_tree(kept_at)) == 3
    good = (corpus / "a.jsonl").read_bytes()
    (corpus / "a.jsonl").write_text("not json\n" * 4)  # a.jsonl's key is unchanged: its kept digests count
    again = check_ids(cfg, spec, files, resolve(str(tmp_path / "d2"), storage), sizes, keys, kept_at)
    assert again == first and first["a.jsonl"] != first["b.jsonl"]
    (corpus / "a.jsonl").write_bytes(good)
    names = dict(zip(files, kept_digest_files(spec, files, keys), strict=True))  # b's kept digests copied over a's:
    shutil.copy(kept_at.join(names["b.jsonl"]).path, kept_at.join(names["a.jsonl"]).path)  # a.jsonl is read again
    assert check_ids(cfg, spec, files, resolve(str(tmp_path / "d2b"), storage), sizes, keys, kept_at) == first
    (corpus / "c.jsonl").write_text(json.dumps({"id": "new", "text": "t"}) + "\n")  # changed: read again
    changed = check_ids(
        cfg, spec, files, resolve(str(tmp_path / "d3"), storage), None, {**keys, "c.jsonl": "v2"}, kept_at
    )
    assert changed["c.jsonl"] == "none" and changed["a.jsonl"] == first["a.jsonl"]
    check_ids(cfg, spec, files[:2], resolve(str(tmp_path / "d4"), storage), None, keys, kept_at)  # c.jsonl gone
    assert len(list_tree(kept_at)) == 2
    read_all = check_ids(cfg, spec, files, resolve(str(tmp_path / "d5"), storage))  # no kept digests: every file read
    assert read_all == changed


def test_repeats_in_more_than_1024_files_are_written(ray_session, tmp_path):
    """Arrow's dataset write stops at 1024 partitions by default, and the repeats are partitioned by file: a corpus
    with repeats in more than 1024 files (thousands of small files, one shared id) failed the pass with 'Fragment
    would be written into 1029 partitions' (ArrowInvalid), in the one task and in Ray Data's write_parquet after the
    hash shuffle (both checked on the old code; the shuffle's write is now written_blocks, called here on a
    materialized dataset instead of running the 13 s shuffle). Small files are packed into few units (plan_units)."""
    root, files = tmp_path / "in", 1030
    root.mkdir()
    for i in range(files):
        (root / f"f{i:04d}.jsonl").write_text(json.dumps({"id": "shared", "text": "t"}) + "\n")
    out = tmp_path / "dups"
    assert run_pass(root, out, "keep_first") == files - 1
    target = resolve(str(out), StorageConfig())
    assert file_duplicates(target, 0) == {}
    for index in (1, 1024, files - 1):
        assert file_duplicates(target, index) == {0: "duplicate id (first at f0000.jsonl row 0)"}
    written = pads.dataset(str(out), format="parquet", partitioning="hive").to_table()
    assert written.num_rows == files - 1
    shuffled = resolve(str(tmp_path / "shuffled"), StorageConfig())
    repeats = ray_session.data.from_arrow([written.slice(0, 500), written.slice(500)]).materialize()
    duplicate_pass.written_blocks(repeats, shuffled, ComputeConfig(cpus_per_io_task=0.5))
    for index in (1, 1024, files - 1):
        assert file_duplicates(shuffled, index) == {0: "duplicate id (first at f0000.jsonl row 0)"}
    assert pads.dataset(shuffled.path, format="parquet", partitioning="hive").count_rows() == files - 1


def test_the_reembed_pass_packs_small_files_into_few_tasks():
    """The re-embed pass ran one Ray task per listed file: on thousands of small files their start-up outweighed the
    kept digests (2000 five-row files: ~17-25 s a night either way). Consecutive small files are now packed as the
    embed job packs them (pipeline.units.packing); a large file or one without a listed size is alone, and every
    file keeps its own file index (its kept digests and repeats are its own)."""
    from pipeline.reembed.duplicates import pass_units
    from pipeline.units import PACK_FILES, packing

    files = [f"f{i:04d}.jsonl" for i in range(2500)]
    sizes = dict.fromkeys(files, 300)
    sizes["f0100.jsonl"] = 1 << 40
    del sizes["f0200.jsonl"]
    units = pass_units(files, sizes, packing(1 << 28))
    assert [u.file_index for u in units] == [0, 100, 101, 200, 201, 201 + PACK_FILES, 201 + 2 * PACK_FILES]
    parts = [part for unit in units for part in unit.parts()]
    assert [(p.path, p.file_index) for p in parts] == [(f, i) for i, f in enumerate(files)]
    assert [p.sizes for p in parts[99:102]] == [(300,), (1 << 40,), (300,)] and parts[200].sizes == ()
