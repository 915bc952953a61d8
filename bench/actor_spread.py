"""How many embedding actors of a pool receive rows of a small corpus, ours against a baseline commit in the same run.

A corpus of ROWS rows in one JSONL file and in 30 files, each embedded by jobs.embed (tiny BERT, in-process Ray)
with a pool of ACTORS CPU embedding actors, packed into units (the default input.unit_bytes) and one unit per file
(input.unit_bytes 256; measured before JSONL files over unit_bytes were split into byte ranges, which 256 now
does). Reports the embedding actors that embedded rows (the summary's embed_actors and
vectors_per_actor, counted by the embed actors themselves; the baseline's summary lacks them before they were added),
wall time and that the outputs hold the same ids and vectors.

    .venv/bin/python bench/actor_spread.py --baseline-ref main --out bench/results/actor_spread.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_code import EMBED_CHILD, build_tiny_model, extract, revisions, vectors_by_id


def write_corpus(folder: Path, rows: int, files: int) -> None:
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"id": f"r{r:05d}", "text": f"word{r} token{r % 97} piece{r % 13} hello world"}) for r in range(rows)
    ]
    per = -(-rows // files)
    for f in range(files):
        (folder / f"part-{f:02d}.jsonl").write_text("\n".join(lines[f * per : (f + 1) * per]) + "\n")


def config(model: Path, uri: str, out: str, actors: int, unit_bytes: int | None) -> dict:
    return {
        "input": {
            "uri": uri,
            "format": "jsonl",
            "id_column": "id",
            **({"unit_bytes": unit_bytes} if unit_bytes else {}),
        },
        "output": {"uri": out},
        "model": {"name_or_path": str(model), "pooling": "mean", "max_tokens": 32},
        "compute": {"num_actors": actors, "cpus_per_actor": 0.25, "num_tokenizers": 1, "cpus_per_tokenizer": 0.25},
    }


def run_child(cfg: dict, work: Path, name: str, code: Path, attempts: int = 3) -> dict:
    """One embed job in a child process; again (up to `attempts`) when Ray itself failed to start (a loaded
    machine: "timed out during startup"), which is no measurement."""
    (work / f"{name}.json").write_text(json.dumps(cfg))
    log = work / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    for attempt in range(attempts):
        with open(log, "wb") as handle:
            rc = subprocess.run(
                [sys.executable, "-c", EMBED_CHILD, str(work / f"{name}.json")],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=code,
                check=False,
            ).returncode
        if rc == 0 or "timed out during startup" not in log.read_text() or attempt == attempts - 1:
            break
        print(f"{name}: Ray did not start, again", flush=True)
        shutil.rmtree(cfg["output"]["uri"], ignore_errors=True)
    if rc != 0:
        raise RuntimeError(f"{log} failed:\n{log.read_text()[-3000:]}")
    line = next(x for x in log.read_text().splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--actors", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "actor_spread.md")
    args = parser.parse_args()

    ref, head, dirty = revisions(args.baseline_ref)
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_model(work)
        baseline = extract(ref, work)
        for files in (1, 30):
            write_corpus(work / f"corpus{files}", args.rows, files)
        for files in (1, 30):
            for unit_bytes in (None, 256):
                vectors = {}
                for label, code in (("baseline", baseline), ("ours", REPO)):
                    name = f"{label}-{files}-{unit_bytes}"
                    cfg = config(model, str(work / f"corpus{files}"), str(work / name), args.actors, unit_bytes)
                    print(f"running {name}", flush=True)
                    result = run_child(cfg, work, name, code)
                    summary = result["summary"]
                    vectors[label] = vectors_by_id(work / name)
                    rows_out.append(
                        {
                            "code": label,
                            "files": files,
                            "unit_bytes": unit_bytes or "default",
                            "units": summary["units"],
                            "embed_actors": summary.get("embed_actors", "-"),
                            "vectors_per_actor": summary.get("vectors_per_actor", "-"),
                            "rows_embedded": summary["rows_embedded"],
                            "wall_s": result["wall_s"],
                        }
                    )
                    print(rows_out[-1], flush=True)
                same = vectors["baseline"].keys() == vectors["ours"].keys() and all(
                    np.allclose(vectors["baseline"][k], vectors["ours"][k], atol=1e-5) for k in vectors["ours"]
                )
                rows_out[-1]["same_output_as_baseline"] = same
                rows_out[-2]["same_output_as_baseline"] = same
    load = os.getloadavg()
    lines = [
        "# Embedding actors that receive rows of a small corpus",
        "",
        (
            f"`python bench/actor_spread.py --baseline-ref {args.baseline_ref} --rows {args.rows} --actors "
            f"{args.actors}`; baseline {ref[:10]}, ours {head}{'+' if dirty else ''}."
        ),
        (
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average at the end "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (shared with other work). Tiny BERT (2 layers, hidden "
            f"64), {args.actors} CPU embedding actors (compute.num_actors), in-process Ray, one job at a time."
        ),
        "",
        "| code | files | input.unit_bytes | units | embed_actors | vectors per actor | rows | wall s | same output |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows_out:
        lines.append(
            f"| {r['code']} | {r['files']} | {r['unit_bytes']} | {r['units']} | {r['embed_actors']} | "
            f"{r['vectors_per_actor']} | {r['rows_embedded']} | {r['wall_s']} | {r.get('same_output_as_baseline')} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
