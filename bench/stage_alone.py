"""The model stage alone, in one process: Encoder.encode over the wallclock benchmark's corpus as one block, as the
embedding actor runs it inside `python -m jobs.embed` (bench/wallclock.py), to tell the stage's own speed from what
the job's other processes take from it on the same cores.

    python -m bench.stage_alone                       # e5-small, float32, 2 torch threads
    python -m bench.stage_alone --dtype bfloat16 --threads 2

Prints wall and CPU seconds, tokens/s and padding efficiency; compare the wall with the job's model-stage seconds
(its fixed cost subtracted from its process wall) in bench/results/wallclock.md, run in the same quiet window.
"""

from __future__ import annotations

import argparse

import torch

from bench.corpus import DATA, build_corpus
from bench.ours import load_encoder, model_config, tokenize
from bench.stage import run_stage
from bench.wallclock import MODELS


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="multilingual-e5-small", help="a directory, or a name under .models/")
    p.add_argument("--pooling", default="mean")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=2, help="torch threads (the job's default: the node's cores)")
    p.add_argument("--max-tokens-per-batch", type=int, default=16384, help="batching.max_tokens_per_batch's default")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model_dir = args.model if "/" in args.model else str(MODELS / args.model)
    corpus = build_corpus(args.docs, 0, data=DATA)
    cfg = model_config(model_dir, args.pooling, args.max_tokens, args.dtype)
    values, offsets, _ = tokenize(cfg, corpus.texts)
    encoder = load_encoder(cfg, args.max_tokens_per_batch, 256)
    run_stage(encoder, values[: offsets[50]], offsets[:51], 4096)  # warm-up, as the job's probe does
    wall, cpu, rows = run_stage(encoder, values, offsets, len(offsets))
    result = {
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "tokens": int(offsets[-1]),
        "tokens_per_second": round(offsets[-1] / wall),
        "padding_efficiency": round(float(offsets[-1] / rows.computed_tokens.sum()), 3),
    }
    print(result)
    return result


if __name__ == "__main__":
    main()
