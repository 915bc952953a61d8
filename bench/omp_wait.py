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
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name -> environment of the child: OMP_WAIT_POLICY, and GOMP_SPINCOUNT (libgomp, the OpenMP of torch's Linux
# wheels: iterations a thread spins at a barrier before it sleeps; with OMP_WAIT_POLICY unset it defaults to 300,000,
# or 100 when a process runs more OpenMP threads than it has CPUs; PASSIVE makes it 0 and ignores the variable)
POLICIES = {
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "default": {},
    "spin1k": {"GOMP_SPINCOUNT": "1000"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "spin100k": {"GOMP_SPINCOUNT": "100000"},
}
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
    p.add_argument("--policies", default="PASSIVE,default", help=f"comma-separated, of {','.join(POLICIES)}")
    p.add_argument("--rounds", type=int, default=1, help="rounds, the policies in turn within each")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    model = args.model if Path(args.model).is_dir() else str(ROOT / ".models" / args.model)
    if args.child:
        print(json.dumps(child(model, args.docs, args.dtype)))
        return
    names = args.policies.split(",")
    results: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
            env.update(POLICIES[name])
            cmd = [sys.executable, "-m", "bench.omp_wait", "--child", "--docs", str(args.docs), "--model", model]
            out = subprocess.run(
                [*cmd, "--dtype", args.dtype], env=env, cwd=ROOT, capture_output=True, text=True, check=True
            )
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    tokens = results[names[0]][0]["tokens"]
    print(f"{args.docs} documents, {tokens:,} tokens, {Path(model).name} {args.dtype}, 2 threads, {args.rounds} rounds")
    print("| policy | environment | median wall s | runs s | median CPU s |\n|---|---|---:|---|---:|")
    for name, runs in results.items():
        walls = [r["wall"] for r in runs]
        env = " ".join(f"{k}={v}" for k, v in POLICIES[name].items()) or "(unset)"
        runs_s = ", ".join(f"{w:.1f}" for w in walls)
        cpu = statistics.median(r["cpu"] for r in runs)
        print(f"| {name} | {env} | {statistics.median(walls):.1f} | {runs_s} | {cpu:.1f} |")
    if "PASSIVE" in results:  # speed against the actors' policy: above 1, that policy is faster
        passive = statistics.median(r["wall"] for r in results["PASSIVE"])
        for name in (n for n in names if n != "PASSIVE"):
            print(f"{name} / PASSIVE wall: {passive / statistics.median(r['wall'] for r in results[name]):.2f}x")


if __name__ == "__main__":
    main()
