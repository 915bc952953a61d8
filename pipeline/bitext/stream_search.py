"""k-NN between two side stores with no driver holding either: shards load keys, blocks stream queries.

    key store ----shards(count)----> one `StoreShard` per shard: its vector pieces loaded from storage
    query store --pieces(block_size)--> load_block task -> every shard -> merge_write task -> knn file

A knn file holds, per query row, its k nearest key rows and their cosines (`row`, `nbr`, `sim`). The driver holds
only references and at most `max_in_flight` blocks in flight; results go to storage. Ties are broken by key row
number in `merge_topk`, so the result does not depend on how keys were sharded or queries blocked.
"""

from __future__ import annotations

import posixpath
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.bitext.knn import ShardSearcher, faiss_scan, merge_topk
from pipeline.bitext.shard_memory import peak_rss_mb
from pipeline.bitext.store import Piece, StoreRef, fixed_list, list_matrix, read_piece, read_pieces, warm_reader
from pipeline.config import StorageConfig
from pipeline.mine_config import IvfConfig
from pipeline.storage import resolve, write_parquet_atomic

NBR, SIM = "nbr", "sim"


@dataclass(frozen=True)
class SearchSpec:
    """How each shard searches: exact or IVF, tile size, threads."""

    index: str  # "exact" | "ivf"
    ivf: IvfConfig
    block_size: int
    threads: int = 1


@dataclass(frozen=True)
class ShardPlan:
    """What one shard of a key store is: its pieces, how to read them and how to search them."""

    key: str  # unique per (key store, shard): a shard holding another key is reloaded
    pieces: tuple[Piece, ...]
    storage: StorageConfig
    dim: int
    mean: np.ndarray | None  # (dim,) language mean for mining.center
    spec: SearchSpec


class StoreShard:
    """Holds one shard of a key store and answers top-k for query blocks (pure; the Ray actor wraps it).

    Every search names its shard plan, and the shard (re)loads when the plan differs from the one it holds: one
    object serves key store after key store, so a run starts its actors once, and an actor restarted by Ray after
    a crash reloads its shard on the next (retried) call.
    """

    def __init__(self, device: str = "cpu", own_process: bool = False):
        """
        Args:
            device: "cpu" (FAISS scan) or a torch device for the exact search.
            own_process: the shard owns its process (a Ray actor): switch Arrow to the system allocator there.
                Arrow's default (mimalloc) keeps freed read buffers cached, measured ~45 MB more RSS per 50 MB shard
                read; the system allocator returns them (tests/test_bitext_shard_memory.py). Off in a driver.
        """
        if own_process:
            pa.set_memory_pool(pa.system_memory_pool())
        # Libraries are the process's base, not arrays: load and run them once before the base is taken.
        faiss_scan(np.zeros((2, 8), np.float32), np.eye(8, dtype=np.float32), 2)
        warm_reader()  # the Parquet reader's code and thread pools, likewise

        self.device = device
        self.searcher = None
        self.key: str | None = None
        # The process before any keys (Python, torch, FAISS, Ray): its resident memory now, not its peak so far, so
        # that a transient peak while importing cannot hide the arrays' growth under it.
        self.base_rss_mb = psutil.Process().memory_info().rss / 2**20

    def load(self, plan: ShardPlan) -> None:
        """Read the plan's pieces from storage (centred when it has a mean) and index them."""
        self.searcher, self.key = None, None  # drop the previous shard before reading the next
        rows, keys = read_pieces(list(plan.pieces), plan.storage, plan.dim, plan.mean)
        if plan.spec.index == "ivf":
            from pipeline.bitext.ivf import IvfSearcher

            ivf = plan.spec.ivf
            self.searcher = IvfSearcher(
                keys, rows, ivf.nlist, ivf.nprobe, ivf.pq_m, ivf.train_rows, ivf.seed, plan.spec.threads, self.device
            )
        else:
            import faiss

            faiss.omp_set_num_threads(max(plan.spec.threads, 1))  # the actor's CPU reservation
            self.searcher = ShardSearcher(keys, 0, self.device, plan.spec.block_size, rows=rows)
        self.key = plan.key

    def search(self, queries: np.ndarray, k: int, plan: ShardPlan) -> tuple[np.ndarray, np.ndarray]:
        """(B, k') cosines and key rows of the shard's top-k for each query, best first."""
        if self.key != plan.key:
            self.load(plan)
        return self.searcher.search(queries, k)

    def peak_rss_mb(self) -> float:
        """Peak resident memory of this process (Python, torch, Ray included), to check the configured bound."""
        return peak_rss_mb()


def load_block(piece: Piece, storage: StorageConfig, dim: int, mean: np.ndarray | None) -> tuple:
    """A query block: (rows, vectors) of one piece of a vector file."""
    return read_piece(piece, storage, dim, mean)


def merge_write(uri: str, k: int, storage: StorageConfig, rows: np.ndarray, *parts: tuple) -> int:
    """Merge the shards' top-k of one block and write it as a knn file; returns the block's rows."""
    scores, nbrs = merge_topk(list(parts), k)  # (B, k)
    table = pa.table({"row": pa.array(rows, pa.int64()), NBR: int_list(nbrs), SIM: fixed_list(scores)})
    write_parquet_atomic(table, resolve(uri, storage))
    return len(rows)


def int_list(values: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(values, dtype=np.int64).reshape(-1), pa.int64())
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def read_knn(uri: str, storage: StorageConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n,) query rows, (n, k) neighbour rows, (n, k) cosines of one knn file."""
    loc = resolve(uri, storage)
    table = pq.read_table(loc.path, filesystem=loc.fs)
    k = table.schema.field(NBR).type.list_size
    nbrs = table.column(NBR).combine_chunks().flatten().to_numpy().reshape(-1, k)
    return table.column("row").to_numpy(), nbrs, list_matrix(table.column(SIM), k)


@dataclass
class SearchJob:
    """One key store searched by several query stores (e.g. English keys, every other language's queries)."""

    keys: StoreRef
    key_mean: np.ndarray | None  # (dim,) language mean of the keys (mining.center)
    queries: list[tuple[StoreRef, np.ndarray | None, str]]  # (query store, its mean, output dir of its knn files)


def run_search(
    job: SearchJob,
    k: int,
    num_shards: int,
    spec: SearchSpec,
    storage: StorageConfig,
    executor: Any,
    shards: list,
    max_in_flight: int,
) -> dict[str, Any]:
    """Load the key store into the first shards, stream every query store's blocks through them.

    Args:
        shards: at least `num_shards` StoreShard objects, or Ray actor handles of them when `executor` is a
            RayExecutor (then their methods are called through `.remote`).
    Returns:
        knn file uris per query store name, and the number of shards used.
    """
    plans = [
        ShardPlan(f"{job.keys.name}#{i}/{num_shards}", tuple(pieces), storage, job.keys.dim, job.key_mean, spec)
        for i, pieces in enumerate(job.keys.shards(num_shards))
    ]
    shards = shards[: len(plans)]
    ray_mode = executor.distributed
    plans = [executor.put(p) for p in plans]  # Ray: one copy of each plan in the object store, not one per block
    k = min(k, job.keys.vector_rows or job.keys.rows)
    files: dict[str, list[str]] = {}
    pending: deque = deque()
    for store, mean, out_dir in job.queries:
        names = files.setdefault(store.name, [])
        for piece in store.vector_pieces(spec.block_size):
            uri = posixpath.join(out_dir, f"b{len(names):06d}.parquet")
            names.append(uri)
            if ray_mode:
                rows, vectors = executor.submit(load_block, piece, storage, store.dim, mean, num_returns=2)
                parts = [shard.search.remote(vectors, k, plan) for shard, plan in zip(shards, plans)]
            else:
                rows, vectors = load_block(piece, storage, store.dim, mean)
                parts = [shard.search(vectors, k, plan) for shard, plan in zip(shards, plans)]
            pending.append(executor.submit(merge_write, uri, k, storage, rows, *parts))
            if len(pending) >= max_in_flight:
                executor.get(pending.popleft())
    while pending:
        executor.get(pending.popleft())
    return {"files": files, "shards": len(shards)}


def peak_rss(shards: list, executor: Any) -> tuple[float, float, float]:
    """(largest peak RSS, largest RSS before any keys, largest peak over its own base) in MB among the shards."""
    if executor.distributed:
        pairs = executor.get([s.rss_mb.remote() for s in shards])
    else:
        pairs = [(s.peak_rss_mb(), s.base_rss_mb) for s in shards]
    over = max(p - b for p, b in pairs)
    return round(max(p for p, _ in pairs), 1), round(max(b for _, b in pairs), 1), round(over, 1)
