"""The re-embed run that finds new compressed local files, this tree against a baseline commit: the driver's CPU.

For pipeline/reembed: a new gzip file was decompressed on the driver twice besides its read task's decompression:
at plan time, to look for the plain entry it might have been compressed from (moves.decompressed_token), and while
it was embedded, to record its decompressed sha256 (moves.decompressed_as_listed). This tree hashes the decompressed
bytes in the read task as it reads them (pipeline.read_content.DecompressedDigest) and decompresses at plan time
only a file whose declared size (gzip's ISIZE) is some entry's (moves.declared_size).

Each round and code version (alternating, in its own process: bench/baseline_code.py): a version holding one
small plain file, then `--files` gzip JSONL files of about `--mb` MB in all added; the second run is measured:
the driver process's CPU seconds (time.process_time: its threads included; the Ray workers' read tasks, which
decompress in both versions, are not) and its wall clock. The rows are few and short (the model's work is small),
each with a wide field the job does not embed, so that the bytes are mostly what is decompressed. Model: the tiny
2-layer BERT of bench/baseline_code.build_tiny_model, float32 on the CPU.

    .venv/bin/python bench/reembed_compressed_cost.py --baseline-ref main --mb 200 --files 4 --rounds 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_code import REPO, alternate_rounds, build_tiny_model, cpu_table, extract, revisions

CHILD = """
import json, shutil, sys, tempfile, time
from pathlib import Path
from pipeline.reembed.config import ReembedConfig
from pipeline.reembed.job import run_reembed
data, model = Path(sys.argv[1]), sys.argv[2]
work = Path(tempfile.mkdtemp(dir=data.parent))
corpus = work / "corpus"
corpus.mkdir()
shutil.copy(data / "seed.jsonl", corpus / "seed.jsonl")
cfg = ReembedConfig.model_validate({
    "input": {"uri": str(corpus), "format": "jsonl"},
    "output": {"uri": str(work / "emb")},
    "model": {"name_or_path": model, "pooling": "mean", "dtype": "float32", "max_tokens": 32},
    "reembed": {"lease_settle_seconds": 0.1},
})
run_reembed(cfg)
for path in sorted(data.glob("*.gz")):
    shutil.copy(path, corpus / path.name)
wall, cpu = time.perf_counter(), time.process_time()
summary = run_reembed(cfg)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
shutil.rmtree(work)
print("RESULT " + json.dumps({"rows": summary["rows_embedded"], "cpu_s": cpu, "wall_s": wall}))
"""


def write_data(folder: Path, mb: int, files: int) -> int:
    """`seed.jsonl` (4 rows) and `files` gzip JSONL files of about `mb` MB (uncompressed) in all; rows written."""
    folder.mkdir()
    (folder / "seed.jsonl").write_text("".join(json.dumps({"text": f"seed row {i}"}) + "\n" for i in range(4)))
    wide = 16 << 10  # a 16 KiB field per row, not embedded
    per_file = max(1, mb * 10**6 // files // wide)
    for k in range(files):
        lines = (
            json.dumps({"text": f"file {k} row {r}", "blob": os.urandom(wide // 2).hex()}) + "\n"
            for r in range(per_file)
        )
        (folder / f"new-{k:03d}.jsonl.gz").write_bytes(gzip.compress("".join(lines).encode(), compresslevel=1))
    return per_file * files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", required=True)
    parser.add_argument("--mb", type=int, default=200, help="uncompressed MB of the new files, in all")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "reembed_compressed_cost.md")
    args = parser.parse_args()
    base_rev, head, dirty = revisions(args.baseline_ref)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = write_data(work / "data", args.mb, args.files)
        model = build_tiny_model(work)
        baseline = extract(args.baseline_ref, work)
        load = os.getloadavg()
        runs = alternate_rounds(baseline, args.rounds, CHILD, str(work / "data"), str(model))
        load_after = os.getloadavg()
    lines = [
        "# The re-embed run that finds new gzip files: driver CPU (bench/reembed_compressed_cost.py)",
        "",
        (
            f"{args.files} new gzip JSONL files, {args.mb} MB uncompressed in all, {rows:,} rows (a 16 KiB field "
            f"each, not embedded), beside a version of one plain file; the run that embeds them is measured. "
            f"Baseline {base_rev[:10]}, this tree {head}{' (uncommitted changes)' if dirty else ''}. Machine: "
            f"{platform.machine()}, {os.cpu_count()} cores, shared with other work: load average {load[0]:.1f} "
            f"before, {load_after[0]:.1f} after. Alternating processes, median of {args.rounds}. CPU: the driver "
            f"process (Ray's read tasks, which decompress in both versions, are not counted). "
            f"`python bench/reembed_compressed_cost.py --baseline-ref {args.baseline_ref} --mb {args.mb} --files "
            f"{args.files} --rounds {args.rounds}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        ),
        "",
        *cpu_table(runs),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:  # appended: each measurement stays with its load
        f.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
