"""Column keys that reach into nested values: `meta.text` is the field `text` of the struct column (or JSON object)
`meta`. One rule for every job and format, in one module without heavy imports (pyarrow only).

The rule, applied level by level:
- the exact name first: a top-level column literally named `meta.text` wins over field `text` of `meta`;
- else the longest dotted prefix that names a field, then the rest inside it (`a.b.c` tries `a.b.c`, `a.b` then
  `c`, `a` then `b.c`), so a field whose own name holds a dot is still reachable;
- structs (JSON objects) are walked into by name, and Parquet maps with string keys by key (`meta.title` on
  `meta: map<string, string>`, as Spark SQL reads it; a key holding a dot is not reachable, a row without the key is
  a reject saying so, one giving the key twice a reject naming it): a list, a string or a number on the way stops
  the path;
- a list is walked into by position: `sentences[0]` is the first item of the list column (JSON array) `sentences`,
  `turns[1].text` the field `text` of its second item, `m[0][2]` nests (positions from 0; a negative one counts
  from the end, as in Python, jq and pandas' `str[-1]`: `sentences[-1]` is the last item; a column literally named
  `sentences[0]`, as Spark names `col("sentences")[0]`, wins as any exact name does).

A path that no file's schema (no JSONL record) resolves is a config error that names the level where it stopped
and the fields that exist there (`Missing.describe`). Per row, a null struct or list on the way, a JSON object without
the field, or a list without the item, gives no value: the caller turns that into the row's reject reason (`Missing.reason`), never a crash.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
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
    index: int | None = None  # the list position asked for at `at` (`sentences[3]`), when the path stopped there
    items: int | None = None  # how many items the list at `at` has, when it is a list too short for `index`
    key: str | None = None  # the map key the map at `at` lacks, or gives `repeats` times (a Parquet map may repeat one)
    repeats: int | None = None

    def reason(self, name: str) -> str:
        """The short per-row explanation, e.g. "'meta' is null" or "'meta' has no field 'text'"."""
        if self.repeats is not None:
            return (
                f"{self.at!r} gives the key {self.key!r} {self.repeats} times, so which value is meant cannot be "
                "told; write each key once"
            )
        if self.items is not None:
            return f"{self.at!r} has {self.items} items, no item [{self.index}]"
        if self.kind == "map":  # a map without the key
            key = self.key if self.key is not None else name[len(self.at) + 1 :].split(".")[0]
            return f"{self.at!r} has no key {key!r}"
        if self.index is not None and self.kind != "null":
            return f"{self.at!r} is {self.kind}, not a list"
        if self.fields is None:
            return f"{self.at!r} is {self.kind}, not an object" if self.kind != "null" else f"{self.at!r} is null"
        rest = name[len(self.at) + 1 :] if self.at else name
        return f"{self.at!r} has no field {rest!r}" if self.at else f"no field {rest!r}"

    def describe(self, name: str) -> str:
        """The config-error detail: the level where `name` stopped and what exists there."""
        if self.items is not None:
            return f"{name!r} stops at {self.at!r}: no list there has an item [{self.index}]"
        if self.fields is None:
            noun = "a list" if self.index is not None else "a struct"
            text = self.kind in ("string", "large_string") and self.index is None
            return f"{name!r} stops at {self.at!r}, which is {self.kind}, not {noun}" + (JSON_TEXT_HINT if text else "")
        where = f"{self.at!r} has fields" if self.at else "the top level has"
        return f"{name!r} stops at {self.at or 'the top level'!r}: {where} {sorted(self.fields)}"


# A path into a string column: JSON text in a Parquet column (`meta = '{"title": ...}'`) is not parsed.
JSON_TEXT_HINT = (
    " (a string column holding JSON text is not parsed: write it as a struct column, e.g. pandas "
    "df[col] = df[col].map(json.loads) before to_parquet, or the rows as JSONL)"
)


def candidates(name: str) -> Iterator[tuple[str, str | None]]:
    """(head, rest) splits of a dotted name, the whole name first, then ever shorter heads; rest None: no rest."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        yield ".".join(parts[:i]), (".".join(parts[i:]) or None)


INDEXES = re.compile(r"((?:\[-?\d+\])+)$")


def index_splits(head: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, list positions) readings of one dotted segment: itself with none first, then `sentences[0][1]` as
    ('sentences[0]', (1,)) and ('sentences', (0, 1)), the longest name first (an exact name wins)."""
    yield head, ()
    found = INDEXES.search(head)
    if found is None or found.start() == 0:
        return
    positions = [int(i) for i in re.findall(r"-?\d+", found.group(1))]
    for k in range(len(positions) - 1, -1, -1):
        yield head[: found.start()] + "".join(f"[{i}]" for i in positions[:k]), tuple(positions[k:])


UNREAD_POSITION = re.compile(r"\[(\*|:?|-?\d*:-?\d*(:-?\d*)?)\]")  # every item ([*], []) or a slice ([1:3], [:])


def position_hint(names: Sequence[str]) -> str:
    """What to write instead, for a name with list items that are not read (`sentences[*]`, `sentences[]`,
    `sentences[1:3]`); "" for other names."""
    bad = next((n for n in names if UNREAD_POSITION.search(n)), None)
    if bad is None:
        return ""
    return (
        f"; in {bad!r}, a list position is one item, [N] with N from 0 or from the end when negative (e.g. [0], [2], "
        "[-1]): every item ([*], []) and slices ([1:3]) are not read (explode the list into rows first, e.g. pandas "
        "df.explode)"
    )


def loose(name: str) -> str:
    """A column name as a person reads it: Unicode compatibility form, case folded, spaces around dropped, runs of
    spaces, `_` and `-` as one `_` (`Text`, ` text`, `TEXT` and `text` are one; `Text Body` and `text_body` too)."""
    return re.sub(r"[\s_-]+", "_", unicodedata.normalize("NFKC", name).casefold().strip())


def spelling_hint(missing: Sequence[str], names: Iterable[str]) -> str:
    """`; did you mean 'Text' for 'text'? ...` naming, for each missing name, the columns (JSON keys) that spell it
    another way (loose: case, spaces around it, `_`/`-`/space, Unicode form); "" when none does.

    Names are matched exactly, as every reader (pyarrow, pandas, DuckDB, Spark's case-sensitive mode) does: a
    corpus whose header says `Text` (a pandas export, a spreadsheet) or `text ` (a CSV header with a space) failed
    listing the columns, the one meant among them, without saying which.
    """
    names = [n for n in names if isinstance(n, str)]
    pairs = []
    for name in missing:
        near = [n for n in names if n != name and loose(n) == loose(name)]
        if near:
            pairs.append(f"{' or '.join(repr(n) for n in near)} for {name!r}")
    if not pairs:
        return ""
    return (
        f"; did you mean {', '.join(pairs)}? Names are matched exactly (case, spaces and '_' included): give the "
        "name as the file spells it"
    )


def has_item(length: int, i: int) -> bool:
    """Whether a list of `length` items has item `i` (negative: counted from the end, -1 the last)."""
    return i < length if i >= 0 else -i <= length


class MapKey(str):
    """A path step into a map<string, ...> column by key (arrow_path); a plain str step is a struct field."""


def is_string_map(t: pa.DataType) -> bool:
    return pa.types.is_map(t) and (pa.types.is_string(t.key_type) or pa.types.is_large_string(t.key_type))


def shown(path: Sequence[str | int]) -> str:
    """A path as written in a config: ('turns', 1, 'text') -> 'turns[1].text'."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def deeper(a: Missing | None, b: Missing) -> Missing:
    """The miss that got further (the more useful one to report)."""
    return b if a is None or len(b.at) > len(a.at) else a


def within(head: str, miss: Missing) -> Missing:
    return Missing(f"{head}.{miss.at}" if miss.at else head, miss.fields, miss.kind)


def plain(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def arrow_path(fields: pa.Schema | pa.StructType | Sequence[pa.Field], name: str) -> tuple[str | int, ...] | Missing:
    """The steps from the top level down to `name` in an Arrow schema (or struct type), or where it stopped: field
    names, and list positions as ints.

    `("meta", "text")` for `meta.text` in `meta: struct<text: string>`; `("meta.text",)` when a top-level column
    has that literal name; `("turns", 1, "text")` for `turns[1].text` in `turns: list<struct<text: string>>`.
    Dictionary-encoded types are looked through. A map<string, ...> is walked by key: `("meta", MapKey("title"))`.
    """
    if isinstance(fields, pa.DataType) and is_string_map(fields):
        return map_path(fields, name)
    by_name = {f.name: f for f in fields}
    miss: Missing | None = None
    for whole, rest in candidates(name):
        for head, positions in index_splits(whole):
            if head not in by_name:
                continue
            steps: list[str | int] = [head]
            t = plain(by_name[head].type)
            for i in positions:
                if not is_list(t):
                    miss = deeper(miss, Missing(shown(steps), None, str(t), index=i))
                    break
                steps.append(i)
                t = plain(t.value_type)
            else:
                if rest is None:
                    return tuple(steps)
                if not pa.types.is_struct(t) and not is_string_map(t):
                    miss = deeper(miss, Missing(whole, None, str(t)))
                    continue
                inner = arrow_path(t, rest)
                if isinstance(inner, tuple):
                    return (*steps, *inner)
                miss = deeper(miss, within(whole, inner))
    return miss or Missing("", tuple(by_name))


def map_path(t: pa.MapType, name: str) -> tuple[str | int, ...] | Missing:
    """arrow_path inside a map<string, ...>: the first dotted segment is the key (its `[N]` positions taken in a
    list value), the rest is walked in the value type; where that cannot be walked, a key holding dots (`DC.title`,
    `og.title`: `meta.DC.title` on map<string, string>), the first two segments, and so on, as a JSON object's keys
    are read (json_value)."""
    segments = name.split(".")
    miss: Missing | None = None
    for k in range(1, len(segments) + 1):
        found = map_key_path(t, ".".join(segments[:k]), ".".join(segments[k:]))
        if isinstance(found, tuple):
            return found
        miss = miss or found
    return miss


def map_key_path(t: pa.MapType, segment: str, after: str) -> tuple[str | int, ...] | Missing:
    """map_path for one reading: `segment` the key (with `[N]` positions into a list value), `after` the rest."""
    key, positions = segment, ()
    value = plain(t.item_type)
    found = INDEXES.search(segment)
    if found is not None and found.start() > 0 and is_list(value):
        key, positions = segment[: found.start()], tuple(int(i) for i in re.findall(r"-?\d+", found.group(1)))
    steps: list[str | int] = [MapKey(key)]
    for i in positions:
        if not is_list(value):
            return Missing(shown(steps), None, str(value), index=i)
        steps.append(i)
        value = plain(value.value_type)
    if not after:
        return tuple(steps)
    if not pa.types.is_struct(value) and not is_string_map(value):
        return Missing(shown(steps), None, str(value))
    inner = arrow_path(value, after)
    return (*steps, *inner) if isinstance(inner, tuple) else within(shown(steps), inner)


def arrow_field(schema: pa.Schema, path: tuple[str | int, ...]) -> pa.Field:
    """The field at a path from arrow_path (a list position: the list's item field; a map key: the map's value)."""
    field = schema.field(path[0])
    for step in path[1:]:
        t = plain(field.type)
        field = t.value_field if isinstance(step, int) else t.item_field if isinstance(step, MapKey) else t.field(step)
    return field


def list_item(column: pa.Array | pa.ChunkedArray, i: int) -> pa.Array | pa.ChunkedArray:
    """Item `i` of each list (negative: from the end), null where the list is null or shorter (pyarrow's
    list_element fails the batch, and takes no negative position)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if i < 0:
        return last_items(column, -i)
    short = pc.fill_null(pc.less_equal(pc.list_value_length(column), i), True)
    return pc.list_element(pc.if_else(short, pa.scalar(None, column.type), column), i)


def last_items(column: pa.Array | pa.ChunkedArray, k: int) -> pa.Array | pa.ChunkedArray:
    """Item `-k` of each list (k >= 1: the k-th from the end), null where the list is null or has fewer than k."""
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([last_items(c, k) for c in column.chunks], column.type.value_type)
    lengths = pc.fill_null(pc.list_value_length(column), 0).cast(pa.int64())
    ends = pc.cumulative_sum(lengths)  # where each list's items end in the flattened values (null lists add none)
    index = pc.if_else(pc.greater_equal(lengths, k), pc.subtract(ends, k), pa.scalar(None, pa.int64()))
    return pc.list_flatten(column).take(index)


def step_into(column: pa.Array | pa.ChunkedArray, step: str | int) -> pa.Array | pa.ChunkedArray:
    if isinstance(step, int):
        return list_item(column, step)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if isinstance(step, MapKey):  # the first value of the key (a key given twice: arrow_null_parents)
        return pc.map_lookup(column, pa.scalar(str(step), column.type.key_type), "first")
    return pc.struct_field(column, step)


def arrow_values(table: pa.Table | pa.RecordBatch, path: tuple[str | int, ...]) -> pa.Array | pa.ChunkedArray:
    """The column at `path`: null on every row where a struct or list on the way is null, or a list too short."""
    column = table.column(path[0])
    for step in path[1:]:
        column = step_into(column, step)
    return column


def arrow_null_parents(table: pa.Table | pa.RecordBatch, path: tuple[str | int, ...]) -> list[Missing | None]:
    """Per row, the first null struct or list, or list too short, on the way to the path's leaf (None: the leaf is
    reached)."""
    found: list[Missing | None] = [None] * table.num_rows
    column = table.column(path[0])
    for depth in range(1, len(path)):
        step = path[depth]
        index = step if isinstance(step, int) else None
        if column.null_count:
            at = shown(path[:depth])
            for k, null in enumerate(column.is_null().to_pylist()):
                if null and found[k] is None:
                    found[k] = Missing(at, None, "null", index=index)
        if isinstance(step, MapKey):  # a map without the key, or giving it more than once
            all_values = pc.map_lookup(column, pa.scalar(str(step), column.type.key_type), "all")
            at = shown(path[:depth])
            counts = pc.list_value_length(all_values).to_pylist()
            for k, (n, null) in enumerate(zip(counts, column.is_null().to_pylist())):
                if found[k] is None and not null and n is None:
                    found[k] = Missing(at, None, "map", key=str(step))  # the key as read: it may hold dots
                elif found[k] is None and n is not None and n > 1:
                    found[k] = Missing(at, None, "map", key=str(step), repeats=n)
        if index is not None:
            lengths = pc.list_value_length(column).to_pylist()
            for k, n in enumerate(lengths):
                if n is not None and not has_item(n, index) and found[k] is None:
                    found[k] = Missing(shown(path[:depth]), None, "list", index=index, items=n)
        column = step_into(column, step)
    return found


def projection(paths: Sequence[tuple[str | int, ...]]) -> list[str]:
    """Dotted column names for pyarrow.parquet's `columns=` reading only these paths (a struct's leaf alone, not the
    whole struct; a list or map whole, up to its first position or key), without a path whose struct is already read whole (a
    column read twice)."""
    cut = [p[: next((k for k, s in enumerate(p) if isinstance(s, (int, MapKey))), len(p))] for p in paths]
    chosen = list(dict.fromkeys(cut))
    kept = [p for p in chosen if not any(q != p and p[: len(q)] == q for q in chosen)]
    return [".".join(p) for p in kept]


def json_kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def json_value(record: dict, name: str) -> Any:
    """The value at `name` in a JSON object, or a Missing saying where the path stopped for this record."""
    if name in record:  # the common case (a top-level key) costs one lookup
        return record[name]
    miss: Missing | None = None
    for whole, rest in candidates(name):
        for head, positions in index_splits(whole):
            if head not in record or (rest is None and not positions):
                continue
            value, at = record[head], head
            for i in positions:
                if not isinstance(value, list):
                    miss = deeper(miss, Missing(at, None, json_kind(value), index=i))
                    break
                if not has_item(len(value), i):
                    miss = deeper(miss, Missing(at, None, "list", index=i, items=len(value)))
                    break
                value, at = value[i], f"{at}[{i}]"
            else:
                if rest is None:
                    return value
                if not isinstance(value, dict):
                    miss = deeper(miss, Missing(whole, None, json_kind(value)))
                    continue
                inner = json_value(value, rest)
                if not isinstance(inner, Missing):
                    return inner
                miss = deeper(miss, within(whole, inner))
    return miss or Missing("", tuple(record))


def merge_misses(a: Missing | None, b: Missing) -> Missing:
    """Two records' misses of one path as one report: the deeper one, or at the same level the fields of both."""
    if a is None or len(b.at) > len(a.at):
        return b
    if b.at == a.at and a.fields is not None and b.fields is not None and not set(b.fields) <= set(a.fields):
        return Missing(a.at, tuple(dict.fromkeys(a.fields + b.fields)))
    return a


def flat_table(table: pa.Table, paths: dict[str, tuple[str | int, ...]]) -> pa.Table:
    """The columns at `paths` under their configured names ({'meta.id': ('meta', 'id')} gives a column 'meta.id'),
    in that order: the shape a job that reads columns by name expects (null under a null struct)."""
    return pa.table({name: arrow_values(table, path) for name, path in paths.items()})


def flat_field(schema: pa.Schema, name: str, path: tuple[str | int, ...]) -> pa.Field:
    """The field a flat_table column of `path` has, named `name`."""
    return arrow_field(schema, path).with_name(name)
