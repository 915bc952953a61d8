"""Time to the first vector of a small corpus on a pool of several embedding actors, ours against a baseline commit.

A small corpus (pipeline.spreading: at most 16 MiB of input per actor) was read, tokenized and cut into shares before
the embedding pool started: its model actors began to load after the last row was tokenized. Now they start while
it is read and tokenized. Each round runs jobs.embed (in-process Ray, a child process per job) on ROWS rows in one
JSONL file with ACTORS CPU embedding actors, the baseline's code then ours, and reports per job:

- first_vector_s: from the job's start (the child's clock before run_embed) to the first output Parquet file
  (its mtime: the write stage writes a block once its vectors are done);
- wall_s: the whole job (run_embed), and cpu_s: the child's process tree, Ray's daemons and workers included
  (bench.process_tree: this process is their subreaper);
- the summary's embed_actors / vectors_per_actor, and (ours) embed_actors_started_s / tokenized_s;
- whether both outputs hold the same ids and vectors.

    .venv/bin/python -m bench.first_vector --baseline-ref main --rounds 3 --out bench/results/first_vector.md
    .venv/bin/python -m bench.first_vector --model .models/multilingual-e5-small   # a real model's load

Wall and first-vector seconds move with the machine's load; CPU seconds barely do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_code import build_tiny_model, extract, revisions, vectors_by_id
from process_tree import become_subreaper, children_cpu, reap_orphans

CHILD = """
import json, sys, time
from pathlib import Path
from pipeline.config import EmbedConfig
from pipeline.embed_job import run_embed
cfg = EmbedConfig.model_validate(json.loads(Path(sys.argv[1]).read_text()))
started = time.time()
summary = run_embed(cfg)
print("RESULT " + json.dumps({"summary": summary, "started": started, "wall_s": time.time() - started}))
"""


def write_corpus(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (
        json.dumps({"id": f"r{r:06d}", "text": f"word{r} token{r % 97} piece{r % 13} hello world"}) for r in range(rows)
    )
    path.write_text("\n".join(lines) + "\n")


def config(model: Path, corpus: Path, out: Path, actors: int) -> dict:
    return {
        "input": {"uri": str(corpus), "format": "jsonl", "id_column": "id"},
        "output": {"uri": str(out)},
        "model": {"name_or_path": str(model), "pooling": "mean", "max_tokens": 64},
        "compute": {"num_actors": actors, "cpus_per_actor": 0.5, "num_tokenizers": 1, "cpus_per_tokenizer": 0.5},
    }


def run_job(code: Path, cfg: dict, work: Path, name: str, attempts: int = 3) -> dict:
    """One embed job in a child process with `code` first on its path; again when Ray itself did not start (a
    loaded machine: "timed out during startup"), which is no measurement."""
    (work / f"{name}.json").write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    for attempt in range(attempts):
        cpu = children_cpu()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(work / f"{name}.json")],
            capture_output=True,
            text=True,
            env=env,
            cwd=code,
            check=False,
        )
        reap_orphans()
        cpu = children_cpu() - cpu
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is not None:
            break
        if "timed out during startup" not in out.stderr or attempt == attempts - 1:
            raise RuntimeError(f"{name}: exit {out.returncode}: {out.stderr[-3000:]}")
        print(f"{name}: Ray did not start, again", flush=True)
        shutil.rmtree(cfg["output"]["uri"], ignore_errors=True)
    result = json.loads(line[len("RESULT ") :])
    files = [p for p in Path(cfg["output"]["uri"]).glob("*.parquet")]
    first = min(p.stat().st_mtime for p in files) - result["started"]
    return {**result, "cpu_s": round(cpu, 1), "first_vector_s": round(first, 1), "wall_s": round(result["wall_s"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="a local model directory (default: a tiny BERT)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "first_vector.md")
    args = parser.parse_args()

    become_subreaper()
    ref, head, dirty = revisions(args.baseline_ref)
    runs: dict[str, list[dict]] = {"baseline": [], "ours": []}
    same = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model.resolve() if args.model else build_tiny_model(work)
        codes = {"baseline": extract(ref, work), "ours": REPO}
        write_corpus(work / "corpus" / "part-00.jsonl", args.rows)
        for round_ in range(args.rounds):
            for label, code in codes.items():
                name = f"{label}-{round_}"
                result = run_job(code, config(model, work / "corpus", work / name, args.actors), work, name)
                runs[label].append(result)
                keys = ("embed_actors", "vectors_per_actor", "embed_actors_started_s", "tokenized_s")
                print(
                    name,
                    {k: result[k] for k in ("first_vector_s", "wall_s", "cpu_s")},
                    {k: result["summary"].get(k) for k in keys},
                    flush=True,
                )
            a, b = vectors_by_id(work / f"baseline-{round_}"), vectors_by_id(work / f"ours-{round_}")
            same.append(a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-5) for k in a))
            for label in codes:
                shutil.rmtree(work / f"{label}-{round_}")
    load = os.getloadavg()
    lines = [
        "# Time to the first vector of a small corpus on a pool of embedding actors",
        "",
        (
            f"`python -m bench.first_vector --baseline-ref {args.baseline_ref} --rows {args.rows} --actors {args.actors} "
            f"--rounds {args.rounds}{f' --model {args.model}' if args.model else ''}`; baseline {ref[:10]}, ours "
            f"{head}{'+' if dirty else ''}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        ),
        (
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average at the end {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f} (shared with other work: wall and first-vector seconds are not performance figures). "
            f"{'Tiny BERT (2 layers, hidden 64)' if not args.model else args.model.name}, {args.actors} CPU embedding "
            "actors, in-process Ray, one job at a time, baseline and ours alternating."
        ),
        "",
        "| code | first vector s (median; all) | job wall s (median; all) | CPU s (median; all) | embed_actors |",
        "|---|---|---|---|---|",
    ]

    def cell(rs: list[dict], key: str) -> str:
        values = [r[key] for r in rs]
        return f"{statistics.median(values):.1f}; {', '.join(f'{v:.1f}' for v in values)}"

    for label, rs in runs.items():
        actors = sorted({r["summary"].get("embed_actors", "-") for r in rs}, key=str)
        lines.append(
            f"| {label} | {cell(rs, 'first_vector_s')} | {cell(rs, 'wall_s')} | {cell(rs, 'cpu_s')} | {actors} |"
        )
    lines += ["", f"Same ids and vectors (atol 1e-5) in every round: {all(same)}."]
    ours = [(r["summary"].get("embed_actors_started_s"), r["summary"].get("tokenized_s")) for r in runs["ours"]]
    lines.append(f"Ours, embedding actors began to start / last row tokenized (s after the job's start): {ours}.")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
