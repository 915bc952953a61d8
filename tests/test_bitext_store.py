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


def test_a_row_equal_to_its_language_mean_keeps_its_own_vector(vector_file):
    """A language of one sentence (or of one repeated vector) is its own mean: centring left a zero row, whose
    cosines were all 0 and ratio margins NaN in the pairs."""
    uri, vectors = vector_file
    mean = vectors[5].astype(np.float64)  # the language's only direction
    _, got = read_piece(Piece(uri, 3, 8), StorageConfig(), 6, mean)
    np.testing.assert_allclose(got[2], vectors[5] / np.linalg.norm(vectors[5]), atol=1e-6)
    assert np.isfinite(got).all() and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    ref = vectors[[3, 4, 6, 7]] - vectors[5]
    np.testing.assert_allclose(got[[0, 1, 3, 4]], ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)


def test_read_pieces_fills_one_array_in_piece_order(vector_file):
    uri, vectors = vector_file
    rows, got = read_pieces([Piece(uri, 20, 25), Piece(uri, 2, 4)], StorageConfig(), 6)
    np.testing.assert_array_equal(rows, [120, 121, 122, 123, 124, 102, 103])
    np.testing.assert_array_equal(got, np.concatenate([vectors[20:25], vectors[2:4]]))
    with pytest.raises(ValueError, match="rows 38..45 asked"):
        read_piece(Piece(uri, 38, 45), StorageConfig(), 6)
