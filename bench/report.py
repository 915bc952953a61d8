"""Numbers -> the markdown table of bench/results/throughput*.md and docs/performance.md."""

from __future__ import annotations

import numpy as np

from bench.baselines import fixed_batch_padding_efficiency, st_padding_efficiency
from bench.flops import ModelShape, forward_flops

NAMES = {
    "a": "(a) sentence-transformers encode",
    "b": "(b) plain Ray Data recipe",
    "c": "(c) our embedding stage",
    "d": "(d) our whole job, local Ray",
}
RATIOS = (("c", "a"), ("c", "b"), ("d", "a"), ("d", "c"))


def summarize(results: dict, lengths: np.ndarray, texts: list[str], shape: ModelShape, peaks: dict) -> dict:
    """Per variant: tokens per CPU-second and per wall-second, padding efficiency, RSS, MFU; then the ratios.

    MFU = (forward FLOPs of the real tokens / CPU seconds) / (matmul FLOPs / CPU second) in the variant's dtype.
    """
    tokens = int(lengths.sum())
    flops = forward_flops(shape, lengths)
    planned = {"a": st_padding_efficiency(texts, lengths), "b": fixed_batch_padding_efficiency(lengths)}
    rows = {}
    for key, r in results.items():
        if r.get("tokens", tokens) != tokens:
            raise AssertionError(f"variant {key} embedded {r['tokens']} tokens, the corpus has {tokens}")
        rows[key] = {
            "tokens_per_cpu_s": tokens / r["cpu_seconds"],
            "tokens_per_s": tokens / r["seconds"],
            "seconds": r["seconds"],
            "cpu_seconds": r["cpu_seconds"],
            "padding_efficiency": planned.get(key) or tokens / r["computed_tokens"],
            "peak_rss_mb": r["peak_rss_mb"],
            "dtype": r["dtype"],
            "mfu": flops / r["cpu_seconds"] / peaks[r["dtype"]][1],
        }
    ratios = {}
    for x, y in RATIOS:
        if x in rows and y in rows:
            ratios[f"{x}/{y}"] = {
                "cpu": rows[x]["tokens_per_cpu_s"] / rows[y]["tokens_per_cpu_s"],
                "wall": rows[x]["tokens_per_s"] / rows[y]["tokens_per_s"],
            }
    return {"rows": rows, "ratios": ratios, "tokens": tokens, "flops": flops}


def render(title: str, command: str, setup: str, summary: dict, peaks: dict, cosine: dict | None) -> str:
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        "",
        setup,
        "",
        "Matmul peak measured in this run (2048^3, best of 8): "
        + ", ".join(
            f"{k} {v[0] / 1e9:.1f} GFLOP/s wall, {v[1] / 1e9:.1f} GFLOP per CPU-second" for k, v in peaks.items()
        )
        + ".",
        "",
        "| variant | dtype | tokens / CPU-s | tokens / wall-s | CPU s | wall s | padding eff. | peak RSS MB | MFU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in summary["rows"].items():
        lines.append(
            f"| {NAMES[key]} | {r['dtype']} | {r['tokens_per_cpu_s']:.1f} | {r['tokens_per_s']:.1f} | "
            f"{r['cpu_seconds']:.1f} | {r['seconds']:.1f} | {r['padding_efficiency']:.3f} | {r['peak_rss_mb']:.0f} | "
            f"{100 * r['mfu']:.1f} % |"
        )
    if summary["ratios"]:
        lines += ["", "| ratio | on CPU time | on wall time |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['cpu']:.2f} | {v['wall']:.2f} |" for k, v in summary["ratios"].items()]
    if cosine:
        lines += [
            "",
            (
                f"Cosine of (c) to (a), row by row: min {cosine['min']:.5f}, 1st percentile {cosine['p01']:.5f}, "
                f"mean {cosine['mean']:.5f}."
            ),
        ]
    return "\n".join(lines) + "\n"


def render_levers(levers: dict, tokens: int) -> str:
    rows = levers["levers"]
    base = prev = rows[0]["cpu_seconds"]
    lines = [
        f"## Levers: our stage alone, {tokens} tokens",
        "",
        (
            f"Tokenizing these rows took {levers['tokenize_seconds']:.2f} s, work the model actor never does because "
            "tokenization is its own stage. Speed-ups are ratios of CPU seconds. Set-up (model load, warm-up and any "
            "compile, once per actor) is not in the timed columns."
        ),
        "",
        "| lever | CPU s | wall s | set-up s | padding eff. | speed-up vs previous row | vs first row |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['lever'].strip()} | {row['cpu_seconds']:.1f} | {row['seconds']:.1f} | {row.get('setup_s', 0):.1f} | "
            f"{tokens / row['computed_tokens']:.3f} | {prev / row['cpu_seconds']:.2f} | {base / row['cpu_seconds']:.2f} |"
        )
        if not row["lever"].startswith("  toggle"):
            prev = row["cpu_seconds"]
    lines += ["", "Toggle rows compare with the last cumulative row: below 1.00 means that lever was helping."]
    return "\n".join(lines) + "\n"
