"""The clustering job's Ray Data read (pipeline.clustering.parquet_read): a footer-reading pool sized to the files."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.clustering.parquet_read import BATCH_SIZE, NUM_ACTORS, footer_actors, footer_pool_for, read_embeddings
from pipeline.config import StorageConfig
from pipeline.storage import resolve


def test_one_footer_actor_per_batch_of_files_up_to_rays_default():
    assert [footer_actors(n) for n in (0, 1, 3, 10, 11, 25, 320, 1000)] == [1, 1, 1, 1, 2, 3, 32, 32]
    assert footer_actors(25, batch=5) == 5


def test_the_pool_size_holds_while_the_read_is_planned_and_one_set_by_the_user_is_kept(monkeypatch):
    monkeypatch.delenv(NUM_ACTORS, raising=False)
    monkeypatch.delenv(BATCH_SIZE, raising=False)
    with footer_pool_for(25):
        assert os.environ[NUM_ACTORS] == "3"
    assert NUM_ACTORS not in os.environ
    monkeypatch.setenv(BATCH_SIZE, "5")
    with footer_pool_for(25):
        assert os.environ[NUM_ACTORS] == "5"
    monkeypatch.setenv(NUM_ACTORS, "7")
    with footer_pool_for(25):
        assert os.environ[NUM_ACTORS] == "7"
    assert os.environ[NUM_ACTORS] == "7"


def test_rays_reader_plans_the_pool_of_three_files_as_one_actor(ray_session, tmp_path, monkeypatch):
    """Ray 2.60's read_parquet listed three files with 32 FooterReader actors (each a worker process) at every
    execution of the dataset; the indexer the dataset keeps is built when read_parquet is called, with the count."""
    monkeypatch.delenv(NUM_ACTORS, raising=False)
    for i in range(3):
        pq.write_table(pa.table({"id": [f"r{i}"], "embedding": [[1.0, 0.0]]}), tmp_path / f"part-{i}.parquet")
    files = [f"part-{i}.parquet" for i in range(3)]
    ds = read_embeddings(resolve(str(tmp_path), StorageConfig()), files, ["id", "embedding"], None)
    ops, indexers = [ds._logical_plan.dag], []
    while ops:
        op = ops.pop()
        indexers += [op.file_indexer] if hasattr(op, "file_indexer") else []
        ops.extend(op.input_dependencies)
    assert [indexer._num_actors for indexer in indexers] == [1]
    assert sorted(row["id"] for row in ds.take_all()) == ["r0", "r1", "r2"]
