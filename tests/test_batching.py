from __future__ import annotations

import numpy as np
import pytest

from pipeline.batching import CPU_LENGTH_RATIO, BatchPlan, check_plan_covers_every_row, plan_batches
from pipeline.encoder import pad_batch


@pytest.mark.parametrize("seed", range(5))
def test_plan_respects_budget_and_covers_every_row_once(seed):
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.5, 1.0, size=1000).astype(int), 1, 4000)
    plan = plan_batches(lengths, max_tokens_per_batch=4096, max_batch_size=64)
    rows = np.concatenate(plan.batches())
    assert sorted(rows.tolist()) == list(range(1000))
    for batch in plan.batches():
        assert len(batch) <= 64
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 4096


def test_length_sorting_keeps_padding_small():
    lengths = np.random.default_rng(0).integers(1, 512, size=4096)
    plan = plan_batches(lengths, max_tokens_per_batch=8192, max_batch_size=256)
    assert plan.padding_efficiency() > 0.95
    unsorted = BatchPlan(np.arange(4096), np.arange(0, 4096, 16), np.arange(16, 4097, 16), lengths)
    assert unsorted.padding_efficiency() < 0.7  # what fixed-size batches of unsorted rows cost


def test_row_longer_than_budget_runs_alone():
    plan = plan_batches(np.array([10, 50_000, 10]), max_tokens_per_batch=1000, max_batch_size=8)
    assert [b.tolist() for b in plan.batches()] == [[1], [0, 2]]


def test_empty_block():
    assert plan_batches(np.array([], dtype=np.int64), 100, 10).batches() == []


def test_check_detects_lost_and_duplicated_rows():
    lengths = np.array([3, 2, 1])
    with pytest.raises(AssertionError, match="lost rows \\[2\\]"):
        check_plan_covers_every_row(BatchPlan(np.array([0, 1, 1]), np.array([0]), np.array([3]), lengths))


@pytest.mark.parametrize("left", [False, True])
def test_pad_batch_gathers_rows_in_order(left):
    rows = [[5, 6, 7], [8], [9, 10]]
    values = np.array([t for r in rows for t in r])
    offsets = np.array([0, 3, 4, 6])
    ids, mask = pad_batch(values, offsets, np.array([2, 0, 1]), pad_id=0, left=left)
    expected = [[9, 10, 0], [5, 6, 7], [8, 0, 0]] if not left else [[0, 9, 10], [5, 6, 7], [0, 0, 8]]
    assert ids.tolist() == expected
    assert mask.sum(1).tolist() == [2, 3, 1]


def test_few_rows_of_spread_lengths_are_bucketed_not_padded_to_the_longest():
    # 24 rows that all fit one 16k budget: a budget-only cut pads them all to 236 tokens (efficiency ~0.3)
    lengths = np.array(
        [236, 200, 170, 120, 90, 80, 70, 60, 55, 50, 45, 40, 38, 35, 30, 28, 25, 22, 20, 18, 15, 12, 10, 8]
    )
    plan = plan_batches(lengths, max_tokens_per_batch=16384, max_batch_size=256)
    assert plan.padding_efficiency() > 0.8
    for batch in plan.batches():
        # a batch mixes dissimilar lengths only while it is below the fill floor of 16384 / 64 tokens
        assert lengths[batch].min() >= 0.9 * lengths[batch].max() or len(batch) * lengths[batch].max() <= 256 + 236


def test_higher_floor_makes_fewer_larger_batches_within_budget():
    # The GPU floor (budget / 4): fewer forward passes for a little more padding, still every row once.
    lengths = np.clip(np.random.default_rng(1).lognormal(4.0, 1.0, size=4000).astype(int), 1, 2048)
    cpu = plan_batches(lengths, max_tokens_per_batch=65536, max_batch_size=1024)
    gpu = plan_batches(lengths, max_tokens_per_batch=65536, max_batch_size=1024, min_batch_tokens=16384)
    assert len(gpu.batches()) < 0.6 * len(cpu.batches())
    assert cpu.padding_efficiency() > gpu.padding_efficiency() > 0.8
    assert sorted(np.concatenate(gpu.batches()).tolist()) == list(range(4000))
    for batch in gpu.batches():
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 65536


def test_a_cpu_plan_cuts_narrower_length_buckets_and_pads_less():
    """On a CPU a padded token costs what a real one does and a batch's fixed cost is small: CPU_LENGTH_RATIO
    buckets pad ~1 % on a skewed corpus where the GPU's MIN_LENGTH_RATIO pads ~4 %, every row still once."""
    lengths = np.clip(np.random.default_rng(2).lognormal(4.0, 1.1, size=3000).astype(int), 1, 512)
    gpu = plan_batches(lengths, max_tokens_per_batch=16384, max_batch_size=256)
    cpu = plan_batches(lengths, max_tokens_per_batch=16384, max_batch_size=256, min_length_ratio=CPU_LENGTH_RATIO)
    assert cpu.padding_efficiency() > 0.98 > gpu.padding_efficiency()
    assert sorted(np.concatenate(cpu.batches()).tolist()) == list(range(3000))
    for batch in cpu.batches():
        longest = lengths[batch].max()
        assert len(batch) * longest <= 16384
        # narrower than the ratio only while below the fill floor (budget / 64 tokens), as for the GPU's buckets
        assert lengths[batch].min() >= CPU_LENGTH_RATIO * longest or (len(batch) - 1) * longest < 256
