"""Stream rows out of Parquet, JSONL and plain-text files, turning bad rows into rejects with reasons.

Every row read leaves this module either as a good row (`_reject` null) or as a reject with its reason, so the
job can prove rows in = rows written + rows rejected. Columns: id, _text, _reject, _source, _row, kept columns.
A file that cannot be read at all raises InputFileError naming it (and the row where known), whatever went wrong,
except a transient storage failure (throttling, 5xx, a dropped connection), which raises TransientStorageError naming
it: the caller retries that one (pipeline.transient_errors).
"""

from __future__ import annotations

import json
import posixpath
import re
import sys
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.column_paths import (
    MapKey,
    Missing,
    arrow_field,
    arrow_null_parents,
    arrow_path,
    arrow_values,
    is_list,
    json_value,
    merge_misses,
    plain,
    position_hint,
    projection,
    shown,
    spelling_hint,
)
from pipeline.columns import REJECT, ROW, SOURCE, TEXT
from pipeline.file_formats import (
    PARQUET_HEAD,
    UTF8_BOM,
    CorruptFileError,
    InputFileError,
    check_parquet_head,
    checked_layout,
    file_format,
    lines,
    open_input,
    utf8_chunks,
)
from pipeline.kept_columns import MIXED, NO_RECORDS, KeptType, conform, infer_values, normalize, unify
from pipeline.line_ranges import LineSpan, span_lines
from pipeline.read_content import DecompressedDigest, ListedPrefix
from pipeline.repeated_keys import ReadKeys, first_repeated, key_names, may_repeat, repeated_hook, repeated_reason
from pipeline.row_ids import escaped, row_id
from pipeline.storage import Location
from pipeline.text_content import invalid_utf8_reason, lone_surrogate, nesting_depth, text_reject_reason
from pipeline.transient_errors import TransientStorageError, is_transient

# A file's opener (read_file): returns it as file_formats.open_input opens it; None: open it where it is read.
Opener = Callable[[], pa.NativeFile] | None
CHUNK_ROWS = 8192  # rows parsed per step; Ray Data re-blocks what the read stage yields
# Parquet column chunks are read through a buffer of this size, page by page, and not pre-buffered: pyarrow's
# default (pre_buffer) fetched every selected row group's chunks before the first batch, so a read task held the
# whole file (up to input.unit_bytes, or a single huge row group) in memory. 8 MiB keeps S3 ranged GETs large.
PARQUET_READ_BUFFER = 8 << 20
# A kept JSON value nested deeper than this is a reject: json.dumps and Arrow recurse per level, and Python's stack
# ends near 1000 (such a value then failed its whole file). Real metadata is a few levels deep.
MAX_KEPT_NESTING = 200

# names kept importable from here
__all__ = ["REJECT", "ROW", "SOURCE", "TEXT", "InputFileError", "ReadSpec", "read_file", "text_reject_reason"]


@dataclass(frozen=True)
class ReadSpec:
    """What to read. `format` None: each file's format is inferred from its extension.

    `kept_types`: the job-wide type of each kept column (pipeline.kept_columns.decide); a column without one keeps
    the type Arrow infers per block.
    """

    root: Location
    format: str | None
    text_column: str
    id_column: str | None
    keep_columns: tuple[str, ...]
    kept_types: dict[str, KeptType] = field(default_factory=dict, hash=False, compare=False)


# Hive's (and Spark's) directory for a null partition value.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def hive_partitions(rel: str) -> dict[str, str | None]:
    """`{key: value}` from the `key=value` directories of a path below the input root, as Hive, Spark and Ray Data
    (`read_parquet`'s default partitioning) lay out partitioned data: `lang=fr/year=2021/part-0.parquet` gives
    `{"lang": "fr", "year": "2021"}`. Values are strings, %XX escapes decoded; HIVE_NULL is None. A kept column a
    file lacks takes its partition value (the file's own column wins)."""
    parts: dict[str, str | None] = {}
    for segment in rel.split("/")[:-1]:
        key, sep, value = segment.partition("=")
        if sep and key:
            value = urllib.parse.unquote(value)
            parts[urllib.parse.unquote(key)] = None if value == HIVE_NULL else value
    return parts


def partition_column(parts: dict[str, str | None], name: str, n: int) -> pa.Array:
    """Kept column `name` for `n` rows of a file that lacks it: its partition value, else null."""
    return pa.array([parts[name]] * n, pa.string()) if name in parts else pa.nulls(n)


@dataclass
class Cursor:
    """Where a reader is in its file, so that an unexpected error can name the row."""

    row: int | None = None


def make_block(
    spec: ReadSpec,
    rel: str,
    first_row: int,
    texts: list,
    ids: list | None,
    keep: dict[str, list | pa.Array],
    reasons: list[str | None] | None = None,
) -> pa.Table:
    """Validate one chunk of rows and lay it out in the stage's columns.

    `ids` None: the file has no ids (plain text), rows get `<file>#<row>`. `reasons`: rows already known bad
    (parse errors), which keep their reason. An id that is a Missing (a nested id_column whose struct is null or
    lacks the field on this row) is a missing id saying why.
    """
    n = len(texts)
    reasons = [(known or text_reject_reason(t)) for t, known in zip(texts, reasons or [None] * n)]
    rows = list(range(first_row, first_row + n))
    if spec.id_column is None or ids is None:
        ids = [f"{rel}#{r}" for r in rows]
    else:
        ids = list(ids)
        for k, value in enumerate(ids):
            if isinstance(value, Missing):
                ids[k], bad = None, f"missing id ({value.reason(spec.id_column)})"
            else:
                ids[k], bad = row_id(value, spec.id_column)
            reasons[k] = reasons[k] or bad
    columns = {
        "id": pa.array(ids, pa.string()),
        TEXT: None,
        REJECT: None,
        SOURCE: pa.array([rel] * n, pa.string()),
        ROW: pa.array(rows, pa.int64()),
    }
    for name in spec.keep_columns:
        values = keep[name]
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            values, bad_rows = without_invalid_utf8(values)
            for k in bad_rows:
                reasons[k] = reasons[k] or f"invalid UTF-8 in kept column {name!r}"
        else:
            values = list(values)
            for k, v in enumerate(values):
                if (bad := kept_value_problem(v, name)) is not None:
                    reasons[k] = reasons[k] or bad
                    values[k] = None
        kept = spec.kept_types.get(name)
        columns[name] = conform(values, kept, f"{rel} column {name!r}") if kept else as_arrow(values)
    clean = [t.decode("utf-8") if isinstance(t, bytes) and r is None else t for t, r in zip(texts, reasons)]
    columns[TEXT] = pa.array([t if r is None else None for t, r in zip(clean, reasons)], pa.string())
    columns[REJECT] = pa.array(reasons, pa.string())
    return pa.table(columns)


def kept_value_problem(value: Any, name: str) -> str | None:
    """Why a JSON value cannot go into kept column `name` (the row's reject reason), or None when it can."""
    if nesting_depth(value, MAX_KEPT_NESTING) > MAX_KEPT_NESTING:
        return f"kept column {name!r} is nested more than {MAX_KEPT_NESTING} levels deep"
    if (bad := lone_surrogate(value)) is not None:
        return f"invalid Unicode in kept column {name!r}: {bad}"
    return None


def as_arrow(values: list | pa.Array) -> pa.Array:
    """Arrow's own type for a block's values (dictionaries decoded), JSON text when they do not fit one type."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.cast(normalize(values.type)) if pa.types.is_dictionary(values.type) else values
    if infer_values(values) is None:
        return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values], pa.string())
    return pa.array(values)


def without_invalid_utf8(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array | pa.ChunkedArray, list[int]]:
    """A Parquet column with the rows whose strings (at any depth) are not valid UTF-8 set to null, and those rows.

    Parquet files from lax writers hold such strings; passed through, they made output files whose readers fail
    (`to_pylist`, pandas: UnicodeDecodeError). The whole column is checked at once; rows only when that fails.
    """
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    try:
        values.validate(full=True)
        return values, []
    except pa.ArrowInvalid:
        pass
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    bad = []
    for k in range(len(array)):
        try:
            array.take([k]).validate(full=True)  # take copies the row alone: a slice would check every child
        except pa.ArrowInvalid:
            bad.append(k)
    marked = set(bad)
    mask = pa.array([k in marked for k in range(len(array))])
    return pc.if_else(mask, pa.scalar(None, array.type), array), bad


def id_values(column: pa.ChunkedArray | pa.Array) -> list:
    """Python values of a Parquet id column for row_id. Fixed-size binary holds binary keys, not text: as hex, and
    16 bytes in UUID form, so a UUID is one id whether a file types it as UUID or as the bare 16 bytes (it was a
    reject "invalid UTF-8 in id" on nearly every row). Other strings as bytes: row_id decodes them."""
    if pa.types.is_fixed_size_binary(column.type):
        return [None if v is None else str(uuid.UUID(bytes=v)) if len(v) == 16 else v.hex() for v in column.to_pylist()]
    return plain_values(column)


def plain_values(column: pa.ChunkedArray | pa.Array) -> list:
    """Python values of a Parquet column; strings as bytes, so invalid UTF-8 becomes a reject, not a crash."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.binary() if pa.types.is_string(column.type) else pa.large_binary())
    return column.to_pylist()


def read_parquet(
    spec: ReadSpec, rel: str, path: str, at: Cursor, row_groups: tuple[int, int] | None = None, opener: Opener = None
) -> Iterator[pa.Table]:
    """Rows of the whole file, or of row groups [start, end) with row numbers counted from the file's first row.

    A configured column may be a dotted path into struct columns (pipeline.column_paths): only the struct fields
    named are read, and a row whose struct is null on the way is a reject saying which one.
    """
    wanted = [spec.text_column, *([spec.id_column] if spec.id_column else []), *spec.keep_columns]
    with opener() if opener else open_input(spec.root.fs, path) as f:
        if f.size() == 0:
            return  # a writer that crashed before its first byte: no rows, nothing lost (as an empty JSONL file)
        check_parquet_head(f.read(PARQUET_HEAD), posixpath.join(spec.root.uri, rel))
        f.seek(0)
        reader = pq.ParquetFile(f, buffer_size=PARQUET_READ_BUFFER, pre_buffer=False)
        if reader.metadata.num_rows == 0:
            # no rows, nothing lost, whatever its columns: pandas' `DataFrame().to_parquet` has none, an empty Spark
            # partition or filter result may lack the text column; such a file failed the job "column(s) not found"
            return
        schema = reader.schema_arrow
        # a kept column with a job-wide type is in some file (kept_columns.decide): here it may be missing (null);
        # one the file's directories name (lang=fr/) takes their value, also in a read without job-wide types (the
        # mining job's sides, whose lang_column a Spark partitionBy('lang') corpus holds only in its paths)
        parts = hive_partitions(rel)
        by_path = {c for c in spec.keep_columns if c in parts} - {spec.text_column, spec.id_column}
        paths = {c: arrow_path(schema, c) for c in dict.fromkeys(wanted)}
        required = [c for c in wanted if c not in spec.kept_types and c not in by_path]
        missing = [c for c in dict.fromkeys(required) if isinstance(paths[c], Missing)]
        if missing:
            inside = [paths[c].describe(c) for c in missing if paths[c].at]  # stopped inside a struct column
            raise InputFileError(
                f"{rel}: column(s) {missing} not found; the file has columns {schema.names}"
                + "".join(f"; {d}" for d in inside)
                + position_hint(missing)
                + spelling_hint(missing, schema.names)
                + " (set input.text_column / input.id_column / output.keep_columns)"
            )
        found = {c: p for c, p in paths.items() if not isinstance(p, Missing)}
        check_unique_columns(schema, found, rel)
        start, end = row_groups or (0, reader.num_row_groups)
        row = sum(reader.metadata.row_group(i).num_rows for i in range(start))
        columns = projection(list(found.values()))
        at.row = row
        for batch in reader.iter_batches(batch_size=CHUNK_ROWS, row_groups=range(start, end), columns=columns):
            at.row = row
            # non-strings stay as they are: the reason names them
            texts = plain_values(arrow_values(batch, found[spec.text_column]))
            reasons = [
                None if miss is None else f"no text at {spec.text_column!r}: {miss.reason(spec.text_column)}"
                for miss in arrow_null_parents(batch, found[spec.text_column])
            ]
            ids = []
            if spec.id_column:
                ids = id_values(arrow_values(batch, found[spec.id_column]))
                nulls = arrow_null_parents(batch, found[spec.id_column])
                ids = [v if miss is None else miss for v, miss in zip(ids, nulls)]
            # a kept column this file lacks (added to the corpus later) is null here, as a JSONL key a record lacks,
            # unless the file's directory names its value (hive_partitions)
            n = batch.num_rows
            keep = {
                c: arrow_values(batch, found[c]) if c in found else partition_column(parts, c, n)
                for c in spec.keep_columns
            }
            for c in spec.keep_columns:  # a map on the way giving the key twice: which value cannot be told
                if c in found and any(isinstance(step, MapKey) for step in found[c]):
                    for k, miss in enumerate(arrow_null_parents(batch, found[c])):
                        if miss is not None and miss.repeats is not None and reasons[k] is None:
                            reasons[k] = f"kept column {c!r}: {miss.reason(c)}"
            yield make_block(spec, rel, row, texts, ids, keep, reasons)
            row += batch.num_rows


def check_unique_columns(schema: pa.Schema, found: dict[str, tuple[str, ...]], rel: str) -> None:
    """Fail when a configured column's name, or a struct field's on its path, appears more than once at its level.

    Parquet allows it (a pandas frame after `concat(axis=1)` or a join, Spark's `select(a, a)`); which copy holds the
    text cannot be told, and the read failed with a bare `KeyError: 'Field "text" exists 2 times in schema'`.

    Raises:
        InputFileError: names the file, the column, how many copies and what to do.
    """
    for name, path in found.items():
        level: Any = schema
        t = None
        for depth, part in enumerate(path):
            if isinstance(part, int):  # a list position: its items' struct fields are the next level
                continue
            if isinstance(part, MapKey):  # a map's key: a repeat is a per-row reject (arrow_null_parents)
                t = plain(t.item_type)
                while is_list(t):
                    t = plain(t.value_type)
                level = list(t) if pa.types.is_struct(t) else []
                continue
            same = [f for f in level if f.name == part]
            if len(same) > 1:
                where = shown(path[: depth + 1])
                raise InputFileError(
                    f"{rel}: the column {where!r} (for {name!r}) appears {len(same)} times in the file's schema, so "
                    "which one to read cannot be told; write the file again with one column of that name (pandas: "
                    "df.loc[:, ~df.columns.duplicated()]), or move it out of the input"
                )
            t = plain(same[0].type)
            while is_list(t):
                t = plain(t.value_type)
            level = list(t) if pa.types.is_struct(t) else []


def read_lines(
    spec: ReadSpec,
    rel: str,
    path: str,
    fmt: str,
    span: LineSpan | None = None,
    opener: Opener = None,
    plain: DecompressedDigest | None = None,
) -> Iterator[bytes]:
    """The file's lines (pipeline.file_formats.lines), or those that start in bytes `span` of an uncompressed UTF-8
    file (pipeline.line_ranges); the first line's layout is checked in the whole file and in a file's first range.
    `opener`: the whole file's (read_file). `plain`: read_file's."""
    uri = posixpath.join(spec.root.uri, rel)
    if span is None:
        opened = opener() if opener else None
        yield from checked_layout(lines(utf8_chunks(spec.root.fs, path, fmt, uri, opened, plain)), fmt, uri)
        return
    with open_input(spec.root.fs, path) as f:
        stream = span_lines(f, span.start, span.end)
        yield from checked_layout(stream, fmt, uri) if span.start == 0 else stream


def jsonl_line_rows(line: bytes) -> int:
    """The rows of one JSONL line: len(records_of(line, ...)), without parsing a line that cannot be an array.

    A blank line (ASCII whitespace only) is no row and any other line one, except a JSON array of objects, one row
    per object, and JSON values written one after another (concatenated_records); json.loads returns a list only for
    a text whose first character after JSON whitespace is `[` (parse_record drops one leading BOM first), and
    parse_record splits a line only where an object or array ends and another starts (AFTER_OBJECT, AFTER_ARRAY), so only such
    lines are parsed, by records_of itself.
    """
    if not line.strip():
        return 0
    if (
        not line.removeprefix(UTF8_BOM).lstrip(b" \t\n\r").startswith(b"[")
        and AFTER_OBJECT.search(line) is None
        and AFTER_ARRAY.search(line) is None
    ):
        return 1
    return len(records_of(line, "text"))


def count_span_rows(root: Location, rel: str, fmt: str, start: int, end: int) -> int:
    """Rows in bytes [start, end) of a JSONL or text file, counted as read_jsonl and read_text count them.

    Raises:
        InputFileError / TransientStorageError: as read_file.
    """
    at = Cursor()
    spec = ReadSpec(root, fmt, "text", None, ())
    with naming_errors(posixpath.join(root.uri, rel), fmt, at):
        span = read_lines(spec, rel, posixpath.join(root.path, rel), fmt, LineSpan(start, end))
        return sum(map(jsonl_line_rows, span)) if fmt == "jsonl" else sum(1 for _ in span)


def check_span_rows(rel: str, span: LineSpan | None, rows: int) -> None:
    """Raise when a range of a file held another number of rows than the run counted when it planned its units."""
    if span is not None and rows != span.rows:
        raise InputFileError(
            f"{rel}: bytes {span.start}-{span.end} hold {rows} rows where this run counted {span.rows} when it "
            "planned its units; the file was changed in place during the run (keeping its size and modification "
            "time). Rerun with output.overwrite=true"
        )


class _Invalid(str):
    """A row that could not be parsed; its string is the reject reason."""


def parse_record(line: bytes, text_column: str, keys: ReadKeys | None = None) -> dict | list[dict] | None:
    """One JSONL line -> its record, or {text_column: _Invalid(reason)}; None for a blank line (layout, not a row);
    a list of records for a line that is a non-empty JSON array of objects.

    `keys`: JSON keys the job reads (repeated_keys.key_names); a record giving one of them twice is a reject."""
    try:
        # a BOM starting a later line: files with BOMs concatenated (`cat a.jsonl b.jsonl`); json.loads refuses it
        decoded = line.decode("utf-8").removeprefix("\ufeff")
        record: Any = json.loads(decoded)
        hook = repeated_hook(keys.names) if keys is not None and may_repeat(line, record, text_column) else None
        if hook is not None:  # some object gives a key twice: parsed again to see which (repeated_keys)
            record = json.loads(decoded, object_pairs_hook=hook)
    except UnicodeDecodeError as err:
        return {text_column: _Invalid(invalid_utf8_reason(line, err))}
    except json.JSONDecodeError as err:
        if not line.strip():
            return None
        if err.msg == "Extra data" and not err.doc[err.pos :].startswith(("{", "[")):
            # `{...}\` (a shell's or C string's line continuation left in), `{...} x`: not a second record
            return {
                text_column: _Invalid(
                    f"line is not valid JSON (Extra data at column {err.colno}: {err.doc[err.pos :][:20]!r} after the "
                    "JSON value; remove it)"
                )
            }
        if err.msg == "Extra data" and err.doc[: err.pos].rstrip(" \t\r\n").endswith(("}", "]")):
            # `{...}{...}`: records written without a line break between (AFTER_OBJECT or AFTER_ARRAY matches such a line)
            return concatenated_records(decoded, text_column, keys)
        if err.msg == "Extra data":  # `5 {...}`, `"a" [...]`
            return {
                text_column: _Invalid(
                    f"line is not valid JSON (Extra data at column {err.colno}: more than one JSON value on the line)"
                )
            }
        return {text_column: _Invalid(f"line is not valid JSON ({err.msg} at column {err.colno})")}
    except RecursionError:  # valid JSON nested deeper than Python's parser goes: that row only, not the file
        return {text_column: _Invalid(f"JSON nested too deeply to parse (over {sys.getrecursionlimit()} levels)")}
    except ValueError as err:  # valid JSON Python refuses, e.g. an integer of more than 4300 digits
        return {text_column: _Invalid(f"JSON value cannot be read: {str(err).split(';')[0]}")}
    return value_records(record, text_column, keys if hook else None)


def value_records(value: Any, text_column: str, keys: ReadKeys | None) -> dict | list[dict]:
    """The record(s) of one parsed JSON value: an object, or each object of a non-empty array of objects (pandas
    to_json(orient="records") writes one line `[{...}, {...}]`); any other value is a reject naming its type.
    `keys`: given when the value was parsed with repeated_hook, so a record giving a read key twice is a reject."""
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return [without_repeats(r, text_column, keys.paths) for r in value] if keys is not None else value
    if not isinstance(value, dict):
        return {text_column: _Invalid(f"JSON value is {json_type(value)}, not an object")}
    return without_repeats(value, text_column, keys.paths) if keys is not None else value


# The start of a JSON object or array right after the end of one, JSON whitespace between (a line holds no \r or
# \n): a line that may hold records written without a line break between them (`{...}{...}`), which
# jsonl_line_rows parses to count. Two patterns, each led by a literal byte, which re finds faster than a pattern led
# by the class [}\]] (measured in the commit that added them).
AFTER_OBJECT, AFTER_ARRAY = re.compile(rb"}[ \t]*[{\[]"), re.compile(rb"][ \t]*[{\[]")
_DECODER = json.JSONDecoder()


def concatenated_records(decoded: str, text_column: str, keys: ReadKeys | None) -> list[dict]:
    """The records of a line holding several JSON values one after another (`{...}{...}`, `{...} {...}`: records
    written without a line break between them, or a whole file of them on one line), each value as value_records
    makes it, as pyarrow's JSON reader (Ray Data's read_json, Hugging Face datasets' json loader) and jq read them.
    A value that does not parse ends the line: it and the rest are one reject naming the column where it failed.

    It was one reject for the whole line, so a file of thousands of records written so counted one row in."""
    decoder = json.JSONDecoder(object_pairs_hook=repeated_hook(keys.names)) if keys is not None else _DECODER
    records: list[dict] = []
    pos, end = 0, len(decoded)
    while True:
        while pos < end and decoded[pos] in " \t\r\n":
            pos += 1
        if pos == end:
            return records
        try:
            value, pos = decoder.raw_decode(decoded, pos)
        except json.JSONDecodeError as err:
            reason = f"line is not valid JSON ({err.msg} at column {err.colno}"
            if records:
                reason += f", after {len(records)} records written without a line break between them"
            return [*records, {text_column: _Invalid(reason + ")")}]
        except RecursionError:
            return [*records, {text_column: _Invalid("JSON nested too deeply to parse")}]
        except ValueError as err:
            return [*records, {text_column: _Invalid(f"JSON value cannot be read: {str(err).split(';')[0]}")}]
        found = value_records(value, text_column, keys)
        records.extend(found if isinstance(found, list) else [found])


def without_repeats(record: dict, text_column: str, paths: tuple[str, ...]) -> dict:
    """The record, or a reject naming the first key on the way to a read path (`paths`) that the record (or an
    object on that way) gives twice; a repeated key elsewhere does not reject it (repeated_keys.first_repeated)."""
    key = first_repeated(record, paths)
    return record if key is None else {text_column: _Invalid(repeated_reason(key))}


def json_type(value: Any) -> str:
    """A parsed JSON value's type: Python's name (list, int, str, bool), `null` for null (it read `NoneType`)."""
    return "null" if value is None else type(value).__name__


def records_of(line: bytes, text_column: str, keys: ReadKeys | None = None) -> list[dict]:
    """The records of one JSONL line (parse_record): none for a blank line, several for an array of objects."""
    record = parse_record(line, text_column, keys)
    return [] if record is None else record if isinstance(record, list) else [record]


def read_jsonl(
    spec: ReadSpec,
    rel: str,
    path: str,
    at: Cursor,
    span: LineSpan | None = None,
    opener: Opener = None,
    plain: DecompressedDigest | None = None,
) -> Iterator[pa.Table]:
    """Rows of a JSON Lines file, or of a range of it (`span`, pipeline.line_ranges) with row numbers from its first
    row's. A configured key may be a dotted path into objects (pipeline.column_paths); a record whose object on the
    way is null or lacks the field is a reject (text) or a missing id saying why.

    The checks that no record has the text or id key look at a split file's first range only (its other ranges
    cannot know of each other's records)."""
    texts, ids, keep = [], [], {c: [] for c in spec.keep_columns}
    first = row = span.first_row if span else 0
    seen_key, keys = False, set()
    parsed, seen_id = False, spec.id_column is None  # no parsed record with the id key: a config error, not rejects
    misses: dict[str, Missing | None] = {spec.text_column: None, spec.id_column: None}  # the deepest, for errors
    parts = hive_partitions(rel)
    names = read_keys(spec)
    wrapper: str | None = None  # a key whose list holds the records (`{"data": [{"text": ...}, ...]}`)
    for line in read_lines(spec, rel, path, "jsonl", span, opener, plain):
        at.row = row + len(texts)
        for record in records_of(line, spec.text_column, names):
            keys.update(record)
            text = json_value(record, spec.text_column)
            if isinstance(text, Missing):
                misses[spec.text_column] = merge_misses(misses[spec.text_column], text)
                wrapper = wrapper or wrapping_key(record, spec.text_column)
                text = _Invalid(
                    f"no {spec.text_column!r} key"
                    if not text.at
                    else f"no text at {spec.text_column!r}: {text.reason(spec.text_column)}"
                )
            else:
                seen_key = True
            texts.append(text)
            value = json_value(record, spec.id_column) if spec.id_column else None
            if not isinstance(record.get(spec.text_column), _Invalid):  # not a line that failed to parse
                parsed = True
                if isinstance(value, Missing):
                    misses[spec.id_column] = merge_misses(misses[spec.id_column], value)
                else:
                    seen_id = True
            ids.append(None if isinstance(value, Missing) and not value.at else value)  # top level: "missing id"
            for c in spec.keep_columns:
                value = json_value(record, c)
                keep[c].append(parts.get(c) if isinstance(value, Missing) else value)
            if len(texts) == CHUNK_ROWS:
                yield invalid_aware_block(spec, rel, row, texts, ids, keep)
                row += len(texts)
                texts, ids, keep = [], [], {c: [] for c in spec.keep_columns}
    if texts:
        yield invalid_aware_block(spec, rel, row, texts, ids, keep)
    at.row = None
    check_span_rows(rel, span, row + len(texts) - first)
    if span is not None and span.start:
        return
    if row + len(texts) and not seen_key:
        raise InputFileError(
            no_key_message(rel, spec.text_column, keys, misses[spec.text_column], "input.text_column")
            + wrapped_hint(wrapper, spec.text_column)
        )
    if parsed and not seen_id:
        raise InputFileError(no_key_message(rel, spec.id_column, keys, misses[spec.id_column], "input.id_column"))


def read_keys(spec: ReadSpec) -> ReadKeys:
    """The JSON keys a read of `spec` takes values from (repeated_keys.key_names)."""
    return key_names([spec.text_column, *([spec.id_column] if spec.id_column else []), *spec.keep_columns])


def no_key_message(rel: str, name: str, keys: set, miss: Missing | None, setting: str) -> str:
    """A JSONL file where no record has `name`: the keys found, and for a dotted path the level where it stopped."""
    inside = f"; {miss.describe(name)}" if miss is not None and miss.at else ""
    return (
        f"{rel}: no record has the key {name!r}; keys found: {sorted(escaped(k) for k in keys - {name})}"
        f"{inside}{position_hint([name])}{spelling_hint([name], keys)} (set {setting})"
    )


def wrapping_key(record: dict, name: str) -> str | None:
    """A top-level key of `record` whose value is a list of objects with the key `name` (a JSON document wrapping its
    records: `{"data": [{"text": ...}, ...]}`, as SQuAD-style and API dumps are), or None."""
    return next(
        (
            k
            for k, v in record.items()
            if isinstance(v, list) and v and isinstance(v[0], dict) and not isinstance(json_value(v[0], name), Missing)
        ),
        None,
    )


def wrapped_hint(key: str | None, name: str) -> str:
    """What to do about records held in a list under `key` (wrapping_key); "" for None."""
    if key is None:
        return ""
    jq = f".{key}[]" if key.isidentifier() else f".[{json.dumps(key)}][]"
    return (
        f". The list under {escaped(key)!r} holds records with {name!r}: a JSON document wrapping its records? Write "
        f"them one per line: jq -c '{jq}' FILE > FILE.jsonl"
    )


def invalid_aware_block(spec: ReadSpec, rel: str, row: int, texts: list, ids: list, keep: dict) -> pa.Table:
    reasons = [str(t) if isinstance(t, _Invalid) else None for t in texts]
    return make_block(spec, rel, row, [None if r else t for t, r in zip(texts, reasons)], ids, keep, reasons)


def read_text(
    spec: ReadSpec,
    rel: str,
    path: str,
    at: Cursor,
    span: LineSpan | None = None,
    opener: Opener = None,
    plain: DecompressedDigest | None = None,
) -> Iterator[pa.Table]:
    """Rows of the whole file (one per line, blank ones included), or of a range of it (read_jsonl)."""
    texts = []
    first = row = span.first_row if span else 0
    for line in read_lines(spec, rel, path, "text", span, opener, plain):
        at.row = row + len(texts)
        texts.append(line)
        if len(texts) == CHUNK_ROWS:
            yield make_block(spec, rel, row, texts, None, no_columns(spec, rel, len(texts)))
            row, texts = row + len(texts), []
    if texts:
        yield make_block(spec, rel, row, texts, None, no_columns(spec, rel, len(texts)))
    check_span_rows(rel, span, row + len(texts) - first)


def no_columns(spec: ReadSpec, rel: str, n: int) -> dict[str, list]:
    """Kept columns of a plain-text file (a corpus mixing text and JSONL files): it has none, so they are null, or
    the partition values of its directory (hive_partitions)."""
    parts = hive_partitions(rel)
    return {c: [parts.get(c)] * n for c in spec.keep_columns}


# What to do about a file whose bytes do not parse (a Parquet footer cut off or garbled, a gzip stream cut short).
CORRUPT_HINT = (
    ". The file is cut short or corrupt (an interrupted copy or upload?): copy it again from its source, or move it "
    "out of the input, and run again"
)

READERS = {"parquet": read_parquet, "jsonl": read_jsonl, "text": read_text}


@contextmanager
def naming_errors(uri: str, fmt: str, at: Cursor) -> Iterator[None]:
    """Re-raise any unexpected error naming the file, its format and the row where known: as TransientStorageError
    when a later attempt may succeed (pipeline.transient_errors.is_transient), else as InputFileError."""
    try:
        yield
    except (InputFileError, TransientStorageError):
        raise
    except Exception as err:  # re-raised with the file's name: a bare error would not say which one
        where = f" (row {at.row})" if at.row is not None else ""
        if is_transient(err):
            raise TransientStorageError(f"cannot read {uri} as {fmt}: {type(err).__name__}: {err}{where}") from err
        what = str(err).strip()
        if is_corrupt(err):
            what = what.rstrip(".") + where + CORRUPT_HINT
            raise CorruptFileError(f"cannot read {uri} as {fmt}: {type(err).__name__}: {what}", at.row) from err
        raise InputFileError(
            f"cannot read {uri} as {fmt}: {type(err).__name__}: {what}{where}{gone_hint(err)}"
        ) from err


def gone_hint(err: Exception) -> str:
    """What to do about a listed file that cannot be opened: deleted or renamed after the listing, or not readable
    by the job's user ("" for any other error)."""
    if isinstance(err, FileNotFoundError):
        return (
            ". The file was listed when the run started and is gone now (deleted, renamed or replaced while the job "
            "ran?): run again once the input has stopped changing"
        )
    if isinstance(err, PermissionError):
        return ". Give the job's user read access to the file, or move it out of the input, and run again"
    return ""


def is_corrupt(err: Exception) -> bool:
    """Whether a reader's error means the file's bytes do not parse: pyarrow raises ArrowInvalid for a cut or
    garbled Parquet footer, a plain OSError for garbled Parquet metadata and cut gzip/zstd streams. Not a file that
    vanished or is not readable (FileNotFoundError, PermissionError), nor an S3 error (a plain OSError too, its
    message `AWS Error ...`: access denied is the bucket's policy, not the file's bytes)."""
    if isinstance(err, (pa.ArrowInvalid, EOFError)):
        return True
    return type(err) is OSError and err.errno is None and "AWS Error" not in str(err)


def read_file(
    spec: ReadSpec,
    rel: str,
    row_groups: tuple[int, int] | None = None,
    span: LineSpan | None = None,
    opener: Opener = None,
    prefix: ListedPrefix | None = None,
    plain: DecompressedDigest | None = None,
) -> Iterator[pa.Table]:
    """Blocks of at most CHUNK_ROWS rows from one file (of a Parquet file's row groups [start, end), or of the lines
    that start in a byte range of a JSONL or text file (pipeline.line_ranges), when given).

    `opener`: returns the whole file as file_formats.open_input opens it, fetched ahead (pipeline.fetching); its
    errors are this file's. None: the file is opened here. `prefix`: a whole JSONL or text file is read up to its
    listed size only, its bytes hashed as they are read (pipeline.read_content.listed_prefix). `plain`: a compressed
    JSONL or text file read whole feeds its decompressed bytes to it (pipeline.read_content.DecompressedDigest).

    Raises:
        InputFileError: the file cannot be read; the message names it, the format and the row where known,
            whatever the underlying error was.
        TransientStorageError: the same message, when the storage failed in a way a later attempt may not
            (throttling, 5xx, a dropped connection); the caller retries the whole file.
    """
    fmt = file_format(spec.format, rel)
    at = Cursor()
    with naming_errors(posixpath.join(spec.root.uri, rel), fmt, at):
        path = posixpath.join(spec.root.path, rel)
        if prefix is not None and row_groups is None and span is None:
            opener = prefix.opener(opener or (lambda: spec.root.fs.open_input_file(path)))
        if row_groups is not None:
            yield from read_parquet(spec, rel, path, at, row_groups, opener)
        elif span is not None:
            yield from READERS[fmt](spec, rel, path, at, span)
        elif plain is not None and fmt != "parquet":
            yield from READERS[fmt](spec, rel, path, at, opener=opener, plain=plain)
        else:
            yield from READERS[fmt](spec, rel, path, at, opener=opener)


def observed_kept_types(spec: ReadSpec, rel: str) -> tuple[str, dict[str, pa.DataType | None]]:
    """(format, {kept column: the type its values have in this file, or MIXED}) for kept_columns.decide; a column
    the file does not have (no Parquet column, no JSONL record with the key) is left out. The format is
    kept_columns.NO_RECORDS for a file without a record (JSONL) or a schema (a zero-byte Parquet file).

    Parquet: the footer's schema only. JSONL: one pass over the values of the kept columns.
    """
    fmt = file_format(spec.format, rel)
    at = Cursor()
    parts = hive_partitions(rel)
    from_path = {c: pa.string() for c in spec.keep_columns if c in parts}  # where the file lacks the column
    if not spec.keep_columns or fmt == "text":
        return fmt, from_path
    with naming_errors(posixpath.join(spec.root.uri, rel), fmt, at):
        path = posixpath.join(spec.root.path, rel)
        if fmt == "parquet":
            with spec.root.fs.open_input_file(path) as f:
                if f.size() == 0:  # no schema: its rows (none) take any type, and it has no say in which columns exist
                    return NO_RECORDS, from_path
                check_parquet_head(f.read(PARQUET_HEAD), posixpath.join(spec.root.uri, rel))
                f.seek(0)
                schema = pq.read_schema(f)
            found = {c: arrow_path(schema, c) for c in spec.keep_columns}
            found = {c: p for c, p in found.items() if not isinstance(p, Missing)}
            check_unique_columns(schema, found, rel)
            return fmt, from_path | {c: normalize(arrow_field(schema, p).type) for c, p in found.items()}
        types: dict[str, pa.DataType | None] = {c: pa.null() for c in spec.keep_columns}
        values: dict[str, list] = {c: [] for c in spec.keep_columns}
        present: set[str] = set(from_path)
        names = read_keys(spec)
        records = 0
        for n, line in enumerate(read_lines(spec, rel, path, "jsonl")):
            at.row = n  # the line: rows are not counted here
            for record in records_of(line, spec.text_column, names):
                records += 1
                for c in spec.keep_columns:
                    value = json_value(record, c)
                    if isinstance(value, Missing):
                        value = parts.get(c)
                    else:
                        present.add(c)
                    values[c].append(None if kept_value_problem(value, c) else value)  # such a row is a reject
                if len(values[spec.keep_columns[0]]) == CHUNK_ROWS:
                    fold_types(types, values)
        fold_types(types, values)
        return fmt if records else NO_RECORDS, {c: t for c, t in types.items() if c in present}


def observed_kept_types_of(spec: ReadSpec, rels: list[str]) -> list[tuple[str, dict[str, pa.DataType | None]]]:
    """observed_kept_types of several files, in order: one task for a pack of small files (pipeline.units). A corrupt
    file has no types (its read task makes it a reject row, pipeline.units.corrupt_as_reject)."""
    return [observed_or_none(spec, rel) for rel in rels]


def observed_or_none(spec: ReadSpec, rel: str) -> tuple[str, dict[str, pa.DataType | None]]:
    try:
        return observed_kept_types(spec, rel)
    except CorruptFileError:
        return file_format(spec.format, rel), {}


def fold_types(types: dict[str, pa.DataType | None], values: dict[str, list]) -> None:
    """Merge the types of one chunk of values into `types` (MIXED once two chunks disagree) and empty the chunk."""
    for c, chunk in values.items():
        if types[c] is not MIXED and chunk:
            seen = infer_values(chunk)
            types[c] = MIXED if seen is MIXED else unify(types[c], seen)
        chunk.clear()
