"""Duplicate ids in the clustering input: found before any k-means work, an error naming them.

Two copies of one row (a file copied twice, two embed outputs in one folder) gave the assignments two rows with
one id, and dedup's `keep` (first id, longest text, random by id) could not choose between them. Unlike the embed
job, which reads raw text and may keep the first row of an id (input.duplicate_ids), the clustering reads vectors
some earlier job wrote: a repeated id there means the input is not the dataset the user meant, so the job stops
and says which id, in which files, and what to do. Rows of one id told apart by `chunk_index` (an embed output of
long_inputs: chunk) are distinct rows, not duplicates.

Bounded memory, as the embed job's pre-pass (pipeline.duplicate_pass, whose Ray glue this reuses): one task per
file reads the id column(s) and keeps a 16-byte digest per row; a hash shuffle by bucket compares them; the driver
fetches row counts and the first few repeats only.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.column_paths import flat_table, projection
from pipeline.columns import CHUNK_INDEX
from pipeline.config import ComputeConfig
from pipeline.duplicate_ids import FILE_INDEX, SHOWN, digest_table
from pipeline.errors import UserError
from pipeline.stages import io_task
from pipeline.storage import Location

READ_ROWS = 1 << 16  # rows per batch read from a file: bounds a task's memory for the ids of a big file


class DuplicateIdError(UserError, ValueError):
    """The clustering input holds one id (and chunk_index, where it has one) in more than one row."""


def row_keys(table: pa.Table, id_column: str, chunked: bool) -> list[str | None]:
    """The id of each row as the assignments write it (cast to string), joined with its chunk_index when the input
    has one; None for a null id (an error later, naming it: pipeline.clustering.distributed.string_ids)."""
    ids = table.column(id_column).cast(pa.string()).to_pylist()
    if not chunked:
        return ids
    chunks = table.column(CHUNK_INDEX).to_pylist()
    return [None if i is None else f"{i}\0{c}" for i, c in zip(ids, chunks)]


def key_paths(id_column: str, path: tuple[str, ...], chunked: bool) -> dict[str, tuple[str, ...]]:
    """{column: its path in the files} of the columns that make a row's key."""
    return {id_column: path, **({CHUNK_INDEX: (CHUNK_INDEX,)} if chunked else {})}


def file_digests(
    root: Location, name: str, file_index: int, id_column: str, path: tuple[str, ...], chunked: bool, buckets: int
) -> tuple[pa.Table, int]:
    """Ray task: the digests (pipeline.duplicate_ids.digest_table) of one input file's rows, numbered from 0 in
    the file, and their count (the only part the driver fetches)."""
    paths = key_paths(id_column, path, chunked)
    reader = pq.ParquetFile(root.join(name).path, filesystem=root.fs)
    rows, keys, start = [], [], 0
    for batch in reader.iter_batches(batch_size=READ_ROWS, columns=projection(list(paths.values()))):
        part = row_keys(flat_table(pa.Table.from_batches([batch]), paths), id_column, chunked)
        present = [(start + i, k) for i, k in enumerate(part) if k is not None]
        rows += [r for r, _ in present]
        keys += [k for _, k in present]
        start += batch.num_rows
    table = digest_table([file_index] * len(rows), rows, keys, buckets)
    return table, table.num_rows


def check_unique_ids(
    root: Location,
    files: list[str],
    id_column: str,
    path: tuple[str, ...],
    chunked: bool,
    compute: ComputeConfig,
) -> None:
    """Raise if any id (with its chunk_index, when `chunked`) occurs in more than one row of the input files.

    Args:
        root, files: the listed input (paths relative to `root`).
        id_column, path: input.id_column and its path in the files' schema (a dotted name may reach into a struct).
        chunked: the input has a chunk_index column (several rows per id, one per chunk).

    Raises:
        DuplicateIdError: how many rows repeat an earlier id; for the first few, the id, the file and row of the
            repeat and of the first copy (rows numbered from 0 in each file); and what to do.
    """
    from pipeline.duplicate_pass import BUCKETS, find_repeats  # imports Ray: only when the job runs

    task = io_task(file_digests, compute, num_returns=2)
    calls = [task.remote(root, name, i, id_column, path, chunked, BUCKETS) for i, name in enumerate(files)]
    repeats = find_repeats(calls, files, compute)
    count = repeats.count()
    if not count:
        return
    first = repeats.sort([FILE_INDEX, "row"]).take(SHOWN)
    raise duplicate_error(root, files, id_column, path, chunked, count, first)


def duplicate_error(
    root: Location,
    files: list[str],
    id_column: str,
    path: tuple[str, ...],
    chunked: bool,
    count: int,
    first: list[dict],
    key: str = "input.uri",
    consequence: str = "so the assignments would hold one id twice and dedup could not tell the copies apart",
    column: str = "input.id_column",
) -> DuplicateIdError:
    """The error for `count` repeated rows, naming the ids of the `first` few (rows of DUPLICATES_SCHEMA); their
    ids are read back from the files (one small read per repeat).

    Args:
        key, column: the configuration keys of the input and of its id column, as the message names them.
        consequence: why a repeated id cannot be used by the job at hand (after "so ...").
    """
    paths = key_paths(id_column, path, chunked)
    shown = []
    for d in first:
        name = files[d[FILE_INDEX]]
        row = row_at(root.join(name), d["row"], paths)
        ident = repr(row.column(id_column).cast(pa.string())[0].as_py())
        if chunked:
            ident += f" chunk_index {row.column(CHUNK_INDEX)[0].as_py()}"
        first_at = f"{files[d['first_file_index']]} row {d['first_row']}"
        shown.append(f"id {ident} at {name} row {d['row']} repeats {first_at}")
    what = f"{column} {id_column!r}" + (" with chunk_index" if chunked else "")
    more = f" and {count - len(shown)} more" if count > len(shown) else ""
    return DuplicateIdError(
        f"{key} {root.uri}: {count} rows repeat an earlier id ({what}), {consequence}: {'; '.join(shown)}{more}. "
        f"The input holds some rows twice (a file copied, two embed outputs in one folder?): remove the copies from "
        f"{key}, or give every row its own id (the embed job's input.duplicate_ids: keep_first writes each id once)"
    )


def row_at(file: Location, row: int, paths: dict[str, tuple[str, ...]]) -> pa.Table:
    """Row `row` (from 0) of a Parquet file, the columns at `paths` only, read from the row group that holds it."""
    reader = pq.ParquetFile(file.path, filesystem=file.fs)
    left = row
    for group in range(reader.num_row_groups):
        size = reader.metadata.row_group(group).num_rows
        if left < size:
            table = reader.read_row_group(group, columns=projection(list(paths.values())))
            return flat_table(table.slice(left, 1), paths)
        left -= size
    raise IndexError(f"{file.uri} has no row {row}")
