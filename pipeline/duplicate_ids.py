"""Duplicate ids across all input files: a pre-pass over ids, then later copies become rejects ("duplicate id").

Why a pre-pass rather than a shared "seen" set during the job: which copy counts as first must not depend on which
Ray task happens to run first, or re-running a job would embed different rows. The pre-pass reads the ids once
more and turns each into a 128-bit blake2b digest; a Ray Data hash shuffle sends every copy of a digest to the
same bucket, and each bucket keeps the first row of each id in (file order, row) order. Only the repeats leave the
buckets, as a small Parquet dataset partitioned by input file that each read task consults for its own file: the
driver holds no per-row state (pipeline.duplicate_pass has the Ray glue). Rows already rejected for another
reason take no part: the first *embeddable* row of an id wins. Pure pyarrow/numpy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.columns import REJECT, ROW, TEXT
from pipeline.errors import UserError
from pipeline.read_content import ListedPrefix, with_read_content
from pipeline.reading import ReadSpec
from pipeline.storage import Location, write_parquet_atomic
from pipeline.units import Unit, read_unit, units_of, unless_gone

log = logging.getLogger(__name__)

REASON = "duplicate id"
SHOWN = 5  # duplicates listed in the error message
BUCKET = "bucket"
FILE_INDEX = "file_index"
DUPLICATES_SCHEMA = pa.schema(
    [
        (FILE_INDEX, pa.int32()),
        ("row", pa.int64()),
        ("first_file_index", pa.int32()),
        ("first_row", pa.int64()),
        ("reason", pa.string()),
    ]
)


class DuplicateIdError(UserError, ValueError):
    """input.duplicate_ids=error and an id occurs more than once."""


def id_digests(spec: ReadSpec, unit: Unit, buckets: int) -> pa.Table:
    """(file_index, row, hi, lo, bucket) for every good row of one unit (`digest_table`)."""
    files, rows, keys = [], [], []
    for part in unit.parts():  # a pack of small files: each file's rows under its own file_index
        for block in read_unit(spec, part):
            good = block.filter(pc.is_null(block.column(REJECT)))
            rows += good.column(ROW).to_pylist()
            keys += good.column("id").to_pylist()
            files += [part.file_index] * good.num_rows
    return digest_table(files, rows, keys, buckets)


def digest_table(files: list[int], rows: list[int], keys: list[str], buckets: int) -> pa.Table:
    """(file_index, row, hi, lo, bucket) of rows given by file index, row number and id: the 128-bit blake2b digest
    of each id as two uint64 halves, and the bucket (hi mod `buckets`) that all copies of the id share. 32 bytes a
    row; the ids themselves are not kept."""
    his, los = [], []
    for key in keys:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        his.append(int.from_bytes(digest[:8], "little"))
        los.append(int.from_bytes(digest[8:], "little"))
    hi = np.asarray(his, dtype=np.uint64)
    return pa.table(
        {
            FILE_INDEX: pa.array(np.asarray(files, dtype=np.int32)),
            "row": pa.array(rows, pa.int64()),
            "hi": pa.array(hi),
            "lo": pa.array(np.asarray(los, dtype=np.uint64)),
            BUCKET: pa.array((hi % np.uint64(buckets)).astype(np.int32)),
        }
    )


# What of a file's digest table is kept between runs (pipeline.reembed.duplicates): its file index and bucket
# depend on the listing and are set again when it is loaded.
KEPT_COLUMNS = ("row", "hi", "lo")
KEPT_SCHEMA = pa.schema([("row", pa.int64()), ("hi", pa.uint64()), ("lo", pa.uint64())])
# Schema metadata key of a kept file's stamp: the name it was written under, its row count and a blake2b of its
# columns, so that a file that is not what keep_digests wrote under that name (another file's digests copied or
# synced over it, rows removed or edited by hand) is read from the input again instead of deciding duplicates.
KEPT_STAMP = b"rayembed.kept_id_digests"


def _kept_stamp(name: str, kept: pa.Table) -> bytes:
    """The stamp of `kept` (KEPT_SCHEMA columns, no nulls) written under the file name `name`."""
    check = hashlib.blake2b(digest_size=16)
    for column in KEPT_COLUMNS:
        check.update(np.ascontiguousarray(kept.column(column).to_numpy()).tobytes())
    return json.dumps({"name": name, "rows": kept.num_rows, "blake2b": check.hexdigest()}).encode()


def keep_digests(digests: pa.Table, target: Location) -> None:
    """Write one file's digest table (digest_table, one file index) to `target` for a later run: (row, hi, lo),
    24 bytes a row, stamped with `target`'s file name and a checksum (KEPT_STAMP). Atomic
    (pipeline.storage.write_parquet_atomic): a killed write leaves no partial file."""
    kept = digests.select(list(KEPT_COLUMNS)).cast(KEPT_SCHEMA)
    stamp = _kept_stamp(posixpath.basename(target.path), kept)
    write_parquet_atomic(kept.replace_schema_metadata({KEPT_STAMP: stamp}), target)


def kept_digests(target: Location, file_index: int, buckets: int) -> pa.Table | None:
    """The digest table keep_digests wrote to `target`, as digest_table gives it for the file at `file_index` of
    this run's listing; None when there is none, it cannot be read, or it is not what keep_digests wrote under this
    name (no or another stamp, other columns or types, nulls, changed rows: a WARNING says so). The file's ids are
    then read again from the input and its kept digests written anew."""
    try:
        kept = pq.read_table(target.path, filesystem=target.fs)
    except FileNotFoundError:  # not kept (a new or changed file, or the first run of a version)
        return None
    except (OSError, pa.ArrowInvalid) as err:  # truncated, not Parquet, a folder: read the input instead
        log.warning(
            "kept id digests %s cannot be read (%s); reading the file's ids from the input again", target.uri, err
        )
        return None
    stamp = (kept.schema.metadata or {}).get(KEPT_STAMP)
    kept = kept.replace_schema_metadata(None)
    whole = kept.schema.equals(KEPT_SCHEMA) and not any(column.null_count for column in kept.columns)
    if stamp is None or not whole or stamp != _kept_stamp(posixpath.basename(target.path), kept):
        log.warning(
            "kept id digests %s are not the ones written for this file (another file's, edited, or of an older "
            "version); reading the file's ids from the input again",
            target.uri,
        )
        return None
    hi = kept.column("hi").to_numpy()
    return pa.table(
        {
            FILE_INDEX: pa.array(np.full(kept.num_rows, file_index, dtype=np.int32)),
            "row": kept.column("row"),
            "hi": kept.column("hi"),
            "lo": kept.column("lo"),
            BUCKET: pa.array((hi % np.uint64(buckets)).astype(np.int32)),
        }
    )


def bucket_duplicates(digests: pa.Table, files: list[str]) -> pa.Table:
    """The repeats among one bucket's digests (DUPLICATES_SCHEMA), each naming the first row of its id.

    Every copy of an id must be in `digests` (the hash shuffle guarantees it); "first" is the smallest
    (file_index, row).
    """
    file_idx = digests.column(FILE_INDEX).to_numpy().astype(np.int32)
    rows = digests.column("row").to_numpy().astype(np.int64)
    hi = digests.column("hi").to_numpy().astype(np.uint64)
    lo = digests.column("lo").to_numpy().astype(np.uint64)
    order = np.lexsort((rows, file_idx, lo, hi))  # by digest, then (file, row): the first copy leads its run
    hi, lo = hi[order], lo[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    run_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))  # index of each run's first row
    dup, first = order[repeat], order[run_start[repeat]]
    reasons = [f"{REASON} (first at {files[f]} row {r})" for f, r in zip(file_idx[first], rows[first])]
    return pa.table(
        [pa.array(file_idx[dup]), pa.array(rows[dup]), pa.array(file_idx[first]), pa.array(rows[first]), reasons],
        schema=DUPLICATES_SCHEMA,
    )


def duplicate_error(count: int, first: list[dict], files: list[str]) -> DuplicateIdError:
    """The error of policy "error": how many rows repeat an id, and the first few (rows of DUPLICATES_SCHEMA)."""
    shown = [
        f"{files[d[FILE_INDEX]]} row {d['row']} repeats {files[d['first_file_index']]} row {d['first_row']}"
        for d in first[:SHOWN]
    ]
    return DuplicateIdError(
        f"{count} rows repeat an earlier id: {'; '.join(shown)}"
        + (" ..." if count > SHOWN else "")
        + " (set input.duplicate_ids=keep_first to embed the first and reject the rest)"
    )


def file_duplicates(duplicates: Location, file_index: int) -> dict[int, str]:
    """{row: reason} of one input file's repeats, read from the pre-pass's dataset partitioned by file."""
    folder = duplicates.join(f"{FILE_INDEX}={file_index}")
    selector = pafs.FileSelector(folder.path, allow_not_found=True)
    paths = sorted(i.path for i in folder.fs.get_file_info(selector) if i.path.endswith(".parquet"))
    if not paths:
        return {}
    table = pads.dataset(paths, filesystem=folder.fs, format="parquet").to_table(columns=["row", "reason"])
    return dict(zip(table.column("row").to_pylist(), table.column("reason").to_pylist()))


def reject_rows(block: pa.Table, reasons: dict[int, str]) -> pa.Table:
    """Mark the rows of `block` whose `_row` is in `reasons` as rejects (text dropped, reason set)."""
    row_numbers = block.column(ROW).to_pylist()
    current = block.column(REJECT).to_pylist()
    new = [old if old is not None else reasons.get(r) for r, old in zip(row_numbers, current)]
    block = block.set_column(block.schema.get_field_index(REJECT), REJECT, pa.array(new, pa.string()))
    text = pc.if_else(pc.is_null(block.column(REJECT)), block.column(TEXT), pa.scalar(None, pa.string()))
    return block.set_column(block.schema.get_field_index(TEXT), TEXT, text)


def read_units(batch: pa.Table, spec: ReadSpec, duplicates: Location | None) -> Iterator[pa.Table]:
    """Read-stage UDF: one input row per unit (pipeline.units), many output blocks per unit, later copies of an id
    rejected.

    `duplicates`: the committed result of the pre-pass (pipeline.duplicate_pass), None when ids are not checked.
    """

    def each_file(part: Unit, blocks: Iterator[pa.Table], prefix: ListedPrefix | None) -> Iterator[pa.Table]:
        # a file renamed or deleted since the listing: no rows, its unit not committed, the run fails naming it
        # once the other units are committed (pipeline.units.unless_gone)
        blocks = unless_gone(blocks, spec.root, part.path)
        if duplicates is not None:
            reasons = file_duplicates(duplicates, part.file_index)  # one file's repeats, read once per file
            blocks = (reject_rows(block, reasons) for block in blocks) if reasons else blocks
        # what it read of a whole local file, for the driver's check of a touch or an append during the run
        whole = part.row_groups is None and part.lines is None
        return with_read_content(spec.root, part.path, whole, blocks, prefix)

    for unit in units_of(batch):
        yield from read_unit(spec, unit, each_file)
