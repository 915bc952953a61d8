"""Corpora shaped like real ones, ours against a baseline commit in the same run (jobs.embed, tiny model, this machine).

1. Many small files: FILES JSONL files of 1-3 rows in 40 directories, on local disk and on a moto S3 server on
   loopback, and the same rows in one file; the embed job's wall time, driver peak RSS (VmHWM of the driver
   process), output Parquet files and unit markers. The baseline is `--baseline-ref` (the pipeline and jobs packages
   extracted with `git archive`), run on the same corpora with the same settings.
2. One big file (Parquet of one row group and of 20, the same rows as JSONL and gzipped JSONL): the Arrow memory
   a read task holds while it reads the file (pipeline.reading.read_file, peak of `pa.total_allocated_bytes()`) and the process's peak RSS, ours and
   baseline.

Every job runs in its own process with its own in-process Ray, one at a time.

    .venv/bin/python bench/corpus_shapes.py --baseline-ref 81b3339 --out bench/results/corpus_shapes.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_code import EMBED_CHILD, build_tiny_model, extract

READ_CHILD = """
import json, sys, time
from pathlib import Path
import pyarrow as pa
from pipeline.config import StorageConfig
from pipeline.reading import ReadSpec, read_file
from pipeline.storage import resolve
spec = ReadSpec(resolve(sys.argv[1], StorageConfig()), None, "text", "id", ())  # format from the extension
start, peak, rows = time.perf_counter(), 0, 0
for block in read_file(spec, sys.argv[2]):
    peak, rows = max(peak, pa.total_allocated_bytes()), rows + block.num_rows
# VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across fork and exec
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
rss = int(status["VmHWM"].split()[0]) / 1024
print("RESULT " + json.dumps({"rows": rows, "arrow_peak_mb": round(peak / 2**20, 1), "peak_rss_mb": round(rss, 1),
                              "wall_s": round(time.perf_counter() - start, 1)}))
"""


LISTING_CHILD = """
import json, sys, time
from pathlib import Path
from pipeline.config import StorageConfig
from pipeline.fingerprint import listing_digest
from pipeline.storage import list_inputs
from pipeline.units import plan_units, unit_items
def hwm():
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmHWM"].split()[0]) / 1024
before = hwm()
start = time.perf_counter()
root, listed = list_inputs(sys.argv[1], StorageConfig())
units = plan_units(root, listed, "jsonl", 256 << 20)
items = unit_items(units)
record = json.dumps(listing_digest(listed))
print("RESULT " + json.dumps({"files": len(listed), "units": len(units), "fingerprint_kb": round(len(record) / 1024),
                              "imports_rss_mb": round(before, 1), "peak_rss_mb": round(hwm(), 1),
                              "wall_s": round(time.perf_counter() - start, 1)}))
"""


def listing(args: argparse.Namespace, work: Path, sides: list[tuple[str, Path]]) -> list[dict]:
    """The driver's listing and unit plan for N empty-ish files: what it holds per file (no Ray, no model)."""
    out = []
    for count in args.listing:
        folder = work / f"listing-{count}"
        for f in range(count):
            path = folder / f"d{f % 100:03d}" / f"f{f:07d}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b'{"text": "x"}\n')
        for label, code in sides:
            res = run_child(LISTING_CHILD, [str(folder)], work, f"listing-{label.split()[0]}-{count}", code)
            row = {"code": label, **res}
            out.append(row)
            print(json.dumps(row), flush=True)
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    return out


def small_files(count: int, lang: bool = False) -> dict[str, bytes]:
    """`count` JSONL files of 1-3 short rows in 40 directories, by relative path; `lang`: a `lang` key too."""
    out = {}
    for f in range(count):
        extra = {"lang": ("en", "fr")[f % 2]} if lang else {}
        rows = [json.dumps({"text": f"word{f} token{r} piece{f % 13} hello world", **extra}) for r in range(1 + f % 3)]
        out[f"d{f % 40:02d}/f{f:05d}.jsonl"] = ("\n".join(rows) + "\n").encode()
    return out


def write_local(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def config(model: Path, uri: str, out: str, endpoint: str | None, keep: list[str]) -> dict:
    return {
        "input": {"uri": uri, "format": "jsonl"},
        "output": {"uri": out, "keep_columns": keep},
        "model": {"name_or_path": str(model), "pooling": "mean", "max_tokens": 32},
        "storage": {"endpoint_url": endpoint} if endpoint else {},
        "compute": {"num_tokenizers": 1, "cpus_per_tokenizer": 0.5, "cpus_per_actor": 1},
    }


def run_child(script: str, args: list[str], work: Path, name: str, code: Path) -> dict:
    print(f"running {name}", flush=True)
    log = work / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    with open(log, "wb") as handle:
        rc = subprocess.run(
            [sys.executable, "-c", script, *args],
            check=False,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=code,
        ).returncode
    if rc != 0:
        raise RuntimeError(f"{log} failed:\n{log.read_text()[-3000:]}")
    line = next(x for x in log.read_text().splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def count_outputs(uri: str, endpoint: str | None) -> tuple[int, int]:
    """(output Parquet files, unit markers) under an output location."""
    import pyarrow.fs as pafs

    from pipeline.config import StorageConfig
    from pipeline.storage import resolve

    loc = resolve(uri, StorageConfig(endpoint_url=endpoint))
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
    rels = [os.path.relpath(i.path, loc.path) for i in infos if i.type == pafs.FileType.File]
    parts = sum(1 for r in rels if "/" not in r and r.endswith(".parquet"))
    return parts, sum(1 for r in rels if r.startswith("_run/units/"))


def start_s3(work: Path) -> tuple[object, str]:
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def put_s3(endpoint: str, bucket: str, files: dict[str, bytes]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=f"corpus/{kv[0]}", Body=kv[1]), files.items()))


def many_files(args: argparse.Namespace, model: Path, work: Path, sides: list[tuple[str, Path]]) -> list[dict]:
    files = small_files(args.files, args.keep_lang)
    keep = ["lang"] if args.keep_lang else []
    write_local(work / "small", files)
    one = b"".join(files.values())
    write_local(work / "one", {"all.jsonl": one})
    rows = one.count(b"\n")
    cases = [("local, one file", str(work / "one"), None), (f"local, {args.files:,} files", str(work / "small"), None)]
    server = None
    if args.s3_files:
        server, endpoint = start_s3(work)
        s3_files = dict(list(files.items())[: args.s3_files])
        put_s3(endpoint, "shapes", s3_files)
        cases.append((f"S3 (moto), {args.s3_files:,} files", "s3://shapes/corpus", endpoint))
    table = []
    try:
        for case, uri, endpoint in cases:
            for label, code in sides:
                name = f"{label.split()[0]}-{len(table)}"
                out = f"s3://shapes/out-{name}" if endpoint else str(work / f"out-{name}")
                cfg_path = work / f"{name}.json"
                cfg_path.write_text(json.dumps(config(model, uri, out, endpoint, keep)))
                res = run_child(EMBED_CHILD, [str(cfg_path)], work, name, code)
                parts, markers = count_outputs(out, endpoint)
                summary = res["summary"]
                expected = rows if "S3" not in case else sum(d.count(b"\n") for d in s3_files.values())
                assert summary["rows_embedded"] == expected, summary
                row = {
                    "case": case,
                    "code": label,
                    "rows": summary["rows_embedded"],
                    "wall_s": res["wall_s"],
                    "driver_peak_rss_mb": res["driver_peak_rss_mb"],
                    "output_parquet_files": parts,
                    "unit_markers": markers,
                }
                table.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if server is not None:
            server.stop()
    return table


def big_parquet(args: argparse.Namespace, work: Path, sides: list[tuple[str, Path]]) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = work / "big"
    folder.mkdir()
    n = args.big_rows
    for name, group in (("one_row_group.parquet", n), ("row_groups.parquet", max(n // 20, 1))):
        with pq.ParquetWriter(folder / name, pa.schema([("id", pa.string()), ("text", pa.string())])) as writer:
            for start in range(0, n, group):  # one row group per write_table call
                rows = range(start, min(n, start + group))
                texts = [" ".join(f"w{(i * 31 + j * 7) % 5000}" for j in range(400)) for i in rows]
                writer.write_table(pa.table({"id": [f"r{i}" for i in rows], "text": texts}), row_group_size=group)
    with pq.ParquetFile(folder / "row_groups.parquet") as source, open(folder / "big.jsonl", "w") as jsonl:
        for batch in source.iter_batches(batch_size=8192):
            jsonl.writelines(json.dumps(r) + "\n" for r in batch.to_pylist())
    subprocess.run(["gzip", "-k", "-1", str(folder / "big.jsonl")], check=True)
    names = ("one_row_group.parquet", "row_groups.parquet", "big.jsonl", "big.jsonl.gz")
    out = []
    for name in names:
        size_mb = round((folder / name).stat().st_size / 2**20, 1)
        for label, code in sides:
            res = run_child(READ_CHILD, [str(folder), name], work, f"read-{label.split()[0]}-{name}", code)
            row = {"file": name, "file_mb": size_mb, "code": label, **res}
            out.append(row)
            print(json.dumps(row), flush=True)
    for name in names:
        (folder / name).unlink()
    return out


def head() -> str:
    """The checked-out commit (with `+` when the tree has changes), for the report."""
    ref = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False)
    return ref.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def report(args: argparse.Namespace, many: list[dict], big: list[dict], load: float, listed: list[dict]) -> str:
    lines = [
        "# Corpora shaped like real ones (bench/corpus_shapes.py)",
        "",
        (
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs "
            f"(load average at start {load:.0f}: timings are noisy, compare within a row pair); tiny 2-layer BERT "
            "(hidden 64), max_tokens 32; each run its own process and in-process Ray, one at a time. The baseline "
            f"is commit {args.baseline_ref} run in the same invocation."
        ),
        f"Ours: the code of commit {head()}.",
        f"Command: `.venv/bin/python bench/corpus_shapes.py {' '.join(sys.argv[1:])}`",
    ]
    if many:
        lines += [
            "",
            "## Many small files (JSONL, 1-3 rows each)" + (", output.keep_columns: [lang]" if args.keep_lang else ""),
            "",
            "| input | code | rows | wall s | driver peak RSS MB | output Parquet files | unit markers |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
    for r in many:
        lines.append(
            f"| {r['case']} | {r['code']} | {r['rows']:,} | {r['wall_s']} | {r['driver_peak_rss_mb']} "
            f"| {r['output_parquet_files']:,} | {r['unit_markers']:,} |"
        )
    if big:
        lines += [
            "",
            "## One big file: what a read task holds",
            "",
            (
                "`pipeline.reading.read_file` over the whole file in a fresh process (no Ray): peak Arrow allocation "
                "and peak RSS of that process."
            ),
            "",
            "| file | file MB | code | rows | Arrow peak MB | process peak RSS MB | wall s |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for r in big:
            lines.append(
                f"| {r['file']} | {r['file_mb']} | {r['code']} | {r['rows']:,} | {r['arrow_peak_mb']} "
                f"| {r['peak_rss_mb']} | {r['wall_s']} |"
            )
    if listed:
        lines += [
            "",
            "## The driver's listing and unit plan, by file count",
            "",
            (
                "`list_inputs` + `plan_units` + `unit_items` + the fingerprint's listing record over N local JSONL "
                "files, in a fresh process (no Ray, no model): the driver holds these for the whole run."
            ),
            "",
            "| code | files | units | fingerprint listing KB | RSS after imports MB | peak RSS MB | wall s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in listed:
            lines.append(
                f"| {r['code']} | {r['files']:,} | {r['units']:,} | {r['fingerprint_kb']:,} | {r['imports_rss_mb']} "
                f"| {r['peak_rss_mb']} | {r['wall_s']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4000, help="small JSONL files on local disk (0: no such case)")
    parser.add_argument("--s3-files", type=int, default=2500, help="of those, how many on S3 (0: no S3 case)")
    parser.add_argument(
        "--listing",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[],
        help="file counts, e.g. 20000,100000",
    )
    parser.add_argument("--keep-lang", action="store_true", help="small files with a `lang` key, kept (keep_columns)")
    parser.add_argument("--big-rows", type=int, default=200_000, help="rows of the big files, ~2.3 KB each (0: none)")
    parser.add_argument("--baseline-ref", default=None, help="git ref of the baseline code (none: ours only)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    parser.add_argument("--json", type=Path, default=None, help="write the raw rows here")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    for key, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ.setdefault(key, value)
    with tempfile.TemporaryDirectory(prefix="corpus-shapes-") as tmp:
        work = Path(tmp)
        sides = [("ours", REPO)]
        if args.baseline_ref:
            sides.append((f"baseline {args.baseline_ref[:10]}", extract(args.baseline_ref, work)))
        model = build_tiny_model(work)
        big = big_parquet(args, work, sides) if args.big_rows else []
        many = many_files(args, model, work, sides) if args.files else []
        listed = listing(args, work, sides)
    text = report(args, many, big, load, listed)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"many_files": many, "big_parquet": big, "listing": listed}, indent=1))


if __name__ == "__main__":
    main()
