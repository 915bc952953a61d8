from __future__ import annotations

import pytest

from pipeline.config import ModelConfig
from pipeline.prompts import resolve_prompt

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
