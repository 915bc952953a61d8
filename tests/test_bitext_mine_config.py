from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config, parse_config
from pipeline.mine_config import MineConfig


def raw(**over) -> dict:
    cfg = {
        "source": {"uri": "/data/fr", "format": "text", "lang": "fra"},
        "target": {"uri": "/data/en", "format": "text", "lang": "eng"},
        "output": {"uri": "/out/mined"},
    }
    cfg.update(over)
    return cfg


def test_defaults_follow_the_issue():
    cfg = parse_config(MineConfig, raw())
    m = cfg.mining
    assert (m.k, m.margin, m.retrieval, m.dedup, m.threshold) == (4, "ratio", "max", True, None)


@pytest.mark.parametrize(
    "over,message",
    [
        ({"mining": {"margin": "cosine"}}, "mining.margin"),
        ({"mining": {"retreival": "max"}}, "mining.retreival: Extra inputs are not permitted"),
        ({"mining": {"k": 0}}, "mining.k"),
        ({"source": {"uri": "/a", "format": "text"}}, "source.lang: Field required"),
        ({"output": {"uri": "/o", "keep_columns": ["x"]}}, "keep_columns is not used"),
        ({"model": {"long_inputs": "chunk"}}, "one vector per sentence"),
        ({"target": {"uri": "/data/fr", "format": "text", "lang": "fra"}}, "select the same rows"),
        ({"source": {"uri": "/a", "format": "text", "lang": "x", "lang_column": "l"}}, "needs a columnar input"),
        ({"source": {"uri": "/a", "format": "jsonl", "lang": ["fra", "deu"]}}, "needs lang_column"),
        ({"source": {"uri": "/a", "format": "jsonl", "lang": [], "lang_column": "l"}}, "empty list"),
        (
            {"source": {"uri": "/a", "format": "jsonl", "lang": ["x", "x"], "lang_column": "l"}},
            "lists a language twice",
        ),
        ({"source": {"uri": "/a", "format": "text", "lang": "x", "keep_columns": ["url"]}}, "keep_columns needs"),
        ({"source": {"uri": "/a", "format": "jsonl", "lang": "x", "keep_columns": ["id"]}}, "clash with"),
        ({"mining": {"index": "hnsw"}}, "mining.index"),
        # score windows no pair can be in (the run ended with no pairs and no message)
        (
            {"mining": {"threshold": 1.5, "score_max": 1.2}},
            r"mining.score_max \(1.2\) is below mining.threshold \(1.5\)",
        ),
        (
            {"mining": {"margin": "absolute", "threshold": 1.014}},
            r"mining.threshold 1.014 is above the highest absolute margin \(1\).*ratio ~1.0-1.1",
        ),
        ({"mining": {"margin": "distance", "threshold": 2.5}}, "above the highest distance margin"),
        ({"mining": {"margin": "absolute", "score_max": -1.5}}, "below the lowest absolute margin"),
        # the ratio margin lies in [0, 2k] (docs/bitext.md, Margin scores)
        ({"mining": {"threshold": 8.5}}, r"mining.threshold 8.5 is above the highest ratio margin at mining.k=4 \(8\)"),
        ({"mining": {"score_max": -0.1}}, r"mining.score_max -0.1 is below the lowest ratio margin \(0\)"),
        # k = 1: every mutual-best pair scores exactly 1 (ratio) or 0 (distance)
        (
            {"mining": {"k": 1, "threshold": 1.05}},
            r"threshold 1.05 is above the highest ratio margin at mining.k=1 \(1\)",
        ),
        (
            {"mining": {"k": 1, "margin": "distance", "threshold": 0.01}},
            r"above the highest distance margin at mining.k=1 \(0\)",
        ),
        # a language names folders: 'zh/Hant' nested them and the run failed 'the embed step rejected all 4 rows'
        (
            {"source": {"uri": "/a", "format": "jsonl", "lang": "zh/Hant", "lang_column": "l"}},
            r"source: .*lang 'zh/Hant' cannot name a folder .*: it holds /; use a code without",
        ),
        ({"source": {"uri": "/a", "format": "jsonl", "lang": ["fra", "a%20b"], "lang_column": "l"}}, "it holds %"),
        ({"target": {"uri": "/b", "format": "text", "lang": "x\\y"}}, r"target: .*it holds \\"),
        ({"target": {"uri": "/b", "format": "text", "lang": " "}}, "target: .*lang ' ' is empty; name the language"),
        ({"mining": {"threshold": float("nan")}}, "mining.threshold: Input should be a finite number"),
        ({"mining": {"score_max": float("nan")}}, "mining.score_max: Input should be a finite number"),
    ],
)
def test_bad_configs_name_the_key(over, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(MineConfig, raw(**over))


def test_score_windows_that_can_hold_a_pair_are_accepted():
    for mining in (
        {"threshold": 1.2, "score_max": 1.2},
        {"margin": "absolute", "threshold": 1.0},
        {"margin": "distance", "threshold": 0.05, "score_max": 0.5},
        {"threshold": 8.0},  # the ratio margin's highest at k = 4
        {"k": 1, "margin": "absolute", "threshold": 0.9},
        {"k": 1, "threshold": 1.0},  # k = 1: mutual-nearest-neighbour mining, the mutual-best pairs score 1
        {"k": 1, "margin": "distance", "threshold": 0.0},
        {"k": 1, "threshold": None},
    ):
        cfg = parse_config(MineConfig, raw(mining=mining))
        assert cfg.mining.threshold == mining["threshold"]


def test_shipped_config_loads_with_overrides():
    cfg = load_config(MineConfig, "configs/mine_bitext.yaml", ["mining.k=8", "mining.retrieval=intersect"])
    assert cfg.mining.k == 8 and cfg.mining.retrieval == "intersect"
    assert cfg.source.lang != cfg.target.lang


def test_reused_embeddings_inside_an_output_that_gets_emptied_are_refused():
    over = {
        "source": {
            "uri": "/data/fr",
            "format": "text",
            "lang": "fra",
            "embeddings_uri": "/out/mined/embeddings/source",
        },
        "output": {"uri": "/out/mined", "overwrite": True},
    }
    with pytest.raises(ConfigError, match="inside output.uri"):
        parse_config(MineConfig, raw(**over))


def test_language_lists_give_every_pair_but_a_language_with_itself():
    side = {"uri": "/c", "format": "jsonl", "lang_column": "lang"}
    cfg = parse_config(
        MineConfig, raw(source={**side, "lang": ["fra", "eng", "deu"]}, target={**side, "lang": ["eng", "fra"]})
    )
    assert cfg.multi_pair
    assert cfg.pairs() == [("fra", "eng"), ("eng", "fra"), ("deu", "eng"), ("deu", "fra")]
    assert not parse_config(MineConfig, raw()).multi_pair  # the one-pair form keeps its layout
    with pytest.raises(ConfigError, match="no pair to mine"):
        parse_config(MineConfig, raw(source={**side, "lang": ["eng"]}, target={**side, "lang": ["eng"]}))


def test_an_integer_lang_is_its_decimal_text(tmp_path):
    """A lang_column of integer ids (1, 2) is matched by its values' decimal text (languages.lang_key), but `lang: 1`
    and `lang: [1, 2]` were refused 'Input should be a valid string' (twice, once per form of the union): the text
    is taken. A float or a boolean is still no language."""
    path = tmp_path / "m.yaml"
    path.write_text(
        "source: {uri: c.jsonl, lang: 1, lang_column: l}\ntarget: {uri: c.jsonl, lang: [2, 3], lang_column: l}\n"
        "output: {uri: o}\n"
    )
    cfg = load_config(MineConfig, path)
    assert (cfg.source.lang, cfg.target.lang) == ("1", ["2", "3"])
    assert load_config(MineConfig, path, ["target.lang=[2, de]"]).target.lang == ["2", "de"]
    with pytest.raises(ConfigError, match="source.lang"):
        load_config(MineConfig, path, ["source.lang=[1.5]"])
