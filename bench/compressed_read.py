"""Peak memory of reading one compressed JSONL file (one read unit: a .gz/.zst file is never split) as it grows.

For each size, a `.jsonl.gz` of about that many MB of JSON text (the sib200 sample repeated, unique ids) is read
whole through pipeline.units.read_unit in its own process (the read task's work: decompress, parse, Arrow blocks;
no model), with `output.keep_columns` [lang, topic] (the kept-type pre-pass, observed_kept_types, in the same
process first). The baseline in the same run is the same process that imports the reader and reads nothing.
Peak RSS is VmHWM of that process.

    .venv/bin/python bench/compressed_read.py --mb 64,256,1024 --out bench/results/compressed_read.md
"""

from __future__ import annotations

import argparse
import gzip
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
from pipeline.reading import ReadSpec, observed_kept_types
from pipeline.storage import list_inputs
from pipeline.units import Unit, read_unit
mode, folder = sys.argv[1], sys.argv[2]
root, listed = list_inputs(folder, StorageConfig())
spec = ReadSpec(root, None, "text", "id", ("lang", "topic"))
start, rows = time.perf_counter(), 0
if mode == "read":
    observed_kept_types(spec, listed[0].path)
    rows = sum(b.num_rows for b in read_unit(spec, Unit(listed[0].path, 0)))
wall = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across fork and exec
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
rss = int(status["VmHWM"].split()[0]) / 1024
print("RESULT " + json.dumps({"rows": rows, "wall_s": round(wall, 1), "peak_rss_mb": round(rss, 1)}))
"""


def write_corpus(folder: Path, mb: int) -> Path:
    """big.jsonl.gz holding about `mb` MB of JSON text: the sample's records, repeated with unique ids."""
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    path = folder / "big.jsonl.gz"
    written, copy = 0, 0
    with gzip.open(path, "wb", compresslevel=1) as f:
        while written < mb * 10**6:
            text = "".join(json.dumps({**r, "id": f"{copy}-{r['id']}"}, ensure_ascii=False) + "\n" for r in records)
            data = text.encode()
            f.write(data)
            written, copy = written + len(data), copy + 1
    return path


def run(mode: str, folder: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", CHILD, mode, str(folder)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(out.stderr[-3000:])
    return {"mode": mode, **json.loads(line[len("RESULT ") :])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", default="64,256,1024", help="sizes of JSON text in MB, comma-separated")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compressed_read.md")
    args = parser.parse_args()
    load, results = os.getloadavg(), []
    for mb in [int(m) for m in args.mb.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_corpus(Path(tmp), mb)
            size = path.stat().st_size
            results.append({"mb": mb, "gz_bytes": size, **run("import only", Path(tmp))})
            results.append({"mb": mb, "gz_bytes": size, **run("read", Path(tmp))})
    load_after = os.getloadavg()
    lines = [
        "# Peak memory of reading one compressed JSONL file (bench/compressed_read.py)",
        "",
        (
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other work: "
            f"load average {load[0]:.1f} before, {load_after[0]:.1f} after. Each line is its own process (peak RSS = "
            f"VmHWM); `import only` is the baseline: the same process reading nothing. "
            f"`python bench/compressed_read.py --mb {args.mb}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        ),
        "",
        "| JSON text MB | .gz MB | measure | rows | wall s | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['mb']} | {r['gz_bytes'] / 1e6:.0f} | {r['mode']} | {r['rows']:,} | {r['wall_s']} | "
            f"{r['peak_rss_mb']} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
