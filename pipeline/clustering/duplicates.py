"""Duplicate ids in the clustering input: found before any k-means work, an error naming them.

Two copies of one row (a file copied twice, two embed outputs in one folder) gave the assignments two rows with
one id, and dedup's `keep` (first id, longest text, random by id) could not choose between them. Unlike the embed
job, which reads raw text and may keep the first row of an id (input.duplicate_ids), the clustering reads vectors
some earlier job wrote: a repeated id there means the input is not the dataset the user meant, so the job stops
and says which id, in which files, and what to do. Rows of one id told apart by `chunk_index` (an embed output of
long_inputs: chunk) are distinct rows, not duplicates.

The check runs in the same read of every input file as the vectors' check (pipeline.clustering.input_check), with
the embed job's duplicate pass (pipeline.duplicate_pass): a 16-byte digest per row, a hash shuffle by bucket; the
driver fetches row counts and the first few repeats only. This module holds the row keys and the error.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.column_paths import flat_table, projection
from pipeline.columns import CHUNK_INDEX
from pipeline.duplicate_ids import FILE_INDEX
from pipeline.errors import UserError
from pipeline.storage import Location


class DuplicateIdError(UserError, ValueError):
    """The clustering input holds one id (and chunk_index, where it has one) in more than one row."""


def row_keys(table: pa.Table, id_column: str, chunked: bool) -> list[str | None]:
    """The id of each row as the assignments write it (cast to string), joined with its chunk_index when the input
    has one; None for a null id (an error naming its file and row: input_check.checked_file_digests)."""
    ids = table.column(id_column).cast(pa.string()).to_pylist()
    if not chunked:
        return ids
    chunks = table.column(CHUNK_INDEX).to_pylist()
    return [None if i is None else f"{i}\0{c}" for i, c in zip(ids, chunks)]


def key_paths(id_column: str, path: tuple[str, ...], chunked: bool) -> dict[str, tuple[str, ...]]:
    """{column: its path in the files} of the columns that make a row's key."""
    return {id_column: path, **({CHUNK_INDEX: (CHUNK_INDEX,)} if chunked else {})}


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
