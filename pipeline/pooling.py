"""Token states -> one vector per row. Pure torch, so it is unit-tested on hand-made tensors.

The modes and their formulas are sentence-transformers' `models.Pooling` (its names: cls, max, mean,
mean_sqrt_len_tokens, weightedmean, lasttoken, here `last_token`), so a model that declares one of them gets the
vectors sentence-transformers gives it. `skip` excludes each row's first real tokens (the prompt, with its leading
special tokens) from pooling, as that Pooling's `include_prompt: false` does (INSTRUCTOR-style models).
"""

from __future__ import annotations

import torch

from pipeline.columns import POOLINGS

__all__ = ["POOLINGS", "l2_normalize", "last_token_index", "pool"]


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last real token, correct for left AND right padding.

    `mask.sum(1) - 1` is only right for right padding; flipping the mask and taking the first 1 finds the last real
    token wherever the padding is.
    """
    seq_len = attention_mask.shape[1]
    return seq_len - 1 - attention_mask.flip(dims=[1]).int().argmax(dim=1)  # (B,)


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's first real token: 0 unless left-padded."""
    return attention_mask.int().argmax(dim=1)  # (B,)


def without_prefix(attention_mask: torch.Tensor, skip: int) -> torch.Tensor:
    """`attention_mask` (B, T) with each row's first `skip` real tokens masked out, for either padding side."""
    if skip <= 0:
        return attention_mask
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :]  # (1, T)
    first = first_token_index(attention_mask)[:, None]  # (B, 1)
    return attention_mask.bool() & (positions >= first + skip)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: str, skip: int = 0) -> torch.Tensor:
    """Pool `hidden` (B, T, H) under `attention_mask` (B, T) into (B, H) float32.

    Args:
        hidden: the model's last hidden states.
        attention_mask: 1 for real tokens, 0 for padding (left or right).
        method: one of POOLINGS (sentence-transformers' formulas).
        skip: real tokens at the start of each row left out (the prompt when the model's Pooling has
            include_prompt false); weightedmean still counts them as positions, as sentence-transformers does.

    A row with no token left to pool gives a zero vector (never NaN or -inf).

    Raises:
        ValueError: unknown method.
    """
    hidden = hidden.float()
    real = attention_mask.bool()  # (B, T)
    mask = without_prefix(real, skip)  # (B, T) the tokens that count
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    zero = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
    if method == "last_token":
        return torch.where(mask.any(dim=1, keepdim=True), hidden[rows, last_token_index(mask)], zero)
    if method == "cls":
        return torch.where(mask.any(dim=1, keepdim=True), hidden[rows, first_token_index(mask)], zero)
    if method == "max":
        masked = torch.where(mask.unsqueeze(-1), hidden, torch.full((), float("-inf"), device=hidden.device))
        return torch.where(mask.any(dim=1, keepdim=True), masked.max(dim=1).values, zero)
    # where(), not hidden * mask: a NaN/inf state in a padded position would give 0 * NaN = NaN in a real row.
    if method in ("mean", "mean_sqrt_len_tokens"):
        summed = torch.where(mask.unsqueeze(-1), hidden, zero).sum(dim=1)  # (B, H)
        count = mask.sum(dim=1, keepdim=True).to(hidden.dtype).clamp(min=1.0)  # (B, 1)
        return summed / (count if method == "mean" else count.sqrt())
    if method == "weightedmean":
        # weight of a token: its position counted from the row's first real token, 1-based (prompt included)
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)[None, :]
        weights = torch.where(mask, positions - first_token_index(real)[:, None].to(hidden.dtype), zero)  # (B, T)
        summed = torch.where(mask.unsqueeze(-1), hidden * weights.unsqueeze(-1), zero).sum(dim=1)
        return summed / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)
    raise ValueError(f"unknown pooling {method!r}; use one of {', '.join(POOLINGS)}")


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors, p=2, dim=-1)
