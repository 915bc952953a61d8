"""Embedding Parquet files read by the cluster and mining jobs: a file that cannot serve is an error naming it.

These files hold vectors (the embed job's output, or the user's), not text. A file cut short, garbled or not
Parquet, a vector of another width than the rest, a null, zero or NaN vector: the embed job makes a corrupt text file one reject
row and goes on, but here a skipped file's rows would be missing from the clusters or pairs without a trace, and
vectors of another width (another model, another output.dimensions) are not comparable with the rest. So each is
an error that names the file, the row's id where there is one, and what to do. A file without rows is fine (an
embed output's part-empty.parquet, an empty part a Spark or pandas writer left).

Reading through `reading.naming_errors` keeps its rules: a transient storage error is a TransientStorageError
(retried by io_task), a vanished or forbidden file an InputFileError naming it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.clustering.vectors import EmbeddingColumnError, embedding_matrix, normalize_rows
from pipeline.column_paths import flat_table, projection
from pipeline.file_formats import PARQUET_MAGIC, SNIFF_BYTES, CorruptFileError, InputFileError, describe
from pipeline.reading import CORRUPT_HINT, Cursor, naming_errors
from pipeline.storage import Location

READ_ROWS = 1 << 16  # rows per batch when a whole file is checked: bounds a task's memory

# Replaces reading.CORRUPT_HINT for a file of vectors: "move it out and run again" alone would lose its rows.
VECTORS_HINT = (
    ". The file is cut short or corrupt (an interrupted copy or upload?). Its rows are vectors, so the job does not "
    "skip it: copy it again from where it was written, or run the embed job again over its input, or move it out "
    "of the input if its rows are not wanted"
)


class EmbeddingFileError(InputFileError, ValueError):
    """An embeddings file that cannot be read (cut short, garbled, not Parquet) or whose vectors cannot be used with
    the rest (another width, null vectors); the message names the file and says what to do."""


@contextmanager
def naming_the_file(file: Location) -> Iterator[None]:
    """Raise an error of reading `file` as EmbeddingFileError (corrupt bytes) or InputFileError /
    TransientStorageError (reading.naming_errors), naming the file. An InputFileError raised inside (file_matrix's
    EmbeddingFileError) passes unchanged."""
    try:
        with naming_errors(file.uri, "parquet", Cursor()):
            yield
    except CorruptFileError as err:
        other = other_format(file)
        if other:
            raise EmbeddingFileError(
                f"{file.uri} is read as an embeddings Parquet file but looks like {other}; {CONVERT_HINT}"
            ) from err
        raise EmbeddingFileError(str(err).replace(CORRUPT_HINT, VECTORS_HINT)) from err


# What to do with vectors stored in another format (a NumPy .npy of another tool, an Arrow/Feather file, JSON)
CONVERT_HINT = (
    "the cluster and mining jobs read Parquet files with an id column and an embedding column of float lists (the "
    "embed job's output), and do not guess another format's ids. Write them as Parquet, e.g. with pyarrow: "
    "pq.write_table(pa.table({'id': ids, 'embedding': list(np.load('x.npy'))}), 'x.parquet'), or move the file out "
    "of the input"
)


def other_format(file: Location) -> str | None:
    """What a file that does not parse as Parquet is, in words (file_formats.describe of its first bytes), when it is
    a known other format (NumPy .npy, Arrow, zip, HDF5, compressed, JSON or other text); None when it starts like
    Parquet, is empty or unrecognized bytes (a file cut short or garbled) or its first bytes cannot be read."""
    try:
        with file.fs.open_input_stream(file.path) as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError:  # the read's own error (naming_errors) says what went wrong
        return None
    what = describe(head)
    if head.startswith(PARQUET_MAGIC) or what in ("binary data", "an empty file"):  # garbled or cut: VECTORS_HINT
        return None
    return what


def open_embeddings(file: Location) -> pq.ParquetFile:
    """The Parquet file at `file` with its footer read (its schema, row groups).

    Raises:
        EmbeddingFileError: the file is cut short, garbled or not Parquet.
        InputFileError / TransientStorageError: another read error (reading.naming_errors).
    """
    with naming_the_file(file):
        return pq.ParquetFile(file.path, filesystem=file.fs)


def read_embedding_file(file: Location, columns: list[str] | None = None) -> pa.Table:
    """The whole file (or `columns`); raises as open_embeddings, also for data pages that do not decode."""
    with naming_the_file(file):
        return pq.read_table(file.path, filesystem=file.fs, columns=columns)


def file_matrix(
    file: Location, table: pa.Table, column: str, dim: int | None = None, ids: list | None = None, dim_from: str = ""
) -> np.ndarray:
    """embedding_matrix of a table read from `file`, its errors (width other than `dim`, null vectors) naming the
    file: (N, dim) float32.

    Raises:
        EmbeddingFileError: as embedding_matrix's EmbeddingColumnError, with the file's URI first.
    """
    try:
        return embedding_matrix(table, column, dim, ids, dim_from)
    except EmbeddingColumnError as err:
        raise EmbeddingFileError(f"{file.uri}: {err}") from err


def file_unit_rows(
    file: Location, table: pa.Table, column: str, dim: int | None = None, ids: list | None = None, dim_from: str = ""
) -> np.ndarray:
    """file_matrix made unit length (clustering.vectors.normalize_rows): (N, dim) float32.

    Raises:
        EmbeddingFileError: as file_matrix, or a vector is all zeros or not finite, naming the file and its id.
    """
    x = file_matrix(file, table, column, dim, ids, dim_from)
    try:
        return normalize_rows(x, ids)[0]
    except EmbeddingColumnError as err:
        raise EmbeddingFileError(f"{file.uri}: {err}") from err


def checked_batches(
    file: Location,
    column: str,
    paths: dict[str, tuple[str, ...]],
    id_column: str | None,
    dim: int,
    extra: dict[str, tuple[str, ...]] | None = None,
    reader: pq.ParquetFile | None = None,
    dim_from: str = "",
) -> Iterator[pa.Table]:
    """Every batch of READ_ROWS rows of one file, read once, after its vectors are checked; each batch flattened to
    the embedding column, the id column (to name a bad row) and `extra` ({column: path}, e.g. chunk_index).
    `reader`: the file already opened (open_embeddings), so its footer is not fetched again. `dim_from`: where `dim`
    was read ("in <file>"), named by a width error next to this file.

    Raises:
        EmbeddingFileError: the file does not read, or a vector is null, all zeros, not finite or of another length
            than `dim`.
    """
    wanted = {column: paths[column], **({id_column: paths[id_column]} if id_column else {}), **(extra or {})}
    reader = reader or open_embeddings(file)
    with naming_the_file(file):
        for batch in reader.iter_batches(batch_size=READ_ROWS, columns=projection(list(wanted.values()))):
            table = flat_table(pa.Table.from_batches([batch]), wanted)
            ids = RowIds(table.column(id_column)) if id_column else None
            file_unit_rows(file, table, column, dim, ids, dim_from)
            yield table


def check_file(file: Location, column: str, paths: dict[str, tuple[str, ...]], id_column: str | None, dim: int) -> int:
    """Read every vector of one file (checked_batches); returns its row count.

    Raises:
        EmbeddingFileError: as checked_batches.
    """
    return sum(table.num_rows for table in checked_batches(file, column, paths, id_column, dim))


def ids_as_text(uri: str, ids: pa.ChunkedArray | pa.Array, key: str, start: int = 0) -> pa.ChunkedArray | pa.Array:
    """A file's id column as text (string), as the outputs write ids and joins compare them; `key` names the
    configuration key of the column (`input.id_column 'id'`), `start` the row of the file the ids begin at.

    Another tool's ids that do not cast failed as an Arrow error from deep inside a Ray task: lists or structs
    (ArrowNotImplementedError 'Unsupported cast'), bytes that are not UTF-8 (a raw digest: ArrowInvalid).

    Raises:
        EmbeddingFileError: the ids are lists, structs or maps, or bytes that are not UTF-8, naming the file (and
            row) and what to do.
    """
    if pa.types.is_nested(ids.type):
        raise EmbeddingFileError(
            f"{uri}: the id column ({key}) has type {ids.type}; an id is one text or number per row (outputs and "
            "joins take it as text): point the key at such a column, or write the ids so"
        )
    try:
        return ids.cast(pa.string())
    except pa.ArrowInvalid:  # binary ids that are not UTF-8
        row = next(i for i, v in enumerate(ids.to_pylist()) if v is not None and not is_utf8(v))
        raise EmbeddingFileError(
            f"{uri}: row {start + row} (rows from 0 in the file) has an id that is not UTF-8 text "
            f"({ids[row].as_py()!r}; {key} is {ids.type}): write the ids as text (e.g. their hex), or point the key "
            "at a text id column"
        ) from None


def is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class RowIds(Sequence):
    """A block's ids as strings, converted one at a time when an error names a row: converting every id of every
    block to a Python string cost more than checking the vectors (bench/cluster_scale.py)."""

    def __init__(self, column: pa.ChunkedArray):
        self.column = column

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, i: int) -> str | None:  # type: ignore[override]
        value = self.column[i].as_py()
        return None if value is None else str(value)  # as a cast to string gives it
