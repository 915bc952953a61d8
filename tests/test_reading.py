from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import StorageConfig
from pipeline.file_formats import lines
from pipeline.kept_columns import NO_RECORDS
from pipeline.reading import REJECT, ROW, SOURCE, TEXT, InputFileError, ReadSpec, count_span_rows, read_file
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
    """A listed file deleted or renamed before its read task opened it: the error names it and says what to do."""
    with pytest.raises(InputFileError, match="cannot read .*gone.jsonl as jsonl.*is gone now .*run again once"):
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

    def explode(line, *rest):
        if b"boom" in line:
            raise KeyError("something nobody expected")
        return real(line, *rest)

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
        (
            "p.jsonl",
            parquet_bytes(),
            "jsonl",
            r"a Parquet file \(starts with PAR1\); name it .parquet, or set input.format",
        ),
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


def test_a_json_document_wrapping_its_records_in_a_list_says_how_to_write_them_one_per_line(tmp_path):
    """`{"data": [{"text": ...}, ...]}` on one line (SQuAD-style and API dumps) said only "no record has the key
    'text'; keys found: ['data']": it names the list holding the records and the jq command that writes them one per
    line now."""
    (tmp_path / "w.json").write_text(json.dumps({"version": 1, "data": [{"text": "a"}, {"text": "b"}]}) + "\n")
    with pytest.raises(InputFileError, match=r"keys found: \['data', 'version'\] .*The list under 'data' holds "):
        read_all(spec(tmp_path, "jsonl"), "w.json")
    with pytest.raises(InputFileError, match=r"jq -c '.data\[\]' FILE > FILE.jsonl"):
        read_all(spec(tmp_path, "jsonl"), "w.json")


def test_format_is_inferred_from_the_extension_when_unset(tmp_path):
    pq.write_table(pa.table({"text": ["from parquet"]}), tmp_path / "a.parquet")
    (tmp_path / "b.ndjson.zst").write_bytes(compressed(b'{"text": "from ndjson"}\n', "zstd"))
    (tmp_path / "c.json").write_bytes(b'{"text": "from json"}\n')
    (tmp_path / "d.txt.gz").write_bytes(gzip.compress(b"from text\n"))
    got = [read_all(spec(tmp_path, None), n)[0][TEXT] for n in ("a.parquet", "b.ndjson.zst", "c.json", "d.txt.gz")]
    assert got == ["from parquet", "from ndjson", "from json", "from text"]
    (tmp_path / "e.dat").write_text("text\nx\n")
    with pytest.raises(InputFileError, match=r"e.dat: cannot infer the format .* set input.format"):
        read_all(spec(tmp_path, None), "e.dat")


@pytest.mark.parametrize("name", ["e.csv", "e.TSV", "e.csv.gz"])
def test_a_csv_or_tsv_table_is_refused_saying_how_to_convert_it_not_to_read_it_as_text(tmp_path, name):
    """A `.csv` said "cannot infer the format ... set input.format to parquet, jsonl or text": input.format: text
    then embedded the header line and each whole row (`1,"Hello, world",en`) as a text. It names the table kind now
    and how to convert it; the hint no longer leads to text."""
    (tmp_path / name).write_text('id,text\n1,"Hello, world"\n')
    with pytest.raises(InputFileError, match=r"table is not read .* Convert it to Parquet or JSONL \(pandas: ") as err:
        read_all(spec(tmp_path, None), name)
    assert "set input.format" not in str(err.value)


def test_a_file_of_undecodable_lines_is_one_block_of_rejects(tmp_path):
    """The read stage's share of "a block with zero good rows passes every stage" (tests/test_actors.py: the rest)."""
    (tmp_path / "u.jsonl").write_bytes(b'{"text": "\xff"}\n{"text": "\xc3("}\n')
    (tmp_path / "u.txt").write_bytes(b"\xff\n\xfe\n")
    for name, fmt in [("u.jsonl", "jsonl"), ("u.txt", "text")]:
        blocks = list(read_file(spec(tmp_path, fmt), name))
        assert len(blocks) == 1 and blocks[0].num_rows == 2
        assert blocks[0].column(REJECT).null_count == 0 and blocks[0].column(TEXT).null_count == 2


# --- odd rows a JSON parser or an id column can hold: each one row's reject, never the file's failure -------------


def test_json_lines_python_cannot_parse_are_rejects_not_a_failed_file(tmp_path):
    """Valid JSON that Python's parser refuses (nesting deeper than its stack, an integer of more than 4300 digits)
    used to raise out of json.loads and fail the whole file, and with it the job."""
    deep = b'{"text": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = b'{"text": "huge number", "n": ' + b"9" * 5000 + b"}"
    (tmp_path / "p.jsonl").write_bytes(b'{"text": "one"}\n' + deep + b"\n" + huge + b'\n{"text": "four"}\n')
    rows = read_all(spec(tmp_path, "jsonl"), "p.jsonl")
    assert [r[TEXT] for r in rows] == ["one", None, None, "four"]
    assert rows[1][REJECT].startswith("JSON nested too deeply to parse")
    assert rows[2][REJECT].startswith("JSON value cannot be read: Exceeds the limit (4300 digits)")


@pytest.mark.parametrize("depth", [300, 800])
def test_a_kept_value_nested_too_deep_is_a_reject_of_its_row(tmp_path, depth):
    """Nesting the parser accepts but that json.dumps / Arrow cannot follow (the stack ends near 1000 frames)."""
    nested = b"[" * depth + b"1" + b"]" * depth
    (tmp_path / "n.jsonl").write_bytes(b'{"text": "a", "x": 1}\n{"text": "b", "x": ' + nested + b"}\n")
    rows = read_all(spec(tmp_path, "jsonl", keep=["x"]), "n.jsonl")
    assert [(r[TEXT], r["x"], r[REJECT]) for r in rows] == [
        ("a", 1, None),
        (None, None, "kept column 'x' is nested more than 200 levels deep"),
    ]


@pytest.mark.parametrize("name", ["cr.txt", "cr.jsonl"])
def test_lone_cr_line_ends_split_rows_as_universal_newlines_do(tmp_path, name):
    """Old Mac files end lines with a lone CR: a whole file used to be one row (text) or one reject (JSONL)."""
    texts = ["line one", "line two", "", "line four"]
    body = "\r".join(json.dumps({"text": t}) if name.endswith("jsonl") else t for t in texts)
    (tmp_path / name).write_bytes(body.encode() + b"\r\n")
    rows = read_all(spec(tmp_path, None), name)
    want = ["line one", "line two", None, "line four"]
    assert [r[TEXT] for r in rows] == want
    assert [r["id"] for r in rows] == [f"{name}#{k}" for k in range(4)]


def test_line_ends_split_across_read_chunks():
    """A CR at the end of one chunk and its LF at the start of the next are one line end."""
    chunks = [b"a\r", b"\nb\r", b"c", b"\r", b"", b"\n", b"\nd"]
    assert list(lines(iter(chunks))) == [b"a", b"b", b"c", b"", b"d"]
    assert list(lines(iter([b"x" * 10, b"y" * 10, b"\r\n"]))) == [b"x" * 10 + b"y" * 10]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_without_a_bom_fail_naming_the_encoding(tmp_path, encoding):
    """Without a byte-order mark such a file was called 'binary data'; the message now names the encoding."""
    (tmp_path / "w.txt").write_bytes("first line\nsecond line, with é\n".encode(encoding))
    iconv = encoding.upper().replace("-LE", "LE").replace("-BE", "BE")
    with pytest.raises(InputFileError, match=rf"w.txt is read as text but looks like text in {iconv} without a byte"):
        read_all(spec(tmp_path, "text"), "w.txt")


WIDE_TEXTS = {
    "chinese": "你好世界，这是第一行。\n上海的天气很好\n一二三\n",
    "russian": "Привет, мир\nвторая строка\n",
    "greek_jsonl": '{"text": "Καλημέρα κόσμε"}\n{"text": "δεύτερη"}\n',
    "mixed": "日本語のテキスト\r\nKorean 한국어\r\n" * 300,  # longer than the 4 KB sniffed, cut mid code unit
}


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("script", sorted(WIDE_TEXTS))
def test_utf16_and_utf32_without_a_bom_in_any_script_fail_naming_the_encoding(tmp_path, encoding, script):
    """Only mostly-ASCII text was recognised (its zero bytes): Chinese in UTF-16LE is ASCII-range bytes and a few
    zeros, and was read as UTF-8 garbage: `你好世界` embedded as "`O}YNLu", other lines rejected."""
    fmt = "jsonl" if script.endswith("jsonl") else "text"
    (tmp_path / "w.txt").write_bytes(WIDE_TEXTS[script].encode(encoding))
    iconv = encoding.upper().replace("-LE", "LE").replace("-BE", "BE")
    with pytest.raises(InputFileError, match=rf"w.txt is read as {fmt} but looks like text in {iconv} without a byte"):
        read_all(spec(tmp_path, fmt), "w.txt")


@pytest.mark.parametrize(
    "data",
    [
        b"a\x00b\nc\n",
        b'{"text":"a"}\n\x00\x00\n{"text":"b\\u0000c"}\n',  # a NUL line after an even-length first line
        "ligne\x00 é\nzwei\n".encode() * 200,
        "中文\x00文本\n".encode() * 300,
    ],
)
def test_utf8_text_with_nul_bytes_is_not_taken_for_utf16(tmp_path, data):
    (tmp_path / "n.txt").write_bytes(data)
    rows = read_all(spec(tmp_path, "jsonl" if data.startswith(b"{") else "text"), "n.txt")
    assert len(rows) == data.count(b"\n")


def test_ids_of_any_json_or_parquet_type_follow_one_rule(tmp_path):
    """Integral floats (pandas writes an int column with a gap as float64) are the integer's id; NaN, null and ''
    are a missing id; booleans, lists and objects are rejects naming the type (they used to become Python reprs
    such as "['a']" or "True")."""
    records = [7, "7b", 7.0, 2.5, None, "", True, ["a"], {"k": 1}, float("inf")]
    (tmp_path / "i.jsonl").write_text("".join(json.dumps({"id": v, "text": "t"}) + "\n" for v in records))
    rows = read_all(spec(tmp_path, "jsonl", "id"), "i.jsonl")
    assert [(r["id"], r[REJECT]) for r in rows] == [
        ("7", None),
        ("7b", None),
        ("7", None),
        ("2.5", None),
        (None, "missing id"),
        (None, "missing id (empty string)"),
        ("true", "id is bool true, not a string or a number"),
        ('["a"]', 'id is list ["a"], not a string or a number'),
        ('{"k": 1}', 'id is dict {"k": 1}, not a string or a number'),
        ("Infinity", "id is inf, not a string or a finite number"),
    ]
    pq.write_table(
        pa.table({"id": [1.0, float("nan"), None, 3.0], "text": ["a", "b", "c", "d"]}), tmp_path / "f.parquet"
    )
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int32()), "text": ["a", "b"]}), tmp_path / "g.parquet")
    floats = read_all(spec(tmp_path, "parquet", "id"), "f.parquet")
    assert [(r["id"], r[REJECT]) for r in floats] == [
        ("1", None),
        (None, "missing id (NaN)"),
        (None, "missing id"),
        ("3", None),
    ]
    assert [r["id"] for r in read_all(spec(tmp_path, "parquet", "id"), "g.parquet")] == ["1", "2"]


def test_a_json_array_of_records_on_one_line_is_one_row_per_record(tmp_path):
    """pandas `to_json(orient="records")` writes one line `[{...}, {...}]`: it was one reject for the whole file
    (rows in = 1 for thousands of records). An array of anything else stays one reject."""
    records = [{"id": "a", "text": "first"}, {"id": "b", "text": None}, {"id": "c", "text": "third", "year": 2024}]
    (tmp_path / "r.json").write_text(
        json.dumps(records) + "\n" + json.dumps({"id": "d", "text": "after"}) + "\n[1, 2]\n"
    )
    rows = read_all(spec(tmp_path, None, "id", ["year"]), "r.json")
    assert [(r["id"], r[TEXT], r[REJECT], r["year"]) for r in rows] == [
        ("a", "first", None, None),
        ("b", None, "null text", None),
        ("c", "third", None, 2024),
        ("d", "after", None, None),
        (None, None, "JSON value is list, not an object", None),
    ]
    assert [r[ROW] for r in rows] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "name, fmt, content, message",
    [
        ("p.json", None, b'[\n  {"text": "a"},\n  {"text": "b"}\n]\n', r"jsonl .*one multi-line JSON document .*jq -c"),
        ("q.jsonl", "jsonl", b'\n{\n  "text": "a"\n}\n', r"jsonl .*one multi-line JSON document"),
        ("j.txt", None, b'\n{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n', r"text .*JSON Lines .*'id', 'text'"),
    ],
)
def test_a_file_whose_layout_contradicts_its_format_fails_naming_it(tmp_path, name, fmt, content, message):
    """JSON Lines read as text embedded each record's JSON source with no reject to show it; a pretty-printed JSON
    document read as JSONL turned every line into a reject."""
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputFileError, match=rf"{name} is read as {message}"):
        read_all(spec(tmp_path, fmt), name)
    (tmp_path / "ok.txt").write_bytes(b"{braces} in a sentence are fine\n[1] and so is a footnote\n")
    assert [r[REJECT] for r in read_all(spec(tmp_path, "text"), "ok.txt")] == [None, None]


def test_input_columns_named_like_underscored_internal_ones_are_kept_apart(tmp_path):
    """An Elasticsearch export has `_source`; other corpora `_row` or `_text`. Kept, they used to replace the read
    stage's own columns of those names: a kept `_row` replaced the row numbers duplicate-id rejects are matched by
    (the repeats were embedded), and the rejects file got the kept values as its source and row."""
    record = {"_id": "d1", "text": "body", "_source": {"title": "t"}, "_row": "x", "_text": "raw", "_reject": 1}
    (tmp_path / "es.jsonl").write_text(json.dumps(record) + "\n" + json.dumps({**record, "text": None}) + "\n")
    rows = read_all(spec(tmp_path, "jsonl", "_id", ["_source", "_row", "_text", "_reject"]), "es.jsonl")
    assert [(r[SOURCE], r[ROW], r[TEXT], r[REJECT]) for r in rows] == [
        ("es.jsonl", 0, "body", None),
        ("es.jsonl", 1, None, "null text"),
    ]
    assert [(r["_source"], r["_row"], r["_text"], r["_reject"]) for r in rows] == [({"title": "t"}, "x", "raw", 1)] * 2


def test_invalid_utf8_in_a_parquet_kept_column_is_a_reject_not_a_broken_output(tmp_path):
    """Strings a lax writer put in a kept column (also inside lists and structs) went to the output as they were:
    readers of the output then failed (to_pylist / pandas: UnicodeDecodeError)."""
    title = pa.array([b"fine", b"bad \xff", None, b"ok"], pa.binary()).view(pa.string())
    tags = pa.array([[b"a"], [b"b"], [b"\xfe"], None], pa.list_(pa.binary())).view(pa.list_(pa.string()))
    pq.write_table(pa.table({"text": ["a", "b", "c", "d"], "title": title, "tags": tags}), tmp_path / "k.parquet")
    blocks = list(read_file(spec(tmp_path, "parquet", keep=["title", "tags"]), "k.parquet"))
    for block in blocks:
        block.validate(full=True)
    rows = pa.concat_tables(blocks).to_pylist()
    assert [(r["title"], r["tags"], r[REJECT]) for r in rows] == [
        ("fine", ["a"], None),
        (None, ["b"], "invalid UTF-8 in kept column 'title'"),
        (None, None, "invalid UTF-8 in kept column 'tags'"),
        ("ok", None, None),
    ]


def test_a_bom_starting_a_later_jsonl_line_is_dropped(tmp_path):
    """`cat a.jsonl b.jsonl` of files written with BOMs puts one at the start of a line in the middle: json.loads
    refused it ("Unexpected UTF-8 BOM") and the row was a reject."""
    part = b'\xef\xbb\xbf{"text": "first of its file"}\r\n{"text": "second"}\r\n'
    (tmp_path / "cat.jsonl").write_bytes(part + part)
    rows = read_all(spec(tmp_path, "jsonl"), "cat.jsonl")
    assert [(r[TEXT], r[REJECT]) for r in rows] == [("first of its file", None), ("second", None)] * 2


def test_a_zero_byte_parquet_file_has_no_rows(tmp_path):
    """A writer that crashed before its first byte leaves a 0-byte part file: the job failed ("looks like an empty
    file; set input.format"), where an empty JSONL file is simply empty."""
    from pipeline.reading import observed_kept_types

    (tmp_path / "part-00001.parquet").write_bytes(b"")
    assert list(read_file(spec(tmp_path, None, "id", ["lang"]), "part-00001.parquet")) == []
    assert observed_kept_types(spec(tmp_path, None, "id", ["lang"]), "part-00001.parquet") == (NO_RECORDS, {})


def test_binary_key_ids_are_hex_and_uuids_one_id_whatever_their_parquet_type(tmp_path):
    """A UUID column written as bare fixed_size_binary(16) (no UUID logical type) rejected nearly every row as
    "invalid UTF-8 in id"; the same UUID typed as UUID read as its canonical text."""
    import uuid

    keys = [uuid.UUID(int=k * 0x1F2E3D4C5B6A79881F2E3D4C5B6A7988 % (1 << 128)).bytes for k in (1, 2)]
    pq.write_table(pa.table({"id": pa.array(keys, pa.uuid()), "text": ["a", "b"]}), tmp_path / "typed.parquet")
    pq.write_table(pa.table({"id": pa.array(keys, pa.binary(16)), "text": ["a", "b"]}), tmp_path / "bare.parquet")
    pq.write_table(
        pa.table({"id": pa.array([b"\x00\xff" * 4, None], pa.binary(8)), "text": ["a", "b"]}), tmp_path / "k.parquet"
    )
    typed = read_all(spec(tmp_path, "parquet", "id"), "typed.parquet")
    bare = read_all(spec(tmp_path, "parquet", "id"), "bare.parquet")
    assert [r["id"] for r in bare] == [r["id"] for r in typed] == [str(uuid.UUID(bytes=k)) for k in keys]
    assert [r[REJECT] for r in bare] == [None, None]
    assert [(r["id"], r[REJECT]) for r in read_all(spec(tmp_path, "parquet", "id"), "k.parquet")] == [
        ("00ff00ff00ff00ff", None),
        (None, "missing id"),
    ]


@pytest.mark.parametrize("row_group_rows", [6_000, 60_000], ids=["ten_row_groups", "one_row_group"])
def test_a_parquet_file_is_read_a_page_at_a_time_not_held_whole(tmp_path, row_group_rows):
    """A read task held the whole file: pyarrow pre-buffers every selected row group's column chunks before the first
    batch, and reads a column chunk whole without a read buffer (a 127 MB file: 172 MB of Arrow memory;
    bench/results/corpus_shapes.md). Now its Arrow allocations stay far below the file's size."""
    rng = np.random.default_rng(0)
    texts = [rng.bytes(500).hex() for _ in range(60_000)]  # 1000 characters each: 60 MB, stored uncompressed
    pq.write_table(
        pa.table({"text": texts}), tmp_path / "big.parquet", row_group_size=row_group_rows, compression="none"
    )
    size = (tmp_path / "big.parquet").stat().st_size
    del texts
    before, peak, rows = pa.total_allocated_bytes(), 0, 0
    for block in read_file(spec(tmp_path, "parquet"), "big.parquet"):
        peak = max(peak, pa.total_allocated_bytes() - before)
        rows += block.num_rows
    assert rows == 60_000
    assert peak < 0.75 * size, f"{peak >> 20} MB of Arrow memory for a {size >> 20} MB file"


def test_a_small_file_on_s3_is_read_with_one_get(s3_bucket, s3_server):
    """A small file cost a GET for its first bytes (the magic number) and another for its content (Parquet: a third
    for the footer), one after the other, which thousands of small files packed into one unit pay per file. Read
    whole, it is one GET."""
    from s3_fault_proxy import FaultProxy

    client, bucket = s3_bucket
    table = pa.table({"text": ["one", "two"]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    objects = {
        "a.jsonl": b'{"text": "one"}\n{"text": "two"}\n',
        "b.jsonl.gz": gzip.compress(b'{"text": "one"}\n{"text": "two"}\n'),
        "c.txt": b"one\ntwo\n",
        "d.parquet": sink.getvalue().to_pybytes(),
    }
    for name, data in objects.items():
        client.put_object(Bucket=bucket, Key=f"c/{name}", Body=data)
    proxy = FaultProxy(s3_server).start()
    try:
        s = ReadSpec(resolve(f"s3://{bucket}/c", StorageConfig(endpoint_url=proxy.url)), None, "text", None, ())
        texts = {name: [r[TEXT] for r in read_all(s, name)] for name in objects}
        gets = {path: n for (method, path), n in proxy.forwarded.items() if method == "GET"}
    finally:
        proxy.stop()
    assert texts == {name: ["one", "two"] for name in objects}
    assert gets == {f"/{bucket}/c/{name}": 1 for name in objects}


def nested_spec(root, fmt, text="meta.text", id_column="meta.id", keep=()):
    return ReadSpec(resolve(str(root), StorageConfig()), fmt, text, id_column, tuple(keep))


NESTED_ROWS = [
    {"meta": {"id": 1, "text": "Guten Tag", "lang": "de"}},
    {"meta": None},  # the whole struct is null
    {"meta": {"id": 3, "text": None, "lang": "fr"}},  # the text field is null
    {"meta": {"id": None, "text": "no id", "lang": "en"}},
    {"meta": {"id": 5, "text": 7, "lang": "en"}},  # not a string: as today's non-string text
]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_nested_text_and_id_columns_read_from_structs_with_rejects_for_null_structs(tmp_path, fmt):
    """`text_column: meta.text`, `id_column: meta.id`: every row comes out, good or a reject saying why. The read
    failed "column(s) ['meta.text'] not found; the file has columns ['meta']" (JSONL: "no record has the key")."""
    records = NESTED_ROWS[:-1] if fmt == "parquet" else NESTED_ROWS  # a Parquet column has one type: no int text
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), tmp_path / "n.parquet")
    else:
        (tmp_path / "n.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = read_all(nested_spec(tmp_path, fmt, keep=["meta.lang"]), f"n.{fmt}")
    assert len(rows) == len(records)  # rows in = good + rejected
    assert [(r["id"], r[TEXT], r[REJECT], r["meta.lang"]) for r in rows] == [
        ("1", "Guten Tag", None, "de"),
        (None, None, "no text at 'meta.text': 'meta' is null", None),
        ("3", None, "null text", "fr"),
        (None, None, "missing id", "en"),
        ("5", None, "text is int, not a string", "en"),
    ][: len(records)]


def test_a_jsonl_record_without_the_nested_field_is_a_reject_naming_it(tmp_path):
    lines = [
        {"meta": {"id": "a", "text": "kept"}},
        {"meta": {"id": "b", "title": "no text here"}},
        {"meta": "a string", "id": "c"},
        {"other": 1},
        {"meta": {"text": "no id field"}},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = read_all(nested_spec(tmp_path, "jsonl"), "m.jsonl")
    assert [(r["id"], r[REJECT]) for r in rows] == [
        ("a", None),
        ("b", "no text at 'meta.text': 'meta' has no field 'text'"),
        (None, "no text at 'meta.text': 'meta' is str, not an object"),
        (None, "no 'meta.text' key"),
        (None, "missing id ('meta' has no field 'id')"),
    ]


def test_a_parquet_row_whose_id_struct_is_null_is_a_missing_id_saying_why(tmp_path):
    ids = pa.array([{"id": "a"}, None], pa.struct([("id", pa.string())]))
    pq.write_table(pa.table({"key": ids, "text": ["one", "two"]}), tmp_path / "k.parquet")
    rows = read_all(nested_spec(tmp_path, "parquet", text="text", id_column="key.id"), "k.parquet")
    assert [(r["id"], r[TEXT], r[REJECT]) for r in rows] == [
        ("a", "one", None),
        (None, None, "missing id ('key' is null)"),
    ]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_column_literally_named_with_a_dot_wins_over_the_nested_field(tmp_path, fmt):
    rows = [{"meta.text": "flat", "meta": {"text": "nested"}}]
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    else:
        (tmp_path / "d.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert [r[TEXT] for r in read_all(nested_spec(tmp_path, fmt, id_column=None), f"d.{fmt}")] == ["flat"]


def test_a_missing_nested_path_names_the_file_the_path_and_the_fields_where_it_stopped(tmp_path):
    pq.write_table(pa.Table.from_pylist(NESTED_ROWS[:1]), tmp_path / "p.parquet")
    with pytest.raises(
        InputFileError,
        match=r"p.parquet: column\(s\) \['meta.body'\] not found; the file has columns \['meta'\]; 'meta.body' stops "
        r"at 'meta': 'meta' has fields \['id', 'lang', 'text'\]",
    ):
        read_all(nested_spec(tmp_path, "parquet", text="meta.body"), "p.parquet")
    (tmp_path / "j.jsonl").write_text(json.dumps(NESTED_ROWS[0]) + "\n" + json.dumps({"meta": {"url": "u"}}) + "\n")
    with pytest.raises(
        InputFileError,
        match=r"j.jsonl: no record has the key 'meta.body'; keys found: \['meta'\]; 'meta.body' stops at 'meta': "
        r"'meta' has fields \['id', 'lang', 'text', 'url'\] \(set input.text_column\)",
    ):
        read_all(nested_spec(tmp_path, "jsonl", text="meta.body"), "j.jsonl")
    with pytest.raises(InputFileError, match=r"'meta.text.x' stops at 'meta.text', which is string, not a struct"):
        read_all(nested_spec(tmp_path, "parquet", text="meta.text.x"), "p.parquet")


def test_kept_nested_columns_get_their_type_from_the_struct_field(tmp_path):
    from pipeline.reading import observed_kept_types

    pq.write_table(pa.Table.from_pylist(NESTED_ROWS[:1]), tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text(json.dumps(NESTED_ROWS[0]) + "\n")
    keep = ["meta.lang", "meta.id"]
    assert observed_kept_types(nested_spec(tmp_path, "parquet", keep=keep), "t.parquet") == (
        "parquet",
        {"meta.lang": pa.string(), "meta.id": pa.int64()},
    )
    assert observed_kept_types(nested_spec(tmp_path, "jsonl", keep=keep), "t.jsonl") == (
        "jsonl",
        {"meta.lang": pa.string(), "meta.id": pa.int64()},
    )


def test_a_nested_text_column_reads_only_its_leaf_not_the_whole_struct(tmp_path):
    """Projection still works through a struct: the sibling field `meta.blob` has its column chunk overwritten with
    garbage, so a read of the whole `meta` struct fails; reading `meta.text` (and `meta.id`) never touches it."""
    meta = [{"id": i, "text": f"t{i}", "blob": "x" * 5000} for i in range(4)]
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"meta": meta}), path, compression="none", use_dictionary=False)
    chunk = pq.ParquetFile(path).metadata.row_group(0)
    blob = next(chunk.column(i) for i in range(chunk.num_columns) if chunk.column(i).path_in_schema == "meta.blob")
    data = bytearray(path.read_bytes())
    data[blob.data_page_offset : blob.data_page_offset + blob.total_compressed_size] = b"\xff" * (
        blob.total_compressed_size
    )
    path.write_bytes(bytes(data))
    with pytest.raises(OSError):
        pq.read_table(path, columns=["meta"])  # the control: the struct read whole hits the garbage
    rows = read_all(nested_spec(tmp_path, "parquet"), "b.parquet")
    assert [(r["id"], r[TEXT]) for r in rows] == [(str(i), f"t{i}") for i in range(4)]


def test_a_parquet_file_without_rows_is_read_whatever_its_columns(tmp_path):
    """No rows, nothing lost: pandas' `DataFrame().to_parquet` (no column at all), an empty Spark partition or filter
    result without the text column. Each failed the job: `column(s) ['text'] not found`."""
    import pandas as pd

    pd.DataFrame().to_parquet(tmp_path / "pandas_empty.parquet")
    pq.write_table(pa.table({"other": pa.array([], pa.int64())}), tmp_path / "no_text.parquet")
    pq.write_table(pa.table({"other": pa.array([], pa.int64())}), tmp_path / "no_groups.parquet", row_group_size=1)
    for name in ("pandas_empty.parquet", "no_text.parquet", "no_groups.parquet"):
        assert list(read_file(spec(tmp_path, "parquet", "id", ("lang",)), name)) == []
    pq.write_table(pa.table({"other": [1]}), tmp_path / "one_row.parquet")  # with a row it is still an error
    with pytest.raises(InputFileError, match=r"one_row.parquet: column\(s\) \['text'\] not found"):
        read_all(spec(tmp_path, "parquet"), "one_row.parquet")


@pytest.mark.parametrize(
    "table, column, message",
    [
        (pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]), "text", "'text'"),
        (
            pa.Table.from_arrays([pa.array(["a"]), pa.array([1]), pa.array([2])], names=["text", "id", "id"]),
            "id",
            "'id'",
        ),
        (
            pa.table({"meta": pa.StructArray.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["t", "t"])}),
            "meta.t",
            "'meta.t'",
        ),
    ],
)
def test_a_column_name_repeated_in_the_schema_fails_naming_it(tmp_path, table, column, message):
    """Parquet allows two columns of one name (pandas concat(axis=1), a join); the read failed with a bare
    `KeyError: 'Field "text" exists 2 times in schema'`. Unused repeated columns are fine."""
    pq.write_table(table, tmp_path / "d.parquet")
    root = resolve(str(tmp_path), StorageConfig())
    read = (
        ReadSpec(root, "parquet", "text", "id", ()) if column == "id" else ReadSpec(root, "parquet", column, None, ())
    )
    with pytest.raises(InputFileError, match=rf"d.parquet: the column {message} .* appears 2 times .* write the file"):
        read_all(read, "d.parquet")
    from pipeline.reading import observed_kept_types

    with pytest.raises(InputFileError, match=rf"the column {message} .* appears 2 times"):
        observed_kept_types(spec(tmp_path, "parquet", None, (column,)), "d.parquet")
    pq.write_table(
        pa.Table.from_arrays([pa.array(["a"]), pa.array([1]), pa.array([2])], ["text", "x", "x"]),
        tmp_path / "u.parquet",
    )
    assert [r[TEXT] for r in read_all(spec(tmp_path, "parquet"), "u.parquet")] == ["a"]


def corrupt_parquet(tmp_path) -> dict[str, bytes]:
    good = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": ["a"] * 10}), good)
    data = good.getvalue().to_pybytes()
    return {
        "cut.parquet": data[:-12],  # the footer cut off (an interrupted upload)
        "length.parquet": data[:-8] + (10**6).to_bytes(4, "little") + b"PAR1",  # a footer length past the start
        "magic.parquet": b"PAR1",
        "thrift.parquet": data[:4] + b"\x00" * (len(data) - 12) + data[-8:],  # footer bytes garbled
    }


@pytest.mark.parametrize("name", ["cut.parquet", "length.parquet", "magic.parquet", "thrift.parquet"])
def test_a_corrupt_parquet_file_fails_naming_it_and_what_to_do(tmp_path, name):
    (tmp_path / name).write_bytes(corrupt_parquet(tmp_path)[name])
    with pytest.raises(InputFileError, match=rf"cannot read .*/{name} as parquet: .*The file is cut short or corrupt"):
        read_all(spec(tmp_path, "parquet"), name)


LATIN_LINES = ["Ça coûte 5 € à Paris", "Größe und Länge", "naïve café", "plain ASCII line", "déjà vu"]


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "iso-8859-15"])
@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_a_file_in_a_single_byte_encoding_fails_naming_it(tmp_path, encoding, fmt):
    """Each line with an accented letter was a reject `invalid UTF-8 at byte N`, each other line embedded: a French
    or German file was read in part, with no word about its encoding."""
    lines = [json.dumps({"text": t}, ensure_ascii=False) if fmt == "jsonl" else t for t in LATIN_LINES]
    data = "\r\n".join(lines).encode(encoding, "replace") + b"\r\n"
    (tmp_path / "l.txt").write_bytes(data)
    with pytest.raises(InputFileError, match=rf"l.txt is read as {fmt} but looks like text in a single-byte encoding"):
        read_all(spec(tmp_path, fmt), "l.txt")


def test_a_utf8_file_with_a_few_broken_lines_keeps_them_as_rejects(tmp_path):
    """The file-level refusal needs nearly all non-ASCII lines broken: UTF-8 text with a few bad lines (and a cut
    multi-byte character at the sniff's end) is read, each broken line a reject of its row."""
    good = [f"ligne {i} déjà vu, 字 😀" for i in range(200)]
    bad = [b"caf\xe9 one", b"na\xefve two", b"\xff\xfe three"]
    data = b"\n".join([*bad, *(g.encode() for g in good)]) + b"\n"
    (tmp_path / "u.txt").write_bytes(data)
    rows = read_all(spec(tmp_path, "text"), "u.txt")
    hint = "the text looks like a single-byte encoding, not UTF-8; re-encode the file as UTF-8 (e.g. iconv -f CP1252"
    assert [r[REJECT] for r in rows[:3]] == [
        f"invalid UTF-8 at byte 3 (0xE9, 'é' in Latin-1/cp1252): {hint} -t UTF-8, or the encoding of its language)",
        f"invalid UTF-8 at byte 2 (0xEF, 'ï' in Latin-1/cp1252): {hint} -t UTF-8, or the encoding of its language)",
        "invalid UTF-8 at byte 0",  # not inside a word: no guess
    ]
    assert all(r[REJECT] is None for r in rows[3:]) and len(rows) == 203


LEGACY_HINT = "the text looks like a single-byte encoding, not UTF-8; re-encode the file as UTF-8 (e.g. iconv -f CP1252"


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
@pytest.mark.parametrize("accented", [1, 2])
@pytest.mark.parametrize("fmt", ["text", "jsonl", "parquet"])
def test_a_legacy_8bit_file_with_few_accented_lines_is_never_embedded_as_mojibake(tmp_path, encoding, accented, fmt):
    """A Latin-1 or cp1252 file where only one or two lines hold an accented letter is below the file-level check
    (three such lines in the first 4 KB): its ASCII lines are the same text in any of these encodings and are
    embedded; each accented line is a reject, and its reason now says which letter the byte is in Latin-1/cp1252
    and how to re-encode the file (it said `invalid UTF-8 at byte N` only). No row is decoded by a guess."""
    plain = [f"plain ASCII line number {i}" for i in range(40)]
    special = ["Le café coûte 5 €", "“Größe” und Länge"][:accented]
    texts = plain[:10] + special[:1] + plain[10:30] + special[1:] + plain[30:]
    raw = [t.encode(encoding, "replace") for t in texts]
    if fmt == "parquet":  # a lax writer: the bytes as they were, in a string column
        pq.write_table(pa.table({"text": pa.array(raw, pa.binary()).view(pa.string())}), tmp_path / "l.parquet")
    else:
        lines = [b'{"text": "' + r + b'"}' if fmt == "jsonl" else r for r in raw]
        (tmp_path / "l.parquet").write_bytes(b"\r\n".join(lines) + b"\r\n")
    rows = read_all(spec(tmp_path, fmt), "l.parquet")
    assert len(rows) == len(texts)
    embedded = [r[TEXT] for r in rows if r[REJECT] is None]
    assert embedded == plain  # the ASCII lines, exactly; nothing else
    rejects = [r for r in rows if r[REJECT] is not None]
    assert [r[ROW] for r in rejects] == [k for k, t in enumerate(texts) if not t.isascii()]
    for r in rejects:
        assert r[REJECT].startswith("invalid UTF-8 at byte ") and LEGACY_HINT in r[REJECT], r[REJECT]
    assert "'é' in Latin-1/cp1252" in rejects[0][REJECT]


def test_partition_folders_of_a_list_of_locations_give_kept_values(tmp_path):
    """`input.uri: [data/lang=fr, data/lang=de]`: paths are below the common folder, so each file's `lang=` folder
    gives its kept `lang`, as for one location's subfolders."""
    from pipeline.storage import list_inputs

    for lang in ("fr", "de"):
        (tmp_path / f"lang={lang}").mkdir()
        (tmp_path / f"lang={lang}" / "x.jsonl").write_text('{"text": "t"}\n')
    root, listed = list_inputs([str(tmp_path / "lang=fr"), str(tmp_path / "lang=de")], StorageConfig())
    read = ReadSpec(root, None, "text", None, ("lang",))
    assert [(f.path, read_all(read, f.path)[0]["lang"]) for f in listed] == [
        ("lang=de/x.jsonl", "de"),
        ("lang=fr/x.jsonl", "fr"),
    ]


LIST_ROWS = [
    {"sentences": ["Hallo", "Welt"], "turns": [{"id": "a", "text": "q"}, {"id": "a2", "text": "Antwort"}], "k": 1},
    {"sentences": [], "turns": [{"id": "b", "text": "only one"}], "k": 2},
    {"sentences": None, "turns": None, "k": 3},
    {"sentences": ["Eins"], "turns": [{"id": "d", "text": "x"}, None], "k": 4},
]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_paths_into_lists_read_an_item_and_a_row_without_it_is_a_reject_saying_why(tmp_path, fmt):
    """`text_column: turns[1].text`, `id_column: turns[0].id`, `keep_columns: [sentences[0]]`: the item of a list
    column (JSON array) by position, each row good or a reject saying why. docs/robustness.md said "not handled":
    the read failed `column(s) ['turns[1].text'] not found` (JSONL: `no record has the key`)."""
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(LIST_ROWS), tmp_path / "l.parquet")
    else:
        (tmp_path / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LIST_ROWS))
    s = nested_spec(tmp_path, fmt, text="turns[1].text", id_column="turns[0].id", keep=["sentences[0]"])
    rows = read_all(s, f"l.{fmt}")
    assert [(r["id"], r[TEXT], r[REJECT], r["sentences[0]"]) for r in rows] == [
        ("a", "Antwort", None, "Hallo"),
        ("b", None, "no text at 'turns[1].text': 'turns' has 1 items, no item [1]", None),
        (None, None, "no text at 'turns[1].text': 'turns' is null", None),
        ("d", None, "no text at 'turns[1].text': 'turns[1]' is null", "Eins"),
    ]
    rows = read_all(nested_spec(tmp_path, fmt, text="sentences[1]", id_column="k"), f"l.{fmt}")
    assert [(r[TEXT], r[REJECT]) for r in rows] == [
        ("Welt", None),
        (None, "no text at 'sentences[1]': 'sentences' has 0 items, no item [1]"),
        (None, "no text at 'sentences[1]': 'sentences' is null"),
        (None, "no text at 'sentences[1]': 'sentences' has 1 items, no item [1]"),
    ]
    with pytest.raises(InputFileError, match=r"'k\[0\]' stops at 'k', which is \w+, not a list"):
        read_all(nested_spec(tmp_path, fmt, text="k[0]", id_column="k"), f"l.{fmt}")
    for text in ("sentences[*]", "sentences[1:3]"):  # not read: said only 'not found' / 'no record has the key'
        with pytest.raises(InputFileError, match=r"a list position is one item, \[N\] with N from 0 .*slices"):
            read_all(nested_spec(tmp_path, fmt, text=text, id_column="k"), f"l.{fmt}")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "large_list", "fixed_size_list"])
def test_negative_list_positions_count_from_the_end(tmp_path, fmt):
    """`text_column: sentences[-1]` (jq's `.[-1]`, pandas' `str[-1]`) was refused "negative positions are not read";
    it is the last item now, `[-2]` the one before, in every dotted-path key (text, id, kept columns), in JSONL and
    every Parquet list type; a null or short list is a reject saying why. Old code: InputFileError on every read."""
    rows = [
        {"s": ["a", "b", "c"], "turns": [{"id": "t0", "text": "q"}, {"id": "t1", "text": "last"}], "k": 1},
        {"s": ["x", "y", "z"], "turns": [{"id": "u0", "text": "only"}], "k": 2},
        {"s": None, "turns": None, "k": 3},
        {"s": ["d", "e", "f"], "turns": [], "k": 4},
    ]
    if fmt == "jsonl":
        (tmp_path / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        rel = "l.jsonl"
    else:
        table = pa.Table.from_pylist(rows)
        if fmt != "parquet":
            kind = pa.large_list(pa.string()) if fmt == "large_list" else pa.list_(pa.string(), 3)
            table = table.set_column(0, "s", table.column("s").cast(kind))
        pq.write_table(table, tmp_path / "l.parquet", row_group_size=2)  # two row groups: the positions per batch
        rel = "l.parquet"
    fmt = "parquet" if rel.endswith("parquet") else "jsonl"
    got = read_all(nested_spec(tmp_path, fmt, "turns[-1].text", "turns[-2].id", ["s[-1]", "s[-3]"]), rel)
    assert [(r["id"], r[TEXT], r[REJECT], r["s[-1]"], r["s[-3]"]) for r in got] == [
        ("t0", "last", None, "c", "a"),
        (None, None, "missing id ('turns' has 1 items, no item [-2])", "z", "x"),
        (None, None, "no text at 'turns[-1].text': 'turns' is null", None, None),
        (None, None, "no text at 'turns[-1].text': 'turns' has 0 items, no item [-1]", "f", "d"),
    ]


def test_paths_through_a_parquet_map_read_its_keys_and_a_key_given_twice_is_a_reject(tmp_path):
    """`meta.title` on `meta: map<string, string>` (Spark's MapType; Spark SQL reads `meta.title` as meta['title'])
    failed the job "'meta.title' stops at 'meta', which is map<...>, not a struct". A map is walked by key now, in
    text, id and kept columns, into a struct value too; a null map, a missing key and a key the row's map gives twice
    are rejects saying which. A string column holding JSON says it is not parsed and what to do."""
    from pipeline.reading import observed_kept_types

    meta = [
        [("title", "T"), ("lang", "de")],
        None,
        [("lang", "fr")],
        [("title", "a"), ("title", "b")],
        [("title", "X"), ("lang", "de"), ("lang", "fr")],
    ]
    inner = [[("k", {"v": f"v{i}"})] for i in range(5)]
    table = pa.table(
        {
            "meta": pa.array(meta, pa.map_(pa.string(), pa.string())),
            "n": pa.array(inner, pa.map_(pa.string(), pa.struct([("v", pa.string())]))),
            "j": ['{"title": "T"}'] * 5,
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    s = nested_spec(tmp_path, "parquet", text="meta.title", id_column="n.k.v", keep=["meta.lang"])
    rows = read_all(s, "m.parquet")
    twice = "'meta' gives the key {!r} 2 times, so which value is meant cannot be told; write each key once"
    assert [(r["id"], r[TEXT], r[REJECT]) for r in rows] == [  # old code: InputFileError 'not a struct'
        ("v0", "T", None),
        ("v1", None, "no text at 'meta.title': 'meta' is null"),
        ("v2", None, "no text at 'meta.title': 'meta' has no key 'title'"),
        ("v3", None, "no text at 'meta.title': " + twice.format("title")),
        ("v4", None, "kept column 'meta.lang': " + twice.format("lang")),
    ]
    assert [r["meta.lang"] for r in rows][:3] == ["de", None, "fr"]
    assert observed_kept_types(s, "m.parquet") == ("parquet", {"meta.lang": pa.string()})
    with pytest.raises(InputFileError, match=r"'j.title' stops at 'j', which is string, not a struct \(a string "):
        read_all(nested_spec(tmp_path, "parquet", text="j.title", id_column=None), "m.parquet")


def test_a_parquet_map_key_holding_dots_is_read_as_a_json_objects_key_is(tmp_path):
    """HTML meta tags as a Spark MapType (`meta['DC.title']`, `meta['og.title']`): `meta.DC.title` failed the job
    "'meta.DC' is string, not a struct" (the first dotted segment was the key), though the same path reads the key
    in a JSON object. A dotted key is read where the first segment's reading cannot be walked; a struct value's
    field still comes first (`n.a.v` is n['a'].v)."""
    meta = [[("DC.title", "T0"), ("lang", "de")], [("DC.title", "T1")], [("lang", "fr")]]
    inner = [[("a.b", {"v": "ab"}), ("a", {"v": "a"})]] * 3
    table = pa.table(
        {
            "meta": pa.array(meta, pa.map_(pa.string(), pa.string())),
            "n": pa.array(inner, pa.map_(pa.string(), pa.struct([("v", pa.string())]))),
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    rows = read_all(
        nested_spec(tmp_path, "parquet", text="meta.DC.title", id_column=None, keep=["n.a.b.v"]), "m.parquet"
    )
    assert [(r[TEXT], r[REJECT], r["n.a.b.v"]) for r in rows] == [  # old code: InputFileError 'not a struct'
        ("T0", None, "ab"),
        ("T1", None, "ab"),
        (None, "no text at 'meta.DC.title': 'meta' has no key 'DC.title'", "ab"),
    ]
    rows = read_all(nested_spec(tmp_path, "parquet", text="n.a.v", id_column=None), "m.parquet")
    assert [r[TEXT] for r in rows] == ["a", "a", "a"]


def test_a_column_literally_named_with_a_list_index_wins(tmp_path):
    """Spark names `col("sentences")[0]` 'sentences[0]': such a column is read as it is, before the list's item."""
    table = pa.table({"sentences[0]": ["literal"], "sentences": [["item"]]})
    pq.write_table(table, tmp_path / "s.parquet")
    rows = read_all(nested_spec(tmp_path, "parquet", text="sentences[0]", id_column=None), "s.parquet")
    assert [r[TEXT] for r in rows] == ["literal"]


def test_a_json_object_giving_a_read_key_twice_is_a_reject_naming_it(tmp_path):
    """`{"text": "a", "text": "b"}`: Python's json keeps the last value without a word (other parsers the first), so
    the row was embedded as 'b' and a repeated id took its last value. A key the job reads given twice (at any level
    of its path, in a record of a one-line array too) is a reject naming it; other repeated keys do not count."""
    lines = [
        '{"id": "a", "text": "first", "text": "second"}',
        '{"id": "b", "id": "c", "text": "x"}',
        '{"id": "d", "text": "text", "other": 1, "other": 2}',  # a repeated key the job does not read; "text" twice
        '[{"id": "e", "meta": {"lang": "de", "lang": "fr"}, "text": "y"}, {"id": "f", "text": "z"}]',
        "null",
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    rows = read_all(spec(tmp_path, "jsonl", "id", ["meta.lang"]), "r.jsonl")
    twice = "the key {!r} appears more than once in one JSON object, so which value is meant cannot be told; write "
    twice += "each key once"
    assert [(r["id"], r[TEXT], r[REJECT]) for r in rows] == [
        (None, None, twice.format("text")),
        (None, None, twice.format("id")),
        ("d", "text", None),
        (None, None, twice.format("lang")),
        ("f", "z", None),
        (None, None, "JSON value is null, not an object"),
    ]


def test_a_read_keys_name_repeated_in_an_object_the_job_does_not_read_does_not_reject_the_row(tmp_path):
    """Only the objects on the way to a read path count: `{"text": "a", "notes": {"text": "x", "text": "y"}}` was a
    reject naming 'text' (any object of the record giving a read key's name twice), though the row's text, id and
    kept columns are unambiguous. A repeated key on the way to a read value is still a reject naming it."""
    lines = [
        '{"id": "a", "text": "t", "notes": {"text": "x", "text": "y"}}',  # 'text' twice in an object not read
        '{"id": "b", "text": "t", "spans": [{"id": 1, "id": 2}]}',  # 'id' twice in a list's object
        '{"id": "c", "text": "t", "meta": {"lang": "en"}, "src": {"lang": "a", "lang": "b"}}',
        '{"id": "d", "text": "t", "turns": [{"lang": "en"}, {"lang": "a", "lang": "b"}]}',  # turns[1] not read
        '{"id": "e", "text": "t", "meta": {"lang": "en", "lang": "de"}}',  # on the way to meta.lang: reject
        '{"id": "f", "text": "t", "turns": [{"lang": "en", "lang": "de"}]}',  # on the way to turns[0].lang
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    rows = read_all(spec(tmp_path, "jsonl", "id", ["meta.lang", "turns[0].lang"]), "r.jsonl")
    twice = "the key {!r} appears more than once in one JSON object, so which value is meant cannot be told; write "
    twice += "each key once"
    assert [(r["id"], r[REJECT]) for r in rows] == [  # old code: a-d rejected naming text / id / lang / lang
        ("a", None),
        ("b", None),
        ("c", None),
        ("d", None),
        (None, twice.format("lang")),
        (None, twice.format("lang")),
    ]


def test_a_repeated_non_ascii_key_is_found_also_as_json_writers_escape_it(tmp_path):
    """Python's json.dumps (ensure_ascii, its default) writes a key `språk` as `"spr\\u00e5k"`: a line giving it twice
    was not parsed again (its bytes hold `"språk"` no time), so the row kept the last value without a word. Both
    forms are counted now, mixed too; a line giving it once is read."""
    lines = [
        json.dumps({"id": "a", "text": "t", "språk": "de"})[:-1] + ', "spr\\u00e5k": "fr"}',  # escaped twice
        '{"id": "b", "text": "t", "språk": "de", "spr\\u00e5k": "fr"}',  # one of each form
        json.dumps({"id": "c", "text": "t", "språk": "de"}),
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = read_all(spec(tmp_path, "jsonl", "id", ["språk"]), "r.jsonl")
    twice = "the key 'språk' appears more than once in one JSON object, so which value is meant cannot be told; write "
    twice += "each key once"
    assert [(r["id"], r["språk"], r[REJECT]) for r in rows] == [  # old code: ('a', 'fr', None), ('b', 'fr', None)
        (None, None, twice),
        (None, None, twice),
        ("c", "de", None),
    ]


def test_every_json_spelling_of_a_read_key_given_twice_is_a_reject_naming_it(tmp_path):
    """Only the literal form and Python's lower-case `\\u00e5` were counted: `"\\u00E5"` (upper-case hex, JavaScript /
    Go / Java writers), escaped ASCII (`"te\\u0078t"`), `"\\/"`, a surrogate pair for an astral character and mixed
    forms each gave a key twice and the row kept the last value without a word. Keys are compared as decoded now;
    a line whose strings hold `:` (escaped too) without a repeat is read."""
    astral = "\U0001d54b"  # MATHEMATICAL DOUBLE-STRUCK CAPITAL T, outside the BMP: `\\ud835\\udd4b` in JSON
    lines = [
        '{"id": "a", "text": "t", "spr\\u00E5k": "de", "spr\\u00e5k": "fr"}',  # upper- and lower-case hex
        '{"id": "b", "text": "t", "te\\u0078t": "u"}',  # escaped ASCII
        '{"id": "c", "text": "t", "\\u0074\\u0065\\u0078\\u0074": "u"}',
        '{"id": "d", "text": "t", "a/b": 1, "a\\/b": 2}',
        f'{{"id": "e", "text": "t", "{astral}": 1, "\\ud835\\udd4b": 2}}',  # a surrogate pair and its character
        '{"id": "f", "text": "t", "\\ud835\\udd4b": 1, "\\uD835\\uDD4B": 2}',
        '{"id": "g", "text": "t", "meta": {"l\\u0061ng": "de", "lang": "fr"}}',  # on the way to meta.lang
        '{"id": "h", "text": "t: x\\u003a y", "spr\\u00e5k": "de", "notes": {"a": "b:c"}}',  # ':' in strings, no repeat
        '{"id": "i", "text": "t", "other": 1, "oth\\u0065r": 2}',  # a key the job does not read
        '{"id": "j", "text": "t", "spr\\u00e5k": "de", "a/b": ":", "meta": {"lang": "en"}}',
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = read_all(spec(tmp_path, "jsonl", "id", ["språk", "a/b", astral, "meta.lang"]), "r.jsonl")
    twice = "the key {!r} appears more than once in one JSON object, so which value is meant cannot be told; write "
    twice += "each key once"
    assert [(r["id"], r[REJECT]) for r in rows] == [  # old code: a-g read, each keeping one value
        (None, twice.format("språk")),
        (None, twice.format("text")),
        (None, twice.format("text")),
        (None, twice.format("a/b")),
        (None, twice.format(astral)),
        (None, twice.format(astral)),
        (None, twice.format("lang")),
        ("h", None),
        ("i", None),
        ("j", None),
    ]
    assert rows[7][TEXT] == "t: x: y"


def test_a_compressed_parquet_file_is_named_as_compressed_with_what_to_do(tmp_path):
    """`p.parquet.bz2` said it 'looks like plain text' (4 bytes were sniffed: bzip2's magic is 10, 'BZh9' alone is
    text) and to set input.format, which no format reads; a `.parquet.gz` too was told to set input.format. Each
    now names its compression and says to decompress it."""
    import bz2
    import io

    from pipeline.file_formats import CorruptFileError

    buf = io.BytesIO()
    pq.write_table(pa.table({"text": ["p"]}), buf)
    (tmp_path / "p.parquet.bz2").write_bytes(bz2.compress(buf.getvalue()))
    (tmp_path / "p.parquet.gz").write_bytes(gzip.compress(buf.getvalue()))
    for name, codec in [("p.parquet.bz2", "bz2"), ("p.parquet.gz", "gzip")]:
        with pytest.raises(CorruptFileError, match=rf"looks like {codec}-compressed data; decompress it"):
            read_all(spec(tmp_path, None), name)  # old code: .bz2 'looks like plain text; set input.format'


def test_bzip2_files_are_read_and_other_compressions_are_refused_by_name(tmp_path):
    """`.jsonl.bz2` (several streams concatenated, as pbzip2 writes) was refused: 'cannot infer the format from the
    extension ... set input.format', then, once set, 'bzip2-compressed data (not supported)'. It is read as gzip and
    zstd are; a cut one is a corrupt file. `.xz` / `.lz4` / `.zip` say what they are and what to do."""
    import bz2

    from pipeline.file_formats import CorruptFileError

    first, second = b'{"text": "eins"}\n{"text": "zwei"}\n', b'{"text": "drei"}\n'
    (tmp_path / "a.JSONL.bz2").write_bytes(bz2.compress(first) + bz2.compress(second))
    (tmp_path / "b.txt.bz2").write_bytes(bz2.compress(b"line one\nline two\n"))
    assert [r[TEXT] for r in read_all(spec(tmp_path, None), "a.JSONL.bz2")] == ["eins", "zwei", "drei"]
    assert [r[ROW] for r in read_all(spec(tmp_path, None), "a.JSONL.bz2")] == [0, 1, 2]
    assert [r[TEXT] for r in read_all(spec(tmp_path, None), "b.txt.bz2")] == ["line one", "line two"]
    (tmp_path / "bzh.txt").write_bytes(b"BZh9 is a text line, not bzip2\n")  # bzip2's magic is ASCII
    assert [r[TEXT] for r in read_all(spec(tmp_path, None), "bzh.txt")] == ["BZh9 is a text line, not bzip2"]
    (tmp_path / "cut.jsonl.bz2").write_bytes(bz2.compress(first * 5000)[:-40])
    with pytest.raises(CorruptFileError, match="cut.jsonl.bz2 as jsonl"):
        read_all(spec(tmp_path, None), "cut.jsonl.bz2")
    for name, says in [
        ("c.jsonl.xz", "xz-compressed files are not read; recompress it with gzip, zstd or bzip2"),
        ("d.jsonl.lz4", "lz4-compressed files are not read"),
        ("e.jsonl.zip", r"an archive \(.zip\) is not read; unpack it"),
    ]:
        (tmp_path / name).write_bytes(b"\x00" * 10)
        with pytest.raises(InputFileError, match=rf"{name}: {says}"):
            read_all(spec(tmp_path, None), name)


def test_records_without_a_line_break_between_them_are_one_row_each(tmp_path):
    """`{...}{...}` on one line (JSON values written one after another, or a whole file of them with no line break:
    pyarrow's JSON reader, so Ray Data's read_json and Hugging Face datasets, and jq read each) was one reject for the
    whole line, so a file of thousands of records counted one row in. Now each record is a row; a value that does not
    parse ends its line as one reject; a line starting with a scalar stays one reject. count_span_rows, which plans a
    large file's byte ranges, counts the same rows."""
    content = (
        b'{"id": "g", "text": "a"}{"id": "h", "text": "b"} \t{"id": "i", "text": "c"}\n'
        b'[{"id": "j", "text": "d"}][{"id": "k", "text": "e"}]\n'
        b'{"id": "l", "text": "f"}{"id": "m", "text": "g"\n'
        b'{"id": "n", "text": "}{"}\n'
        b'5{"id": "o", "text": "x"}\n'
        b'{"id": "p", "text": "y", "id": "q"}{"id": "r", "text": "z"}'
    )
    (tmp_path / "x.jsonl").write_bytes(content)
    rows = read_all(spec(tmp_path, "jsonl", "id"), "x.jsonl")
    cut = "line is not valid JSON (Expecting ',' delimiter at column 48, after 1 records written without a line "
    cut += "break between them)"
    twice = "the key 'id' appears more than once in one JSON object, so which value is meant cannot be told; write "
    twice += "each key once"
    assert [(r["id"], r[TEXT], r[REJECT]) for r in rows] == [
        ("g", "a", None),
        ("h", "b", None),
        ("i", "c", None),
        ("j", "d", None),
        ("k", "e", None),
        ("l", "f", None),
        (None, None, cut),
        ("n", "}{", None),
        (None, None, "line is not valid JSON (Extra data at column 2: more than one JSON value on the line)"),
        (None, None, twice),
        ("r", "z", None),
    ]
    assert [r[ROW] for r in rows] == list(range(11))
    root = resolve(str(tmp_path), StorageConfig())
    assert count_span_rows(root, "x.jsonl", "jsonl", 0, len(content)) == 11


def test_characters_after_a_record_that_are_no_record_are_a_reject_naming_them(tmp_path):
    """`{...}\\` (a line continuation left in by a shell or a C string) said 'more than one JSON value on the line; a
    missing line break between records?', which it is not: the reason names what follows the record now. The last
    line's trailing backslash too; the rows around are read."""
    (tmp_path / "x.jsonl").write_bytes(
        b'{"id": "a", "text": "t"}\\\n{"id": "b", "text": "u\\\\"}\n{"id": "c", "text": "v"} x\\'
    )
    rows = read_all(spec(tmp_path, "jsonl", "id"), "x.jsonl")
    assert [(r["id"], r[TEXT], r[REJECT]) for r in rows] == [
        (None, None, "line is not valid JSON (Extra data at column 25: '\\\\' after the JSON value; remove it)"),
        ("b", "u\\", None),
        (None, None, "line is not valid JSON (Extra data at column 26: 'x\\\\' after the JSON value; remove it)"),
    ]


@pytest.mark.parametrize(
    "name, write",
    [
        ("p.parquet", lambda p: pq.write_table(pa.table({"Text": ["a"], " ID ": [1], "lang": ["x"]}), p)),
        ("j.jsonl", lambda p: p.write_text('{"Text": "a", " ID ": 1}\n')),
    ],
)
def test_a_column_spelled_another_way_is_named_in_the_error(tmp_path, name, write):
    """A header `Text` (a pandas export, a spreadsheet) or ` ID ` (spaces around it) failed listing the columns
    without saying which one was meant; names are still matched exactly (pyarrow, pandas and DuckDB do). A file
    without such a column has no hint."""
    write(tmp_path / name)
    fmt = "parquet" if name.endswith(".parquet") else "jsonl"
    meant = "'Text' for 'text', ' ID ' for 'id'" if fmt == "parquet" else "'Text' for 'text'"
    with pytest.raises(InputFileError, match=rf"did you mean {meant}\? Names are matched exactly"):
        read_all(spec(tmp_path, fmt, "id"), name)
    pq.write_table(pa.table({"body": ["a"], "id": [1]}), tmp_path / "x.parquet")
    with pytest.raises(InputFileError) as err:
        read_all(spec(tmp_path, "parquet", "id"), "x.parquet")
    assert "did you mean" not in str(err.value)
