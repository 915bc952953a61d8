"""The alternating comparison both re-embed benchmarks run (bench.reembed_retype, bench.reembed_moves): for each
round, each code version (a baseline commit extracted by bench/baseline_code.py, and this tree) runs the script's
`run_once` on a fresh corpus, the order swapped every round; written: each run, the medians and the speedup."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.baseline_code import extract, revisions
from bench.wallclock import ROOT, load_average, machine, model_path

RunOnce = Callable[[Path, Path, int, int, Path], dict]  # (code, work folder, files, rows, model) -> run


def compare(argv: list[str] | None, doc: str, default_out: Path, run_once: RunOnce) -> dict:
    """Parse the benchmark's arguments (--baseline-ref, --files, --rows, --rounds, --model, --out), run both code
    versions `--rounds` times alternating, write the JSON to --out and return it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    model = model_path(args.model)
    baseline, head, dirty = revisions(args.baseline_ref)
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"baseline": extract(baseline, Path(tmp)), "this": ROOT}
        for k in range(args.rounds):
            order = ["baseline", "this"] if k % 2 == 0 else ["this", "baseline"]
            for name in order:
                load = load_average()
                run = run_once(codes[name], Path(tmp) / f"{name}-{k}", args.files, args.rows, model)
                run["load_before"] = round(load, 2)
                runs[name].append(run)
                print(f"round {k} {name}: {run['wall_s']} s, rows embedded {run['rows_embedded']}, {run['files']}")
    medians = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "baseline": baseline,
        "head": head,
        "uncommitted_changes": dirty,
        "corpus": {"files": args.files, "rows_per_file": args.rows, "model": args.model, "dtype": "float32"},
        "runs": runs,
        "median_wall_s": medians,
        "speedup": round(medians["baseline"] / medians["this"], 2),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"median_wall_s": medians, "speedup": result["speedup"]}))
    return result
