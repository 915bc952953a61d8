"""The fixed cost of a nightly re-embed on a small corpus: CPU seconds (load-independent) and wall of
`python -m jobs.reembed` for this tree against a baseline commit, in the same run.

    python -m bench.reembed_nightly_cost --baseline-ref main                # 2 rounds, the versions alternating
    python -m bench.reembed_nightly_cost --baseline-ref HEAD~1 --files 4 --rows 10 --rounds 3 --out /tmp/n.json

Each round and code version (the baseline's `pipeline` and `jobs` packages extracted by bench/baseline_code.py),
on a fresh corpus of `--files` JSONL files x `--rows` rows with an id column (so the duplicate-id pass runs, as
with any id column) and a kept column, three processes, each measured as a whole: `first` (the version's first
run), `one_changed` (one file edited: the nightly case), `nothing_changed`. Each is `python -m jobs.reembed` with
its own in-process Ray, as a scheduler starts it; CPU is user + system of the process and of every descendant
(Ray's raylet, workers and actors), counted by making this process a child subreaper (bench/process_tree.py).
The model is a tiny 2-layer BERT (bench/baseline_code.build_tiny_model): the fixed cost, not the model's FLOPs, is
what a small corpus pays. Wall seconds depend on the machine's load (recorded); CPU seconds barely do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.baseline_code import build_tiny_model, extract, revisions
from bench.process_tree import become_subreaper, children_cpu, reap_orphans
from bench.wallclock import ROOT, load_average, machine

SAMPLE = ROOT / "data" / "sample" / "sib200_sample.jsonl"
PHASES = ("first", "one_changed", "nothing_changed")


def run_job(code: Path, config: Path) -> dict:
    """`python -m jobs.reembed --config config` with `code` first on the path: its summary, CPU s and wall s."""
    env = {**os.environ, "PYTHONPATH": str(code), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    cpu, start = children_cpu(), time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "jobs.reembed", "--config", str(config)],
        check=False,
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
    )
    reap_orphans(120.0)
    wall, cpu = time.monotonic() - start, children_cpu() - cpu
    if out.returncode != 0:
        raise RuntimeError(f"{code}: exit {out.returncode}: {out.stderr[-3000:]}")
    # the summary is the last JSON object on stdout (Ray's forwarded worker lines may precede it)
    start = out.stdout.rindex("\n{\n") + 1 if "\n{\n" in out.stdout else out.stdout.index("{")
    summary = json.JSONDecoder().raw_decode(out.stdout[start:])[0]
    return {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "rows_embedded": summary["rows_embedded"]}


def one_version(code: Path, work: Path, files: int, rows: int, model: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines()][: files * rows]
    corpus = work / "corpus"
    corpus.mkdir(parents=True)
    for i in range(files):
        part = records[i * rows : (i + 1) * rows]
        (corpus / f"part-{i:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    config = work / "reembed.yaml"
    raw = {
        "input": {"uri": str(corpus), "format": "jsonl", "id_column": "id"},
        "output": {"uri": str(work / "emb"), "keep_columns": ["lang"]},
        "model": {"name_or_path": str(model), "max_tokens": 96},
        "compute": {"dashboard": False},
    }
    config.write_text(yaml.safe_dump(raw))
    runs = {"first": run_job(code, config)}
    edited = corpus / "part-000.jsonl"
    edited.write_text(edited.read_text().replace('"text": "', '"text": "edited ', 1))
    runs["one_changed"] = run_job(code, config)
    runs["nothing_changed"] = run_job(code, config)
    return runs


def write_result(args: argparse.Namespace, runs: dict[str, list[dict]], baseline: str, head: str, dirty: str) -> dict:
    """The runs so far and their medians per version and phase, written to --out; returns it."""
    medians = {
        name: {
            phase: {key: statistics.median(r[phase][key] for r in rs) for key in ("cpu_s", "wall_s")}
            for phase in PHASES
        }
        for name, rs in runs.items()
        if rs
    }
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "note": "helpers' machine, loaded by other jobs: CPU s are the figure, wall s are not performance figures",
        "baseline": baseline,
        "head": head,
        "uncommitted_changes": dirty,
        "corpus": {"files": args.files, "rows_per_file": args.rows, "model": "tiny bert (2 layers)"},
        "runs": runs,
        "median": medians,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reembed_nightly_cost.json")
    args = parser.parse_args(argv)
    become_subreaper()  # Ray's orphans are reaped here (bench.process_tree)
    baseline, head, dirty = revisions(args.baseline_ref)
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"baseline": extract(baseline, Path(tmp)), "this": ROOT}
        model = build_tiny_model(Path(tmp))
        for k in range(args.rounds):
            for name in ["baseline", "this"] if k % 2 == 0 else ["this", "baseline"]:
                load = load_average()
                run = one_version(codes[name], Path(tmp) / f"{name}-{k}", args.files, args.rows, model)
                runs[name].append({**run, "load_before": round(load, 2)})
                print(f"round {k} {name}: {json.dumps(run)}", flush=True)
                result = write_result(args, runs, baseline, head, dirty)  # after each: a stopped bench keeps them
    print(json.dumps(result["median"]))
    return result


if __name__ == "__main__":
    main()
