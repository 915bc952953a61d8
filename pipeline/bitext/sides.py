"""A mining side's embeddings files: their ids and vectors, and the error a side that cannot be mined raises.

The texts of a side are read, language-filtered and staged by pipeline.bitext.prepare.
"""

from __future__ import annotations

import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.clustering.vectors import embedding_matrix
from pipeline.config import StorageConfig
from pipeline.embedding_files import (
    RowIds,
    file_matrix,
    file_unit_rows,
    ids_as_text,
    naming_the_file,
    open_embeddings,
)
from pipeline.errors import UserError
from pipeline.storage import list_files, resolve


class SideError(UserError, ValueError):
    """A side that cannot be mined: no rows, no rows in its language, or vectors that do not match its texts."""


EMBEDDINGS_LAYOUT = (
    "a side's embeddings_uri needs an id column holding the ids of the side's text rows (<file>#<row> for text "
    "files, else the input's id column; embeddings_id_column, default 'id') and a column of float lists "
    "(embedding_column, default 'embedding'), as the embed job writes them"
)


# The embed job's columns: what a side's own embeddings always have, and the defaults of an embeddings_uri's
EMBED_JOB_COLUMNS = ("id", "embedding")


def check_columns(uri: str, columns: list[str], named: tuple[str, str] = EMBED_JOB_COLUMNS, side: str = "") -> None:
    """Refuse an embeddings file without its id and vector columns (`named`: the side's embeddings_id_column and
    embedding_column; another tool's vectors in a 'vector' or 'embeddings' column), naming the file, the columns it
    has and what to do.

    Raises:
        SideError: a column is missing.
    """
    missing = [c for c in named if c not in columns]
    if missing:
        keys = (
            f"{side}.embeddings_id_column / {side}.embedding_column"
            if side
            else "embeddings_id_column / embedding_column"
        )
        guess = next((c for c in ("vector", "embeddings", "emb", "vectors") if c in columns), None)
        hint = f" ({guess!r} looks like the vectors)" if guess and named[1] in missing else ""
        raise SideError(
            f"{uri}: no {' or '.join(repr(c) for c in missing)} column (columns: {columns}){hint}; "
            f"{EMBEDDINGS_LAYOUT}. Set {keys} to the file's columns (a LanceDB export: embedding_column: vector), "
            "or remove embeddings_uri from that side to embed its texts in this run"
        )


def embedding_file(
    uri: str, storage: StorageConfig, named: tuple[str, str] = EMBED_JOB_COLUMNS, side: str = ""
) -> tuple[pa.Array, np.ndarray, dict[str, str], np.ndarray]:
    """ids, unit-length (rows, dim) float32 vectors, the recipe metadata of one embed-job Parquet file, and a (rows,)
    bool mask of the vectors that are all zeros or not finite (left as zeros: an error only for a row the side
    mines, prepare.join_bucket, as such a row of another tool's file may be one the side never reads).

    `named`: the (id, vector) columns to read (the side's embeddings_id_column and embedding_column); `side` names
    the side's keys in an error.

    Raises:
        EmbeddingFileError: the file is cut short or not Parquet, or holds a null vector or vectors of several
            lengths (pipeline.embedding_files), naming it.
        SideError: the file has no such id or vector column.
    """
    loc = resolve(uri, storage)
    id_column, column = named
    reader = open_embeddings(loc)
    schema = reader.schema_arrow
    check_columns(uri, schema.names, named, side)
    with naming_the_file(loc):  # its footer read once; the file's other columns (text, url) stay unread
        table = reader.read(columns=[id_column, column])
    metadata = {}
    if schema.metadata:
        metadata = {k.decode(): v.decode() for k, v in schema.metadata.items() if k.startswith(b"rayembed.")}
    ids = ids_as_text(uri, table.column(id_column), f"{side or 'the side'}.embeddings_id_column {id_column!r}")
    ids = ids.combine_chunks()
    raw = file_matrix(loc, table, column, None, RowIds(ids))
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(raw, axis=1)  # (rows,)
    bad = ~np.isfinite(norms) | (norms == 0)
    vectors = np.zeros_like(raw)
    if (~bad).any():
        vectors[~bad] = file_unit_rows(
            loc, table.filter(pa.array(~bad)), column, None, RowIds(ids.filter(pa.array(~bad)))
        )
    return ids, vectors, metadata, bad


def read_embeddings(uri: str, storage: StorageConfig) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """ids, raw (rows, dim) float32 vectors and the recipe metadata of an embed-job dataset (parquet files)."""
    root, files = list_files(uri, storage)
    files = [f for f in files if f.endswith(".parquet")]
    if not files:
        raise FileNotFoundError(f"no parquet files in the embeddings dataset {uri}")
    ids: list[str] = []
    parts: list[np.ndarray] = []
    metadata: dict[str, str] = {}
    for rel in files:
        table = pq.read_table(posixpath.join(root.path, rel), filesystem=root.fs)
        check_columns(f"{uri}/{rel}", table.column_names)
        if not metadata and table.schema.metadata:
            metadata = {k.decode(): v.decode() for k, v in table.schema.metadata.items() if k.startswith(b"rayembed.")}
        ids += [str(i) for i in table.column("id").to_pylist()]
        parts.append(embedding_matrix(table, "embedding", parts[0].shape[1] if parts else None))
    return ids, np.concatenate(parts), metadata
