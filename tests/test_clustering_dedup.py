from __future__ import annotations

import numpy as np
import pytest

from pipeline.clustering import dedup
from pipeline.clustering.ordering import natural_order, stable_uniform


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_pairs(x: np.ndarray, eps: float) -> set[tuple[int, int]]:
    sims = x @ x.T
    return {(i, j) for i in range(len(x)) for j in range(i + 1, len(x)) if sims[i, j] >= 1 - eps}


@pytest.mark.parametrize("block_rows", [1, 7, 64, 10_000])
def test_blocked_pairs_match_brute_force(block_rows):
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=(40, 8)))
    x = unit(np.concatenate([base, base[:25] + 0.05 * rng.normal(size=(25, 8))]))
    i, j, c = dedup.duplicate_pairs(x, eps=0.02, block_rows=block_rows)
    got = set(zip(i.tolist(), j.tolist()))
    assert got == brute_pairs(x, 0.02)
    assert len(got) >= 10
    np.testing.assert_allclose(c, np.einsum("nd,nd->n", x[i], x[j]), atol=1e-6)


def test_groups_are_transitive():
    label = dedup.groups(6, np.array([0, 3, 4]), np.array([1, 4, 5]))
    np.testing.assert_array_equal(label, [0, 0, 2, 3, 3, 3])


def test_keep_first_uses_natural_id_order_and_chains():
    a = unit(np.array([[1, 0, 0]], dtype=np.float32))
    x = unit(np.concatenate([a, a + [[0, 0.01, 0]], a + [[0, 0.02, 0]], [[0, 1, 0]]]).astype(np.float32))
    ids = ["doc#10", "doc#2", "doc#3", "doc#1"]
    res = dedup.dedup_rows(x, ids, eps=1e-3)
    np.testing.assert_array_equal(res.kept, [1, 1, 1, 3])  # doc#2 is first of {doc#10, doc#2, doc#3}
    assert res.n_duplicates == 2
    assert res.cosine[1] == 1.0 and res.cosine[3] == 1.0
    assert 0.999 < res.cosine[0] < 1.0


def test_keep_longest_and_random_are_seeded():
    x = unit(np.array([[1, 0], [1, 0.001], [1, 0.002]], dtype=np.float32))
    ids = ["a", "b", "c"]
    res = dedup.dedup_rows(x, ids, eps=1e-3, keep="longest", lengths=np.array([5, 30, 30]))
    np.testing.assert_array_equal(res.kept, [1, 1, 1])  # tie on length -> first id
    u = stable_uniform(ids, 3)
    res = dedup.dedup_rows(x, ids, eps=1e-3, keep="random", seed=3)
    np.testing.assert_array_equal(res.kept, [int(np.argmin(u))] * 3)
    with pytest.raises(ValueError, match="set input.text_column"):
        dedup.dedup_rows(x, ids, eps=1e-3, keep="longest")
    with pytest.raises(ValueError, match="unknown dedup keep policy"):
        dedup.dedup_rows(x, ids, eps=1e-3, keep="shortest")


def test_result_does_not_depend_on_row_order():
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=(30, 6)))
    x = unit(np.concatenate([base, base + 0.01 * rng.normal(size=(30, 6))]))
    ids = [f"r{i}" for i in range(60)]
    perm = rng.permutation(60)
    a = dedup.dedup_rows(x, ids, eps=0.01, keep="random", seed=5)
    b = dedup.dedup_rows(x[perm], [ids[p] for p in perm], eps=0.01, keep="random", seed=5)
    kept_a = {ids[i]: ids[k] for i, k in enumerate(a.kept)}
    kept_b = {ids[perm[i]]: ids[perm[k]] for i, k in enumerate(b.kept)}
    assert kept_a == kept_b
    assert a.n_duplicates == 30


def test_large_cluster_is_split_and_still_finds_close_duplicates():
    rng = np.random.default_rng(2)
    base = unit(rng.normal(size=(300, 16)))
    x = unit(np.concatenate([base, base + 0.002 * rng.normal(size=(300, 16))]))
    pieces = dedup.split_rows(x, max_rows=100, seed=0)
    assert all(len(p) <= 100 for p in pieces)
    np.testing.assert_array_equal(np.sort(np.concatenate(pieces)), np.arange(600))
    ids = [f"r{i}" for i in range(600)]
    whole = dedup.dedup_cluster(x, ids, eps=1e-3, max_rows=10_000)
    split = dedup.dedup_cluster(x, ids, eps=1e-3, max_rows=100)
    assert whole.n_duplicates == 300
    assert split.n_duplicates >= 290  # a pair cut apart by the split is the only loss


def test_identical_rows_fall_back_to_chunks():
    x = np.tile(unit(np.array([[1.0, 2.0]])), (25, 1))
    pieces = dedup.split_rows(x, max_rows=10, seed=0)
    assert [len(p) for p in pieces] == [10, 10, 5]


def test_stable_uniform_and_natural_order():
    u = stable_uniform(["a", "b"], 1)
    np.testing.assert_array_equal(u, stable_uniform(["a", "b"], 1))
    assert not np.array_equal(u, stable_uniform(["a", "b"], 2))
    assert ((0 <= u) & (u < 1)).all()
    np.testing.assert_array_equal(natural_order(["x#10", "x#9", "w"]), [2, 1, 0])


@pytest.mark.parametrize("eps", [0.0, 1e-8, 1e-7, 1e-6])
def test_an_eps_below_float32_cosine_rounding_still_finds_every_exact_copy(eps):
    """The float32 cosine of identical unit vectors reads 1 +- 5e-7: eps 1e-8 (1 - eps rounds to 1.0) missed ~40 % of
    exact copies at dim 384, 1e-7 ~18 %. Below dedup.EPS_FLOOR eps counts as the floor. eps 0 ("exact copies only",
    as a user writes it) was refused by the config ('Input should be greater than 0') while 1e-8 was taken."""
    from pipeline.cluster_config import ClusterConfig
    from pipeline.config import parse_config

    raw = {"input": {"uri": "e"}, "output": {"uri": "o"}, "clustering": {"k": 2, "dedup": {"eps": eps}}}
    assert parse_config(ClusterConfig, raw).clustering.dedup.eps == eps
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    copies = np.concatenate([x, x])  # row i + 200 is an exact copy of row i
    i, j, _ = dedup.duplicate_pairs(copies, eps, block_rows=64)
    assert sorted(zip(i.tolist(), j.tolist())) == [(r, r + 200) for r in range(200)]


def test_a_cluster_of_copies_is_deduplicated_without_holding_every_pair():
    """A cluster of N copies of one vector (boilerplate lines) has N(N-1)/2 duplicate pairs: dedup kept them all
    and joined them in a Python loop (2,000 copies: 175 MB and 21 s under load; at the 50,000 rows of a piece,
    1.25e9 pairs). Each tile's pairs are now joined into the union-find forest and dropped: the memory is one tile's,
    and the groups are those of every pair, also for copies of several vectors and near copies chained by eps."""
    import tracemalloc

    rng = np.random.default_rng(9)
    x = unit(rng.standard_normal((2300, 16)))
    x[:2000] = x[0]  # 2,000 copies of one vector
    x[2100:2200] = x[2299]  # 100 of another
    tracemalloc.start()
    result = dedup.dedup_rows(x, [f"d{i:05d}" for i in range(len(x))], eps=1e-5, block_rows=256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12 << 20, f"{peak / 2**20:.1f} MB held at once"  # the old code held 175 MB
    assert (result.kept[:2000] == 0).all() and (result.kept[2100:2200] == 2100).all() and result.kept[2299] == 2100
    i, j, _ = dedup.duplicate_pairs(x[1900:], 1e-5, block_rows=64)  # the pairs' groups, on a part that has few
    assert result.n_duplicates == 1999 + 100
    np.testing.assert_array_equal(dedup.duplicate_groups(x[1900:], 1e-5, 64), dedup.groups(400, i, j))


def test_groups_join_chains_and_stars_to_their_smallest_member():
    rng = np.random.default_rng(10)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        i, j = rng.integers(0, n, size=(2, int(rng.integers(0, 3 * n))))
        parent = list(range(n))  # plain union-find as the reference

        def find(a, parent=parent):
            while parent[a] != a:
                a = parent[a]
            return a

        for a, b in zip(i.tolist(), j.tolist()):
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
        expected = [find(a) for a in range(n)]
        assert dedup.groups(n, i, j).tolist() == expected


def test_copies_cut_apart_by_the_split_of_a_large_cluster_join_one_group():
    """A cluster of copies above max_cluster_rows is cut into consecutive chunks (k-means cannot separate them) and
    each chunk kept its own row: 25 copies with max_rows 10 kept 3, not 1. The rows the pieces kept are now compared
    once more, so all copies join one group kept by the policy (here the smallest id), with their cosine to it."""
    x = np.tile(unit(np.array([[1.0, 2.0, 0.5]])), (25, 1))
    x = np.concatenate([x, unit(np.array([[0.0, -1.0, 3.0]]))])
    ids = [f"r{i:02d}" for i in range(26)]
    result = dedup.dedup_cluster(x, ids, eps=1e-5, max_rows=10)
    assert result.kept.tolist() == [0] * 25 + [25]
    assert result.n_duplicates == 24 and (result.cosine >= 1 - 1e-5).all()
    longest = dedup.dedup_cluster(x, ids, eps=1e-5, keep="longest", lengths=np.arange(26) % 13, max_rows=10)
    assert longest.kept[:25].tolist() == [12] * 25  # row 12 has the longest text of the copies


def test_copies_cut_apart_join_one_group_when_the_pieces_kept_more_than_max_rows():
    """The second pass ran only when the rows the pieces kept were at most max_rows: 30 copies of one vector among 25
    other rows, max_rows 10, cut the copies into 3 chunks and kept 3 of them (the pieces kept 28 rows > 10). Exact
    copies now always join one group (a digest per row), and the rows not compared a second time are counted."""
    rng = np.random.default_rng(0)
    copy = unit(rng.normal(size=(1, 8)))
    x = np.concatenate([np.tile(copy, (30, 1)), unit(rng.normal(size=(25, 8)))]).astype(np.float32)
    ids = [f"r{i:02d}" for i in range(len(x))]
    result = dedup.dedup_cluster(x, ids, eps=1e-3, max_rows=10)
    assert set(result.kept[:30].tolist()) == {0} and (result.cosine[:30] >= 1 - 1e-5).all()
    assert result.uncompared == 28  # 1 copy + 25 others + the 2 other chunks' copies, compared no second time
    small = dedup.dedup_cluster(x[:40], ids[:40], eps=1e-3, max_rows=30)  # few enough: compared, none left
    assert set(small.kept[:30].tolist()) == {0} and small.uncompared == 0


def test_dedup_switches_off_as_other_tools_configs_write_it_and_an_eps_of_1_says_what_eps_is(tmp_path):
    """`dedup: {enabled: false, ...}`, `dedup: false` and `--set clustering.dedup.enabled=false` (other tools'
    switch) were refused as unknown keys or types; they leave dedup off, and `enabled: true` keeps the section as it
    was (same fingerprint dump). eps 1.5 was refused as 'Input should be less than 1', without saying that eps is a
    distance (a user giving a cosine similarity threshold, 0.95, is told to write 0.05)."""
    from pipeline.cluster_config import ClusterConfig
    from pipeline.config import ConfigError, load_config

    base = "input: {uri: e}\noutput: {uri: o}\nclustering:\n  k: 2\n"
    cases = {
        "  dedup: {eps: 0.05, enabled: false}\n": None,
        "  dedup: {eps: 0.05, enabled: no}\n": None,
        "  dedup: false\n": None,
        "  dedup: {eps: 0.05, enabled: true}\n": {"eps": 0.05, "keep": "first"},
        "  dedup: {eps: 0.05}\n": {"eps": 0.05, "keep": "first"},
    }
    path = tmp_path / "c.yaml"
    for text, want in cases.items():
        path.write_text(base + text)
        dedup_cfg = load_config(ClusterConfig, path).clustering.dedup
        got = None if dedup_cfg is None else {k: v for k, v in dedup_cfg.model_dump().items() if k in ("eps", "keep")}
        assert got == want, text
    path.write_text(base + "  dedup: {eps: 0.05}\n")
    assert load_config(ClusterConfig, path, ["clustering.dedup.enabled=false"]).clustering.dedup is None
    assert "enabled" not in load_config(ClusterConfig, path).clustering.model_dump()["dedup"]
    path.write_text(base + "  dedup: {eps: 0.05, enabled: maybe}\n")
    with pytest.raises(ConfigError, match="clustering.dedup.enabled is true or false, not 'maybe'"):
        load_config(ClusterConfig, path)
    path.write_text(base + "  dedup: true\n")
    with pytest.raises(
        ConfigError, match=r"clustering.dedup: true turns dedup on without its eps.*dedup: \{eps: 0.05\}"
    ):
        load_config(ClusterConfig, path)
    for eps in ("1", "1.5", "0.95e1"):
        path.write_text(base + f"  dedup: {{eps: {eps}}}\n")
        with pytest.raises(ConfigError, match=r"eps [0-9.]+ is 1 or more: eps is a cosine distance.*write eps: 1 - s"):
            load_config(ClusterConfig, path)


def test_an_eps_that_reads_as_a_similarity_is_said(tmp_path, caplog):
    """eps 0.95 (a cosine similarity threshold written where the distance is meant) was taken without a word: it
    joins rows at cosine 0.05 or more, nearly every row of a cluster. A warning says so and what to write."""
    import logging

    from pipeline.cluster_config import ClusterConfig
    from pipeline.config import parse_config

    raw = {"input": {"uri": "e"}, "output": {"uri": "o"}, "clustering": {"k": 2, "dedup": {"eps": 0.95}}}
    with caplog.at_level(logging.WARNING, logger="pipeline.cluster_config"):
        assert parse_config(ClusterConfig, raw).clustering.dedup.eps == 0.95
    assert "only 0.05 or more: eps is a cosine distance" in caplog.text and "write eps: 1 - s" in caplog.text
    caplog.clear()
    raw["clustering"]["dedup"]["eps"] = 0.05
    with caplog.at_level(logging.WARNING, logger="pipeline.cluster_config"):
        parse_config(ClusterConfig, raw)
    assert not caplog.text
