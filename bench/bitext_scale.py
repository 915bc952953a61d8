"""How the mining job's time and memory grow with side size, on synthetic planted-pair vectors, through the real job.

    python -m bench.bitext_scale --rows 100000,1000000 --dim 64 --index exact,ivf --out bench/results/bitext_scale.jsonl

For each size, a subprocess writes `rows` source and `rows` target sentences (text files) plus embed-job-shaped
embedding datasets (files of 100k rows): half of the source rows have a planted translation in the target side (a
noisy copy, cos ≈ 0.74 at any dim), the rest and the other target rows are unrelated. A second,
fresh subprocess runs the real job (`run_mine`, Ray backend: read tasks, hash join, shard actors, streamed blocks,
streamed selection, text attachment) reusing those vectors, so nothing is embedded; its summary gives the time per
stage, the driver's peak RSS (that process's own) and the shard actors' peak RSS next to the configured bound.
Precision/recall of the written pairs against the planted ones is computed here from the output files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FILE_ROWS = 100_000


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted(rows: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, tgt, perm): source row i < rows // 2 translates target row perm[i]."""
    rng = np.random.default_rng(seed)
    src = unit(rng.standard_normal((rows, dim), dtype=np.float32))
    tgt = unit(rng.standard_normal((rows, dim), dtype=np.float32))
    perm = rng.permutation(rows)
    true = rows // 2
    noise = unit(rng.standard_normal((true, dim), dtype=np.float32))
    tgt[perm[:true]] = unit(src[:true] + 0.9 * noise)  # cos(src, tgt) = 1 / sqrt(1 + 0.81) ~ 0.74
    return src, tgt, perm


def write_side(root: Path, name: str, vectors: np.ndarray) -> None:
    with open(root / f"{name}.txt", "w") as f:
        f.writelines(
            "".join(f"{name} sentence {i}\n" for i in range(start, min(start + FILE_ROWS, len(vectors))))
            for start in range(0, len(vectors), FILE_ROWS)
        )
    emb = root / f"emb_{name}"
    emb.mkdir()
    for part, start in enumerate(range(0, len(vectors), FILE_ROWS)):
        chunk = vectors[start : start + FILE_ROWS]
        ids = pa.array([f"{name}.txt#{i}" for i in range(start, start + len(chunk))])
        flat = pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), vectors.shape[1])
        table = pa.table({"id": ids, "embedding": flat}).replace_schema_metadata({"rayembed.model": "synthetic"})
        pq.write_table(table, emb / f"part-{part:05d}.parquet")


def generate(rows: int, dim: int, root: Path) -> None:
    src, tgt, perm = planted(rows, dim)
    write_side(root, "src", src)
    write_side(root, "tgt", tgt)
    np.save(root / "perm.npy", perm)


def mine(root: Path, mining: dict) -> dict:
    from pipeline.bitext.job import run_mine
    from pipeline.config import parse_config
    from pipeline.mine_config import MineConfig

    raw = {
        "source": {
            "uri": str(root / "src.txt"),
            "format": "text",
            "lang": "xx",
            "embeddings_uri": str(root / "emb_src"),
        },
        "target": {
            "uri": str(root / "tgt.txt"),
            "format": "text",
            "lang": "yy",
            "embeddings_uri": str(root / "emb_tgt"),
        },
        "output": {"uri": str(root / "out"), "overwrite": True},
        "compute": {"cpus_per_io_task": 0.25},
        "mining": mining,
    }
    return run_mine(parse_config(MineConfig, raw))


def score(root: Path, rows: int) -> dict:
    perm = np.load(root / "perm.npy")
    table = pq.read_table(root / "out" / "pairs", columns=["src_id", "tgt_id"])
    src = np.array([int(s.split("#")[1]) for s in table["src_id"].to_pylist()], np.int64)
    tgt = np.array([int(t.split("#")[1]) for t in table["tgt_id"].to_pylist()], np.int64)
    true = rows // 2
    correct = int(((src < true) & (perm[np.minimum(src, rows - 1)] == tgt)).sum())
    return {
        "pairs_written": len(table),
        "precision": round(correct / max(len(table), 1), 4),
        "recall": round(correct / true, 4),
    }


def read_side(root: Path, name: str) -> np.ndarray:
    """(rows, dim) float32 vectors of a side's embedding dataset, in row order."""
    parts = []
    for path in sorted((root / f"emb_{name}").glob("part-*.parquet")):
        column = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
        parts.append(column.flatten().to_numpy().reshape(len(column), -1))
    return np.concatenate(parts)


def recall(root: Path, sample: int, shards: int, k: int, nprobes: list[int], threads: int) -> dict:
    """IVF (the job's shard layout and defaults) against exact search for `sample` random source rows as queries
    over the whole target side: recall@k, build and search seconds; exact by FAISS's flat scan, same threads."""
    import faiss

    from bench.bitext_ivf import recall as recall_at_k
    from pipeline.bitext.ivf import IvfSearcher
    from pipeline.bitext.knn import faiss_scan, merge_topk, shard_bounds
    from pipeline.mine_config import IvfConfig

    faiss.omp_set_num_threads(threads)
    keys = read_side(root, "tgt")
    queries = read_side(root, "src")
    pick = np.sort(np.random.default_rng(1).choice(len(queries), sample, replace=False))
    queries = np.ascontiguousarray(queries[pick])
    perm = np.load(root / "perm.npy")
    has_partner = pick < len(perm) // 2  # planted: source row i < rows // 2 translates target row perm[i]
    partner = perm[np.where(has_partner, pick, 0)]
    t0 = time.perf_counter()
    _, exact = faiss_scan(queries, keys, k)
    exact_s = time.perf_counter() - t0

    def partner_found(found: np.ndarray) -> float:
        return round(float((found == partner[:, None]).any(axis=1)[has_partner].mean()), 4)

    cfg = IvfConfig()
    t0 = time.perf_counter()
    searchers = [
        IvfSearcher(keys[a:b], np.arange(a, b), cfg.nlist, cfg.nprobe, None, cfg.train_rows, cfg.seed, threads)
        for a, b in shard_bounds(len(keys), shards)
    ]
    build_s = time.perf_counter() - t0
    out = {
        "queries_sampled": sample,
        "keys": len(keys),
        "k": k,
        "threads": threads,
        "exact_search_seconds": round(exact_s, 2),
        "ivf_build_seconds": round(build_s, 2),
        "nlist_per_shard": searchers[0].nlist,
        "exact_planted_partner_in_topk": partner_found(exact),
        "ivf": [],
    }
    for nprobe in nprobes:
        for s in searchers:
            s.index.nprobe = min(nprobe, s.nlist)
        t0 = time.perf_counter()
        _, found = merge_topk([s.search(queries, k) for s in searchers], k)
        search_s = time.perf_counter() - t0
        out["ivf"].append(
            {
                "nprobe": nprobe,
                f"recall@{k}": round(recall_at_k(found, exact), 4),
                "planted_partner_in_topk": partner_found(found),
                "search_seconds": round(search_s, 2),
                "speedup_vs_exact": round(exact_s / search_s, 1),
            }
        )
    return out


def run_child(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bitext_scale", *args], check=False, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-4000:])
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100000")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--index", default="exact", help="one per size, comma-separated (exact or ivf)")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--max-rows-per-shard", type=int, default=2_000_000)
    parser.add_argument("--block-size", type=int, default=8192)
    parser.add_argument("--cpus-per-shard", type=float, default=0.5, help="leave CPUs for the feeding tasks")
    parser.add_argument("--threshold", type=float, default=1.1)
    parser.add_argument("--nprobe", type=int, default=None)
    parser.add_argument("--max-in-flight", type=int, default=None, help="mining.max_in_flight (default: the job's)")
    parser.add_argument("--out", type=Path, default=None, help="append the JSON lines here")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--recall-sample", type=int, default=0, help="also measure IVF vs exact on this many queries")
    parser.add_argument("--nprobes", default="8,32,128", help="nprobe values for --recall-sample")
    parser.add_argument("--child", choices=["generate", "mine", "recall"], default=None)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--mining", default="{}")
    args = parser.parse_args(argv)
    if args.child == "generate":
        generate(int(args.rows), args.dim, args.root)
        return 0
    if args.child == "mine":
        print(json.dumps(mine(args.root, json.loads(args.mining))))
        return 0
    if args.child == "recall":
        nprobes = list(map(int, args.nprobes.split(",")))
        print(json.dumps(recall(args.root, args.recall_sample, args.shards, 4, nprobes, threads=1)))
        return 0
    sizes = list(map(int, args.rows.split(",")))
    indexes = args.index.split(",") * (len(sizes) if "," not in args.index else 1)
    for rows, index in zip(sizes, indexes):
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            root = Path(tmp)
            t0 = time.perf_counter()
            run_child(["--child", "generate", "--rows", str(rows), "--dim", str(args.dim), "--root", tmp])
            generated = time.perf_counter() - t0
            mining = {
                "num_shards": args.shards,
                "max_rows_per_shard": args.max_rows_per_shard,
                "block_size": args.block_size,
                "cpus_per_shard": args.cpus_per_shard,
                "threshold": args.threshold,
                "index": index,
            }
            if args.nprobe:
                mining["ivf"] = {"nprobe": args.nprobe}
            if args.max_in_flight:
                mining["max_in_flight"] = args.max_in_flight
            summary = json.loads(
                run_child(["--child", "mine", "--root", tmp, "--mining", json.dumps(mining)]).splitlines()[-1]
            )
            result = {
                "rows": rows,
                "dim": args.dim,
                "index": index,
                **({"nprobe": args.nprobe or "default (max(32, nlist / 8))"} if index == "ivf" else {}),
                "shards": summary["shards"]["forward"],
                "block_size": args.block_size,
                **({"max_in_flight": args.max_in_flight} if args.max_in_flight else {}),
                "generate_seconds": round(generated, 1),
                "seconds": summary["seconds"],
                "driver_peak_rss_mb": summary["driver_peak_rss_mb"],
                "actor_peak_rss_mb": summary["shards"]["actor_peak_rss_mb"],
                "actor_base_rss_mb": summary["shards"]["actor_base_rss_mb"],
                "actor_rss_over_base_mb": summary["shards"]["actor_rss_over_base_mb"],
                "actor_array_bound_mb": round(summary["shards"]["max_actor_array_bytes"] / 2**20, 1),
                "actor_bound_parts_mb": {
                    part: round(n / 2**20, 1) for part, n in summary["shards"]["actor_array_bytes_by_part"].items()
                },
                "pairs_selected": summary["pairs_selected"],
                **score(root, rows),
            }
            if args.recall_sample:
                child = ["--child", "recall", "--root", tmp, "--shards", str(args.shards), "--nprobes", args.nprobes]
                child += ["--recall-sample", str(args.recall_sample)]
                result["ivf_vs_exact_sample"] = json.loads(run_child(child).splitlines()[-1])
        print(json.dumps(result), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
