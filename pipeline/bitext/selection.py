"""Candidate pairs -> mined pairs: fwd, bwd, intersect, or 1:1 `max` (as LASER's mine_bitexts.py). Pure numpy.

Each direction proposes, for every sentence, its best-scoring neighbour among its k nearest. `max` pools the two
directions' proposals, sorts them by score and keeps a pair only when neither sentence has been used yet, so the
output is 1:1 (mined data must not repeat a sentence). Thresholding comes last: since proposals are visited in
descending score order, a pair below the threshold can never block one above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.bitext.knn import KnnResult
from pipeline.bitext.margin import Margin, neighbourhood_density, score_candidates

Retrieval = Literal["fwd", "bwd", "max", "intersect"]
RETRIEVALS: tuple[str, ...] = ("fwd", "bwd", "max", "intersect")


@dataclass(frozen=True)
class Pairs:
    """Mined pairs as parallel arrays (row numbers into the mined source/target arrays), best score first."""

    src: np.ndarray  # (p,) int64
    tgt: np.ndarray  # (p,) int64
    score: np.ndarray  # (p,) float32 margin score
    cosine: np.ndarray  # (p,) float32

    def __len__(self) -> int:
        return len(self.src)

    def above(self, threshold: float | None) -> Pairs:
        """Pairs with score >= threshold (all of them for None)."""
        if threshold is None:
            return self
        keep = self.score >= threshold
        return Pairs(self.src[keep], self.tgt[keep], self.score[keep], self.cosine[keep])


@dataclass(frozen=True)
class Proposals:
    """Each query's best candidate in one direction."""

    best: np.ndarray  # (n,) int64 key row of the best candidate
    score: np.ndarray  # (n,) float32 its margin score
    cosine: np.ndarray  # (n,) float32 its cosine


def best_candidates(knn: KnnResult, query_density: np.ndarray, key_density: np.ndarray, margin: Margin) -> Proposals:
    """For every query, the neighbour with the highest margin score (first one on ties: the higher cosine)."""
    scores = score_candidates(knn, query_density, key_density, margin)  # (n, k)
    pos = scores.argmax(axis=1)[:, None]  # (n, 1)
    return Proposals(
        np.take_along_axis(knn.indices, pos, 1)[:, 0],
        np.take_along_axis(scores, pos, 1)[:, 0],
        np.take_along_axis(knn.scores, pos, 1)[:, 0],
    )


def sort_pairs(src: np.ndarray, tgt: np.ndarray, score: np.ndarray, cosine: np.ndarray) -> Pairs:
    """Descending score; ties by (src, tgt) so the order is deterministic."""
    order = np.lexsort((tgt, src, -score))
    return Pairs(src[order], tgt[order], score[order], cosine[order])


def select_pairs(fwd: KnnResult, bwd: KnnResult, margin: Margin, retrieval: Retrieval) -> Pairs:
    """Mine pairs from both directions' neighbours, before any threshold.

    Args:
        fwd: each source row's k nearest target rows.
        bwd: each target row's k nearest source rows.
        margin: ratio, distance or absolute.
        retrieval: "fwd" every source's best target; "bwd" every target's best source; "intersect" pairs that are
            each other's best; "max" the 1:1 greedy set over both directions' proposals.
    """
    src_density, tgt_density = neighbourhood_density(fwd.scores, margin), neighbourhood_density(bwd.scores, margin)
    f = best_candidates(fwd, src_density, tgt_density, margin)
    b = best_candidates(bwd, tgt_density, src_density, margin)
    n, m = len(f.best), len(b.best)
    if retrieval == "fwd":
        return sort_pairs(np.arange(n), f.best, f.score, f.cosine)
    if retrieval == "bwd":
        return sort_pairs(b.best, np.arange(m), b.score, b.cosine)
    if retrieval == "intersect":
        mutual = b.best[f.best] == np.arange(n)
        return sort_pairs(np.flatnonzero(mutual), f.best[mutual], f.score[mutual], f.cosine[mutual])
    if retrieval == "max":
        pooled = sort_pairs(
            np.concatenate([np.arange(n), b.best]),
            np.concatenate([f.best, np.arange(m)]),
            np.concatenate([f.score, b.score]),
            np.concatenate([f.cosine, b.cosine]),
        )
        keep = greedy_one_to_one(pooled.src, pooled.tgt, n, m)
        return Pairs(pooled.src[keep], pooled.tgt[keep], pooled.score[keep], pooled.cosine[keep])
    raise ValueError(f"unknown retrieval {retrieval!r}; use one of {', '.join(RETRIEVALS)}")


def greedy_one_to_one(src: np.ndarray, tgt: np.ndarray, n: int, m: int) -> np.ndarray:
    """Positions of pairs kept when walking them in order and skipping any whose source or target is already used.

    A python loop over at most n + m proposals: linear and cheap next to the k-NN search.
    """
    used_src = np.zeros(n, dtype=bool)
    used_tgt = np.zeros(m, dtype=bool)
    keep = []
    for pos, (s, t) in enumerate(zip(src.tolist(), tgt.tolist())):
        if not used_src[s] and not used_tgt[t]:
            used_src[s] = used_tgt[t] = True
            keep.append(pos)
    return np.asarray(keep, dtype=np.int64)
