"""FLOP accounting and the measured matmul peak that MFU is quoted against.

MFU here = achieved FLOP/s / peak FLOP/s, with the achieved count taken from real (unpadded) tokens only, so padding
and wasted work lower it, and the peak measured in the same process, dtype and thread settings rather than read off
a datasheet (a shared 2-core VM is far from its nominal peak).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoConfig, AutoModel


@dataclass(frozen=True)
class ModelShape:
    non_embedding_params: int
    layers: int
    attention_width: int  # heads x head_dim: the width of Q.K^T and A.V per layer


def model_shape(model_dir: str) -> ModelShape:
    """Parameter count without the embedding tables, which cost a lookup, not a matmul."""
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    non_embedding = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return ModelShape(int(non_embedding), int(config.num_hidden_layers), int(heads * head_dim))


def forward_flops(shape: ModelShape, lengths: np.ndarray, attention: bool = True) -> float:
    """2 x params per token for the matmuls, plus 4 x layers x width x L^2 per row for Q.K^T and A.V.

    The attention term counts the full L x L square (PaLM's convention) even for causal models and sliding-window
    layers; `attention=False` leaves it out, for a figure that no attention convention can inflate.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    attention_flops = 4.0 * shape.layers * shape.attention_width * (lengths**2).sum() if attention else 0.0
    return float(2.0 * shape.non_embedding_params * lengths.sum() + attention_flops)


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 2048, repeats: int = 8) -> tuple[float, float]:
    """Best FLOP/s of an n x n x n matmul: the practical roofline of this device, dtype and thread count.

    Returns (FLOP per wall second, FLOP per CPU second of this process). The second is the one to use on a shared
    CPU machine: other tenants stretch wall time, not the CPU time our threads get.
    """
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return 2.0 * n**3 / best, 2.0 * n**3 / max(best_cpu, 1e-9)
