from __future__ import annotations

import numpy as np
import pytest
from bitext_reference import brute_knn, random_unit

from pipeline.bitext.knn import knn_search
from pipeline.bitext.mining_actor import ShardResources, ray_knn_search, shard_count

SMALL = ShardResources(cpus=0.25, gpus=0)  # several actors fit on a 2-CPU test machine


def test_shard_count_bounds_rows_per_actor():
    assert shard_count(1000, 1, 300) == 4
    assert shard_count(1000, 5, 300) == 5
    assert shard_count(10, 1, 10) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "block_size,num_shards,max_rows",
    [(32, 1, 10_000), (7, 3, 10_000), (1000, 1, 25)],  # the last one: the row cap forces 5 shards
)
def test_ray_search_equals_in_process_search(ray_session, block_size, num_shards, max_rows):
    rng = np.random.default_rng(0)
    x, y = random_unit(rng, 90, 16), random_unit(rng, 113, 16)
    local = knn_search(x, y, k=4, block_size=64)
    got = ray_knn_search(x, y, 4, block_size, num_shards, max_rows, SMALL, max_in_flight=2)
    np.testing.assert_array_equal(got.indices, local.indices)
    np.testing.assert_allclose(got.scores, local.scores, atol=1e-6)
    _, ref_i = brute_knn(x, y, 4)
    np.testing.assert_array_equal(got.indices, ref_i)


@pytest.mark.slow
def test_ray_search_rejects_bad_input_before_starting_actors(ray_session):
    rng = np.random.default_rng(1)
    x = random_unit(rng, 5, 8)
    with pytest.raises(ValueError, match="keys: no rows"):
        ray_knn_search(x, np.zeros((0, 8), np.float32), 4, 8, 1, 100, SMALL)
    with pytest.raises(ValueError, match="differs from the other side's"):
        ray_knn_search(x, random_unit(rng, 5, 4), 4, 8, 1, 100, SMALL)
