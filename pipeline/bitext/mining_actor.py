"""The Ray edge of the k-NN search: one actor per key shard, query blocks streamed through every shard.

The actor is a thin shell over `ShardSearcher` (pure torch), so the distributed search returns exactly what
`knn_search` returns in-process; only placement and streaming live here.

Memory: an actor holds its shard (rows x dim float32) plus one query block and its top-k (and, on a GPU, one
(block x block) matmul tile), so it is
bounded by `mining.max_rows_per_shard` and `mining.block_size`, not by the corpus. The driver keeps at most
`max_in_flight` query blocks (and their per-shard top-k) outstanding.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import faiss
import numpy as np
import ray
import torch

from pipeline.bitext.knn import KnnResult, ShardSearcher, check_embeddings, merge_topk, shard_bounds
from pipeline.bitext.shard_memory import peak_rss_mb
from pipeline.embed_job import resolve_gpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardResources:
    """What each shard actor reserves; gpus None means one GPU per actor when the cluster has any, else none."""

    cpus: float = 1.0
    gpus: float | None = None
    max_restarts: int = 3
    max_task_retries: int = 3

    def resolved_gpus(self) -> float:
        return resolve_gpus(self.gpus, key="mining.gpus_per_shard")


class ShardActor:
    """Holds keys[offset : offset + len(keys)] on its device and answers top-k queries for whole blocks."""

    def __init__(self, keys: np.ndarray, offset: int, key_block: int, cpus: float):
        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        torch.set_num_threads(max(int(cpus), 1))  # the actor's CPU reservation, not the node's core count
        faiss.omp_set_num_threads(max(int(cpus), 1))
        self.searcher = ShardSearcher(keys, offset, device, key_block)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.searcher.search(queries, k)

    def peak_rss_mb(self) -> float:
        """Peak resident memory of this actor's process (Python, torch and Ray included), to check the bound."""
        return peak_rss_mb()


def shard_count(rows: int, num_shards: int, max_rows_per_shard: int) -> int:
    """Shards needed so that no actor holds more than max_rows_per_shard keys (at least num_shards)."""
    return max(num_shards, -(-rows // max_rows_per_shard))


def ray_knn_search(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    block_size: int,
    num_shards: int,
    max_rows_per_shard: int,
    resources: ShardResources,
    max_in_flight: int = 4,
    stats: dict | None = None,
) -> KnnResult:
    """Exact top-k of every query over keys sharded across Ray actors; same result as `knn.knn_search`.

    Args:
        queries: (n, d) L2-normalized, streamed in blocks of block_size rows.
        keys: (m, d) L2-normalized, split into contiguous shards, one actor each.
        k: neighbours per query (clipped to m).
        block_size: query rows per block, also each actor's key tile width.
        num_shards: minimum number of shard actors.
        max_rows_per_shard: upper bound on keys per actor; raises the shard count for large corpora.
        resources: CPUs/GPUs per actor and fault tolerance.
        max_in_flight: query blocks outstanding at once (bounds driver memory, keeps every actor busy).
        stats: when given, receives `shards` and `actor_peak_rss_mb` (the largest actor's peak).
    """
    check_embeddings("queries", queries)
    check_embeddings("keys", keys, dim=queries.shape[1])
    if k <= 0 or block_size <= 0 or max_in_flight <= 0:
        raise ValueError(f"k ({k}), block_size ({block_size}) and max_in_flight ({max_in_flight}) must be positive")
    k = min(k, keys.shape[0])
    bounds = shard_bounds(keys.shape[0], shard_count(keys.shape[0], num_shards, max_rows_per_shard))
    actor_cls = ray.remote(ShardActor).options(
        num_cpus=resources.cpus,
        num_gpus=resources.resolved_gpus(),
        max_restarts=resources.max_restarts,
        # Unbounded: a bounded count is spent by fast-failed calls while the actor restarts on another node
        # (ActorUnavailableError). Ray Core never retries an exception the method raises, so this cannot loop.
        max_task_retries=-1,
    )
    # Hold the shard refs for the whole search: a restarted actor re-reads its constructor arguments from them.
    shard_refs = [ray.put(keys[a:b]) for a, b in bounds]
    actors = [actor_cls.remote(ref, a, block_size, resources.cpus) for ref, (a, _) in zip(shard_refs, bounds)]
    log.info("k-NN: %d queries x %d keys in %d shards, blocks of %d", len(queries), len(keys), len(bounds), block_size)
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    pending: deque[tuple[int, int, list[ray.ObjectRef]]] = deque()
    try:
        for start in range(0, queries.shape[0], block_size):
            end = min(start + block_size, queries.shape[0])
            block = ray.put(queries[start:end])
            pending.append((start, end, [actor.search.remote(block, k) for actor in actors]))
            if len(pending) >= max_in_flight:
                collect(pending.popleft(), k, scores, indices)
        while pending:
            collect(pending.popleft(), k, scores, indices)
        if stats is not None:
            stats["shards"] = len(actors)
            stats["actor_peak_rss_mb"] = round(max(ray.get([a.peak_rss_mb.remote() for a in actors])), 1)
    finally:
        for actor in actors:
            ray.kill(actor)
        del shard_refs
    return KnnResult(scores, indices)


def collect(item: tuple[int, int, list[ray.ObjectRef]], k: int, scores: np.ndarray, indices: np.ndarray) -> None:
    start, end, refs = item
    scores[start:end], indices[start:end] = merge_topk(ray.get(refs), k)


class StoreShardActor:
    """Ray actor over `StoreShard`: loads shards of key stores from storage, on a GPU when it got one."""

    def __init__(self, threads: int):
        from pipeline.bitext.stream_search import StoreShard

        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        torch.set_num_threads(max(threads, 1))  # the actor's CPU reservation, not the node's core count
        self.shard = StoreShard(device)

    def search(self, queries: np.ndarray, k: int, plan) -> tuple[np.ndarray, np.ndarray]:
        return self.shard.search(queries, k, plan)

    def rss_mb(self) -> tuple[float, float]:
        """(peak RSS, RSS before any keys) of this actor's process, MB."""
        return self.shard.peak_rss_mb(), self.shard.base_rss_mb


def start_store_shards(count: int, resources: ShardResources) -> list:
    """`count` StoreShardActor handles reserving `resources` each."""
    actor_cls = ray.remote(StoreShardActor).options(
        num_cpus=resources.cpus,
        num_gpus=resources.resolved_gpus(),
        max_restarts=resources.max_restarts,
        max_task_retries=-1,  # unbounded, as in ray_knn_search: a node lost mid-call must not fail the job
    )
    return [actor_cls.remote(max(int(resources.cpus), 1)) for _ in range(count)]
