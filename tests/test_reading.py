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


# --- issue 15: byte-order marks, encodings, lone surrogates, sniffing, errors that name the row ---------------------


def compressed(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.compress(data)
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("codec, suffix", [(None, ""), ("gzip", ".gz"), ("zstd", ".zst")])
def test_utf8_bom_is_dropped_once_per_file_with_crlf(tmp_path, codec, suffix):
    jsonl = b'\xef\xbb\xbf{"text": "first"}\r\n{"text": "\xef\xbb\xbfsecond keeps its inner BOM"}\r\n'
    text = b"\xef\xbb\xbffirst line\r\nsecond\r\n"
    for name, data, fmt in [(f"a.jsonl{suffix}", jsonl, "jsonl"), (f"a.txt{suffix}", text, "text")]:
        (tmp_path / name).write_bytes(compressed(data, codec) if codec else data)
        rows = read_all(spec(tmp_path, fmt), name)
        assert [r[REJECT] for r in rows] == [None, None], name
        assert rows[0][TEXT] == ("first" if fmt == "jsonl" else "first line")
    assert read_all(spec(tmp_path, "jsonl"), f"a.jsonl{suffix}")[1][TEXT] == "\ufeffsecond keeps its inner BOM"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_with_a_bom_are_decoded(tmp_path, encoding):
    content = '{"text": "héllo wörld 😀"}\n{"text": "zweite Zeile"}\n'
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-32-le": b"\xff\xfe\x00\x00"}.get(
        encoding, b"\x00\x00\xfe\xff"
    )
    (tmp_path / "w.jsonl").write_bytes(bom + content.encode(encoding))
    assert [r[TEXT] for r in read_all(spec(tmp_path, "jsonl"), "w.jsonl")] == ["héllo wörld 😀", "zweite Zeile"]
    (tmp_path / "w.txt").write_bytes(bom + "línea uno\r\nline two\n".encode(encoding))
    assert [r[TEXT] for r in read_all(spec(tmp_path, "text"), "w.txt")] == ["línea uno", "line two"]


def test_undecodable_utf16_fails_naming_file_and_encoding(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe" + "ok\n".encode("utf-16-le") + b"\x00\xd8\x41\x00")  # lone high
    with pytest.raises(InputFileError, match=r"bad.txt: decoding as UTF-16 \(from its byte-order mark\) failed"):
        read_all(spec(tmp_path, "text"), "bad.txt")


def test_lone_surrogates_in_text_id_and_kept_column_become_rejects(tmp_path):
    lines = [
        '{"id": "good-1", "text": "fine", "title": "t1"}',
        '{"id": "bad-1", "text": "cut in the middle of an emoji \\ud83d here.", "title": "t2"}',
        '{"id": "bad-\\udc00", "text": "fine text, broken id", "title": "t3"}',
        '{"id": "bad-3", "text": "fine text, broken kept column", "title": {"x": ["\\ud800"]}}',
        '{"id": "good-2", "text": "also fine", "title": "t5"}',
    ]
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    rows = read_all(spec(tmp_path, "jsonl", "id", ["title"]), "s.jsonl")
    assert [(r["id"], r[REJECT]) for r in rows] == [
        ("good-1", None),
        ("bad-1", "invalid Unicode in text: lone surrogate U+D83D at character 30"),
        ("bad-\\udc00", "invalid Unicode in id column 'id': lone surrogate U+DC00 at character 4"),
        ("bad-3", "invalid Unicode in kept column 'title': lone surrogate U+D800 at character 0"),
        ("good-2", None),
    ]
    assert [r[TEXT] for r in rows][::4] == ["fine", "also fine"]


def test_invalid_utf8_in_parquet_string_columns_is_a_reject(tmp_path):
    texts = pa.array([b"fine", b"bad \xff", b"ok"], pa.binary()).view(pa.string())  # written by a lax tool
    ids = pa.array([b"a", b"b", b"\xc3("], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ids, "text": texts}), tmp_path / "u.parquet")
    rows = read_all(spec(tmp_path, "parquet", "id"), "u.parquet")
    assert [(r["id"], r[REJECT]) for r in rows] == [
        ("a", None),
        ("b", "invalid UTF-8 at byte 4"),
        ("\\xc3(", "invalid UTF-8 in id at byte 0"),
    ]


def test_unexpected_error_names_the_file_and_row(tmp_path, monkeypatch):
    from pipeline import reading

    (tmp_path / "e.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": "boom"}\n')
    real = reading.parse_record

    def explode(line, column):
        if b"boom" in line:
            raise KeyError("something nobody expected")
        return real(line, column)

    monkeypatch.setattr(reading, "parse_record", explode)
    with pytest.raises(
        InputFileError, match=r"cannot read .*e.jsonl as jsonl: KeyError: .*nobody expected.* \(row 2\)"
    ):
        read_all(spec(tmp_path, "jsonl"), "e.jsonl")


def parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": ["x"] * 50}), sink)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(
    "name, data, fmt, looks_like",
    [
        ("p.txt", parquet_bytes(), "text", "a Parquet file"),
        ("p.jsonl", parquet_bytes(), "jsonl", "a Parquet file"),
        ("p.jsonl.gz", gzip.compress(parquet_bytes()), "jsonl", "a Parquet file .* inside gzip"),
        ("z.txt", b"PK\x03\x04" + bytes(200), "text", "a zip archive"),
        ("b.txt", bytes(range(32)) * 20, "text", "binary data"),
        ("t.parquet", b'{"text": "json"}\n', "parquet", "JSON text"),
        ("g.parquet", gzip.compress(parquet_bytes()), "parquet", "gzip-compressed data"),
        ("w.parquet", b"\xff\xfe" + "text".encode("utf-16-le"), "parquet", "UTF-16 text"),
    ],
)
def test_a_file_that_contradicts_its_format_fails_naming_what_it_looks_like(tmp_path, name, data, fmt, looks_like):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(InputFileError, match=rf"{name} is read as {fmt} but looks like {looks_like}"):
        read_all(spec(tmp_path, fmt), name)


def test_compression_is_recognised_by_magic_not_name(tmp_path):
    (tmp_path / "plain-name.jsonl").write_bytes(gzip.compress(b'{"text": "zipped"}\n'))
    assert [r[TEXT] for r in read_all(spec(tmp_path, "jsonl"), "plain-name.jsonl")] == ["zipped"]


def test_format_is_inferred_from_the_extension_when_unset(tmp_path):
    pq.write_table(pa.table({"text": ["from parquet"]}), tmp_path / "a.parquet")
    (tmp_path / "b.ndjson.zst").write_bytes(compressed(b'{"text": "from ndjson"}\n', "zstd"))
    (tmp_path / "c.json").write_bytes(b'{"text": "from json"}\n')
    (tmp_path / "d.txt.gz").write_bytes(gzip.compress(b"from text\n"))
    got = [read_all(spec(tmp_path, None), n)[0][TEXT] for n in ("a.parquet", "b.ndjson.zst", "c.json", "d.txt.gz")]
    assert got == ["from parquet", "from ndjson", "from json", "from text"]
    (tmp_path / "e.csv").write_text("text\nx\n")
    with pytest.raises(InputFileError, match=r"e.csv: cannot infer the format .* set input.format"):
        read_all(spec(tmp_path, None), "e.csv")


def test_a_file_of_undecodable_lines_is_one_block_of_rejects(tmp_path):
    """The read stage's share of "a block with zero good rows passes every stage" (tests/test_actors.py: the rest)."""
    (tmp_path / "u.jsonl").write_bytes(b'{"text": "\xff"}\n{"text": "\xc3("}\n')
    (tmp_path / "u.txt").write_bytes(b"\xff\n\xfe\n")
    for name, fmt in [("u.jsonl", "jsonl"), ("u.txt", "text")]:
        blocks = list(read_file(spec(tmp_path, fmt), name))
        assert len(blocks) == 1 and blocks[0].num_rows == 2
        assert blocks[0].column(REJECT).null_count == 0 and blocks[0].column(TEXT).null_count == 2
