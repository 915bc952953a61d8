"""Quality measures for mining: Tatoeba-style retrieval error and BUCC-style precision/recall/F1. Pure numpy.

Kept next to the mining code (not in the benchmark script) so the definitions are unit-tested and the benchmark,
the job's summary and the README all mean the same thing by "error" and "F1".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.bitext.knn import knn_search
from pipeline.bitext.margin import Margin, neighbourhood_density
from pipeline.bitext.selection import Pairs, best_candidates


@dataclass(frozen=True)
class RetrievalErrors:
    """Error rates (fractions) when row i of X should retrieve row i of Y and back."""

    cosine_fwd: float
    cosine_bwd: float
    margin_fwd: float
    margin_bwd: float

    @property
    def cosine(self) -> float:
        return (self.cosine_fwd + self.cosine_bwd) / 2

    @property
    def margin(self) -> float:
        return (self.margin_fwd + self.margin_bwd) / 2


def retrieval_errors(
    x: np.ndarray, y: np.ndarray, k: int = 4, margin: Margin = "ratio", block_size: int = 4096
) -> RetrievalErrors:
    """Tatoeba protocol: x[i] translates y[i]; top-1 by cosine vs best-of-k by margin, in both directions."""
    if x.shape != y.shape:
        raise ValueError(f"aligned test sets need equal shapes, got {x.shape} and {y.shape}")
    fwd = knn_search(x, y, k, block_size)
    bwd = knn_search(y, x, k, block_size)
    gold = np.arange(x.shape[0])
    d_fwd, d_bwd = neighbourhood_density(fwd.scores, margin), neighbourhood_density(bwd.scores, margin)
    f = best_candidates(fwd, d_fwd, d_bwd, margin)
    b = best_candidates(bwd, d_bwd, d_fwd, margin)
    return RetrievalErrors(
        cosine_fwd=float(np.mean(fwd.indices[:, 0] != gold)),
        cosine_bwd=float(np.mean(bwd.indices[:, 0] != gold)),
        margin_fwd=float(np.mean(f.best != gold)),
        margin_bwd=float(np.mean(b.best != gold)),
    )


@dataclass(frozen=True)
class PRF:
    threshold: float | None
    kept: int
    correct: int
    gold: int

    @property
    def precision(self) -> float:
        return self.correct / self.kept if self.kept else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def correct_mask(pairs: Pairs, gold: set[tuple[int, int]]) -> np.ndarray:
    return np.array([(s, t) in gold for s, t in zip(pairs.src.tolist(), pairs.tgt.tolist())], dtype=bool)


def prf_at(pairs: Pairs, gold: set[tuple[int, int]], threshold: float | None) -> PRF:
    """Precision/recall/F1 of the pairs scoring >= threshold against the known (src, tgt) pairs."""
    kept = pairs.above(threshold)
    return PRF(threshold, len(kept), int(correct_mask(kept, gold).sum()), len(gold))


def best_f1(pairs: Pairs, gold: set[tuple[int, int]]) -> PRF:
    """The threshold maximizing F1, as BUCC tunes it: every distinct score is tried as a cut (one pass, sorted)."""
    if not gold:
        raise ValueError("best_f1 needs at least one gold pair")
    order = np.argsort(-pairs.score, kind="stable")
    scores = pairs.score[order]
    correct = np.cumsum(correct_mask(pairs, gold)[order])  # correct among the top i+1
    kept = np.arange(1, len(scores) + 1)
    # a cut at scores[i] keeps every pair with score >= scores[i]: take the last position of each tied run
    last_of_run = np.r_[scores[1:] != scores[:-1], True]
    f1 = np.where(last_of_run, 2 * correct / (kept + len(gold)), -1.0)
    if len(f1) == 0 or f1.max() <= 0:
        return PRF(None, 0, 0, len(gold))
    i = int(np.argmax(f1))
    return PRF(float(scores[i]), int(kept[i]), int(correct[i]), len(gold))
