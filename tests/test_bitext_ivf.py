"""The IVF index (`mining.index: ivf`): its default nprobe and its recall against exact search."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bitext_ivf import recall
from pipeline.bitext.ivf import IvfSearcher, default_nlist, default_nprobe, gpu_faiss, gpu_number
from pipeline.bitext.knn import ShardSearcher
from pipeline.mine_config import IvfConfig


@pytest.mark.parametrize(("nlist", "nprobe"), [(1, 1), (20, 20), (153, 32), (256, 32), (648, 81), (917, 115)])
def test_default_nprobe_visits_at_least_an_eighth_of_the_lists(nlist, nprobe):
    assert default_nprobe(nlist) == nprobe


def test_config_leaves_nprobe_to_the_index_unless_set():
    assert IvfConfig().nprobe is None
    assert IvfConfig(nprobe=8).nprobe == 8


def clustered(rows: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around `clusters` random centres (cos to centre ~0.8), like sentence embeddings' topics."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, rows)] + 0.75 * rng.standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_default_nprobe_recalls_the_exact_top4():
    keys, queries = clustered(20_000, 32, 50, 0), clustered(500, 32, 50, 1)
    exact = ShardSearcher(keys, 0, "cpu", 4096).search(queries, 4)[1]
    index = IvfSearcher(keys, np.arange(len(keys)), None, None, None, 20_000)
    assert index.nlist == default_nlist(20_000) and index.index.nprobe == default_nprobe(index.nlist)
    assert recall(index.search(queries, 4)[1], exact) >= 0.95
    index.index.nprobe = 32  # the earlier fixed default: 32 of these 512 lists fall short of 0.95
    assert recall(index.search(queries, 4)[1], exact) < 0.95


def test_gpu_placement_needs_a_cuda_device_and_gpu_faiss():
    import faiss

    assert gpu_number("cuda") == 0 and gpu_number("cuda:1") == 1
    assert not gpu_faiss("cpu")
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    assert gpu_faiss("cuda") == has_gpu  # faiss-cpu (CI): the index stays on the CPU, and still answers
    keys = clustered(2000, 16, 10, 0)
    index = IvfSearcher(keys, np.arange(2000), None, None, None, 2000, device="cuda")
    assert (index.gpu_resources is not None) == has_gpu
    assert index.search(keys[:5], 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_a_shard_too_small_for_pq_codes_is_kept_as_ivf_flat_with_a_warning(caplog):
    """mining.ivf.pq_m on a store of fewer than 256 keys (a language with few sentences): FAISS's C++ error
    'Number of training points (40) should be at least as large as number of clusters (256)' failed the run."""
    keys, queries = clustered(100, 16, 5, 0), clustered(20, 16, 5, 1)
    exact = ShardSearcher(keys, 0, "cpu", 4096).search(queries, 4)
    with caplog.at_level("WARNING", logger="pipeline.bitext.ivf"):
        index = IvfSearcher(keys, np.arange(100) + 1000, None, 2, 4, 100_000)  # nprobe 2 of default_nlist(100) = 2
    assert "a shard of 100 keys cannot train PQ codes" in caplog.text
    scores, rows = index.search(queries, 4)
    np.testing.assert_array_equal(rows, exact[1] + 1000)  # every list scanned, exact vectors: the exact top-k
    np.testing.assert_allclose(scores, exact[0], atol=1e-5)
    big = IvfSearcher(clustered(2000, 16, 10, 0), np.arange(2000), None, None, 4, 2000)  # enough keys: PQ
    assert type(big.index).__name__ == "IndexIVFPQ"


def test_fewer_training_rows_than_lists_train_one_list_per_row():
    """ivf.nlist 100 with ivf.train_rows 50: FAISS refused to train 100 centroids on 50 points."""
    keys = clustered(1000, 16, 10, 0)
    index = IvfSearcher(keys, np.arange(1000), 100, None, None, 50)
    assert index.nlist == 50 and index.search(keys[:3], 1)[1][:, 0].tolist() == [0, 1, 2]


def test_pq_codes_with_fewer_than_256_training_rows_are_refused_naming_the_keys():
    with pytest.raises(ValueError, match=r"mining.ivf.train_rows \(100\) is below 256.*unset pq_m"):
        IvfConfig(pq_m=8, train_rows=100)
    assert IvfConfig(pq_m=8, train_rows=256).train_rows == 256
