"""Blocks sized so that every embedding actor of the pool gets rows, however the corpus is packed into units.

Ray Data hands an actor one bundle of blocks per call and never splits a block between actors, and a read task's
output is one block per unit (Ray joins what the task yields up to DataContext.target_max_block_size, 128 MiB): a
corpus of one unit, be it one file or a pack of small files (pipeline.units), went whole to one embedding actor
while the rest of the pool sat idle. With a pool of more than one actor:

- a large corpus (over SHARED_BYTES of input per actor) is cut
  into blocks of batching.rows_per_block rows, the rows an embedding actor sorts by length at once (`cut_blocks`:
  Ray Data's streaming repartition, fused into the read tasks); everything streams as before;
- a small one is read and tokenized first, then cut into one block per actor (`share_blocks`), all there before the
  embedding stage starts with its whole pool up, so each actor gets one (Ray Data gives a block to the least busy
  actor; blocks that trickle in could all go to an actor that finished the one before).

Only the blocks change: units, their keys and markers, the rows and their vectors are the same.
"""

from __future__ import annotations

import logging

import ray

log = logging.getLogger(__name__)

# A corpus of at most this many input bytes per embedding actor is read and tokenized before it is shared out
# (`share_blocks`), held in Ray's object store meanwhile: the size of a pack of small files at the default
# input.unit_bytes (pipeline.units), tens of thousands of rows or more per actor.
SHARED_BYTES = 16 << 20
# How long the embedding stage of a small corpus waits for its pool's actors to start before it fails (Ray Data's
# wait_for_min_actors_s): as long as Ray Data waits for progress by default (execution_no_progress_timeout_s), long
# enough for GPU nodes that an autoscaler adds.
ACTOR_START_SECONDS = 1800


def spread_rows(rows_per_block: int, actors: int, rows: int) -> int:
    """Rows per block for `actors` to share `rows` rows: ceil(rows / actors), at most `rows_per_block`, at least 1."""
    return max(1, min(rows_per_block, -(-rows // max(actors, 1))))


def is_small(input_bytes: int | None, actors: int) -> bool:
    """Whether a corpus of `input_bytes` (None: unknown) is shared out whole (`share_blocks`): more than one actor,
    and at most SHARED_BYTES per actor, so that holding it costs little."""
    return actors > 1 and input_bytes is not None and input_bytes <= actors * SHARED_BYTES


def cut_blocks(ds: ray.data.Dataset, actors: int, rows_per_block: int) -> ray.data.Dataset:
    """`ds` in blocks of at most `rows_per_block` rows for a pool of `actors` (as it is for one actor: it gets every
    block anyway, and fewer blocks make fewer output files)."""
    return ds if actors <= 1 else ds.repartition(target_num_rows_per_block=rows_per_block)


def share_blocks(tokenized: ray.data.Dataset, actors: int, rows_per_block: int) -> tuple[ray.data.Dataset, int]:
    """A small corpus's tokenized rows, materialized in blocks of `spread_rows` rows, and those rows per block.

    Datasets built on the result (the embedding stage) wait for their actor pools' first actors to start before
    they take a block (ACTOR_START_SECONDS), so that the blocks go to as many actors as there are.
    """
    tokenized = tokenized.materialize()
    rows = tokenized.count()  # from the blocks' metadata
    block_rows = spread_rows(rows_per_block, actors, rows)
    log.info("%d rows for %d embedding actors: blocks of %d rows", rows, actors, block_rows)
    shared = tokenized.repartition(target_num_rows_per_block=block_rows, strict=True).materialize()
    shared.context.wait_for_min_actors_s = ACTOR_START_SECONDS
    return shared, block_rows
