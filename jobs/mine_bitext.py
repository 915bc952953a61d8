"""Mine translation pairs between two corpora: `python -m jobs.mine_bitext --config configs/mine_bitext.yaml`.

Also runs as a Ray job: `ray job submit --working-dir . -- python -m jobs.mine_bitext --config ...`.
"""

from __future__ import annotations

from jobs.common import run_job
from pipeline.mine_config import MineConfig
from pipeline.process_exit import exit_process


def run(cfg: MineConfig) -> dict:
    """run_mine, imported here: the imports of `pipeline.bitext.job` (Ray, torch; seconds) then run inside
    run_job's handling of Ctrl-C and SIGTERM, so an interrupt while they load is one `interrupted:` line, exit
    130 or 143, not a traceback."""
    from pipeline.bitext.job import run_mine

    return run_mine(cfg)


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "Mine bitext (translation pairs) with margin-scored k-NN on Ray.",
        MineConfig,
        run,
        argv,
        resumable=True,
        name="mine_bitext",
    )


if __name__ == "__main__":
    exit_process(main())
