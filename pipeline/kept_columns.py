"""One Arrow type per kept column for the whole job, so blocks from different files and tools always concatenate.

Files of one corpus disagree: a JSONL file has `"year": 2021` and another `"year": "2021"`; Parquet shards written
by different tools hold `string`, `large_string` or a pandas categorical (`dictionary<string>`). Blocks of different
types cannot be concatenated downstream, so the type is decided once, on the driver, from every file's type
(`observed_types`, run per file in a Ray task), and every block is cast to it in the read stage (`conform`).

The rule (`unify`), applied pairwise over the files in listing order:
- dictionaries are decoded to their value type; `large_string`/`string_view`, `large_binary`/`binary_view` and
  `large_list` become `string`, `binary` and `list`;
- a column that is null in one file takes the other file's type;
- integers of any width unify to int64, integers with floats to float64 (as Arrow's JSON reader does); uint64 with
  another unsigned type stays uint64 and with a signed one becomes decimal128(20, 0), so no value overflows; an
  integer with a decimal(p, s) gets room for both's integer digits at scale s;
- timestamps and durations in different units take the finer unit, but microseconds where one is in nanoseconds:
  nanoseconds cannot hold dates past 2262 (a `9999-12-31` sentinel), and nanosecond values are then kept to the
  microsecond; zoned timestamps in different zones meet in UTC (the same instants), a date with a timestamp without
  zone becomes that timestamp (its midnight); a naive timestamp with a zoned one stays *mixed*;
- lists, structs (fields by name) and maps apply these rules to their items, so nothing inside them narrows;
- other types follow Arrow's permissive promotion (e.g. structs with different fields are merged);
- JSON values nested more than 16 levels deep, or holding only empty objects (`{}`, a struct without fields), are
  *mixed* too: Parquet readers refuse deep schemas, and Parquet writers structs without fields;
- files holding a column in more than one type are named in a warning, which says whether a value changes;
- anything else is *mixed*. A mixed JSON column (e.g. int and string) is kept losslessly as JSON text: every non-null
  value is written as `json.dumps(value)` into a string column, so `json.loads` gives back the original value and
  type (`2021` -> "2021", `"2021"` -> "\\"2021\\""). A mixed Parquet column cannot be reconciled without guessing:
  the job fails before any model work, naming the file, the column and both types.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import UserError
from pipeline.type_widening import what_changes, widens_losslessly

log = logging.getLogger(__name__)

MIXED = None  # observed_types: the column holds values of several incompatible types within one file
# observed_kept_types' format of a file without a record or a schema (a zero-byte file, JSONL of blank lines only):
# it says nothing about which columns the input has, so it neither has nor lacks a kept column
NO_RECORDS = "no records"
# JSON values nested deeper than this are kept as JSON text: Parquet readers refuse schemas deeper than 100 levels
# (pyarrow: "Parquet schema too deeply nested"), which a list of lists reaches at about 49 levels, so a typed
# column that deep made output files nobody could open.
MAX_TYPE_NESTING = 16


class KeptColumnTypeError(UserError, TypeError):
    """Two input files give a kept column types that cannot be reconciled."""


@dataclass(frozen=True)
class KeptType:
    """The job-wide type of a kept column; `json_text`: values are stored as their JSON text in a string column."""

    type: pa.DataType
    json_text: bool = False


JSON_TEXT = KeptType(pa.string(), json_text=True)


def normalize(t: pa.DataType) -> pa.DataType:
    """The type two tools would agree on: dictionaries decoded, large and view variants (polars and DuckDB write
    `string_view`) made regular."""
    if pa.types.is_dictionary(t):
        return normalize(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t):
        return pa.list_(normalize(t.value_type))
    return t


def unify(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The common type of two observed types, or None when they are incompatible (see the module docstring)."""
    a, b = normalize(a), normalize(b)
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    nested = unify_nested(a, b)
    if nested is not NOT_NESTED:
        return nested
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return common_integer(a, b)
    if pa.types.is_decimal(a) and pa.types.is_integer(b) or pa.types.is_integer(a) and pa.types.is_decimal(b):
        return decimal_with_integer(a, b)
    a, b = date_as_timestamp(a, b), date_as_timestamp(b, a)
    if time_unit_kind(a) is not None and time_unit_kind(a) == time_unit_kind(b):
        return common_time_unit(a, b)
    if (pa.types.is_integer(a) or pa.types.is_floating(a)) and (pa.types.is_integer(b) or pa.types.is_floating(b)):
        return pa.float64()
    try:
        merged = pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return normalize(merged.field("c").type)


NOT_NESTED = object()  # unify_nested: the two types are not both lists, both structs or both maps


def unify_nested(a: pa.DataType, b: pa.DataType) -> pa.DataType | None | object:
    """Lists (fixed-size ones of one size stay fixed-size), structs and maps unify their items, fields (by name; a field one side lacks is kept) and keys by the
    same rules as top-level values, so a uint64 or nanosecond value inside a list or struct is not narrowed either.
    NOT_NESTED when the two types are not of one such kind; None when an inner pair cannot be reconciled."""
    lists = (pa.types.is_list, pa.types.is_fixed_size_list)
    if any(f(a) for f in lists) and any(f(b) for f in lists):
        item = unify(a.value_type, b.value_type)
        fixed = pa.types.is_fixed_size_list(a) and pa.types.is_fixed_size_list(b) and a.list_size == b.list_size
        return None if item is None else pa.list_(item, a.list_size) if fixed else pa.list_(item)
    if pa.types.is_map(a) and pa.types.is_map(b):
        key, item = unify(a.key_type, b.key_type), unify(a.item_type, b.item_type)
        return None if key is None or item is None else pa.map_(key, item)
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {a.field(i).name: a.field(i).type for i in range(a.num_fields)}
        for i in range(b.num_fields):
            name, other = b.field(i).name, b.field(i).type
            fields[name] = unify(fields[name], other) if name in fields else other
        return None if any(t is None for t in fields.values()) else pa.struct(list(fields.items()))
    return NOT_NESTED


def date_as_timestamp(t: pa.DataType, other: pa.DataType) -> pa.DataType:
    """A date meeting a timestamp without time zone counts as that timestamp's type (a date is its midnight, cast
    without loss); anything else is returned as is. A date and a zoned timestamp stay incompatible (which zone's
    midnight would be a guess)."""
    if pa.types.is_date(t) and pa.types.is_timestamp(other) and other.tz is None:
        return pa.timestamp(other.unit)
    return t


# A uint64 meeting a signed integer: decimal128(20, 0) holds every value of both (int64 cannot hold 2**63 and up).
UINT64_WITH_SIGNED = pa.decimal128(20, 0)


def common_integer(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """int64 for any two integer types but uint64: with an unsigned one uint64, with a signed one decimal128(20, 0)."""
    if pa.uint64() not in (a, b):
        return pa.int64()
    other = b if a == pa.uint64() else a
    return pa.uint64() if pa.types.is_unsigned_integer(other) else UINT64_WITH_SIGNED


# Decimal digits of each integer type's largest value (uint64: 18446744073709551615, 20 digits).
INTEGER_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}


def decimal_with_integer(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """A decimal(p, s) meeting an integer: as many integer digits as either holds, the decimal's scale. Arrow's own
    promotion gave decimal128(20, 2) for decimal128(10, 2) with int64, which int64's 19 digits and 2 decimals do not
    fit (the read task failed 'Precision is not great enough'). decimal256 past 38 digits."""
    dec, integer = (a, b) if pa.types.is_decimal(a) else (b, a)
    digits = INTEGER_DIGITS[integer.bit_width] + (integer == pa.uint64())
    precision = max(dec.precision - dec.scale, digits) + dec.scale
    return (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, dec.scale)


def time_unit_kind(t: pa.DataType) -> tuple[str, str | None] | None:
    """('timestamp', 'zoned' or None) or ('duration', None) for the types whose unit (and, for zoned timestamps, the
    zone) alone may differ, else None. Zoned timestamps hold UTC instants whatever their zone, so two zones (`UTC`
    from one tool, `+00:00` or `Europe/Paris` from another) meet in UTC without loss; a naive and a zoned one do
    not meet (which zone the naive one meant would be a guess)."""
    if pa.types.is_timestamp(t):
        return "timestamp", None if t.tz is None else "zoned"
    if pa.types.is_duration(t):
        return "duration", None
    return None


TIME_UNITS = ("s", "ms", "us", "ns")


def common_time_unit(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """Two timestamps (same zone) or durations in different units: the finer unit, but microseconds where one is in
    nanoseconds. Nanoseconds span only 1677-2262 (a `9999-12-31` "valid until" date, common in exported tables, does
    not fit), microseconds ±290,000 years; nanosecond values lose their sub-microsecond digits (conform)."""
    unit = max(a.unit, b.unit, key=TIME_UNITS.index)
    unit = "us" if unit == "ns" else unit
    if pa.types.is_duration(a):
        return pa.duration(unit)
    return pa.timestamp(unit, a.tz if a.tz == b.tz else "UTC")


def infer_values(values: list) -> pa.DataType | None:
    """Arrow's type for a list of JSON values, or MIXED when Arrow cannot hold them in one type or Parquet cannot
    store that type (both are kept as JSON text): nested deeper than MAX_TYPE_NESTING, or holding an empty object
    (`{}` is a struct without fields, which Parquet cannot write)."""
    try:
        inferred = normalize(pa.array(values).type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return MIXED
    return MIXED if type_nesting(inferred) > MAX_TYPE_NESTING or has_empty_struct(inferred) else inferred


def type_nesting(t: pa.DataType) -> int:
    """Levels of lists/structs/maps in an Arrow type (a primitive is 0)."""
    if t.num_fields == 0:
        return 1 if pa.types.is_struct(t) else 0
    return 1 + max(type_nesting(t.field(i).type) for i in range(t.num_fields))


def has_empty_struct(t: pa.DataType) -> bool:
    """Whether the type is or holds a struct without fields."""
    if pa.types.is_struct(t) and t.num_fields == 0:
        return True
    return any(has_empty_struct(t.field(i).type) for i in range(t.num_fields))


def decide(columns: list[str], per_file: list[tuple[str, str, dict[str, pa.DataType | None]]]) -> dict[str, KeptType]:
    """The job-wide type of each kept column from each file's observation.

    Args:
        columns: the kept columns (output.keep_columns).
        per_file: (relative path, format, {column: observed type or MIXED}) per input file, in listing order; a
            column a file does not have is left out (its rows get null); format NO_RECORDS for a file without a
            record or a schema.

    Raises:
        KeptColumnTypeError: a Parquet file's type cannot be reconciled with another file's; the message names
            both files, the column and both types. Or no file has a kept column at all (a misspelled name), while
            some file has records or a schema (files of format NO_RECORDS only: an empty input, nothing to check).
    """
    decided: dict[str, KeptType] = {}
    absent = [c for c in columns if not any(c in observed for _, _, observed in per_file)]
    if absent and any(fmt != NO_RECORDS for _, fmt, _ in per_file):  # files without records cannot tell
        raise KeptColumnTypeError(
            f"output.keep_columns: no input file has the column(s) {absent} (no Parquet column, no JSONL record with "
            "the key); check the spelling, or remove them"
        )
    for column in columns:
        current, owner, parquet_seen, json_text = pa.null(), None, False, False
        for rel, fmt, observed in per_file:
            if column not in observed:
                continue  # the file lacks the column: its rows get null, which fits any type
            seen = observed[column]
            if seen is not MIXED and pa.types.is_null(seen):
                continue  # only nulls: they fit any type, JSON text included
            merged = MIXED if seen is MIXED or json_text else unify(current, seen)
            if merged is MIXED:
                if fmt == "parquet" or parquet_seen:
                    theirs = "mixed values" if seen is MIXED else f"type {seen}"
                    ours = "mixed JSON values" if json_text or owner is None else f"{owner} has type {current}"
                    raise KeptColumnTypeError(
                        f"kept column {column!r}: {rel} has {theirs} but {ours}, and Parquet types are not "
                        f"reconciled by guessing; rewrite the files with one type or drop {column!r} from "
                        "output.keep_columns"
                    )
                json_text = True
                continue
            current = merged
            if not pa.types.is_null(seen):
                owner = owner or rel
                parquet_seen = parquet_seen or fmt == "parquet"
        decided[column] = JSON_TEXT if json_text else KeptType(pa.string() if pa.types.is_null(current) else current)
        if not json_text:
            warn_widened(column, per_file, decided[column].type)
    return decided


def warn_widened(column: str, per_file: list[tuple[str, str, dict[str, pa.DataType | None]]], to: pa.DataType) -> None:
    """Log once per column when its files hold it in more than one type (widths, units, precisions) that the decided
    type `to` unifies: which type in which file (the first of each), and whether any value changes on the way."""
    first: dict[pa.DataType, str] = {}
    for rel, _, observed in per_file:
        seen = observed.get(column, pa.null())
        if seen is not MIXED and not pa.types.is_null(seen):
            first.setdefault(normalize(seen), rel)
    if len(first) < 2:
        return
    lossy = [t for t in first if not widens_losslessly(t, to)]
    log.warning(
        "kept column %r: the files hold %s; written as %s (%s)",
        column,
        ", ".join(f"{t} ({rel})" for t, rel in first.items()),
        to,
        "no value changes"
        if not lossy
        else "values of "
        + ", ".join(map(str, lossy))
        + " may change: "
        + "; ".join(what_changes(t, to) for t in lossy),
    )


def cast_kept(values: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """A checked cast (overflow and lost digits raise), except that timestamps and durations may drop sub-unit digits:
    nanoseconds kept at microseconds (common_time_unit)."""
    truncate = holds_time_unit(target)
    return pc.cast(values, options=pc.CastOptions(target, allow_time_truncate=truncate))


def holds_time_unit(t: pa.DataType) -> bool:
    """Whether a type is or holds (in a list, struct or map) a timestamp or duration."""
    return time_unit_kind(t) is not None or any(holds_time_unit(t.field(i).type) for i in range(t.num_fields))


def conform(values: list | pa.Array | pa.ChunkedArray, kept: KeptType, where: str) -> pa.Array:
    """Cast one block's values of a kept column to the job-wide type.

    Raises:
        KeptColumnTypeError: a value does not fit the decided type (the file changed since the type was decided).
    """
    try:
        if kept.json_text:
            if isinstance(values, (pa.Array, pa.ChunkedArray)):
                values = values.to_pylist()
            return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values], pa.string())
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            if pa.types.is_dictionary(values.type):
                values = values.cast(values.type.value_type)
            return cast_kept(values, kept.type)
        return pa.array(values, kept.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError) as err:
        raise KeptColumnTypeError(f"{where}: values do not fit the job's type {kept.type}: {err}") from err
