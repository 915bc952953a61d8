"""The embed job's read stage over whole local files, this tree against a baseline commit, alternating processes.

For pipeline.read_content: each whole local file's read task stats it before and after its read and hashes it at
that token (a second read of bytes the page cache holds). The sib200 sample repeated to about `--mb` MB with unique
ids, in `--files` JSONL files, each one unit, read through the embed job's read UDF (pipeline.duplicate_ids.
read_units) with text, id and two kept columns, in its own process; process CPU seconds and wall clock, median of
`--rounds`. No model: this is the read stage alone (the model's work on the same rows takes far longer).
`--parquet-blob-kb N`: Parquet files instead, each row with an N KB binary column the job does not read (images,
audio: the read projects text, id and the kept columns, a hash reads every byte).

    .venv/bin/python bench/read_content_cost.py --baseline-ref main --mb 50 --files 20 --rounds 5
    .venv/bin/python bench/read_content_cost.py --baseline-ref main --mb 600 --files 10 --parquet-blob-kb 40
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_code import REPO, alternate_rounds, cpu_table, extract, revisions

SAMPLE = REPO / "data" / "sample" / "sib200_sample.jsonl"

CHILD = """
import json, os, sys, time
import pyarrow as pa
from pipeline.config import StorageConfig
from pipeline.duplicate_ids import read_units
from pipeline.reading import ReadSpec
from pipeline.storage import resolve
from pipeline.units import Unit, unit_items
spec = ReadSpec(resolve(sys.argv[1], StorageConfig()), sys.argv[2], "text", "id", ("lang", "topic"))
names = sorted(os.listdir(sys.argv[1]))
wall, cpu = time.perf_counter(), time.process_time()
rows = 0
for i, name in enumerate(names):  # one read task per unit, as the job's read stage runs them
    batch = pa.Table.from_pylist(unit_items([Unit(name, i)]))
    rows += sum(b.num_rows for b in read_units(batch, spec, None))
print("RESULT " + json.dumps({"rows": rows, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}))
"""


def write_parquet(folder: Path, records: list[dict], file_bytes: int, files: int, blob_kb: int) -> None:
    """`files` uncompressed Parquet files of about `file_bytes` each: the sample's records with unique ids and a
    `blob_kb` KB random binary column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    per_file = max(1, file_bytes // (blob_kb * 1024))
    for k in range(files):
        rows = [{**records[i % len(records)], "id": f"{k}-{i}"} for i in range(per_file)]
        table = pa.Table.from_pylist(rows)
        blobs = pa.array([os.urandom(blob_kb * 1024) for _ in range(per_file)], pa.binary())
        pq.write_table(table.append_column("blob", blobs), folder / f"part-{k:04d}.parquet", compression="none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", required=True)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parquet-blob-kb", type=int, default=0, help="Parquet with a binary column of N KB a row")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "read_content_cost.md")
    args = parser.parse_args()
    base_rev, head, dirty = revisions(args.baseline_ref)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
        (work / "data").mkdir()
        copy = 0
        fmt = "parquet" if args.parquet_blob_kb else "jsonl"
        for k in range(args.files if fmt == "jsonl" else 0):
            with open(work / "data" / f"part-{k:04d}.jsonl", "w", encoding="utf-8") as f:
                while f.tell() < args.mb * 10**6 // args.files:
                    f.write(
                        "".join(
                            json.dumps({**r, "id": f"{copy}-{r['id']}"}, ensure_ascii=False) + "\n" for r in records
                        )
                    )
                    copy += 1
        if fmt == "parquet":
            write_parquet(work / "data", records, args.mb * 10**6 // args.files, args.files, args.parquet_blob_kb)
        baseline = extract(args.baseline_ref, work)
        load = os.getloadavg()
        runs = alternate_rounds(baseline, args.rounds, CHILD, str(work / "data"), fmt)
        load_after = os.getloadavg()
    rows = runs["baseline"][0]["rows"]
    lines = [
        "# The embed job's read stage over whole local files (bench/read_content_cost.py)",
        "",
        (
            f"{args.mb} MB {'JSONL' if fmt == 'jsonl' else f'Parquet (a {args.parquet_blob_kb} KB binary column a row, not read)'} "
            f"in {args.files} files (one unit each), {rows:,} rows, 4 keys read (text, id, 2 kept), "
            f"read through pipeline.duplicate_ids.read_units. Baseline {base_rev[:10]}, this tree "
            f"{head}{' (uncommitted changes)' if dirty else ''}. Machine: {platform.machine()}, {os.cpu_count()} "
            f"cores, shared with other work: load average {load[0]:.1f} before, {load_after[0]:.1f} after. "
            f"Alternating processes, median of {args.rounds}. "
            f"`python bench/read_content_cost.py --baseline-ref {args.baseline_ref} --mb {args.mb} --files "
            f"{args.files} --rounds {args.rounds}"
            f"{f' --parquet-blob-kb {args.parquet_blob_kb}' if fmt == 'parquet' else ''}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        ),
        "",
        *cpu_table(runs),
    ]
    with args.out.open("a") as f:  # appended: each measurement stays with its load
        f.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
