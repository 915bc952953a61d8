"""Exact k-nearest-neighbour search by inner product, in blocks, over key shards. Pure FAISS/torch/numpy: no Ray.

Why blocked: the full n x m similarity matrix of two 10M-row corpora is 400 TB; on CPU FAISS's exhaustive scan keeps
only a heap of k per query (no score matrix at all), on a GPU one (block x key_block) matmul tile is alive at a time,
and only the running top-k (n x k) is ever kept. Why shards: the same code serves one process
(all shards in a loop) and a Ray job (one shard per actor, see `mining_actor`), so both give the same neighbours.

Vectors are expected L2-normalized, so inner product = cosine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch


@dataclass(frozen=True)
class KnnResult:
    """Top-k neighbours of every query, best first; ties ordered by ascending key index."""

    scores: np.ndarray  # (n, k) float32 cosine similarities
    indices: np.ndarray  # (n, k) int64 global key row numbers

    @property
    def k(self) -> int:
        return int(self.scores.shape[1])

    def mean_scores(self) -> np.ndarray:
        """(n,) mean cosine of each query's k nearest keys, as they are (the margin's density term is
        `margin.neighbourhood_density`, which counts each cosine as max(cos, 0) for the ratio margin)."""
        return self.scores.mean(axis=1, dtype=np.float64).astype(np.float32)


def check_embeddings(name: str, vectors: np.ndarray, dim: int | None = None) -> None:
    """Fail early with the side's name: an empty side, a wrong rank or a dimension mismatch is a config error."""
    if vectors.ndim != 2:
        raise ValueError(f"{name}: embeddings must be a 2-D (rows, dim) array, got shape {vectors.shape}")
    if vectors.shape[0] == 0:
        raise ValueError(f"{name}: no rows to mine (empty side); check its uri, lang filter and dedup")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(
            f"{name}: embedding dim {vectors.shape[1]} differs from the other side's {dim}; "
            "both sides must be embedded with the same model"
        )
    if not np.isfinite(vectors).all():
        raise ValueError(f"{name}: embeddings contain NaN or inf")


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists (each (n, k_i) scores, global indices) into the overall top-k.

    Sorted by descending score, then ascending index, so the result does not depend on how keys were sharded.
    """
    scores = np.concatenate([p[0] for p in parts], axis=1)  # (n, sum k_i)
    indices = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((indices, -scores), axis=1)[:, :k]  # last key is primary: score desc, then index asc
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


class ShardSearcher:
    """Holds one contiguous shard of the keys (rows offset..offset+len) and answers top-k queries against it.

    On CPU the search is FAISS's exhaustive inner-product scan (`faiss.knn`, the `IndexFlatIP` kernel): one SIMD
    dot product per (query, key), a per-query heap of k, no score matrix. Queries go in chunks below FAISS's
    `distance_compute_blas_threshold`, so FAISS always takes that per-pair path and a score does not depend on how
    queries were blocked or keys sharded (its BLAS path would tile differently per call shape). On a GPU the shard
    is scanned in (B x key_block) torch matmul tiles.

    Args:
        keys: (rows, dim) float32 L2-normalized shard; kept as given (no copy) when already float32, C-contiguous.
        offset: global row number of the shard's first key, so returned indices are global.
        device: "cpu" (FAISS) or a torch device such as "cuda" (matmul tiles).
        key_block: keys per matmul tile on a GPU; with a query block of B rows, one tile is B x key_block floats.
        rows: (m_s,) global row number of each key when the shard is not one contiguous range (then `offset` is
            ignored): results name keys by these numbers.
    """

    def __init__(
        self,
        keys: np.ndarray,
        offset: int,
        device: str = "cpu",
        key_block: int = 65536,
        rows: np.ndarray | None = None,
    ):
        if key_block <= 0:
            raise ValueError(f"key_block must be positive, got {key_block}")
        keys = np.require(keys, dtype=np.float32, requirements=["C_CONTIGUOUS"])  # (m_s, d)
        if device == "cpu":
            self.keys = keys
        else:
            # A shard from Ray's object store is a read-only view; torch needs its own (writable) copy of it.
            self.keys = torch.from_numpy(np.require(keys, requirements=["WRITEABLE"])).to(device)
        self.offset = offset
        self.row_numbers = None if rows is None else np.asarray(rows, dtype=np.int64)  # (m_s,) global rows
        self.device = device
        self.key_block = key_block
        self._distinct: tuple[DistinctRows | None] | None = None  # computed at the first tie, kept for the shard

    @property
    def rows(self) -> int:
        return int(self.keys.shape[0])

    def distinct(self) -> DistinctRows | None:
        """The shard's `distinct_rows`, computed once (at the first query whose k-th place is a tie)."""
        if self._distinct is None:
            self._distinct = (distinct_rows(self.keys),)
        return self._distinct[0]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-min(k, rows) keys of this shard for each query: (B, k') float32 scores and int64 global indices."""
        k = min(k, self.rows)
        queries = np.require(queries, dtype=np.float32, requirements=["C_CONTIGUOUS"])
        if self.device == "cpu":
            scores, idx = faiss_scan(queries, self.keys, k, distinct=self.distinct)
        else:
            scores, idx = torch_tiles(queries, self.keys, k, self.key_block)
        if self.row_numbers is not None:
            return scores, self.row_numbers[idx]
        return scores, idx + self.offset


@torch.inference_mode()
def torch_tiles(queries: np.ndarray, keys: torch.Tensor, k: int, key_block: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by (B x key_block) matmul tiles on the keys' device (the GPU path); (B, k) scores, positions.

    Best first, ties ordered by ascending key position, as `faiss_scan` and `merge_topk` order them: each tile asks
    torch.topk for k+1, and a query whose (k+1)-th equals its k-th score (copies among the keys; torch.topk keeps
    an arbitrary member of a tie) has its tile row sorted whole (stable), so the lowest positions of the tie win;
    the running top-k is kept sorted by (score, position), so a tie across tiles goes to the earlier tile.
    Memory: one (B, key_block) tile plus the running (B, 2k) top-k on the device (a tied query's sorted tile row).
    """
    q = torch.from_numpy(np.require(queries, requirements=["WRITEABLE"])).to(keys.device)  # (B, d)
    best_s = torch.empty((q.shape[0], 0), dtype=torch.float32, device=keys.device)
    best_i = torch.empty((q.shape[0], 0), dtype=torch.int64, device=keys.device)
    for start in range(0, keys.shape[0], key_block):
        tile = q @ keys[start : start + key_block].T  # (B, kb)
        s, i = tile_topk(tile, min(k, tile.shape[1]))  # (B, k')
        del tile  # freed before the next tile is allocated: one tile at a time
        best_s, best_i = by_score_then_position(torch.cat([best_s, s], dim=1), torch.cat([best_i, i + start], dim=1))
        best_s, best_i = best_s[:, :k], best_i[:, :k]  # the running top-k: memory stays (B, 2k)
    return best_s.cpu().numpy(), best_i.cpu().numpy()


def tile_topk(tile: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, k) top scores of a (B, kb) tile and their positions, sorted by (score desc, position asc); a tie at the
    k-th place goes to the lowest positions."""
    if tile.shape[1] <= k:
        s, i = torch.sort(tile, dim=1, descending=True, stable=True)
        return s, i
    s, i = torch.topk(tile, k + 1, dim=1)  # (B, k+1) sorted by score, ties in any order
    tied = torch.nonzero(s[:, k] == s[:, k - 1]).squeeze(1)
    s, i = by_score_then_position(s[:, :k], i[:, :k])
    if len(tied):  # rare: copies among the keys; the whole row sorted, stable: the lowest positions of the tie
        ts, ti = torch.sort(tile[tied], dim=1, descending=True, stable=True)
        s[tied], i[tied] = ts[:, :k], ti[:, :k]
    return s, i


def by_score_then_position(s: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n) scores and positions reordered by score descending, then position ascending."""
    i, order = torch.sort(i, dim=1)
    s, by_score = torch.sort(torch.gather(s, 1, order), dim=1, descending=True, stable=True)
    return s, torch.gather(i, 1, by_score)


SCAN_QUERIES = 4096  # queries per faiss.knn call: below its BLAS threshold, and (4096, k) results at a time
# Memory for resolving ties at the k-th place, held at once: widened results ((queries x width) slots of ~32 bytes:
# the float32 score and int64 id, the lexsort's int64 order and FAISS's heap of (score, id) per query), or, on the
# distinct-content path, one chunk of distinct keys copied out of the shard and the expanded candidates. All tied
# queries widened at once took 24 GB and the OOM killer (4,096 queries, 200k keys holding 100k copies of one vector).
TIE_BYTES = 64 << 20
TIE_BYTES_PER_SLOT = 32
HASH_CHUNK_BYTES = 16 << 20  # uint64 words of the rows hashed at a time by `distinct_rows`


@dataclass(frozen=True)
class DistinctRows:
    """A shard's rows grouped by exact content (bit-identical float32 vectors), groups ranked by their first row.

    FAISS's per-pair kernel gives bit-identical rows bit-identical scores, so a group's rows tie with every query.
    """

    first: np.ndarray  # (u,) int64 position of each group's first row, ascending (the group's rank)
    members: np.ndarray  # (m,) int64 positions, group by group in rank order, ascending within a group
    starts: np.ndarray  # (u + 1,) offsets of each group's rows in `members`

    @property
    def count(self) -> int:
        return int(self.first.shape[0])


def distinct_rows(keys: np.ndarray) -> DistinctRows | None:
    """Group (m, d) float32 C-contiguous `keys` by exact content; None in the (astronomically rare) case of two
    different rows with the same 64-bit hash, for which the caller widens as before.

    Memory: three int64 / uint64 arrays of m and HASH_CHUNK_BYTES of transient words; the keys are not copied.
    """
    m, d = keys.shape
    words = keys.view(np.uint32)  # (m, d) the float bits
    mult = np.random.default_rng(0x7E5).integers(1, 2**63, size=d, dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(m, dtype=np.uint64)
    step = max(1, HASH_CHUNK_BYTES // (8 * d))
    for a in range(0, m, step):
        hashes[a : a + step] = (words[a : a + step].astype(np.uint64) * mult).sum(axis=1, dtype=np.uint64)  # mod 2**64
    order = np.argsort(hashes, kind="stable")  # (m,) equal hashes keep ascending position
    sorted_hashes = hashes[order]
    del hashes
    new = np.empty(m, dtype=bool)
    new[0], new[1:] = True, sorted_hashes[1:] != sorted_hashes[:-1]
    del sorted_hashes
    group = np.cumsum(new) - 1  # (m,) group of each sorted position, in hash order
    heads = np.flatnonzero(new)  # (u,) sorted position of each group's first (lowest) row
    for a in range(0, m, step):  # every row bit-equal to its group's first row: no hash collision
        rows = order[a : a + step]
        if not np.array_equal(words[rows], words[order[heads[group[a : a + step]]]]):
            return None
    first = order[heads]  # (u,) in hash order
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    members = order[np.argsort(rank[group], kind="stable")]  # group blocks in rank order, rows ascending inside
    sizes = np.bincount(rank[group], minlength=len(first))
    return DistinctRows(np.sort(first), members, np.concatenate([[0], np.cumsum(sizes)]))


def faiss_scan(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    distinct: Callable[[], DistinctRows | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k keys of each query by inner product with FAISS's per-pair scan; (B, k) scores and positions.

    Best first, ties ordered by ascending key position, as `merge_topk` orders them. FAISS's own order among equal
    scores is not that, so each query asks for k+1: when the (k+1)-th equals the k-th score (duplicate keys), the
    tie is resolved one of two ways. When the keys hold copies (bit-identical rows), the tied queries are searched
    again among the distinct rows only (`distinct_rows`; a copy scores exactly as its first row), then each distinct
    row is expanded to its lowest positions: the work is that of one scan of the distinct rows, whatever the number
    of copies. Otherwise (a tie between different vectors with equal scores) each tied query is searched again
    with a wider k until the tie is inside the result. Either way as many tied queries at a time as keep their
    results within TIE_BYTES. Every score comes from the same per-pair kernel, so it does not depend on the
    chunking. Uses the threads set by `faiss.omp_set_num_threads`; memory is the results and one heap per thread,
    no score matrix.

    Args:
        distinct: gives the keys' `distinct_rows` (a `ShardSearcher` computes it once per shard); by default it is
            computed here when a tie needs it.
    """
    rows = keys.shape[0]
    wide = min(k + 1, rows)
    scores, idx = faiss_chunks(queries, keys, wide)
    tied = np.flatnonzero(scores[:, -1] == scores[:, k - 1]) if wide > k else np.empty(0, np.int64)
    groups = (distinct or (lambda: distinct_rows(keys)))() if len(tied) else None
    if groups is not None and groups.count < rows:  # copies among the keys: search the distinct rows
        order = np.lexsort((idx, -scores), axis=1)[:, :k]
        scores, idx = np.take_along_axis(scores, order, axis=1), np.take_along_axis(idx, order, axis=1)
        ku = min(k, groups.count)
        per_call = max(1, TIE_BYTES // (TIE_BYTES_PER_SLOT * ku * (ku + 1) // 2 + TIE_BYTES_PER_SLOT * ku))
        for start in range(0, len(tied), per_call):
            part = tied[start : start + per_call]
            scores[part], idx[part] = distinct_topk(queries[part], keys, k, groups)
        return scores, idx
    width = wide
    while len(tied) and width < rows:  # rare: equal scores of different vectors at the k-th place
        width = min(2 * width, rows)
        # a few tied queries at a time: (t, width) results and FAISS's heaps of that width, per call
        per_call = max(1, TIE_BYTES // (TIE_BYTES_PER_SLOT * width))
        still = []
        for start in range(0, len(tied), per_call):
            part = tied[start : start + per_call]
            s, i = faiss_chunks(queries[part], keys, width)  # (p, width)
            order = np.lexsort((i, -s), axis=1)[:, :wide]
            scores[part], idx[part] = np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
            still.append(part[s[:, -1] == s[:, k - 1]])  # the tie still reaches the widest result: widen again
        tied = np.concatenate(still)
    order = np.lexsort((idx, -scores), axis=1)[:, :k]  # last key is primary: score desc, then position asc
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(idx, order, axis=1)


def distinct_topk(queries: np.ndarray, keys: np.ndarray, k: int, groups: DistinctRows) -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys of each query (k <= rows of keys) through their distinct rows; (t, k) scores and positions.

    The top-min(k, u) distinct rows by (score desc, first position asc) hold the top-k keys: a key outside them has
    k distinct rows ranked above it, whose first positions all rank above it. The distinct row at rank r gives at
    most k - r keys (the first rows of the r ranked above it come first), so each query has at most k(k+1)/2
    candidates, sorted by (score desc, position asc). The distinct rows are copied out TIE_BYTES at a time.
    """
    t, d = queries.shape
    ku = min(k, groups.count)
    chunk = max(ku, TIE_BYTES // (4 * d))
    parts = []
    for a in range(0, groups.count, chunk):
        reps = keys[groups.first[a : a + chunk]]  # (c, d) copy of distinct rows, in rank order
        s, i = faiss_scan(queries, reps, min(ku, len(reps)), distinct=lambda: None)  # no copies among them
        parts.append((s, i + a))
    s, g = merge_topk(parts, ku)  # (t, ku) scores and group ranks
    sizes = np.diff(groups.starts)
    take = np.minimum(sizes[g], k - np.arange(ku))  # (t, ku) keys each ranked group may give, >= 1 each
    flat = take.ravel()
    ends = np.cumsum(flat)
    offsets = np.repeat(groups.starts[g].ravel() - (ends - flat), flat) + np.arange(ends[-1])
    cand = groups.members[offsets]  # (total,) key positions
    cand_s = np.repeat(s.ravel(), flat)  # a copy's score is its group's
    row = np.repeat(np.arange(t), take.sum(axis=1))
    order = np.lexsort((cand, -cand_s, row))  # by query, then score desc, then position asc
    row_start = np.concatenate([[0], np.cumsum(take.sum(axis=1))[:-1]])  # every query has >= k candidates
    pick = order[row_start[:, None] + np.arange(k)]  # (t, k)
    return cand_s[pick], cand[pick]


def faiss_chunks(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss.knn by inner product over query chunks below FAISS's BLAS threshold (its per-pair SIMD path)."""
    import faiss

    chunk = max(1, min(SCAN_QUERIES, faiss.cvar.distance_compute_blas_threshold - 1))
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    idx = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk):
        stop = min(start + chunk, queries.shape[0])
        scores[start:stop], idx[start:stop] = faiss.knn(queries[start:stop], keys, k, metric=faiss.METRIC_INNER_PRODUCT)
    return scores, idx


def shard_bounds(rows: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges splitting `rows` into `num_shards` near-equal, non-empty shards."""
    if num_shards <= 0:
        raise ValueError(f"num_shards must be positive, got {num_shards}")
    num_shards = min(num_shards, rows)
    edges = np.linspace(0, rows, num_shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in pairwise(edges)]


def knn_search(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    block_size: int = 4096,
    num_shards: int = 1,
    device: str = "cpu",
) -> KnnResult:
    """Exact top-k keys of every query by inner product, block by block (memory: one query block and its top-k).

    Args:
        queries: (n, d) L2-normalized.
        keys: (m, d) L2-normalized.
        k: neighbours per query; clipped to m (a side smaller than k has only m neighbours).
        block_size: queries per block; also the key tile width on a GPU (a block_size^2 float tile there).
        num_shards: key shards searched one after another (the in-process twin of one shard per Ray actor).
        device: torch device.
    """
    check_embeddings("queries", queries)
    check_embeddings("keys", keys, dim=queries.shape[1])
    if k <= 0 or block_size <= 0:
        raise ValueError(f"k ({k}) and block_size ({block_size}) must be positive")
    k = min(k, keys.shape[0])
    shards = [ShardSearcher(keys[a:b], a, device, block_size) for a, b in shard_bounds(keys.shape[0], num_shards)]
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], block_size):
        block = queries[start : start + block_size]
        parts = [shard.search(block, k) for shard in shards]
        scores[start : start + len(block)], indices[start : start + len(block)] = merge_topk(parts, k)
    return KnnResult(scores, indices)
