"""Exact k-NN of one shard actor's work unit: the matmul-tile search it used (torch) against FAISS's scan (now).

    python -m bench.bitext_knn_speed --keys 50000 --queries 8192 --dims 64,384 --out bench/results/bitext_knn_speed

One query block against one key shard, as a shard actor answers it: the baseline is `knn.torch_tiles` with tiles of
block_size keys (what `ShardSearcher` ran on CPU before), the new path `knn.faiss_scan`; same float32 unit vectors,
same thread count (1: an actor's reservation in the scale benchmark), alternated `--repeats` times in this one run;
wall-clock seconds are the claim, CPU seconds an extra column. Also checked: the same neighbours, the largest score
difference, and each path's peak memory growth (VmHWM of a fresh child process per path and dim).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run_path(path: str, keys: np.ndarray, queries: np.ndarray, k: int, block: int) -> tuple:
    import torch

    from pipeline.bitext.knn import faiss_scan, torch_tiles

    if path == "torch_tiles":
        return torch_tiles(queries, torch.from_numpy(keys), k, block)
    return faiss_scan(queries, keys, k)


def child_memory(path: str, keys_n: int, queries_n: int, dim: int, k: int) -> float:
    """MB of peak RSS growth of one search in a fresh process (the arrays are made before the base is read)."""
    code = f"""
import numpy as np, faiss, torch
from bench.bitext_knn_speed import unit, run_path
from pipeline.bitext.shard_memory import peak_rss_mb
torch.set_num_threads(1); faiss.omp_set_num_threads(1)
rng = np.random.default_rng(0)
keys, queries = unit(rng, {keys_n}, {dim}), unit(rng, {queries_n}, {dim})
run_path("{path}", keys[:100], queries[:10], {k}, {queries_n})  # libraries warmed: base, not search memory
base = peak_rss_mb()
run_path("{path}", keys, queries, {k}, {queries_n})
print(peak_rss_mb() - base)
"""
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return round(float(done.stdout.split()[-1]), 1)


def main(argv: list[str] | None = None) -> int:
    import faiss
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=8192)
    parser.add_argument("--dims", default="64,384")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rows = []
    for dim in map(int, args.dims.split(",")):
        rng = np.random.default_rng(0)
        keys, queries = unit(rng, args.keys, dim), unit(rng, args.queries, dim)
        times = {"torch_tiles": [], "faiss_scan": []}
        cpu = {"torch_tiles": [], "faiss_scan": []}
        results = {}
        for _ in range(args.repeats):
            for path, walls in times.items():
                w, c = time.perf_counter(), time.process_time()
                results[path] = run_path(path, keys, queries, args.k, args.queries)
                walls.append(time.perf_counter() - w)
                cpu[path].append(time.process_time() - c)
        (ts, ti), (fs, fi) = results["torch_tiles"], results["faiss_scan"]
        row = {
            "dim": dim,
            "keys": args.keys,
            "queries": args.queries,
            "k": args.k,
            "threads": 1,
            "torch_tiles_wall_s": round(min(times["torch_tiles"]), 3),
            "faiss_scan_wall_s": round(min(times["faiss_scan"]), 3),
            "torch_tiles_cpu_s": round(min(cpu["torch_tiles"]), 3),
            "faiss_scan_cpu_s": round(min(cpu["faiss_scan"]), 3),
            "speedup": round(min(times["torch_tiles"]) / min(times["faiss_scan"]), 2),
            "same_neighbours": bool((ti == fi).all()),
            "max_score_diff": float(np.abs(ts - fs).max()),
            "torch_tiles_peak_growth_mb": child_memory("torch_tiles", args.keys, args.queries, dim, args.k),
            "faiss_scan_peak_growth_mb": child_memory("faiss_scan", args.keys, args.queries, dim, args.k),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
        head = "| dim | keys x queries | torch tiles (before) | FAISS scan (now) | speedup | CPU s before / now | "
        head += "same neighbours | max score diff | peak growth before / now |\n|---:|---|---:|---:|---:|---|---|---:|---|\n"
        lines = [
            f"| {r['dim']} | {r['keys']:,} x {r['queries']:,} | {r['torch_tiles_wall_s']} s | {r['faiss_scan_wall_s']} s"
            f" | {r['speedup']}x | {r['torch_tiles_cpu_s']} / {r['faiss_scan_cpu_s']} | {r['same_neighbours']} | "
            f"{r['max_score_diff']:.1e} | {r['torch_tiles_peak_growth_mb']} MB / {r['faiss_scan_peak_growth_mb']} MB |"
            for r in rows
        ]
        cmd = "python -m bench.bitext_knn_speed " + " ".join(argv if argv is not None else sys.argv[1:])
        args.out.with_suffix(".md").write_text(
            f"# Exact k-NN, one shard's work unit: torch matmul tiles vs FAISS scan\n\n`{cmd}`; float32, 1 thread, "
            f"best of {args.repeats} alternated runs, wall clock.\n\n{head}" + "\n".join(lines) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
