"""Embedding column -> validated, unit-length float32 matrix.

Every clustering step goes through `embedding_matrix`, so a missing or ragged embedding column fails with the same
clear message wherever it is first seen, and non-normalized vectors are normalized the same way everywhere.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.errors import UserError
from pipeline.quantization import refuse_non_float

NORM_TOLERANCE = 1e-3  # float16 storage alone moves norms by ~1e-4; anything beyond this was not normalized
# Rows whose norm is further than this from 1 are divided by it even when they were normalized before storage: a
# float16 unit vector's squared norm is 1 +- 4e-4 (dim 64; 1.4e-4 at 384), so undivided, an exact copy's cosine read
# below 1 - eps for dedup's small eps, and cosines above 1. float32 unit vectors (norms 1 +- ~1e-7) are left as they
# are.
UNIT_TOLERANCE = 1e-6


class EmbeddingColumnError(UserError, ValueError):
    """The embedding column is missing, not a list of floats, or its vectors do not all have the same length."""


class InputColumnError(UserError, ValueError):
    """A column the configuration names (id, text, kept or group column) is not in the input files."""


def check_embedding_field(schema: pa.Schema, column: str, dim: int | None = None) -> int | None:
    """Validate the embedding column's type from a schema alone; return its fixed dim when the type has one.

    Args:
        schema: schema of the dataset (or of one block).
        column: configured embedding column.
        dim: expected vector length, when already known; a different fixed size raises.

    Raises:
        EmbeddingColumnError: the column is missing (the message lists the columns that exist) or is not a list of
            floats, or its fixed size differs from `dim`.
    """
    if column not in schema.names:
        raise EmbeddingColumnError(
            f"embedding column {column!r} not found; columns are {schema.names} (set input.embedding_column)"
        )
    typ = schema.field(column).type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)):
        raise EmbeddingColumnError(f"embedding column {column!r} has type {typ}, expected a list of floats")
    if not pa.types.is_floating(typ.value_type):
        raise EmbeddingColumnError(refuse_non_float(column, typ.value_type, schema.metadata, "this job"))
    if pa.types.is_fixed_size_list(typ):
        if dim is not None and typ.list_size != dim:
            raise EmbeddingColumnError(f"embedding column {column!r} has dim {typ.list_size}, expected {dim}")
        return typ.list_size
    return dim


MIXED_DIMS_HINT = (
    "all vectors must have the same dim: the input mixes embeddings of different models or dimensions; point the "
    "job at one embeddings dataset"
)


def embedding_matrix(
    table: pa.Table, column: str, dim: int | None = None, ids: list[str] | None = None, dim_from: str = ""
) -> np.ndarray:
    """The column as a (N, dim) float32 matrix, raw (not normalized).

    Args:
        dim: the expected vector length (the input's first vector's), when known.
        ids: the rows' ids, so that an error names the row by its id rather than its place in a block.
        dim_from: where `dim` was read (e.g. "'a0' in s3://b/emb/part-0.parquet"), named by a width error so that
            both files of a mixed input are in the message.

    Raises:
        EmbeddingColumnError: missing/wrongly typed column, null or empty (0-value) vectors, vectors of different
            lengths, or a length different from `dim`.
    """
    origin = f"the input's first ({dim_from})" if dim_from else "the input's first"
    check_embedding_field(table.schema, column)  # the type; the lengths are checked below, naming a row
    arr = table.column(column).combine_chunks()
    if arr.null_count:
        first = int(np.argmax(np.asarray(arr.is_null())))
        name = repr(ids[first]) if ids else f"row {first}"
        raise EmbeddingColumnError(
            f"embedding column {column!r} has {arr.null_count} null vectors (the first: {name}): drop those rows or "
            "embed them again"
        )
    n = len(arr)
    if not pa.types.is_fixed_size_list(arr.type) and n:
        # an empty list is another tool's missing vector (a text it could not embed), not a vector of dim 0: it was
        # named as a vector of another model's width, and when first in a file it set the width that the next rows
        # were blamed for
        empty = np.asarray(arr.value_lengths()) == 0
        if empty.any():
            first = int(np.argmax(empty))
            name = repr(ids[first]) if ids else f"row {first}"
            raise EmbeddingColumnError(
                f"embedding column {column!r} has {int(empty.sum())} empty vectors (no values; the first: {name}), "
                "which another tool writes for a text it did not embed: drop those rows or embed them again"
            )
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        if dim is not None and n and width != dim:
            name = repr(ids[0]) if ids else "row 0"
            raise EmbeddingColumnError(
                f"embedding column {column!r}: the vector of {name} has {width} values, {origin} has {dim}; "
                f"{MIXED_DIMS_HINT}"
            )
    else:
        lengths = np.asarray(arr.value_lengths())
        width = dim if dim is not None else (int(lengths[0]) if n else 0)
        if n and (lengths != width).any():
            bad = int(np.argmax(lengths != width))
            name = repr(ids[bad]) if ids else f"row {bad}"
            first = origin if dim is not None else "row 0's"
            raise EmbeddingColumnError(
                f"embedding column {column!r}: the vector of {name} has {int(lengths[bad])} values, {first} has "
                f"{width}; {MIXED_DIMS_HINT}"
            )
    flat = arr.flatten().to_numpy(zero_copy_only=False)  # flatten() honours slice offsets, .values would not
    return np.asarray(flat, dtype=np.float32).reshape(n, width)


def normalize_rows(x: np.ndarray, ids: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length rows (within float32 rounding, UNIT_TOLERANCE) and a (N,) bool mask of the rows that were not
    unit length to begin with (off by more than NORM_TOLERANCE: not normalized, rather than stored as float16).

    Cosine k-means is only defined on the sphere, so off-sphere input is projected onto it (the caller warns with the
    count); a zero vector has no direction and raises, naming the row.

    Raises:
        EmbeddingColumnError: a row is all zeros (or not finite); a ValueError and a user error.
    """
    norms = np.linalg.norm(x, axis=1)  # (N,)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        i = int(np.argmax(bad))
        name = ids[i] if ids is not None else f"row {i}"
        raise EmbeddingColumnError(
            f"embedding of {name} is zero or not finite; it cannot be placed on the unit sphere: drop that row "
            "or embed it again"
        )
    off = np.abs(norms - 1.0) > NORM_TOLERANCE  # reported: the input was not normalized
    if (np.abs(norms - 1.0) > UNIT_TOLERANCE).any():  # divided: cosines are cosines, of float16 storage too
        x = x / norms[:, None]
    return x.astype(np.float32, copy=False), off
