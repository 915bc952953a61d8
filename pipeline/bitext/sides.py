"""One side of a mining run: its texts (read, language-filtered, deduplicated) and, later, its vectors.

Texts are read with the embed job's own readers (pipeline.reading), so row ids ('<file>#<row>' or the id column)
are the same ids the embed job writes: an existing embeddings dataset joins to the texts by id. Rows are held in the
driver: fine for mining sides of a few million sentences (see docs/bitext.md for larger corpora).
"""

from __future__ import annotations

import logging
import posixpath
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.bitext.dedup import first_occurrences
from pipeline.clustering.vectors import embedding_matrix, normalize_rows
from pipeline.config import StorageConfig
from pipeline.embedding_files import RowIds, file_unit_rows, read_embedding_file
from pipeline.errors import UserError
from pipeline.mine_config import SideConfig
from pipeline.reading import REJECT, TEXT, ReadSpec, read_file
from pipeline.storage import list_files, resolve

log = logging.getLogger(__name__)


class SideError(UserError, ValueError):
    """A side that cannot be mined: no rows, no rows in its language, or vectors that do not match its texts."""


@dataclass(frozen=True)
class Side:
    name: str  # "source" or "target", for messages
    lang: str
    ids: list[str]
    texts: list[str]
    vectors: np.ndarray | None = None  # (rows, dim) float32, L2-normalized, row i = ids[i]
    counts: dict[str, int] = field(default_factory=dict)  # rows read / rejected / other language / duplicates

    def __len__(self) -> int:
        return len(self.ids)


def read_side(name: str, cfg: SideConfig, storage: StorageConfig) -> Side:
    """Good rows of the side's input in its language; raises SideError when none are left."""
    root, files = list_files(cfg.uri, storage, key=f"{name}.uri")
    keep = (cfg.lang_column,) if cfg.lang_column else ()
    spec = ReadSpec(root, cfg.format, cfg.text_column, cfg.id_column, keep)
    ids: list[str] = []
    texts: list[str] = []
    rejected, other_lang = 0, Counter()
    for rel in files:
        for block in read_file(spec, rel):
            good = block.filter(block.column(REJECT).is_null())
            rejected += block.num_rows - good.num_rows
            if cfg.lang_column:
                langs = good.column(cfg.lang_column).to_pylist()
                other_lang.update(str(v) for v in langs if v != cfg.lang)
                good = good.filter(pa.array([v == cfg.lang for v in langs], pa.bool_()))
            ids += good.column("id").to_pylist()
            texts += good.column(TEXT).to_pylist()
    if not ids and other_lang:
        present = ", ".join(f"{lang} ({n})" for lang, n in other_lang.most_common(20))
        raise SideError(
            f"{name}: no rows with {cfg.lang_column} == {cfg.lang!r} in {cfg.uri}; languages present: {present}. "
            f"Fix {name}.lang or {name}.lang_column"
        )
    if not ids:
        raise SideError(f"{name}: no usable rows in {cfg.uri} ({rejected} rejected: null, empty or unreadable text)")
    if rejected:
        log.warning("%s: skipped %d rows with null, empty or unreadable text", name, rejected)
    read = len(ids) + rejected + sum(other_lang.values())
    counts = {"rows_read": read, "rows_rejected": rejected, "rows_other_lang": sum(other_lang.values())}
    return Side(name, cfg.lang, ids, texts, counts=counts)


def dedup_side(side: Side) -> Side:
    """Keep the first occurrence of each exact text."""
    keep = first_occurrences(side.texts)
    counts = {**side.counts, "duplicates_dropped": len(side) - len(keep)}
    if len(keep) == len(side):
        return replace(side, counts=counts)
    vectors = None if side.vectors is None else side.vectors[keep]
    return replace(
        side, ids=[side.ids[i] for i in keep], texts=[side.texts[i] for i in keep], vectors=vectors, counts=counts
    )


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


def attach_vectors(side: Side, ids: list[str], vectors: np.ndarray, uri: str) -> Side:
    """Row-align `vectors` (keyed by `ids`) to the side's texts; every text needs exactly one vector."""
    position: dict[str, int] = {}
    for row, i in enumerate(ids):
        if position.setdefault(i, row) != row:
            raise SideError(
                f"{side.name}: id {i!r} has several vectors in {uri}; mining needs one vector per sentence "
                "(embed with model.long_inputs=truncate)"
            )
    rows = [position.get(i, -1) for i in side.ids]
    missing = [i for i, r in zip(side.ids, rows) if r < 0]
    if missing:
        raise SideError(
            f"{side.name}: {len(missing)} of {len(side)} rows have no vector in {uri} (e.g. {missing[:3]}); the "
            f"embeddings must come from the embed job over this same input ({side.name}.uri and id_column)"
        )
    matrix, _ = normalize_rows(vectors[np.asarray(rows, dtype=np.int64)], side.ids)
    return replace(side, vectors=matrix)
