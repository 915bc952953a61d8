"""Token states -> one vector per row. Pure torch, so it is unit-tested on hand-made tensors."""

from __future__ import annotations

import torch


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last real token, correct for left AND right padding.

    `mask.sum(1) - 1` is only right for right padding; flipping the mask and taking the first 1 finds the last real
    token wherever the padding is.
    """
    seq_len = attention_mask.shape[1]
    return seq_len - 1 - attention_mask.flip(dims=[1]).int().argmax(dim=1)  # (B,)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: str) -> torch.Tensor:
    """Pool `hidden` (B, T, H) under `attention_mask` (B, T) into (B, H) float32."""
    hidden = hidden.float()
    if method == "last_token":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, last_token_index(attention_mask)]
    if method == "mean":
        mask = attention_mask.unsqueeze(-1).bool()  # (B, T, 1)
        # where(), not hidden * mask: a NaN/inf state in a padded position would give 0 * NaN = NaN in a real row.
        summed = torch.where(mask, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device)).sum(dim=1)
        return summed / mask.sum(dim=1).to(hidden.dtype).clamp(min=1.0)
    if method == "cls":
        first = attention_mask.int().argmax(dim=1)  # first real token: position 0 unless left-padded
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, first]
    raise ValueError(f"unknown pooling {method!r}; use last_token, mean or cls")


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors, p=2, dim=-1)
