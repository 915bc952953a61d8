"""Margin scores of candidate pairs (Artetxe & Schwenk 2019, "Margin-based Parallel Corpus Mining").

Plain cosine is not comparable across sentences: some sentences ("hubs") are close to everything. The margin divides
(ratio) or offsets (distance) a pair's cosine by the average density of both neighbourhoods, so a pair scores high only
when x and y are closer to each other than to their other neighbours. Pure numpy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pipeline.bitext.knn import KnnResult

Margin = Literal["ratio", "distance", "absolute"]
MARGINS: tuple[str, ...] = ("ratio", "distance", "absolute")


def margin_score(cosine: np.ndarray, x_density: np.ndarray, y_density: np.ndarray, margin: Margin) -> np.ndarray:
    """Score pairs from their cosine and the two neighbourhood densities (broadcasting shapes).

    Args:
        cosine: cos(x, y) of each pair.
        x_density: mean cosine of x's k nearest neighbours in Y.
        y_density: mean cosine of y's k nearest neighbours in X.
        margin: "ratio" cos / ((dx + dy) / 2), "distance" cos - (dx + dy) / 2, or "absolute" cos.
    """
    if margin == "absolute":
        return np.asarray(cosine, dtype=np.float32)
    denominator = (np.asarray(x_density, dtype=np.float64) + np.asarray(y_density, dtype=np.float64)) / 2.0
    if margin == "ratio":
        return (cosine / denominator).astype(np.float32)
    if margin == "distance":
        return (cosine - denominator).astype(np.float32)
    raise ValueError(f"unknown margin {margin!r}; use one of {', '.join(MARGINS)}")


def score_candidates(knn: KnnResult, query_density: np.ndarray, key_density: np.ndarray, margin: Margin) -> np.ndarray:
    """(n, k) margin scores of every query's k nearest keys.

    Args:
        knn: neighbours of the queries among the keys (one direction).
        query_density: (n,) mean k-NN cosine of each query among the keys (this direction's `knn.mean_scores()`).
        key_density: (m,) mean k-NN cosine of each key among the queries (the other direction's).
        margin: see `margin_score`.
    """
    return margin_score(knn.scores, query_density[:, None], key_density[knn.indices], margin)
