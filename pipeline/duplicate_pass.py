"""Ray glue of the duplicate-id pre-pass (the pure parts live in pipeline.duplicate_ids).

    units --read ids (tasks)--> digests --hash shuffle by bucket--> repeats per bucket --> <dups>/file_index=F/

The driver only plans the stages and, for policy "error", takes the first few repeats for the message.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import ray

from pipeline import commit
from pipeline.duplicate_ids import (
    BUCKET,
    FILE_INDEX,
    SHOWN,
    bucket_duplicates,
    duplicate_error,
    id_digests,
)
from pipeline.reading import ReadSpec
from pipeline.storage import Location
from pipeline.units import Unit, id_only, unit_items, units_of

BUCKETS = 64  # hash-shuffle partitions: a bucket holds ~1/64 of the digests (32 B per row) in one task


def digest_batch(batch: pa.Table, spec: ReadSpec) -> pa.Table:
    """Ray Data UDF: one row per unit in, the digests of its rows out."""
    tables = [id_digests(spec, unit, BUCKETS) for unit in units_of(batch)]
    return pa.concat_tables(tables)


def find_duplicate_ids(
    units: list[Unit], files: list[str], spec: ReadSpec, policy: str, target: Location, io: dict[str, Any]
) -> int:
    """Find ids that occur more than once; returns how many rows repeat an earlier id.

    The repeats go to `target` (partitioned by file index, read back by pipeline.duplicate_ids.file_duplicates),
    which is then committed, so a resumed run reuses the result without reading any input again.

    Raises:
        DuplicateIdError: policy "error" and some id repeats (nothing is written).
    """
    ds = ray.data.from_items(unit_items(units), override_num_blocks=len(units))
    ds = ds.map_batches(digest_batch, batch_size=1, batch_format="pyarrow", fn_kwargs={"spec": id_only(spec)}, **io)
    grouped = ds.groupby(BUCKET, num_partitions=BUCKETS)
    repeats = grouped.map_groups(bucket_duplicates, batch_format="pyarrow", fn_kwargs={"files": files}).materialize()
    count = repeats.count()
    if policy == "error" and count:
        first = repeats.sort([FILE_INDEX, "row"]).take(SHOWN)
        raise duplicate_error(count, first, files)
    commit.clear(target)
    if count:
        repeats.write_parquet(target.path, filesystem=target.fs, partition_cols=[FILE_INDEX])
    commit.commit(target, "duplicate_ids", {"rows_repeating": count}, "_summary.json")
    return count
