"""Time to the error of a model the actors cannot load: ours (the actor keeps the error and raises it on its first
call, pipeline.actor_start) against a baseline commit (the constructor raises; Ray Data restarts the actor
compute.max_restarts more times), in the same run.

A tiny BERT (tests/model_factory) whose checkpoint lacks layer 1's weights: the driver's checks pass, the model
actor's load_model refuses it (pipeline.model_loading.check_weights_loaded). Each code runs the user's command,
`python -m jobs.embed --config C` (its own in-process Ray, compute.max_restarts as set), --repeats times,
alternating; reported: wall seconds from start to exit (median), exit status, the `error:` line.

    .venv/bin/python bench/actor_start_failure.py --baseline-ref 4dfb542 --out bench/results/actor_start_failure.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_code import build_tiny_model, extract, revisions


def broken_model(work: Path) -> Path:
    """The tiny BERT with every `encoder.layer.1.` weight removed from its checkpoint."""
    from safetensors.torch import load_file, save_file

    model = build_tiny_model(work)
    weights = model / "model.safetensors"
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if ".layer.1." not in k}, weights, metadata={"format": "pt"})
    return model


def run_once(code: Path, config: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jobs.embed", "--config", str(config)],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    wall = time.perf_counter() - start
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return {"wall_s": round(wall, 1), "exit": done.returncode, "error": errors[-1][:160] if errors else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", default="main", help="git commit of the code before the change")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-restarts", type=int, default=3, help="compute.max_restarts (the default is 3)")
    parser.add_argument("--out", type=Path, help="markdown results file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="actor-start-") as tmp:
        work = Path(tmp)
        model = broken_model(work)
        corpus = work / "c.jsonl"
        corpus.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(20)))
        codes = {"baseline": extract(args.baseline_ref, work), "ours": REPO}
        results: dict[str, list[dict]] = {name: [] for name in codes}
        for i in range(args.repeats):
            for name, code in codes.items():
                config = work / f"{name}-{i}.yaml"
                config.write_text(
                    f"input: {{uri: {corpus}, format: jsonl}}\noutput: {{uri: {work / f'out-{name}-{i}'}}}\n"
                    f"model: {{name_or_path: {model}, max_tokens: 32}}\n"
                    f"compute: {{max_restarts: {args.max_restarts}}}\n"
                )
                results[name].append(run_once(code, config))
                print(name, results[name][-1], flush=True)
    base, head, dirty = revisions(args.baseline_ref)
    load = os.getloadavg()
    lines = [
        "# Time to the error of a model the actors cannot load",
        "",
        (
            f"`python bench/actor_start_failure.py --baseline-ref {args.baseline_ref} --repeats {args.repeats}"
            f" --max-restarts {args.max_restarts}`; baseline {base}, ours {head}{' (uncommitted changes)' if dirty else ''};"
            f" {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average at the end"
            f" {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
            + (" (a busy, shared machine)." if load[0] > 1.5 * (os.cpu_count() or 1) else " (quiet).")
        ),
        "",
        "| code | wall s (median) | runs | exit | error line |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        walls = [r["wall_s"] for r in runs]
        lines.append(
            f"| {name} | {statistics.median(walls):.1f} | {', '.join(f'{w:.1f}' for w in walls)} | "
            f"{sorted({r['exit'] for r in runs})} | `{runs[-1]['error']}` |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
