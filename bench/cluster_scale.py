"""Time the clustering job end to end on local Ray: seconds per Lloyd iteration, assignment + dedup, wall time.

Writes a synthetic embeddings dataset shaped like the embed job's output (id, fixed_size_list<float32>[dim]) with
`--topics` von Mises-Fisher-like blobs, then runs `pipeline.clustering.job.run_cluster` on it.

    python bench/cluster_scale.py --rows 1000000 --dim 384 --k 100 --out bench/results/cluster_scale.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.job import run_cluster
from pipeline.config import parse_config


def write_dataset(root: Path, rows: int, dim: int, topics: int, files: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dim)).astype(np.float32)
    per_file = -(-rows // files)
    for f in range(files):
        n = min(per_file, rows - f * per_file)
        x = centres[rng.integers(topics, size=n)] + rng.normal(scale=1.5, size=(n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = [f"part-{f:05d}.parquet#{i}" for i in range(n)]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), dim)
        pq.write_table(pa.table({"id": ids, "embedding": emb}), root / f"part-{f:05d}.parquet")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--topics", type=int, default=200)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--max-iter", type=int, default=10)
    ap.add_argument("--sample-fraction", type=float, default=1.0)
    ap.add_argument("--dedup-eps", type=float, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        src = Path(tmp) / "emb"
        src.mkdir()
        t0 = time.perf_counter()
        write_dataset(src, args.rows, args.dim, args.topics, args.files, seed=0)
        print(f"wrote {args.rows} x {args.dim} in {time.perf_counter() - t0:.1f} s", flush=True)
        clustering = {
            "k": args.k,
            "max_iter": args.max_iter,
            "tol": 0.0,
            "sample_fraction": args.sample_fraction,
        }
        if args.dedup_eps is not None:
            clustering["dedup"] = {"eps": args.dedup_eps}
        cfg = parse_config(
            ClusterConfig,
            {"input": {"uri": str(src)}, "output": {"uri": str(Path(tmp) / "out")}, "clustering": clustering},
        )
        summary = run_cluster(cfg)
    iters = [h["seconds"] for h in summary["history"][1:]]
    line = (
        f"| {args.rows} | {args.dim} | {args.k} | {summary['fit_rows']} | {len(iters)} | "
        f"{np.mean(iters):.2f} (min {np.min(iters):.2f}, max {np.max(iters):.2f}) | "
        f"{'off' if args.dedup_eps is None else args.dedup_eps} | {summary['wall_seconds']:.0f} |"
    )
    print(json.dumps({k: v for k, v in summary.items() if k not in ("sizes", "history")}, indent=1))
    print(line)
    if args.out:
        header = (
            "| rows | dim | k | fit rows | iterations | s / iteration | dedup eps | job wall s |\n"
            "|---|---|---|---|---|---|---|---|\n"
        )
        path = Path(args.out)
        path.write_text(
            (path.read_text() if path.exists() else "# Clustering job timing (local Ray)\n\n" + header) + line + "\n"
        )


if __name__ == "__main__":
    main()
