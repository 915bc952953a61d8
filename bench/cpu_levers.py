"""What is left to gain in the e5-small forward pass on CPU: attention kernels and torch.compile. Wall clock.

    python -m bench.cpu_levers --out bench/results/cpu_levers.md

Part 1: scaled-dot-product attention at e5-small's head layout (12 heads x 32 dims) for the padded batch shapes the
job runs (rows x tokens at a 16,384-token budget), each timed as SDPA's default CPU kernel (flash attention for CPU)
and the math kernel, with the (B, 1, L, L) boolean mask transformers passes for a padded batch and without a mask
(a batch with no padding), in float32 and bfloat16; GFLOP/s counts 4·B·H·L²·d. Part 2: one e5-small forward pass at
those shapes, eager against `torch.compile(model, dynamic=True)` (what `model.compile: true` does), best of 3 each,
alternating; the compile's cold seconds are measured in a fresh inductor cache and its warm seconds in a second
process over the same cache. Both sides at the same dtype, same threads (torch's default: all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / ".models" / "multilingual-e5-small"
SHAPES = [(128, 128), (32, 512)]  # (rows, tokens): short rows and the longest, at the 16,384-token budget
HEADS, HEAD_DIM = 12, 32
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def best_of(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.inference_mode()
def attention_kernels() -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    out = []
    for dtype_name, dtype in DTYPES.items():
        for rows, length in SHAPES:
            q, k, v = (torch.randn(rows, HEADS, length, HEAD_DIM, dtype=dtype) for _ in range(3))
            mask = torch.ones(rows, 1, length, length, dtype=torch.bool)
            mask[:, :, :, -3:] = False  # three padded positions per row
            flops = 4 * rows * HEADS * length * length * HEAD_DIM
            for backend_name, backend in (("flash (default)", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
                for mask_name, m in (("padded (bool mask)", mask), ("no padding (no mask)", None)):
                    with sdpa_kernel(backend):
                        seconds = best_of(lambda: sdpa(q, k, v, attn_mask=m))  # noqa: B023 - called at once
                    out.append(
                        {
                            "dtype": dtype_name,
                            "shape": f"{rows} x {length}",
                            "kernel": backend_name,
                            "mask": mask_name,
                            "ms": round(seconds * 1e3, 2),
                            "gflops": round(flops / seconds / 1e9, 1),
                        }
                    )
    return out


def compile_child(dtype_name: str) -> dict:
    """In this process: load e5-small, time the compile (first call), then eager vs compiled per shape."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(MODEL, dtype=DTYPES[dtype_name], attn_implementation="sdpa").eval()
    compiled = torch.compile(model, dynamic=True)

    def batch(rows: int, length: int) -> dict:
        mask = torch.ones(rows, length, dtype=torch.long)
        mask[:, -3:] = 0
        return {"input_ids": torch.randint(5, 1000, (rows, length)), "attention_mask": mask}

    with torch.inference_mode():
        start = time.perf_counter()
        compiled(**batch(64, 100))
        compile_seconds = time.perf_counter() - start
        shapes = []
        for rows, length in SHAPES:
            inputs = batch(rows, length)
            eager, comp = [], []
            for _ in range(3):  # alternating, so drift hits both sides
                eager.append(best_of(lambda: model(**inputs), 1))  # noqa: B023
                comp.append(best_of(lambda: compiled(**inputs), 1))  # noqa: B023
            shapes.append(
                {
                    "shape": f"{rows} x {length}",
                    "eager_s": round(min(eager), 3),
                    "compiled_s": round(min(comp), 3),
                    "speedup": round(min(eager) / min(comp), 3),
                }
            )
    return {"dtype": dtype_name, "first_call_s": round(compile_seconds, 2), "shapes": shapes}


def compile_runs(dtype_name: str) -> dict:
    """Cold (fresh inductor cache) then warm (same cache), each in its own process."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        runs = []
        for _ in ("cold", "warm"):
            cmd = [sys.executable, "-m", "bench.cpu_levers", "--child", dtype_name]
            done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    return {**cold, "warm_first_call_s": warm["first_call_s"], "warm_shapes": warm["shapes"]}


def render(attention: list[dict], compiled: list[dict], machine: str) -> str:
    lines = [
        "# What is left in the e5-small forward pass on CPU: attention kernels and torch.compile",
        "",
        f"`python -m bench.cpu_levers --out bench/results/cpu_levers.md`; {machine}; wall clock, best of 3.",
        "",
        "| dtype | batch (rows x tokens) | SDPA kernel | mask | ms (12 heads, one layer) | GFLOP/s |",
        "|---|---|---|---|---:|---:|",
    ]
    lines += [
        f"| {a['dtype']} | {a['shape']} | {a['kernel']} | {a['mask']} | {a['ms']} | {a['gflops']} |" for a in attention
    ]
    lines += [
        "",
        (
            "| dtype | compile: first call, cold cache s | first call, warm cache s | batch | eager s | compiled s | "
            "speedup (cold run) | speedup (warm run) |"
        ),
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in compiled:
        for cold, warm in zip(c["shapes"], c["warm_shapes"]):
            lines.append(
                f"| {c['dtype']} | {c['first_call_s']} | {c['warm_first_call_s']} | {cold['shape']} | "
                f"{cold['eager_s']} | {cold['compiled_s']} | {cold['speedup']} | {warm['speedup']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu_levers.md")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(compile_child(args.child)))
        return {}
    import platform

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    attention = attention_kernels()
    compiled = [compile_runs(name) for name in args.dtypes.split(",")]
    result = {"machine": machine, "attention": attention, "compile": compiled}
    args.out.write_text(render(attention, compiled, machine))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(args.out.read_text())
    return result


if __name__ == "__main__":
    main()
