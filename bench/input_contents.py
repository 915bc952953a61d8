"""What recording the input files' content costs a run (pipeline.input_contents.ContentRecorder: sha256 of every
local input file on 4 driver threads, `_run/contents.json`), against one plain read of the same files in the same
run (the least any job's read of them costs).

    python -m bench.input_contents                       # 64 files x 16 MiB
    python -m bench.input_contents --files 16 --mib 64 --rounds 5

The files are written once to a temporary folder and stay in the page cache (a warm read: the hash's CPU cost, not
a disk's). Each round times the plain read and the recorder, in alternating order. Printed: the median wall of
each, MiB/s, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.wallclock import load_average
from pipeline.config import StorageConfig
from pipeline.input_contents import ContentRecorder
from pipeline.storage import list_inputs, resolve

CHUNK = 8 << 20


def plain_read(root: Path, names: list[str]) -> None:
    for name in names:
        with open(root / name, "rb") as f:
            while f.read(CHUNK):
                pass


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--mib", type=int, default=16, help="size of each file")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "in"
        data.mkdir()
        for i in range(args.files):
            (data / f"part-{i:05d}.jsonl").write_bytes(os.urandom(args.mib << 20))
        root, listed = list_inputs(str(data), StorageConfig())
        names = [f.path for f in listed]
        plain_read(data, names)  # into the page cache
        walls: dict[str, list[float]] = {"plain_read": [], "recorder": []}
        loads = [load_average()]
        for r in range(args.rounds):
            for which in ("plain_read", "recorder") if r % 2 == 0 else ("recorder", "plain_read"):
                start = time.perf_counter()
                if which == "plain_read":
                    plain_read(data, names)
                else:
                    out = resolve(str(Path(tmp) / f"out-{r}"), StorageConfig())
                    with ContentRecorder(out, {"input.listing": (root, listed)}):
                        pass
                    assert len(
                        json.loads((Path(tmp) / f"out-{r}" / "_run" / "contents.json").read_text())["input.listing"]
                    ) == len(names)
                walls[which].append(time.perf_counter() - start)
            loads.append(load_average())
    total_mib = args.files * args.mib
    result = {
        "files": args.files,
        "mib_total": total_mib,
        "rounds": args.rounds,
        **{f"{k}_median_s": round(statistics.median(v), 3) for k, v in walls.items()},
        **{f"{k}_mib_per_s": round(total_mib / statistics.median(v), 1) for k, v in walls.items()},
        "walls": {k: [round(w, 3) for w in v] for k, v in walls.items()},
        "load_average": loads,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
