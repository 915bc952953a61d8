"""What remembering the driver's model resolution (pipeline/resolution_cache.py) saves on a job's start, against
the code before it, in one run.

    python -m bench.resolution_cache --baseline-ref 4dfb542          # 3 rounds, e5-small and all-MiniLM
    python -m bench.resolution_cache --baseline-ref 4dfb542 --rounds 1 --models multilingual-e5-small
    python -m bench.resolution_cache --baseline-ref cb8b3ce --baseline-rerun --out bench/results/tokenizer_snapshot.json

Each round runs the README quickstart (configs/quickstart.yaml, 320 rows, a local model) once per variant in new
processes, the order rotating from round to round:
* `baseline`: `python -m jobs.embed` of `--baseline-ref` (its `pipeline` and `jobs` from `git archive`,
  bench/baseline_code.py): the driver loads the tokenizer and config on every run.
* `first run`: this tree with an empty resolution cache (a run of a model not run before on this machine, or after
  an upgrade of transformers or of rayembed): it resolves as the baseline does and records the result.
* `rerun`: this tree with the entry the previous variant wrote: the driver loads neither tokenizer nor torch; the
  tokenizer actors load their own tokenizer.
* `baseline rerun` (with `--baseline-rerun`, for a baseline that has the resolution cache itself): the baseline's
  code with the entry its own `baseline` run wrote, so that a change to what a rerun does (the tokenizer snapshot,
  pipeline/tokenizer_snapshot.py) is measured rerun against rerun.
Every variant gets a warm file-hash cache of its own code's keys (pipeline/file_hashes.py; the baseline's and this
tree's stat keys may differ, and each code drops the other's entries for a file): one unmeasured run of each code
per model fills it before the rounds, and every run hands it on (the model directory's content hash is
read from it, as on any rerun), each in its own cache directory. Wall clock from launch to exit, measured by this
parent; `fixed` = process wall minus the model stage's seconds (the summary's `embed_seconds`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.baseline_code import extract, revisions
from bench.wallclock import ROOT, load_average, machine, model_path, quickstart_args
from pipeline.file_hashes import CACHE_NAME, cache_path

VARIANTS = ("baseline", "baseline rerun", "first run", "rerun")
RERUN_OF = {"rerun": "first run", "baseline rerun": "baseline"}  # a rerun takes the entry its first run wrote


def run_once(variant: str, model_dir: Path, work: Path, baseline: Path, hashes: Path) -> dict:
    """One quickstart of `variant`; `hashes`: the folder of each code's warm file-hash cache (baseline.json,
    current.json), updated from the run."""
    out = work / "out"
    cache = work / f"cache-{model_dir.name}-{variant.replace(' ', '-')}"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    hashes = hashes / ("baseline.json" if variant.startswith("baseline") else "current.json")
    if hashes.is_file():
        shutil.copy(hashes, cache / CACHE_NAME)
    if variant in RERUN_OF:
        first = work / f"cache-{model_dir.name}-{RERUN_OF[variant].replace(' ', '-')}" / "resolved"
        shutil.copytree(first, cache / "resolved", dirs_exist_ok=True)
    env = {**os.environ, "RAYEMBED_CACHE_DIR": str(cache)}
    if variant.startswith("baseline"):
        env["PYTHONPATH"] = str(baseline)
    args = quickstart_args(model_dir, out)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jobs.embed", *args],
        cwd=baseline if variant.startswith("baseline") else ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{variant} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if (cache / CACHE_NAME).is_file():
        shutil.copy(cache / CACHE_NAME, hashes)  # warm for the next run of this code
    summary = json.loads((out / "_summary.json").read_text())
    entries = list((cache / "resolved").glob("*.json")) if (cache / "resolved").is_dir() else []
    return {
        "model": model_dir.name,
        "variant": variant,
        "process_seconds": round(wall, 3),
        "embed_seconds": summary["embed_seconds"],
        "fixed_seconds": round(wall - summary["embed_seconds"], 3),
        "cache_entries_after": len(entries),
    }


def render(result: dict) -> str:
    lines = [
        "# Job start-up, first runs and reruns (pipeline/resolution_cache.py), against the code before a change",
        "",
        f"Measured {result['measured']} on {result['machine']['cpu']}, {result['machine']['cores']} cores, torch "
        f"{result['machine']['torch']}; load average {result['load_average'][0]:.1f} before, "
        f"{result['load_average'][1]:.1f} after. Baseline {result['baseline'][:10]}, measured {result['head']}"
        + (" with uncommitted changes" if result["dirty"] else "")
        + ".",
        f"Command: `{result['command']}`",
        "",
        "| model | variant | process wall s (median) | fixed cost s (median) | model stage s (median) | runs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model, variants in result["medians"].items():
        for variant, m in variants.items():
            lines.append(
                f"| {model} | {variant} | {m['process_seconds']:.2f} | {m['fixed_seconds']:.2f} | "
                f"{m['embed_seconds']:.2f} | {m['runs']} |"
            )
    lines += [
        "",
        (
            "Quickstart: configs/quickstart.yaml (320 rows), local model, in-process Ray, wall clock from launch to "
            "exit. Fixed cost = process wall - model stage seconds. `first run`: empty resolution cache; `rerun`: the "
            "entry the first run wrote (`baseline rerun`: the baseline's code with the entry its own run wrote). All "
            "variants with a warm file-hash cache of their own code."
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-ref", required=True, help="git commit of the code before the change")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--models", nargs="+", default=["multilingual-e5-small", "all-minilm-l6-v2"])
    p.add_argument("--baseline-rerun", action="store_true", help="also time the baseline's own rerun")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "resolution_cache.json")
    args = p.parse_args(argv)
    full_ref, head, dirty = revisions(args.baseline_ref)
    runs, load_before = [], load_average()
    with tempfile.TemporaryDirectory(prefix="rayembed-resolution-") as tmp:
        work = Path(tmp)
        baseline = extract(full_ref, work)
        shutil.copytree(ROOT / "configs", baseline / "configs")
        shutil.copytree(ROOT / "data", baseline / "data")
        hashes = work / "hashes"
        hashes.mkdir()
        for name in ("baseline.json", "current.json"):
            if cache_path().is_file():
                shutil.copy(cache_path(), hashes / name)
        for name in args.models:  # unmeasured: each code's file-hash cache warm with its own keys
            for variant in ("baseline", "first run"):
                run_once(variant, model_path(name).resolve(), work, baseline, hashes)
        for r in range(args.rounds):
            for name in args.models:
                model_dir = model_path(name)
                # a first run must precede its rerun; the baseline takes each place in turn
                order = [["baseline", "first run", "rerun"], ["first run", "baseline", "rerun"]][r % 2]
                if r % 3 == 2:
                    order = ["first run", "rerun", "baseline"]
                if args.baseline_rerun:
                    order.insert(order.index("baseline") + 1, "baseline rerun")
                for variant in order:
                    runs.append({"round": r, **run_once(variant, model_dir.resolve(), work, baseline, hashes)})
                    print(json.dumps(runs[-1]), flush=True)
    medians: dict[str, dict] = {}
    for name in args.models:
        model = Path(name).name
        medians[model] = {}
        for variant in VARIANTS:
            mine = [x for x in runs if x["model"] == model and x["variant"] == variant]
            if not mine:
                continue
            medians[model][variant] = {
                key: round(statistics.median(x[key] for x in mine), 3)
                for key in ("process_seconds", "fixed_seconds", "embed_seconds")
            } | {"runs": len(mine)}
    command = f"python -m bench.resolution_cache --baseline-ref {args.baseline_ref}"
    command += " --baseline-rerun" if args.baseline_rerun else ""
    command += f" --out {args.out}" if args.out != p.get_default("out") else ""
    command += f" --rounds {args.rounds}" if args.rounds != 3 else ""
    if args.models != p.get_default("models"):
        command += " --models " + " ".join(args.models)
    result = {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "command": command,
        "baseline": full_ref,
        "head": head,
        "dirty": bool(dirty),
        "runs": runs,
        "medians": medians,
        "load_average": [load_before, load_average()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result), flush=True)
    return result


if __name__ == "__main__":
    main()
