from __future__ import annotations

import numpy as np
import pytest
import torch
from bitext_reference import brute_knn, random_unit

from pipeline.bitext.knn import KnnResult, ShardSearcher, faiss_scan, knn_search, merge_topk, shard_bounds, torch_tiles


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return random_unit(rng, 157, 24), random_unit(rng, 211, 24)


@pytest.mark.parametrize("block_size", [1, 7, 64, 1000])
@pytest.mark.parametrize("num_shards", [1, 3, 8])
def test_blocked_sharded_knn_equals_brute_force(vectors, block_size, num_shards):
    x, y = vectors
    ref_s, ref_i = brute_knn(x, y, 5)
    got = knn_search(x, y, k=5, block_size=block_size, num_shards=num_shards)
    np.testing.assert_array_equal(got.indices, ref_i)
    np.testing.assert_allclose(got.scores, ref_s, atol=1e-5)


def test_results_identical_across_block_sizes_and_shards(vectors):
    x, y = vectors
    base = knn_search(x, y, k=4, block_size=4096, num_shards=1)
    for block_size, shards in [(5, 2), (33, 7), (211, 1), (2, 211)]:
        other = knn_search(x, y, k=4, block_size=block_size, num_shards=shards)
        np.testing.assert_array_equal(other.indices, base.indices)
        np.testing.assert_array_equal(other.scores, base.scores)  # bit-identical: one dot product per pair


def test_shard_searcher_tiles_keys_and_returns_global_indices(vectors):
    x, y = vectors
    shard = ShardSearcher(y[50:120], offset=50, key_block=9)  # 8 tiles, last one partial
    s, i = shard.search(x[:10], 3)
    ref_s, ref_i = brute_knn(x[:10], y[50:120], 3)
    np.testing.assert_array_equal(i, ref_i + 50)
    np.testing.assert_allclose(s, ref_s, atol=1e-5)


def test_k_is_clipped_to_the_smaller_side():
    rng = np.random.default_rng(1)
    got = knn_search(random_unit(rng, 6, 8), random_unit(rng, 3, 8), k=4, block_size=2, num_shards=2)
    assert got.k == 3
    assert sorted(got.indices[0].tolist()) == [0, 1, 2]


def test_merge_topk_orders_by_score_then_index():
    parts = [
        (np.array([[0.9, 0.5]], dtype=np.float32), np.array([[7, 8]])),
        (np.array([[0.9, 0.7]], dtype=np.float32), np.array([[2, 3]])),
    ]
    s, i = merge_topk(parts, 3)
    assert i.tolist() == [[2, 7, 3]]
    np.testing.assert_allclose(s, [[0.9, 0.9, 0.7]])


def test_mean_scores_is_the_row_mean():
    r = KnnResult(np.array([[1.0, 0.5], [0.2, 0.0]], dtype=np.float32), np.zeros((2, 2), dtype=np.int64))
    np.testing.assert_allclose(r.mean_scores(), [0.75, 0.1])


def test_shard_bounds_cover_rows_without_gaps():
    assert shard_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert shard_bounds(2, 5) == [(0, 1), (1, 2)]  # never an empty shard
    with pytest.raises(ValueError, match="num_shards"):
        shard_bounds(10, 0)


def test_bad_input_is_rejected_with_the_side_named():
    rng = np.random.default_rng(2)
    x = random_unit(rng, 4, 8)
    with pytest.raises(ValueError, match="keys: no rows"):
        knn_search(x, np.zeros((0, 8), dtype=np.float32), k=2)
    with pytest.raises(ValueError, match="queries: no rows"):
        knn_search(np.zeros((0, 8), dtype=np.float32), x, k=2)
    with pytest.raises(ValueError, match="dim 6 differs from the other side's 8"):
        knn_search(x, random_unit(rng, 4, 6), k=2)
    with pytest.raises(ValueError, match="NaN"):
        knn_search(x, np.full((3, 8), np.nan, dtype=np.float32), k=2)
    with pytest.raises(ValueError, match="must be positive"):
        knn_search(x, x, k=0)


def test_faiss_scan_equals_the_torch_tiles_it_replaced_and_brute_force():
    rng = np.random.default_rng(5)
    keys, queries = random_unit(rng, 300, 32), random_unit(rng, 99, 32)
    ref_s, ref_i = brute_knn(queries, keys, 5)
    got_s, got_i = faiss_scan(queries, keys, 5)
    tile_s, tile_i = torch_tiles(queries, torch.from_numpy(keys.copy()), 5, key_block=64)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(tile_i, got_i)
    np.testing.assert_allclose(got_s, ref_s, atol=1e-6)
    np.testing.assert_allclose(tile_s, got_s, atol=1e-6)


def test_faiss_scan_breaks_ties_by_lower_key_row():
    """Duplicate keys put ties at the k-th place: the lower key rows must win, as merge_topk orders them (FAISS's
    heap alone keeps an arbitrary member of the tie)."""
    rng = np.random.default_rng(3)
    keys = random_unit(rng, 300, 32)
    keys[200:230] = keys[10]  # 31 identical keys: k=5 cuts through the tie
    queries = np.concatenate([keys[[10, 50]], random_unit(rng, 97, 32)])
    ref_s, ref_i = brute_knn(queries, keys, 5)
    got_s, got_i = faiss_scan(queries, keys, 5)
    assert got_i[0].tolist() == [10, 200, 201, 202, 203]
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_allclose(got_s, ref_s, atol=1e-6)


def test_faiss_scan_chunks_queries_without_changing_a_score(monkeypatch):
    rng = np.random.default_rng(4)
    keys, queries = random_unit(rng, 120, 16), random_unit(rng, 50, 16)
    whole = faiss_scan(queries, keys, 3)
    monkeypatch.setattr("pipeline.bitext.knn.SCAN_QUERIES", 7)  # 8 calls, the last one partial
    chunked = faiss_scan(queries, keys, 3)
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])


def test_ties_through_many_duplicate_keys_are_resolved_within_a_memory_bound(monkeypatch):
    """Queries whose k-th place ties with thousands of identical keys (texts that embed alike: truncated at the same
    prefix, differing only where the tokenizer does not look) were all widened at once: (queries x width) results,
    4,096 queries against a 200k-key shard with 100k copies took 24 GB and the OOM killer. Now as many tied
    queries at a time as fit TIE_BYTES (here 2 MB), the same neighbours: the lowest rows of the tie."""
    import tracemalloc

    rng = np.random.default_rng(5)
    keys = random_unit(rng, 12000, 16)
    keys[2000:8000] = keys[7]  # 6,001 copies of one vector (row 7 and rows 2000..7999)
    queries = np.concatenate([np.repeat(keys[7:8], 300, axis=0), random_unit(rng, 20, 16)])
    monkeypatch.setattr("pipeline.bitext.knn.TIE_BYTES", 2 << 20, raising=False)
    tracemalloc.start()
    _, got_i = faiss_scan(queries, keys, 4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got_i[:300].tolist() == [[7, 2000, 2001, 2002]] * 300
    _, ref_i = brute_knn(queries[300:], keys, 4)
    np.testing.assert_array_equal(got_i[300:], ref_i)
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MB held at once"  # the old code held 104 MB


def test_ties_through_copies_cost_one_scan_of_the_distinct_keys_not_a_widening(monkeypatch):
    """Queries whose k-th place ties through thousands of copies of one vector (boilerplate lines) were each searched
    again at widths doubling up to the whole tie (4,096 queries against 200k keys holding 100k copies: 265 s on one
    core). Now the tied queries search the distinct rows once, asking FAISS for no more than k + 1 neighbours, and
    each distinct row gives its lowest copies: the same neighbours as brute force, also for copies of several
    vectors and equal scores of different ones, with the distinct rows copied out a few at a time."""
    from pipeline.bitext import knn

    calls = []
    real = knn.faiss_chunks

    def counted(queries, keys, k):
        calls.append((queries.shape[0], keys.shape[0], k))
        return real(queries, keys, k)

    monkeypatch.setattr(knn, "faiss_chunks", counted)
    monkeypatch.setattr(knn, "TIE_BYTES", 16 * 1024)  # distinct rows copied 256 at a time, tied queries in parts
    rng = np.random.default_rng(6)
    keys = random_unit(rng, 3000, 16)
    keys[1000:2500] = keys[7]  # 1,501 copies of row 7
    keys[2500:2600] = keys[2900]  # 101 copies of row 2900
    keys[3000 - 50 :] = -keys[1]  # 50 copies of the opposite of row 1
    queries = np.concatenate([keys[[7] * 40 + [2900] * 10 + [1, 2]], random_unit(rng, 8, 16)])
    got_s, got_i = faiss_scan(queries, keys, 4)
    assert got_i[0].tolist() == [7, 1000, 1001, 1002]
    assert got_i[40].tolist() == [2500, 2501, 2502, 2503]
    ref_s, ref_i = brute_knn(queries, keys, 4)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_allclose(got_s, ref_s, atol=1e-5)
    assert max(width for _, _, width in calls) <= 5, calls  # the old code widened up to the whole shard
    scanned = sum(q * m for q, m, _ in calls)
    assert scanned <= 2 * len(queries) * len(keys), scanned  # one scan, then one of the distinct rows


@pytest.mark.parametrize("key_block", [64, 512, 4096])
def test_the_gpu_tiles_give_ties_to_the_lower_key_rows_as_the_cpu_scan(key_block):
    """The GPU path's torch.topk keeps an arbitrary member of a tie: against 1,501 copies of one vector it returned
    rows [2049, 2048, 2050, 2051] with key_block 512 (another set for another block size), where the CPU scan and
    merge_topk give the lowest rows [7, 1000, 1001, 1002]: the pairs of a GPU run named other rows of the copies
    than a CPU run's, and changed with mining.block_size. Runs here on CPU tensors: the same torch code."""
    rng = np.random.default_rng(12)
    keys = random_unit(rng, 3000, 16)
    keys[1000:2500] = keys[7]
    keys[2600:2603] = keys[2999]  # a tie inside the top-k, not at its edge
    queries = np.concatenate([keys[[7, 7, 2999]], random_unit(rng, 5, 16)])
    _, got_i = torch_tiles(queries, torch.from_numpy(keys), 4, key_block)
    _, ref_i = brute_knn(queries, keys, 4)
    assert got_i[0].tolist() == [7, 1000, 1001, 1002]
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_i, faiss_scan(queries, keys, 4)[1])
