"""Per-group centring of embeddings (`clustering.center_by`): subtract each group's mean vector, back to unit length.

Multilingual encoders give every language its own offset: on SIB-200 with 6 languages mixed, k-means found
languages, not topics (V-measure 0.075), until each language's mean vector was removed (0.414;
bench/results/sib200_clusters.md). Pure numpy/pyarrow: the job maps these over Ray Data blocks.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.clustering.vectors import embedding_matrix, normalize_rows

GROUP, SUM, COUNT = "group", "sum", "count"


def group_keys(block: pa.Table, column: str) -> list[str | None]:
    """Each row's group as a string (None for a null value, its own group)."""
    return [None if v is None else str(v) for v in block.column(column).to_pylist()]


def row_ids(block: pa.Table, id_column: str | None) -> list[str] | None:
    """The rows' ids as strings, for errors that name a row; None without an id column."""
    return None if id_column is None else block.column(id_column).cast(pa.string()).to_pylist()


def group_sums(block: pa.Table, column: str, embedding_column: str, dim: int, id_column: str | None = None) -> pa.Table:
    """One row per group of the block: the sum of its unit vectors (float64) and its row count."""
    ids = row_ids(block, id_column)
    x, _ = normalize_rows(embedding_matrix(block, embedding_column, dim, ids).astype(np.float64), ids)
    keys = group_keys(block, column)
    names = sorted(set(keys), key=lambda k: (k is None, k or ""))
    sums = [x[[i for i, k in enumerate(keys) if k == name]].sum(axis=0) for name in names]
    counts = [sum(1 for k in keys if k == name) for name in names]
    flat = pa.array(np.asarray(sums, np.float64).reshape(-1), pa.float64())
    return pa.table(
        {GROUP: pa.array(names, pa.string()), SUM: pa.FixedSizeListArray.from_arrays(flat, dim), COUNT: counts}
    )


def group_means(partials: list[pa.Table], dim: int) -> dict[str | None, np.ndarray]:
    """Reduce the blocks' group sums to each group's (dim,) mean vector."""
    sums: dict[str | None, np.ndarray] = {}
    counts: dict[str | None, int] = {}
    for table in partials:
        vectors = table.column(SUM).combine_chunks().flatten().to_numpy().reshape(-1, dim)
        for name, vec, n in zip(table.column(GROUP).to_pylist(), vectors, table.column(COUNT).to_pylist()):
            sums[name] = sums.get(name, np.zeros(dim, np.float64)) + vec
            counts[name] = counts.get(name, 0) + n
    return {name: sums[name] / counts[name] for name in sums}


def center_rows(x: np.ndarray, keys: list[str | None], means: dict[str | None, np.ndarray]) -> np.ndarray:
    """(n, dim) unit rows minus their group's mean, re-normalized.

    A row equal to its group's mean (e.g. a group of one row) has no direction left; it keeps its original vector.
    """
    mean = np.stack([means[k] for k in keys]) if keys else np.zeros_like(x, np.float64)  # (n, dim)
    centred = x.astype(np.float64) - mean
    norms = np.linalg.norm(centred, axis=1, keepdims=True)  # (n, 1)
    degenerate = norms[:, 0] < 1e-6
    out = np.where(degenerate[:, None], x, centred / np.maximum(norms, 1e-12))
    return out.astype(np.float32)


def center_block(
    block: pa.Table, column: str, embedding_column: str, dim: int, means, id_column: str | None = None
) -> pa.Table:
    """The block with its embedding column replaced by the group-centred unit vectors."""
    ids = row_ids(block, id_column)
    x, _ = normalize_rows(embedding_matrix(block, embedding_column, dim, ids), ids)
    keys = group_keys(block, column)
    missing = sorted({k for k in keys if k not in means}, key=str)
    if missing:
        raise ValueError(f"center_by groups {missing[:5]} have no mean (the blocks changed between two passes)")
    centred = center_rows(x, keys, means)
    flat = pa.array(centred.reshape(-1), pa.float32())
    i = block.schema.get_field_index(embedding_column)
    return block.set_column(i, embedding_column, pa.FixedSizeListArray.from_arrays(flat, dim))
