"""Recall@k and speed of the IVF index (`mining.index: ivf`) against exact search, on real and synthetic vectors.

    python -m bench.bitext_ivf --real --synthetic-rows 1000000 --dim 64 --out bench/results/bitext_ivf.md

Real: multilingual-e5-small vectors of SIB-200 (the first `--real-langs` of its 20 languages, 1,004 sentences each,
cached by bench/sib200_data.py): keys are every second language, queries up to 2,000 sentences of the other
languages, as in mining (cross-lingual neighbours). Tatoeba: the cached e5 vectors of `python -m bench.tatoeba`
(`--tatoeba-cache`): keys are the English sides of every cached language, queries 2,000 of the other sides'
sentences. Embeddings datasets (`--keys-uri`, `--queries-uri`, e.g. the two sides `bench.tatoeba_one_run --keep`
embedded through the job): keys are every vector of one, queries a sample of the other's. Synthetic: the planted-pair vectors of bench/bitext_scale.py (keys: the target side, queries: 2,000
source rows). For each nprobe, recall@k = |IVF top-k ∩ exact top-k| / k, averaged over queries; times are wall-clock
on this machine for building the index (train + add) and for searching the query sample, next to the exact search
(`ShardSearcher`, the same blocked matmul the job uses) of the same queries in the same run, both float32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.bitext.ivf import IvfSearcher
from pipeline.bitext.knn import ShardSearcher, merge_topk, shard_bounds

NPROBES = (1, 2, 4, 8, 16, 32, 64, 128)


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx.tolist(), exact.tolist())]))


class ShardedIvf:
    """The job's layout: keys cut into `shards` contiguous shards, one IVF index each (default nlist per shard),
    every shard searched and the top-k merged by score, as the mining job merges its shard actors' answers."""

    def __init__(self, keys: np.ndarray, shards: int, pq_m: int | None, threads: int):
        self.parts = [
            IvfSearcher(keys[a:b], np.arange(a, b), None, None, pq_m, 100_000, 0, threads)
            for a, b in shard_bounds(len(keys), shards)
        ]
        self.nlist = self.parts[0].nlist
        self.default_nprobe = self.parts[0].index.nprobe

    def search(self, queries: np.ndarray, k: int, nprobe: int) -> np.ndarray:
        for part in self.parts:
            part.index.nprobe = min(nprobe, part.nlist)
        return merge_topk([part.search(queries, k) for part in self.parts], k)[1]


def evaluate(
    name: str, keys: np.ndarray, queries: np.ndarray, k: int, pq_ms: list[int], threads: int, shards: int = 1
) -> list[dict]:
    t = time.perf_counter()
    exact = ShardSearcher(keys, 0, "cpu", 8192).search(queries, k)[1]
    exact_s = time.perf_counter() - t
    results = []
    for pq_m in [None, *pq_ms]:
        t = time.perf_counter()
        index = ShardedIvf(keys, shards, pq_m, threads)
        build_s = time.perf_counter() - t
        for nprobe in sorted({*NPROBES, index.default_nprobe}):
            if nprobe > index.nlist:
                continue
            t = time.perf_counter()
            got = index.search(queries, k, nprobe)
            search_s = time.perf_counter() - t
            results.append(
                {
                    "data": name,
                    "keys": len(keys),
                    "dim": keys.shape[1],
                    "shards": shards,
                    "index": "IVF-Flat" if pq_m is None else f"IVF-PQ{pq_m}",
                    "nlist": index.nlist,
                    "nprobe": nprobe,
                    "default_nprobe": nprobe == index.default_nprobe,
                    f"recall@{k}": round(recall(got, exact), 4),
                    "build_s": round(build_s, 2),
                    "search_s": round(search_s, 3),
                    "exact_search_s": round(exact_s, 3),
                    "speedup": round(exact_s / search_s, 1),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def real_vectors(queries: int, seed: int, n_langs: int) -> tuple[np.ndarray, np.ndarray]:
    from bench import sib200_data as data

    langs = data.languages()[:n_langs]
    per = {lg: data.embed(data.load_sib200(lg)[2]) for lg in langs}
    keys = np.concatenate([per[lg] for lg in langs[0::2]])
    pool = np.concatenate([per[lg] for lg in langs[1::2]])
    pick = np.random.default_rng(seed).choice(len(pool), min(queries, len(pool)), replace=False)
    return keys.astype(np.float32), pool[pick].astype(np.float32)


def tatoeba_vectors(cache_dir: Path, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys: the English sides of every cached Tatoeba language; queries: a sample of the other sides' sentences."""
    files = sorted(cache_dir.glob("*.npz"))
    keys = np.concatenate([np.load(f)["en"] for f in files])
    pool = np.concatenate([np.load(f)["x"] for f in files])
    pick = np.random.default_rng(seed).choice(len(pool), min(queries, len(pool)), replace=False)
    return keys.astype(np.float32), pool[pick].astype(np.float32)


def dataset_vectors(keys_uri: str, queries_uri: str, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys: every vector of one embed-job dataset; queries: a seeded sample of another's (both unit length)."""
    from pipeline.bitext.sides import read_embeddings
    from pipeline.clustering.vectors import normalize_rows
    from pipeline.config import StorageConfig

    keys = normalize_rows(read_embeddings(keys_uri, StorageConfig())[1], None)[0]
    pool = normalize_rows(read_embeddings(queries_uri, StorageConfig())[1], None)[0]
    pick = np.random.default_rng(seed).choice(len(pool), min(queries, len(pool)), replace=False)
    return keys.astype(np.float32), pool[pick].astype(np.float32)


def synthetic_vectors(rows: int, dim: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    from bench.bitext_scale import planted

    src, tgt, _ = planted(rows, dim)
    return tgt, src[:queries]  # the first half of the source rows have planted translations


def table(results: list[dict], k: int) -> str:
    head = (
        f"| data | keys | dim | shards | index | nlist per shard | nprobe | recall@{k} | build s | search s | exact s "
        "| speed-up |"
    )
    lines = [head, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        nprobe = f"**{r['nprobe']}** (default)" if r["default_nprobe"] else r["nprobe"]
        lines.append(
            f"| {r['data']} | {r['keys']} | {r['dim']} | {r['shards']} | {r['index']} | {r['nlist']} | {nprobe} | "
            f"{r[f'recall@{k}']:.3f} | {r['build_s']} | {r['search_s']} | {r['exact_search_s']} | {r['speedup']}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true", help="SIB-200 e5 vectors (needs ../shared/data and .models)")
    parser.add_argument("--real-langs", type=int, default=20, help="first N SIB-200 languages (sorted by code)")
    parser.add_argument("--tatoeba-cache", type=Path, default=None, help="bench/tatoeba.py's embedding cache")
    parser.add_argument("--keys-uri", default=None, help="an embed-job dataset: the keys (e.g. English side)")
    parser.add_argument("--queries-uri", default=None, help="an embed-job dataset the queries are sampled from")
    parser.add_argument("--name", default="embeddings", help="label of --keys-uri/--queries-uri in the table")
    parser.add_argument("--synthetic-rows", type=int, default=0)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--pq-m", default="", help="comma-separated PQ sub-quantizer counts to try as well")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shards", default="1", help="comma-separated shard counts (the job's layout), e.g. 1,2")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    pq_ms = [int(m) for m in args.pq_m.split(",") if m]
    results = []
    if args.real:
        keys, queries = real_vectors(args.queries, 0, args.real_langs)
        results += evaluate("SIB-200 e5-small", keys, queries, args.k, [m for m in pq_ms if 384 % m == 0], args.threads)
    if args.tatoeba_cache:
        keys, queries = tatoeba_vectors(args.tatoeba_cache, args.queries, 0)
        langs = ",".join(sorted(f.stem for f in args.tatoeba_cache.glob("*.npz")))
        pq = [m for m in pq_ms if 384 % m == 0]
        results += evaluate(f"Tatoeba e5-small ({langs} -> eng)", keys, queries, args.k, pq, args.threads)
    if args.keys_uri:
        keys, queries = dataset_vectors(args.keys_uri, args.queries_uri or args.keys_uri, args.queries, 0)
        pq = [m for m in pq_ms if keys.shape[1] % m == 0]
        for shards in map(int, args.shards.split(",")):
            results += evaluate(args.name, keys, queries, args.k, pq, args.threads, shards)
    if args.synthetic_rows:
        keys, queries = synthetic_vectors(args.synthetic_rows, args.dim, args.queries)
        pq = [m for m in pq_ms if args.dim % m == 0]
        results += evaluate("synthetic planted", keys, queries, args.k, pq, args.threads)
    text = table(results, args.k)
    print(text)
    if args.out:
        args.out.write_text(
            f"# IVF recall and speed vs exact\n\n`python -m bench.bitext_ivf {' '.join(argv or sys.argv[1:])}`; "
            f"default nlist = 4*sqrt(keys per shard) capped at keys/39, default nprobe = max(32, nlist/8) (bold).\n\n"
            + text
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
