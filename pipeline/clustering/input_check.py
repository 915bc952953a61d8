"""The clustering input read once before any k-means work: every vector checked and every row's id digested.

    input files --one task per file: vectors checked, ids digested--> digests --duplicate_pass.find_repeats--> repeats

A file that cannot serve (cut short, garbled, a null, zero, non-finite or other-width vector) is an
EmbeddingFileError naming it (pipeline.embedding_files); an id in more than one row is a DuplicateIdError naming the
first repeats (pipeline.clustering.duplicates). The two checks used to be two passes, each reading every file
(the vectors, then the id column again): one read now serves both (bench/cluster_input_check.py).

Bounded memory: a task holds one READ_ROWS batch of vectors and a 16-byte digest per row of its file; the driver
fetches the row counts and the first few repeats only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.clustering.duplicates import duplicate_error, key_paths, row_keys
from pipeline.clustering.vectors import InputColumnError
from pipeline.column_paths import Missing, arrow_path
from pipeline.config import ComputeConfig
from pipeline.duplicate_ids import FILE_INDEX, SHOWN, digest_table
from pipeline.embedding_files import EmbeddingFileError, checked_batches, open_embeddings
from pipeline.embedding_recipe import file_recipe, first_conflict
from pipeline.stages import io_task
from pipeline.storage import Location


def checked_file_digests(
    root: Location,
    name: str,
    file_index: int,
    column: str,
    paths: dict[str, tuple[str, ...]],
    id_column: str,
    chunked: bool,
    dim: int,
    buckets: int,
    first: str = "",
) -> tuple[pa.Table, int, dict[str, str] | None]:
    """Ray task: read one input file once, checking its vectors (embedding_files.checked_batches), and return the
    digests (pipeline.duplicate_ids.digest_table) of its rows' keys (id, with chunk_index when `chunked`), rows
    numbered from 0 in the file, their count and the file's recipe (pipeline.embedding_recipe.file_recipe, None
    without rayembed metadata, or without rows: it has no vector to compare); the driver fetches the last two.

    Raises:
        EmbeddingFileError: as checked_batches, naming the file.
        InputColumnError: the file lacks a column the job reads (`paths`: every one, carried ones too, as found in
            the `first` file), or a row has a null id; naming the file (and row) and what to do.
    """
    extra = {k: v for k, v in key_paths(id_column, paths[id_column], chunked).items() if k != id_column}
    file = root.join(name)
    reader = open_embeddings(file)
    check_columns(file, reader.schema_arrow, paths, first)
    rows, keys, start = [], [], 0
    for table in checked_batches(file, column, paths, id_column, dim, extra, reader):
        for i, key in enumerate(row_keys(table, id_column, chunked)):
            if key is not None:
                rows.append(start + i)
                keys.append(key)
        if table.column(id_column).null_count:
            row = start + int(np.argmax(np.asarray(table.column(id_column).is_null())))
            raise InputColumnError(
                f"{file.uri}: row {row} (rows from 0 in the file) has a null id (input.id_column {id_column!r}): "
                "every row needs an id to be told apart in the assignments and by dedup: "
                "drop those rows or fill their ids"
            )
        start += table.num_rows
    table = digest_table([file_index] * len(rows), rows, keys, buckets)
    return table, table.num_rows, file_recipe(reader.schema_arrow.metadata) if start else None


def check_columns(file: Location, schema: pa.Schema, paths: dict[str, tuple[str, ...]], first: str) -> None:
    """Every column the job reads is in `file`, whose `schema` is given (files of several writers may differ).

    Raises:
        InputColumnError: naming the file, the missing column, its columns and what to do.
    """
    for name in paths:
        path = arrow_path(schema, name)
        if isinstance(path, Missing):
            inside = f"; {path.describe(name)}" if path.at else ""
            raise InputColumnError(
                f"{file.uri}: column {name!r} (read by the job) not found; its columns are {schema.names}{inside}, "
                f"while {first or 'the first file'} has it: every input file needs the columns the job reads; "
                "rename the column in that file, or move the file out of input.uri if it is not of this dataset"
            )


def check_input(
    root: Location,
    files: list[str],
    column: str,
    paths: dict[str, tuple[str, ...]],
    id_column: str,
    chunked: bool,
    dim: int,
    compute: ComputeConfig,
) -> None:
    """Check every vector and that no key repeats, reading each input file once (one Ray task per file).

    Args:
        root, files: the listed input (paths relative to `root`).
        column, id_column: input.embedding_column and input.id_column; `paths` gives each one's path in the files'
            schema (a dotted name may reach into a struct).
        chunked: the input has a chunk_index column (several rows per id, one per chunk).
        dim: the width every vector must have (the first vector's).

    Raises:
        EmbeddingFileError: the first file in listing order whose vectors cannot serve, naming it; or files of
            several recipes (another model, pooling or prompt: pipeline.embedding_recipe), naming two of them.
        DuplicateIdError: rows repeat an earlier key; names the first few (clustering.duplicates.duplicate_error).
    """
    import ray  # only when the job runs

    from pipeline.duplicate_pass import BUCKETS, find_repeats

    task = io_task(checked_file_digests, compute, num_returns=3)
    calls = [
        task.remote(root, name, i, column, paths, id_column, chunked, dim, BUCKETS, files[0])
        for i, name in enumerate(files)
    ]
    # in listing order: the error names the first bad file whatever task finished first
    recipes = [(root.join(name).uri, ray.get(recipe)) for name, (_, _, recipe) in zip(files, calls)]
    conflict = first_conflict(recipes)
    if conflict:
        raise EmbeddingFileError(
            conflict.message(
                f"input.uri {root.uri}",
                "Point input.uri at the embeddings of one run (move the odd files out, or list the run's folder "
                "alone), or embed their input again with the recipe of the rest",
            )
        )
    repeats = find_repeats([(table, count) for table, count, _ in calls], files, compute)
    count = repeats.count()
    if count:
        first = repeats.sort([FILE_INDEX, "row"]).take(SHOWN)
        raise duplicate_error(root, files, id_column, paths[id_column], chunked, count, first)
