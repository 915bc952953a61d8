"""Thin Ray Data UDF classes: `__init__` loads once, `__call__(block) -> block` runs the pure code.

Blocks are pyarrow tables carrying the columns of pipeline.reading plus, after tokenization, `_tokens`
(list<int32>) and chunk columns; rejected rows (`_reject` set) pass through untouched so they can be counted.

torch and transformers are imported in the constructors, in the actor processes: the driver, which only hands these
classes to Ray Data, then starts without them (seconds of start-up on the critical path before Ray even starts).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.actor_start import defer_start_errors, raise_start_failure
from pipeline.columns import (
    COMPUTED,
    EMBED_ACTOR,
    EMBED_ACTOR_STARTED,
    EMBED_SECONDS,
    EMBEDDING,
    RECOMPUTED,
    REJECT,
    TEXT,
    TOKEN_COUNT,
    TOKENIZED_AT,
    TOKENS,
    TRUNCATED,
)
from pipeline.config import BatchingConfig, ModelConfig
from pipeline.model_defaults import resolve_pooling
from pipeline.model_files import ModelFiles
from pipeline.model_loading import TokenizerPadding
from pipeline.quantization import OutputPrecision
from pipeline.stages import ModelThreads, node_cpus


class TokenizeActor:
    """CPU stage: text -> token ids (one row per chunk in chunk mode); a row the tokenizer cannot serve is a reject."""

    @defer_start_errors  # a tokenizer that cannot load fails the job at its first block, not after restarts
    def __init__(self, model: ModelConfig, prompt: str, tokenizer=None, snapshot=None):
        """`snapshot`: the driver's pipeline.tokenizer_snapshot.TokenizerSnapshot of `model`'s tokenizer, rebuilt
        here; `tokenizer`: the driver's, as loaded for `model` (pipeline.model_loading.ModelSettings); neither (or a
        snapshot that does not reproduce the original): load it."""
        from pipeline.model_loading import declared_add_bos, declared_add_eos, load_tokenizer
        from pipeline.tokenization import TextTokenizer, bos_convention, eos_convention

        tokenizer = tokenizer or (snapshot.load() if snapshot is not None else None) or load_tokenizer(model)
        self.tokenizer = TextTokenizer(
            tokenizer,
            prompt,
            model.max_tokens,
            model.long_inputs,
            model.chunk_overlap_tokens,
            append_eos=eos_convention(tokenizer, declared_add_eos(model)).append,
            prepend_bos=bos_convention(tokenizer, declared_add_bos(model)).append,
        )

    def __call__(self, block: pa.Table) -> pa.Table:
        raise_start_failure(self)
        good = pc.is_null(block.column(REJECT)).to_numpy(zero_copy_only=False).astype(bool)
        good_rows = np.flatnonzero(good)
        texts = block.column(TEXT).take(good_rows).to_pylist()
        rows = self.tokenizer.tokenize(texts)
        truncated = self.truncated(texts, rows)
        bad_rows = np.flatnonzero(~good)
        parent = np.concatenate([good_rows[np.asarray(rows.parent, dtype=np.int64)], bad_rows]).astype(np.int64)
        token_ids = rows.token_ids + [[] for _ in bad_rows]
        zeros = [0] * len(bad_rows)
        # The text is spent once tokenized; taking it once per chunk would copy a long text as often as it has chunks
        # (a 5 MB row in 3000 chunks overflows Arrow's 2 GB string array).
        out = block.drop_columns([TEXT]).take(pa.array(parent, pa.int64()))
        out = out.append_column("chunk_index", pa.array(rows.chunk_index + zeros, pa.int32()))
        out = out.append_column("char_start", pa.array(rows.char_start + zeros, pa.int64()))
        out = out.append_column("char_end", pa.array(rows.char_end + zeros, pa.int64()))
        out = out.append_column(TOKENS, pa.array(token_ids, pa.list_(pa.int32())))
        out = out.append_column(TRUNCATED, pa.array(np.concatenate([truncated, np.zeros(len(bad_rows), bool)])))
        new_reasons = pa.array(rows.reason + [None] * len(bad_rows), pa.string())
        reasons = pc.coalesce(out.column(REJECT), new_reasons)
        empty = pc.and_(pc.is_null(reasons), pc.equal(pc.list_value_length(out.column(TOKENS)), 0))
        reasons = pc.if_else(empty, pa.scalar("text produced no tokens"), reasons)
        out = out.set_column(out.schema.get_field_index(REJECT), REJECT, reasons)
        return out.append_column(TOKENIZED_AT, pa.array(np.full(out.num_rows, time.time())))

    def truncated(self, texts: list[str], rows) -> np.ndarray:
        """(rows,) bool: cut at max_tokens (truncate mode; chunk mode never cuts), as the tokenizer saw it."""
        return np.asarray(rows.truncated, dtype=bool)


class EmbedActor:
    """Model stage: one model per actor; token-budget batches over the whole block."""

    @defer_start_errors  # a model that cannot load (pipeline.actor_start) fails the job once, not per restart
    def __init__(
        self,
        model: ModelConfig,
        batching: BatchingConfig,
        threads: ModelThreads | float,
        out_dtype: str = "float32",
        output: OutputPrecision | None = None,
        padding: TokenizerPadding | None = None,
        pool_skip: int = 0,
        model_files: ModelFiles | None = None,
    ):
        """`padding`: the tokenizer's pad id and side as the driver resolved them (None: load the tokenizer here).
        `pool_skip`: leading tokens of each row left out of pooling (pipeline.model_loading.pooling_skip).
        `model_files`: a local model directory's files as the driver hashed them for the run's fingerprint; checked
        once the model is loaded (ModelChangedError, pipeline.model_files)."""
        self.started = time.time()  # before torch's import and the model's load: the summary's start-up timings
        import torch

        from pipeline.compiling import wants_compile
        from pipeline.encoder import Encoder
        from pipeline.model_loading import load_model, load_tokenizer, pick_device
        from pipeline.st_head import load_head

        if not isinstance(threads, ModelThreads):  # a plain number pins the threads (the former `cpus` argument)
            threads = ModelThreads(max(1, int(threads)), threads, 1)
        self.threads = threads.resolve(node_cpus())
        torch.set_num_threads(self.threads)
        padding = padding or TokenizerPadding.of(load_tokenizer(model))
        device = pick_device()
        self.encoder = Encoder(
            load_model(model, device),
            pooling=resolve_pooling(model).pooling,  # the driver resolved 'auto' already; kept for direct use
            normalize=model.normalize,
            pad_token_id=padding.pad_token_id,
            padding_side=padding.padding_side,
            max_tokens_per_batch=batching.max_tokens_per_batch,
            max_batch_size=batching.max_batch_size,
            min_batch_tokens=batching.min_batch_tokens,
            head=load_head(model),  # the model's sentence-transformers Dense modules, if any
            pool_skip=pool_skip,
            compile=wants_compile(model.compile, device),
        )
        if model_files is not None:  # the weights just loaded are the ones the run's fingerprint names
            model_files.check(f"an embedding actor on {socket.gethostname()}")
        # dimensions kept and stored precision (pipeline.quantization); int8/uint8 come calibrated from the driver
        self.output = output or OutputPrecision(out_dtype, normalize=model.normalize)
        self.actor = actor_name()
        self.rows_per_block = batching.rows_per_block

    def __call__(self, block: pa.Table) -> pa.Table | Iterator[pa.Table]:
        """`block` embedded; a block of more than batching.rows_per_block rows (a whole share of a small corpus,
        pipeline.spreading) that many rows at a time, each part a table of its own (a generator of them)."""
        raise_start_failure(self)
        step = self.rows_per_block
        if block.num_rows <= step:
            return self.embed(block)
        return (self.embed(block.slice(start, step)) for start in range(0, block.num_rows, step))

    def embed(self, block: pa.Table) -> pa.Table:
        """The rows of `block` embedded in token-budget batches, sorted by length across the whole block."""
        good = pc.is_null(block.column(REJECT)).to_numpy(zero_copy_only=False).astype(bool)
        tokens = block.column(TOKENS).combine_chunks().filter(pa.array(good, pa.bool_()))
        lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
        start = time.perf_counter()
        encoded = self.encoder.encode(values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        seconds = time.perf_counter() - start
        good_rows = np.flatnonzero(good)
        n, dim = len(good), self.encoder.dim
        reasons = block.column(REJECT).to_pylist()
        for i, reason in encoded.reasons.items():  # rows the model could not embed become rejects; the rest go on
            reasons[good_rows[i]] = reason
        embedded = good.copy()
        embedded[good_rows[list(encoded.reasons)]] = False
        vectors = np.zeros((n, dim), dtype=np.float32)
        vectors[good] = encoded.embeddings
        computed, counts, recomputed = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, bool)
        computed[good], counts[good], recomputed[good] = encoded.computed_tokens, lengths, encoded.recomputed
        computed[~embedded], counts[~embedded] = 0, 0
        embedding = self.output.to_arrow(vectors, null=~embedded)
        out = block.drop_columns([TOKENS])
        out = out.set_column(out.schema.get_field_index(REJECT), REJECT, pa.array(reasons, pa.string()))
        out = out.append_column(EMBEDDING, embedding)
        out = out.append_column(TOKEN_COUNT, pa.array(counts))
        out = out.append_column(COMPUTED, pa.array(computed))
        out = out.append_column(RECOMPUTED, pa.array(recomputed))
        share = np.where(embedded, seconds / max(int(embedded.sum()), 1), 0.0)
        out = out.append_column(EMBED_SECONDS, pa.array(share))
        out = out.append_column(EMBED_ACTOR, pa.array([self.actor] * n, pa.string()))
        return out.append_column(EMBED_ACTOR_STARTED, pa.array(np.full(n, self.started)))


def actor_name() -> str:
    """The Ray actor id of this process's actor, else `pid-<pid>` (the class used outside Ray)."""
    import ray

    actor = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
    return actor or f"pid-{os.getpid()}"
