"""pipeline.duplicate_ids' kept digests: what a re-embed night loads instead of reading an unchanged file's ids."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import StorageConfig
from pipeline.duplicate_ids import digest_table, keep_digests, kept_digests
from pipeline.storage import resolve


def test_a_kept_digest_file_that_is_not_the_one_written_for_its_file_is_read_again(tmp_path):
    """A kept file that Parquet reads but that is not what keep_digests wrote under its name decided duplicates
    (another file's digests copied or synced over it, rows removed or edited by hand: other repeats than a pass that
    reads every file) or stopped the pass (columns of another type: ValueError in the Ray task). Each now loads as
    None, as a missing or unreadable one does, so the file's ids are read from the input again."""
    at = lambda name: resolve(str(tmp_path / name), StorageConfig())
    a, b = digest_table([0] * 3, [0, 1, 2], ["x", "y", "z"], 64), digest_table([0] * 2, [0, 1], ["y", "q"], 64)
    keep_digests(a, at("a.parquet"))
    keep_digests(b, at("b.parquet"))
    assert kept_digests(at("a.parquet"), 5, 64).drop(["file_index"]) == a.drop(["file_index"])
    assert kept_digests(at("a.parquet"), 5, 64).column("file_index").to_pylist() == [5] * 3
    written = pq.read_table(tmp_path / "a.parquet")
    variants = {
        "another file's": lambda: shutil.copy(tmp_path / "b.parquet", tmp_path / "a.parquet"),
        "a row removed": lambda: pq.write_table(written.slice(0, 2), tmp_path / "a.parquet"),
        "a digest edited": lambda: pq.write_table(
            written.set_column(1, "hi", pa.array([1, 2, 3], pa.uint64())), tmp_path / "a.parquet"
        ),
        "no stamp": lambda: pq.write_table(written.replace_schema_metadata(None), tmp_path / "a.parquet"),
        "a null": lambda: pq.write_table(
            written.set_column(2, "lo", pa.array([1, None, 3], pa.uint64())), tmp_path / "a.parquet"
        ),
        "strings": lambda: pq.write_table(
            pa.table({"row": [0], "hi": ["x"], "lo": ["y"]}).replace_schema_metadata(written.schema.metadata),
            tmp_path / "a.parquet",
        ),
        "signed": lambda: pq.write_table(
            pa.table({"row": [0], "hi": [-1], "lo": [-5]}).replace_schema_metadata(written.schema.metadata),
            tmp_path / "a.parquet",
        ),
        "truncated": lambda: (tmp_path / "a.parquet").write_bytes((tmp_path / "b.parquet").read_bytes()[:50]),
    }
    for name, spoil in variants.items():
        spoil()
        assert kept_digests(at("a.parquet"), 0, 64) is None, name
        keep_digests(a, at("a.parquet"))  # as the pass does after reading the file again
        assert kept_digests(at("a.parquet"), 0, 64) is not None, name
    assert kept_digests(at("missing.parquet"), 0, 64) is None
