"""The local input listing with its checks for entries it cannot read (pipeline/special_entries.py: dangling links,
pipes, files and folders the user may not read) against a baseline commit's listing, in the same run.

    python -m bench.listing_checks --baseline-ref 93acb2c                 # 200 folders x 100 empty files
    python -m bench.listing_checks --baseline-ref 93acb2c --folders 1000 --files 100 --rounds 5

One tree of empty files in a temporary folder; each round lists it (pipeline.storage.list_files) once per code
version, each in its own process whose working directory and PYTHONPATH are that version's `pipeline` and `jobs`
packages (bench/baseline_code.py), 5 listings per process, the order of the versions swapped every round. Printed:
the median wall of one listing per version and the load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.baseline_code import extract, revisions, run_child
from bench.wallclock import ROOT, load_average

LIST_CHILD = """
import json, sys, time
from pipeline.config import StorageConfig
from pipeline.storage import list_files
walls = []
for _ in range(5):
    start = time.perf_counter()
    _, names = list_files(sys.argv[1], StorageConfig())
    walls.append(time.perf_counter() - start)
print("RESULT " + json.dumps({"files": len(names), "walls": walls}))
"""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--folders", type=int, default=200)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    baseline, head, dirty = revisions(args.baseline_ref)
    walls: dict[str, list[float]] = {"baseline": [], "this": []}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        for d in range(args.folders):
            (tree / f"d{d:04d}").mkdir(parents=True)
            for f in range(args.files):
                (tree / f"d{d:04d}" / f"f{f:04d}.jsonl").touch()
        codes = {"baseline": extract(baseline, Path(tmp)), "this": ROOT}
        for k in range(args.rounds):
            for name in ["baseline", "this"] if k % 2 == 0 else ["this", "baseline"]:
                loads.append(load_average())
                walls[name] += run_child(codes[name], LIST_CHILD, str(tree))["walls"]
    result = {
        "baseline": baseline,
        "head": head,
        "uncommitted_changes": dirty,
        "files": args.folders * args.files,
        "folders": args.folders,
        "median_listing_s": {name: round(statistics.median(w), 3) for name, w in walls.items()},
        "load_average": [round(min(loads), 2), round(max(loads), 2)],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
