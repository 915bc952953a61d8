from __future__ import annotations

import pytest

from pipeline.config import ModelConfig
from pipeline.prompts import PromptNameError, resolve_prompt

PROMPTS = {"query": "Instruct: find\nQuery: ", "document": "", "classification": "Classify: "}


def test_explicit_prompt_beats_everything():
    assert resolve_prompt(ModelConfig(prompt="P: ", task="t"), "query", PROMPTS) == "P: "


def test_prompt_name_from_model_config():
    assert resolve_prompt(ModelConfig(prompt_name="classification"), "document", PROMPTS) == "Classify: "


def test_unknown_prompt_name_lists_known_ones():
    with pytest.raises(ValueError, match="known: classification, document, query"):
        resolve_prompt(ModelConfig(prompt_name="search"), "query", PROMPTS)


def test_queries_get_instruction_documents_none():
    assert resolve_prompt(ModelConfig(), "query", PROMPTS) == "Instruct: find\nQuery: "
    assert resolve_prompt(ModelConfig(), "document", PROMPTS) == ""
    assert resolve_prompt(ModelConfig(task="Retrieve passages"), "query", {}) == (
        "Instruct: Retrieve passages\nQuery: "
    )
    assert resolve_prompt(ModelConfig(task="Retrieve passages"), "document", {}) == ""


@pytest.mark.parametrize(
    "prompts, default, kind, expected",
    [
        ({"query": "query: ", "passage": "passage: "}, None, "document", "passage: "),  # e5-style
        ({"query": "q: ", "corpus": "c: ", "passage": "p: "}, None, "document", "p: "),  # passage before corpus
        ({"query": "q: ", "corpus": "c: "}, None, "document", "c: "),
        ({"document": "d: ", "passage": "p: "}, None, "document", "d: "),
        ({"query": "q: ", "retrieval": "r: "}, "retrieval", "document", "r: "),  # default_prompt_name
        ({"query": "q: ", "retrieval": "r: "}, "retrieval", "query", "q: "),
        ({"retrieval": "r: "}, "retrieval", "query", "r: "),
        ({"query": "q: "}, None, "document", ""),  # documents never get the query prompt
        ({}, None, "document", ""),
    ],
)
def test_prompt_by_role_as_sentence_transformers(prompts, default, kind, expected):
    assert resolve_prompt(ModelConfig(), kind, prompts, default) == expected


@pytest.mark.parametrize(
    "model_query, expected",
    [
        ("Instruct: Given a web search query, retrieve relevant passages\nQuery:", "Instruct: Find laws\nQuery:"),
        ("Instruct: Retrieve\nQuery: ", "Instruct: Find laws\nQuery: "),  # e5-mistral, harrier
        ("query: ", "Instruct: Find laws\nQuery: "),  # another shape: the harrier template
        (None, "Instruct: Find laws\nQuery: "),
    ],
)
def test_task_keeps_the_model_own_instruction_ending(model_query, expected):
    """Qwen3-Embedding was trained on `Instruct: {task}\\nQuery:{query}` (no space): model.task must not add one."""
    prompts = {"query": model_query} if model_query is not None else {}
    assert resolve_prompt(ModelConfig(task="Find laws"), "query", prompts) == expected


def test_null_prompts_count_as_not_declared():
    """sentence-transformers saves null placeholders (it reads them as ""); they must not become a None prefix,
    which failed every row in the tokenizer ("object of type 'NoneType' has no len()")."""
    from pipeline.prompts import declared_prompts

    prompts = declared_prompts({"prompts": {"query": None, "document": None, "passage": "p: "}})
    assert prompts == {"passage": "p: "}
    assert resolve_prompt(ModelConfig(), "document", prompts) == "p: "
    assert resolve_prompt(ModelConfig(), "query", prompts) == ""
    assert declared_prompts({"prompts": None}) == declared_prompts({}) == {}


def test_an_unknown_prompt_name_is_one_error_line_of_the_job(tiny_models, tmp_path, capsys):
    """It was a traceback (a bare ValueError on the driver), exit 1; now the job's `error:` line, before Ray starts."""
    import json
    import shutil

    from jobs.embed import main

    model = tmp_path / "model"
    shutil.copytree(tiny_models["bert"], model)
    (model / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "q: ", "doc": "d: "}}))
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(f"input: {{uri: {tmp_path / 'in.jsonl'}}}\noutput: {{uri: {tmp_path / 'out'}}}\n")
    assert (
        main(["--config", str(config), "--set", f"model.name_or_path={model}", "--set", "model.prompt_name=search"])
        == 1
    )
    err = capsys.readouterr().err
    assert f"error: model.prompt_name 'search' is not a prompt of the model {model}; known: doc, query" in err
    assert "Traceback" not in err


def test_a_default_prompt_name_that_names_no_prompt_is_an_error_where_it_would_apply():
    """sentence-transformers refuses to load such a model ('Default prompt name ... not found'); rayembed embedded
    without any prompt, without a word. Where a role prompt, model.prompt or model.prompt_name decides, it is moot."""
    prompts = {"query": "q: "}
    with pytest.raises(
        PromptNameError, match=r"sets default_prompt_name 'classification' .*known: query.*model\.prompt"
    ):
        resolve_prompt(ModelConfig(), "document", prompts, "classification")
    assert resolve_prompt(ModelConfig(), "query", prompts, "classification") == "q: "
    assert resolve_prompt(ModelConfig(prompt=""), "document", prompts, "classification") == ""
    assert resolve_prompt(ModelConfig(prompt_name="query"), "document", prompts, "classification") == "q: "


def test_an_empty_or_null_prompt_name_reads_as_sentence_transformers_reads_it():
    """sentence-transformers 6.2 on these config_sentence_transformers.json files: `default_prompt_name: ""` names
    no prompt (it refuses to load the model; rayembed took "" for "no default" and embedded without a prompt), unless
    a prompt is named "" (then that one); a null prompt named by model.prompt_name or default_prompt_name is the
    empty prompt (rayembed: 'not a prompt of the model', 'names none of its prompts'); a prompt that is not a text,
    or `prompts` that is not a mapping, fails there ('object of type int has no len()') and is refused naming it."""
    from pipeline.prompts import declared_prompts, placeholder_names

    def resolve(config: dict, kind: str = "document", **model) -> str:
        prompts, nulls = declared_prompts(config), placeholder_names(config)
        return resolve_prompt(ModelConfig(**model), kind, prompts, config.get("default_prompt_name"), nulls)

    with pytest.raises(PromptNameError, match=r"default_prompt_name '' .*known: query.*an empty name is not"):
        resolve({"prompts": {"query": "q: "}, "default_prompt_name": ""})
    assert resolve({"prompts": {"": "e: "}, "default_prompt_name": ""}) == "e: "
    nulls = {"prompts": {"query": None, "classification": None, "document": "d: "}}
    assert resolve(nulls, prompt_name="query") == ""
    assert resolve({**nulls, "default_prompt_name": "classification"}, "query") == ""
    assert resolve({"prompts": {"query": "q: "}}, "document", prompt_name="query") == "q: "
    with pytest.raises(PromptNameError, match="known: classification, document, query"):
        resolve(nulls, prompt_name="search")  # a name the config lacks: refused, the null ones listed too
    for config, named in (({"prompts": {"query": 5}}, "prompt 'query' is 5"), ({"prompts": ["q: "]}, "prompts is")):
        with pytest.raises(PromptNameError, match=named):
            resolve(config)
