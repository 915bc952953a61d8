"""Byte ranges of big JSONL and text files (pipeline.line_ranges): every row read once, with the row number, id,
text and reject reason it has in an unsplit read, wherever the range edges fall."""

from __future__ import annotations

import gzip
import itertools
import json
import random

import pyarrow as pa
import pytest

from pipeline.columns import ID, REJECT, ROW, SOURCE, TEXT
from pipeline.config import StorageConfig
from pipeline.file_formats import InputFileError
from pipeline.line_ranges import MIN_RANGE_BYTES, LineSpan, byte_ranges
from pipeline.reading import ReadSpec, jsonl_line_rows, records_of
from pipeline.storage import list_inputs
from pipeline.units import UNIT_ROWS, plan_units, read_unit, unit_items, units_of

LINE_ENDS = (b"\n", b"\r\n", b"\r")


def tricky_lines(seed: int, count: int = 300) -> bytes:
    """JSONL with what a reader treats specially: a BOM, blank and whitespace lines, invalid JSON, invalid UTF-8,
    an array of records on one line, a later BOM, non-objects, multi-byte UTF-8 everywhere, mixed line ends, no
    final newline."""
    rng = random.Random(seed)
    kinds = [
        b"",
        b"   \t",
        b"{not json",
        b"\xff\xfe not utf-8",
        json.dumps([{"text": "one of two"}, {"text": "two of two"}]).encode(),
        b"\xef\xbb\xbf" + json.dumps({"text": "after a BOM"}).encode(),
        b"[1, 2]",
        b"42",
    ]
    lines = []
    for i in range(count):
        if rng.random() < 0.3:
            lines.append(rng.choice(kinds))
        else:
            text = "é字😀ß" * rng.randint(0, 12) + f" row {i}"
            lines.append(json.dumps({"text": text, "lang": "xx"}, ensure_ascii=False).encode())
    return b"\xef\xbb\xbf" + b"".join(line + rng.choice(LINE_ENDS) for line in lines[:-1]) + lines[-1]


def rows_of(spec: ReadSpec, units) -> list[tuple]:
    got = []
    for unit in units:
        for block in read_unit(spec, unit):
            got += zip(*(block.column(c).to_pylist() for c in (SOURCE, ROW, ID, TEXT, REJECT)))
    return got


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_a_split_file_reads_the_rows_ids_and_rejects_of_the_unsplit_file(tmp_path, fmt):
    """A JSONL or text file over input.unit_bytes was one unit however large, so a crash redid all of it; it is now
    byte ranges that start counting at the rows before them. Range edges at every kind of place (inside a `\\r\\n`,
    a multi-byte character, a blank line, right after a line end): the same rows, ids, texts and rejects."""
    name = f"big.{'jsonl' if fmt == 'jsonl' else 'txt'}"
    (tmp_path / name).write_bytes(tricky_lines(seed=1))
    root, listed = list_inputs(str(tmp_path), StorageConfig())
    spec = ReadSpec(root=root, format=None, text_column="text", id_column=None, keep_columns=())
    whole = plan_units(root, listed, None, unit_bytes=1 << 30)
    assert len(whole) == 1 and whole[0].lines is None
    want = rows_of(spec, whole)
    assert want and any(r[4] for r in want) and any(r[4] is None for r in want)
    for unit_bytes in [*range(MIN_RANGE_BYTES, 400, 7), 1000, 4000]:
        units = plan_units(root, listed, None, unit_bytes)
        assert len(units) == len(byte_ranges(listed[0].size, unit_bytes)) > 1
        assert rows_of(spec, units) == want, unit_bytes
        assert [u.lines.first_row for u in units] == [sum(u.lines.rows for u in units[:k]) for k in range(len(units))]
        assert units_of(pa.Table.from_pylist(unit_items(units))) == units  # through the read stage's input rows
        assert len({u.key for u in units}) == len(units)


def test_each_range_reports_its_own_rows_and_keeps_kept_columns(tmp_path):
    (tmp_path / "big.jsonl").write_bytes(tricky_lines(seed=2))
    root, listed = list_inputs(str(tmp_path), StorageConfig())
    spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column=None, keep_columns=("lang",))
    units = plan_units(root, listed, "jsonl", 2000)
    for unit in units:
        blocks = list(read_unit(spec, unit))
        rows = sum(b.num_rows for b in blocks)
        assert rows == unit.lines.rows and (not blocks or blocks[-1].column(UNIT_ROWS).to_pylist()[-1] == rows)
    kept = [v for u in units for b in read_unit(spec, u) for v in b.column("lang").to_pylist()]
    assert kept.count("xx") > 100


def test_row_count_of_a_jsonl_line_agrees_with_its_records():
    lines = [
        b"",
        b" \t\x0b\x0c",
        b"{}",
        b'{"text": "a"}',
        b"[]",
        b"[{}]",
        b' [{"a": 1}, {"b": 2}, {}]',
        b'\xef\xbb\xbf[{"a": 1}, {"b": 2}]',
        b'\xef\xbb\xbf\xef\xbb\xbf[{"a": 1}]',
        b'[{"a": 1}, 2]',
        b"[1, 2, 3]",
        b"[",
        b"\xff[",
        b"[\xff]",
        b"  x [",
        b"\r",
        b'"[{}]"',
    ]
    for line in lines:
        assert jsonl_line_rows(line) == len(records_of(line, "text")), line


def test_compressed_utf16_and_small_files_stay_one_unit(tmp_path):
    body = tricky_lines(seed=3)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "b.jsonl").write_bytes(body.decode("utf-8", "replace").replace("\r", "").encode("utf-16"))
    (tmp_path / "c.jsonl").write_bytes(body[:500])
    (tmp_path / "d.jsonl").write_bytes(body)
    root, listed = list_inputs(str(tmp_path), StorageConfig())
    units = plan_units(root, listed, None, unit_bytes=1000, packed=False)
    assert [(u.path, u.lines is None) for u in units if u.path != "d.jsonl"] == [
        ("a.jsonl.gz", True),
        ("b.jsonl", True),
        ("c.jsonl", True),
    ]
    assert len([u for u in units if u.path == "d.jsonl"]) > 1
    assert all(u.lines is None for u in plan_units(root, listed, None, 1000, split_lines=False))


def test_byte_ranges_cover_the_file_in_ranges_of_at_most_unit_bytes():
    for size, unit_bytes in ((10_000, 1000), (10_001, 1000), (999, 1000), (1000, 1000), (1001, 1000), (100, 1)):
        ranges = byte_ranges(size, unit_bytes)
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert all(MIN_RANGE_BYTES <= end - start <= max(unit_bytes, MIN_RANGE_BYTES) for start, end in ranges) or (
            len(ranges) == 1
        )
    assert len(byte_ranges(1000, 1000)) == 1 and len(byte_ranges(1001, 1000)) == 2


def test_a_range_whose_rows_changed_since_they_were_counted_is_refused(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"".join(json.dumps({"text": f"row {i}"}).encode() + b"\n" for i in range(200)))
    root, listed = list_inputs(str(tmp_path), StorageConfig())
    units = plan_units(root, listed, "jsonl", 1000)
    spec = ReadSpec(root=root, format="jsonl", text_column="text", id_column=None, keep_columns=())
    data = path.read_bytes()
    changed = data.replace(b'{"text": "row 50"}', b'{"text":\n"row 50"}')  # one row two, in the same size
    assert len(changed) == len(data) and changed != data
    path.write_bytes(changed)
    with pytest.raises(InputFileError, match=r"big\.jsonl: bytes \d+-\d+ hold \d+ rows where this run counted"):
        for unit in units:
            list(read_unit(spec, unit))
    assert LineSpan(0, 10).rows == -1
