"""Is there anything to embed in a value, and is it valid Unicode? Pure Python: the read stage's row checks.

"Nothing to embed" is decided by Unicode category, not by a list of characters someone once met: a text made only
of separators (Z*), controls (Cc), format characters (Cf: zero-width space, LRM/RLM, ZWJ/ZWNJ, word joiner, soft
hyphen, the BOM as a character), default-ignorable code points (variation selectors, Hangul fillers, tags) and the
Braille pattern blank shows nothing, and a model fed only its prompt for it would put every such row on one vector.
Unassigned code points (Cn) and private-use ones (Co) count as visible: an emoji newer than Python's Unicode database
is Cn here, and private-use glyphs carry meaning in the fonts that use them.
"""

from __future__ import annotations

import unicodedata
from typing import Any

INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
# Default_Ignorable_Code_Point ranges outside the categories above (Unicode DerivedCoreProperties.txt): combining
# grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation selectors, the unassigned U+2065 and
# U+FFF0..FFF8 (reserved default-ignorable: Cn, which otherwise counts as visible), variation selectors, tags.
DEFAULT_IGNORABLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0FFF),
)
# Symbols (So) whose glyph is an empty cell: the Braille pattern blank, the usual "invisible character" of chat
# names and spam (Unicode lists it with the blanks in its notes on space characters, not among the Zs), and the
# musical null notehead U+1D159 (an empty glyph, on the same "invisible character" lists).
BLANK_SYMBOLS = ((0x2800, 0x2800), (0x1D159, 0x1D159))
# Format characters (Cf) that draw a glyph: the Prepended_Concatenation_Mark property (Unicode PropList.txt), Arabic
# number signs, end of ayah, Syriac abbreviation mark, Kaithi number signs. A text of only these is visible.
VISIBLE_FORMAT = ((0x0600, 0x0605), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2))
VISIBLE_FORMAT += ((0x110BD, 0x110BD), (0x110CD, 0x110CD))


def is_invisible(char: str) -> bool:
    """True for a character that renders as nothing (whitespace, control, format, default-ignorable, blank symbol).

    Format characters with a glyph (VISIBLE_FORMAT) are visible.
    """
    code = ord(char)
    if char.isspace():
        return True
    if unicodedata.category(char) in INVISIBLE_CATEGORIES:
        return not any(lo <= code <= hi for lo, hi in VISIBLE_FORMAT)
    return any(lo <= code <= hi for lo, hi in (*DEFAULT_IGNORABLE, *BLANK_SYMBOLS))


def has_visible(text: str) -> bool:
    """Whether `text` holds at least one visible character; stops at the first one (usually the first character)."""
    return not all(is_invisible(c) for c in text)


def lone_surrogate(value: Any) -> str | None:
    """Describe the first lone surrogate in a string or in any string inside a JSON-like value, else None.

    `json.loads` accepts a `\\ud83d` escape without its pair (a text cut in the middle of an emoji) and yields a
    Python str that no UTF-8 writer (Arrow, Parquet) can encode. Walks nested values without recursion, so a value
    nested as deep as the JSON parser allows cannot overflow the stack.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as err:
                return f"lone surrogate U+{ord(item[err.start]):04X} at character {err.start}"
        elif isinstance(item, dict):
            for key, inner in reversed(item.items()):
                stack += [inner, key]
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
    return None


def nesting_depth(value: Any, limit: int) -> int:
    """Levels of lists/dicts in a JSON-like value (a scalar is 0), counted without recursion up to `limit` + 1."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((inner, depth) for inner in (item.values() if isinstance(item, dict) else item))
    return deepest


# The usual single-byte encoding of Western European text (a superset of Latin-1's printable characters), and the
# one iconv is told in the hint: a Latin-1 or ISO-8859-15 file converts the same for its letters.
LEGACY_CODEC = "cp1252"
# Non-letters that Western text in cp1252 holds often (a Word export's quotes and dashes, degrees, pounds).
LEGACY_PUNCTUATION = frozenset("‘’‚“”„–—…«»°£§€¡¿")


def invalid_utf8_reason(data: bytes, err: UnicodeDecodeError) -> str:
    """The reject reason of a text that is not valid UTF-8: `invalid UTF-8 at byte N`, and when the text looks like a
    single-byte encoding, what the byte is there and what to do.

    A Latin-1 or cp1252 file with only one or two accented lines is read as UTF-8 (the file-level check in
    pipeline.file_formats needs three such lines in the first 4 KB to tell it from a UTF-8 file with a few broken
    lines): each accented line was a reject `invalid UTF-8 at byte N`, which named no encoding. It looks like such
    text when it holds no valid non-ASCII UTF-8 character (a UTF-8 text with one broken character has others) and
    the byte is, in cp1252, a letter next to an ASCII letter (inside a word: `caf\\xe9`, `Stra\\xdfe`) or a quote,
    dash or symbol such text holds (a Word export's `\\x93quoted\\x94`). Never decoded as cp1252 and embedded:
    which single-byte encoding a line is in cannot be told from a line, and a guess would embed mojibake without a
    word.
    """
    reason = f"invalid UTF-8 at byte {err.start}"
    byte = data[err.start : err.start + 1]
    try:
        char = byte.decode(LEGACY_CODEC)
    except UnicodeDecodeError:
        return reason
    around = data[max(err.start - 1, 0) : err.start] + data[err.start + 1 : err.start + 2]
    in_word = any(chr(b).isalpha() for b in around if b < 0x80)
    if not ((char.isalpha() and in_word) or char in LEGACY_PUNCTUATION) or any(
        ord(c) > 0x7F and c != "\ufffd" for c in data.decode("utf-8", "replace")
    ):
        return reason
    codecs = "Latin-1/cp1252" if byte[0] >= 0xA0 else "cp1252"
    return (
        f"{reason} (0x{byte[0]:02X}, {char!r} in {codecs}): the text looks like a single-byte encoding, not "
        "UTF-8; re-encode the file as UTF-8 (e.g. iconv -f CP1252 -t UTF-8, or the encoding of its language)"
    )


def text_reject_reason(value: Any) -> str | None:
    """Why a text value cannot be embedded (the reject reason), or None when it can.

    Bytes are decoded as strict UTF-8; strings must be encodable as UTF-8 (no lone surrogates) and show at least
    one visible character.
    """
    if value is None:
        return "null text"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return invalid_utf8_reason(value, err)
    if not isinstance(value, str):
        return f"text is {type(value).__name__}, not a string"
    surrogate = lone_surrogate(value)
    if surrogate:
        return f"invalid Unicode in text: {surrogate}"
    if not value.strip():
        return "empty or whitespace-only text"
    if has_visible(value):
        return None
    if all(c.isspace() or unicodedata.category(c) == "Cc" for c in value):
        return "text has only control characters"
    return "text has no visible characters (only invisible format characters such as zero-width spaces or marks)"
