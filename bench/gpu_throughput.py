"""GPU throughput of harrier-oss-v1-270m's exact shape: our Encoder against sentence-transformers, one process.

    bash bench/gpu.sh                  # an H200-class GPU: full size, a few minutes
    bash bench/gpu.sh --docs 16        # anything else is passed through; without a GPU it runs tiny on CPU

Ours (`ours`): the Encoder as the pipeline ships it: bfloat16, FlashAttention-2 when the `flash_attn` package is
importable, with every batch's rows packed end to end (pipeline/packing.py: padding-free varlen attention, nothing
padded is computed; lever `ours_padded` turns it off), else PyTorch SDPA with no attention mask (a causal model
padded on the right needs none), on a GPU the repeated blocks compiled with torch.compile (`model.compile: auto`,
pipeline/compiling.py; lever `ours_eager` turns it off), length-bucketed token-budget batches with the GPU's batch
floor, pinned host memory with non-blocking host->device copies and one device->host copy per block. Baselines:
sentence-transformers `encode` at its defaults (batch_size 32, length-sorted) in float32 and in bfloat16. Then one
lever at a time (VARIANTS). MFU is against the bf16 matmul peak measured in this run. Needs only torch,
transformers, tokenizers and sentence-transformers (no Ray, no pydantic), which is what the GPU machine has.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoTokenizer

from bench.baselines import load_sentence_transformer, run_sentence_transformers, st_padding_efficiency
from bench.corpus import DATA, build_corpus
from bench.flops import forward_flops, matmul_peak, model_shape
from bench.harrier_shape import build_harrier_shape
from bench.stage import run_stage
from pipeline.batching import MIN_FILL_DIVISOR
from pipeline.compiling import compile_model, wants_compile
from pipeline.encoder import Encoder


def pick_attention(device: str, requested: str) -> str:
    if requested != "auto":
        return requested
    has_flash = device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if has_flash else "sdpa"


def tokenize(tokenizer, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray, float]:
    start = time.perf_counter()
    rows = tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    seconds = time.perf_counter() - start
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum()))
    return values, np.concatenate([[0], np.cumsum(lengths)]), seconds


# Our encoder's variants, in the order they run: the pipeline as shipped first, then one lever switched off or on at
# a time, so each ratio to "ours" is what that lever buys. As shipped, `model.compile: auto` compiles the repeated
# blocks on a GPU (pipeline/compiling.py) and not on a CPU; the whole-model compile goes last: it is the slowest to set
# up.
VARIANTS = {
    "ours": {},
    "ours_eager": {"compile": False},  # lever off: no torch.compile (the default on a CPU)
    # lever off: padded batches instead of padding-free packed ones (only differs under flash_attention_2)
    "ours_padded": {"packed": False},
    "ours_mask_to_model": {"packed": False, "mask_to_model": True},  # lever off: the padding mask goes into attention
    "ours_kv_cache": {"packed": False, "kv_cache": True},  # lever off: transformers builds its KV cache every pass
    "ours_small_batches": {"min_batch_tokens_divisor": MIN_FILL_DIVISOR},  # lever off: the CPU's bucket floor
    # extra: SDPA without its cuDNN backend (PyTorch's own FlashAttention-2 kernel instead). cuDNN attention builds a
    # plan for every new (batch, length) shape, which the cold pass ("first_pass_seconds") pays for.
    "ours_no_cudnn_attention": {"sdpa_without_cudnn": True},
    "ours_compiled": {"compile": "regional"},  # extra: the regional compile forced (on a CPU, where auto is off)
    "ours_compiled_whole": {"compile": "whole"},  # extra: torch.compile(dynamic=True) of the whole model at once
}


def profile_pass(encoder: Encoder, values: np.ndarray, offsets: np.ndarray, rows_per_block: int, sync) -> dict:
    """One pass of `run_stage` under torch.profiler: wall seconds, device-busy seconds (kernel time summed) and the
    operators that take the most device time and the most host time, to say whether the host or the kernels bound it."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        wall = run_stage(encoder, values, offsets, rows_per_block, sync)[0]
    events = prof.key_averages()

    def device_us(e) -> float:
        return getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0) or 0

    def top(key, n=15) -> list:
        rows = sorted(events, key=key, reverse=True)[:n]
        return [
            [e.key[:90], e.count, round(device_us(e) / 1e3, 1), round(e.self_cpu_time_total / 1e3, 1)] for e in rows
        ]

    return {
        "wall_s": round(wall, 3),
        # kernels only: an operator's self device time is its kernels' time again
        "device_busy_s": round(sum(device_us(e) for e in events if e.device_type != DeviceType.CPU) / 1e6, 3),
        "host_self_s": round(sum(e.self_cpu_time_total for e in events) / 1e6, 3),
        "columns": ["op", "calls", "device_ms", "host_self_ms"],
        "top_device": top(device_us),
        "top_host": top(lambda e: e.self_cpu_time_total),
    }


def sdpa_backends(without_cudnn: bool):
    """A context in which SDPA may use every backend but cuDNN's (`without_cudnn`), else one that changes nothing."""
    if not without_cudnn:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class Run:
    """The results dict, written to --out after every step so that a run stopped by a time limit keeps its figures."""

    def __init__(self, out: Path | None, results: dict):
        self.out, self.results, self.t0 = out, results, time.perf_counter()

    def save(self, name: str, value) -> None:
        self.results[name] = value
        self.results["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        print(f"[{self.results['elapsed_s']:7.1f} s] {name}: {json.dumps(value)}", flush=True)
        if self.out:
            self.out.write_text(json.dumps(self.results, indent=2))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--docs", type=int, default=None, help="corpus documents (default: 20000 on GPU, 16 on CPU)")
    p.add_argument("--layers", type=int, default=None, help="model layers (default: 18 = harrier's on GPU, 2 on CPU)")
    p.add_argument("--max-tokens", type=int, default=None, help="default: 4096 on GPU, 256 on CPU")
    p.add_argument("--budget", type=int, default=None, help="max_tokens_per_batch (default: 65536 GPU, 2048 CPU)")
    p.add_argument("--max-batch-size", type=int, default=1024)
    p.add_argument("--rows-per-block", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per variant of ours (the best is reported)")
    p.add_argument("--attn", default="auto", choices=["auto", "sdpa", "flash_attention_2", "eager"])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--skip-st-fp32", action="store_true", help="skip the float32 sentence-transformers baseline")
    p.add_argument("--skip-st", action="store_true", help="skip both sentence-transformers baselines")
    p.add_argument("--profile", action="store_true", help="after 'ours', one pass of it under torch.profiler")
    p.add_argument("--model-dir", type=Path, default=None, help="where to build/reuse the harrier-shape model")
    p.add_argument("--out", type=Path, default=None, help="write the JSON result here (rewritten after every step)")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    docs = args.docs or (20_000 if gpu else 16)
    layers = args.layers or (18 if gpu else 2)
    max_tokens = args.max_tokens or (4096 if gpu else 256)
    budget = args.budget or (65_536 if gpu else 2048)
    torch.manual_seed(0)
    run = Run(
        args.out,
        {
            "device": torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "docs": docs,
            "layers": layers,
            "max_tokens": max_tokens,
            "budget": budget,
        },
    )

    corpus = build_corpus(docs, seed=0, data=DATA)
    model_dir = args.model_dir or Path(tempfile.gettempdir()) / f"rayembed-harrier-shape-{layers}l"
    build_harrier_shape(model_dir, layers=layers)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    values, offsets, tok_seconds = tokenize(tokenizer, corpus.texts, max_tokens)
    lengths = np.diff(offsets)
    tokens, shape = int(lengths.sum()), model_shape(str(model_dir))
    flops, matmul_flops = forward_flops(shape, lengths), forward_flops(shape, lengths, attention=False)
    run.save(
        "corpus",
        {
            "source": corpus.source,
            "tokens": tokens,
            "length_p50_p90_p99_max": [int(np.percentile(lengths, q)) for q in (50, 90, 99)] + [int(lengths.max())],
            "tokenize_seconds": round(tok_seconds, 2),
            "attention_share_of_flops": round(1 - matmul_flops / flops, 4),
        },
    )
    peak = matmul_peak(torch.bfloat16, args.device, n=8192 if gpu else 1024, repeats=10 if gpu else 4)[0]
    run.save("bf16_matmul_peak_tflops", round(peak / 1e12, 2))
    attn = pick_attention(args.device, args.attn)
    run.save("attention", attn)

    def figures(seconds: float, computed: int) -> dict:
        return {
            "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds),
            "mfu": round(flops / seconds / peak, 4),
            "mfu_matmul_only": round(matmul_flops / seconds / peak, 4),
            "padding_efficiency": round(tokens / computed, 4),
        }

    sync = torch.cuda.synchronize if gpu else (lambda: None)
    reference = None  # "ours" embeddings, for the cosine of every other variant

    def measure_ours(name: str) -> None:
        nonlocal reference
        options = VARIANTS[name]
        encoder = model = None
        if gpu:
            torch.cuda.reset_peak_memory_stats()  # the baselines before this variant must not count in its peak
        try:
            model = AutoModel.from_pretrained(str(model_dir), dtype=torch.bfloat16, attn_implementation=attn)
            model = model.to(args.device).eval()
            compile_started = time.perf_counter()
            divisor = options.get("min_batch_tokens_divisor")
            encoder = Encoder(
                model,
                "last_token",
                True,
                tokenizer.pad_token_id,
                "right",
                budget,
                args.max_batch_size,
                budget // divisor if divisor else None,  # None: the pipeline's default for this device
                packed=options.get("packed"),  # None: the pipeline's default (packed under flash_attention_2)
            )
            # as Encoder(compile=...) does it, after the load-time probes; or the whole model at once
            compile = options.get("compile", "regional" if wants_compile("auto", torch.device(args.device)) else False)
            if compile:
                encoder.model = compile_model(encoder.model, regional=compile == "regional")
            if "mask_to_model" in options:
                encoder.mask_to_model = options["mask_to_model"]
            if "kv_cache" in options:
                encoder.no_kv_cache = not options["kv_cache"]
            with sdpa_backends(options.get("sdpa_without_cudnn", False)):
                warm_start = time.perf_counter()
                run_stage(encoder, values, offsets[: min(1025, len(offsets))], args.rows_per_block, sync)
                warm_s = time.perf_counter() - warm_start
                set_up_s = time.perf_counter() - compile_started  # probes, and with a compile: mostly the compile
                passes = [run_stage(encoder, values, offsets, args.rows_per_block, sync) for _ in range(args.repeats)]
            seconds, _, encoded = min(passes, key=lambda r: r[0])
            result = figures(seconds, int(encoded.computed_tokens.sum()))
            result.update(
                all_seconds=[round(r[0], 3) for r in passes],
                first_pass_seconds=round(passes[0][0], 3),  # cold: the shapes this variant has not seen yet
                warm_up_seconds=round(warm_s, 2),
                set_up_seconds=round(set_up_s, 2),
                compiled=compile or False,
                mask_to_model=encoder.mask_to_model,
                packed=encoder.packed,
                min_batch_tokens=encoder.batch_floor(),
            )
            if reference is None:
                reference = encoded.embeddings
            if args.profile and name == "ours":
                run.save("profile_ours", profile_pass(encoder, values, offsets, args.rows_per_block, sync))
            result["cosine_vs_ours_min"] = float(np.sum(encoded.embeddings * reference, axis=1).min())
            if gpu:
                result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            run.save(name, result)
        except Exception as err:  # noqa: BLE001 -- one variant failing (a compile error, say) must not lose the others' figures
            run.save(name, {"error": f"{type(err).__name__}: {err}"[:2000]})
        finally:
            del encoder, model
            if gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()

    def measure_sentence_transformers(name: str) -> None:
        dtype = {"st_bf16": torch.bfloat16, "st_fp32": torch.float32}[name]
        st = load_sentence_transformer(str(model_dir), "last_token", max_tokens, args.device, dtype)
        run_sentence_transformers(st, corpus.texts[:64])  # warm-up
        sync()
        seconds, _, st_vec = run_sentence_transformers(st, corpus.texts)
        result = figures(seconds, round(tokens / st_padding_efficiency(corpus.texts, lengths)))
        if reference is not None:
            cos = np.sum(st_vec * reference, axis=1)
            result.update(cosine_vs_ours_min=float(cos.min()), cosine_vs_ours_mean=float(cos.mean()))
            result["ours_speedup"] = round(seconds / run.results["ours"]["seconds"], 2)
        run.save(name, result)
        del st
        if gpu:
            torch.cuda.empty_cache()

    # The bf16 baseline runs right after "ours" (it needs its embeddings for the cosine), before the lever variants.
    # The float32 baseline comes last: it is the slowest step and not the same-dtype comparison.
    plan = [v for v in VARIANTS if v in args.variants.split(",")]
    if plan[:1] == ["ours"] and not args.skip_st:
        plan[1:1] = ["st_bf16"]
        if not args.skip_st_fp32:
            plan.append("st_fp32")
    for name in plan:
        (measure_sentence_transformers if name.startswith("st_") else measure_ours)(name)

    o = run.results.get("ours", {})
    if "tokens_per_s" in o:
        print(
            f"ours: {o['tokens_per_s']:.0f} tokens/s, MFU {100 * o['mfu']:.1f} % of {peak / 1e12:.1f} TFLOP/s bf16 "
            f"({100 * o['mfu_matmul_only']:.1f} % counting matmuls only), padding efficiency "
            f"{o['padding_efficiency']:.3f}, attention {attn}"
        )
        for name in ("st_bf16", "st_fp32", *VARIANTS):
            r = run.results.get(name, {})
            if name != "ours" and "seconds" in r:
                print(f"ours / {name}: {r['seconds'] / o['seconds']:.2f}")
    return run.results


if __name__ == "__main__":
    sys.exit(main() and 0)
