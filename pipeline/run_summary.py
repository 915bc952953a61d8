"""A job's summary dict -> a few lines a person reads at the end of a run (the JSON stays the machine interface).

No heavy imports: the job entrypoints call it after the run.
"""

from __future__ import annotations

from typing import Any


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def human_summary(summary: dict[str, Any]) -> str:
    """'done: ...' lines for the keys the summary has (embed-job keys first; other jobs list their counts).

    Args:
        summary: the dict a job returns (and writes to its summary file).
    """
    lines = []
    if "rows_total" in summary:  # the re-embed job: rows of this run, then of the version it published
        counts = ", ".join(f"{_n(summary.get(f'rows_{k}', 0))} {k}" for k in ("reused", "rejected", "dropped"))
        line = f"{_n(summary.get('rows_embedded', 0))} rows embedded, {counts}; {_n(summary['rows_total'])} in this version"
        if "rows_in" in summary:
            line += f" ({_n(summary['rows_in'])} rows in, {_n(summary.get('rows_rejected_total', 0))} rejected"
            if summary.get("files_rejected_total"):  # a corrupt file is one reject row, whatever it held
                line += f", {unreadable_files(summary['files_rejected_total'])}"
            line += ")"
        lines.append(line)
    elif "rows_in" in summary:
        rows = f"{_n(summary['rows_in'])} rows in: {_n(summary.get('rows_embedded', 0))} embedded"
        rows += f", {_n(summary.get('rows_rejected', 0))} rejected"
        if summary.get("files_rejected"):  # a corrupt file is one reject row, whatever it held: say so
            rows += f" ({unreadable_files(summary['files_rejected'])})"
        if summary.get("rows_reused"):
            rows += f", {_n(summary['rows_reused'])} reused from {_n(summary.get('units_skipped', 0))} committed units"
        if summary.get("rows_truncated"):
            rows += f", {_n(summary['rows_truncated'])} truncated at model.max_tokens"
        if summary.get("rows_chunked"):
            rows += f", {_n(summary['rows_chunked'])} split into {_n(summary.get('chunks_produced', 0))} chunks"
        lines.append(rows)
    if "tokens" in summary:
        wall = summary.get("wall_seconds", 0)
        speed = f"{_n(summary['tokens'])} tokens in {wall:.1f} s"
        per_second = summary.get("tokens_per_second", summary["tokens"] / wall if wall else 0)
        speed += f" ({per_second:,.0f} tokens/s"
        if "padding_efficiency" in summary:
            speed += f", padding efficiency {summary['padding_efficiency']:.1%}"
        lines.append(speed + ")")
    if "pooling" in summary or "precision" in summary:
        recipe = [f"{k} {summary[k]}" for k in ("model", "pooling", "dimensions", "precision") if summary.get(k)]
        lines.append(", ".join(recipe))
    if not lines:  # another job's summary: its top-level numbers
        counts = [f"{k} {_n(v)}" for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)]
        if counts:
            lines.append(", ".join(counts[:8]))
    if summary.get("stages_reused"):  # the cluster and mining jobs: what earlier attempts (or runs) did for this one
        lines.append(f"reused, not redone: {', '.join(summary['stages_reused'])}")
    if summary.get("output"):
        lines.append(f"output: {summary['output']}")
    if summary.get("rejects"):
        lines.append(f"rejects (with reasons): {summary['rejects']}")
    return "\n".join(["done: " + lines[0], *("      " + line for line in lines[1:])]) if lines else "done"


def unreadable_files(count: int) -> str:
    """The part of a rows line that says how many of the rejected rows are corrupt files, one row each."""
    return f"of them {_n(count)} unreadable files, one row each"
