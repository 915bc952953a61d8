"""Margin scores of candidate pairs (Artetxe & Schwenk 2019, "Margin-based Parallel Corpus Mining").

Plain cosine is not comparable across sentences: some sentences ("hubs") are close to everything. The margin divides
(ratio) or offsets (distance) a pair's cosine by the average density of both neighbourhoods, so a pair scores high only
when x and y are closer to each other than to their other neighbours. Pure numpy.

Every score is finite (the rule, docs/bitext.md "Margin scores"): LASER's mine_bitexts.py computes the ratio as
cos / ((d(x) + d(y)) / 2) as is, which is 0/0 = NaN for orthogonal neighbourhoods, +-inf or a float-noise blow-up
for a mean near 0, and flips its order for negative means (an opposite vector outscored a near one). The ratio
margin here works on cosines clipped at 0 (a negative cosine says "unrelated", as 0 does) and divides by at least
RATIO_FLOOR, so it lies in [0, 2k] (a candidate is one of the k neighbours its own density averages, so that
density is at least its cosine / k); where every cosine involved is positive and the mean above the floor, the
usual case for sentence encoders, it is LASER's value. distance and absolute are LASER's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # numpy only at run time: the mining config reads margin_range without importing torch
    from pipeline.bitext.knn import KnnResult

Margin = Literal["ratio", "distance", "absolute"]
MARGINS: tuple[str, ...] = ("ratio", "distance", "absolute")

# Smallest denominator of the ratio margin, in cosine units. Cosines of float32 unit vectors carry rounding errors up
# to ~dim * 2**-24 (6e-5 at dim 1024): a neighbourhood mean below 1e-4 is indistinguishable from orthogonal, and
# dividing by it would turn rounding noise into the run's best scores. Sentence encoders' means are ~0.3-0.9.
RATIO_FLOOR = 1e-4


def margin_range(margin: str, k: int) -> tuple[float, float]:
    """Lowest and highest score of `margin` for unit vectors and `k` neighbours: absolute [-1, 1] (a cosine),
    distance [-2, 2], ratio [0, 2k] (see the module docstring)."""
    return {"absolute": (-1.0, 1.0), "distance": (-2.0, 2.0), "ratio": (0.0, 2.0 * k)}[margin]


def neighbourhood_density(sims: np.ndarray, margin: str) -> np.ndarray:
    """(n,) float32 mean of each row's k neighbour cosines: the density term of the margin (LASER's x2y_mean).

    Args:
        sims: (n, k) cosines of each query's k nearest keys; -inf marks an unfilled slot (IVF found fewer than k),
            left out of the mean (a row without any scores 0).
        margin: for "ratio" each cosine counts as max(cos, 0); otherwise as it is.
    """
    finite = np.isfinite(sims)
    values = np.where(finite, sims, 0.0)
    if margin == "ratio":
        values = np.maximum(values, 0.0)
    if finite.all():
        return values.mean(axis=1, dtype=np.float64).astype(np.float32)
    total = values.sum(axis=1, dtype=np.float64)
    return (total / np.maximum(finite.sum(axis=1), 1)).astype(np.float32)


def margin_score(cosine: np.ndarray, x_density: np.ndarray, y_density: np.ndarray, margin: Margin) -> np.ndarray:
    """Score pairs from their cosine and the two neighbourhood densities (broadcasting shapes); float32, finite.

    Args:
        cosine: cos(x, y) of each pair.
        x_density: `neighbourhood_density` of x's k nearest neighbours in Y, computed for the same margin.
        y_density: the same of y's k nearest neighbours in X.
        margin: "ratio" max(cos, 0) / max((dx + dy) / 2, RATIO_FLOOR), "distance" cos - (dx + dy) / 2, or
            "absolute" cos.

    Raises:
        ValueError: an unknown margin.
    """
    if margin == "absolute":
        return np.asarray(cosine, dtype=np.float32)
    denominator = (np.asarray(x_density, dtype=np.float64) + np.asarray(y_density, dtype=np.float64)) / 2.0
    if margin == "ratio":
        numerator = np.maximum(np.asarray(cosine, dtype=np.float64), 0.0)
        return (numerator / np.maximum(denominator, RATIO_FLOOR)).astype(np.float32)
    if margin == "distance":
        return (cosine - denominator).astype(np.float32)
    raise ValueError(f"unknown margin {margin!r}; use one of {', '.join(MARGINS)}")


def score_candidates(knn: KnnResult, query_density: np.ndarray, key_density: np.ndarray, margin: Margin) -> np.ndarray:
    """(n, k) margin scores of every query's k nearest keys.

    Args:
        knn: neighbours of the queries among the keys (one direction).
        query_density: (n,) `neighbourhood_density(knn.scores, margin)` of the queries among the keys.
        key_density: (m,) the same of each key among the queries (the other direction's).
        margin: see `margin_score`.
    """
    return margin_score(knn.scores, query_density[:, None], key_density[knn.indices], margin)
