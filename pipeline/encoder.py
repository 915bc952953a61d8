"""Token ids -> normalized embeddings with token-budget batches. Pure torch/numpy: no Ray in here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedModel

from pipeline.batching import CPU_LENGTH_RATIO, GPU_FILL_DIVISOR, MIN_FILL_DIVISOR, MIN_LENGTH_RATIO, plan_batches
from pipeline.compiling import compile_model, eager_only, is_compile_error, uncompiled
from pipeline.errors import UserError
from pipeline.model_architecture import text_config
from pipeline.packing import pack_rows, plan_packed, pool_packed
from pipeline.pooling import l2_normalize, pool

log = logging.getLogger(__name__)

# A text alone and the same text padded in a batch must give the same vector (load-time probe, see padding_probe).
# Half precision reorders sums between the two, so its bar is lower; both are far above the 0.967-0.997 a
# RoBERTa-family encoder gives with position ids counted from 0 under left padding.
PROBE_MIN_COSINE = {torch.float32: 0.9999, torch.float64: 0.9999}
PROBE_MIN_COSINE_HALF = 0.999
# Larger half-precision models are probed as they are (a float32 copy would need twice their memory at load).
PROBE_FP32_MAX_PARAMS = 2_000_000_000


class PaddingProbeError(UserError, RuntimeError):
    """The model gives a padded text another vector than the text alone, with either padding side."""


@dataclass
class EncodedRows:
    """Vectors of the rows that could be embedded; `reasons[i]` says why row i could not (its vector is zeros)."""

    embeddings: np.ndarray  # (N, dim) float32, in the input row order
    computed_tokens: np.ndarray  # (N,) padded tokens each row's batch cost it (its batch's longest row)
    # row -> reject reason (model error, non-finite vector, token outside the vocabulary)
    reasons: dict[int, str] = field(default_factory=dict)
    recomputed: np.ndarray | None = None  # (N,) bool: the first vector was not finite, recomputed in float32

    def __post_init__(self) -> None:
        if self.recomputed is None:
            self.recomputed = np.zeros(len(self.embeddings), dtype=bool)


def pad_batch(
    values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, pad_id: int, left: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Gather `rows` of a flat token list (values + offsets) into padded (B, T) ids and mask without a row loop."""
    starts, lens = offsets[rows], offsets[rows + 1] - offsets[rows]
    width = int(lens.max())
    mask = np.arange(width)[None, :] < lens[:, None]  # (B, T) right-padded layout
    if left:
        # a copy, not a reversed view: numpy calls a (B, 1) view contiguous whatever its strides, so
        # np.ascontiguousarray keeps the negative stride and torch.from_numpy refuses it (one-token batches)
        mask = mask[:, ::-1].copy()
    # flat index of every real token, row after row: start of its row + position within the row
    within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = values[np.repeat(starts, lens) + within]  # boolean assignment fills row-major: row order kept
    return ids, mask


def is_out_of_memory(err: BaseException) -> bool:
    """A device or host allocation failed: torch's OutOfMemoryError, the CPU allocator's RuntimeError, or either
    wrapped by another error, e.g. torch.compile's BackendCompilerFailed for one raised while Inductor compiled."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, torch.OutOfMemoryError) or (
            isinstance(err, RuntimeError) and ("out of memory" in str(err) or "can't allocate memory" in str(err))
        ):
            return True
        err = getattr(err, "inner_exception", None) or err.__cause__
    return False


@torch.inference_mode()
def attends_causally(model: PreTrainedModel, device: torch.device) -> bool:
    """Whether a token's output ignores the tokens after it, probed on the model itself rather than guessed from its
    architecture name (decoder families ship bidirectional variants, e.g. EmbeddingGemma)."""
    vocab = int(text_config(model.config).vocab_size)
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 5]], device=device).clamp(max=vocab - 1)
    hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.float()
    prefix_a, prefix_b = hidden[0, :3], hidden[1, :3]
    return bool(torch.allclose(prefix_a, prefix_b, rtol=1e-3, atol=1e-3 * float(prefix_a.abs().max())))


class Encoder:
    """Runs a loaded model over pre-tokenized rows.

    Args:
        model: transformer body returning `last_hidden_state`.
        pooling: one of pipeline.pooling.POOLINGS.
        normalize: L2-normalize the pooled vectors (after `head`).
        pad_token_id: id written into padded positions (masked out; RoBERTa-family models also count positions
            from it, so it must be the tokenizer's pad id).
        padding_side: "left" or "right"; last_token pooling is correct for both. Checked at load by
            padding_probe: a side on which a padded text gets another vector than the text alone is switched
            (with a warning) or, when both sides fail, refused with PaddingProbeError.
        max_tokens_per_batch: padded-token budget per forward pass; halved (with a warning) on out-of-memory.
        max_batch_size: upper bound on rows per forward pass.
        min_batch_tokens: padded tokens a batch holds before it may end at a length bucket (see plan_batches);
            None: budget / GPU_FILL_DIVISOR on a GPU, budget / MIN_FILL_DIVISOR on a CPU.
        min_length_ratio: a batch ends where the next row is shorter than this fraction of its longest row (see
            plan_batches); None: MIN_LENGTH_RATIO on a GPU, CPU_LENGTH_RATIO on a CPU.
        head: the model's sentence-transformers Dense modules (pipeline.st_head.load_head), run on the pooled
            vectors before normalization; the output dimension is then the last one's out_features.
        pool_skip: leading real tokens of every row left out of pooling (the prompt, when the model's Pooling has
            include_prompt false; pipeline.model_loading.pooling_skip).
        compile: torch.compile the model (pipeline.compiling.compile_model: its repeated blocks, dynamic shapes)
            once the load-time probes have run on it uncompiled; the compile itself happens at the first batch.

    With right padding and causal attention the model gets no attention mask: a real token only attends to earlier,
    real tokens, so its output is the same without the mask, and attention then runs its mask-free causal kernel
    (FlashAttention on a GPU) instead of the masked one. Pooling still uses the mask; padded positions are ignored.
    Padding-free batches (`packed`; default: a causal model loaded with flash_attention_2): the rows of a batch go
    end to end into one sequence with position ids restarting per row (pipeline.packing), so FlashAttention-2 runs
    varlen attention and no padded token is computed at all; the budget then counts real tokens.
    A decoder is called with `use_cache=False`: transformers would otherwise build a KV cache on every pass, which
    embedding never reads (it costs device memory and time; bench/gpu.sh lever `ours_kv_cache`).
    Position ids are passed only to causal decoders under left padding (counted over real tokens, as in generation):
    encoders compute their own (RoBERTa-family ones from `padding_idx + 1`), which ids counted from 0 would break.

    One row never fails its block: a row whose forward pass raises (found by splitting the batch) or whose vector is
    not finite even when recomputed in float32 gets a reason in `EncodedRows.reasons`; out-of-memory errors split the
    batch and lower the budget instead.
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
        min_length_ratio: float | None = None,
        packed: bool | None = None,
        head: torch.nn.Module | None = None,
        pool_skip: int = 0,
        compile: bool = False,
    ):
        self.model = model
        self.pooling = pooling
        self.pool_skip = pool_skip
        self.head = head.to(next(model.parameters()).device) if head is not None else None
        self.normalize = normalize
        self.left = padding_side == "left"
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_batch_size = max_batch_size
        self.min_batch_tokens = min_batch_tokens
        self.device = next(model.parameters()).device
        self.min_length_ratio = min_length_ratio or (
            MIN_LENGTH_RATIO if self.device.type == "cuda" else CPU_LENGTH_RATIO
        )
        self.dim = int(text_config(model.config).hidden_size) if head is None else int(head[-1].linear.out_features)
        self.vocab_size = int(getattr(text_config(model.config), "vocab_size", 0) or 0)
        self.pad_token_id = embeddable_pad_id(model, pad_token_id)
        self.compiled = False  # run_model reads it, the probes below included; compiled after them
        self.causal = attends_causally(model, self.device)
        # A decoder whose config enables the KV cache builds one on every forward pass (transformers' default);
        # embedding never generates, so it is switched off. Benchmarks switch it back on to measure the lever.
        self.no_kv_cache = self.causal and bool(getattr(model.config, "use_cache", False))
        self.mask_to_model = self.left or not self.causal
        self.left = self.checked_padding_side(padding_side) == "left"
        self.mask_to_model = self.left or not self.causal  # benchmarks may switch it off to measure the lever
        flash = getattr(model.config, "_attn_implementation", None) == "flash_attention_2"
        self.packed = (flash and self.causal) if packed is None else packed
        self.compiled = compile  # after the probes: they run other shapes, a KV cache and float32 (each a recompile)
        if compile:
            self.model = compile_model(model)

    def checked_padding_side(self, side: str) -> str:
        """The configured side if the probe passes on it, else the other side (warning), else PaddingProbeError.

        A half-precision model up to PROBE_FP32_MAX_PARAMS is probed in float32 (cast and back, exact for bf16/fp16
        weights): the probe is about positions and masks, and half-precision noise must not refuse a good model.
        """
        dtype = self.model_dtype()
        upcast = dtype != torch.float32 and sum(p.numel() for p in self.model.parameters()) <= PROBE_FP32_MAX_PARAMS
        if upcast:
            self.model.to(torch.float32)
        try:
            return self._probe_sides(side, PROBE_MIN_COSINE.get(self.model_dtype(), PROBE_MIN_COSINE_HALF))
        finally:
            if upcast:
                self.model.to(dtype)

    def _probe_sides(self, side: str, min_cosine: float) -> str:
        scores = {}
        for candidate in (side, "right" if side == "left" else "left"):
            scores[candidate] = padding_probe(self, candidate == "left")
            if scores[candidate] >= min_cosine:
                if candidate != side:
                    log.warning(
                        "padding_side %s gives a padded text another vector than the text alone (cosine %.5f); "
                        "padding on the %s instead (cosine %.5f). Set model.padding_side: %s to silence this.",
                        side,
                        scores[side],
                        candidate,
                        scores[candidate],
                        candidate,
                    )
                return candidate
        raise PaddingProbeError(
            "the model gives a text padded in a batch another vector than the same text alone (cosine "
            + ", ".join(f"{c:.5f} with {s} padding" for s, c in scores.items())
            + f", below {min_cosine}); refusing to embed with it. Check that the tokenizer's pad token "
            "is the model's pad_token_id, or set model.dtype: float32"
        )

    def model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode(self, values: np.ndarray, offsets: np.ndarray) -> EncodedRows:
        """Embed rows given as a flat token array `values` with row boundaries `offsets` (N + 1,)."""
        lengths = np.diff(offsets)
        n = len(lengths)
        out = np.zeros((n, self.dim), dtype=np.float32)
        computed = np.zeros(n, dtype=np.int64)
        reasons = row_checks(values, offsets, self.vocab_size, self.pool_skip)
        recomputed = np.zeros(n, dtype=bool)
        todo = np.asarray([i for i in range(n) if i not in reasons], dtype=np.int64)
        if len(todo) == 0:
            return EncodedRows(out, computed, reasons, recomputed)
        if self.packed:
            batches = plan_packed(lengths[todo], self.max_tokens_per_batch, self.max_batch_size)
        else:
            plan = plan_batches(
                lengths[todo], self.max_tokens_per_batch, self.max_batch_size, self.batch_floor(), self.min_length_ratio
            )
            batches = plan.batches()
        pending: list[tuple[np.ndarray, torch.Tensor]] = []
        for batch in batches:
            self._encode_rows(values, offsets, todo[batch], pending, computed, reasons)
        # One device->host copy per block, not one per batch: on a GPU the host pads and launches batch i+1 while
        # batch i still runs, instead of waiting on each batch's result.
        if pending:
            done = np.concatenate([rows for rows, _ in pending])
            out[done] = torch.cat([vectors for _, vectors in pending]).cpu().numpy()
            self._fix_non_finite(values, offsets, done, out, reasons, recomputed)
        return EncodedRows(out, computed, reasons, recomputed)

    def _fix_non_finite(
        self,
        values: np.ndarray,
        offsets: np.ndarray,
        done: np.ndarray,
        out: np.ndarray,
        reasons: dict[int, str],
        recomputed: np.ndarray,
    ) -> None:
        """Recompute rows whose vector is NaN/inf one at a time in float32; still non-finite: a reject."""
        bad = done[~np.isfinite(out[done]).all(axis=1)]
        if len(bad) == 0:
            return
        dtype = self.model_dtype()
        log.warning("%d rows gave a non-finite vector in %s; recomputing them in float32", len(bad), dtype)
        if dtype != torch.float32:
            self.model.to(torch.float32)
        try:
            for row in bad:
                ids, mask = pad_batch(values, offsets, np.asarray([row]), self.pad_token_id, self.left)
                with eager_only():  # compiled blocks would compile a float32 variant for these few rows
                    vector = self.forward(ids, mask)[0]
                if np.isfinite(vector).all() and dtype != torch.float32:
                    out[row], recomputed[row] = vector, True
                else:
                    out[row] = 0.0
                    reasons[int(row)] = f"non-finite embedding (NaN or inf) in {dtype}" + (
                        "" if dtype == torch.float32 else " and again in float32"
                    )
        finally:
            if dtype != torch.float32:
                self.model.to(dtype)

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
        reasons: dict[int, str],
    ) -> None:
        try:
            if self.packed:
                pending.append((rows, self.forward_packed(values, offsets, rows)))
                computed[rows] = offsets[rows + 1] - offsets[rows]  # nothing padded
                return
            ids, mask = pad_batch(values, offsets, rows, self.pad_token_id, self.left)
            pending.append((rows, self.forward_on_device(ids, mask)))
            computed[rows] = ids.shape[1]
            return
        except Exception as err:  # out-of-memory splits; another error is isolated to its row
            oom = is_out_of_memory(err)
            if len(rows) == 1:
                if not oom and not self.healthy():
                    raise  # the model fails on any input: not this row's fault; Ray retries the task
                tokens = int(offsets[rows[0] + 1] - offsets[rows[0]])
                reasons[int(rows[0])] = (
                    f"out of memory on this row alone ({tokens} tokens); lower model.max_tokens or use "
                    "long_inputs: chunk"
                    if oom
                    else f"model failed on this row: {type(err).__name__}: {err}"
                )
                log.warning("rejecting one row of %d tokens: %s", tokens, reasons[int(rows[0])])
                return
            if oom:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.max_tokens_per_batch = max(self.max_tokens_per_batch // 2, 1)
                log.warning(
                    "out of memory on a batch of %d rows; splitting it and lowering the batch budget to %d tokens",
                    len(rows),
                    self.max_tokens_per_batch,
                )
        half = len(rows) // 2
        self._encode_rows(values, offsets, rows[:half], pending, computed, reasons)
        self._encode_rows(values, offsets, rows[half:], pending, computed, reasons)

    def healthy(self) -> bool:
        """Whether the model still embeds a tiny input: tells a poison row from a broken device or model."""
        try:
            ids = np.asarray([[min(1, max(self.vocab_size - 1, 0))] * 2], dtype=np.int64)
            self.forward(ids, np.ones_like(ids, dtype=bool))
            return True
        except Exception:  # noqa: BLE001 - any failure here means the model is not usable
            return False

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(B, T) ids and mask -> (B, dim) float32 pooled, optionally normalized."""
        return self.forward_on_device(ids, mask).cpu().numpy()

    @torch.inference_mode()
    def forward_on_device(self, ids: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """Like `forward`, but the (B, dim) result stays on the device and nothing waits for it."""
        input_ids, attention_mask = self.to_device(ids), self.to_device(mask).long()  # (B, T) each
        kwargs = {"attention_mask": attention_mask} if self.mask_to_model else {}
        if self.no_kv_cache:
            kwargs["use_cache"] = False
        if self.left and self.causal:
            # Left padding shifts real tokens right; positions must count real tokens only, as in generation.
            kwargs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.run_model(input_ids=input_ids, **kwargs)
        return self.finish(pool(hidden, attention_mask, self.pooling, self.pool_skip))  # (B, H) float32

    def run_model(self, **inputs: torch.Tensor | bool) -> torch.Tensor:
        """The model's last hidden states. A compiled model that fails in torch.compile's own machinery (Dynamo,
        Inductor, a missing C++ compiler or Triton) is put back to eager with one warning, and the batch reruns."""
        try:
            return self.model(**inputs).last_hidden_state
        except Exception as err:
            # out of memory inside the compile (a GPU's autotuning, a big first batch) is split like any other
            if not (self.compiled and is_compile_error(err)) or is_out_of_memory(err):
                raise
            log.warning(
                "torch.compile failed on this model, which now runs uncompiled (set model.compile: false to skip "
                "the attempt): %s: %s",
                type(err).__name__,
                str(err).strip().splitlines()[0][:300] if str(err).strip() else "",
            )
            self.model, self.compiled = uncompiled(self.model), False
            return self.model(**inputs).last_hidden_state

    def finish(self, vectors: torch.Tensor) -> torch.Tensor:
        """Pooled (B, H) float32 -> (B, dim): the model's Dense modules, if any, then L2 normalization."""
        if self.head is not None:
            vectors = self.head(vectors)
        return l2_normalize(vectors) if self.normalize else vectors

    @torch.inference_mode()
    def forward_packed(self, values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """`rows` packed into one sequence without padding -> (B, dim) float32 on the device, in the order of `rows`."""
        ids, positions, starts, lengths = pack_rows(values, offsets, rows)  # (1, T), (1, T), (B,), (B,)
        # use_cache=False: transformers reads packed rows from position ids only when it builds no KV cache.
        inputs = {"input_ids": self.to_device(ids), "position_ids": self.to_device(positions), "use_cache": False}
        hidden = self.run_model(**inputs)  # (1, T, H)
        starts, lengths = self.to_device(starts), self.to_device(lengths)
        return self.finish(pool_packed(hidden[0], starts, lengths, self.pooling, self.pool_skip))  # (B, H)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """Host array -> device tensor; through pinned memory on CUDA so the copy is asynchronous."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)


def row_checks(values: np.ndarray, offsets: np.ndarray, vocab_size: int, pool_skip: int = 0) -> dict[int, str]:
    """Reasons for rows that must not reach the model: no tokens, no token left to pool once the prompt's
    `pool_skip` tokens are left out (sentence-transformers gives such a row a zero vector, which no cosine can
    use), or a token id outside the vocabulary (which on a GPU is a device-side assert that poisons the whole
    process, not an exception on one row)."""
    lengths = np.diff(offsets)
    reasons = {int(i): "row has no tokens" for i in np.flatnonzero(lengths <= 0)}
    for i in np.flatnonzero((lengths > 0) & (lengths <= pool_skip)):
        reasons[int(i)] = (
            f"no token left to pool: the model's Pooling leaves out the prompt's {pool_skip} tokens "
            f"(include_prompt false) and the row has {int(lengths[i])}; the text merged into the prompt's last "
            "token (a prompt ending in a space, on a BPE tokenizer) or was cut at model.max_tokens"
        )
    nonempty = np.flatnonzero(lengths > 0)
    if vocab_size and len(nonempty):
        highest = np.maximum.reduceat(values, offsets[nonempty])
        lowest = np.minimum.reduceat(values, offsets[nonempty])
        for i in nonempty[(highest >= vocab_size) | (lowest < 0)]:
            row = values[offsets[i] : offsets[i + 1]]
            bad = row[(row >= vocab_size) | (row < 0)][0]
            reasons[int(i)] = f"token id {int(bad)} is outside the model's vocabulary ({vocab_size} ids)"
    return reasons


@torch.inference_mode()
def embeddable_pad_id(model: torch.nn.Module, pad_token_id: int) -> int:
    """`pad_token_id`, or, where the model's input embeddings have no row for it, an id they have.

    A pad token added to a tokenizer without resizing the model's embeddings (`tokenizer.add_special_tokens(
    {"pad_token": "[PAD]"})` on a decoder that has none: id = the vocabulary size) made every padded batch, the load
    probes first, fail with 'IndexError: index out of range in self' (sentence-transformers fails so too). Padded
    positions are masked out (or, on a causal model padded on the right, come after every real token), so the id
    written there does not change the vectors: the config's pad_token_id where the embeddings have it, else 0, with
    one warning.
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if not isinstance(rows, int) or 0 <= pad_token_id < rows:
        return pad_token_id
    configured = getattr(text_config(model.config), "pad_token_id", None)
    substitute = configured if isinstance(configured, int) and 0 <= configured < rows else 0
    log.warning(
        "the tokenizer's pad token id %d has no row in the model's %d input embeddings (a pad token added to the "
        "tokenizer without resizing the model's embeddings?): padded positions get id %d instead; they are masked "
        "out, so the vectors are those of each text alone",
        pad_token_id,
        rows,
        substitute,
    )
    return substitute


def padding_probe(encoder: Encoder, left: bool) -> float:
    """Cosine between a short text embedded alone and the same text padded next to a longer one on `left`/right.

    The probe rows are arbitrary token ids other than the pad id; the result is the lowest of the two rows' cosines.
    """
    vocab = max(encoder.vocab_size, 16)
    pool_ids = [i for i in range(3, 3 + 16) if i % vocab != encoder.pad_token_id]
    rows = [np.asarray(pool_ids[:3]) % vocab, np.asarray(pool_ids[:14])[::-1] % vocab]
    values = np.concatenate(rows).astype(np.int64)
    offsets = np.asarray([0, len(rows[0]), len(values)])
    saved = encoder.left, encoder.mask_to_model, encoder.pool_skip
    try:  # the probe rows are short: all their tokens are pooled, whatever the prompt would skip
        encoder.left, encoder.mask_to_model, encoder.pool_skip = left, left or not encoder.causal, 0
        ids, mask = pad_batch(values, offsets, np.asarray([0, 1]), encoder.pad_token_id, left)
        batched = encoder.forward(ids, mask)
        alone = [encoder.forward(r[None, :].astype(np.int64), np.ones((1, len(r)), dtype=bool))[0] for r in rows]
    finally:
        encoder.left, encoder.mask_to_model, encoder.pool_skip = saved
    cosines = [float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)) for a, b in zip(alone, batched)]
    return min(cosines)
