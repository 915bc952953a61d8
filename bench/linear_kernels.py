"""Is the e5-small model stage bound by its matmuls, and does another fp32 linear kernel go faster? Wall clock.

    python -m bench.linear_kernels --out bench/results/linear_kernels.md

Part 1: one forward pass of multilingual-e5-small over a (80 x 100)-token padded batch (the size of the job's CPU
batches), torch.profiler's share of self CPU time per op. Part 2: the three linear shapes of that model at 8,192 tokens,
each timed as torch's default `F.linear` (MKL addmm in float32), a bias-free matmul (no bias copy), oneDNN's
`MkldnnLinear` (`torch.utils.mkldnn`, prepacked weights), and `F.linear` in bfloat16, all in one run, same threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(384, 1536), (1536, 384), (384, 384)]  # (in, out) of e5-small's intermediate, output and attention linears


def timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


@torch.inference_mode()
def kernels(tokens: int, repeats: int) -> list[dict]:
    from torch.utils import mkldnn

    out = []
    for fan_in, fan_out in SHAPES:
        x = torch.randn(tokens, fan_in)
        lin = torch.nn.Linear(fan_in, fan_out).eval()
        onednn = mkldnn.to_mkldnn(torch.nn.Sequential(lin))[0]
        xb, wb, bb = x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16()
        flops = 2 * tokens * fan_in * fan_out
        runs = {
            "F.linear fp32 (addmm)": partial(torch.nn.functional.linear, x, lin.weight, lin.bias),
            "matmul fp32, no bias": partial(torch.matmul, x, lin.weight.t()),
            "MkldnnLinear fp32": partial(onednn, x),
            "F.linear bf16": partial(torch.nn.functional.linear, xb, wb, bb),
        }
        for name, fn in runs.items():
            s = timed(fn, repeats)
            out.append(
                {"shape": f"{tokens}x{fan_in} -> {fan_out}", "kernel": name, "ms": s * 1e3, "gflops": flops / s / 1e9}
            )
    return out


@torch.inference_mode()
def op_shares(model_dir: Path) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="sdpa").eval()
    ids = torch.randint(5, 1000, (80, 100))
    mask = torch.ones_like(ids)
    mask[:, 95:] = 0
    for _ in range(2):
        model(input_ids=ids, attention_mask=mask)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            model(input_ids=ids, attention_mask=mask)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [(e.key, e.self_cpu_time_total / total) for e in events[:6]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / ".models" / "multilingual-e5-small")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = f"`python -m bench.linear_kernels {' '.join(argv or sys.argv[1:])}`"
    lines = [f"{command}; torch {torch.__version__}, {args.threads} threads, wall clock.", ""]
    if args.model.is_dir():
        lines += ["| op (e5-small forward, 80 x 100 tokens) | share of self CPU time |", "|---|---:|"]
        lines += [f"| {name} | {100 * share:.1f} % |" for name, share in op_shares(args.model)]
        lines.append("")
    lines += ["| linear | kernel | ms | GFLOP/s |", "|---|---|---:|---:|"]
    lines += [
        f"| {r['shape']} | {r['kernel']} | {r['ms']:.2f} | {r['gflops']:.1f} |"
        for r in kernels(args.tokens, args.repeats)
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text("# Linear kernels and op shares, e5-small on CPU\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
