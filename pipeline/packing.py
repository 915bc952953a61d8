"""Padding-free batches: rows packed end to end into one (1, total) sequence, and one vector per row back out.

transformers reads the packing from `position_ids` that restart at 0 at every row: FlashAttention-2 then runs
varlen attention over the rows' cumulative lengths (`prepare_fa_kwargs_from_position_ids`), so no padded token is
computed anywhere, in attention or in the MLPs; SDPA and eager get a block-diagonal causal mask instead
(`masking_utils.find_packed_sequence_indices`), which is how the packing is tested without a GPU. Only for causal
decoders given no attention mask (pipeline.encoder decides). Pure numpy/torch: no Ray, no model loading.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.pooling import pool


def plan_packed(lengths: np.ndarray, max_tokens_per_batch: int, max_batch_size: int) -> list[np.ndarray]:
    """Row indices of each packed batch: longest rows first, as many as fit `max_tokens_per_batch` real tokens.

    Nothing is padded, so the budget counts real tokens (sum of lengths, not rows x longest); a row longer than the
    budget runs alone. Every row is in exactly one batch.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    ends = np.cumsum(lengths[order])
    while start < len(order):
        before = ends[start - 1] if start else 0
        fit = int(np.searchsorted(ends, before + max_tokens_per_batch, side="right")) - start  # rows within budget
        rows = min(max(fit, 1), max_batch_size)
        batches.append(order[start : start + rows])
        start += rows
    return batches


def pack_rows(
    values: np.ndarray, offsets: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate `rows` of a flat token list (values + offsets).

    Returns (1, T) input ids, (1, T) position ids restarting at 0 per row, and each row's start and length (B,).
    """
    starts, lens = offsets[rows], offsets[rows + 1] - offsets[rows]
    packed_starts = np.cumsum(lens) - lens  # where each row begins in the packed sequence
    within = np.arange(int(lens.sum())) - np.repeat(packed_starts, lens)  # position inside its own row
    ids = values[np.repeat(starts, lens) + within].astype(np.int64)
    return ids[None, :], within[None, :].astype(np.int64), packed_starts, lens


def pool_packed(
    hidden: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, method: str, skip: int = 0
) -> torch.Tensor:
    """Pool packed `hidden` (T, H) into (B, H) float32, rows given by `starts` and `lengths` (B,) in the sequence.

    last_token, cls and mean index the packed sequence directly; the other modes of pipeline.pooling (and `skip`)
    gather the rows into a right-padded (B, longest, H) batch first.
    """
    hidden = hidden.float()
    if skip == 0 and method == "last_token":
        return hidden[starts + lengths - 1]
    if skip == 0 and method == "cls":
        return hidden[starts]
    if skip == 0 and method == "mean":
        segment = torch.repeat_interleave(torch.arange(len(lengths), device=hidden.device), lengths)  # (T,)
        sums = torch.zeros(len(lengths), hidden.shape[1], device=hidden.device).index_add_(0, segment, hidden)
        return sums / lengths.unsqueeze(1).to(hidden.dtype)
    width = int(lengths.max())
    within = torch.arange(width, device=hidden.device)[None, :]  # (1, W)
    mask = within < lengths[:, None]  # (B, W)
    index = (starts[:, None] + within).clamp(max=hidden.shape[0] - 1)  # (B, W); padded slots read any real state
    return pool(hidden[index], mask, method, skip)
