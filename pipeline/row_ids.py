"""What an input id value becomes: the output's string id, or a reject reason. Pure Python: the read stage's id rule.

Ids come from JSON (any value) and from Parquet columns of any type, and different files of one corpus disagree (int
in one, string in another; a pandas integer column with a missing value is written as float64, so `7` arrives as
`7.0` and the missing one as NaN). One rule, applied to every file, keeps the same id the same string:
- strings as they are (UTF-8 bytes decoded); integers in decimal, so `7` and `"7"` are one id;
- a float with an integral value as that integer (`7.0` -> `"7"`), any other finite float as Python writes it;
- null, NaN and the empty string are a missing id;
- booleans, lists, objects and infinities are not ids: the row is a reject that names the type, and its id column
  holds the value as JSON so the reject can still be found;
- other scalars Parquet gives (dates, timestamps, decimals, UUIDs) as their ISO/decimal/canonical text; fixed-size
  binary keys as hex, 16 bytes in UUID form (pipeline.reading.id_values).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pipeline.text_content import lone_surrogate


def escaped(value: str) -> str:
    """A string with lone surrogates written as `\\udXXX`, so a reject row can still name it."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def as_json(value: Any) -> str:
    """A value as compact JSON text for a reject row's id column (any Python value: repr where JSON has none)."""
    try:
        return escaped(json.dumps(value, ensure_ascii=False, default=repr))
    except (ValueError, RecursionError):
        return escaped(repr(value))[:200]


def row_id(value: Any, column: str) -> tuple[str | None, str | None]:
    """(the id as the output's string, or None; the reject reason, or None) for one id value of `column`."""
    if value is None:
        return None, "missing id"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return value.decode("utf-8", "backslashreplace"), f"invalid UTF-8 in id at byte {err.start}"
    if isinstance(value, str):
        if bad := lone_surrogate(value):
            return escaped(value), f"invalid Unicode in id column {column!r}: {bad}"
        return (value, None) if value else (None, "missing id (empty string)")
    if isinstance(value, (bool, list, tuple, dict)):
        return as_json(value), f"id is {type(value).__name__} {as_json(value)[:80]}, not a string or a number"
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        if math.isnan(value):
            return None, "missing id (NaN)"
        if math.isinf(value):
            return as_json(value), f"id is {value}, not a string or a finite number"
        return (str(int(value)) if value.is_integer() else repr(value)), None
    return str(value), None
