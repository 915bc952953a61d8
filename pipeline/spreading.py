"""Blocks sized so that every embedding actor of the pool gets rows, however the corpus is packed into units.

Ray Data hands an actor one bundle of blocks per call and never splits a block between actors, and a read task's
output is one block per unit (Ray joins what the task yields up to DataContext.target_max_block_size, 128 MiB): a
corpus of one unit, be it one file or a pack of small files (pipeline.units), went whole to one embedding actor
while the rest of the pool sat idle. With a pool of more than one actor:

- a large corpus (over SHARED_BYTES of input per actor) is cut
  into blocks of batching.rows_per_block rows, the rows an embedding actor sorts by length at once (`cut_blocks`:
  Ray Data's streaming repartition, fused into the read tasks); everything streams as before;
- a small one is shared out (`SharedCorpus`): a thread of the driver reads and tokenizes it (its own Ray Data
  execution) while the embedding stage starts its pool, which waits for all its actors (Ray Data's
  wait_for_min_actors_s, ACTOR_START_SECONDS) before it takes a block; then the tokenized corpus, cut into one block
  per actor by a barrier that releases them all at once (Ray Data's split repartition), gives each actor one (Ray Data
  gives a block to the least busy actor; blocks that trickle in could all go to an actor that finished the one
  before). An actor embeds a block of more than batching.rows_per_block rows that many rows at a time.

  Before, the corpus was read, tokenized and cut first, and only then did the pool start: model actors (seconds to
  minutes of model load, GPU nodes an autoscaler adds) began to load after the last row was tokenized, so the time
  to the first vector was the sum of both instead of the longer one. Ray Data waits for a pool in the pool's start,
  before its execution runs any task, so a read in the same execution cannot overlap the wait: hence the second one.

Only the blocks change: units, their keys and markers, the rows and their vectors are the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import ray

from pipeline.stages import Stage

log = logging.getLogger(__name__)

# A corpus of at most this many input bytes per embedding actor is read and tokenized before it is shared out
# (`SharedCorpus`), held in Ray's object store meanwhile: the size of a pack of small files at the default
# input.unit_bytes (pipeline.units), tens of thousands of rows or more per actor.
SHARED_BYTES = 16 << 20
# How long the embedding stage of a small corpus waits for its pool's actors to start before it fails (Ray Data's
# wait_for_min_actors_s): as long as Ray Data waits for progress by default (execution_no_progress_timeout_s), long
# enough for GPU nodes that an autoscaler adds.
ACTOR_START_SECONDS = 1800


def is_small(input_bytes: int | None, actors: int) -> bool:
    """Whether a corpus of `input_bytes` (None: unknown) is shared out whole (`SharedCorpus`): more than one actor,
    and at most SHARED_BYTES per actor, so that holding it costs little."""
    return actors > 1 and input_bytes is not None and input_bytes <= actors * SHARED_BYTES


def cut_blocks(ds: ray.data.Dataset, actors: int, rows_per_block: int) -> ray.data.Dataset:
    """`ds` in blocks of at most `rows_per_block` rows for a pool of `actors` (as it is for one actor: it gets every
    block anyway, and fewer blocks make fewer output files)."""
    return ds if actors <= 1 else ds.repartition(target_num_rows_per_block=rows_per_block)


@ray.remote(num_cpus=0)
class ShareBoard:
    """Where the driver posts the tokenized corpus's block refs, or the error that stopped it, and where the
    `take_corpus` task waits for either (an async actor)."""

    def __init__(self) -> None:
        import asyncio

        self.ready = asyncio.Event()
        self.refs: list[Any] = []
        self.error: BaseException | None = None

    async def post(self, refs: list[Any]) -> None:
        self.refs = refs
        self.ready.set()

    async def fail(self, error: BaseException) -> None:
        self.error = error
        self.ready.set()

    async def blocks_when_ready(self) -> list[Any]:
        await self.ready.wait()
        if self.error is not None:
            raise self.error
        return self.refs


def take_corpus(item: pa.Table, board: Any) -> Iterator[pa.Table]:
    """Ray Data task UDF (one call, one row): the tokenized corpus's blocks, once the driver has posted them to
    `board`.

    Raises what stopped the corpus's read or tokenization (the driver's error, posted by SharedCorpus).
    """
    for ref in ray.get(board.blocks_when_ready.remote()):
        yield ray.get(ref)


class SharedCorpus:
    """A small corpus read and tokenized in a thread of the driver while the embedding pool starts.

    `SharedCorpus(tokenized, actors).shares()` is what the embedding stage takes. The thread materializes `tokenized`
    (its own Ray Data execution: the read tasks and the tokenizer pool) and posts its blocks to a ShareBoard actor on
    the driver's node, or the error that stopped it, which the job then raises.

    Args:
        tokenized: the corpus's rows after the tokenizer stage (lazy; materialized in the thread).
        actors: embedding actors of the pool (> 1).
    """

    def __init__(self, tokenized: ray.data.Dataset, actors: int) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.actors = actors
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.board = ShareBoard.options(scheduling_strategy=here).remote()  # lost only with the driver's node
        self.thread = threading.Thread(target=self.post, args=(tokenized,), name="rayembed-shared-corpus", daemon=True)
        self.thread.start()

    def post(self, tokenized: ray.data.Dataset) -> None:
        """The thread: materialize `tokenized`, post its blocks to the board, or the error that stopped it."""
        try:
            done = tokenized.materialize()
            refs = [ref for bundle in done.iter_internal_ref_bundles() for ref in bundle.block_refs]
            log.info("%d rows tokenized for %d embedding actors", done.count(), self.actors)  # count: metadata
            ray.get(self.board.post.remote(refs))
        except Exception as err:  # noqa: BLE001 -- handed to the take_corpus task, which raises it in the job
            try:
                ray.get(self.board.fail.remote(err))
            except Exception:  # noqa: BLE001 -- an error that does not pickle: its words
                ray.get(self.board.fail.remote(RuntimeError(f"{type(err).__name__}: {err}")))

    def shares(self) -> ray.data.Dataset:
        """The corpus in one block per actor: one `take_corpus` task (no CPU reserved: it waits, then hands the
        blocks on), then Ray Data's split repartition into `actors` blocks, a barrier that releases them all at once,
        on a context whose actor pools wait for their actors (the embedding stage's, built on it)."""
        item = ray.data.from_items([{"corpus": 0}], override_num_blocks=1)
        item.context.wait_for_min_actors_s = ACTOR_START_SECONDS
        corpus = Stage(take_corpus, batch_size=1, num_cpus=0, kwargs={"board": self.board}).apply(item)
        return corpus.repartition(num_blocks=self.actors, shuffle=False)
