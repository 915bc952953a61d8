from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bitext_reference import random_unit

from pipeline.bitext.store import Piece, read_piece, read_pieces
from pipeline.config import StorageConfig


@pytest.fixture()
def vector_file(tmp_path):
    """40 rows numbered 100..139 in row groups of 7: pieces start and end inside and across groups."""
    vectors = random_unit(np.random.default_rng(0), 40, 6)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 6)
    path = tmp_path / "b00000.parquet"
    pq.write_table(pa.table({"row": np.arange(100, 140), "embedding": flat}), path, row_group_size=7)
    return str(path), vectors


@pytest.mark.parametrize("start,stop", [(0, 40), (5, 19), (13, 14), (35, 40), (7, 14)])
def test_read_piece_reads_the_rows_of_any_slice(vector_file, start, stop, monkeypatch):
    uri, vectors = vector_file
    monkeypatch.setattr("pipeline.bitext.store.READ_BATCH_BYTES", 3 * 4 * 6)  # 3-row batches, smaller than a row group
    rows, got = read_piece(Piece(uri, start, stop), StorageConfig(), 6)
    np.testing.assert_array_equal(rows, np.arange(100 + start, 100 + stop))
    np.testing.assert_array_equal(got, vectors[start:stop])


def test_read_piece_centres_like_the_formula(vector_file):
    uri, vectors = vector_file
    mean = vectors.mean(axis=0)
    _, got = read_piece(Piece(uri, 3, 30), StorageConfig(), 6, mean)
    ref = vectors[3:30] - mean
    np.testing.assert_array_equal(got, ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12))


def test_read_pieces_fills_one_array_in_piece_order(vector_file):
    uri, vectors = vector_file
    rows, got = read_pieces([Piece(uri, 20, 25), Piece(uri, 2, 4)], StorageConfig(), 6)
    np.testing.assert_array_equal(rows, [120, 121, 122, 123, 124, 102, 103])
    np.testing.assert_array_equal(got, np.concatenate([vectors[20:25], vectors[2:4]]))
    with pytest.raises(ValueError, match="rows 38..45 asked"):
        read_piece(Piece(uri, 38, 45), StorageConfig(), 6)
