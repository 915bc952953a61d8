"""How the mining job's time and memory grow with corpus size and shard count, on synthetic vectors.

    python -m bench.bitext_scale --rows 20000,50000 --dim 384 --shards 1,4

Each run writes `rows` source and `rows` target sentences (half of them noisy translations, half unrelated) as text
files plus embed-job-shaped embedding datasets, then runs the real job (`run_mine`, Ray shard actors) reusing those
vectors, so only reading, k-NN, selection and writing are measured. Reports wall time, driver and actor peak RSS next
to the configured per-actor array bound, and precision/recall of the mined pairs against the planted ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.bitext.job import run_mine
from pipeline.config import parse_config
from pipeline.mine_config import MineConfig


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_side(root: Path, name: str, vectors: np.ndarray) -> tuple[str, str]:
    text = root / f"{name}.txt"
    text.write_text("".join(f"{name} sentence {i}\n" for i in range(len(vectors))))
    emb = root / f"emb_{name}"
    emb.mkdir()
    ids = pa.array([f"{name}.txt#{i}" for i in range(len(vectors))])
    flat = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    pq.write_table(pa.table({"id": ids, "embedding": flat}), emb / "part-0.parquet")
    return str(text), str(emb)


def run(rows: int, dim: int, shards: int, block: int, cpus: float, root: Path) -> dict:
    rng = np.random.default_rng(rows)
    true = rows // 2
    src = unit(rng.standard_normal((rows, dim)))
    tgt = unit(rng.standard_normal((rows, dim)))
    perm = rng.permutation(rows)
    tgt[perm[:true]] = unit(src[:true] + 0.9 * unit(rng.standard_normal((true, dim))))  # cos ~0.74 with the source
    src_text, src_emb = write_side(root, "src", src)
    tgt_text, tgt_emb = write_side(root, "tgt", tgt)
    raw = {
        "source": {"uri": src_text, "format": "text", "lang": "xx", "embeddings_uri": src_emb},
        "target": {"uri": tgt_text, "format": "text", "lang": "yy", "embeddings_uri": tgt_emb},
        "output": {"uri": str(root / "out")},
        "mining": {"num_shards": shards, "block_size": block, "cpus_per_shard": cpus, "threshold": 1.2},
    }
    summary = run_mine(parse_config(MineConfig, raw))
    table = pq.read_table(root / "out" / "pairs" / "part-00000.parquet", columns=["src_id", "tgt_id"])
    gold = {(f"src.txt#{i}", f"tgt.txt#{perm[i]}") for i in range(true)}
    correct = sum(p in gold for p in zip(table["src_id"].to_pylist(), table["tgt_id"].to_pylist()))
    return {
        "rows": rows,
        "dim": dim,
        "shards": summary["shards"]["forward"],
        "block_size": block,
        "knn_seconds": summary["seconds"]["knn"],
        "total_seconds": summary["seconds"]["total"],
        "driver_peak_rss_mb": summary["driver_peak_rss_mb"],
        "actor_peak_rss_mb": summary["shards"]["actor_peak_rss_mb"],
        "actor_array_bound_mb": round(summary["shards"]["max_actor_array_bytes"] / 2**20, 1),
        "precision": round(correct / max(len(table), 1), 4),
        "recall": round(correct / true, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="20000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--shards", default="1,2")
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--cpus-per-shard", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None, help="append the JSON lines here")
    args = parser.parse_args(argv)
    for rows in map(int, args.rows.split(",")):
        for shards in map(int, args.shards.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                result = run(rows, args.dim, shards, args.block_size, args.cpus_per_shard, Path(tmp))
            print(json.dumps(result), flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
