"""Language values of a `lang_column`: how a row's value is matched to a side's `lang`, and how the values present
are named when a listed language has no rows.

A value matches `lang` by its string form (an integer column's 1 is the language "1", and so is a float column's 1.0), or, when both are language
codes, by the language they name (`langcodes`: ISO 639-1, 639-2/B and /T, 639-3, BCP-47 and FLORES' `deu_Latn` in any
case, a macrolanguage's main member as the macrolanguage: `cmn` is `zh`, `arb` is `ar`, `nob` is `no`). Failing that, a
macrolanguage and one of its other individual languages (ISO 639-3's table, as langcodes ships it) match when the data
holds nothing closer: FLORES writes Pashto `pbt_Arab` and Quechua `quy_Latn` where Tatoeba and ISO 639-1 write `ps` /
`pus` and `qu` / `que`, so `lang: ps` takes `pbt_Arab` and `lang: pbt_Arab` takes `ps`, but only when the data holds
no value of the code's own language (`lang: zh` against `cmn` and `yue` takes `cmn`), and a macrolanguage against two
of its individual languages (`ar` against `ary_Arab` and `arz_Arab`) is ambiguous (`values_taken`). Two individual
languages of one macrolanguage (`ary` and `arb`) never match. A script or region written
in `lang` must be the value's (its written one, or the one its language and region imply: `zh-TW` is Hant); a bare
`lang` takes every script and region of its language, except that values of several scripts (zho_Hans and zho_Hant
for `zh`) are ambiguous: `values_taken` refuses them, naming them. A value equal to a listed `lang` goes to that one; a
null is no language. The error lists the values as they must be written in `lang`, quoted where a plain listing would
hide a difference, and names a value of the same language in another script or region.

Read tasks match loosely (`candidates`, per value); the driver, which sees every value of the input, decides
(`values_taken`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import langcodes
from langcodes.data_dicts import LIKELY_SUBTAGS, MACROLANGUAGES

SHOWN = 40  # values listed in the error, most rows first

# Main members of a macrolanguage that langcodes (CLDR's table) leaves as their own language because they have a
# two-letter code of their own: Norwegian Bokmal (nb, nob: Tatoeba's and FLORES' Norwegian) is what `no` names in
# practice (CLDR's `no` locale is Bokmal); Nynorsk (nn) stays its own language.
MAIN_MEMBERS = {"nb": "no"}


def lang_key(value: object) -> str | None:
    """The language a row's `lang_column` value names: its string form; None for a null. Numbers follow the id rule
    (pipeline.row_ids): a float with an integral value is that integer (`1.0` is '1': pandas writes an integer column
    with a missing value as float64) and NaN is a null; bytes are their UTF-8 text."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


@dataclass(frozen=True)
class Tag:
    """A language code as langcodes reads it."""

    language: str  # normalized, a macrolanguage's main member as the macrolanguage: 'zh' of cmn, 'de' of deu/ger
    script: str | None  # as written (Hans of zho_Hans), None when not written
    territory: str | None  # as written (BR of pt-BR)
    likely_script: str | None  # written, else implied by language and region (Hant for zh-TW, Latn for de)
    individual: str = ""  # the language before the macrolanguage is preferred: 'arb' of arb_Arab, 'pbt' of pbt_Arab
    macro: str | None = None  # the macrolanguage `individual` belongs to (ISO 639-3): 'ps' of pbt, 'ar' of arb

    def __post_init__(self):
        if not self.individual:
            object.__setattr__(self, "individual", self.language)


@lru_cache(maxsize=8192)
def parse(value: str) -> Tag | None:
    """The language code `value` names (surrounding spaces, case and '_' for '-' ignored); None when it is not one
    (an integer, a language name, an empty string, 'und')."""
    text = value.strip().replace("_", "-")
    try:
        lang = langcodes.Language.get(text, normalize=True)
    except ValueError:  # langcodes' LanguageTagError: not a code
        return None
    if not lang.language or lang.language == "und" or not lang.is_valid():
        return None
    language = lang.prefer_macrolanguage().language
    macro = MACROLANGUAGES.get(lang.language)
    return Tag(
        MAIN_MEMBERS.get(language, language),
        lang.script,
        lang.territory,
        likely_script(lang, macro),
        lang.language,
        macro,
    )


def likely_script(lang: langcodes.Language, macro: str | None) -> str | None:
    """The written script, else the one its language (and region) imply. An individual language CLDR has no likely
    script for (pbt, quy) takes its macrolanguage's (Arab for ps): langcodes' fallback is English's Latn."""
    if lang.script or lang.language in LIKELY_SUBTAGS or macro is None:
        return lang.maximize().script
    return langcodes.Language.get(macro).maximize().script


def names(code: str, value: str) -> bool:
    """Whether a data value names the language of a configured code (not deciding ambiguity: `values_taken`)."""
    if code == value:
        return True
    c, v = parse(code), parse(value)
    if c is None or v is None or c.language != v.language:
        return False
    if c.territory and v.territory and c.territory != v.territory:
        return False
    # a script or region in the code says which script; a bare code takes all (resolve decides)
    return not (c.script or c.territory) or c.likely_script == v.likely_script


def by_macrolanguage(code: str, value: str) -> bool:
    """Whether a data value and a configured code are a macrolanguage and one of its other individual languages
    (ps and pbt_Arab, either way round; no and nn), which `names` does not match. Two individual languages of one
    macrolanguage (ary, arb) are not. The script or region written in the code must be the value's, as in `names`.
    `values_taken` takes such values only when the data holds none of the code's own language."""
    c, v = parse(code), parse(value)
    if c is None or v is None or c.language == v.language:
        return False
    macro_code = v.macro is not None and c.language == v.macro and c.individual == c.language
    macro_value = c.macro is not None and v.language == c.macro and v.individual == v.language
    if not (macro_code or macro_value):
        return False
    if c.territory and v.territory and c.territory != v.territory:
        return False
    return not (c.script or c.territory) or c.likely_script == v.likely_script


@lru_cache(maxsize=8192)
def candidates(value: str | None, codes: tuple[str, ...]) -> tuple[str, ...]:
    """The listed codes a data value may belong to: itself when listed, else every code it names, else every code it
    is related to by a macrolanguage (`by_macrolanguage`: the driver takes those only where nothing closer is)."""
    if value is None:
        return ()
    if value in codes:
        return (value,)
    named = tuple(code for code in codes if names(code, value))
    return named or tuple(code for code in codes if by_macrolanguage(code, value))


class LanguageMatchError(ValueError):
    """The values of a lang_column cannot be given to the listed codes without a guess."""


def values_taken(matched: Counter, keys: dict[str, str]) -> dict[str, list[str]]:
    """Which data values each listed code takes, from the rows per (code, value) the read tasks matched loosely.

    A code present in the data as written takes the values of its script (`zh` with data zh, cmn and zh-Hant: zh and
    cmn); a bare code against values of several scripts, and a value that names two listed codes, are refused. A code
    takes values related to it by a macrolanguage alone (`by_macrolanguage`: pbt_Arab for ps) only when none of its
    own language is there, and those of one individual language only (ar against ary_Arab and arz_Arab is refused).

    Args:
        matched: rows per (code, data value) as `candidates` gave them.
        keys: the listed codes of one input, each with the config key that lists it ('source.lang').

    Returns:
        code -> its data values (sorted), for codes with rows.

    Raises:
        LanguageMatchError: naming the values, their rows and what to set.
    """
    codes = tuple(keys)
    by_value: dict[str, list[str]] = {}
    for code, value in matched:
        by_value.setdefault(value, []).append(code)
    for value, owners in sorted(by_value.items()):
        if len(owners) > 1:
            listed = ", ".join(repr(c) for c in sorted(owners))
            key = " and ".join(sorted({keys[c] for c in owners}))
            raise LanguageMatchError(
                f"{key}: the data's {shown(value)} ({sum(matched[(c, value)] for c in owners)} rows) names the "
                f"language of {listed}, each listed: its rows would be mined as two languages. List one code per "
                f"language in {key}, or write the data's own values (a list may hold several)"
            )
    taken: dict[str, list[str]] = {}
    for code in codes:
        values = sorted(v for c, v in matched if c == code)
        if not values:
            continue
        own = parse(code)
        closest = [v for v in values if v == code or names(code, v)]
        if closest:
            values = closest  # values related by a macrolanguage alone stay other languages
        elif len({parse(v).individual for v in values}) > 1:
            listed = ", ".join(f"{shown(v)} ({matched[(code, v)]} rows, {parse(v).individual})" for v in values)
            key = keys[code]
            raise LanguageMatchError(
                f"{key}: {code!r} is ambiguous: the data holds no {code!r} itself but several languages of the "
                f"macrolanguage {own.language!r}, {listed}. Set {key} to the value of the language to mine (a list "
                "may hold several, each mined as its own language)"
            )
        if code in values and own is not None:  # the data has the code as written: it says which script
            script = own.likely_script
            values = [v for v in values if v == code or (parse(v) and parse(v).likely_script == script)]
        elif own is not None and not (own.script or own.territory):
            scripts = {v: parse(v).likely_script for v in values}
            if len(set(scripts.values())) > 1:
                listed = ", ".join(f"{shown(v)} ({matched[(code, v)]} rows, {scripts[v]})" for v in values)
                key = keys[code]
                raise LanguageMatchError(
                    f"{key}: {code!r} is ambiguous: the data holds its language in several scripts, {listed}, and "
                    f"a bare code does not say which. Set {key} to the value of the script to mine (a list may hold "
                    "several, each mined as its own language), or add the script to the code (zh-Hant)"
                )
        taken[code] = values
    return taken


def shown(value: str | None) -> str:
    """A value as the error lists it: plain when that is unambiguous, else quoted (repr)."""
    if value is None:
        return "null"
    plain = value and value == value.strip() and value.isprintable() and value != "null"
    return value if plain else repr(value)


def loose(value: str) -> str:
    """The form two spellings of one code share: no surrounding spaces, case folded, '_' as '-'."""
    return value.strip().casefold().replace("_", "-")


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
    own = parse(lang)
    # the same language in another script or region (zh against zh-Hant, pt-PT against pt-BR)
    tagged = [
        v
        for v, _ in ordered
        if v is not None and v not in near and own and parse(v) and parse(v).language == own.language
    ]
    hint = ""
    if near:
        spelled = ", ".join(repr(value) for value in near[:5])
        hint = (
            f". {spelled} differs from {lang!r} only in case, spaces or '-'/'_', and is not a language code, so it is "
            f"matched as written: set {key} to the value as written in the data (a list may hold several), or clean "
            "the column"
        )
    elif tagged:
        spelled = ", ".join(repr(value) for value in tagged[:5])
        hint = (
            f". {spelled} names the language of {lang!r} in another script or region: codes match across ISO 639-1, "
            "639-2, 639-3, BCP-47 and FLORES forms, but a script or region written in the code must be the data's; "
            f"set {key} to the value as written in the data (a list may hold several), or clean the column"
        )
    return f"languages present: {listing}{more}{hint}"
