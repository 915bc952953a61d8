"""Semantic dedup inside one cluster: blocked cosine matmul, duplicate groups, one kept row per group.

Two rows are duplicates when their cosine is >= 1 - max(eps, EPS_FLOOR). Duplicate pairs are joined transitively (union-find), and
one row per group is kept: the first id (natural order), the longest text, or a seeded random one. Memory is
bounded by the tile size (block_rows^2 cosines) plus the cluster's vectors; clusters above `max_rows` are first
split by a sub-k-means so one task never holds more than `max_rows` vectors. Plain numpy: no Ray in here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.clustering import kmeans
from pipeline.clustering.ordering import natural_order, stable_uniform

KEEP_POLICIES = ("first", "longest", "random")

# Smallest eps the comparison honours. The float32 cosine of two identical unit vectors reads 1 +- 5e-7 (measured at
# dims 64-1024; float32 spacing below 1 is 6e-8), so an eps below that missed exact copies: 1e-8 rounds 1 - eps to
# 1.0 and ~40 % of copies read below it. A smaller eps counts as this one: a cosine of 1 - 1e-5 is a copy in
# practice (an edit moves e5's cosine by ~1e-2).
EPS_FLOOR = 1e-5


@dataclass
class DedupResult:
    kept: np.ndarray  # (N,) int64: index (into the cluster's rows) of the row kept for each row; kept[i] == i if kept
    cosine: np.ndarray  # (N,) float32: cosine of each row to its kept row (1 for kept rows)
    uncompared: int = 0  # rows kept by the pieces of a split cluster that were not compared with each other

    @property
    def n_duplicates(self) -> int:
        return int((self.kept != np.arange(len(self.kept))).sum())


def pair_tiles(x: np.ndarray, eps: float, block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs i < j of unit rows with cosine >= 1 - max(eps, EPS_FLOOR), one tile of the upper triangle at a
    time: (i, j) int64 row indices into x and their float32 cosines. Peak extra memory: one tile's block_rows^2
    cosines and its pairs."""
    threshold = np.float32(1.0 - max(eps, EPS_FLOOR))
    for a in range(0, len(x), block_rows):
        for b in range(a, len(x), block_rows):
            sims = x[a : a + block_rows] @ x[b : b + block_rows].T  # (Ba, Bb)
            if a == b:
                sims = np.triu(sims, k=1) + np.tril(np.full_like(sims, -2.0))  # only j > i inside the diagonal tile
            ii, jj = np.nonzero(sims >= threshold)
            cosines = sims[ii, jj].astype(np.float32)
            del sims  # the caller's work on this tile's pairs holds no cosine matrix
            yield ii.astype(np.int64) + a, jj.astype(np.int64) + b, cosines


def duplicate_pairs(x: np.ndarray, eps: float, block_rows: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j of unit rows with cosine >= 1 - eps, computed tile by tile over the upper triangle.

    Args:
        x: (N, d) unit vectors.
        eps: cosine distance threshold; below EPS_FLOOR it counts as EPS_FLOOR, so exact copies are always found.
        block_rows: tile edge; peak extra memory is block_rows^2 float32 (16 MiB at 2048).

    Returns:
        (i, j, cosine) arrays, sorted by (i, j).
    """
    found_i, found_j, found_c = [], [], []
    for i, j, cosines in pair_tiles(x, eps, block_rows):
        found_i.append(i)
        found_j.append(j)
        found_c.append(cosines)
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    i, j, c = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_c)
    order = np.lexsort((j, i))
    return i[order], j[order], c[order]


def groups(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the duplicate graph: a group label (its smallest member) for each of n rows."""
    parent = np.arange(n, dtype=np.int64)
    union(parent, np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64))
    return roots(parent, np.arange(n, dtype=np.int64))


def roots(parent: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The root of each of `rows` in a union-find forest whose parents are never larger than their children."""
    r = parent[rows]
    while True:
        up = parent[r]
        if np.array_equal(up, r):
            return r
        r = up


def union(parent: np.ndarray, i: np.ndarray, j: np.ndarray) -> None:
    """Join rows i[e] and j[e] for every edge e, in place, vectorized: each pass links the larger root of an edge
    to the smallest root it meets; edges whose ends share a root are done. Memory: a few arrays of the edges."""
    while len(i):
        ri, rj = roots(parent, i), roots(parent, j)
        apart = ri != rj
        i, j, ri, rj = i[apart], j[apart], ri[apart], rj[apart]
        np.minimum.at(parent, np.maximum(ri, rj), np.minimum(ri, rj))
    parent[:] = roots(parent, np.arange(len(parent), dtype=np.int64))  # flatten: later finds take one step


def duplicate_groups(x: np.ndarray, eps: float, block_rows: int = 2048) -> np.ndarray:
    """`groups` of the duplicate pairs of `duplicate_pairs`, joined tile by tile: (N,) int64 group labels.

    The pairs are not kept: N copies of one vector have N(N-1)/2 of them (1.25e9 at 50,000 rows, the largest piece
    `dedup_cluster` gives a task), while each tile's pairs are joined into the forest and dropped. Memory: one tile's
    cosines and pairs (block_rows^2) and the (N,) forest.
    """
    parent = np.arange(len(x), dtype=np.int64)
    for i, j, _ in pair_tiles(x, eps, block_rows):
        union(parent, i, j)
    return parent


def priority(ids: list[str], keep: str, seed: int, lengths: np.ndarray | None = None) -> np.ndarray:
    """Rank of each row under the keep policy; the lowest rank in a duplicate group is kept.

    Raises:
        ValueError: unknown policy, or 'longest' without text lengths.
    """
    n = len(ids)
    first = np.empty(n, dtype=np.int64)
    first[natural_order(ids)] = np.arange(n)  # rank in natural id order: the tie-breaker of every policy
    if keep == "first":
        return first
    if keep == "longest":
        if lengths is None:
            raise ValueError("dedup keep='longest' needs text lengths: set input.text_column")
        order = np.lexsort((first, -np.asarray(lengths, dtype=np.int64)))
    elif keep == "random":
        order = np.lexsort((first, stable_uniform(ids, seed)))
    else:
        raise ValueError(f"unknown dedup keep policy {keep!r}: use one of {KEEP_POLICIES}")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def dedup_rows(
    x: np.ndarray,
    ids: list[str],
    eps: float,
    keep: str = "first",
    seed: int = 0,
    lengths: np.ndarray | None = None,
    block_rows: int = 2048,
) -> DedupResult:
    """Dedup one set of unit vectors (a cluster or a piece of one); see the module docstring."""
    rank = priority(ids, keep, seed, lengths)
    label = duplicate_groups(x, eps, block_rows)
    # kept row of each group: the member with the lowest rank
    best = {}
    for row in np.argsort(rank, kind="stable").tolist():
        best.setdefault(int(label[row]), row)
    kept = np.array([best[int(g)] for g in label], dtype=np.int64)
    cosine = np.minimum(np.einsum("nd,nd->n", x, x[kept]), 1.0).astype(np.float32)  # float32 can round above 1
    cosine[kept == np.arange(len(x))] = 1.0
    return DedupResult(kept, cosine)


def split_rows(x: np.ndarray, max_rows: int, seed: int) -> list[np.ndarray]:
    """Split rows into pieces of at most `max_rows` by recursive spherical k-means, so near rows stay together.

    Duplicates that land in different pieces are missed; pieces are as large as allowed to keep that rare. Rows
    that k-means cannot separate (e.g. all identical) are cut into consecutive chunks.
    """
    if len(x) <= max_rows:
        return [np.arange(len(x))]
    k = math.ceil(len(x) / max_rows)
    fit = kmeans.fit_blocks([x], k, max_iter=20, tol=1e-4, seed=seed, init="kmeans++")
    labels, _ = kmeans.assign(x, fit.centroids)
    pieces: list[np.ndarray] = []
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        if len(rows) == len(x):  # no progress: fall back to chunks
            return [rows[s : s + max_rows] for s in range(0, len(rows), max_rows)]
        pieces.extend(rows[sub] for sub in split_rows(x[rows], max_rows, seed) if len(rows))
    return [p for p in pieces if len(p)]


def dedup_cluster(
    x: np.ndarray,
    ids: list[str],
    eps: float,
    keep: str = "first",
    seed: int = 0,
    lengths: np.ndarray | None = None,
    max_rows: int = 50_000,
    block_rows: int = 2048,
) -> DedupResult:
    """Dedup a whole cluster, splitting it first when it has more than `max_rows` rows.

    Split, each piece is deduplicated alone, then the rows the pieces kept are compared with each other once more
    when they are at most `max_rows` (a piece's pairwise work): copies cut apart by the split join one group, kept by
    the same policy. Beyond that, the rows the pieces kept are not compared again (a quadratic pass over them), and
    `DedupResult.uncompared` counts them: a near duplicate cut apart from its partner may stay. Exact copies (the
    same unit vector, whatever `eps`) always join one group, through a 16-byte digest per row, so the split of a
    cluster of copies (cut into chunks, as k-means cannot separate them) never keeps two of them. The cosine of a row
    is then to its group's kept row.
    """
    kept = np.arange(len(x))
    cosine = np.ones(len(x), dtype=np.float32)
    pieces = split_rows(x, max_rows, seed)
    for rows in pieces:
        part = dedup_rows(
            x[rows], [ids[r] for r in rows], eps, keep, seed, None if lengths is None else lengths[rows], block_rows
        )
        kept[rows] = rows[part.kept]
        cosine[rows] = part.cosine
    if len(pieces) == 1:
        return DedupResult(kept, cosine)
    reps = np.flatnonzero(kept == np.arange(len(x)))  # (r,) the rows the pieces kept
    parent = np.arange(len(x), dtype=np.int64)
    union(parent, np.arange(len(x), dtype=np.int64), kept)  # each row with the row its piece kept
    uncompared = 0
    if len(reps) <= max_rows:
        across = dedup_rows(
            x[reps], [ids[r] for r in reps], eps, keep, seed, None if lengths is None else lengths[reps], block_rows
        )
        union(parent, reps, reps[across.kept])
    else:
        uncompared = len(reps)
    union(parent, *exact_copies(x, reps))  # copies cut apart join whatever the second pass did
    final = keep_best(parent, priority(ids, keep, seed, lengths))
    moved = final != kept
    # a row whose kept row changed: its cosine to the new one (float32 can round above 1)
    cosine[moved] = np.minimum(np.einsum("nd,nd->n", x[moved], x[final[moved]]), 1.0)
    cosine[final == np.arange(len(x))] = 1.0
    return DedupResult(final, cosine, uncompared)


def exact_copies(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (i, j) joining each of `rows` (indices into x) to the first of them with the same vector, bit for bit:
    a 16-byte BLAKE2b digest of each row's bytes, sorted. Memory: 16 bytes and a few int64 per row, no copy of x."""
    raw = b"".join(hashlib.blake2b(x[r].tobytes(), digest_size=16).digest() for r in rows.tolist())
    digests = np.frombuffer(raw, dtype=[("hi", "<u8"), ("lo", "<u8")])
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    same = rows[first[inverse.reshape(-1)]]
    apart = same != rows
    return rows[apart], same[apart]


def keep_best(parent: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """(N,) the kept row of each row's group (its root in the union-find forest `parent`): the lowest rank."""
    label = roots(parent, np.arange(len(parent), dtype=np.int64))
    order = np.lexsort((rank, label))  # by group, best rank first
    first = np.ones(len(order), dtype=bool)
    first[1:] = label[order][1:] != label[order][:-1]
    best = np.empty(len(parent), dtype=np.int64)
    best[label[order][first]] = order[first]
    return best[label]
