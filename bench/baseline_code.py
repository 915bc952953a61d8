"""Run the embed job of this tree and of a baseline commit side by side, for the bench scripts that measure a change
against the code before it (bench/corpus_shapes.py, bench/resume_memory.py).

`extract(ref, work)` gives the baseline's `pipeline` and `jobs` packages (with `git archive`): a child process that
runs with it as its working directory and PYTHONPATH imports that code. `EMBED_CHILD` is that child: it runs
`run_embed` on a config JSON file (argv[1]) and prints `RESULT {summary, driver_peak_rss_mb, wall_s}`.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]

EMBED_CHILD = """
import json, sys, time
from pathlib import Path
from pipeline.config import EmbedConfig
from pipeline.embed_job import run_embed
cfg = EmbedConfig.model_validate(json.loads(Path(sys.argv[1]).read_text()))
start = time.perf_counter()
summary = run_embed(cfg)
wall = time.perf_counter() - start
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
hwm = int(status["VmHWM"].split()[0]) / 1024
print("RESULT " + json.dumps({"summary": summary, "driver_peak_rss_mb": round(hwm, 1), "wall_s": round(wall, 1)}))
"""


def build_tiny_model(work: Path) -> Path:
    """A 2-layer BERT (hidden 64) with a trained tokenizer: tests/model_factory, random weights."""
    sys.path.insert(0, str(REPO / "tests"))
    from model_factory import build_model, train_tokenizer

    texts = [f"word{i} token{i % 97} piece{i % 13}" for i in range(2000)]
    return build_model(work / "bert", "bert", train_tokenizer(texts, vocab_size=500))


def extract(ref: str, work: Path) -> Path:
    """The pipeline and jobs packages of git `ref`, for the baseline."""
    target = work / f"baseline-{ref[:10]}"
    target.mkdir()
    blob = subprocess.run(["git", "archive", ref, "pipeline", "jobs"], cwd=REPO, capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(blob.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def revisions(baseline_ref: str) -> tuple[str, str, str]:
    """(the baseline's full commit, HEAD's short commit, `git status --porcelain pipeline`: non-empty when the
    measured code has uncommitted changes), for a result's header."""

    def git(*words: str) -> str:
        return subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    return git("rev-parse", baseline_ref), git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "pipeline")


def free_port() -> int:
    """A free TCP port on loopback (for a moto S3 server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_child(code: Path, source: str, *args: str) -> dict:
    """Run `source` (a script that prints one `RESULT <json>` line) with the code at `code` first on the path;
    returns that JSON. Each of the two code versions a bench compares runs in its own process."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run(
        [sys.executable, "-c", source, *args], capture_output=True, text=True, env=env, cwd=code, check=False
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:  # the child failed: its own error, not a StopIteration
        raise RuntimeError(f"{code}: exit {out.returncode}: {out.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def in_turns(names: list[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, name) for `rounds` rounds over `names`, every other round in reverse (A B, B A, A B, ...), so neither
    version always runs first on a machine that warms up or slows down during the run."""
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            yield round_, name


def alternate_rounds(baseline: Path, rounds: int, source: str, *args: str) -> dict[str, list[dict]]:
    """run_child of `source` on the baseline's code and this tree's, one after the other, `rounds` times:
    {"baseline": [...], "this tree": [...]}; every run must read the same `rows`."""
    runs: dict[str, list[dict]] = {"baseline": [], "this tree": []}
    for _ in range(rounds):
        runs["baseline"].append(run_child(baseline, source, *args))
        runs["this tree"].append(run_child(REPO, source, *args))
    rows = runs["baseline"][0]["rows"]
    assert all(r["rows"] == rows for rs in runs.values() for r in rs), runs
    return runs


def cpu_table(runs: dict[str, list[dict]]) -> list[str]:
    """Markdown rows of alternate_rounds' `cpu_s` and `wall_s`: medians and every CPU value."""
    lines = ["| code | CPU s (median) | CPU s (all) | wall s (median) |", "|---|---|---|---|"]
    for name, rs in runs.items():
        cpus = [r["cpu_s"] for r in rs]
        lines.append(
            f"| {name} | {statistics.median(cpus):.2f} | {', '.join(f'{c:.2f}' for c in cpus)} | "
            f"{statistics.median(r['wall_s'] for r in rs):.2f} |"
        )
    return lines


def vectors_by_id(out: Path) -> dict[str, np.ndarray]:
    """{id: vector} of the Parquet files a job wrote under `out` (a folder): how two runs' outputs are compared."""
    table = pq.read_table(sorted(out.glob("*.parquet")))
    return dict(zip(table.column("id").to_pylist(), np.asarray(table.column("embedding").to_pylist())))
