"""Timing our embedding stage: Encoder.encode over consecutive blocks, exactly what EmbedActor runs per block.

Kept apart from bench/ours.py, which builds encoders through the pydantic configs, so that bench/gpu_throughput.py
can use it on the GPU machine (torch and transformers, no pydantic, no Ray).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from pipeline.encoder import EncodedRows, Encoder


def run_stage(
    encoder: Encoder,
    values: np.ndarray,
    offsets: np.ndarray,
    rows_per_block: int,
    sync: Callable[[], None] = lambda: None,
) -> tuple[float, float, EncodedRows]:
    """(c): Encoder.encode over consecutive blocks of `rows_per_block` rows, like EmbedActor.

    `sync` waits for the device (torch.cuda.synchronize on a GPU) at both ends of the timed region.
    Returns wall seconds, CPU seconds of this process and the encoded rows.
    """
    n = len(offsets) - 1
    vectors, computed = [], []
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    for lo in range(0, n, rows_per_block):
        hi = min(lo + rows_per_block, n)
        block = encoder.encode(values[offsets[lo] : offsets[hi]], offsets[lo : hi + 1] - offsets[lo])
        vectors.append(block.embeddings)
        computed.append(block.computed_tokens)
    sync()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return wall, cpu, EncodedRows(np.concatenate(vectors), np.concatenate(computed))
