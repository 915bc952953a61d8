"""Language values of a `lang_column`: how a row's value is matched to a side's `lang`, and how the values present
are named when a listed language has no rows.

A value matches `lang` by its string form (an integer column's 1 is the language "1"); a null is no language. The
error lists the values as they must be written in `lang`, quoted where a plain listing would hide a difference
(surrounding spaces, a newline, an empty string), and names a value that differs from `lang` only in case, spaces
or '-'/'_', or by a script or region suffix (deu_Latn for deu: the likeliest reasons for the miss).
"""

from __future__ import annotations

from collections import Counter

SHOWN = 40  # values listed in the error, most rows first


def lang_key(value: object) -> str | None:
    """The language a row's `lang_column` value names: its string form; None for a null."""
    return None if value is None else str(value)


def shown(value: str | None) -> str:
    """A value as the error lists it: plain when that is unambiguous, else quoted (repr)."""
    if value is None:
        return "null"
    plain = value and value == value.strip() and value.isprintable() and value != "null"
    return value if plain else repr(value)


def loose(value: str) -> str:
    """The form two spellings of one code share: no surrounding spaces, case folded, '_' as '-'."""
    return value.strip().casefold().replace("_", "-")


def base(value: str) -> str:
    """The language part of a code with a script or region: 'deu' of 'deu_Latn', 'zh' of 'zh-Hans' (loose form)."""
    return loose(value).split("-")[0]


def languages_present(present: Counter, lang: str, key: str) -> str:
    """'languages present: eng (4), 'fra ' (4)' and, when a value differs from `lang` only loosely, a hint.

    Args:
        present: rows per language value seen (None for null values).
        lang: the configured language that has no rows.
        key: the config key to fix, e.g. 'source.lang'.
    """
    ordered = sorted(present.items(), key=lambda item: (-item[1], "" if item[0] is None else item[0]))
    listing = ", ".join(f"{shown(value)} ({rows})" for value, rows in ordered[:SHOWN])
    more = f" and {len(ordered) - SHOWN} more" if len(ordered) > SHOWN else ""
    near = [value for value, _ in ordered if value is not None and value != lang and loose(value) == loose(lang)]
    # the same language with a script or region (FLORES' deu_Latn against deu, or the other way round)
    tagged = [v for v, _ in ordered if v is not None and v != lang and v not in near and base(v) == base(lang)]
    hint = ""
    if near:
        spelled = ", ".join(repr(value) for value in near[:5])
        hint = (
            f". {spelled} differs from {lang!r} only in case, spaces or '-'/'_': values are matched exactly, so set "
            f"{key} to the value as written in the data (a list may hold several), or clean the column"
        )
    elif tagged:
        spelled = ", ".join(repr(value) for value in tagged[:5])
        hint = (
            f". {spelled} names the language of {lang!r} with a script or region: values are matched exactly, so "
            f"set {key} to the value as written in the data (a list may hold several), or clean the column. A "
            "two-letter and a three-letter code of one language (de, deu) are not matched either"
        )
    return f"languages present: {listing}{more}{hint}"
