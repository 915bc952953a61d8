"""Attention kernels on this CPU at multilingual-e5-small's layout (12 heads x 32): SDPA against attention written
out as matmul + softmax, bfloat16 and float32, wall clock, best of 5 after a warm-up, one layer's q, k, v.

    python -m bench.attention_kernels --out bench/results/attention_kernels.md

Variants: `sdpa` (torch.nn.functional.scaled_dot_product_attention, no mask: its CPU flash kernel), `matmul`
(q @ k^T * scale, softmax, @ v, all at the dtype), `matmul_fp32_softmax` (the softmax in float32), `baddbmm`
(scores by torch.baddbmm with the scale folded in, then softmax and bmm). GFLOP/s counts 4 * B * H * L^2 * D.
max err is against SDPA's output.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HEADS, HEAD_DIM = 12, 32
SHAPES = ((128, 128), (64, 256), (32, 512))  # rows x tokens


def best_seconds(fn, rounds: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def variants(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict:
    rows, heads, length, dim = q.shape
    scale = dim**-0.5

    def matmul():
        return torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, dim=-1), v)

    def matmul_fp32_softmax():
        scores = torch.matmul(q, k.transpose(-1, -2))
        return torch.matmul(torch.softmax(scores.float() * scale, dim=-1).to(q.dtype), v)

    def baddbmm():
        qq, kk, vv = (t.reshape(rows * heads, length, dim) for t in (q, k, v))
        empty = torch.empty(rows * heads, length, length, dtype=q.dtype)
        scores = torch.baddbmm(empty, qq, kk.transpose(1, 2), beta=0, alpha=scale)
        return torch.bmm(torch.softmax(scores, -1), vv).reshape(q.shape)

    return {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        "matmul": matmul,
        "matmul_fp32_softmax": matmul_fp32_softmax,
        "baddbmm": baddbmm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/attention_kernels.md"))
    args = parser.parse_args()
    torch.manual_seed(0)
    lines = [
        "# " + __doc__.splitlines()[0],
        "",
        (
            f"`python -m bench.attention_kernels`; {platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        ),
        "",
        "| dtype | rows x tokens | kernel | ms (one layer) | GFLOP/s | max err vs SDPA |",
        "|---|---|---|---:|---:|---:|",
    ]
    for dtype in (torch.bfloat16, torch.float32):
        for rows, length in SHAPES:
            q, k, v = (torch.randn(rows, HEADS, length, HEAD_DIM, dtype=dtype) for _ in range(3))
            flops = 4 * rows * HEADS * length * length * HEAD_DIM
            reference = F.scaled_dot_product_attention(q, k, v).float()
            for name, fn in variants(q, k, v).items():
                seconds = best_seconds(fn)
                err = (fn().float() - reference).abs().max().item()
                row = (
                    f"| {str(dtype).removeprefix('torch.')} | {rows} x {length} | {name} | {seconds * 1000:.1f} | "
                    f"{flops / seconds / 1e9:.1f} | {err:.1e} |"
                )
                print(row, flush=True)
                lines.append(row)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
