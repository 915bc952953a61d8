from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.clustering import kmeans


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(n: int, k: int, d: int, seed: int, spread: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(k, d)))
    labels = rng.integers(k, size=n)
    return unit(centres[labels] + spread * rng.normal(size=(n, d))), labels


def reference_kmeans(x: np.ndarray, c: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Textbook single-process spherical k-means on the whole matrix, no blocks, no empty clusters expected."""
    c = c.astype(np.float64)
    for _ in range(max_iter):
        labels = np.argmax(x @ c.T, axis=1)
        new = np.stack([x[labels == j].sum(axis=0) for j in range(len(c))])
        new /= np.linalg.norm(new, axis=1, keepdims=True)
        shift = np.max(1 - np.sum(new * c, axis=1))
        c = new
        if shift <= tol:
            break
    return c, np.argmax(x @ c.T, axis=1)


def test_partial_sums_hand_computed():
    x = np.array([[1, 0], [0.6, 0.8], [0, 1], [-1, 0]], dtype=np.float32)
    c = np.array([[1, 0], [0, 1]], dtype=np.float32)
    p = kmeans.partial_sums(x, c)
    # [1, 0] -> 0 (cos 1); [.6, .8] -> 1 (cos .8 beats .6); [0, 1] -> 1 (cos 1); [-1, 0] -> 1 (cos 0 beats -1)
    np.testing.assert_array_equal(p.counts, [1, 3])
    np.testing.assert_allclose(p.sums, [[1, 0], [-0.4, 1.8]], atol=1e-6)
    assert p.cos_sum == pytest.approx(1 + 0.8 + 1 + 0)
    assert p.objective == pytest.approx(2.8 / 4)
    assert p.far_cos[0] == pytest.approx(0.0)
    np.testing.assert_array_equal(p.far_vec[0], [-1, 0])


def test_merge_of_blocks_equals_whole():
    x, _ = blobs(1000, 5, 16, seed=1)
    c = x[:5]
    whole = kmeans.partial_sums(x, c)
    parts = kmeans.merge([kmeans.partial_sums(b, c) for b in np.array_split(x, 7)])
    np.testing.assert_allclose(parts.sums, whole.sums, rtol=1e-12)
    np.testing.assert_array_equal(parts.counts, whole.counts)
    assert parts.cos_sum == pytest.approx(whole.cos_sum, rel=1e-9)
    np.testing.assert_array_equal(parts.far_cos, whole.far_cos)


def test_blocked_fit_equals_single_process_reference():
    x, _ = blobs(3000, 8, 32, seed=2, spread=0.4)
    init = kmeans.init_centroids(x, 8, "random", seed=3)
    ref_c, ref_labels = reference_kmeans(x.astype(np.float64), init, max_iter=50, tol=1e-7)
    res = kmeans.fit_blocks(np.array_split(x, 5), 8, max_iter=50, tol=1e-7, seed=0, init=init)
    np.testing.assert_allclose(res.centroids, ref_c, atol=1e-5)
    labels, _ = kmeans.assign(x, res.centroids)
    np.testing.assert_array_equal(labels, ref_labels)
    assert res.converged


def test_objective_never_decreases_and_finds_blobs():
    x, truth = blobs(2000, 6, 24, seed=4)
    res = kmeans.fit_blocks(np.array_split(x, 4), 6, max_iter=100, tol=1e-8, seed=0)
    objs = [h.objective for h in res.history]
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(objs))
    labels, _ = kmeans.assign(x, res.centroids)
    # tight blobs: each found cluster is one true blob
    for j in range(6):
        assert len(set(truth[labels == j])) == 1


def test_deterministic_per_seed_and_seed_matters():
    x, _ = blobs(1500, 10, 16, seed=5, spread=0.8)
    a = kmeans.fit_blocks(np.array_split(x, 3), 10, 30, 1e-6, seed=7)
    b = kmeans.fit_blocks(np.array_split(x, 3), 10, 30, 1e-6, seed=7)
    c = kmeans.fit_blocks(np.array_split(x, 3), 10, 30, 1e-6, seed=8)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert [h.objective for h in a.history] == [h.objective for h in b.history]
    assert not np.array_equal(a.centroids, c.centroids)


def test_a_fit_continued_from_a_recorded_iteration_equals_the_uninterrupted_fit():
    """The state lloyd hands to on_iteration (centroids, history) is all a resumed fit needs."""
    x, _ = blobs(1500, 10, 16, seed=5, spread=0.8)
    blocks = np.array_split(x, 3)

    def step(c):
        return kmeans.merge([kmeans.partial_sums(b, c) for b in blocks])

    init = kmeans.init_centroids(x, 10, "kmeans++", seed=7)
    whole = kmeans.lloyd(step, init, 30, 1e-6)
    assert len(whole.history) > 4
    recorded = []

    def dies_after_iteration_3(centroids, history):
        recorded.append((centroids.copy(), list(history)))
        if len(history) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kmeans.lloyd(step, init, 30, 1e-6, on_iteration=dies_after_iteration_3)
    centroids, history = recorded[-1]
    continued = kmeans.lloyd(step, centroids, 30, 1e-6, history)
    np.testing.assert_array_equal(continued.centroids, whole.centroids)
    assert [(h.objective, h.shift, h.reseeded) for h in continued.history][1:] == [
        (h.objective, h.shift, h.reseeded) for h in whole.history
    ][1:]
    assert continued.converged == whole.converged and continued.objective == whole.objective
    np.testing.assert_array_equal(continued.sizes, whole.sizes)


def test_empty_cluster_reseeded_with_farthest_point():
    x = unit(np.array([[1, 0.01], [1, -0.01], [0.01, 1], [-0.01, 1], [-1, 0.2]], dtype=np.float32))
    # centroid 2 is nobody's nearest: it starts empty
    init = unit(np.array([[1, 0], [0, 1], [0.7, 0.71]], dtype=np.float32))
    total = kmeans.partial_sums(x, init)
    assert total.counts[2] == 0
    new, reseeded = kmeans.update(total, init)
    assert reseeded == 1
    np.testing.assert_array_equal(new[2], x[4])  # [-1, .2] is the point farthest from its centroid
    res = kmeans.fit_blocks([x], 3, max_iter=10, tol=1e-7, seed=0, init=init)
    assert res.history[1].reseeded == 1
    assert (res.sizes > 0).all()
    np.testing.assert_array_equal(np.sort(res.sizes), [1, 2, 2])


def test_every_cluster_empty_but_one_still_reseeds():
    x, _ = blobs(200, 4, 8, seed=6)
    init = np.repeat(x[:1], 4, axis=0)  # all centroids equal: ties send every row to cluster 0
    res = kmeans.fit_blocks([x], 4, max_iter=20, tol=1e-7, seed=0, init=init)
    assert res.history[1].reseeded == 3
    assert (res.sizes > 0).all()


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_k_greater_than_rows_is_an_error(init):
    x, _ = blobs(5, 2, 4, seed=0)
    with pytest.raises(ValueError, match="k=6 clusters but only 5 rows"):
        kmeans.fit_blocks([x], 6, 10, 1e-6, seed=0, init=init)


def test_kmeanspp_picks_distinct_far_apart_points():
    x, truth = blobs(600, 4, 16, seed=9, spread=0.05)
    c = kmeans.init_centroids(x, 4, "kmeans++", seed=0)
    labels, _ = kmeans.assign(c, unit(np.stack([x[truth == j].mean(0) for j in range(4)])))
    assert sorted(labels) == [0, 1, 2, 3]  # one seed in every blob


def test_unknown_init():
    with pytest.raises(ValueError, match="unknown init"):
        kmeans.init_centroids(np.eye(3, dtype=np.float32), 2, "forgy", 0)


def test_the_recorded_fit_history_is_strict_json_and_reads_back_the_same():
    import json
    import math

    from pipeline.clustering.resume import history_record, read_history

    history = [kmeans.Iteration(0.5, 10.0, 0, math.nan, 0.1), kmeans.Iteration(0.6, 8.0, 1, 0.02, 0.2)]
    text = json.dumps(history_record(history), allow_nan=False)  # jq and JavaScript read it
    back = read_history(json.loads(text))
    assert math.isnan(back[0].shift) and back[1] == history[1] and back[0].objective == 0.5


@pytest.mark.parametrize(("k", "rows", "match"), [(20, 7, "k=20 clusters but only 7 rows"), (0, 7, "at least 1")])
def test_a_k_that_cannot_be_fitted_is_a_user_error(k, rows, match):
    """The job prints a user error as one `error:` line; a plain ValueError (the old type) was a traceback."""
    from pipeline.errors import UserError

    with pytest.raises(UserError, match=match):
        kmeans.check_k(k, rows)


def test_fewer_distinct_vectors_than_k_is_a_warning_naming_the_key(caplog):
    """10 identical vectors and k=3: two clusters can never hold a row; the fit said nothing about it."""
    import logging

    x = unit(np.ones((10, 4), dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="pipeline.clustering.kmeans"):
        res = kmeans.fit_blocks([x], 3, max_iter=5, tol=1e-7, seed=0)
    assert sorted(res.sizes.tolist()) == [0, 0, 10]
    assert "2 of 3 clusters are empty after 1 iterations" in caplog.text
    assert "lower clustering.k" in caplog.text


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_fewer_distinct_vectors_than_k_stops_once_reseeding_changes_nothing(init):
    """3 distinct directions, 60 rows, k=5: the two clusters left empty are reseeded onto points that already sit on
    a centroid, so no centroid moves. The fit used to count those reseeds as progress and ran all max_iter passes
    over the sample (each a Ray Data pass in the job)."""
    x = np.repeat(np.eye(6, dtype=np.float32)[:3], 20, axis=0)
    res = kmeans.fit_blocks([x], 5, max_iter=30, tol=1e-6, seed=0, init=init)
    assert res.converged
    assert len(res.history) - 1 <= 3, [(h.reseeded, h.shift) for h in res.history]
    assert sorted(res.sizes.tolist()) == [0, 0, 20, 20, 20]
    np.testing.assert_allclose(np.sort(res.centroids @ x[[0, 20, 40]].T, axis=0)[-1], 1.0, atol=1e-6)


def test_tol_zero_stops_once_no_centroid_changes():
    """tol 0 (run to the fixed point): an unchanged float32 centroid's 1 - dot with itself read 6e-8, so the fit ran
    all max_iter passes over the sample and said converged false."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 384))
    x = centres[rng.integers(5, size=3000)] + 0.3 * rng.normal(size=(3000, 384))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    result = kmeans.fit_blocks([x[:1500], x[1500:]], k=5, max_iter=30, tol=0.0, seed=0)
    assert result.converged and len(result.history) - 1 < 30
    assert result.history[-1].shift == 0.0
    same = kmeans.fit_blocks([x[:1500], x[1500:]], k=5, max_iter=30, tol=1e-6, seed=0)
    np.testing.assert_array_equal(result.centroids, same.centroids)  # the same fixed point as the default tol


def test_centroid_shift_is_one_minus_cosine_and_zero_for_an_unchanged_centroid():
    old = np.array([[1, 0], [0.6, 0.8]], np.float32)
    assert kmeans.centroid_shift(old, old.copy()) == 0.0
    new = np.array([[0.8, 0.6], [0.6, 0.8]], np.float32)
    assert kmeans.centroid_shift(old, new) == pytest.approx(0.2, abs=1e-7)


def test_a_k_above_the_inputs_rows_says_to_lower_k_and_above_the_samples_says_which_key_helps():
    """k=20 on an input of 7 rows said 'lower clustering.k or raise clustering.sample_fraction', though a larger
    sample cannot help when every row is in it; a sample too small for k says both keys, with the rows behind it."""
    from pipeline.errors import UserError

    with pytest.raises(UserError) as whole:
        kmeans.check_k(20, 7)
    assert "set clustering.k to at most 7" in str(whole.value) and "sample_fraction" not in str(whole.value)
    with pytest.raises(UserError, match=r"holds 7 of the input's 140 rows; raise clustering.sample_fraction"):
        kmeans.check_k(20, 7, 140, 0.05)
    kmeans.check_k(7, 7, 140, 0.05)  # enough rows: no error


@pytest.mark.parametrize("dim", [32, 384])
def test_a_rows_cluster_and_cosine_do_not_depend_on_the_rows_around_it(dim):
    """Ray cuts the same rows into blocks differently from run to run. The cosine to the centroid was a float32
    GEMM's, rounded differently by the block's shape: cut after row 1 of 5,000, 158 cosines of the rest changed in
    the last bit (two uninterrupted runs of one seed wrote ~10 % of cosine_to_centroid differently), and a row at a
    near tie could change cluster. Now a row's label and cosine are the same in any block, at any memory offset;
    an exact tie (two equal centroids) goes to the lower cluster id."""
    rng = np.random.default_rng(dim)
    x = rng.normal(size=(3000, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = rng.normal(size=(40, dim)).astype(np.float32)
    c[7] = c[3]  # an exact tie: rows nearest to it go to 3
    c[9] = c[2] + 1e-6 * rng.normal(size=dim).astype(np.float32)  # near ties, within float32's rounding
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x[:50] = c[2] + 1e-3 * rng.normal(size=(50, dim)).astype(np.float32)  # rows between 2 and 9
    x[:50] /= np.linalg.norm(x[:50], axis=1, keepdims=True)
    labels, cos = kmeans.assign(x, c)
    assert 7 not in labels and 3 in labels
    for cut in (1, 7, 333, 1500, 2999):
        (la, ca), (lb, cb) = kmeans.assign(x[:cut], c), kmeans.assign(x[cut:], c)
        np.testing.assert_array_equal(np.concatenate([la, lb]), labels)
        np.testing.assert_array_equal(np.concatenate([ca, cb]), cos)
    for offset in (1, 3):  # the same rows at another alignment in memory
        buffer = np.empty(x.size + 8, np.float32)
        moved = buffer[offset : offset + x.size].reshape(x.shape)
        moved[:] = x
        moved_labels, moved_cos = kmeans.assign(moved, c)
        np.testing.assert_array_equal(moved_labels, labels)
        np.testing.assert_array_equal(moved_cos, cos)
    np.testing.assert_allclose(cos, np.einsum("id,id->i", x.astype(np.float64), c[labels]), atol=1e-6)
