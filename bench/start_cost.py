"""A job's start-up and exit, this tree's code against a baseline commit's, on the README quickstart.

    python -m bench.start_cost --baseline-ref main          # 5 rounds, the two versions alternating
    python -m bench.start_cost --baseline-ref HEAD~1 --rounds 3 --out /tmp/start.json

Each round runs the quickstart (configs/quickstart.yaml, 320 rows, the local multilingual-e5-small, float32) once
per code version, each in a new `python -m jobs.embed` process whose working directory and PYTHONPATH are that
version's `pipeline` and `jobs` packages (bench/baseline_code.py), the order swapped every round so that neither
always runs second. Wall clock from launch to exit, measured here; the fixed cost is that wall minus the model
stage's `embed_seconds` (the job summary's), i.e. everything but the forward passes: Python start, Ray start-up,
actor start, model load, reads, writes, exit. Medians over the rounds; the spread of one version's runs is printed
with it, since a quickstart varies by about a second from run to run on a 2-core machine.

CPU seconds (user + system) of the whole process tree are measured exactly on Linux: this process is made a child
subreaper, so Ray's daemons and workers, orphaned when the job exits, are reparented here and reaped, and their CPU
lands in this process's RUSAGE_CHILDREN (`cpu_seconds`: the difference across one run). On a machine loaded by
other work, CPU seconds move little where wall seconds move a lot: compare versions on them there.
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

from bench.baseline_code import extract, in_turns, revisions
from bench.process_tree import become_subreaper, children_cpu, reap_orphans
from bench.wallclock import ROOT, load_average, machine, model_path, quickstart_args

# Ray's own failure when its raylet or GCS do not come up in time, e.g. on a machine loaded by other work
RAY_START_TIMEOUT = "The current node timed out during startup"


def run_once(code: Path, model_dir: Path, out: Path, retries: int = 2, sets: tuple[str, ...] = ()) -> dict:
    """One quickstart with the packages at `code`: its process wall, the summary's model-stage seconds and, as a
    child subreaper (main), the CPU seconds of its whole process tree. A run whose Ray did not start in time is run
    again, at most `retries` times."""
    args = quickstart_args(model_dir, out)
    args[args.index("configs/quickstart.yaml")] = str(ROOT / "configs" / "quickstart.yaml")
    args += ["--set", f"input.uri={ROOT / 'data' / 'sample' / 'sib200_sample.jsonl'}"]
    args += [arg for item in sets for arg in ("--set", item)]  # e.g. output.dtype=int8: both versions alike
    cpu_before = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jobs.embed", *args],
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    reap_orphans()
    cpu = children_cpu() - cpu_before
    if done.returncode != 0 and RAY_START_TIMEOUT in done.stderr and retries > 0:
        print(f"Ray did not start in time (a loaded machine), once more: {code}", file=sys.stderr, flush=True)
        return run_once(code, model_dir, out, retries - 1, sets)
    if done.returncode != 0:
        raise RuntimeError(f"quickstart with {code} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "_summary.json").read_text())
    return {
        "process_seconds": round(wall, 3),
        "embed_seconds": summary["embed_seconds"],
        "fixed_cost_seconds": round(wall - summary["embed_seconds"], 3),
        "cpu_seconds": round(cpu, 2),
    }


def median_of(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-ref", default="main", help="git commit of the code to compare with (default main)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model", default="multilingual-e5-small")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="a --set for both versions"
    )
    args = p.parse_args(argv)
    model_dir = model_path(args.model)
    if not become_subreaper():
        print("no child subreaper here: cpu_seconds counts only what was reaped", file=sys.stderr)
    baseline, head, dirty = revisions(args.baseline_ref)
    runs: dict[str, list[dict]] = {"this tree": [], f"baseline {baseline[:10]}": []}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        codes = {"this tree": ROOT, f"baseline {baseline[:10]}": extract(baseline, work)}
        names = list(codes)
        for round_, name in in_turns(names, args.rounds):
            out = work / f"out-{round_}-{len(runs[name])}-{name[:4]}"
            result = run_once(codes[name], model_dir, out, sets=tuple(args.sets))
            runs[name].append(result)
            loads.append(load_average())
            print(f"round {round_}: {name}: {result}", flush=True)
    table = {
        name: {
            key: median_of(rs, key) for key in ("process_seconds", "fixed_cost_seconds", "embed_seconds", "cpu_seconds")
        }
        | {"process_seconds_range": [min(r["process_seconds"] for r in rs), max(r["process_seconds"] for r in rs)]}
        | {"cpu_seconds_range": [min(r["cpu_seconds"] for r in rs), max(r["cpu_seconds"] for r in rs)]}
        for name, rs in runs.items()
    }
    result = {
        "machine": machine(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.start_cost " + " ".join(argv if argv is not None else sys.argv[1:]),
        "this_tree": head + (" with uncommitted changes to pipeline/" if dirty else ""),
        "baseline": baseline,
        "model": args.model,
        "max_load_average": max(loads) if loads else None,
        "medians": table,
        "runs": runs,
    }
    print(json.dumps(table, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
