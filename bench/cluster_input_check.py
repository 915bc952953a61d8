"""The cluster job's input check, one read of every file (this tree) against two (a baseline commit), same run.

    python -m bench.cluster_input_check --rows 200000 --dim 384 --baseline-ref main --rounds 5 --repeats 3 \
        --out bench/results/cluster_input_check.json

Writes the synthetic dataset of bench/cluster_scale.py once (float32, unit vectors, `--files` Parquet files), then
each round runs one process per code version, whose working directory and PYTHONPATH are that version's `pipeline`
and `jobs` packages (bench/baseline_code.py), the order swapped every round. A process lists and inspects the
input as the job does, starts its in-process Ray and warms its workers, then times the input check `--repeats`
times, called as the job calls it: the baseline's check_files + check_unique_ids (two passes), this tree's
check_input (one). Wall clock: the first check of each process (as the job calls it, once on a new Ray) and the
later ones (warm: Ray Data and the workers' imports done), medians over the rounds. `--job` also runs the whole
job once per round and version (its wall clock, Ray start included), which varies far more than the check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.baseline_code import extract, in_turns, revisions, run_child
from bench.cluster_scale import write_dataset
from bench.wallclock import ROOT, load_average, machine

CHILD = """
import json, sys, time
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering import job
from pipeline.columns import CHUNK_INDEX
from pipeline.config import parse_config
from pipeline.storage import list_inputs
cfg = parse_config(ClusterConfig, json.loads(sys.argv[1]))
repeats = int(sys.argv[2])
if repeats == 0:  # the whole job once, its input check timed by wrapping whichever functions the job module has
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
    print("RESULT " + json.dumps({"checks": checks, "check_s": [round(sum(spent), 3)], "job_wall_s": round(wall, 3)}))
    sys.exit(0)
# the input check alone, `repeats` times on one Ray (started and warmed first), as the job calls it
root, listed = list_inputs(cfg.input.uri, cfg.storage)
files = [f.path for f in listed]
dim, paths, _ = job.inspect_input(cfg, root, files)
job.init_ray(cfg.compute)
id_column, emb = cfg.input.id_column, cfg.input.embedding_column
if hasattr(job, "check_input"):
    checks = ["check_input"]
    def check():
        job.check_input(root, files, emb, paths, id_column, False, dim, cfg.compute)
else:
    checks = ["check_files", "check_unique_ids"]
    def check():
        job.check_files(root, files, emb, paths, id_column, dim, cfg.compute)
        job.check_unique_ids(root, files, id_column, paths[id_column], False, cfg.compute)
import ray
ray.get([ray.remote(lambda: 0).remote() for _ in range(8)])  # workers started before the first timing
seconds = []
for _ in range(repeats):
    t0 = time.perf_counter()
    check()
    seconds.append(round(time.perf_counter() - t0, 3))
print("RESULT " + json.dumps({"checks": checks, "check_s": seconds, "job_wall_s": None}))
"""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--files", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="input checks per process, after Ray is started")
    p.add_argument("--job", action="store_true", help="also run the whole job once per round and version")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--max-iter", type=int, default=3)
    p.add_argument("--baseline-ref", default="main", help="git commit of the code to compare with (default main)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = p.parse_args(argv)
    baseline, head, dirty = revisions(args.baseline_ref)
    names = ["this tree", f"baseline {baseline[:10]}"]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    jobs: dict[str, list[dict]] = {name: [] for name in names}
    loads = [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "emb"
        src.mkdir()
        write_dataset(src, args.rows, args.dim, 200, args.files, seed=0)
        codes = {names[0]: ROOT, names[1]: extract(baseline, work)}
        for round_, name in in_turns(names, args.rounds):
            cfg = {
                "input": {"uri": str(src)},
                "output": {"uri": str(work / f"out-{round_}-{name[:4]}")},
                "clustering": {"k": args.k, "max_iter": args.max_iter, "tol": 0.0},
            }
            result = run_child(codes[name], CHILD, json.dumps(cfg), str(args.repeats))
            runs[name].append(result)
            loads.append(load_average())
            print(f"round {round_}: {name}: {result}", flush=True)
            if args.job:
                cfg["output"]["uri"] += "-job"
                result = run_child(codes[name], CHILD, json.dumps(cfg), "0")
                jobs[name].append(result)
                loads.append(load_average())
                print(f"round {round_}: {name}: job {result}", flush=True)
    summary = {}
    for name in names:
        first = [r["check_s"][0] for r in runs[name]]  # as the job calls it: once, on a new Ray
        warm = [s for r in runs[name] for s in r["check_s"][1:]]  # again: Ray Data and the workers' imports warm
        summary[name] = {
            "checks": runs[name][0]["checks"],
            "first_check_s_median": round(statistics.median(first), 3),
            "first_check_s": first,
            "warm_check_s_median": round(statistics.median(warm), 3) if warm else None,
            "warm_check_s_min_max": [min(warm), max(warm)] if warm else None,
        }
        if jobs[name]:
            walls = [r["job_wall_s"] for r in jobs[name]]
            summary[name] |= {"job_wall_s_median": round(statistics.median(walls), 2), "job_wall_s": walls}
    result = {
        "machine": machine(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.cluster_input_check " + " ".join(argv if argv is not None else sys.argv[1:]),
        "this_tree": head + (" with uncommitted changes to pipeline/" if dirty else ""),
        "baseline": baseline,
        "data": {"rows": args.rows, "dim": args.dim, "files": args.files, "dtype": "float32"},
        "load_average_min_max": [round(min(loads), 2), round(max(loads), 2)],
        "summary": summary,
        "runs": runs,
        "jobs": jobs,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
