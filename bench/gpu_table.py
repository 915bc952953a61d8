"""Markdown table of one or more `bench/gpu.sh` JSON results (each run's ratios are to its own `ours`).

python -m bench.gpu_table bench/results/gpu_h200.json bench/results/gpu_h200_levers.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def variants(results: dict) -> list[str]:
    """The variants a run measured (ours*, st_*), in the order they ran (the JSON keeps it)."""
    return [
        k for k, v in results.items() if isinstance(v, dict) and k.startswith(("ours", "st_")) and k != "ours_profile"
    ]


def render(results: dict, label: str) -> list[str]:
    """One table row per variant of one run: wall seconds, tokens/s, MFU, and its time over that run's `ours`.
    `set-up s` is the load-time probes, and for a compiled variant mostly its compile (with the warm-up pass)."""
    ours = results.get("ours", {}).get("seconds")
    lines = []
    for name in variants(results):
        r = results[name]
        if "seconds" not in r:
            lines.append(f"| {label} | `{name}` | {r.get('error', 'not measured')[:60]} |" + " |" * 9)
            continue
        cos = r.get("cosine_vs_ours_min")
        lines.append(
            f"| {label} | `{name}` | {r['seconds']:.2f} | {r.get('first_pass_seconds', r.get('all_seconds', [None])[0]) or ''} "
            f"| {r.get('set_up_seconds', '')} | {r['tokens_per_s']:,} | {100 * r['mfu']:.1f} % | {100 * r['mfu_matmul_only']:.1f} % "
            f"| {r['padding_efficiency']:.3f} | {r['seconds'] / ours:.2f} | {r.get('peak_gpu_memory_gb', '')} "
            f"| {'' if cos is None else f'{cos:.4f}'} |"
        )
    return lines


def main(paths: list[str]) -> str:
    header = [
        "| run | variant | best pass s | first pass s | set-up s | tokens/s | MFU | MFU (matmuls) | padding eff. "
        + "| time ÷ ours (same run) | peak GPU GB | cosine min to ours |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    body = []
    for path in paths:
        results = json.loads(Path(path).read_text())
        corpus = results["corpus"]
        label = f"{Path(path).stem}: {results['docs']} docs, {corpus['tokens'] / 1e6:.1f} M tokens"
        body += render(results, label)
    return "\n".join(header + body)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
