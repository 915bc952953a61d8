"""The whole embed job on the wall-clock benchmark's corpus under environment variants, in turns, same run.

    python -m bench.job_env --dtype bfloat16 --rounds 3 --variant RAY_worker_niceness=0

For a setting that only an environment variable reaches (Ray's raylet, OpenMP), measured as bench/wallclock.py
measures our job: `python -m jobs.embed --config <yaml>` on bench/corpus.py's skewed corpus (3,000 documents), every
`compute` and `batching` key at its default, the model resolution cached beforehand (a rerun of the model), timed
from launch to exit. Each round runs the baseline (the environment as it is) and then every `--variant` (space-
separated KEY=VALUE pairs, one variant per flag), so a slow spell of the machine hits all of them alike. Per
variant: the process wall seconds, the model stage's forward-pass seconds (`embed_seconds` of the job's summary),
fixed cost (the difference) and the process tree's CPU seconds, each as the median and every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.corpus import DATA, build_corpus
from bench.wallclock import (
    ROOT,
    WARM_RESOLUTION,
    job_config,
    load_average,
    machine,
    model_path,
    run_timed,
    write_corpus,
)

BASELINE = "(as is)"


def parse_variant(text: str) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in text.split())
    if not pairs:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=VALUE pairs")
    return pairs


def run_job(config: Path, env: dict[str, str], log: Path) -> dict:
    out = Path(yaml.safe_load(config.read_text())["output"]["uri"])
    wall, cpu = run_timed([sys.executable, "-m", "jobs.embed", "--config", str(config)], log, env=env)
    summary = json.loads((out / "_summary.json").read_text())
    embed = summary["embed_seconds"]
    return {"wall": round(wall, 2), "embed": round(embed, 2), "fixed": round(wall - embed, 2), "cpu": round(cpu, 1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="multilingual-e5-small", help="a model under .models/ or a directory")
    p.add_argument("--pooling", default="mean")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variant", type=parse_variant, action="append", default=[], help="KEY=VALUE ... (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="rayembed-job-env-"))
    corpus = build_corpus(args.docs, 0, data=DATA)
    write_corpus(corpus.texts, work / "corpus")
    config = work / "job.yaml"
    model = str(model_path(args.model))
    cfg = job_config(model, args.pooling, args.dtype, args.max_tokens, work / "corpus", work / "out")
    config.write_text(yaml.safe_dump(cfg))
    subprocess.run([sys.executable, "-c", WARM_RESOLUTION, str(config)], cwd=ROOT, check=True, capture_output=True)
    variants = {BASELINE: {}} | {" ".join(f"{k}={v}" for k, v in v.items()): v for v in args.variant}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    started, load = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), []
    for i in range(args.rounds):
        for v, (name, extra) in enumerate(variants.items()):
            log = work / f"job-round{i}-variant{v}.log"
            runs[name].append(run_job(config, {**os.environ, **extra}, log))
            load.append(load_average())
            print(f"round {i + 1} {name}: {runs[name][-1]}", flush=True)
    result = {
        "command": "python -m bench.job_env " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": started,
        "machine": machine(),
        "load_average_max": round(max(load), 1),
        "model": Path(model).name,
        "dtype": args.dtype,
        "docs": args.docs,
        "corpus": corpus.source,
        "runs": runs,
    }
    print(f"{Path(model).name} {args.dtype}, {args.docs} documents, {args.rounds} rounds in turns; {started}")
    print("| environment | median wall s | runs s | median embed s | median fixed s | median CPU s |")
    print("|---|---:|---|---:|---:|---:|")
    for name, rs in runs.items():
        med = {key: statistics.median(r[key] for r in rs) for key in ("wall", "embed", "fixed", "cpu")}
        walls = ", ".join(f"{r['wall']:.1f}" for r in rs)
        print(f"| {name} | {med['wall']:.1f} | {walls} | {med['embed']:.1f} | {med['fixed']:.1f} | {med['cpu']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
