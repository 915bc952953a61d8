"""What splitting a big JSONL file into byte ranges costs: the counting pass against the unsplit read, same run.

A JSONL file of about `--mb` MB (the sib200 sample repeated, unique ids) on local disk. Each measure runs in its own
process, one after the other; wall clock and peak RSS (VmHWM) of that process:

- `read whole`: the baseline, pipeline.reading.read_file over the whole file, which is what the single read task of
  an unsplit run does (JSON parsing and Arrow blocks; no tokenizing or embedding, which cost the same split or not);
- `count`: the counting pass, pipeline.units.plan_units with its local counter (count_span_rows over every range,
  one after the other in one process; the embed job runs one Ray task per range, in parallel);
- `read ranges`: every range read through pipeline.units.read_unit one after the other (the split run's read
  tasks together), checked to give the same number of rows as `read whole`.

    .venv/bin/python bench/line_ranges.py --mb 500 --out bench/results/line_ranges.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "sib200_sample.jsonl"

CHILD = """
import json, sys, time
from pathlib import Path
from pipeline.config import StorageConfig
from pipeline.reading import ReadSpec, read_file
from pipeline.storage import list_inputs
from pipeline.units import plan_units, read_unit
mode, folder, unit_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
root, listed = list_inputs(folder, StorageConfig())
spec = ReadSpec(root, "jsonl", "text", "id", ())
start, cpu0, rows, ranges = time.perf_counter(), time.process_time(), 0, 1
if mode == "read whole":
    rows = sum(b.num_rows for b in read_file(spec, listed[0].path))
elif mode == "count":
    units = plan_units(root, listed, "jsonl", unit_bytes)
    ranges, rows = len(units), sum(u.lines.rows for u in units)
else:
    units = plan_units(root, listed, "jsonl", unit_bytes)  # counted: not timed apart, see `count`
    start, cpu0, ranges = time.perf_counter(), time.process_time(), len(units)
    rows = sum(b.num_rows for u in units for b in read_unit(spec, u))
wall = time.perf_counter() - start
cpu = time.process_time() - cpu0
# VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across fork and exec
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
rss = int(status["VmHWM"].split()[0]) / 1024
print("RESULT " + json.dumps({"rows": rows, "ranges": ranges, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                              "peak_rss_mb": round(rss, 1)}))
"""


def write_corpus(folder: Path, mb: int) -> Path:
    """big.jsonl of about `mb` MB: the sample's records, repeated with unique ids."""
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    path = folder / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        copy = 0
        while f.tell() < mb * 10**6:
            f.write("".join(json.dumps({**r, "id": f"{copy}-{r['id']}"}, ensure_ascii=False) + "\n" for r in records))
            copy += 1
    return path


def run(mode: str, folder: Path, unit_bytes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(folder), str(unit_bytes)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(out.stderr[-3000:])
    return {"mode": mode, "unit_bytes": unit_bytes, **json.loads(line[len("RESULT ") :])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--unit-mib", default="256,64", help="input.unit_bytes values in MiB, each under the file")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "line_ranges.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_corpus(Path(tmp), args.mb)
        size = path.stat().st_size
        load = os.getloadavg()
        units = [int(u) << 20 for u in args.unit_mib.split(",")]
        results = [
            run("read whole", Path(tmp), units[0]),
            *(run("count", Path(tmp), u) for u in units),
            run("read ranges", Path(tmp), units[0]),
        ]
        load_after = os.getloadavg()
    assert len({r["rows"] for r in results}) == 1, results
    lines = [
        "# Counting pass of a big JSONL file split into byte ranges (bench/line_ranges.py)",
        "",
        (
            f"File: {size / 1e6:.0f} MB JSONL, {results[0]['rows']:,} rows (the sib200 sample repeated), local disk. "
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other work: "
            f"load average {load[0]:.1f} before, {load_after[0]:.1f} after. Each line is its own process, one after "
            f"the other (wall, CPU seconds, peak RSS = VmHWM). "
            f"`python bench/line_ranges.py --mb {args.mb} --unit-mib {args.unit_mib}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        ),
        "",
        "| measure | unit_bytes | ranges | rows | wall s | CPU s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['unit_bytes'] >> 20} MiB | {r['ranges']} | {r['rows']:,} | {r['wall_s']} | "
            f"{r['cpu_s']} | {r['peak_rss_mb']} |"
        )
    base, count = results[0], results[1]
    lines += [
        "",
        (
            f"The counting pass costs {count['wall_s'] / base['wall_s']:.0%} of the unsplit read's wall time "
            f"({count['cpu_s'] / base['cpu_s']:.0%} of its CPU time), run one range after the other in one process; the "
            "embed job runs a Ray task per range, in parallel. `read whole` is only the read stage of an unsplit run: "
            "tokenizing and embedding the same rows cost the same split or not and take far longer."
        ),
    ]
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"size": size, "results": results}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
