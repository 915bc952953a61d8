"""Duplicate ids across all input files: a pre-pass over ids, then later copies become rejects ("duplicate id").

Why a pre-pass rather than a shared "seen" set during the job: which copy counts as first must not depend on which
Ray task happens to run first, or re-running a job would embed different rows. The pre-pass reads every file once
more; only 16-byte digests of the ids reach the driver (1.6 GB per 100M rows), which orders rows by (file order,
row) and keeps the first occurrence of each id. Rows already rejected for another reason take no part: the first
*embeddable* row of an id wins. Pure pyarrow/numpy: the Ray glue lives in pipeline.embed_job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import REJECT, ROW, TEXT
from pipeline.errors import UserError
from pipeline.reading import ReadSpec, read_file

REASON = "duplicate id"
SHOWN = 5  # duplicates listed in the error message


class DuplicateIdError(UserError, ValueError):
    """input.duplicate_ids=error and an id occurs more than once."""


def id_digests(spec: ReadSpec, rel: str) -> pa.Table:
    """(row, hi, lo) for every good row of one file: the row number and the 128-bit blake2b digest of its id."""
    rows, his, los = [], [], []
    for block in read_file(spec, rel):
        good = block.filter(pc.is_null(block.column(REJECT)))
        for row, key in zip(good.column(ROW).to_pylist(), good.column("id").to_pylist()):
            digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            rows.append(row)
            his.append(int.from_bytes(digest[:8], "little"))
            los.append(int.from_bytes(digest[8:], "little"))
    return pa.table(
        {"row": pa.array(rows, pa.int64()), "hi": pa.array(his, pa.uint64()), "lo": pa.array(los, pa.uint64())}
    )


def find_duplicates(files: list[str], digests: list[pa.Table], policy: str) -> dict[str, dict[int, str]]:
    """Rows to reject per file ({file: {row: reason}}), keeping the first row of each id in (file, row) order.

    Raises:
        DuplicateIdError: policy "error" and some id repeats; the message names the first few repeats.
    """
    file_idx = np.concatenate([np.full(t.num_rows, i, dtype=np.int64) for i, t in enumerate(digests)] or [[]])
    rows = np.concatenate([t.column("row").to_numpy() for t in digests] or [[]]).astype(np.int64)
    hi = np.concatenate([t.column("hi").to_numpy() for t in digests] or [[]]).astype(np.uint64)
    lo = np.concatenate([t.column("lo").to_numpy() for t in digests] or [[]]).astype(np.uint64)
    order = np.lexsort((rows, file_idx, lo, hi))  # by digest, then (file, row): the first copy leads its run
    hi, lo = hi[order], lo[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    run_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))  # index of each run's first row
    dups = sorted(np.flatnonzero(repeat), key=lambda i: (file_idx[order[i]], rows[order[i]]))  # report in file order
    if policy == "error" and len(dups):
        shown = [
            f"{files[file_idx[order[i]]]} row {rows[order[i]]} repeats {files[file_idx[order[run_start[i]]]]} row "
            f"{rows[order[run_start[i]]]}"
            for i in dups[:SHOWN]
        ]
        raise DuplicateIdError(
            f"{len(dups)} rows repeat an earlier id: {'; '.join(shown)}"
            + (" ..." if len(dups) > SHOWN else "")
            + " (set input.duplicate_ids=keep_first to embed the first and reject the rest)"
        )
    rejects: dict[str, dict[int, str]] = {}
    for i in dups:
        first = order[run_start[i]]
        reason = f"{REASON} (first at {files[file_idx[first]]} row {rows[first]})"
        rejects.setdefault(files[file_idx[order[i]]], {})[int(rows[order[i]])] = reason
    return rejects


def reject_rows(block: pa.Table, reasons: dict[int, str]) -> pa.Table:
    """Mark the rows of `block` whose `_row` is in `reasons` as rejects (text dropped, reason set)."""
    row_numbers = block.column(ROW).to_pylist()
    current = block.column(REJECT).to_pylist()
    new = [old if old is not None else reasons.get(r) for r, old in zip(row_numbers, current)]
    block = block.set_column(block.schema.get_field_index(REJECT), REJECT, pa.array(new, pa.string()))
    text = pc.if_else(pc.is_null(block.column(REJECT)), block.column(TEXT), pa.scalar(None, pa.string()))
    return block.set_column(block.schema.get_field_index(TEXT), TEXT, text)


def read_files(batch: pa.Table, spec: ReadSpec) -> Iterator[pa.Table]:
    """Read-stage UDF: one input row per file path, many output blocks per file, later copies of an id rejected.

    An optional `duplicates` column holds, per file, the JSON {row: reason} of rows that repeat an earlier id
    (`find_duplicates`).
    """
    files = batch.column("file").to_pylist()
    extra = batch.column("duplicates").to_pylist() if "duplicates" in batch.column_names else [None] * len(files)
    for rel, dups in zip(files, extra):
        reasons = {int(row): reason for row, reason in json.loads(dups).items()} if dups else {}
        for block in read_file(spec, rel):
            yield reject_rows(block, reasons) if reasons else block
