"""What the job processes' quick exit (pipeline/process_exit.py) saves, against the interpreter's normal exit.

    python -m bench.exit_cost                    # 3 rounds of the quickstart, both exits alternating
    python -m bench.exit_cost --rounds 1 --out /tmp/exit.json

Each round runs the README quickstart (configs/quickstart.yaml, 320 rows, a local model) once per exit in new
processes, the order rotating from round to round so that no exit always runs last on a warmer page cache:
* `quick`: `python -m jobs.embed ...`, as shipped: exit_process kills the autoscaler monitor, stops Ray with
  `ray.shutdown` and leaves with os._exit.
* `shutdown`: the same without killing the monitor first (`ray.shutdown` alone, which waits out the monitor's 1 s
  grace): what the monitor-first stop saves.
* `normal` (the baseline): `python -c "import sys; from jobs.embed import main; sys.exit(main([...]))"`: the
  interpreter's own exit, where Ray's exit handler stops Ray and every module is torn down.
Wall clock from launch to exit, measured by this parent. The job itself varies by a second or two from run to run,
so the saving is read on `outside_job_seconds`: process wall minus the job's own `wall_seconds` (its summary's clock,
which starts after Python's start-up and ends before any exit), i.e. interpreter start-up plus the exit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.wallclock import ROOT, load_average, machine, model_path, quickstart_args

EXITS = ("quick", "shutdown", "normal")


def run_once(exit_kind: str, model_dir: Path, work: Path) -> dict:
    out = work / f"out-{exit_kind}"
    args = quickstart_args(model_dir, out)
    if exit_kind == "quick":
        cmd = [sys.executable, "-m", "jobs.embed", *args]
    elif exit_kind == "shutdown":
        code = (
            "import pipeline.process_exit as pe; pe.stop_autoscaler_monitor = lambda: False; "
            f"from jobs.embed import main; pe.exit_process(main({args!r}))"
        )
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-c", f"import sys; from jobs.embed import main; sys.exit(main({args!r}))"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{exit_kind} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "_summary.json").read_text())
    return {
        "exit": exit_kind,
        "process_seconds": round(wall, 3),
        "job_wall_seconds": summary["wall_seconds"],
        "outside_job_seconds": round(wall - summary["wall_seconds"], 3),  # start-up before the job's clock + exit
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="multilingual-e5-small", help="a directory, or a name under .models/")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "exit_cost.json")
    args = p.parse_args(argv)
    model_dir = model_path(args.model)
    runs, load_before = [], load_average()
    with tempfile.TemporaryDirectory(prefix="rayembed-exit-") as tmp:
        for r in range(args.rounds):
            for kind in EXITS[r % len(EXITS) :] + EXITS[: r % len(EXITS)]:
                runs.append({"round": r, **run_once(kind, model_dir, Path(tmp))})
                print(json.dumps(runs[-1]), flush=True)

    def median(kind: str, key: str) -> float:
        return round(statistics.median(x[key] for x in runs if x["exit"] == kind), 3)

    result = {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "model": model_dir.name,
        "command": "python -m bench.exit_cost" + (f" --rounds {args.rounds}" if args.rounds != 3 else ""),
        "runs": runs,
        "median_process_seconds": {k: median(k, "process_seconds") for k in EXITS},
        "median_job_wall_seconds": {k: median(k, "job_wall_seconds") for k in EXITS},
        "median_outside_job_seconds": {k: median(k, "outside_job_seconds") for k in EXITS},
        "load_average": [load_before, load_average()],
    }
    m, o = result["median_process_seconds"], result["median_outside_job_seconds"]
    result["saved_seconds"] = round(o["normal"] - o["quick"], 3)
    result["monitor_first_saved_seconds"] = round(o["shutdown"] - o["quick"], 3)
    print(
        f"median process wall: quick exit {m['quick']:.2f} s, ray.shutdown alone {m['shutdown']:.2f} s, normal exit "
        f"{m['normal']:.2f} s; outside the job's clock: {o['quick']:.2f} s, {o['shutdown']:.2f} s, {o['normal']:.2f} s: "
        f"saved {result['saved_seconds']:.2f} s against the normal exit, {result['monitor_first_saved_seconds']:.2f} s "
        "of them by stopping the monitor first",
        flush=True,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
