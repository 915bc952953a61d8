from __future__ import annotations

import numpy as np
import pytest

from pipeline.bitext.knn import KnnResult
from pipeline.bitext.margin import margin_score, score_candidates


def test_margin_formulas_on_hand_computed_values():
    # cos 0.8, densities 0.6 and 0.4 -> denominator 0.5
    assert margin_score(np.float32(0.8), 0.6, 0.4, "ratio") == pytest.approx(1.6)
    assert margin_score(np.float32(0.8), 0.6, 0.4, "distance") == pytest.approx(0.3)
    assert margin_score(np.float32(0.8), 0.6, 0.4, "absolute") == pytest.approx(0.8)


def test_unknown_margin_lists_the_known_ones():
    with pytest.raises(ValueError, match="ratio, distance, absolute"):
        margin_score(np.float32(0.8), 0.6, 0.4, "cosine")


def test_score_candidates_uses_each_key_density():
    knn = KnnResult(np.array([[0.9, 0.3]], dtype=np.float32), np.array([[1, 0]]))
    query_density = np.array([0.6], dtype=np.float32)
    key_density = np.array([0.2, 0.8], dtype=np.float32)
    got = score_candidates(knn, query_density, key_density, "ratio")
    np.testing.assert_allclose(got, [[0.9 / 0.7, 0.3 / 0.4]], rtol=1e-6)


def test_a_hub_loses_against_an_isolated_true_pair():
    # Same cosine 0.7, but the hub target is close to everything (density 0.7) and the isolated one is not (0.3).
    knn = KnnResult(np.array([[0.7, 0.7]], dtype=np.float32), np.array([[0, 1]]))
    scores = score_candidates(knn, np.array([0.5], dtype=np.float32), np.array([0.7, 0.3], dtype=np.float32), "ratio")
    assert scores[0, 1] > scores[0, 0]
