"""clustering.center_by: per-group means subtracted (hand-computed), and the job clustering by topic, not group."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.centering import center_block, center_rows, group_means, group_sums
from pipeline.config import ConfigError, parse_config


def block(x: np.ndarray, groups: list) -> pa.Table:
    flat = pa.array(x.astype(np.float32).reshape(-1))
    return pa.table({"embedding": pa.FixedSizeListArray.from_arrays(flat, x.shape[1]), "lang": groups})


def test_means_and_centring_by_hand():
    x = np.array([[1, 0], [0, 1], [1, 0], [-1, 0]], np.float32)
    parts = [
        group_sums(block(x[:2], ["a", "b"]), "lang", "embedding", 2),
        group_sums(block(x[2:], ["a", "b"]), "lang", "embedding", 2),
    ]
    means = group_means(parts, 2)
    np.testing.assert_allclose(means["a"], [1, 0])  # two copies of (1, 0)
    np.testing.assert_allclose(means["b"], [-0.5, 0.5])  # (0, 1) and (-1, 0)
    out = center_rows(x, ["a", "b", "a", "b"], means)
    np.testing.assert_allclose(out[1], np.array([0.5, 0.5]) / np.sqrt(0.5), atol=1e-6)
    np.testing.assert_allclose(out[3], np.array([-0.5, -0.5]) / np.sqrt(0.5), atol=1e-6)
    np.testing.assert_allclose(out[[0, 2]], x[[0, 2]])  # equal to their mean: nothing left, original kept


def test_center_block_replaces_only_the_embedding_and_groups_nulls():
    x = np.array([[3, 4], [0, 2], [1, 1]], np.float32)
    b = block(x, ["a", None, "a"])
    means = group_means([group_sums(b, "lang", "embedding", 2)], 2)
    assert set(means) == {"a", None}
    out = center_block(b, "lang", "embedding", 2, means)
    assert out.column("lang").to_pylist() == ["a", None, "a"]
    v = out.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, 2)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="have no mean"):
        center_block(b, "lang", "embedding", 2, {"a": means["a"]})


def test_center_by_cannot_be_the_id():
    raw = {"input": {"uri": "/e"}, "output": {"uri": "/o"}, "clustering": {"k": 2, "center_by": "id"}}
    with pytest.raises(ConfigError, match="center_by must name a group column"):
        parse_config(ClusterConfig, raw)


@pytest.mark.slow
def test_job_clusters_by_topic_once_languages_are_centred(ray_session, tmp_path):
    """Two 'languages' with a strong per-language offset and three shared topics: k=3 finds topics only centred."""
    from sklearn.metrics import v_measure_score

    from pipeline.clustering.job import run_cluster

    rng = np.random.default_rng(0)
    dim, per = 16, 90
    topics = rng.normal(size=(3, dim))
    offsets = 3 * rng.normal(size=(2, dim))
    rows = []
    for lang in range(2):
        t = rng.integers(3, size=per)
        x = topics[t] + offsets[lang] + 0.3 * rng.normal(size=(per, dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        rows += [(f"{lang}-{i}", x[i], int(t[i]), f"l{lang}") for i in range(per)]
    (tmp_path / "emb").mkdir()
    table = block(np.stack([r[1] for r in rows]), [r[3] for r in rows])
    table = table.append_column("id", pa.array([r[0] for r in rows])).append_column(
        "topic", pa.array([r[2] for r in rows])
    )
    pq.write_table(table, tmp_path / "emb" / "part-0.parquet")
    scores = {}
    for center in (None, "lang"):
        raw = {
            "input": {"uri": str(tmp_path / "emb")},
            "output": {"uri": str(tmp_path / f"out-{center}"), "keep_columns": ["topic"]},
            "clustering": {"k": 3, "seed": 0, "center_by": center},
        }
        summary = run_cluster(parse_config(ClusterConfig, raw))
        got = pq.read_table(tmp_path / f"out-{center}" / "assignments")
        scores[center] = v_measure_score(got["topic"].to_pylist(), got["cluster_id"].to_pylist())
        assert summary["center_groups"] == (2 if center else 0)
    assert scores["lang"] > 0.9 > scores[None]
