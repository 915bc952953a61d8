"""JSON objects that give a configured key more than once (`{"text": "a", "text": "b"}`).

JSON parsers keep one of the values without a word (Python's json and pandas the last, others the first or an
error), so which text or id such a row meant cannot be told: the row is a reject naming the key. Only the keys the
job reads count (the segments of input.text_column, input.id_column and output.keep_columns); a line is parsed
again to look only when its bytes hold one of those names twice, so other lines cost one bytes.count per name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class RepeatedKeys(dict):
    """A parsed JSON object whose `repeated` keys appeared more than once in its source (the last value kept)."""

    repeated: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReadKeys:
    """The JSON keys a read takes values from, and each as it appears as a key in a line's bytes (`"text"`)."""

    names: frozenset[str]
    quoted: tuple[bytes, ...] = field(init=False)

    def __post_init__(self) -> None:
        quoted = tuple(json.dumps(n, ensure_ascii=False).encode("utf-8") for n in self.names)
        object.__setattr__(self, "quoted", quoted)

    def may_repeat(self, line: bytes) -> bool:
        """Whether `line` holds one of the names twice (then it is parsed again with repeated_hook)."""
        for key in self.quoted:
            if line.count(key) > 1:
                return True
        return False


def key_names(columns: Iterable[str]) -> ReadKeys:
    """The JSON keys a column path may read: the path itself and each of its dotted segments, list positions cut
    (`turns[1].text` -> turns[1].text, turns, text)."""
    names: set[str] = set()
    for column in columns:
        names.add(column)
        names.update(re.sub(r"(\[\d+\])+$", "", part) for part in column.split("."))
    return ReadKeys(frozenset(n for n in names if n))


def repeated_hook(names: frozenset[str]):
    """An object_pairs_hook for json.loads that marks objects giving one of `names` more than once."""

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        record = dict(pairs)
        if len(record) == len(pairs):
            return record
        seen: set[str] = set()
        twice = [k for k, _ in pairs if k in names and (k in seen or seen.add(k))]
        if not twice:
            return record
        marked = RepeatedKeys(record)
        marked.repeated = tuple(dict.fromkeys(twice))
        return marked

    return hook


def first_repeated(value: Any) -> str | None:
    """The first key repeated in `value` or an object inside it (RepeatedKeys), None when none is."""
    if isinstance(value, RepeatedKeys):
        return value.repeated[0]
    if isinstance(value, dict):
        values = value.values()
    elif isinstance(value, list):
        values = value
    else:
        return None
    return next((k for v in values if (k := first_repeated(v)) is not None), None)


def repeated_reason(key: str) -> str:
    return (
        f"the key {key!r} appears more than once in one JSON object, so which value is meant cannot be told; "
        "write each key once"
    )
