"""Bring an embeddings dataset up to date: `python -m jobs.reembed --config configs/reembed.yaml`.

Exit codes: 0 done (also when nothing changed), 2 bad config, 3 another run holds the output's lease (a
scheduler can treat 3 as "skipped": the other run is doing the work).
"""

from __future__ import annotations

import sys

from jobs.common import run_job
from pipeline.process_exit import exit_process
from pipeline.reembed.config import ReembedConfig
from pipeline.reembed.job import run_reembed
from pipeline.reembed.lease import LeaseHeldError

LEASE_HELD = 3


def main(argv: list[str] | None = None) -> int:
    try:
        return run_job(
            "Incrementally re-embed a corpus into a versioned embeddings dataset.",
            ReembedConfig,
            run_reembed,
            argv,
            name="reembed",
            resumable=True,
        )
    except LeaseHeldError as err:
        print(f"error: {err}", file=sys.stderr)
        return LEASE_HELD


if __name__ == "__main__":
    exit_process(main())
