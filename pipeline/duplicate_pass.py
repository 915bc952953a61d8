"""Ray glue of the duplicate-id pre-pass (the pure parts live in pipeline.duplicate_ids).

    units --read ids (tasks)--> digests --hash shuffle by bucket--> repeats per bucket --> <dups>/file_index=F/

Up to ONE_TASK_ROWS ids one task compares every digest and writes the repeats itself: no Ray Data pipeline runs.
The driver only plans the stages and, for policy "error", takes the first few repeats for the message.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray

from pipeline import commit
from pipeline.config import ComputeConfig
from pipeline.duplicate_ids import (
    BUCKET,
    FILE_INDEX,
    SHOWN,
    bucket_duplicates,
    duplicate_error,
    id_digests,
    keep_digests,
    kept_digests,
)
from pipeline.reading import ReadSpec
from pipeline.stages import io_task
from pipeline.storage import Location
from pipeline.units import Unit, id_only

BUCKETS = 64  # hash-shuffle partitions: a bucket holds ~1/64 of the digests (32 B per row) in one task
# Up to this many ids one task takes every digest (~64 MB) and no shuffle runs: a 64-way hash shuffle costs seconds
# of start-up, most of a small job's pre-pass.
ONE_TASK_ROWS = 2_000_000


def digest_unit(spec: ReadSpec, unit: Unit, kept: tuple[Location, ...] | None = None) -> tuple[pa.Table, int]:
    """Ray task: the digests of one unit's rows, and their count (the only part the driver fetches).

    `kept`: where each file of the unit (unit.parts(), a pack's files) keeps its digests between runs
    (pipeline.reembed.duplicates.kept_digest_files): read from there when an earlier run wrote them, else read from
    the input and written there."""
    if kept is None:
        table = id_digests(spec, unit, BUCKETS)
        return table, table.num_rows
    tables = []
    for part, at in zip(unit.parts(), kept, strict=True):
        table = kept_digests(at, part.file_index, BUCKETS)
        if table is None:
            table = id_digests(spec, part, BUCKETS)
            keep_digests(table, at)
        tables.append(table)
    table = pa.concat_tables(tables)
    return table, table.num_rows


def write_repeats(repeats: pa.Table, target: Location, name: str = "part") -> None:
    """`repeats` (DUPLICATES_SCHEMA) under `target` as Parquet partitioned by file index (`file_index=F/`), the
    layout pipeline.duplicate_ids.file_duplicates reads, as `<name>-<i>.parquet`. A retried write replaces its own
    files (fixed names). Any number of files may have repeats: Arrow's default stops a write into more than 1024
    partitions ('Fragment would be written into N partitions'), which a corpus of that many files with repeats
    reached (Ray Data's write_parquet keeps that default, hence written_blocks)."""
    files = pc.count_distinct(repeats.column(FILE_INDEX)).as_py() if repeats.num_rows else 0
    pads.write_dataset(
        repeats,
        target.path,
        filesystem=target.fs,
        format="parquet",
        partitioning=[FILE_INDEX],
        partitioning_flavor="hive",
        basename_template=f"{name}-{{i}}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        max_partitions=max(1024, files),
    )


def written_blocks(repeats: ray.data.Dataset, target: Location, compute: ComputeConfig) -> None:
    """Write the materialized `repeats` (the hash shuffle's) under `target`, one Ray task per block (write_repeats,
    named by the block's place: a retried task replaces its own files). The driver holds block refs only."""
    task = io_task(write_repeats, compute)
    ray.get([task.remote(block, target, f"part-{i}") for i, block in enumerate(repeats.to_arrow_refs())])


def all_duplicates(files: list[str], *digests: pa.Table) -> pa.Table:
    """Ray task: the repeats among every unit's digests at once (a small corpus: no shuffle needed)."""
    return bucket_duplicates(pa.concat_tables(digests), files)


def written_duplicates(files: list[str], target: Location | None, *digests: pa.Table) -> tuple[int, list[dict]]:
    """Ray task: all_duplicates, written to `target` (write_repeats) unless it is None; returns their count and the
    first SHOWN in (file, row) order (rows of DUPLICATES_SCHEMA as dicts), all the driver needs of them."""
    repeats = all_duplicates(files, *digests)
    if target is not None and repeats.num_rows:
        write_repeats(repeats, target)
    first = repeats.sort_by([(FILE_INDEX, "ascending"), ("row", "ascending")]).slice(0, SHOWN)
    return repeats.num_rows, first.to_pylist()


def find_repeats(tables: list[ray.ObjectRef], files: list[str]) -> ray.data.Dataset:
    """The repeats (DUPLICATES_SCHEMA, materialized) among the digest tables `tables` (refs of pipeline.duplicate_ids
    digest tables), by a hash shuffle by bucket, each bucket in its own task: for more than ONE_TASK_ROWS ids."""
    digests = ray.data.from_arrow_refs(tables)
    # The task-based sort shuffle, on this dataset's own context copy (as the clustering job's assignment group-by):
    # Ray Data's default shuffle starts aggregator actors, a worker process each, that hold CPUs while they wait.
    digests.context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    grouped = digests.groupby(BUCKET, num_partitions=BUCKETS)
    repeats = grouped.map_groups(bucket_duplicates, batch_format="pyarrow", fn_kwargs={"files": files})
    return repeats.materialize()


def repeats_found(
    calls: list[tuple[ray.ObjectRef, ray.ObjectRef]], files: list[str], compute: ComputeConfig
) -> tuple[int, list[dict]]:
    """How many rows repeat an earlier key among the digest tables of `calls` ((table, row count) refs of tasks that
    return pipeline.duplicate_ids digest tables), and the first SHOWN repeats in (file, row) order (rows of
    DUPLICATES_SCHEMA as dicts); nothing is written. The driver fetches the counts and those rows only: up to
    ONE_TASK_ROWS ids one task compares them all (no Ray Data pipeline: its executor starts cost more than the
    comparison on such inputs), beyond that find_repeats' shuffle does."""
    rows = sum(ray.get([count for _, count in calls]))
    tables = [table for table, _ in calls]
    if rows <= ONE_TASK_ROWS:
        return ray.get(io_task(written_duplicates, compute).remote(files, None, *tables))
    repeats = find_repeats(tables, files)
    count = repeats.count()
    return count, repeats.sort([FILE_INDEX, "row"]).take(SHOWN) if count else []


def find_duplicate_ids(
    units: list[Unit],
    files: list[str],
    spec: ReadSpec,
    policy: str,
    target: Location,
    compute: ComputeConfig,
    kept: list[tuple[Location, ...]] | None = None,
) -> int:
    """Find ids that occur more than once; returns how many rows repeat an earlier id.

    `kept`: per unit (whole files), where each of its files' digests are kept between runs (digest_unit), or None.

    The repeats go to `target` (partitioned by file index, read back by pipeline.duplicate_ids.file_duplicates),
    which is then committed, so a resumed run reuses the result without reading any input again. Up to
    ONE_TASK_ROWS ids one Ray task finds and writes them (written_duplicates); beyond that a Ray Data hash shuffle does.

    Raises:
        DuplicateIdError: policy "error" and some id repeats (nothing is written).
    """
    # Plain tasks rather than a Ray Data read: a file that cannot be read fails with its own InputFileError (Ray
    # Data would wrap it); a transient storage error is retried in the task (io_task). The digest tables stay in the
    # object store, the driver fetches only their row counts.
    task = io_task(digest_unit, compute, num_returns=2)
    kept = kept or [None] * len(units)
    calls = [task.remote(id_only(spec), unit, at) for unit, at in zip(units, kept, strict=True)]
    rows = sum(ray.get([count for _, count in calls]))
    tables = [table for table, _ in calls]
    if rows <= ONE_TASK_ROWS:
        # one task and no Ray Data pipeline: collecting, counting and writing the repeats through Ray Data started an
        # executor each time, more work than the whole pass on a small corpus (a nightly re-embed's)
        written = None if policy == "error" else target  # "error" writes nothing
        if written is not None:
            commit.clear(target)  # before the task writes into it
        count, first = ray.get(io_task(written_duplicates, compute).remote(files, written, *tables))
    else:
        repeats = find_repeats(tables, files)
        count = repeats.count()
        first = repeats.sort([FILE_INDEX, "row"]).take(SHOWN) if count and policy == "error" else []
        written = None
    if policy == "error" and count:
        raise duplicate_error(count, first, files)
    if written is None:
        commit.clear(target)
        if count:  # the shuffle's repeats (a small corpus's: none, as policy "error" passed)
            written_blocks(repeats, target, compute)
    commit.commit(target, "duplicate_ids", {"rows_repeating": count}, "_summary.json")
    return count
