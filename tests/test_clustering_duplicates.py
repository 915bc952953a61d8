"""Duplicate ids in the clustering input (pipeline.clustering.duplicates): real Parquet, the session's local Ray."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cluster import main
from pipeline import duplicate_pass
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.duplicates import DuplicateIdError
from pipeline.clustering.job import run_cluster
from pipeline.config import parse_config

pytestmark = pytest.mark.slow


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def config(tmp_path, **input_keys) -> ClusterConfig:
    raw = {
        "input": {"uri": str(tmp_path / "emb"), **input_keys},
        "output": {"uri": str(tmp_path / "out")},
        "clustering": {"k": 3},
    }
    return parse_config(ClusterConfig, raw)


@pytest.mark.parametrize("one_task_rows", [duplicate_pass.ONE_TASK_ROWS, 0], ids=["one_task", "shuffle"])
def test_a_file_copied_twice_is_an_error_naming_the_id_and_both_files(
    ray_session, tmp_path, monkeypatch, one_task_rows
):
    """A part file copied into the input a second time gave the assignments two rows with one id, and dedup's
    `keep` could not choose between them; the job went on silently. Up to ONE_TASK_ROWS ids one task finds the
    repeats and no Ray Data pipeline runs (it ran two: collect and count, then a sort for the first repeats); beyond
    it, the hash shuffle by bucket runs on Ray Data's task-based sort shuffle (the default's aggregator actors took
    16-38 s to start for this)."""
    monkeypatch.setattr(duplicate_pass, "ONE_TASK_ROWS", one_task_rows)
    datasets, from_refs = [], ray_session.data.from_arrow_refs
    monkeypatch.setattr(
        ray_session.data, "from_arrow_refs", lambda *a, **k: datasets.append(from_refs(*a, **k)) or datasets[-1]
    )
    (tmp_path / "emb").mkdir()
    ids = [f"doc{i}" for i in range(40)]
    pq.write_table(
        pa.table({"id": ids, "embedding": pa.array(list(unit_rows(40, 8, 1)))}), tmp_path / "emb" / "a.parquet"
    )
    pq.write_table(
        pa.table({"id": [f"other{i}" for i in range(10)], "embedding": pa.array(list(unit_rows(10, 8, 2)))}),
        tmp_path / "emb" / "b.parquet",
    )
    shutil.copy(tmp_path / "emb" / "a.parquet", tmp_path / "emb" / "c-copy.parquet")
    with pytest.raises(DuplicateIdError) as err:
        run_cluster(config(tmp_path))
    message = str(err.value)
    assert message.startswith(f"input.uri {tmp_path / 'emb'}: 40 rows repeat an earlier id (input.id_column 'id')")
    assert "id 'doc0' at c-copy.parquet row 0 repeats a.parquet row 0; id 'doc1' at c-copy.parquet row 1" in message
    assert message.endswith(
        "and 35 more. The input holds some rows twice (a file copied, two embed outputs in one folder?): remove the "
        "copies from input.uri, or give every row its own id (the embed job's input.duplicate_ids: keep_first "
        "writes each id once)"
    )
    assert not (tmp_path / "out" / "assignments").exists() and not (tmp_path / "out" / "_SUCCESS").exists()
    assert len(datasets) == (0 if one_task_rows else 1)  # old code: 1 in the one-task case
    # the shuffle is the task-based sort one: Ray's default started aggregator actors and waited for them
    sort_based = ray_session.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    assert all(ds.context.shuffle_strategy == sort_based for ds in datasets)


def test_the_job_reports_it_as_one_error_line(ray_session, tmp_path, capsys):
    (tmp_path / "emb").mkdir()
    table = pa.table({"id": ["a", "b", "c", "b"], "embedding": pa.array(list(unit_rows(4, 8, 3)))})
    pq.write_table(table, tmp_path / "emb" / "part-0.parquet")
    path = tmp_path / "cluster.yaml"
    path.write_text(f"input: {{uri: {tmp_path / 'emb'}}}\noutput: {{uri: {tmp_path / 'out'}}}\nclustering: {{k: 2}}\n")
    assert main(["--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "1 rows repeat an earlier id" in err and "id 'b' at part-0.parquet row 3 repeats part-0.parquet row 1" in err


def test_chunks_of_one_id_are_rows_but_a_repeated_chunk_is_a_duplicate(ray_session, tmp_path):
    """An embed output of long_inputs: chunk holds one row per (id, chunk_index): those are not duplicates. Two
    embed outputs of the same corpus in one folder repeat (id, chunk_index).

    And the chunks are told apart in the assignments (it was test_clustering_job's run of its own over the same
    input): they held only the id, so the rows of one id could not be told apart nor joined back to their chunk;
    chunk_index is carried (as output.keep_columns would carry it)."""
    (tmp_path / "emb").mkdir()
    ids, chunks = [f"doc{i // 3}" for i in range(30)], [i % 3 for i in range(30)]
    table = pa.table(
        {"id": ids, "chunk_index": pa.array(chunks, pa.int32()), "embedding": pa.array(list(unit_rows(30, 8, 4)))}
    )
    pq.write_table(table, tmp_path / "emb" / "part-0.parquet")
    assert run_cluster(config(tmp_path))["rows"] == 30
    got = pq.read_table(tmp_path / "out" / "assignments")
    assert sorted(zip(got.column("id").to_pylist(), got.column("chunk_index").to_pylist())) == sorted(zip(ids, chunks))
    pq.write_table(table.slice(4, 1), tmp_path / "emb" / "part-1.parquet")  # doc1, chunk 1 again
    shutil.rmtree(tmp_path / "out")
    cfg = config(tmp_path)
    with pytest.raises(
        DuplicateIdError, match=r"id 'doc1' chunk_index 1 at part-1\.parquet row 0 repeats part-0\.parquet row 4"
    ):
        run_cluster(cfg)


def test_integer_ids_are_compared_as_the_assignments_write_them(ray_session, tmp_path):
    (tmp_path / "emb").mkdir()
    for name, ids in (("a.parquet", [1, 2, 3]), ("b.parquet", [4, 5, 2])):
        table = pa.table({"key": pa.array(ids, pa.int64()), "embedding": pa.array(list(unit_rows(3, 8, len(name))))})
        pq.write_table(table, tmp_path / "emb" / name)
    with pytest.raises(
        DuplicateIdError, match=r"input\.id_column 'key'\).*id '2' at b\.parquet row 2 repeats a\.parquet row 1"
    ):
        run_cluster(config(tmp_path, id_column="key"))
