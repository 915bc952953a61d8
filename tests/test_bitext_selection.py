from __future__ import annotations

import numpy as np
import pytest
from bitext_reference import brute_mine, random_unit

from pipeline.bitext.dedup import first_occurrences
from pipeline.bitext.knn import KnnResult, knn_search
from pipeline.bitext.selection import greedy_one_to_one, select_pairs


def mine_local(x, y, k, margin, retrieval, block_size=64, num_shards=1):
    fwd = knn_search(x, y, k, block_size=block_size, num_shards=num_shards)
    bwd = knn_search(y, x, k, block_size=block_size, num_shards=num_shards)
    return select_pairs(fwd, bwd, margin, retrieval)


def correlated_sides(seed: int, n: int, m: int, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Targets are noisy copies of the first sources plus distractors, so every retrieval mode finds real structure."""
    rng = np.random.default_rng(seed)
    x = random_unit(rng, n, dim)
    noisy = x[: m // 2] + 0.6 * rng.standard_normal((m // 2, dim)).astype(np.float32)
    y = np.concatenate([noisy, random_unit(rng, m - m // 2, dim)])
    y = (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)
    return x, y[rng.permutation(m)]


@pytest.mark.parametrize("margin", ["ratio", "distance", "absolute"])
@pytest.mark.parametrize("retrieval", ["fwd", "bwd", "max", "intersect"])
def test_selection_equals_brute_force(margin, retrieval):
    x, y = correlated_sides(3, 60, 75)
    got = mine_local(x, y, 4, margin, retrieval, block_size=16, num_shards=3)
    ref = brute_mine(x, y, 4, margin, retrieval)
    assert list(zip(got.src.tolist(), got.tgt.tolist())) == [(i, j) for i, j, _ in ref]
    np.testing.assert_allclose(got.score, [s for _, _, s in ref], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.cosine, [float(x[i] @ y[j]) for i, j, _ in ref], atol=1e-5)


@pytest.mark.parametrize("n,m,k", [(3, 7, 10), (7, 3, 5), (2, 9, 4), (1, 5, 4)])
@pytest.mark.parametrize("margin", ["ratio", "distance"])
@pytest.mark.parametrize("retrieval", ["fwd", "bwd", "max", "intersect"])
def test_sides_smaller_than_k_clip_each_direction_to_its_own_keys_as_laser(n, m, k, margin, retrieval):
    """LASER's mine_bitexts.py searches min(k, len(keys)) neighbours per direction. The reference used to clip both
    directions to the smaller side, so it could not check this case (the job already searched as LASER)."""
    rng = np.random.default_rng(6)
    # a shared offset keeps the densities well above 0, where a ratio of float32 cosines is well conditioned
    x, y = (v + 0.5 for v in (random_unit(rng, n, 16), random_unit(rng, m, 16)))
    x, y = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (x, y))
    got = mine_local(x, y, k, margin, retrieval, block_size=2, num_shards=2)
    ref = brute_mine(x, y, k, margin, retrieval)
    assert list(zip(got.src.tolist(), got.tgt.tolist())) == [(i, j) for i, j, _ in ref]
    np.testing.assert_allclose(got.score, [s for _, _, s in ref], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block_size,num_shards", [(1, 1), (9, 2), (50, 5), (4096, 1)])
def test_mined_pairs_identical_for_block_sizes_and_shards(block_size, num_shards):
    x, y = correlated_sides(4, 80, 70)
    base = mine_local(x, y, 4, "ratio", "max", block_size=4096, num_shards=1)
    got = mine_local(x, y, 4, "ratio", "max", block_size=block_size, num_shards=num_shards)
    np.testing.assert_array_equal(got.src, base.src)
    np.testing.assert_array_equal(got.tgt, base.tgt)
    np.testing.assert_allclose(got.score, base.score, rtol=1e-6)


def test_max_is_one_to_one_and_intersect_is_a_subset_of_it():
    x, y = correlated_sides(5, 90, 90)
    best = mine_local(x, y, 4, "ratio", "max")
    assert len(set(best.src.tolist())) == len(best) and len(set(best.tgt.tolist())) == len(best)
    assert np.all(np.diff(best.score) <= 0)  # best first
    mutual = mine_local(x, y, 4, "ratio", "intersect")
    assert set(zip(mutual.src.tolist(), mutual.tgt.tolist())) <= set(zip(best.src.tolist(), best.tgt.tolist()))


def test_greedy_skips_used_sentences_in_score_order():
    # proposals already sorted by score: (0,0) wins; (0,1) and (1,0) reuse a sentence; (1,1) is free
    keep = greedy_one_to_one(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), 2, 2)
    assert keep.tolist() == [0, 3]


def test_threshold_keeps_pairs_at_or_above_it():
    x, y = correlated_sides(6, 40, 40)
    pairs = mine_local(x, y, 4, "ratio", "max")
    cut = float(np.median(pairs.score))
    kept = pairs.above(cut)
    assert len(kept) == int((pairs.score >= cut).sum()) and kept.score.min() >= cut
    assert pairs.above(None) is pairs


def test_hand_built_neighbours_with_hub():
    # Source 0 has cos 0.9 with target 0 (a hub close to every source) and 0.85 with target 1; ratio margin
    # must pick target 1 because target 0's neighbourhood is dense.
    fwd = KnnResult(np.array([[0.9, 0.85], [0.88, 0.1]], dtype=np.float32), np.array([[0, 1], [0, 1]]))
    bwd = KnnResult(np.array([[0.9, 0.88], [0.85, 0.1]], dtype=np.float32), np.array([[0, 1], [0, 1]]))
    fwd_only = select_pairs(fwd, bwd, "ratio", "fwd")
    assert dict(zip(fwd_only.src.tolist(), fwd_only.tgt.tolist()))[0] == 1
    assert select_pairs(fwd, bwd, "absolute", "fwd").tgt.tolist()[:2] == [0, 0]


def test_unknown_retrieval_is_an_error():
    x, y = correlated_sides(7, 10, 10)
    with pytest.raises(ValueError, match="fwd, bwd, max, intersect"):
        mine_local(x, y, 2, "ratio", "both")


def test_dedup_keeps_first_occurrence_in_order():
    assert first_occurrences(["a", "b", "a", "c", "b", "a "]).tolist() == [0, 1, 3, 5]
    assert first_occurrences([]).tolist() == []
