"""Ray glue of the duplicate-id pre-pass (the pure parts live in pipeline.duplicate_ids).

    units --read ids (tasks)--> digests --hash shuffle by bucket--> repeats per bucket --> <dups>/file_index=F/

The driver only plans the stages and, for policy "error", takes the first few repeats for the message.
"""

from __future__ import annotations

import pyarrow as pa
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
)
from pipeline.reading import ReadSpec
from pipeline.stages import io_task, io_task_args
from pipeline.storage import Location
from pipeline.units import Unit, id_only

BUCKETS = 64  # hash-shuffle partitions: a bucket holds ~1/64 of the digests (32 B per row) in one task
# Up to this many ids one task takes every digest (~64 MB) and no shuffle runs: a 64-way hash shuffle costs seconds
# of start-up, most of a small job's pre-pass.
ONE_TASK_ROWS = 2_000_000


def digest_unit(spec: ReadSpec, unit: Unit) -> tuple[pa.Table, int]:
    """Ray task: the digests of one unit's rows, and their count (the only part the driver fetches)."""
    table = id_digests(spec, unit, BUCKETS)
    return table, table.num_rows


def all_duplicates(files: list[str], *digests: pa.Table) -> pa.Table:
    """Ray task: the repeats among every unit's digests at once (a small corpus: no shuffle needed)."""
    return bucket_duplicates(pa.concat_tables(digests), files)


def find_repeats(
    calls: list[tuple[ray.ObjectRef, ray.ObjectRef]], files: list[str], compute: ComputeConfig
) -> ray.data.Dataset:
    """The repeats (DUPLICATES_SCHEMA, materialized) among the digest tables of `calls`: (table, row count) refs of
    tasks that return pipeline.duplicate_ids digest tables. The driver fetches the counts only; up to ONE_TASK_ROWS
    ids one task compares them all, beyond that a hash shuffle by bucket does, each bucket in its own task."""
    rows = sum(ray.get([count for _, count in calls]))
    tables = [table for table, _ in calls]
    if rows <= ONE_TASK_ROWS:
        one_task = ray.remote(all_duplicates).options(**io_task_args(compute))
        return ray.data.from_arrow_refs([one_task.remote(files, *tables)]).materialize()
    grouped = ray.data.from_arrow_refs(tables).groupby(BUCKET, num_partitions=BUCKETS)
    repeats = grouped.map_groups(bucket_duplicates, batch_format="pyarrow", fn_kwargs={"files": files})
    return repeats.materialize()


def find_duplicate_ids(
    units: list[Unit], files: list[str], spec: ReadSpec, policy: str, target: Location, compute: ComputeConfig
) -> int:
    """Find ids that occur more than once; returns how many rows repeat an earlier id.

    The repeats go to `target` (partitioned by file index, read back by pipeline.duplicate_ids.file_duplicates),
    which is then committed, so a resumed run reuses the result without reading any input again.

    Raises:
        DuplicateIdError: policy "error" and some id repeats (nothing is written).
    """
    # Plain tasks rather than a Ray Data read: a file that cannot be read fails with its own InputFileError (Ray
    # Data would wrap it); a transient storage error is retried in the task (io_task). The digest tables stay in the
    # object store, the driver fetches only their row counts.
    task = io_task(digest_unit, compute, num_returns=2)
    repeats = find_repeats([task.remote(id_only(spec), unit) for unit in units], files, compute)
    count = repeats.count()
    if policy == "error" and count:
        first = repeats.sort([FILE_INDEX, "row"]).take(SHOWN)
        raise duplicate_error(count, first, files)
    commit.clear(target)
    if count:
        repeats.write_parquet(target.path, filesystem=target.fs, partition_cols=[FILE_INDEX])
    commit.commit(target, "duplicate_ids", {"rows_repeating": count}, "_summary.json")
    return count
