"""Brute-force reference for the bitext tests: the formulas written the obvious way over the full similarity matrix.

Deliberately shares no code with pipeline.bitext, so that a bug there cannot hide in both.
"""

from __future__ import annotations

import numpy as np


def random_unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_knn(q: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sim = q.astype(np.float64) @ keys.astype(np.float64).T
    idx = np.array([sorted(range(sim.shape[1]), key=lambda j: (-sim[i, j], j))[:k] for i in range(sim.shape[0])])
    return np.take_along_axis(sim, idx, 1), idx


def brute_mine(x: np.ndarray, y: np.ndarray, k: int, margin: str, retrieval: str) -> list[tuple[int, int, float]]:
    """(src, tgt, score) triples, the way LASER's mine_bitexts.py describes them, with plain python loops."""
    sim = x.astype(np.float64) @ y.astype(np.float64).T
    # as mine_bitexts.py: each direction's k is clipped to its own key side (a side of 3 rows against one of 7 with
    # k = 10: 7 neighbours forward, 3 backward), not both to the smaller side
    fwd_s, fwd_i = brute_knn(x, y, min(k, y.shape[0]))
    bwd_s, bwd_i = brute_knn(y, x, min(k, x.shape[0]))
    # the documented ratio rule (docs/bitext.md): cosines clipped at 0, the mean of the two densities at least 1e-4;
    # LASER's own value wherever those cosines are positive and the mean above 1e-4
    clip = (lambda v: np.maximum(v, 0.0)) if margin == "ratio" else (lambda v: v)
    dx = clip(fwd_s).mean(axis=1)
    dy = clip(bwd_s).mean(axis=1)

    def score(i: int, j: int) -> float:
        c = sim[i, j]
        if margin == "absolute":
            return c
        if margin == "ratio":
            return max(c, 0.0) / max((dx[i] + dy[j]) / 2, 1e-4)
        return c - (dx[i] + dy[j]) / 2

    fwd = [max(fwd_i[i], key=lambda j: score(i, j)) for i in range(x.shape[0])]
    bwd = [max(bwd_i[j], key=lambda i: score(i, j)) for j in range(y.shape[0])]
    if retrieval == "fwd":
        pairs = [(i, fwd[i]) for i in range(x.shape[0])]
    elif retrieval == "bwd":
        pairs = [(bwd[j], j) for j in range(y.shape[0])]
    elif retrieval == "intersect":
        pairs = [(i, fwd[i]) for i in range(x.shape[0]) if bwd[fwd[i]] == i]
    else:
        proposals = sorted(
            [(i, fwd[i]) for i in range(x.shape[0])] + [(bwd[j], j) for j in range(y.shape[0])],
            key=lambda p: (-score(*p), p[0], p[1]),
        )
        used_x, used_y, pairs = set(), set(), []
        for i, j in proposals:
            if i not in used_x and j not in used_y:
                used_x.add(i)
                used_y.add(j)
                pairs.append((i, j))
    return sorted(((int(i), int(j), score(i, j)) for i, j in pairs), key=lambda t: (-t[2], t[0], t[1]))
