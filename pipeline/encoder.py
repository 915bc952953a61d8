"""Token ids -> normalized embeddings with token-budget batches. Pure torch/numpy: no Ray in here."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel

from pipeline.batching import GPU_FILL_DIVISOR, MIN_FILL_DIVISOR, plan_batches
from pipeline.packing import pack_rows, plan_packed, pool_packed
from pipeline.pooling import l2_normalize, pool

log = logging.getLogger(__name__)


@dataclass
class EncodedRows:
    embeddings: np.ndarray  # (N, dim) float32, in the input row order
    computed_tokens: np.ndarray  # (N,) padded tokens each row's batch cost it (its batch's longest row)


def pad_batch(
    values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, pad_id: int, left: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Gather `rows` of a flat token list (values + offsets) into padded (B, T) ids and mask without a row loop."""
    starts, lens = offsets[rows], offsets[rows + 1] - offsets[rows]
    width = int(lens.max())
    mask = np.arange(width)[None, :] < lens[:, None]  # (B, T) right-padded layout
    if left:
        mask = mask[:, ::-1]
    # flat index of every real token, row after row: start of its row + position within the row
    within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = values[np.repeat(starts, lens) + within]  # boolean assignment fills row-major: row order kept
    return ids, mask


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in str(err) or "can't allocate memory" in str(err))
    )


@torch.inference_mode()
def attends_causally(model: PreTrainedModel, device: torch.device) -> bool:
    """Whether a token's output ignores the tokens after it, probed on the model itself rather than guessed from its
    architecture name (decoder families ship bidirectional variants, e.g. EmbeddingGemma)."""
    vocab = int(model.config.vocab_size)
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 5]], device=device).clamp(max=vocab - 1)
    hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.float()
    prefix_a, prefix_b = hidden[0, :3], hidden[1, :3]
    return bool(torch.allclose(prefix_a, prefix_b, rtol=1e-3, atol=1e-3 * float(prefix_a.abs().max())))


class Encoder:
    """Runs a loaded model over pre-tokenized rows.

    Args:
        model: transformer body returning `last_hidden_state`.
        pooling: last_token, mean or cls.
        normalize: L2-normalize the pooled vectors.
        pad_token_id: id written into padded positions (masked out, so any id works).
        padding_side: "left" or "right"; last_token pooling is correct for both.
        max_tokens_per_batch: padded-token budget per forward pass; halved (with a warning) on out-of-memory.
        max_batch_size: upper bound on rows per forward pass.
        min_batch_tokens: padded tokens a batch holds before it may end at a length bucket (see plan_batches);
            None: budget / GPU_FILL_DIVISOR on a GPU, budget / MIN_FILL_DIVISOR on a CPU.

    With right padding and causal attention the model gets no attention mask: a real token only attends to earlier,
    real tokens, so its output is the same without the mask, and attention then runs its mask-free causal kernel
    (FlashAttention on a GPU) instead of the masked one. Pooling still uses the mask; padded positions are ignored.

    Padding-free batches (`packed`; default: a causal model loaded with flash_attention_2): the rows of a batch go
    end to end into one sequence with position ids restarting per row (pipeline.packing), so FlashAttention-2 runs
    varlen attention and no padded token is computed at all; the budget then counts real tokens.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        pooling: str,
        normalize: bool,
        pad_token_id: int,
        padding_side: str,
        max_tokens_per_batch: int,
        max_batch_size: int,
        min_batch_tokens: int | None = None,
        packed: bool | None = None,
    ):
        self.model = model
        self.pooling = pooling
        self.normalize = normalize
        self.pad_token_id = pad_token_id
        self.left = padding_side == "left"
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_batch_size = max_batch_size
        self.min_batch_tokens = min_batch_tokens
        self.device = next(model.parameters()).device
        self.dim = int(model.config.hidden_size)
        self.causal = attends_causally(model, self.device)
        self.mask_to_model = self.left or not self.causal
        flash = getattr(model.config, "_attn_implementation", None) == "flash_attention_2"
        self.packed = (flash and self.causal) if packed is None else packed

    def encode(self, values: np.ndarray, offsets: np.ndarray) -> EncodedRows:
        """Embed rows given as a flat token array `values` with row boundaries `offsets` (N + 1,)."""
        lengths = np.diff(offsets)
        out = np.empty((len(lengths), self.dim), dtype=np.float32)
        computed = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) == 0:
            return EncodedRows(out, computed)
        if lengths.min() <= 0:
            raise ValueError(f"row {int(np.argmin(lengths))} has no tokens; empty rows must be rejected upstream")
        if self.packed:
            batches = plan_packed(lengths, self.max_tokens_per_batch, self.max_batch_size)
        else:
            batches = plan_batches(
                lengths, self.max_tokens_per_batch, self.max_batch_size, self.batch_floor()
            ).batches()
        pending: list[tuple[np.ndarray, torch.Tensor]] = []
        for rows in batches:
            self._encode_rows(values, offsets, rows, pending, computed)
        # One device->host copy per block, not one per batch: on a GPU the host pads and launches batch i+1 while
        # batch i still runs, instead of waiting on each batch's result.
        done = np.concatenate([rows for rows, _ in pending])
        out[done] = torch.cat([vectors for _, vectors in pending]).cpu().numpy()
        return EncodedRows(out, computed)

    def batch_floor(self) -> int:
        if self.min_batch_tokens:
            return self.min_batch_tokens
        divisor = GPU_FILL_DIVISOR if self.device.type == "cuda" else MIN_FILL_DIVISOR
        return max(self.max_tokens_per_batch // divisor, 1)

    def _encode_rows(
        self,
        values: np.ndarray,
        offsets: np.ndarray,
        rows: np.ndarray,
        pending: list[tuple[np.ndarray, torch.Tensor]],
        computed: np.ndarray,
    ) -> None:
        try:
            if self.packed:
                pending.append((rows, self.forward_packed(values, offsets, rows)))
                computed[rows] = offsets[rows + 1] - offsets[rows]  # nothing padded
            else:
                ids, mask = pad_batch(values, offsets, rows, self.pad_token_id, self.left)
                pending.append((rows, self.forward_on_device(ids, mask)))
                computed[rows] = ids.shape[1]
        except Exception as err:
            if not is_out_of_memory(err) or len(rows) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.max_tokens_per_batch = max(self.max_tokens_per_batch // 2, 1)
            log.warning(
                "out of memory on a batch of %d rows; splitting it and lowering the batch budget to %d tokens",
                len(rows),
                self.max_tokens_per_batch,
            )
            half = len(rows) // 2
            self._encode_rows(values, offsets, rows[:half], pending, computed)
            self._encode_rows(values, offsets, rows[half:], pending, computed)

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(B, T) ids and mask -> (B, dim) float32 pooled, optionally normalized."""
        return self.forward_on_device(ids, mask).cpu().numpy()

    @torch.inference_mode()
    def forward_on_device(self, ids: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """Like `forward`, but the (B, dim) result stays on the device and nothing waits for it."""
        input_ids, attention_mask = self.to_device(ids), self.to_device(mask).long()  # (B, T) each
        kwargs = {"attention_mask": attention_mask} if self.mask_to_model else {}
        if self.left:
            # Left padding shifts real tokens right; positions must count real tokens only, as in generation.
            kwargs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.model(input_ids=input_ids, **kwargs).last_hidden_state
        vectors = pool(hidden, attention_mask, self.pooling)  # (B, H) float32
        if self.normalize:
            vectors = l2_normalize(vectors)
        return vectors

    @torch.inference_mode()
    def forward_packed(self, values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """`rows` packed into one sequence without padding -> (B, dim) float32 on the device, in the order of `rows`."""
        ids, positions, starts, lengths = pack_rows(values, offsets, rows)  # (1, T), (1, T), (B,), (B,)
        # use_cache=False: transformers reads packed rows from position ids only when it builds no KV cache.
        inputs = {"input_ids": self.to_device(ids), "position_ids": self.to_device(positions), "use_cache": False}
        hidden = self.model(**inputs).last_hidden_state  # (1, T, H)
        vectors = pool_packed(hidden[0], self.to_device(starts), self.to_device(lengths), self.pooling)  # (B, H)
        return l2_normalize(vectors) if self.normalize else vectors

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """Host array -> device tensor; through pinned memory on CUDA so the copy is asynchronous."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)
