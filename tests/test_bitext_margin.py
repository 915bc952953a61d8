from __future__ import annotations

import numpy as np
import pytest

from pipeline.bitext.knn import KnnResult
from pipeline.bitext.margin import RATIO_FLOOR, margin_range, margin_score, neighbourhood_density, score_candidates


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


# The ratio rule (docs/bitext.md, Margin scores): cosines clipped at 0, denominator at least RATIO_FLOOR, every score
# finite and in [0, 2k]. Hand-worked values; LASER's plain cos / mean gave the values in the comments.


def test_ratio_margin_of_orthogonal_or_opposite_neighbourhoods_is_zero_not_nan():
    # orthogonal: cos 0, both neighbourhoods 0 -> LASER 0/0 = NaN
    assert margin_score(np.float32(0.0), 0.0, 0.0, "ratio") == 0.0
    # negative densities: x = e1, targets -e1 (cos -1) and (-0.6, 0.8) (cos -0.6), k = 2. LASER: densities -0.8 and
    # -1 / -0.6, so the opposite vector scored -1 / -0.9 = 1.11 and the nearer one -0.6 / -0.7 = 0.86
    sims = np.array([[-0.6, -1.0]], np.float32)
    dx = neighbourhood_density(sims, "ratio")
    assert dx.tolist() == [0.0]
    for cos, dy in ((-1.0, -1.0), (-0.6, -0.6)):
        dy_ratio = neighbourhood_density(np.array([[dy]], np.float32), "ratio")
        assert margin_score(np.float32(cos), dx, dy_ratio, "ratio").tolist() == [0.0]
    # distance keeps LASER's value (finite): -0.6 - (-0.8 - 0.6) / 2 = 0.1; -1 - (-0.8 - 1) / 2 = -0.1
    d = neighbourhood_density(sims, "distance")
    assert d.tolist() == [pytest.approx(-0.8)]
    assert margin_score(np.float32(-0.6), d, np.float32(-0.6), "distance") == pytest.approx(0.1, abs=1e-6)
    assert margin_score(np.float32(-1.0), d, np.float32(-1.0), "distance") == pytest.approx(-0.1, abs=1e-6)


def test_ratio_margin_of_a_near_zero_mean_is_divided_by_the_floor():
    # float rounding noise around orthogonal vectors: cos 3e-8, other neighbours 0, k = 4: LASER 3e-8 / 7.5e-9 = 4,
    # a top score out of noise. Floor 1e-4: 3e-4 of a score
    assert RATIO_FLOOR == 1e-4
    dx = neighbourhood_density(np.array([[3e-8, 0, 0, 0]], np.float32), "ratio")
    assert margin_score(np.float32(3e-8), dx, np.float32(0.0), "ratio") == pytest.approx(3e-4, rel=1e-5)
    # a mean just above the floor is divided as is: 0.0004 / ((0.0004 + 0.0002) / 2)
    assert margin_score(np.float32(4e-4), 4e-4, 2e-4, "ratio") == pytest.approx(4 / 3, rel=1e-5)


def test_ratio_margin_with_a_negative_neighbour_clips_it_to_zero():
    # x0 = e1, x1 = e2; y0 = (0.6, 0.8), y1 = (-0.6, 0.8), k = 2: cos(x0, y1) = -0.6 counts as 0.
    # densities: x0 (0.6 + 0) / 2 = 0.3, x1 0.8, y0 (0.8 + 0.6) / 2 = 0.7, y1 (0.8 + 0) / 2 = 0.4
    x = np.array([[1, 0], [0, 1]], np.float32)
    y = np.array([[0.6, 0.8], [-0.6, 0.8]], np.float32)
    fwd = KnnResult(np.array([[0.6, -0.6], [0.8, 0.8]], np.float32), np.array([[0, 1], [0, 1]]))
    bwd = KnnResult(np.array([[0.8, 0.6], [0.8, -0.6]], np.float32), np.array([[1, 0], [1, 0]]))
    np.testing.assert_allclose(fwd.scores, (x @ y.T)[:, [0, 1]], atol=1e-7)
    dx, dy = neighbourhood_density(fwd.scores, "ratio"), neighbourhood_density(bwd.scores, "ratio")
    np.testing.assert_allclose(dx, [0.3, 0.8], rtol=1e-6)
    np.testing.assert_allclose(dy, [0.7, 0.4], rtol=1e-6)
    got = score_candidates(fwd, dx, dy, "ratio")
    # (x0,y0) 0.6 / 0.5 = 1.2, (x0,y1) 0, (x1,y0) 0.8 / 0.75, (x1,y1) 0.8 / 0.6 (LASER: 1.714, -1.2, 1.067, 1.778)
    np.testing.assert_allclose(got, [[1.2, 0.0], [0.8 / 0.75, 0.8 / 0.6]], rtol=1e-6)


def test_density_leaves_out_unfilled_slots_and_clips_only_for_ratio():
    sims = np.array([[0.5, -0.1, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    np.testing.assert_allclose(neighbourhood_density(sims, "ratio"), [0.25, 0.0])
    np.testing.assert_allclose(neighbourhood_density(sims, "distance"), [0.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(neighbourhood_density(sims, "absolute"), [0.2, 0.0], rtol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 4, 10])
def test_every_score_is_finite_and_within_the_margins_range(k):
    """Random cosines of every sign, zeros, duplicates (ties) and near-zero values: finite, inside margin_range."""
    rng = np.random.default_rng(k)
    n = 300
    pool = np.concatenate([rng.uniform(-1, 1, 200), np.zeros(50), rng.uniform(-1e-6, 1e-6, 50)]).astype(np.float32)
    fwd_s = -np.sort(-rng.choice(pool, (n, k)), axis=1)  # (n, k) best first
    bwd_s = -np.sort(-rng.choice(pool, (n, k)), axis=1)
    # the candidate (x, y) is x's j-th neighbour; y's own list holds x (its cosine) as one of its k
    j = rng.integers(0, k, n)
    cos = fwd_s[np.arange(n), j]
    bwd_s[:, -1] = np.minimum(bwd_s[:, -1], cos)
    bwd_s[np.arange(n), rng.integers(0, k, n)] = cos
    for margin in ("ratio", "distance", "absolute"):
        low, high = margin_range(margin, k)
        got = margin_score(cos, neighbourhood_density(fwd_s, margin), neighbourhood_density(bwd_s, margin), margin)
        assert np.isfinite(got).all()
        assert got.min() >= low and got.max() <= high * (1 + 1e-6)


def test_ratio_margin_with_one_neighbour_scores_every_mutual_pair_one():
    # k = 1: x's density is its candidate's cosine, and y's too when x is y's best, so c / c = 1 for any c > 0;
    # why mining.k = 1 is refused with the ratio and distance margins (test_bitext_mine_config)
    for c in (0.9, 0.3, 1e-3):
        d = neighbourhood_density(np.array([[c]], np.float32), "ratio")
        assert margin_score(np.float32(c), d, d, "ratio") == pytest.approx(1.0)
        assert margin_score(np.float32(c), d, d, "distance") == pytest.approx(0.0, abs=1e-7)


def test_k1_ratio_margin_is_one_for_a_mutual_best_pair_and_less_for_any_other():
    # k = 1 (mutual-nearest-neighbour mining, accepted by the config): x0 and y0 are each other's best (0.9);
    # x1's best is y0 (0.8), whose own best is x0 (0.9): 0.8 / ((0.8 + 0.9) / 2) = 0.941
    x_to_y = KnnResult(np.array([[0.9], [0.8]], np.float32), np.array([[0], [0]]))
    y_to_x = KnnResult(np.array([[0.9], [0.5]], np.float32), np.array([[0], [1]]))
    x_density, y_density = neighbourhood_density(x_to_y.scores, "ratio"), neighbourhood_density(y_to_x.scores, "ratio")
    scores = score_candidates(x_to_y, x_density, y_density, "ratio")
    assert scores[0, 0] == pytest.approx(1.0)
    assert scores[1, 0] == pytest.approx(0.8 / 0.85, rel=1e-6) and scores[1, 0] < 1.0
