from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.clustering.vectors import EmbeddingColumnError, embedding_matrix, normalize_rows


def fixed(rows: list[list[float]], dim: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ravel(rows), pa.float32()), dim)


def test_fixed_size_list_sliced_block():
    table = pa.table({"id": ["a", "b", "c"], "embedding": fixed([[1, 0], [0, 1], [3, 4]], 2)}).slice(1)
    np.testing.assert_array_equal(embedding_matrix(table, "embedding"), [[0, 1], [3, 4]])


def test_variable_list_ok_and_ragged_rejected():
    ok = pa.table({"e": pa.array([[1.0, 2.0], [3.0, 4.0]])})
    assert embedding_matrix(ok, "e").shape == (2, 2)
    ragged = pa.table({"e": pa.array([[1.0, 2.0], [3.0]])})
    with pytest.raises(EmbeddingColumnError, match="the vector of row 1 has 1 values, row 0's has 2"):
        embedding_matrix(ragged, "e")


def test_missing_column_lists_existing():
    with pytest.raises(EmbeddingColumnError, match=r"'vec' not found; columns are \['id', 'embedding'\]"):
        embedding_matrix(pa.table({"id": ["a"], "embedding": fixed([[1, 0]], 2)}), "vec")


def test_wrong_type_and_dim_mismatch():
    with pytest.raises(EmbeddingColumnError, match="expected a list of floats"):
        embedding_matrix(pa.table({"e": ["x"]}), "e")
    with pytest.raises(EmbeddingColumnError, match="holds int64"):
        embedding_matrix(pa.table({"e": pa.array([[1, 2]])}), "e")
    with pytest.raises(EmbeddingColumnError, match="has 2 values, the input's first has 3"):
        embedding_matrix(pa.table({"e": fixed([[1, 0]], 2)}), "e", dim=3)
    with pytest.raises(EmbeddingColumnError, match="has 2 values, the input's first has 3"):
        embedding_matrix(pa.table({"e": pa.array([[1.0, 0.0]])}), "e", dim=3)


@pytest.mark.parametrize("fixed_size", [True, False])
def test_a_vector_of_another_dim_is_named_by_its_id_with_what_to_do(fixed_size):
    """Files of two models in one input (dims 2 and 3): the error said "row 1 has 3 values, row 0 has 2" or "has dim
    3, expected 2", a place in a Ray block that names no row of the input, and not what to do."""
    column = fixed([[1, 0, 0], [0, 1, 0]], 3) if fixed_size else pa.array([[1.0, 0.0], [1.0, 0.0, 0.0]])
    with pytest.raises(EmbeddingColumnError, match="the vector of 'doc-7' has 3 values, the input's first has 2; "):
        embedding_matrix(pa.table({"e": column}), "e", dim=2, ids=["doc-7" if fixed_size else "doc-6", "doc-7"])
    with pytest.raises(EmbeddingColumnError, match="different models or dimensions; point the job at one"):
        embedding_matrix(pa.table({"e": column}), "e", dim=2)


def test_null_vectors_rejected():
    with pytest.raises(EmbeddingColumnError, match=r"1 null vectors \(the first: 'b'\): drop those rows"):
        embedding_matrix(pa.table({"e": pa.array([[1.0, 0.0], None])}), "e", ids=["a", "b"])


@pytest.mark.parametrize("at", [0, 1])
def test_an_empty_vector_is_named_as_missing_not_as_another_dim(at):
    """An empty list (another tool's vector of a text it did not embed) was 'the vector of X has 0 values ... the
    input mixes embeddings of different models'; first in a block it set the width and the next row was blamed."""
    rows = [[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]]
    rows[at] = []
    for dim in (None, 2):
        with pytest.raises(EmbeddingColumnError, match=rf"1 empty vectors \(no values; the first: 'd{at}'\)"):
            embedding_matrix(pa.table({"e": pa.array(rows, pa.list_(pa.float32()))}), "e", dim, ["d0", "d1", "d2"])


def test_normalize_counts_off_sphere_rows():
    x = np.array([[3, 4], [0, 1], [0.6, 0.8]], dtype=np.float32)
    y, off = normalize_rows(x)
    np.testing.assert_array_equal(off, [True, False, False])
    np.testing.assert_allclose(y, [[0.6, 0.8], [0, 1], [0.6, 0.8]], atol=1e-6)
    assert not normalize_rows(y)[1].any()


def test_zero_vector_names_the_row():
    with pytest.raises(ValueError, match="embedding of doc-2 is zero"):
        normalize_rows(np.array([[1, 0], [0, 0]], dtype=np.float32), ids=["doc-1", "doc-2"])


def test_bad_rows_of_a_clustering_input_are_user_errors_naming_the_row():
    """A zero or non-finite vector and a null id: one `error:` line naming the id/column (they were tracebacks)."""
    from pipeline.clustering.distributed import string_ids
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="embedding of b is zero or not finite"):
        normalize_rows(np.array([[1.0, 0.0], [0.0, 0.0]], np.float32), ["a", "b"])
    with pytest.raises(UserError, match="embedding of a is zero or not finite"):
        normalize_rows(np.array([[np.nan, 0.0]], np.float32), ["a"])
    with pytest.raises(UserError, match="'id' .* has 1 null ids"):
        string_ids(pa.table({"id": ["a", None]}), "id")


@pytest.mark.parametrize("dim", [64, 384])
def test_float16_stored_unit_vectors_are_made_unit_length_without_counting_as_unnormalized(dim):
    """The embed job's output.dtype float16: squared norms 1 +- 4e-4 (dim 64), inside NORM_TOLERANCE, so they were
    left as read, and dedup (cosine >= 1 - eps, eps 1e-5) missed ~45 % of exact copies; cosines read above 1."""
    from pipeline.clustering import dedup

    rng = np.random.default_rng(dim)
    x = rng.normal(size=(300, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    stored = np.concatenate([x, x]).astype(np.float16).astype(np.float32)  # row i + 300 copies row i
    unit, off = normalize_rows(stored)
    assert not off.any()  # normalized before storage: no 'not unit length' warning
    assert np.abs(np.einsum("ij,ij->i", unit, unit) - 1).max() < 1e-6
    i, j, _ = dedup.duplicate_pairs(unit, 1e-5, block_rows=128)
    assert sorted(zip(i.tolist(), j.tolist())) == [(r, r + 300) for r in range(300)]


def test_float32_unit_vectors_are_left_as_they_are():
    x = np.random.default_rng(0).normal(size=(50, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    unit, off = normalize_rows(x)
    assert unit is x and not off.any()
