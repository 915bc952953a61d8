"""pipeline.embedding_files on real Parquet files: every odd file is an EmbeddingFileError naming it, an empty
file is fine. The jobs' own tests (test_clustering_job, test_bitext_job) run the same files through the jobs."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest
from robustness_helpers import embeddings_table, odd_embedding_files, parquet_bytes

from pipeline.embedding_files import EmbeddingFileError, check_file, open_embeddings
from pipeline.errors import UserError
from pipeline.storage import Location

IDS = [f"x{i}" for i in range(5)]
PATHS = {"id": ("id",), "embedding": ("embedding",)}
# what each message says besides the file's name
SAYS = {
    "cut": "Its rows are vectors, so the job does not skip it: copy it again from where it was written",
    "garbled": "Its rows are vectors, so the job does not skip it",
    "not_parquet": "looks like JSON text; the cluster and mining jobs read Parquet files with an id column",
    "npy": "looks like a NumPy .npy array; the cluster and mining jobs read Parquet files with an id column",
    "bf16": "holds uint16 values, expected float16/32/64. If they are bfloat16 bit patterns",
    "width": "the vector of 'x0' has 4 values, the input's first has 8; all vectors must have the same dim",
    "nulls": "has 1 null vectors (the first: 'x0'): drop those rows or embed them again",
}


def local(path) -> Location:
    return Location(pafs.LocalFileSystem(), str(path), str(path))


@pytest.mark.parametrize("name", sorted(SAYS))
def test_an_odd_embeddings_file_is_an_error_naming_it_and_what_to_do(tmp_path, name):
    path = tmp_path / f"{name}.parquet"
    path.write_bytes(odd_embedding_files(IDS, 8)[name])
    with pytest.raises(EmbeddingFileError) as err:
        check_file(local(path), "embedding", PATHS, "id", 8)
    assert isinstance(err.value, UserError) and str(path) in str(err.value) and SAYS[name] in str(err.value)


def test_a_file_without_rows_and_a_good_file_pass(tmp_path):
    (tmp_path / "empty.parquet").write_bytes(parquet_bytes(embeddings_table([], 8, fixed=False)))
    (tmp_path / "good.parquet").write_bytes(parquet_bytes(embeddings_table(IDS, 8)))
    assert check_file(local(tmp_path / "empty.parquet"), "embedding", PATHS, "id", 8) == 0
    assert check_file(local(tmp_path / "good.parquet"), "embedding", PATHS, None, 8) == 5
    assert open_embeddings(local(tmp_path / "good.parquet")).metadata.num_rows == 5
