"""Embed a corpus: `python -m jobs.embed --config configs/quickstart.yaml`."""

from __future__ import annotations

from jobs.common import run_job
from pipeline.config import EmbedConfig
from pipeline.process_exit import exit_process


def run(cfg: EmbedConfig) -> dict:
    """run_embed, imported here: the imports of `pipeline.embed_job` (Ray, torch; seconds) then run inside
    run_job's handling of Ctrl-C and SIGTERM, so an interrupt while they load is one `interrupted:` line, exit
    130 or 143, not a traceback."""
    from pipeline.embed_job import run_embed

    return run_embed(cfg)


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "Embed a text corpus into normalized embeddings (Parquet).",
        EmbedConfig,
        run,
        argv,
        name="embed",
        resumable=True,
    )


if __name__ == "__main__":
    exit_process(main())
