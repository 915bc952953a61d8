"""The reject-rate guard (input.max_reject_fraction): a job that rejects most of its rows read the wrong thing.

Data loaders have the same guard (BigQuery's max_bad_records, Spark's FAILFAST mode). The job still writes its
embeddings, its rejects and a summary marked `"status": "failed"`, so the user can see what went wrong, and then
exits non-zero with the counts. Pure Python, no Ray.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import UserError


class TooManyRejectsError(UserError, RuntimeError):
    """More rows were rejected than input.max_reject_fraction allows; the message has the counts."""


def reject_failure(summary: dict[str, Any], max_fraction: float) -> str | None:
    """Why the job failed the guard (counts, fraction, where the rejects are), or None when it passed."""
    rows_in, rejected = summary.get("rows_in", 0), summary.get("rows_rejected", 0)
    if not rows_in or rejected / rows_in <= max_fraction:
        return None
    where = f"; reasons in {summary['rejects']}" if summary.get("rejects") else ""
    return (
        f"{rejected:,} of {rows_in:,} rows rejected ({rejected / rows_in:.1%}), above input.max_reject_fraction "
        f"({max_fraction:g}){where}. Check input.format, input.text_column and the files' encoding, or raise "
        "input.max_reject_fraction if this corpus really is that dirty"
    )


def apply_guard(summary: dict[str, Any], max_fraction: float) -> dict[str, Any]:
    """Mark `summary` with status 'ok' or 'failed' (and the failure message); returns it."""
    failure = reject_failure(summary, max_fraction)
    summary["status"] = "failed" if failure else "ok"
    if failure:
        summary["failure"] = failure
    return summary
