"""The duplicate-id pre-pass on a small corpus, this tree's pipeline/duplicate_pass.py against a baseline commit's,
alternating in one process on one Ray (CPU seconds of the driver and every Ray process, and wall).

    python -m bench.duplicate_pass_cost --baseline-ref main --files 4 --rows 10 --repeats 10
    python -m bench.duplicate_pass_cost --shuffle --out bench/results/duplicate_pass_shuffle.json  # the hash shuffle

Every re-embed run where any file is new, changed, deleted or moved runs this pass over the whole listing (with an
id column), and so does every embed job: on a small corpus its fixed cost is what a nightly run pays. The baseline's
module is loaded from `git show <ref>:pipeline/duplicate_pass.py` under another name (its other imports are this
tree's) and shipped to the workers by value. CPU: user + system of this process and its live descendants, their
reaped children included (psutil); Ray's idle polling counts too, so a loaded machine adds some to both versions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import ray
from ray import cloudpickle

from bench.wallclock import ROOT, load_average, machine
from pipeline.config import ComputeConfig, StorageConfig
from pipeline.reading import ReadSpec
from pipeline.storage import list_inputs, resolve
from pipeline.units import plan_units


def tree_cpu() -> float:
    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def baseline_module(ref: str, work: Path):
    source = subprocess.run(
        ["git", "show", f"{ref}:pipeline/duplicate_pass.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = work / "baseline_duplicate_pass.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_duplicate_pass", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "duplicate_pass_cost.json")
    parser.add_argument(
        "--shuffle", action="store_true", help="both versions take the path beyond ONE_TASK_ROWS (the hash shuffle)"
    )
    args = parser.parse_args(argv)
    from pipeline import duplicate_pass

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        versions = {"baseline": baseline_module(args.baseline_ref, work), "this": duplicate_pass}
        if args.shuffle:
            for module in versions.values():
                module.ONE_TASK_ROWS = 0
        corpus = work / "corpus"
        corpus.mkdir()
        for f in range(args.files):  # every 7th id repeats one of the first file's
            ids = [f"id{(f * args.rows + r) % (args.files * args.rows - args.rows // 2)}" for r in range(args.rows)]
            (corpus / f"part-{f:03d}.jsonl").write_text("".join(json.dumps({"id": i, "text": i}) + "\n" for i in ids))
        storage = StorageConfig()
        base, listed = list_inputs(str(corpus), storage)
        spec = ReadSpec(root=base, format="jsonl", text_column="text", id_column="id", keep_columns=())
        units = plan_units(base, listed, "jsonl", 1 << 28)
        files = [f.path for f in listed]
        compute = ComputeConfig(cpus_per_io_task=0.5)
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, log_to_driver=False
        )  # its own, never a running one
        ray.data.DataContext.get_current().enable_progress_bars = False
        runs: dict[str, list[dict]] = {name: [] for name in versions}
        counts = set()
        for k in range(args.repeats + 1):  # the first round warms the workers up, not counted
            for name in ["baseline", "this"] if k % 2 == 0 else ["this", "baseline"]:
                target = resolve(str(work / f"{name}-{k}"), storage)
                cpu, start = tree_cpu(), time.perf_counter()
                counts.add(versions[name].find_duplicate_ids(units, files, spec, "keep_first", target, compute))
                run = {"cpu_s": round(tree_cpu() - cpu, 3), "wall_s": round(time.perf_counter() - start, 3)}
                if k:
                    runs[name].append({**run, "load_before": round(load_average(), 2)})
                print(f"round {k} {name}: {run}", flush=True)
        ray.shutdown()
    assert len(counts) == 1, counts  # both versions found the same repeats
    medians = {n: {key: statistics.median(r[key] for r in rs) for key in ("cpu_s", "wall_s")} for n, rs in runs.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "note": "helpers' machine, loaded by other jobs: wall s are not performance figures",
        "baseline_ref": args.baseline_ref,
        "corpus": {"files": args.files, "rows_per_file": args.rows, "rows_repeating": counts.pop()},
        "path": "hash shuffle (ONE_TASK_ROWS 0)" if args.shuffle else "as the code chooses",
        "runs": runs,
        "median": medians,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(medians))
    return result


if __name__ == "__main__":
    main()
