"""Throughput side by side, in one run: sentence-transformers, the plain Ray recipe, our stage, our job.

    python -m bench.throughput --model smollm2-135m --docs 120 --out bench/results/throughput_cpu.md
    python -m bench.throughput --model multilingual-e5-small --docs 600 --levers

(a) sentence-transformers `encode` at its defaults (length-sorted, batch_size 32), (b) the plain Ray Data
recipe (map_batches actor, fixed batch_size 32, pad to longest), (c) our embedding stage (Encoder over
pre-tokenized rows, token-budget batches), all at --dtype (the same on every side), (d) our whole job (run_embed on local Ray: read, tokenize, embed,
write). Same corpus, max_tokens and torch threads for all; every variant runs in its own child process so its peak
RSS (the process tree's, Ray workers included) is its own. Tokens/s counts real tokens: padding is cost, not output.
Ratios are quoted on CPU seconds and on wall seconds. This is the stage-level tool (levers, MFU); the wall clock a
user sees, whole job against sentence-transformers, is bench/wallclock.py.
`--levers` adds an ablation of our stage on the same corpus: each lever switched on in turn, then single toggles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Every variant (children and Ray workers inherit the environment) gets the same OpenMP wait policy, read when torch
# loads. PASSIVE: idle OpenMP threads sleep instead of spinning; on a shared, oversubscribed CPU the default spinning
# burns whole CPU-seconds per forward pass waiting for a descheduled sibling thread (docs/performance.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from bench.corpus import DATA, build_corpus
from bench.flops import matmul_peak, model_shape
from bench.report import NAMES, render, render_levers, summarize

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("RAYEMBED_MODELS", ROOT / ".models"))
POOLING = {"smollm2-135m": "last_token", "multilingual-e5-small": "mean", "all-minilm-l6-v2": "mean"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model(name: str, layers: int) -> tuple[str, str]:
    """(model directory, pooling); builds the harrier-shape model on first use."""
    if name == "harrier-270m-shape":
        from bench.harrier_shape import build_harrier_shape

        out = Path(os.environ.get("RAYEMBED_HARRIER_DIR", MODELS / f"harrier-270m-shape-{layers}l"))
        return str(build_harrier_shape(out, layers=layers)), "last_token"
    path = Path(name) if Path(name).is_dir() else MODELS / name
    if not path.is_dir():
        raise SystemExit(f"model {name!r} not found at {path}: run ../shared/tools/get-models.sh .models")
    return str(path), POOLING.get(path.name, "mean")


def run_child(variant: str, spec_path: Path, work: Path) -> dict:
    out = work / f"{variant}.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.throughput",
        "--child",
        variant,
        "--spec",
        str(spec_path),
        "--child-out",
        str(out),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(out.read_text())


def write_corpus(texts: list[str], corpus_dir: Path, files: int = 4) -> None:
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(texts)), files)):
        with (corpus_dir / f"part-{i:03d}.jsonl").open("w") as f:
            for j in part:
                f.write(json.dumps({"text": texts[j]}, ensure_ascii=False) + "\n")


def cosine_check(work: Path) -> dict | None:
    """Agreement of our embeddings (c, possibly bf16) with sentence-transformers' float32 ones, row by row."""
    a, c = work / "a.npy", work / "c.npy"
    if not (a.is_file() and c.is_file()):
        return None
    cos = np.sum(np.load(a) * np.load(c), axis=1)
    return {"min": float(cos.min()), "mean": float(cos.mean()), "p01": float(np.percentile(cos, 1))}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "CPU"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="name under .models/, a directory, or harrier-270m-shape")
    p.add_argument("--docs", type=int, default=120, help="documents in the corpus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2, help="torch threads for every variant (the actor's CPUs)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="the dtype of every variant")
    p.add_argument("--budget", type=int, default=16384, help="our max_tokens_per_batch")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--rows-per-block", type=int, default=4096)
    p.add_argument("--variants", default="a,b,c,d")
    p.add_argument("--levers", action="store_true", help="also run the lever ablation of our stage")
    p.add_argument("--lever-docs", type=int, default=None, help="corpus size for the ablation (default: --docs)")
    p.add_argument("--lever-budgets", default="2048,16384")
    p.add_argument("--lever-compile", action="store_true", help="add a torch.compile toggle to the ablation")
    p.add_argument("--harrier-layers", type=int, default=18, help="layers of the harrier-shape model")
    p.add_argument("--synthetic", action="store_true", help="use the synthetic corpus even when shared data exist")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown report here")
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        from bench.variants import run_variant

        args.child_out.write_text(json.dumps(run_variant(args.child, json.loads(args.spec.read_text()))))
        return None

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="rayembed-throughput-"))
    corpus = build_corpus(args.docs, args.seed, data=None if args.synthetic else DATA)
    model_dir, pooling = resolve_model(args.model, args.harrier_layers)
    write_corpus(corpus.texts, work / "corpus")
    spec = {
        "model_dir": model_dir,
        "pooling": pooling,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "dtype": args.dtype,
        "budget": args.budget,
        "max_batch_size": args.max_batch_size,
        "rows_per_block": args.rows_per_block,
        "corpus_dir": str(work / "corpus"),
        "work": str(work),
        "lever_budgets": [int(b) for b in args.lever_budgets.split(",")],
        "lever_compile": args.lever_compile,
    }
    (work / "spec.json").write_text(json.dumps(spec))

    from bench.ours import model_config, tokenize

    _, offsets, _ = tokenize(model_config(model_dir, pooling, args.max_tokens, "float32"), corpus.texts)
    lengths = np.diff(offsets)
    peaks = {dt: matmul_peak(DTYPES[dt]) for dt in sorted({"float32", args.dtype})}
    results = {}
    for variant in args.variants.split(","):
        print(f"running {NAMES[variant]} ...", flush=True)
        results[variant] = run_child(variant, work / "spec.json", work)
    summary = summarize(results, lengths, corpus.texts, model_shape(model_dir), peaks)
    setup = (
        f"Corpus: {len(corpus.texts)} documents ({corpus.source}), {summary['tokens']} tokens, length "
        f"p50/p90/p99/max = {'/'.join(str(int(np.percentile(lengths, q))) for q in (50, 90, 99))}/{lengths.max()} "
        f"tokens, max_tokens {args.max_tokens}. Machine: {cpu_name()}, {os.cpu_count()} cores (shared), torch "
        f"{torch.__version__}, {args.threads} torch threads and OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} everywhere. Ours: {args.dtype}, max_tokens_per_batch "
        f"{args.budget}, rows_per_block {args.rows_per_block}."
    )
    command = f"python -m bench.throughput {' '.join(sys.argv[1:] if argv is None else argv)}"
    report = render(f"Throughput: {args.model} on CPU", command, setup, summary, peaks, cosine_check(work))
    levers = None
    if args.levers:
        docs = args.lever_docs or args.docs
        lever_work = work / "levers"
        write_corpus(corpus.texts[:docs], lever_work / "corpus")
        lever_spec = {**spec, "corpus_dir": str(lever_work / "corpus"), "work": str(lever_work)}
        (lever_work / "spec.json").write_text(json.dumps(lever_spec))
        print("running the lever ablation ...", flush=True)
        levers = run_child("levers", lever_work / "spec.json", lever_work)
        report += "\n" + render_levers(levers, int(lengths[:docs].sum()))
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    raw = {"spec": spec, "summary": summary, "results": results, "levers": levers, "peaks": peaks}
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))
    return raw


if __name__ == "__main__":
    main()
