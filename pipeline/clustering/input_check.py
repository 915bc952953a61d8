"""The clustering input read once before any k-means work: every vector checked and every row's id digested.

    input files --one task per file: vectors checked, ids digested--> digests --duplicate_pass.repeats_found--> repeats

A file that cannot serve (cut short, garbled, a null, zero, non-finite or other-width vector) is an
EmbeddingFileError naming it (pipeline.embedding_files); an id in more than one row is a DuplicateIdError naming the
first repeats (pipeline.clustering.duplicates). The two checks used to be two passes, each reading every file
(the vectors, then the id column again): one read now serves both (bench/cluster_input_check.py).

Bounded memory: a task holds one READ_ROWS batch of vectors and a 16-byte digest per row of its file; the driver
fetches the row counts and the first few repeats only.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.clustering.duplicates import duplicate_error, key_paths, row_keys
from pipeline.clustering.vectors import InputColumnError
from pipeline.column_paths import Missing, arrow_path
from pipeline.config import ComputeConfig
from pipeline.duplicate_ids import digest_table
from pipeline.embedding_files import EmbeddingFileError, checked_batches, ids_as_text, open_embeddings
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
    dim_from: str = "",
) -> tuple[pa.Table, int, tuple[dict[str, str] | None, pa.Schema]]:
    """Ray task: read one input file once, checking its vectors (embedding_files.checked_batches), and return the
    digests (pipeline.duplicate_ids.digest_table) of its rows' keys (id, with chunk_index when `chunked`), rows
    numbered from 0 in the file, their count, and the file's recipe (pipeline.embedding_recipe.file_recipe, None
    without rayembed metadata, or without rows: it has no vector to compare) with the schema of the top-level
    columns the job reads (for read_schema); the driver fetches the last two.

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
    for table in checked_batches(file, column, paths, id_column, dim, extra, reader, dim_from):
        for i, key in enumerate(file_row_keys(file, table, id_column, chunked, start)):
            if key is not None:
                rows.append(start + i)
                keys.append(key)
        # NaN in a float id column is pandas' missing id (an integer column with a gap): it was clustered under
        # the id 'nan' (and two of them were "repeated ids")
        missing = np.asarray(pc.is_null(table.column(id_column), nan_is_null=True))
        if missing.any():
            at = int(np.argmax(missing))
            what = "a null id" if table.column(id_column)[at].as_py() is None else "a NaN id (pandas' missing value)"
            raise InputColumnError(
                f"{file.uri}: row {start + at} (rows from 0 in the file) has {what} (input.id_column {id_column!r}): "
                "every row needs an id to be told apart in the assignments and by dedup: "
                "drop those rows or fill their ids"
            )
        start += table.num_rows
    table = digest_table([file_index] * len(rows), rows, keys, buckets)
    schema = reader.schema_arrow
    read = pa.schema([schema.field(top) for top in dict.fromkeys(path[0] for path in paths.values())])
    return table, table.num_rows, (file_recipe(schema.metadata) if start else None, read)


def file_row_keys(file: Location, table: pa.Table, id_column: str, chunked: bool, start: int) -> list[str | None]:
    """duplicates.row_keys of a batch of `file` whose first row is `start`; an id that cannot be written as text
    (a list, a struct, bytes that are not UTF-8) is an error naming the file and row (embedding_files.ids_as_text),
    not a Ray traceback.
    """
    ids = ids_as_text(file.uri, table.column(id_column), f"input.id_column {id_column!r}", start)
    return row_keys(table.set_column(table.schema.get_field_index(id_column), id_column, ids), id_column, chunked)


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
    dim_from: str = "",
) -> tuple[pa.Schema | None, int]:
    """Check every vector and that no key repeats, reading each input file once (one Ray task per file); returns
    the schema the dataset read must give the files when they disagree on a column's type (read_schema), else None,
    and the input's rows (the job's row count: counting them through the dataset's read listed the files again).

    Args:
        root, files: the listed input (paths relative to `root`).
        column, id_column: input.embedding_column and input.id_column; `paths` gives each one's path in the files'
            schema (a dotted name may reach into a struct).
        chunked: the input has a chunk_index column (several rows per id, one per chunk).
        dim: the width every vector must have (the first vector's); `dim_from`: where it was read ("in <file>"),
            named with the odd file by a width error.

    Raises:
        EmbeddingFileError: the first file in listing order whose vectors cannot serve, naming it; or files of
            several recipes (another model, pooling or prompt: pipeline.embedding_recipe), naming two of them.
        DuplicateIdError: rows repeat an earlier key; names the first few (clustering.duplicates.duplicate_error).
    """
    import ray  # only when the job runs

    from pipeline.duplicate_pass import BUCKETS, repeats_found

    task = io_task(checked_file_digests, compute, num_returns=3)
    calls = [
        task.remote(root, name, i, column, paths, id_column, chunked, dim, BUCKETS, files[0], dim_from)
        for i, name in enumerate(files)
    ]
    # in listing order: the error names the first bad file whatever task finished first. The driver keeps a name and
    # a shared recipe per file (the listing's own size) and each distinct schema once.
    recipes: list[tuple[str, dict[str, str] | None]] = []
    interned: dict[tuple, dict[str, str]] = {}
    schemas: dict[pa.Schema, str] = {}  # each distinct read schema -> its first file
    for name, (_, _, facts) in zip(files, calls):
        recipe, read = ray.get(facts)
        recipes.append((name, interned.setdefault(tuple(sorted(recipe.items())), recipe) if recipe else None))
        schemas.setdefault(read, name)
    conflict = first_conflict(recipes)
    if conflict:
        conflict = replace(conflict, first=root.join(conflict.first).uri, other=root.join(conflict.other).uri)
        raise EmbeddingFileError(
            conflict.message(
                f"input.uri {root.uri}",
                "Point input.uri at the embeddings of one run (move the odd files out, or list the run's folder "
                "alone), or embed their input again with the recipe of the rest",
            )
        )
    schema = read_schema([(root.join(name).uri, read) for read, name in schemas.items()], paths, id_column, column)
    rows = sum(ray.get([count for _, count, _ in calls]))
    count, first = repeats_found([(table, count) for table, count, _ in calls], files, compute)
    if count:
        raise duplicate_error(root, files, id_column, paths[id_column], chunked, count, first)
    return schema, rows


def read_schema(
    schemas: list[tuple[str, pa.Schema]], paths: dict[str, tuple[str, ...]], id_column: str, column: str
) -> pa.Schema | None:
    """The schema the job's dataset read (ray.data.read_parquet's `schema`) must give every file when the files do
    not agree on a read column's type; None when they agree (Ray infers it). Ray unifies a sample of the files'
    schemas, so ids written as strings by one tool and as integers by another failed the run in Ray Data ('Unable to
    merge: Field id has incompatible types: string vs int64'), or in a read task for a file outside the sample.

    The id is read as a string where types differ (the outputs write ids as strings, and the duplicate check compares
    them so: an integral float id 2.0 is '2', as pyarrow casts it); a top-level embedding column as list<float32>
    (float16/32/64 in list, large_list or fixed_size_list: each vector is made float32 anyway); any other column as
    pyarrow's permissive promotion gives it (int32 and int64: int64; string and large_string: large_string).

    Args:
        schemas: (file URI, its read columns' top-level fields), in listing order (each distinct schema once is
            enough).
        paths: each read column's path (a dotted name may reach into a struct: its top-level column is unified).

    Raises:
        InputColumnError: a column whose types cannot be promoted to one, naming it, two files and their types.
    """
    if len({read for _, read in schemas}) <= 1:
        return None
    # the id as a string and the vectors as list<float32>, at their paths: top-level or inside a struct
    forced = {paths[id_column]: pa.string(), paths[column]: pa.list_(pa.float32())}
    fields = []
    for name in schemas[0][1].names:
        at_name = [(uri, read.field(name)) for uri, read in schemas]
        fields.append(unified(at_name, name, {p[1:]: t for p, t in forced.items() if p[0] == name}))
    return pa.schema(fields)


def unified(fields: list[tuple[str, pa.Field]], name: str, forced: dict[tuple[str, ...], pa.DataType]) -> pa.Field:
    """One field for a column whose files give it `fields` ((file URI, its field), in listing order): as it is
    where they agree; `forced` ({path below this field: type}, () for the field itself) where they do not; a struct
    leading to a forced path rebuilt child by child (its children in first-seen order), so a nested id of int64 in
    one file and string in another is read as a string as a top-level one is; other types promoted (`promoted`).
    `name`: the column's dotted name, for the error.

    Raises:
        InputColumnError: as promoted.
    """
    first = fields[0][1]
    if len({f.type for _, f in fields}) == 1:
        return first
    if () in forced:
        return pa.field(first.name, forced[()])
    if forced and all(pa.types.is_struct(f.type) for _, f in fields):
        children = dict.fromkeys(c.name for _, f in fields for c in f.type)
        merged = []
        for child in children:
            at_child = [(uri, f.type.field(child)) for uri, f in fields if f.type.get_field_index(child) >= 0]
            below = {p[1:]: t for p, t in forced.items() if p and p[0] == child}
            merged.append(unified(at_child, f"{name}.{child}", below))
        return pa.field(first.name, pa.struct(merged), nullable=first.nullable)
    return promoted_field(fields, name)


def promoted_field(fields: list[tuple[str, pa.Field]], name: str) -> pa.Field:
    """The field promoted (pyarrow's permissive unification) over every file's type, in listing order; `name`: the
    column's (dotted) name, for the error.

    Raises:
        InputColumnError: the first file whose type does not promote with the others', named with the first file.
    """
    first_uri, one = fields[0]
    first_type = one.type
    for uri, field in fields[1:]:
        try:
            one = pa.unify_schemas(
                [pa.schema([one]), pa.schema([field.with_name(one.name)])], promote_options="permissive"
            ).field(one.name)
        except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InputColumnError(
                f"column {name!r} has type {first_type} in {first_uri} but {field.type} in {uri}, which do not "
                f"convert to one ({err}): write that column with one type in every input file, or move the odd "
                "files out of input.uri"
            ) from None
    return one
