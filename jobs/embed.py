"""Embed a corpus: `python -m jobs.embed --config configs/quickstart.yaml`."""

from __future__ import annotations

from jobs.common import run_job
from pipeline.config import EmbedConfig
from pipeline.embed_job import run_embed
from pipeline.process_exit import exit_process


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "Embed a text corpus into normalized embeddings (Parquet).",
        EmbedConfig,
        run_embed,
        argv,
        name="embed",
        resumable=True,
    )


if __name__ == "__main__":
    exit_process(main())
