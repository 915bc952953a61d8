"""Which recipe made an embeddings file and when two files' vectors are comparable (pipeline.embedding_recipe)."""

from __future__ import annotations

from pipeline.embedding_recipe import describe, differences, file_recipe, first_conflict

E5 = {b"rayembed.model": b".models/multilingual-e5-small", b"rayembed.pooling": b"mean", b"rayembed.prompt": b"query: "}


def test_a_files_recipe_comes_from_its_rayembed_metadata_and_another_tools_file_has_none():
    assert file_recipe(E5) == {
        "model": ".models/multilingual-e5-small",
        "revision": "",
        "pooling": "mean",
        "prompt": "query: ",
    }
    assert file_recipe({"rayembed.model": "m"})["model"] == "m"  # str keys, as a reader may give them
    assert file_recipe(None) is None
    assert file_recipe({b"pandas": b"{}"}) is None  # pandas / sentence-transformers / TEI exports
    assert file_recipe({b"rayembed.pooling": b"mean"}) is None  # no model: nothing to compare by


def test_what_is_really_the_same_recipe_is_accepted():
    e5 = file_recipe(E5)
    for same in (
        {**e5, "model": "/work/x/.models/multilingual-e5-small/"},  # the folder another run was started from
        {**e5, "model": "intfloat/multilingual-e5-small"},  # the hub name of the local copy
        {**e5, "revision": "main"},  # the default branch
        {**e5, "pooling": "auto"},  # does not say which
    ):
        assert differences(e5, same) == [], same


def test_another_model_pooling_prompt_or_revision_is_a_difference():
    e5 = file_recipe(E5)
    assert differences(e5, {**e5, "model": ".models/all-minilm-l6-v2"}) == ["model"]  # also 384 wide
    assert differences(e5, {**e5, "pooling": "cls", "prompt": "passage: "}) == ["pooling", "prompt"]
    assert differences({**e5, "revision": "abc123"}, {**e5, "revision": "def456"}) == ["revision"]
    assert differences(e5, {**e5, "prompt": ""}, ("model", "pooling")) == []


def test_the_first_conflict_names_both_files_what_differs_and_how_many_files_differ():
    e5, minilm = file_recipe(E5), {**file_recipe(E5), "model": "all-minilm-l6-v2", "prompt": ""}
    files = [("a/part-0", None), ("a/part-1", e5), ("b/part-0", minilm), ("b/part-1", minilm), ("a/part-2", e5)]
    conflict = first_conflict(files)
    assert (conflict.first, conflict.other, conflict.keys) == ("a/part-1", "b/part-0", ["model", "prompt"])
    said = conflict.message("input.uri x", "Fix it.")
    assert said.startswith("input.uri x mixes embeddings of different recipes (model: '.models/multilingual-e5-small'")
    assert "a/part-1 has model .models/multilingual-e5-small, pooling mean, prompt 'query: '" in said
    assert "b/part-0 has model all-minilm-l6-v2, pooling mean, prompt ''" in said
    assert "(2 files differ from the first so)" in said and said.endswith("Fix it.")
    assert first_conflict([("a", e5), ("b", None), ("c", {**e5, "model": "/m/multilingual-e5-small"})]) is None
    assert "revision" not in describe(e5)
