from __future__ import annotations

import numpy as np
import pytest
from bitext_reference import random_unit

from pipeline.bitext.evaluation import best_f1, prf_at, retrieval_errors
from pipeline.bitext.selection import Pairs


def pairs(src, tgt, score) -> Pairs:
    score = np.asarray(score, dtype=np.float32)
    return Pairs(np.asarray(src), np.asarray(tgt), score, score)


def test_prf_by_hand():
    p = pairs([0, 1, 2, 3], [0, 5, 2, 9], [1.3, 1.2, 1.1, 1.0])
    gold = {(0, 0), (2, 2), (4, 4)}
    r = prf_at(p, gold, 1.1)  # keeps 3 pairs, 2 correct, 3 gold
    assert (r.kept, r.correct) == (3, 2)
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3) and r.f1 == pytest.approx(2 / 3)
    assert prf_at(p, gold, 5.0).f1 == 0.0


def test_best_f1_matches_a_sweep_over_every_cut():
    rng = np.random.default_rng(0)
    n = 60
    score = rng.normal(size=n).round(1)  # rounding creates ties: a cut keeps the whole tied run
    p = pairs(np.arange(n), np.where(rng.random(n) < 0.5, np.arange(n), -1), score)
    gold = {(i, i) for i in range(n)} | {(1000, 1000)}
    best = best_f1(p, gold)
    sweep = max((prf_at(p, gold, float(t)) for t in np.unique(p.score)), key=lambda r: r.f1)
    assert best.f1 == pytest.approx(sweep.f1)
    assert best.kept == int((p.score >= best.threshold).sum())


def test_retrieval_errors_perfect_and_shuffled():
    rng = np.random.default_rng(1)
    x = random_unit(rng, 50, 32)
    y = x + 0.01 * random_unit(rng, 50, 32)
    e = retrieval_errors(x, y)
    assert e.cosine == 0.0 and e.margin == 0.0
    shuffled = retrieval_errors(x, y[::-1].copy())
    assert shuffled.cosine > 0.9 and shuffled.margin > 0.9
    with pytest.raises(ValueError, match="equal shapes"):
        retrieval_errors(x, y[:10])


def test_margin_fixes_a_hub_that_cosine_gets_wrong():
    # x_i = e_i + 0.8 h; y_0 = h is a hub (cos 0.625 with every x); y_i = e_i + own noise dim (cos 0.552 with x_i).
    # Cosine sends every x_i to the hub; the hub's dense neighbourhood (0.625) vs y_i's sparse one (0.138) makes
    # the ratio margin pick y_i (2.55 vs 1.36).
    n = 20
    eye = np.eye(2 * n + 1, dtype=np.float32)
    hub = eye[n]
    x = np.stack([eye[i] + 0.8 * hub for i in range(n)])
    y = np.stack([hub] + [eye[i] + eye[n + 1 + i] for i in range(1, n)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    e = retrieval_errors(x, y, k=4)
    assert e.cosine_fwd == pytest.approx((n - 1) / n)
    assert e.margin_fwd == 0.0
