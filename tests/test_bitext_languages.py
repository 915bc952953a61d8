"""How a listed language with no rows names the values present (pipeline.bitext.languages)."""

from __future__ import annotations

from collections import Counter

from pipeline.bitext.languages import languages_present


def test_a_code_with_a_script_or_region_is_named_as_the_likely_miss():
    """lang: deu against a column written in FLORES' form (deu_Latn) listed 'deu_Latn (5)' with no word, though it is
    the likeliest reason for the miss; the other way round too (lang: zh-Hans, data zh)."""
    said = languages_present(Counter({"deu_Latn": 5, "fra_Latn": 4}), "deu", "source.lang")
    assert said.startswith("languages present: deu_Latn (5), fra_Latn (4). 'deu_Latn' names the language of 'deu'")
    assert "set source.lang to the value as written in the data" in said
    said = languages_present(Counter({"zh": 3, "en": 2}), "zh-Hans", "target.lang")
    assert "'zh' names the language of 'zh-Hans' with a script or region" in said
    assert languages_present(Counter({"de": 3, "fr": 2}), "deu", "source.lang") == "languages present: de (3), fr (2)"
    assert "only in case, spaces" in languages_present(Counter({"DEU": 1}), "deu", "source.lang")
