"""Token-budget batching: sort by length, cut batches by padded tokens, restore order.

Plain numpy so that the plan can be checked exhaustively without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchPlan:
    """`order[starts[i]:ends[i]]` are the row indices of batch i, rows within a batch of similar length."""

    order: np.ndarray  # (N,) row indices sorted by descending length
    starts: np.ndarray  # (num_batches,)
    ends: np.ndarray  # (num_batches,)
    lengths: np.ndarray  # (N,) tokens per row, in the original order

    def batches(self) -> list[np.ndarray]:
        return [self.order[s:e] for s, e in zip(self.starts, self.ends)]

    def padded_tokens_per_row(self) -> np.ndarray:
        """Tokens computed for each row (its batch's longest length), in the original row order."""
        out = np.zeros_like(self.lengths)
        for s, e in zip(self.starts, self.ends):
            rows = self.order[s:e]
            out[rows] = self.lengths[rows].max()
        return out

    def padding_efficiency(self) -> float:
        """Real tokens / computed tokens (1.0 means no padding at all)."""
        computed = int(self.padded_tokens_per_row().sum())
        return float(self.lengths.sum()) / computed if computed else 1.0


# A batch is cut early when the next row is shorter than this fraction of the batch's longest row, so that each
# batch pads at most ~10 % even when few rows share a budget (small blocks, the long-document tail) ...
MIN_LENGTH_RATIO = 0.9
# ... on a CPU at most ~3 %: a CPU's forward pass costs what its padded tokens cost, and its fixed cost per batch is
# small, so narrower length buckets pay there (bench/bucket_ratio.py measures both).
CPU_LENGTH_RATIO = 0.97
# ... but never below budget / MIN_FILL_DIVISOR tokens: below that, fixed per-batch costs (kernel launches, Python)
# outweigh the padding saved.
MIN_FILL_DIVISOR = 64
# On a GPU the fixed cost is larger (a forward pass of small batches is bound by Python launching kernels), so its
# floor is budget / GPU_FILL_DIVISOR (bench/gpu_throughput.py measures both floors).
GPU_FILL_DIVISOR = 4


def plan_batches(
    lengths: np.ndarray,
    max_tokens_per_batch: int,
    max_batch_size: int,
    min_batch_tokens: int | None = None,
    min_length_ratio: float = MIN_LENGTH_RATIO,
) -> BatchPlan:
    """Greedy cut of length-sorted rows so that rows x longest row <= max_tokens_per_batch.

    Within that budget a batch also ends where row lengths fall below `min_length_ratio` of its longest row (once it
    holds `min_batch_tokens`, default budget / MIN_FILL_DIVISOR): length buckets, so padding stays small however the
    lengths spread. A GPU wants a higher floor than a CPU: its fixed cost per forward pass (kernel launches from
    Python) is large next to the compute of a small batch.
    Longest rows go first: a budget overrun (a single row longer than the budget, which then runs alone) or an
    out-of-memory error shows up on the first batch rather than at the end of a long block.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    descending_neg = -sorted_lengths  # ascending, for searchsorted
    floor_tokens = max(min_batch_tokens or max_tokens_per_batch // MIN_FILL_DIVISOR, 1)
    starts, ends = [], []
    start, n = 0, len(order)
    while start < n:
        longest = max(int(sorted_lengths[start]), 1)  # sorted descending: the first row is the longest
        similar = int(np.searchsorted(descending_neg, -min_length_ratio * longest, side="right")) - start
        bucket = max(similar, -(-floor_tokens // longest))  # at least the fill floor's rows
        rows = min(max(max_tokens_per_batch // longest, 1), bucket, max_batch_size, n - start)
        starts.append(start)
        ends.append(start + rows)
        start += rows
    plan = BatchPlan(order, np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64), lengths)
    check_plan_covers_every_row(plan)
    return plan


def check_plan_covers_every_row(plan: BatchPlan) -> None:
    """Prove that each row is in exactly one batch: none lost, none duplicated."""
    seen = np.bincount(np.concatenate(plan.batches()) if len(plan.order) else plan.order, minlength=len(plan.lengths))
    if len(seen) != len(plan.lengths) or not np.all(seen == 1):
        lost = np.flatnonzero(seen == 0)[:5].tolist()
        dup = np.flatnonzero(seen > 1)[:5].tolist()
        raise AssertionError(f"batch plan lost rows {lost} or duplicated rows {dup}")
