"""The clustering job's fixed cost on a small input: this tree against a baseline commit, in the same run.

    python -m bench.cluster_fixed_cost --rows 450 --files 3 --runs 3 --rounds 2 --baseline-ref main \
        --out bench/results/cluster_fixed_cost.json

Writes `--files` Parquet files of unit vectors (bench/cluster_scale.py's dataset), then each round runs one process
per code version (bench/baseline_code.py; the order swapped every round). A process starts its in-process Ray (4
CPUs), then runs the job `--runs` times into new outputs while a thread samples every process below it every 0.2 s
(psutil: Ray's GCS, raylet, workers and actors are its descendants): CPU seconds of the whole tree over the runs,
the processes started during them (Ray Data's footer-reading actors among them), wall seconds per run and the
summary's seconds per Lloyd iteration. A process that exits between two samples loses at most 0.2 s of CPU.
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
import json, sys, threading, time
import psutil, ray
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.job import run_cluster
from pipeline.config import parse_config
src, out, runs, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
me = psutil.Process()
seen, stop = {}, threading.Event()
def sample():
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            seen[(p.pid, p.create_time())] = t.user + t.system
        except psutil.Error:
            pass
def sampler():
    while not stop.is_set():
        sample()
        time.sleep(0.2)
sample()
before = dict(seen)
thread = threading.Thread(target=sampler, daemon=True)
thread.start()
walls, per_iteration = [], []
for run in range(runs):
    raw = {"input": {"uri": src}, "output": {"uri": f"{out}/run-{run}"}, "clustering": {"k": k, "max_iter": 30}}
    t0 = time.perf_counter()
    summary = run_cluster(parse_config(ClusterConfig, raw))
    walls.append(round(time.perf_counter() - t0, 2))
    per_iteration.append(summary["seconds_per_iteration"])
stop.set()
thread.join()
sample()
cpu = sum(c - before.get(key, 0.0) for key, c in seen.items())
started = len(set(seen) - set(before))
print("RESULT " + json.dumps({"cpu_s": round(cpu, 2), "processes_started": started, "wall_s": walls,
                              "seconds_per_iteration": per_iteration, "iterations": summary["iterations"]}))
"""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=450)
    p.add_argument("--dim", type=int, default=24)
    p.add_argument("--files", type=int, default=3)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--runs", type=int, default=3, help="job runs per process, after its Ray start")
    p.add_argument("--rounds", type=int, default=2)
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
        write_dataset(src, args.rows, args.dim, 8, args.files, seed=0)
        codes = {names[0]: ROOT, names[1]: extract(baseline, work)}
        for round_, name in in_turns(names, args.rounds):
            out = work / f"out-{round_}-{name[:4]}"
            result = run_child(codes[name], CHILD, str(src), str(out), str(args.runs), str(args.k))
            runs[name].append(result)
            loads.append(load_average())
            print(f"round {round_}: {name}: {result}", flush=True)
    summary = {
        name: {
            "cpu_s_per_run_median": round(statistics.median(r["cpu_s"] / args.runs for r in runs[name]), 2),
            "processes_started_per_run_median": statistics.median(
                r["processes_started"] / args.runs for r in runs[name]
            ),
            "wall_s_per_run_median": round(statistics.median(w for r in runs[name] for w in r["wall_s"]), 2),
            "seconds_per_iteration_median": statistics.median(
                s for r in runs[name] for s in r["seconds_per_iteration"]
            ),
        }
        for name in names
    }
    result = {
        "machine": machine(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.cluster_fixed_cost " + " ".join(argv if argv is not None else sys.argv[1:]),
        "this_tree": head + (" with uncommitted changes to pipeline/" if dirty else ""),
        "baseline": baseline,
        "data": {"rows": args.rows, "dim": args.dim, "files": args.files, "k": args.k},
        "load_average_min_max": [round(min(loads), 2), round(max(loads), 2)],
        "summary": summary,
        "runs": runs,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
