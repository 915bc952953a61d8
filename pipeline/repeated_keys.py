"""JSON objects that give a configured key more than once (`{"text": "a", "text": "b"}`).

JSON parsers keep one of the values without a word (Python's json and pandas the last, others the first or an
error), so which text or id such a row meant cannot be told: the row is a reject naming the key. Only the keys the
job reads count (the segments of input.text_column, input.id_column and output.keep_columns), and only in the
objects on the way to a read value (first_repeated); a line is parsed again to look only when its bytes hold one of
those names twice, so other lines cost one bytes.count per name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.column_paths import Missing, candidates, index_splits, json_value


class RepeatedKeys(dict):
    """A parsed JSON object whose `repeated` keys appeared more than once in its source (the last value kept)."""

    repeated: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReadKeys:
    """The JSON keys a read takes values from, and each as it appears as a key in a line's bytes: `"text"`, and for
    a name that is not ASCII also as JSON writers escape it (`"spr\\u00e5k"`: Python's json.dumps by default)."""

    names: frozenset[str]
    paths: tuple[str, ...] = ()  # the column paths read (input.text_column, ...): only their keys are checked
    quoted: tuple[tuple[bytes, ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        quoted = tuple(
            tuple(dict.fromkeys(json.dumps(n, ensure_ascii=a).encode("utf-8") for a in (False, True)))
            for n in self.names
        )
        object.__setattr__(self, "quoted", quoted)

    def may_repeat(self, line: bytes) -> bool:
        """Whether `line` holds one of the names twice, in either form (then it is parsed again with
        repeated_hook)."""
        for forms in self.quoted:
            count = line.count(forms[0])  # an ASCII name has one form: one count, as before
            if count > 1 or (len(forms) > 1 and count + line.count(forms[1]) > 1):
                return True
        return False


def key_names(columns: Iterable[str]) -> ReadKeys:
    """The JSON keys a column path may read: the path itself and each of its dotted segments, list positions cut
    (`turns[1].text` -> turns[1].text, turns, text)."""
    columns = list(columns)
    names: set[str] = set()
    for column in columns:
        names.add(column)
        names.update(re.sub(r"(\[\d+\])+$", "", part) for part in column.split("."))
    return ReadKeys(frozenset(n for n in names if n), tuple(columns))


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


def first_repeated(record: dict, paths: Iterable[str]) -> str | None:
    """The first key repeated (RepeatedKeys) on the way to one of `paths` in `record`, resolved as the read resolves
    them (column_paths.json_value: an exact name first, then dotted segments and list positions); None when none is.
    A repeated key elsewhere in the record (an object the job does not read, holding a key of the same name) is not
    looked at: which value it meant does not change a value read."""
    return next((k for path in paths if (k := repeated_on_path(record, path)) is not None), None)


def repeated_on_path(record: dict, name: str) -> str | None:
    """The key repeated on the way to `name` in `record` (first_repeated), None when none is."""
    repeated = record.repeated if isinstance(record, RepeatedKeys) else ()
    if name in record:
        return name if name in repeated else None
    for whole, rest in candidates(name):
        for head, positions in index_splits(whole):
            if head not in record or (rest is None and not positions):
                continue
            if head in repeated:
                return head
            value: Any = record[head]
            for i in positions:
                value = value[i] if isinstance(value, list) and i < len(value) else Missing
            if value is Missing:
                continue
            if rest is None:
                return None
            if not isinstance(value, dict):
                continue
            if (inner := repeated_on_path(value, rest)) is not None:
                return inner
            if not isinstance(json_value(value, rest), Missing):
                return None
    return None


def repeated_reason(key: str) -> str:
    return (
        f"the key {key!r} appears more than once in one JSON object, so which value is meant cannot be told; "
        "write each key once"
    )
