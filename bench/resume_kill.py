"""SIGKILL a mining or clustering run at a stage, run the same command again, compare with an uninterrupted run.

The tests cut runs short in-process (an exception at a stage boundary); this kills the real entrypoint
(`python -m jobs.mine_bitext` / `jobs.cluster`, its own in-process Ray) with SIGKILL, process group and all, the
moment a given file appears under the output, then runs the same command again without overwrite. Reported per
kill point: what the output held at the kill, the rerun's `stages_reused`, wall seconds of the uninterrupted run
and of the rerun, and whether the outputs are equal (pairs; assignments and centroids).

Kill points: `after:<stage>` (the stage's marker `_run/units/<stage>.json` appeared) or `during:<prefix>` (the
first file under `<out>/<prefix>` appeared, e.g. `work/knn` mid k-NN, `embeddings/target` as the target side's embed
run starts, the source side's finished).

    .venv/bin/python bench/resume_kill.py --rows 4000 --out bench/results/resume_kill.md
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

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
MINE_KILLS = ("during:embeddings/target", "during:work/knn", "after:knn")
CLUSTER_KILLS = ("after:fit-iteration", "after:fit")


def build_tiny_model(work: Path) -> Path:
    """A 2-layer BERT (hidden 64) with a trained tokenizer: tests/model_factory, random weights."""
    sys.path.insert(0, str(REPO / "tests"))
    from model_factory import build_model, train_tokenizer

    texts = [f"word{i} token{i % 97} piece{i % 13}" for i in range(2000)]
    return build_model(work / "bert", "bert", train_tokenizer(texts, vocab_size=500))


def mine_config(work: Path, model: Path, rows: int, out: Path) -> dict:
    """Two text files of `rows` lines each (a shared vocabulary, so the tiny model finds neighbours)."""
    for name, word in (("src.txt", "alpha"), ("tgt.txt", "beta")):
        path = work / name
        if not path.exists():
            path.write_text("".join(f"{word} word{i % 101} token{i % 97} piece{i % 13} n{i}\n" for i in range(rows)))
    return {
        "source": {"uri": str(work / "src.txt"), "format": "text", "lang": "src"},
        "target": {"uri": str(work / "tgt.txt"), "format": "text", "lang": "tgt"},
        "output": {"uri": str(out), "rows_per_file": max(1, rows // 16)},
        "model": {"name_or_path": str(model), "pooling": "mean", "max_tokens": 32},
        "compute": {"num_actors": 1, "cpus_per_actor": 1},
        "mining": {"backend": "local", "block_size": 256},
    }


def cluster_config(work: Path, rows: int, dim: int, k: int, out: Path) -> dict:
    emb = work / f"emb-{rows}-{dim}"
    if not emb.exists():
        emb.mkdir()
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(k, dim))
        for f in range(4):
            x = centres[rng.integers(k, size=rows // 4)] + 0.5 * rng.normal(size=(rows // 4, dim))
            x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
            ids = [f"f{f}#{i}" for i in range(rows // 4)]
            vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim)
            pq.write_table(pa.table({"id": ids, "embedding": vectors}), emb / f"part-{f}.parquet")
    return {
        "input": {"uri": str(emb)},
        "output": {"uri": str(out)},
        "clustering": {"k": k, "seed": 1, "max_iter": 40, "tol": 0.0, "dedup": {"eps": 0.01}},
    }


def run_job(job: str, cfg: dict, work: Path, name: str, kill: str | None = None) -> dict:
    """Run `python -m jobs.<job>` on `cfg`; with `kill`, SIGKILL its process group at that point instead."""
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        "RAY_TMPDIR": tempfile.mkdtemp(prefix="rk-", dir="/tmp"),  # never the shared /tmp/ray session
    }
    log = work / f"{name}.log"
    out = Path(cfg["output"]["uri"])
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"jobs.{job}", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=handle,
            env=env,
            cwd=REPO,
            start_new_session=True,  # its own process group: the kill takes Ray's in-process head with it
        )
        if kill is None:
            stdout, _ = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} failed ({proc.returncode}); see {log}")
            return {"summary": json.loads(stdout), "wall_s": round(time.perf_counter() - start, 1)}
        where, what = kill.split(":", 1)
        marker = out / "_run" / "units" / f"{what}.json" if where == "after" else out / what
        while not (marker.exists() and (where == "after" or any(p.is_file() for p in marker.rglob("*")))):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} ended before {kill} ({proc.returncode}); see {log}")
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return {
        "killed_after_s": round(time.perf_counter() - start, 1),
        "finished_before_kill": (out / "_SUCCESS").exists(),
        "stages_recorded": sorted(p.stem for p in (out / "_run" / "units").glob("*.json")),
        "embeds_finished": sorted(p.parent.name for p in out.glob("embeddings/*/_SUCCESS")),
        "embed_units_committed": {s.name: len(list(s.glob("_run/units/*.json"))) for s in out.glob("embeddings/*")},
        "files_at_kill": len(files),
    }


def table(path: Path, sort: list[str]) -> pa.Table:
    return pads.dataset(path, format="parquet").to_table().sort_by([(c, "ascending") for c in sort])


def outputs_equal(job: str, a: Path, b: Path) -> bool:
    if job == "mine_bitext":
        return table(a / "pairs", ["src_id", "tgt_id"]).equals(table(b / "pairs", ["src_id", "tgt_id"]))
    same = table(a / "assignments", ["id"]).equals(table(b / "assignments", ["id"]))
    return same and pq.read_table(a / "centroids.parquet").equals(pq.read_table(b / "centroids.parquet"))


def iterations(row: dict) -> str:
    if row.get("rerun_fit_iterations_reused"):
        return f" ({row['rerun_fit_iterations_reused']} of {row['iterations']} iterations)"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4000, help="rows per mining side")
    parser.add_argument("--cluster-rows", type=int, default=400_000)
    parser.add_argument("--cluster-dim", type=int, default=128)
    parser.add_argument("--cluster-k", type=int, default=500)
    parser.add_argument("--jobs", nargs="+", default=["mine_bitext", "cluster"], choices=["mine_bitext", "cluster"])
    parser.add_argument("--out", type=Path, help="markdown report")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="resume-kill-") as tmp:
        work = Path(tmp)
        model = build_tiny_model(work)
        plans = {
            "mine_bitext": (MINE_KILLS, lambda out: mine_config(work, model, args.rows, out)),
            "cluster": (
                CLUSTER_KILLS,
                lambda out: cluster_config(work, args.cluster_rows, args.cluster_dim, args.cluster_k, out),
            ),
        }
        for job in args.jobs:
            kills, make = plans[job]
            whole = run_job(job, make(work / f"{job}-whole"), work, f"{job}-whole")
            for kill in kills:
                name = f"{job}-{kill.replace(':', '-').replace('/', '-')}"
                cfg = make(work / name)
                at_kill = run_job(job, cfg, work, name, kill)
                again = run_job(job, cfg, work, f"{name}-rerun")
                row = {
                    "job": job,
                    "kill": kill,
                    **at_kill,
                    "rerun_stages_reused": again["summary"]["stages_reused"],
                    "rerun_fit_iterations_reused": again["summary"].get("fit_iterations_reused"),
                    "iterations": again["summary"].get("iterations"),
                    "rerun_wall_s": again["wall_s"],
                    "uninterrupted_wall_s": whole["wall_s"],
                    "outputs_equal": outputs_equal(job, work / f"{job}-whole", work / name),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.out:
        head = (
            "| job | kill point | killed after s | stages recorded at the kill | embed runs finished; units committed "
            "at the kill | rerun reused | rerun s | uninterrupted s | outputs equal |"
        )
        setup = (
            f"Command: `.venv/bin/python bench/resume_kill.py {' '.join(sys.argv[1:])}`. Machine: {platform.node()}, "
            f"{os.cpu_count()} CPUs, shared with other jobs (wall seconds are noisy; each row's runs are sequential). "
            f"Mining: two text files of {args.rows} rows, tiny random BERT (tests/model_factory), local k-NN backend. "
            f"Clustering: {args.cluster_rows} rows, dim {args.cluster_dim}, k={args.cluster_k}, tol 0 (all 40 "
            "iterations), dedup; the fit records its iteration at most every 30 s."
        )
        lines = [
            "# SIGKILL at a stage, then the same command (bench/resume_kill.py)",
            "",
            setup,
            "",
            head,
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['job']} | `{r['kill']}` | {r['killed_after_s']} | {', '.join(r['stages_recorded'])} | "
                f"{', '.join(r['embeds_finished']) or '-'}; {r['embed_units_committed'] or '-'} | "
                f"{', '.join(r['rerun_stages_reused'])}{iterations(r)} | {r['rerun_wall_s']} | {r['uninterrupted_wall_s']} | "
                f"{r['outputs_equal']} |"
            )
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
