"""Bring an embeddings dataset up to date: `python -m jobs.reembed --config configs/reembed.yaml`.

Exit codes: 0 done (also when nothing changed), 2 bad config, 3 another run holds the output's lease (a
scheduler can treat 3 as "skipped": the other run is doing the work).
"""

from __future__ import annotations

import sys

from jobs.common import run_job
from pipeline.process_exit import exit_process
from pipeline.reembed.config import ReembedConfig
from pipeline.reembed.lease import LeaseHeldError

LEASE_HELD = 3


def run(cfg: ReembedConfig) -> dict:
    """run_reembed, imported here: the imports of `pipeline.reembed.job` (Ray, torch; seconds) then run inside
    run_job's handling of Ctrl-C and SIGTERM, so an interrupt while they load is one `interrupted:` line, exit
    130 or 143, not a traceback."""
    from pipeline.reembed.job import run_reembed

    return run_reembed(cfg)


def main(argv: list[str] | None = None) -> int:
    try:
        return run_job(
            "Incrementally re-embed a corpus into a versioned embeddings dataset.",
            ReembedConfig,
            run,
            argv,
            name="reembed",
            resumable=True,
        )
    except LeaseHeldError as err:
        print(f"error: {err}", file=sys.stderr)
        return LEASE_HELD


if __name__ == "__main__":
    exit_process(main())
