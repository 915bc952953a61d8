from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import StorageConfig
from pipeline.reading import REJECT, TEXT, InputFileError, ReadSpec, read_file
from pipeline.storage import resolve


def spec(root, fmt, id_column=None, keep=()):
    return ReadSpec(resolve(str(root), StorageConfig()), fmt, "text", id_column, tuple(keep))


def read_all(s, rel):
    return pa.concat_tables(list(read_file(s, rel))).to_pylist()


def test_parquet_rows_ids_and_kept_columns(tmp_path):
    pq.write_table(
        pa.table({"doc": [7, 8, None], "text": ["a", None, "c"], "lang": ["x", "y", "z"]}), tmp_path / "f.parquet"
    )
    rows = read_all(spec(tmp_path, "parquet", "doc", ["lang"]), "f.parquet")
    assert [(r["id"], r[TEXT], r[REJECT], r["lang"]) for r in rows] == [
        ("7", "a", None, "x"),
        ("8", None, "null text", "y"),
        (None, None, "missing id", "z"),
    ]


def test_non_string_parquet_column_is_rejected_by_type(tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    rows = read_all(spec(tmp_path, "parquet"), "n.parquet")
    assert {r[REJECT] for r in rows} == {"text is int, not a string"}
    assert [r["id"] for r in rows] == ["n.parquet#0", "n.parquet#1"]


def test_text_lines_with_invalid_utf8_and_crlf(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"hello\r\nbad \xff byte\n\nlast")
    rows = read_all(spec(tmp_path, "text"), "t.txt")
    assert [r[TEXT] for r in rows] == ["hello", None, None, "last"]
    assert [r[REJECT] for r in rows] == [None, "invalid UTF-8 at byte 4", "empty or whitespace-only text", None]


def test_gzipped_jsonl(tmp_path):
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(b'{"text": "one"}\n{"text": "two"}\n'))
    assert [r[TEXT] for r in read_all(spec(tmp_path, "jsonl"), "g.jsonl.gz")] == ["one", "two"]


def test_jsonl_without_the_text_key_lists_keys(tmp_path):
    (tmp_path / "k.jsonl").write_text('{"body": "x", "id": 1}\n')
    with pytest.raises(InputFileError, match="no record has the key 'text'; keys found: \\['body', 'id'\\]"):
        read_all(spec(tmp_path, "jsonl"), "k.jsonl")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputFileError, match="cannot read .*gone.jsonl as jsonl"):
        read_all(spec(tmp_path, "jsonl"), "gone.jsonl")
