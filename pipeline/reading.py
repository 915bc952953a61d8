"""Stream rows out of Parquet, JSONL and plain-text files, turning bad rows into rejects with reasons.

Every row read leaves this module either as a good row (`_reject` null) or as a reject with its reason, so the
job can prove rows in = rows written + rows rejected. Columns: id, _text, _reject, _source, _row, kept columns.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.columns import REJECT, ROW, SOURCE, TEXT
from pipeline.errors import UserError
from pipeline.storage import Location

__all__ = ["REJECT", "ROW", "SOURCE", "TEXT", "InputFileError", "ReadSpec", "read_file"]  # names kept importable
CHUNK_ROWS = 8192  # rows parsed per step; Ray Data re-blocks what the read stage yields
# A character that is neither whitespace nor a C0/C1 control: a text without one has nothing to embed. Other
# control characters and NUL bytes inside real text are kept verbatim; the tokenizer decides what they become.
VISIBLE = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]")


class InputFileError(UserError, RuntimeError):
    """A file that cannot be read at all (corrupt, wrong format, missing column)."""


@dataclass(frozen=True)
class ReadSpec:
    root: Location
    format: str
    text_column: str
    id_column: str | None
    keep_columns: tuple[str, ...]


def text_reject_reason(value: Any) -> str | None:
    if value is None:
        return "null text"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return f"invalid UTF-8 at byte {err.start}"
    if not isinstance(value, str):
        return f"text is {type(value).__name__}, not a string"
    if not value.strip():
        return "empty or whitespace-only text"
    if not VISIBLE.search(value):
        return "text has only control characters"
    return None


def make_block(spec: ReadSpec, rel: str, first_row: int, texts: list, ids: list, keep: dict[str, list]) -> pa.Table:
    """Validate one chunk of rows and lay it out in the stage's columns."""
    reasons = [text_reject_reason(t) for t in texts]
    rows = list(range(first_row, first_row + len(texts)))
    if spec.id_column is None:
        ids = [f"{rel}#{r}" for r in rows]
    else:
        ids = [None if i is None else str(i) for i in ids]
        reasons = [r or ("missing id" if i is None else None) for r, i in zip(reasons, ids)]
    clean = [t.decode("utf-8") if isinstance(t, bytes) and r is None else t for t, r in zip(texts, reasons)]
    columns = {
        "id": pa.array(ids, pa.string()),
        TEXT: pa.array([t if r is None else None for t, r in zip(clean, reasons)], pa.string()),
        REJECT: pa.array(reasons, pa.string()),
        SOURCE: pa.array([rel] * len(texts), pa.string()),
        ROW: pa.array(rows, pa.int64()),
    }
    for name in spec.keep_columns:
        columns[name] = as_arrow(keep[name])
    return pa.table(columns)


def as_arrow(values: list | pa.Array) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())


def read_parquet(spec: ReadSpec, rel: str, path: str) -> Iterator[pa.Table]:
    wanted = [spec.text_column, *([spec.id_column] if spec.id_column else []), *spec.keep_columns]
    with spec.root.fs.open_input_file(path) as f:
        reader = pq.ParquetFile(f)
        names = reader.schema_arrow.names
        missing = [c for c in dict.fromkeys(wanted) if c not in names]
        if missing:
            raise InputFileError(
                f"{rel}: column(s) {missing} not found; the file has columns {names} "
                "(set input.text_column / input.id_column / output.keep_columns)"
            )
        row = 0
        for batch in reader.iter_batches(batch_size=CHUNK_ROWS, columns=list(dict.fromkeys(wanted))):
            text = batch.column(spec.text_column)
            texts = text.to_pylist()  # non-string values stay as they are so the reject reason names their type
            ids = batch.column(spec.id_column).to_pylist() if spec.id_column else []
            keep = {c: batch.column(c) for c in spec.keep_columns}
            yield make_block(spec, rel, row, texts, ids, keep)
            row += batch.num_rows


def read_lines(spec: ReadSpec, path: str) -> Iterator[bytes]:
    with spec.root.fs.open_input_stream(path, compression="detect") as f:
        pending = b""
        while chunk := f.read(1 << 20):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from lines
        if pending:
            yield pending


def read_jsonl(spec: ReadSpec, rel: str, path: str) -> Iterator[pa.Table]:
    texts, ids, keep = [], [], {c: [] for c in spec.keep_columns}
    row, seen_key, keys = 0, False, set()
    parsed, seen_id = False, spec.id_column is None  # no parsed record with the id key: a config error, not rejects
    for line in read_lines(spec, path):
        record: Any = None
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            record = {spec.text_column: _Invalid(f"invalid UTF-8 at byte {err.start}")}
        except json.JSONDecodeError as err:
            if not line.strip():  # a blank line is layout, not a row
                continue
            record = {spec.text_column: _Invalid(f"line is not valid JSON ({err.msg} at column {err.colno})")}
        if not isinstance(record, dict):
            record = {spec.text_column: _Invalid(f"JSON value is {type(record).__name__}, not an object")}
        keys.update(record)
        seen_key = seen_key or spec.text_column in record
        if not isinstance(record.get(spec.text_column), _Invalid):
            parsed, seen_id = True, seen_id or spec.id_column in record
        texts.append(record.get(spec.text_column, _Invalid(f"no {spec.text_column!r} key")))
        ids.append(record.get(spec.id_column) if spec.id_column else None)
        for c in spec.keep_columns:
            keep[c].append(record.get(c))
        if len(texts) == CHUNK_ROWS:
            yield invalid_aware_block(spec, rel, row, texts, ids, keep)
            row += len(texts)
            texts, ids, keep = [], [], {c: [] for c in spec.keep_columns}
    if texts:
        yield invalid_aware_block(spec, rel, row, texts, ids, keep)
    if row + len(texts) and not seen_key:
        raise InputFileError(
            f"{rel}: no record has the key {spec.text_column!r}; keys found: {sorted(keys - {spec.text_column})} "
            "(set input.text_column)"
        )
    if parsed and not seen_id:
        raise InputFileError(
            f"{rel}: no record has the key {spec.id_column!r}; keys found: {sorted(keys - {spec.id_column})} "
            "(set input.id_column)"
        )


class _Invalid(str):
    """A row that could not be parsed; its string is the reject reason."""


def invalid_aware_block(spec: ReadSpec, rel: str, row: int, texts: list, ids: list, keep: dict) -> pa.Table:
    block = make_block(spec, rel, row, [None if isinstance(t, _Invalid) else t for t in texts], ids, keep)
    reasons = [str(t) if isinstance(t, _Invalid) else r for t, r in zip(texts, block.column(REJECT).to_pylist())]
    return block.set_column(block.schema.get_field_index(REJECT), REJECT, pa.array(reasons, pa.string()))


def read_text(spec: ReadSpec, rel: str, path: str) -> Iterator[pa.Table]:
    texts, row = [], 0
    for line in read_lines(spec, path):
        texts.append(line[:-1] if line.endswith(b"\r") else line)
        if len(texts) == CHUNK_ROWS:
            yield make_block(spec, rel, row, texts, [], {})
            row, texts = row + len(texts), []
    if texts:
        yield make_block(spec, rel, row, texts, [], {})


READERS = {"parquet": read_parquet, "jsonl": read_jsonl, "text": read_text}


def read_file(spec: ReadSpec, rel: str) -> Iterator[pa.Table]:
    """Blocks of at most CHUNK_ROWS rows from one file; any read failure names the file."""
    path = posixpath.join(spec.root.path, rel)
    try:
        yield from READERS[spec.format](spec, rel, path)
    except InputFileError:
        raise
    except (OSError, pa.ArrowException) as err:
        raise InputFileError(f"cannot read {posixpath.join(spec.root.uri, rel)} as {spec.format}: {err}") from err
