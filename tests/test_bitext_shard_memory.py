from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.bitext.knn import TIE_BYTES
from pipeline.bitext.shard_memory import READ_BATCH_COPIES, RUNTIME_BYTES, shard_array_parts
from pipeline.bitext.store import READ_BATCH_BYTES, READ_BUFFER_BYTES, read_batch_rows

REPO = Path(__file__).resolve().parents[1]


def test_exact_parts_count_keys_rows_read_block_and_topk():
    parts = shard_array_parts("exact", shard_rows=1000, dim=8, block_size=100, k=4)
    assert parts == {
        "keys": 4 * 1000 * 8,
        "key_rows": 2 * 8 * 1000,
        "read": READ_BATCH_COPIES * 4 * read_batch_rows(8) * 8 + 8 * read_batch_rows(8) + READ_BUFFER_BYTES,
        "query_block": 2 * 4 * 100 * 8,
        "topk": 3 * 12 * 100 * 5,
        "runtime": RUNTIME_BYTES,
        "ties": 4 * 8 * 1000 + TIE_BYTES,  # knn.distinct_rows' index and the tie's working memory
    }


def test_read_batches_are_sized_in_bytes_whatever_the_dim():
    assert read_batch_rows(64) == 8192 and read_batch_rows(384) == 1365 and read_batch_rows(10**7) == 1
    assert all(4 * d * read_batch_rows(d) <= READ_BATCH_BYTES for d in (8, 64, 384, 1024, 4096))


def test_ivf_parts_add_the_index_training_sample_and_probe():
    parts = shard_array_parts("ivf", shard_rows=10_000, dim=16, block_size=50, k=4, nlist=100, train_rows=2000)
    assert parts["ivf_index"] == 10_000 * (4 * 16 + 8) + 4 * 100 * 16
    assert parts["ivf_train"] == 4 * 2000 * 16
    assert parts["ivf_probe"] == 4 * 50 * 100
    assert parts["ivf_add"] == 12 * 10_000 + 4 * 4096 * 1024 + int(0.25 * 10_000 * 4 * 16)  # assignments, tile, slack
    pq = shard_array_parts("ivf", shard_rows=10_000, dim=16, block_size=50, k=4, nlist=100, pq_m=8)
    assert pq["ivf_index"] == 10_000 * (8 + 8) + 4 * 100 * 16


CHILD = """
import json, sys
import numpy as np
from pipeline.bitext.shard_memory import RUNTIME_BYTES, shard_array_parts
from pipeline.bitext.store import Piece
from pipeline.bitext.stream_search import SearchSpec, ShardPlan, StoreShard
from pipeline.config import StorageConfig
from pipeline.mine_config import IvfConfig

rows, dim, block, index, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
shard = StoreShard(own_process=True)  # as in the Ray actor; base RSS taken here, before any array
rng = np.random.default_rng(1)
ivf = IvfConfig(nlist=64, nprobe=8, train_rows=5000)
plan = ShardPlan("k#0", (Piece(path, 0, rows),), StorageConfig(), dim, None, SearchSpec(index, ivf, block))
queries = rng.standard_normal((block, dim), dtype=np.float32)
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
for _ in range(3):
    shard.search(queries, 4, plan)
bound = sum(shard_array_parts(index, rows, dim, block, 4, 64, None, 5000 if index == "ivf" else 0).values())
print(json.dumps({"over_base": shard.peak_rss_mb() - shard.base_rss_mb, "bound": bound / 2**20}))
"""


@pytest.mark.parametrize(
    ("index", "rows", "dim"), [("exact", 200_000, 64), ("ivf", 200_000, 64), ("exact", 50_000, 384)]
)
def test_shard_rss_over_its_base_stays_within_the_bound(tmp_path, index, rows, dim):
    """A real StoreShard in a fresh process (peak RSS is per process): 49 MB (200k x 64) or 73 MB (50k x 384) of
    keys in one row group, blocks of 8192. At dim 384 the read's transient copies once exceeded the bound by 16 MB."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)
    pq.write_table(pa.table({"row": np.arange(len(x)), "embedding": flat}), tmp_path / "v.parquet")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [str(rows), str(dim), "8192", index, str(tmp_path / "v.parquet")]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["bound"] > 4 * rows * dim / 2**20  # the keys alone
    assert got["over_base"] <= got["bound"], got
