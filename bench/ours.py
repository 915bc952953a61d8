"""Our side of the benchmark: (c) the embedding stage alone and (d) the whole job on local Ray.

(c) is exactly what EmbedActor runs per block (bench/stage.py: Encoder.encode over pre-tokenized rows,
`rows_per_block` rows at a time), so the stage number and the job number differ only by what the job adds (reading,
tokenizing, Ray, writing).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pipeline.compiling import wants_compile
from pipeline.config import EmbedConfig, ModelConfig
from pipeline.encoder import Encoder, pad_batch
from pipeline.model_loading import load_model, load_tokenizer
from pipeline.tokenization import TextTokenizer


def model_config(
    model_dir: str, pooling: str, max_tokens: int, dtype: str, attn: str = "sdpa", compile: bool = False
) -> ModelConfig:
    return ModelConfig(
        name_or_path=model_dir,
        pooling=pooling,
        max_tokens=max_tokens,
        dtype=dtype,
        attn_implementation=attn,
        compile=compile,
        prompt="",
    )


def tokenize(cfg: ModelConfig, texts: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """Flat token ids, row offsets (N + 1,) and the seconds it took: the tokenizer stage's work."""
    tokenizer = TextTokenizer(load_tokenizer(cfg), "", cfg.max_tokens, "truncate", cfg.chunk_overlap_tokens)
    start = time.perf_counter()
    rows = tokenizer.encode(texts)
    seconds = time.perf_counter() - start
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum()))
    return values, np.concatenate([[0], np.cumsum(lengths)]), seconds


def load_encoder(cfg: ModelConfig, max_tokens_per_batch: int, max_batch_size: int, device: str = "cpu") -> Encoder:
    tokenizer = load_tokenizer(cfg)
    return Encoder(
        load_model(cfg, torch.device(device)),
        pooling=cfg.pooling,
        normalize=True,
        pad_token_id=tokenizer.pad_token_id,
        padding_side=tokenizer.padding_side,
        max_tokens_per_batch=max_tokens_per_batch,
        max_batch_size=max_batch_size,
        compile=wants_compile(cfg.compile, torch.device(device)),  # as the model actors do (pipeline/actors.py)
    )


def run_fixed_batches(
    encoder: Encoder, values: np.ndarray, offsets: np.ndarray, batch_size: int
) -> tuple[float, float, int]:
    """The 'no sorting' lever baseline: consecutive fixed-size batches in corpus order, padded to their longest."""
    n = len(offsets) - 1
    computed = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for lo in range(0, n, batch_size):
        rows = np.arange(lo, min(lo + batch_size, n))
        ids, mask = pad_batch(values, offsets, rows, encoder.pad_token_id, encoder.left)
        encoder.forward(ids, mask)
        computed += ids.size
    return time.perf_counter() - start, time.process_time() - start_cpu, computed


def job_config(
    cfg: ModelConfig, corpus_dir: str, out_dir: str, max_tokens_per_batch: int, rows_per_block: int, threads: int
) -> EmbedConfig:
    return EmbedConfig.model_validate(
        {
            "input": {"uri": corpus_dir, "format": "jsonl"},
            "output": {"uri": out_dir, "overwrite": True},
            "model": cfg.model_dump(),
            "batching": {"max_tokens_per_batch": max_tokens_per_batch, "rows_per_block": rows_per_block},
            "compute": {"num_actors": 1, "cpus_per_actor": threads, "num_tokenizers": 1},
        }
    )
