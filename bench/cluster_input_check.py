"""The cluster job's input check, one read of every file (this tree) against two (a baseline commit), same run.

    python -m bench.cluster_input_check --rows 200000 --dim 384 --baseline-ref main --rounds 3 \
        --out bench/results/cluster_input_check.json

Writes the synthetic dataset of bench/cluster_scale.py once (float32, unit vectors, `--files` Parquet files), then
each round runs `run_cluster` once per code version, each in its own process whose working directory and
PYTHONPATH are that version's `pipeline` and `jobs` packages (bench/baseline_code.py), the order swapped every
round. Each process starts its own in-process Ray. Per run: the job's wall clock (run_cluster, Ray start included)
and the input check's seconds (the baseline's check_files + check_unique_ids, this tree's check_input; timed by
wrapping whichever the job module has). Medians over the rounds, with each version's range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.baseline_code import extract, revisions, run_child
from bench.cluster_scale import write_dataset
from bench.wallclock import ROOT, load_average, machine

CHILD = """
import json, sys, time
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering import job
from pipeline.config import parse_config
cfg = parse_config(ClusterConfig, json.loads(sys.argv[1]))
spent = []
def timed(fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)
    return wrapper
checks = [name for name in ("check_files", "check_unique_ids", "check_input") if hasattr(job, name)]
for name in checks:
    setattr(job, name, timed(getattr(job, name)))
t0 = time.perf_counter()
summary = job.run_cluster(cfg)
wall = time.perf_counter() - t0
print("RESULT " + json.dumps({"checks": checks, "check_s": round(sum(spent), 3), "job_wall_s": round(wall, 3),
                              "rows": summary["rows"]}))
"""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--files", type=int, default=16)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--max-iter", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline-ref", default="main", help="git commit of the code to compare with (default main)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = p.parse_args(argv)
    baseline, head, dirty = revisions(args.baseline_ref)
    names = ["this tree", f"baseline {baseline[:10]}"]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    loads = [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "emb"
        src.mkdir()
        write_dataset(src, args.rows, args.dim, 200, args.files, seed=0)
        codes = {names[0]: ROOT, names[1]: extract(baseline, work)}
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                cfg = {
                    "input": {"uri": str(src)},
                    "output": {"uri": str(work / f"out-{round_}-{name[:4]}")},
                    "clustering": {"k": args.k, "max_iter": args.max_iter, "tol": 0.0},
                }
                result = run_child(codes[name], CHILD, json.dumps(cfg))
                runs[name].append(result)
                loads.append(load_average())
                print(f"round {round_}: {name}: {result}", flush=True)
    medians = {
        name: {key: round(statistics.median(r[key] for r in rs), 2) for key in ("check_s", "job_wall_s")}
        | {f"{key}_range": [min(r[key] for r in rs), max(r[key] for r in rs)] for key in ("check_s", "job_wall_s")}
        for name, rs in runs.items()
    }
    result = {
        "machine": machine(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.cluster_input_check " + " ".join(argv if argv is not None else sys.argv[1:]),
        "this_tree": head + (" with uncommitted changes to pipeline/" if dirty else ""),
        "baseline": baseline,
        "data": {"rows": args.rows, "dim": args.dim, "files": args.files, "dtype": "float32"},
        "max_load_average": round(max(loads), 2),
        "medians": medians,
        "runs": runs,
    }
    print(json.dumps(medians, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
