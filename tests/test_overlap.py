"""An output location that holds an input, or lies inside an input directory, is a configuration error of every job
(pipeline/overlap.py); `output.overwrite` used to delete the corpus."""

from __future__ import annotations

import json

import pytest

from pipeline.cluster_config import ClusterConfig
from pipeline.config import ConfigError, EmbedConfig, load_config, parse_config
from pipeline.mine_config import MineConfig
from pipeline.overlap import overlap_error


@pytest.mark.parametrize(
    "output, inp, verdict",
    [
        ("/d", "/d/corpus.jsonl", "contains"),  # the file's own directory: overwrite deleted it
        ("/d", "/d/corpus", "contains"),
        ("/d/corpus/", "/d/corpus", "is the input"),
        ("/", "/d/corpus", "contains"),
        ("/d/corpus/emb", "/d/corpus", "is inside"),  # the next run lists emb/part-*.parquet as input
        ("/d/corpus", "/d/corpus/**/*.jsonl", "contains"),
        ("/d/corpus/emb", "/d/corpus/**/*.parquet", "is inside"),
        ("/d/corpus/emb", "/d/corpus/*/*.parquet", "is inside"),
        ("/d/corpus/emb", "/d/corpus/*.jsonl", None),  # the glob lists no file of emb/
        ("/d/corpus/emb", "/d/corpus/*/*.jsonl", None),
        ("/d/corpus/emb", "/d/corpus/*", "is inside"),  # a folder the glob names is read whole
        ("/d/corpus/emb", "/d/corpus/{emb,2024}", "is inside"),
        ("/d/corpus/emb/v1", "/d/corpus/e*", "is inside"),
        ("/d/corpus/emb", "/d/corpus/{2023,2024}", None),
        ("/d/corpus/_emb", "/d/corpus", None),  # `_` folders are never listed as input
        ("/d/corpus/.cache/emb", "/d/corpus", None),
        ("/d/corpus2", "/d/corpus", None),  # whole segments, not string prefixes
        ("/d/corp", "/d/corpus", None),
        ("/d/out", "/d/corpus", None),
        ("s3://b", "s3://b/corpus/x.jsonl", "contains"),
        ("s3://b/corpus//emb", "s3://b/corpus", "is inside"),
        ("s3://b/corpus2", "s3://b/corpus", None),
        ("s3://other/corpus", "s3://b/corpus", None),
        ("/b/corpus", "s3://b/corpus", None),  # another filesystem
    ],
)
def test_overlap_is_decided_by_whole_path_segments(output, inp, verdict):
    error = overlap_error("output.uri", output, "input.uri", inp)
    if verdict is None:
        assert error is None
    else:
        assert error is not None and verdict in error and output in error and inp in error


def test_relative_paths_dots_and_symbolic_links_are_resolved(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert "contains" in overlap_error("output.uri", "link", "input.uri", "data/corpus.jsonl")
    assert "is the input" in overlap_error("output.uri", "./x/../data/", "input.uri", "data")
    assert "contains" in overlap_error("output.uri", "~/..", "input.uri", "data")  # ~ is the user's home
    assert overlap_error("output.uri", "out", "input.uri", "data") is None


def test_the_embed_job_refuses_an_output_that_holds_its_input_and_keeps_it(tmp_path, capsys):
    """`output.overwrite: true` with the output at the corpus's directory deleted the corpus before reading it
    ("cannot read .../corpus.jsonl: No such file or directory"); it is now exit 2, naming both keys."""
    from jobs.embed import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": "hello"}) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"input: {{uri: {corpus}}}\noutput: {{uri: out, overwrite: true}}\n")
    assert main(["--config", str(config), "--set", f"output.uri={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"output.uri ({tmp_path}) contains the input input.uri ({corpus})" in err
    assert "Traceback" not in err
    assert corpus.read_text() == json.dumps({"text": "hello"}) + "\n"


@pytest.mark.parametrize(
    "model, raw, message",
    [
        (
            ClusterConfig,
            {"input": {"uri": "/d/emb"}, "output": {"uri": "/d/emb/clusters"}, "clustering": {"k": 2}},
            "output.uri (/d/emb/clusters) is inside the input input.uri (/d/emb)",
        ),
        (
            MineConfig,
            {
                "source": {"uri": "/d/fr.jsonl", "lang": "fra"},
                "target": {"uri": "/d/en.jsonl", "lang": "eng", "embeddings_uri": "/e/en"},
                "output": {"uri": "/e"},
            },
            "output.uri (/e) contains the input target.embeddings_uri (/e/en)",
        ),
        (
            MineConfig,
            {
                "source": {"uri": "/d/fr.jsonl", "lang": "fra"},
                "target": {"uri": "/d/en.jsonl", "lang": "eng"},
                "output": {"uri": "/d"},
            },
            "output.uri (/d) contains the input source.uri (/d/fr.jsonl)",
        ),
    ],
)
def test_every_job_refuses_an_output_over_its_inputs(model, raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(")", "\\)")):
        parse_config(model, raw)


@pytest.mark.parametrize("key", ["input.uri", "output.uri", "model.name_or_path"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_location_is_refused(key, value, tmp_path):
    """`--set output.uri=$OUT` with OUT unset gave "": the current directory, which output.overwrite emptied."""
    config = tmp_path / "c.yaml"
    config.write_text("input: {uri: /d/in.jsonl}\noutput: {uri: /d/out, overwrite: true}\n")
    with pytest.raises(ConfigError, match=f"--set {key}={value}: {key}: Value error, is empty"):
        load_config(EmbedConfig, config, [f"{key}={value}"])
