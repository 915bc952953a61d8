"""How narrow the length buckets of a batch plan should be on a CPU: the model stage alone, one process, variants
alternating round by round on the same encoder.

    python -m bench.bucket_ratio                                   # e5-small float32, 1000 docs, 4 rounds
    python -m bench.bucket_ratio --dtype bfloat16 --variants 0.9:64,0.97:16 --out bench/results/bucket_ratio.json

A variant `R:D` plans batches (pipeline.batching.plan_batches) that end where a row is shorter than R x the batch's
longest row, once the batch holds budget / D padded tokens. Narrow buckets (R near 1) pad less but make more,
smaller forward passes. Each round runs every variant once over the wallclock benchmark's skewed corpus
(bench/corpus.py), as one block (Encoder.encode, as the model actor runs it), the order rotating; wall clock, medians
over the rounds. The vectors of every variant are compared with the first's (cosine min): batching must not change
them beyond float noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.corpus import DATA, build_corpus
from bench.ours import load_encoder, model_config, tokenize
from bench.stage import run_stage
from bench.wallclock import MODELS, load_average, machine


def parse_variants(text: str) -> list[tuple[float, int]]:
    return [(float(r), int(d)) for r, d in (v.split(":") for v in text.split(","))]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="multilingual-e5-small")
    p.add_argument("--pooling", default="mean")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens-per-batch", type=int, default=16384)
    p.add_argument("--variants", default="0.9:64,0.97:16", help="ratio:divisor,... (the first is the reference)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = parse_variants(args.variants)
    corpus = build_corpus(args.docs, 0, data=DATA)
    cfg = model_config(str(MODELS / args.model), args.pooling, 512, args.dtype)
    values, offsets, _ = tokenize(cfg, corpus.texts)
    encoder = load_encoder(cfg, args.max_tokens_per_batch, 256)
    run_stage(encoder, values[: offsets[50]], offsets[:51], 4096)  # warm-up
    walls: dict[str, list[float]] = {f"{r}:{d}": [] for r, d in variants}
    stats: dict[str, dict] = {}
    reference = None
    loads = []
    for round_ in range(args.rounds):
        shift = round_ % len(variants)
        for ratio, divisor in variants[shift:] + variants[:shift]:
            name = f"{ratio}:{divisor}"
            encoder.min_length_ratio, encoder.min_batch_tokens = ratio, args.max_tokens_per_batch // divisor
            wall, _, rows = run_stage(encoder, values, offsets, len(offsets))
            walls[name].append(round(wall, 2))
            loads.append(load_average())
            if name == f"{variants[0][0]}:{variants[0][1]}" and reference is None:
                reference = rows.embeddings
            stats[name] = {
                "padding_efficiency": round(float(offsets[-1] / rows.computed_tokens.sum()), 4),
                "cosine_min_to_first": None
                if reference is None
                else round(float(np.sum(rows.embeddings * reference, axis=1).min()), 6),
            }
            print(f"round {round_}: {name}: {wall:.2f} s", flush=True)
    base = statistics.median(walls[f"{variants[0][0]}:{variants[0][1]}"])
    table = {
        name: {
            "median_wall_seconds": round(statistics.median(w), 2),
            "walls": w,
            "time_vs_first": round(statistics.median(w) / base, 3),
            **stats[name],
        }
        for name, w in walls.items()
    }
    result = {
        "machine": machine(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": args.model,
        "dtype": args.dtype,
        "docs": args.docs,
        "tokens": int(offsets[-1]),
        "threads": args.threads,
        "max_load_average": round(max(loads), 2),
        "variants": table,
    }
    print(json.dumps(table, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
