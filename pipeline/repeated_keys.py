"""JSON objects that give a configured key more than once (`{"text": "a", "text": "b"}`).

JSON parsers keep one of the values without a word (Python's json and pandas the last, others the first or an
error), so which text or id such a row meant cannot be told: the row is a reject naming the key. Only the keys the
job reads count (the segments of input.text_column, input.id_column and output.keep_columns), and only in the
objects on the way to a read value (first_repeated). Keys are compared as JSON decodes them, so every spelling of
one key counts: `"text"`, `"te\\u0078t"`, `"\\u00E5"` and `"\\u00e5"`, a surrogate pair and the astral character it
encodes.

A line is parsed again (with repeated_hook) only when it may give some key twice (may_repeat): every key is
followed by one `:` outside strings, so a line whose `:` bytes number no more than the keys of its parsed objects
(plus the `:` inside its strings) gives none twice. That is one bytes.count per line for a flat record whose
strings hold no `:`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.column_paths import Missing, candidates, has_item, index_splits, json_value


class RepeatedKeys(dict):
    """A parsed JSON object whose `repeated` keys appeared more than once in its source (the last value kept)."""

    repeated: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReadKeys:
    """The JSON keys a read takes values from (`names`, as JSON decodes them) and the column paths read."""

    names: frozenset[str]
    paths: tuple[str, ...] = ()  # the column paths read (input.text_column, ...): only their keys are checked


# The start of `\u003a` / `\u003A`, a `:` escaped inside a string: the decoded strings count it, the line's bytes not
ESCAPED_COLON = b"\\u003"


def may_repeat(line: bytes, parsed: Any, text_key: str | None = None) -> bool:
    """Whether `line`, parsed by json.loads (no hook) as `parsed`, may give a key twice in one of its objects.

    Each key of a JSON object is followed by exactly one `:` outside strings, and a repeated key leaves one entry
    fewer in the parsed dict than the pairs written; so the line's `:` bytes, less those inside its strings,
    number more than the parsed objects' entries exactly when some object repeats a key. A line with an escaped `:`
    (`\\u003a`, counted in the decoded strings only) is always parsed again. `text_key`: a top-level key whose string
    value is looked at first (the text, where a `:` is likeliest). False: no key is given twice.
    """
    colons = line.count(b":")
    if type(parsed) is dict and colons == len(parsed):  # a flat record without ':' in its strings: the common case
        return False
    if ESCAPED_COLON in line:
        return True
    text = parsed.get(text_key) if text_key is not None and type(parsed) is dict else None
    text_colons = text.count(":") if type(text) is str else 0
    if type(parsed) is dict and colons - text_colons == len(parsed):  # a flat record with ':' in its text alone
        return False
    entries = entries_of(parsed)
    if colons == entries or colons - text_colons == entries:  # no ':' in strings, or only in the text
        return False
    return colons - colons_in_strings(parsed) > entries


def entries_of(parsed: Any) -> int:
    """How many entries the dicts in a parsed JSON value hold together (not recursive: a line nested deeper than
    Python's stack parses in json's C scanner)."""
    entries, stack = 0, [parsed]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            entries += len(value)
            value = value.values()
        elif type(value) is not list:
            continue
        for item in value:
            if type(item) is dict or type(item) is list:
                stack.append(item)
    return entries


def colons_in_strings(parsed: Any) -> int:
    """How many `:` the strings (keys and values) of a parsed JSON value hold together (not recursive)."""
    count, stack = 0, [parsed]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            for key in value:
                count += key.count(":")
            value = value.values()
        elif type(value) is not list:
            continue
        for item in value:
            if type(item) is str:
                count += item.count(":")
            elif type(item) is dict or type(item) is list:
                stack.append(item)
    return count


def key_names(columns: Iterable[str]) -> ReadKeys:
    """The JSON keys a column path may read: the path itself and each of its dotted segments, list positions cut
    (`turns[1].text` -> turns[1].text, turns, text)."""
    columns = list(columns)
    names: set[str] = set()
    for column in columns:
        names.add(column)
        names.update(re.sub(r"(\[-?\d+\])+$", "", part) for part in column.split("."))
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
                value = value[i] if isinstance(value, list) and has_item(len(value), i) else Missing
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
