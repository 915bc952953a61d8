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
from pipeline.embedding_files import RowIds, file_unit_rows, read_embedding_file
from pipeline.errors import UserError
from pipeline.storage import list_files, resolve


class SideError(UserError, ValueError):
    """A side that cannot be mined: no rows, no rows in its language, or vectors that do not match its texts."""


def embedding_file(uri: str, storage: StorageConfig) -> tuple[pa.Array, np.ndarray, dict[str, str]]:
    """ids, unit-length (rows, dim) float32 vectors and the recipe metadata of one embed-job Parquet file.

    Raises:
        EmbeddingFileError: the file is cut short or not Parquet, or holds a null vector or vectors of several
            lengths (pipeline.embedding_files), naming it.
        SideError: the file has no id column.
    """
    loc = resolve(uri, storage)
    table = read_embedding_file(loc)
    if "id" not in table.column_names:
        raise SideError(f"{uri}: no 'id' column (columns: {table.column_names}); is it an embeddings dataset?")
    metadata = {}
    if table.schema.metadata:
        metadata = {k.decode(): v.decode() for k, v in table.schema.metadata.items() if k.startswith(b"rayembed.")}
    ids = table.column("id").cast(pa.string()).combine_chunks()
    vectors = file_unit_rows(loc, table, "embedding", None, RowIds(ids))
    return ids, vectors, metadata


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
        if "id" not in table.column_names:
            raise SideError(
                f"{uri}/{rel}: no 'id' column (columns: {table.column_names}); is it an embeddings dataset?"
            )
        if not metadata and table.schema.metadata:
            metadata = {k.decode(): v.decode() for k, v in table.schema.metadata.items() if k.startswith(b"rayembed.")}
        ids += [str(i) for i in table.column("id").to_pylist()]
        parts.append(embedding_matrix(table, "embedding", parts[0].shape[1] if parts else None))
    return ids, np.concatenate(parts), metadata
