"""The clustering job's Ray Data read of its embeddings files, with a footer-reading pool sized to the files.

Ray Data's Parquet reader (its DataSource V2, Ray >= 2.60) lists the files at every execution of the dataset by
starting a pool of `FooterReader` actors, 32 by default (RAY_DATA_PARQUET_FOOTER_NUM_ACTORS), each a worker process
of its own, and killing them once the footers are read. Each actor reads a batch of 10 files per call
(RAY_DATA_PARQUET_FOOTER_BATCH_SIZE), so an input of a few files kept one actor busy and started 31 for nothing, at
each of the job's passes over the input (count, fit sample, assignment). The pool is now one actor per batch of
files, up to Ray's 32; a value set in the environment is kept.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pyarrow as pa

from pipeline.storage import Location

NUM_ACTORS = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
BATCH_SIZE = "RAY_DATA_PARQUET_FOOTER_BATCH_SIZE"
RAY_DEFAULT_ACTORS, RAY_DEFAULT_BATCH = 32, 10  # Ray 2.60's defaults for the two variables


def footer_actors(files: int, batch: int = RAY_DEFAULT_BATCH) -> int:
    """Actors that keep every batch of `batch` footers of `files` files busy at once: 1 to Ray's default 32."""
    return max(1, min(RAY_DEFAULT_ACTORS, -(-files // max(batch, 1))))


@contextlib.contextmanager
def footer_pool_for(files: int) -> Iterator[None]:
    """RAY_DATA_PARQUET_FOOTER_NUM_ACTORS set to `footer_actors(files)` while a read is planned (Ray reads it when
    read_parquet builds the dataset's file indexer, which the dataset keeps), unless the environment sets it."""
    if os.environ.get(NUM_ACTORS):
        yield
        return
    batch = int(os.environ.get(BATCH_SIZE) or RAY_DEFAULT_BATCH)
    os.environ[NUM_ACTORS] = str(footer_actors(files, batch))
    try:
        yield
    finally:
        os.environ.pop(NUM_ACTORS, None)


def read_embeddings(root: Location, files: list[str], columns: list[str], schema: pa.Schema | None):
    """ray.data.read_parquet of `files` (relative to `root`), reading the top-level `columns`; `schema`: the one
    schema every file is read with when their types differ (input_check.read_schema), else None (Ray infers it)."""
    import ray

    with footer_pool_for(len(files)):
        return ray.data.read_parquet(
            [root.join(f).path for f in files],
            filesystem=root.fs,
            columns=columns,
            **({"schema": schema} if schema is not None else {}),
        )
