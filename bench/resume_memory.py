"""Driver memory vs corpus size, and the cost of resuming a killed run (jobs.embed, tiny model, this machine).

1. Driver peak RSS (VmHWM of the driver process; Ray's own processes and the workers are not the driver) for
   ROWS and SCALE x ROWS rows with ids, for input.duplicate_ids keep_first, error and unchecked; the same files,
   counts and settings on both sides, so the ratio isolates what grows with rows. The baseline is the driver-side
   duplicate pre-pass of an earlier commit (--baseline-ref, extracted with `git archive`), run in the same
   invocation on the same corpora.
2. Resume: run the job, SIGKILL the driver once half of the units are committed, run the same config again; the
   rerun's rows_read and rows_embedded as a share of the rows (the bar: <= 55 %).

Every job runs in its own process with its own in-process Ray (`ray.init()` by the job), one at a time.

    .venv/bin/python bench/resume_memory.py --rows 100000 --scale 10 --out bench/results/resume_memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_code import EMBED_CHILD, build_tiny_model, extract

POLICIES = ("keep_first", "error", "unchecked")


def write_corpus(folder: Path, rows: int, files: int) -> None:
    """`files` Parquet files of unique ids and short texts (5-12 words)."""
    folder.mkdir(parents=True)
    per = -(-rows // files)
    for f in range(files):
        start, stop = f * per, min(rows, (f + 1) * per)
        ids = [f"doc-{i:09d}" for i in range(start, stop)]
        texts = [" ".join(f"word{(i * 7 + j) % 1000}" for j in range(5 + i % 8)) for i in range(start, stop)]
        pq.write_table(pa.table({"id": ids, "text": texts}), folder / f"part-{f:04d}.parquet", row_group_size=20000)


def config(model: Path, corpus: Path, out: Path, policy: str) -> dict:
    return {
        "input": {"uri": str(corpus), "format": "parquet", "id_column": "id", "duplicate_ids": policy},
        "output": {"uri": str(out)},
        "model": {"name_or_path": str(model), "pooling": "mean", "max_tokens": 32},
        "batching": {"max_tokens_per_batch": 16384, "rows_per_block": 4096},
        "compute": {"num_tokenizers": 1, "cpus_per_tokenizer": 0.5, "cpus_per_actor": 1},
    }


def start_child(cfg: dict, work: Path, name: str, pythonpath: Path) -> tuple[subprocess.Popen, Path]:
    path = work / f"{name}.json"
    path.write_text(json.dumps(cfg))
    log = work / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-c", EMBED_CHILD, str(path)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=pythonpath,
        )
    return proc, log


def result(proc: subprocess.Popen, log: Path) -> dict:
    if proc.wait() != 0:
        raise RuntimeError(f"{log} failed:\n{log.read_text()[-3000:]}")
    line = next(x for x in log.read_text().splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def run(cfg: dict, work: Path, name: str, pythonpath: Path) -> dict:
    print(f"running {name}", flush=True)
    return result(*start_child(cfg, work, name, pythonpath))


def memory(args: argparse.Namespace, model: Path, work: Path) -> list[dict]:
    sizes = (args.rows, args.rows * args.scale)
    for rows in sizes:
        write_corpus(work / f"corpus-{rows}", rows, args.files)
    sides = [("ours", REPO, POLICIES)]
    if args.baseline_ref:
        sides.append((f"baseline {args.baseline_ref[:10]}", extract(args.baseline_ref, work), ("keep_first",)))
    table = []
    for label, code, policies in sides:
        for policy in policies:
            row = {"code": label, "policy": policy}
            for rows in sizes:
                name = f"{label.split()[0]}-{policy}-{rows}"
                res = run(config(model, work / f"corpus-{rows}", work / f"out-{name}", policy), work, name, code)
                assert res["summary"]["rows_embedded"] == rows, res["summary"]
                row[f"rss_{rows}"] = res["driver_peak_rss_mb"]
                row[f"wall_{rows}"] = res["wall_s"]
            row["ratio"] = round(row[f"rss_{sizes[1]}"] / row[f"rss_{sizes[0]}"], 3)
            table.append(row)
            print(json.dumps(row), flush=True)
    return table


def resume(args: argparse.Namespace, model: Path, work: Path) -> dict:
    corpus, out = work / "corpus-resume", work / "out-resume"
    write_corpus(corpus, args.resume_rows, args.resume_files)
    cfg = config(model, corpus, out, "keep_first")
    cfg["input"]["unit_bytes"] = 1 << 16  # one unit per file, not packed (pipeline.units): the kill lands between units
    proc, log = start_child(cfg, work, "resume-first", REPO)
    units = out / "_run" / "units"
    half = args.resume_files // 2
    while proc.poll() is None and len(list(units.glob("*.json"))) < half:
        time.sleep(0.05)
    if proc.poll() is not None:
        raise RuntimeError(
            f"the first attempt ended before half of the units were committed:\n{log.read_text()[-2000:]}"
        )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(list(units.glob("*.json")))
    time.sleep(3)
    second = run(cfg, work, "resume-second", REPO)["summary"]
    rows = args.resume_rows
    return {
        "rows": rows,
        "units": second["units"],
        "units_committed_at_kill": committed,
        "rerun_rows_read": second["rows_read"],
        "rerun_rows_embedded": second["rows_embedded"],
        "rows_reused": second["rows_reused"],
        "read_share": round(second["rows_read"] / rows, 3),
        "embed_share": round(second["rows_embedded"] / rows, 3),
        "rerun_wall_s": second["wall_seconds"],
    }


def report(args: argparse.Namespace, mem: list[dict], res: dict | None) -> str:
    small, big = args.rows, args.rows * args.scale
    lines = [
        "# Driver memory vs corpus size, and resume cost (bench/resume_memory.py)",
        "",
        (
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs "
            f"(load average at start {os.getloadavg()[0]:.0f}); tiny 2-layer BERT (hidden 64), max_tokens 32, Parquet "
            f"input in {args.files} files with unique ids; each run its own process and in-process Ray."
        ),
        f"Command: `.venv/bin/python bench/resume_memory.py {' '.join(sys.argv[1:])}`",
        "",
        (
            f"| code | duplicate_ids | driver peak RSS, {small:,} rows (MB) | driver peak RSS, {big:,} rows (MB) "
            f"| ratio | wall {small:,} / {big:,} (s) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for r in mem:
        lines.append(
            f"| {r['code']} | {r['policy']} | {r[f'rss_{small}']} | {r[f'rss_{big}']} | {r['ratio']} "
            f"| {r[f'wall_{small}']} / {r[f'wall_{big}']} |"
        )
    if res:
        lines += [
            "",
            (
                f"Resume: {res['rows']:,} rows in {res['units']} units (one per file); the first attempt was SIGKILLed "
                f"once {res['units_committed_at_kill']} units were committed. The rerun of the same config read "
                f"{res['rerun_rows_read']:,} rows ({res['read_share']:.1%}) and embedded {res['rerun_rows_embedded']:,} "
                f"({res['embed_share']:.1%}), reusing {res['rows_reused']:,}; rerun wall {res['rerun_wall_s']} s."
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000, help="rows of the small corpus")
    p.add_argument("--scale", type=int, default=10, help="the large corpus has scale x rows")
    p.add_argument("--files", type=int, default=8, help="files per corpus (the same for both sizes)")
    p.add_argument("--baseline-ref", default="6347ec8", help="git ref with the driver-side pre-pass ('' to skip)")
    p.add_argument("--resume-rows", type=int, default=40_000)
    p.add_argument("--resume-files", type=int, default=20)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    p.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="resume-bench-") as tmp:
        work = Path(tmp)
        model = build_tiny_model(work)
        mem = [] if args.skip_memory else memory(args, model, work)
        res = resume(args, model, work) if args.resume_rows else None
    text = report(args, mem, res)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"memory": mem, "resume": res}, indent=2))


if __name__ == "__main__":
    main()
