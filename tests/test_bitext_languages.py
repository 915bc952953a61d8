"""How a lang_column value is matched to a side's lang, and how the values present are named when a listed language
has no rows (pipeline.bitext.languages)."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.bitext.languages import LanguageMatchError, candidates, lang_key, languages_present, values_taken


def test_a_code_in_another_script_or_region_is_named_as_the_likely_miss():
    """lang: zh-Hant against data in zh (Simplified by default): not matched, and named as the same language in another
    script; lang: pt-PT against pt-BR the same."""
    said = languages_present(Counter({"zh": 3, "en": 2}), "zh-Hant", "target.lang")
    assert said.startswith("languages present: zh (3), en (2). 'zh' names the language of 'zh-Hant' in another")
    assert "set target.lang to the value as written in the data" in said
    assert "'pt-BR' names the language of 'pt-PT'" in languages_present(Counter({"pt-BR": 1}), "pt-PT", "source.lang")
    assert languages_present(Counter({"de": 3, "fr": 2}), "es", "source.lang") == "languages present: de (3), fr (2)"
    assert "only in case, spaces" in languages_present(Counter({"X1": 1}), "x1", "source.lang")


@pytest.mark.parametrize(
    ("code", "values"),
    [
        ("de", ["deu", "deu_Latn", "ger", "DEU", "de-DE", "de"]),  # ISO 639-3 / FLORES / 639-2/B / case / BCP-47
        ("deu_Latn", ["de", "deu"]),
        ("zh", ["zho_Hans", "cmn", "zh-CN"]),  # Mandarin is zh's main member
        ("zh-Hans", ["zh", "cmn_Hans", "zho_Hans"]),
        ("zh-Hant", ["zho_Hant", "zh-TW", "cmn_Hant"]),
        ("pt-BR", ["por_Latn", "pt", "por"]),
        ("ar", ["arb", "arb_Arab", "ara"]),
        ("fra", ["fr ", "FR", "fre"]),
        ("no", ["nob", "nb", "nob_Latn", "NO", "nor", "no-NO"]),  # Tatoeba's and FLORES' Norwegian is Bokmal
        ("nb", ["no", "nob"]),
        ("nn", ["nno", "nno_Latn"]),
        ("he", ["iw", "heb"]),  # deprecated ISO 639-1 codes
        ("id", ["in", "ind_Latn"]),
        ("tl", ["fil", "tgl_Latn"]),
    ],
)
def test_codes_of_one_language_in_any_standard_form_match(code, values):
    """Users bring ISO 639-1, 639-2/B, 639-3, BCP-47 and FLORES codes mixed: `de` against `deu_Latn` was no row."""
    for value in values:
        assert candidates(value, (code, "en")) == (code,), value


@pytest.mark.parametrize(
    ("code", "values"),
    [("zh-Hans", ["zho_Hant", "zh-TW"]), ("zh-Hant", ["zh", "zho_Hans"]), ("pt-BR", ["pt-PT"]), ("sr-Latn", ["sr"])],
)
def test_a_script_or_region_written_in_the_code_is_kept(code, values):
    for value in values:
        assert candidates(value, (code,)) == (), value
    assert candidates("1", ("1", "2")) == ("1",) and candidates("1", ("01",)) == ()  # not codes: as written
    assert candidates("nn", ("nb",)) == candidates("nb", ("nn",)) == ()  # two languages of the macrolanguage no
    assert candidates("arb", ("ary",)) == candidates("pbt_Arab", ("pbu",)) == ()
    assert candidates("yue_Hant", ("zh-Hans",)) == ()  # the script still decides


@pytest.mark.parametrize(
    ("code", "values"),
    [
        ("ps", ["pbt_Arab", "pbt"]),  # FLORES' Pashto (Southern) against ISO 639-1's ps
        ("pbt_Arab", ["ps", "pus", "pus_Arab"]),  # and the other way: a FLORES code against Tatoeba's / ISO's tags
        ("qu", ["quy_Latn", "quy"]),
        ("quy_Latn", ["qu", "que"]),
        ("ar", ["ary_Arab"]),  # the data's only Arabic
        ("lv", ["ltg_Latn"]),
        ("zh", ["yue_Hant"]),
        ("no", ["nn", "nno_Latn"]),
    ],
)
def test_a_macrolanguage_and_its_individual_language_match_when_the_data_holds_nothing_closer(code, values):
    """FLORES-200 writes Pashto pbt_Arab and Quechua quy_Latn, individual languages of the macrolanguages ISO 639-1's
    ps and qu name (Tatoeba: pus, que): lang: ps against FLORES was 'no rows with lang == 'ps'', and lang: pbt_Arab
    against ps-tagged data the same. pbt's script is its macrolanguage's (langcodes gave English's Latn)."""
    for value in values:
        assert candidates(value, (code, "en")) == (code,), value
        assert values_taken(Counter({(code, value): 3}), {code: "source.lang"}) == {code: [value]}


def test_a_code_takes_its_own_language_before_a_relative_and_refuses_two_relatives():
    """zh against Mandarin and Cantonese takes Mandarin; no against Bokmal and Nynorsk takes Bokmal; ar against
    Moroccan and Egyptian Arabic alone cannot choose; a value of the code's own language goes to that code alone."""
    assert values_taken(Counter({("zh", "cmn"): 3, ("zh", "yue"): 2}), {"zh": "k"}) == {"zh": ["cmn"]}
    assert values_taken(Counter({("no", "nob"): 3, ("no", "nno"): 2}), {"no": "k"}) == {"no": ["nob"]}
    assert values_taken(Counter({("ps", "pbt_Arab"): 2, ("ps", "pbt"): 1}), {"ps": "k"}) == {"ps": ["pbt", "pbt_Arab"]}
    matched = Counter({("ar", "ary_Arab"): 3, ("ar", "arz_Arab"): 2})
    with pytest.raises(
        LanguageMatchError, match=r"'ar' is ambiguous.*ary_Arab \(3 rows, ary\), arz_Arab \(2 rows, arz"
    ):
        values_taken(matched, {"ar": "source.lang"})
    assert candidates("nno", ("no", "nn")) == ("nn",) and candidates("yue", ("zh", "yue")) == ("yue",)


def test_a_bare_code_against_two_scripts_is_ambiguous_and_a_code_written_in_the_data_says_which():
    matched = Counter({("zh", "zho_Hans"): 5, ("zh", "zho_Hant"): 4})
    with pytest.raises(LanguageMatchError, match=r"'zh' is ambiguous.*zho_Hans \(5 rows, Hans\), zho_Hant \(4 rows"):
        values_taken(matched, {"zh": "source.lang"})
    # zh as written is in the data: it is the Simplified one, with cmn; zh-Hant stays other language
    matched = Counter({("zh", "zh"): 5, ("zh", "cmn"): 2, ("zh", "zh-Hant"): 4})
    assert values_taken(matched, {"zh": "source.lang"}) == {"zh": ["cmn", "zh"]}
    # regions of one script are one language
    assert values_taken(Counter({("pt", "pt-BR"): 1, ("pt", "pt-PT"): 2}), {"pt": "k"}) == {"pt": ["pt-BR", "pt-PT"]}


def test_a_value_naming_two_listed_codes_is_refused():
    matched = Counter({("de", "deu_Latn"): 3, ("deu", "deu_Latn"): 3})
    with pytest.raises(LanguageMatchError, match=r"deu_Latn \(6 rows\) names the language of 'de', 'deu'"):
        values_taken(matched, {"de": "source.lang", "deu": "source.lang"})


def test_a_lang_value_follows_the_id_rule_for_numbers():
    """pandas writes an integer lang column with a missing value as float64: `lang: 1` found no rows ('languages
    present: 1.0 (3), nan (1)'), and NaN was a language 'nan'. An integral float is that integer, NaN a null, as for
    ids (pipeline.row_ids); bytes (a binary column) are their text."""
    assert [lang_key(v) for v in (1.0, 2, float("nan"), 2.5, None, b"de", "fr")] == [
        "1",
        "2",
        None,
        "2.5",
        None,
        "de",
        "fr",
    ]
    assert candidates(lang_key(1.0), ("1",)) == ("1",)
