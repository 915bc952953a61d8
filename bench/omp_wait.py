"""OpenMP wait policy and our model stage: PASSIVE (the actors' default) against the OpenMP default, same run.

    python -m bench.omp_wait --docs 1000 --model multilingual-e5-small --dtype float32

Each policy runs in its own child process (OpenMP reads the variable once, at start): the first `docs` documents of
the wall-clock benchmark's corpus (bench.corpus, 3,000 documents, seed 0), tokenized once as the tokenizer stage
does (bench.ours), then one timed `Encoder.encode` over all of them with 2 torch threads after a warm-up on 8 rows. Prints wall and CPU seconds per policy and their ratio. Only
meaningful on a quiet machine: under load spinning threads burn cores that others need (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {"PASSIVE": "PASSIVE", "default": None}
CORPUS_DOCS = 3000  # bench.wallclock --docs default: the same documents


def child(model: str, docs: int, dtype: str) -> dict:
    import torch

    from bench.corpus import DATA, build_corpus
    from bench.ours import load_encoder, model_config, tokenize

    texts = build_corpus(CORPUS_DOCS, 0, data=DATA).texts[:docs]
    cfg = model_config(model, "mean", 512, dtype)
    values, offsets, _ = tokenize(cfg, texts)
    torch.set_num_threads(2)
    encoder = load_encoder(cfg, max_tokens_per_batch=16384, max_batch_size=256)
    encoder.encode(values[: offsets[8]], offsets[:9])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    encoder.encode(values, offsets)
    return {"tokens": int(offsets[-1]), "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--model", default="multilingual-e5-small", help="a model under .models/ or a directory")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    model = args.model if Path(args.model).is_dir() else str(ROOT / ".models" / args.model)
    if args.child:
        print(json.dumps(child(model, args.docs, args.dtype)))
        return
    results = {}
    for name, value in POLICIES.items():
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if value:
            env["OMP_WAIT_POLICY"] = value
        cmd = [sys.executable, "-m", "bench.omp_wait", "--child", "--docs", str(args.docs), "--model", model]
        out = subprocess.run(
            [*cmd, "--dtype", args.dtype], env=env, cwd=ROOT, capture_output=True, text=True, check=True
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{args.docs} documents, {results['PASSIVE']['tokens']:,} tokens, {Path(model).name} {args.dtype}, 2 threads")
    print("| OMP_WAIT_POLICY | wall s | CPU s |\n|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} |")
    print(f"default / PASSIVE wall: {results['PASSIVE']['wall'] / results['default']['wall']:.2f}x")


if __name__ == "__main__":
    main()
