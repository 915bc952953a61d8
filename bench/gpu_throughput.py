"""GPU throughput of harrier-oss-v1-270m's exact shape: our Encoder against sentence-transformers, one process.

    bash bench/gpu.sh                  # an H200-class GPU: full size, a few minutes
    bash bench/gpu.sh --docs 16        # anything else is passed through; without a GPU it runs tiny on CPU

Ours: bfloat16, FlashAttention-2 when the `flash_attn` package is importable (transformers then unpads every batch,
so attention is padding-free varlen) else PyTorch SDPA, length-bucketed token-budget batches, pinned host memory
with non-blocking host->device copies and one device->host copy per block (pipeline.encoder). Baselines:
sentence-transformers `encode` at its defaults (float32, batch_size 32, length-sorted) and the same in bfloat16.
MFU is against the bf16 matmul peak measured in this run. Needs only torch, transformers, tokenizers and
sentence-transformers (no Ray, no pydantic), which is what the GPU machine has.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from bench.baselines import load_sentence_transformer, run_sentence_transformers, st_padding_efficiency
from bench.corpus import DATA, build_corpus
from bench.flops import forward_flops, matmul_peak, model_shape
from bench.harrier_shape import build_harrier_shape
from pipeline.encoder import Encoder


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pick_attention(device: str, requested: str) -> str:
    if requested != "auto":
        return requested
    has_flash = device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if has_flash else "sdpa"


def tokenize(model_dir: str, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray, float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    start = time.perf_counter()
    rows = tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    seconds = time.perf_counter() - start
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum()))
    return values, np.concatenate([[0], np.cumsum(lengths)]), seconds


def run_ours(encoder: Encoder, values: np.ndarray, offsets: np.ndarray, rows_per_block: int, device: str):
    """Seconds for Encoder.encode over consecutive blocks (what EmbedActor does), embeddings, computed tokens."""
    n = len(offsets) - 1
    vectors, computed = [], 0
    sync(device)
    start = time.perf_counter()
    for lo in range(0, n, rows_per_block):
        hi = min(lo + rows_per_block, n)
        block = encoder.encode(values[offsets[lo] : offsets[hi]], offsets[lo : hi + 1] - offsets[lo])
        vectors.append(block.embeddings)
        computed += int(block.computed_tokens.sum())
    sync(device)
    return time.perf_counter() - start, np.concatenate(vectors), computed


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--docs", type=int, default=None, help="corpus documents (default: 40000 on GPU, 16 on CPU)")
    p.add_argument("--layers", type=int, default=None, help="model layers (default: 18 = harrier's on GPU, 2 on CPU)")
    p.add_argument("--max-tokens", type=int, default=None, help="default: 4096 on GPU, 256 on CPU")
    p.add_argument("--budget", type=int, default=None, help="max_tokens_per_batch (default: 65536 GPU, 2048 CPU)")
    p.add_argument("--max-batch-size", type=int, default=1024)
    p.add_argument("--rows-per-block", type=int, default=16384)
    p.add_argument("--attn", default="auto", choices=["auto", "sdpa", "flash_attention_2", "eager"])
    p.add_argument("--skip-st-fp32", action="store_true", help="skip the float32 sentence-transformers baseline")
    p.add_argument("--model-dir", type=Path, default=None, help="where to build/reuse the harrier-shape model")
    p.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    docs = args.docs or (40_000 if gpu else 16)
    layers = args.layers or (18 if gpu else 2)
    max_tokens = args.max_tokens or (4096 if gpu else 256)
    budget = args.budget or (65_536 if gpu else 2048)
    torch.manual_seed(0)

    corpus = build_corpus(docs, seed=0, data=DATA)
    model_dir = args.model_dir or Path(tempfile.gettempdir()) / f"rayembed-harrier-shape-{layers}l"
    build_harrier_shape(model_dir, corpus.texts[:5000], layers=layers)
    values, offsets, tok_seconds = tokenize(str(model_dir), corpus.texts, max_tokens)
    lengths = np.diff(offsets)
    tokens, flops = int(lengths.sum()), forward_flops(model_shape(str(model_dir)), lengths)
    peak = matmul_peak(torch.bfloat16, args.device, n=8192 if gpu else 1024, repeats=10 if gpu else 4)[0]
    attn = pick_attention(args.device, args.attn)

    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.bfloat16, attn_implementation=attn)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoder = Encoder(
        model.to(args.device).eval(), "last_token", True, tokenizer.pad_token_id, "right", budget, args.max_batch_size
    )
    run_ours(encoder, values, offsets[: min(257, len(offsets))], args.rows_per_block, args.device)  # warm-up
    ours_s, ours_vec, computed = run_ours(encoder, values, offsets, args.rows_per_block, args.device)
    del encoder, model
    if gpu:
        torch.cuda.empty_cache()

    results = {
        "device": torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "attention": attn,
        "docs": docs,
        "layers": layers,
        "max_tokens": max_tokens,
        "budget": budget,
        "corpus": corpus.source,
        "tokens": tokens,
        "length_p50_p99_max": [int(np.percentile(lengths, 50)), int(np.percentile(lengths, 99)), int(lengths.max())],
        "tokenize_seconds": tok_seconds,
        "bf16_matmul_peak_tflops": peak / 1e12,
        "ours": {
            "seconds": ours_s,
            "tokens_per_s": tokens / ours_s,
            "mfu": flops / ours_s / peak,
            "padding_efficiency": tokens / computed,
        },
    }
    for name, dtype in (("st_fp32", torch.float32), ("st_bf16", torch.bfloat16)):
        if name == "st_fp32" and args.skip_st_fp32:
            continue
        st = load_sentence_transformer(str(model_dir), "last_token", max_tokens, args.device, dtype)
        run_sentence_transformers(st, corpus.texts[:64])  # warm-up
        sync(args.device)
        seconds, _, st_vec = run_sentence_transformers(st, corpus.texts)
        cos = np.sum(st_vec * ours_vec, axis=1)
        results[name] = {
            "seconds": seconds,
            "tokens_per_s": tokens / seconds,
            "mfu_vs_bf16_peak": flops / seconds / peak,
            "padding_efficiency": st_padding_efficiency(corpus.texts, lengths),
            "cosine_vs_ours_min": float(cos.min()),
            "cosine_vs_ours_mean": float(cos.mean()),
            "ratio_ours_over_this": seconds / ours_s,
        }
        del st
        if gpu:
            torch.cuda.empty_cache()
    if gpu:
        results["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(results, indent=2))
    o = results["ours"]
    print(
        f"ours: {o['tokens_per_s']:.0f} tokens/s, MFU {100 * o['mfu']:.1f} % of {peak / 1e12:.3f} TFLOP/s bf16, "
        f"padding efficiency {o['padding_efficiency']:.3f}, attention {attn}"
    )
    for name in ("st_fp32", "st_bf16"):
        if name in results:
            print(f"ours / sentence-transformers {name[3:]}: {results[name]['ratio_ours_over_this']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
