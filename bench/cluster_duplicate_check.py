"""What the clustering job's duplicate-id check costs: the job with and without it, on the same data, in one run.

Writes the synthetic dataset of bench/cluster_scale.py, then runs `run_cluster` three times on one in-process Ray:
with `pipeline.clustering.duplicates.check_unique_ids` replaced by a no-op (the baseline: the job before the
check), as shipped (the check timed alone too), and the baseline again (the first run also starts Ray). Prints one
JSON line per run and a Markdown table.

    python bench/cluster_duplicate_check.py --rows 1000000 --dim 128 --out bench/results/cluster_duplicate_check.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster_scale import write_dataset
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering import duplicates, job
from pipeline.config import parse_config


def run(src: Path, out: Path, k: int, max_iter: int, check: bool) -> dict:
    cfg = parse_config(
        ClusterConfig,
        {
            "input": {"uri": str(src)},
            "output": {"uri": str(out)},
            "clustering": {"k": k, "max_iter": max_iter, "tol": 0.0},
        },
    )
    seconds: list[float] = []
    real = duplicates.check_unique_ids

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        real(*args, **kwargs)
        seconds.append(time.perf_counter() - t0)

    job.check_unique_ids = timed if check else (lambda *args, **kwargs: None)
    try:
        t0 = time.perf_counter()
        summary = job.run_cluster(cfg)
        wall = time.perf_counter() - t0
    finally:
        job.check_unique_ids = real
    return {
        "check": check,
        "rows": summary["rows"],
        "job_wall_s": round(wall, 2),
        "check_s": round(seconds[0], 2) if seconds else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--max-iter", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        src = Path(tmp) / "emb"
        src.mkdir()
        write_dataset(src, args.rows, args.dim, 200, args.files, seed=0)
        results = []
        for i, check in enumerate((False, True, False)):  # same data and process; the first run starts Ray
            results.append(run(src, Path(tmp) / f"out{i}", args.k, args.max_iter, check))
            print(json.dumps(results[-1]), flush=True)
    load = max(load, os.getloadavg()[0])
    base, checked, again = results
    lines = [
        "# Clustering job: cost of the duplicate-id check",
        "",
        (
            f"`python bench/cluster_duplicate_check.py --rows {args.rows} --dim {args.dim} --k {args.k} "
            f"--files {args.files} --max-iter {args.max_iter}`: the synthetic dataset of bench/cluster_scale.py, the "
            "job run three times in one process on an in-process Ray: with the check replaced by a no-op (the "
            "baseline), as shipped, then the baseline again (the first run also starts Ray). Machine: "
            f"{os.cpu_count()} CPU cores, no GPU, shared with other helpers (load average up to {load:.1f} during the "
            "run). Wall clock, float32 vectors."
        ),
        "",
        "| rows | dim | files | job wall s, no check (1st, 3rd run) | job wall s, with check | check alone s |",
        "|---|---|---|---|---|---|",
        (
            f"| {base['rows']} | {args.dim} | {args.files} | {base['job_wall_s']}, {again['job_wall_s']} | "
            f"{checked['job_wall_s']} | {checked['check_s']} |"
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
