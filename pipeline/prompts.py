"""Prompt resolution, as sentence-transformers does it: named templates from the model's own config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.config import ModelConfig

log = logging.getLogger(__name__)

ST_CONFIG = "config_sentence_transformers.json"
TASK_TEMPLATE = "Instruct: {task}\nQuery: "


def named_prompts(model_dir: str | Path) -> dict[str, str]:
    """Prompts declared in the model's config_sentence_transformers.json ({} when it has none)."""
    path = Path(model_dir) / ST_CONFIG
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("prompts") or {})


def resolve_prompt(model: ModelConfig, kind: str, prompts: dict[str, str]) -> str:
    """The prefix every text of this corpus gets.

    Order: explicit `prompt` > `prompt_name` > `task` (queries only) > the model's prompt named after the corpus
    kind ("query"/"document") when it has one > none. Documents never get the query instruction.
    """
    if model.prompt is not None:
        return model.prompt
    if model.prompt_name is not None:
        if model.prompt_name not in prompts:
            known = ", ".join(sorted(prompts)) or "none: the model has no config_sentence_transformers.json prompts"
            raise ValueError(f"model.prompt_name {model.prompt_name!r} is not a prompt of the model; known: {known}")
        return prompts[model.prompt_name]
    if kind == "query" and model.task is not None:
        return TASK_TEMPLATE.format(task=model.task)
    if kind == "query" and "query" not in prompts:
        log.warning("input.kind is 'query' but the model declares no 'query' prompt and no model.task is set")
    return prompts.get(kind, "")
