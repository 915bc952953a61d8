"""Column keys that reach into nested values: `meta.text` is the field `text` of the struct column (or JSON object)
`meta`. One rule for every job and format, in one module without heavy imports (pyarrow only).

The rule, applied level by level:
- the exact name first: a top-level column literally named `meta.text` wins over field `text` of `meta`;
- else the longest dotted prefix that names a field, then the rest inside it (`a.b.c` tries `a.b.c`, `a.b` then
  `c`, `a` then `b.c`), so a field whose own name holds a dot is still reachable;
- only structs (JSON objects) are walked into: a list, a string or a number on the way stops the path.

A path that no file's schema (no JSONL record) resolves is a config error that names the level where it stopped
and the fields that exist there (`Missing.describe`). Per row, a null struct on the way, or a JSON object without
the field, gives no value: the caller turns that into the row's reject reason (`Missing.reason`), never a crash.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Missing:
    """Where a path stopped. `at`: the dotted prefix that was found ('' at the top level); `fields`: the names that
    exist there, or None when the value at `at` is not a struct/object (`kind` says what it is: 'null', 'str',
    'list<item: int64>')."""

    at: str
    fields: tuple[str, ...] | None = None
    kind: str | None = None

    def reason(self, name: str) -> str:
        """The short per-row explanation, e.g. "'meta' is null" or "'meta' has no field 'text'"."""
        if self.fields is None:
            return f"{self.at!r} is {self.kind}, not an object" if self.kind != "null" else f"{self.at!r} is null"
        rest = name[len(self.at) + 1 :] if self.at else name
        return f"{self.at!r} has no field {rest!r}" if self.at else f"no field {rest!r}"

    def describe(self, name: str) -> str:
        """The config-error detail: the level where `name` stopped and what exists there."""
        if self.fields is None:
            return f"{name!r} stops at {self.at!r}, which is {self.kind}, not a struct"
        where = f"{self.at!r} has fields" if self.at else "the top level has"
        return f"{name!r} stops at {self.at or 'the top level'!r}: {where} {sorted(self.fields)}"


def candidates(name: str) -> Iterator[tuple[str, str | None]]:
    """(head, rest) splits of a dotted name, the whole name first, then ever shorter heads; rest None: no rest."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        yield ".".join(parts[:i]), (".".join(parts[i:]) or None)


def deeper(a: Missing | None, b: Missing) -> Missing:
    """The miss that got further (the more useful one to report)."""
    return b if a is None or len(b.at) > len(a.at) else a


def within(head: str, miss: Missing) -> Missing:
    return Missing(f"{head}.{miss.at}" if miss.at else head, miss.fields, miss.kind)


def arrow_path(fields: pa.Schema | pa.StructType | Sequence[pa.Field], name: str) -> tuple[str, ...] | Missing:
    """The field names from the top level down to `name` in an Arrow schema (or struct type), or where it stopped.

    `("meta", "text")` for `meta.text` in `meta: struct<text: string>`; `("meta.text",)` when a top-level column
    has that literal name. Dictionary-encoded types are looked through.
    """
    by_name = {f.name: f for f in fields}
    miss: Missing | None = None
    for head, rest in candidates(name):
        if head not in by_name:
            continue
        if rest is None:
            return (head,)
        t = by_name[head].type
        t = t.value_type if pa.types.is_dictionary(t) else t
        if not pa.types.is_struct(t):
            miss = deeper(miss, Missing(head, None, str(t)))
            continue
        inner = arrow_path(t, rest)
        if isinstance(inner, tuple):
            return (head, *inner)
        miss = deeper(miss, within(head, inner))
    return miss or Missing("", tuple(by_name))


def arrow_field(schema: pa.Schema, path: tuple[str, ...]) -> pa.Field:
    """The field at a path from arrow_path."""
    field = schema.field(path[0])
    for name in path[1:]:
        field = field.type.field(name)
    return field


def arrow_values(table: pa.Table | pa.RecordBatch, path: tuple[str, ...]) -> pa.Array | pa.ChunkedArray:
    """The column at `path`: null on every row where a struct on the way is null."""
    column = table.column(path[0])
    for name in path[1:]:
        column = pc.struct_field(column, name)
    return column


def arrow_null_parents(table: pa.Table | pa.RecordBatch, path: tuple[str, ...]) -> list[Missing | None]:
    """Per row, the first null struct on the way to the path's leaf (None: every struct on the way is set)."""
    found: list[Missing | None] = [None] * table.num_rows
    column = table.column(path[0])
    for depth in range(1, len(path)):
        if column.null_count:
            at = ".".join(path[:depth])
            for k, null in enumerate(column.is_null().to_pylist()):
                if null and found[k] is None:
                    found[k] = Missing(at, None, "null")
        column = pc.struct_field(column, path[depth])
    return found


def projection(paths: Sequence[tuple[str, ...]]) -> list[str]:
    """Dotted column names for pyarrow.parquet's `columns=` reading only these paths (a struct's leaf alone, not the
    whole struct), without a path whose struct is already read whole (a column read twice)."""
    chosen = list(dict.fromkeys(paths))
    kept = [p for p in chosen if not any(q != p and p[: len(q)] == q for q in chosen)]
    return [".".join(p) for p in kept]


def json_value(record: dict, name: str) -> Any:
    """The value at `name` in a JSON object, or a Missing saying where the path stopped for this record."""
    if name in record:  # the common case (a top-level key) costs one lookup
        return record[name]
    miss: Missing | None = None
    for head, rest in candidates(name):
        if rest is None or head not in record:
            continue
        value = record[head]
        if not isinstance(value, dict):
            kind = "null" if value is None else type(value).__name__
            miss = deeper(miss, Missing(head, None, kind))
            continue
        inner = json_value(value, rest)
        if not isinstance(inner, Missing):
            return inner
        miss = deeper(miss, within(head, inner))
    return miss or Missing("", tuple(record))


def merge_misses(a: Missing | None, b: Missing) -> Missing:
    """Two records' misses of one path as one report: the deeper one, or at the same level the fields of both."""
    if a is None or len(b.at) > len(a.at):
        return b
    if b.at == a.at and a.fields is not None and b.fields is not None and not set(b.fields) <= set(a.fields):
        return Missing(a.at, tuple(dict.fromkeys(a.fields + b.fields)))
    return a


def flat_table(table: pa.Table, paths: dict[str, tuple[str, ...]]) -> pa.Table:
    """The columns at `paths` under their configured names ({'meta.id': ('meta', 'id')} gives a column 'meta.id'),
    in that order: the shape a job that reads columns by name expects (null under a null struct)."""
    return pa.table({name: arrow_values(table, path) for name, path in paths.items()})


def flat_field(schema: pa.Schema, name: str, path: tuple[str, ...]) -> pa.Field:
    """The field a flat_table column of `path` has, named `name`."""
    return arrow_field(schema, path).with_name(name)
