"""What counts as nothing to embed, and lone surrogates anywhere in a value."""

from __future__ import annotations

import json

import pytest

from pipeline.text_content import has_visible, lone_surrogate, text_reject_reason

INVISIBLE = {
    "zero-width space": "\u200b\u200b",
    "LRM/RLM marks": "\u200e\u200f",
    "BOM character": "\ufeff",
    "word joiner": "\u2060",
    "soft hyphen": "\u00ad",
    "ZWJ/ZWNJ": "\u200d\u200c",
    "mixed with spaces": " \u200b\u00a0\u200d\t",
    "variation selector": "\ufe0f",
    "Hangul filler": "\u3164",
    "tag characters": "\U000e0041\U000e007f",
    "line/paragraph separators": "\u2028\u2029",
    "Braille pattern blank": "\u2800\u2800",
    "Braille blank and spaces": " \u2800 \u3000",
    "musical null notehead": "\U0001d159\U0001d159",
    "reserved default-ignorable (unassigned)": "\u2065\ufff0\ufff8",
}


@pytest.mark.parametrize("text", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_text_with_no_visible_character_is_rejected(text):
    assert not has_visible(text)
    assert text_reject_reason(text) in (
        "text has no visible characters (only invisible format characters such as zero-width spaces or marks)",
        "empty or whitespace-only text",
    )


@pytest.mark.parametrize(
    "text", ["a\u200b", "\u200b\u00e9", "\U0001f600", "\ue000", "\u0301", "\U0001fae8", "ー", "\u2800\u2801"]
)
def test_any_visible_character_is_content(text):
    # combining marks, private use and (for this Unicode database) unassigned emoji all count as visible
    assert has_visible(text)
    assert text_reject_reason(text) is None


@pytest.mark.parametrize(
    "text", ["\u0600", "\u06dd\u0661", "\u070f", "\u0890", "\u08e2", "\U000110bd", "\U000110cd", "\u200b\u06dd"]
)
def test_format_characters_that_draw_a_glyph_are_content(text):
    # Prepended_Concatenation_Mark (Cf): the Arabic number sign and end of ayah draw a glyph over what follows
    assert has_visible(text)
    assert text_reject_reason(text) is None


def test_control_only_and_whitespace_keep_their_reasons():
    assert text_reject_reason("\x00\x01\x1b") == "text has only control characters"
    assert text_reject_reason(" \n\t") == "empty or whitespace-only text"
    assert text_reject_reason("") == "empty or whitespace-only text"


def test_lone_surrogates_in_text_and_nested_values():
    cut = json.loads('"cut in the middle of an emoji \\ud83d here."')
    assert text_reject_reason(cut) == "invalid Unicode in text: lone surrogate U+D83D at character 30"
    assert lone_surrogate({"a": [1, {"b": "x\udc00"}]}) == "lone surrogate U+DC00 at character 1"
    assert lone_surrogate({"\ud800": 1}) == "lone surrogate U+D800 at character 0"
    assert lone_surrogate(["fine", 3, None, "\U0001f600"]) is None


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"caf\xe9", "0xE9, 'é' in Latin-1/cp1252"),  # a Latin-1 letter inside a word
        (b"Stra\xdfe", "0xDF, 'ß' in Latin-1/cp1252"),
        (b"\x93quoted\x94", "0x93, '“' in cp1252"),  # a Word export's quotes
        (b"d\xe9j\xe0 vu, caf\xc3\xa9", None),  # valid UTF-8 beside: a UTF-8 text with a broken character
        (b"bad \xff byte", None),  # not inside a word
        (b"\x81x", None),  # no character in cp1252
    ],
)
def test_invalid_utf8_names_a_single_byte_encoding_only_where_the_text_looks_like_one(data, named):
    reason = text_reject_reason(data)
    assert reason.startswith("invalid UTF-8 at byte ")
    if named is None:
        assert reason.startswith("invalid UTF-8 at byte ") and "(" not in reason, reason
    else:
        assert f"({named}): the text looks like a single-byte encoding, not UTF-8; re-encode" in reason, reason
