"""Prompt resolution, as sentence-transformers does it: named templates from the model's own config."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from pipeline.config import ModelConfig
from pipeline.errors import UserError

log = logging.getLogger(__name__)

ST_CONFIG = "config_sentence_transformers.json"
TASK_TEMPLATE = "Instruct: {task}\nQuery: "
# A model's own query prompt in the instruction style (Qwen3-Embedding: "Instruct: ...\nQuery:", no space;
# e5-mistral, harrier: "...\nQuery: "): model.task replaces its instruction and keeps the model's own ending.
INSTRUCTION_PROMPT = re.compile(r"Instruct: .*\nQuery:(\s*)", re.DOTALL)


# sentence-transformers' encode_document tries these prompt names in order (SentenceTransformer.encode_document).
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
QUERY_PROMPT_NAMES = ("query",)


class PromptNameError(UserError, ValueError):
    """model.prompt_name names no prompt of the model; the job prints it as one `error:` line, not a traceback."""


def st_config(model_dir: str | Path) -> dict:
    """The model's config_sentence_transformers.json ({} when it has none)."""
    path = Path(model_dir) / ST_CONFIG
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def named_prompts(model_dir: str | Path) -> dict[str, str]:
    """Prompts declared in the model's config_sentence_transformers.json ({} when it has none)."""
    return declared_prompts(st_config(model_dir))


def declared_prompts(config: dict) -> dict[str, str]:
    """The `prompts` of a config_sentence_transformers.json; a null prompt (a placeholder sentence-transformers
    fills with "") counts as not declared, so the role's next name is tried (placeholder_names lists them).

    Raises:
        PromptNameError: `prompts` is not a mapping, or one of its values is neither a text nor null
            (sentence-transformers fails on them: 'object of type int has no len()').
    """
    prompts = config.get("prompts")
    if prompts is None:
        return {}
    if not isinstance(prompts, dict):
        raise PromptNameError(
            f"{ST_CONFIG}: prompts is {prompts!r}, not a mapping of prompt names to texts; fix it in a copy of the "
            'model folder (e.g. {"query": "query: "}) or give the text itself as model.prompt'
        )
    for name, text in prompts.items():
        if text is not None and not isinstance(text, str):
            raise PromptNameError(
                f"{ST_CONFIG}: prompt {name!r} is {text!r}, not a text (a string, or null for none); fix it in a "
                "copy of the model folder or give the text itself as model.prompt"
            )
    return {name: text for name, text in prompts.items() if isinstance(text, str)}


def placeholder_names(config: dict) -> frozenset[str]:
    """Names of the null prompts of a config_sentence_transformers.json: sentence-transformers reads them as "", so
    one named by model.prompt_name or default_prompt_name is the empty prompt."""
    prompts = config.get("prompts")
    return frozenset(n for n, t in prompts.items() if t is None) if isinstance(prompts, dict) else frozenset()


def role_prompt_name(
    kind: str,
    prompts: dict[str, str],
    default_prompt_name: str | None = None,
    placeholders: frozenset[str] = frozenset(),
) -> str | None:
    """The model prompt sentence-transformers would use for this corpus kind, by name (None: no prompt).

    Documents: `document`, else `passage`, else `corpus` (encode_document), else the model's default_prompt_name
    (a null prompt too: then the empty prompt). Queries: `query` (encode_query), else the default_prompt_name.
    """
    names = DOCUMENT_PROMPT_NAMES if kind == "document" else QUERY_PROMPT_NAMES
    for name in names:
        if name in prompts:
            return name
    if isinstance(default_prompt_name, str) and (default_prompt_name in prompts or default_prompt_name in placeholders):
        return default_prompt_name
    return None


def task_prompt(task: str, model_query_prompt: str | None = None) -> str:
    """`Instruct: {task}\nQuery: `, ending as the model's own query prompt ends when that has the same shape."""
    own = INSTRUCTION_PROMPT.fullmatch(model_query_prompt or "")
    return TASK_TEMPLATE.format(task=task) if own is None else f"Instruct: {task}\nQuery:{own.group(1)}"


def resolve_prompt(
    model: ModelConfig,
    kind: str,
    prompts: dict[str, str],
    default_prompt_name: str | None = None,
    placeholders: frozenset[str] = frozenset(),
) -> str:
    """The prefix every text of this corpus gets.

    Order: explicit `model.prompt` > `model.prompt_name` > `model.task` (queries only) > the model's prompt for the
    corpus kind, as sentence-transformers' encode_document/encode_query resolve it (role_prompt_name) > none.

    Args:
        model: the model section.
        kind: input.kind, "document" or "query".
        prompts: the model's named prompts (config_sentence_transformers.json `prompts`).
        default_prompt_name: that file's `default_prompt_name`, if any (null: none; "" is a name, as in
            sentence-transformers, which refuses to load a model whose default names no prompt).
        placeholders: names of that file's null prompts (placeholder_names): the empty prompt when named.

    Raises:
        PromptNameError: model.prompt_name is not one of `prompts` (the message lists the known names); or the
            model's default prompt would apply and `default_prompt_name` names none of `prompts` (an empty or
            non-text one included).
    """
    if model.prompt is not None:
        return model.prompt
    if model.prompt_name is not None:
        if model.prompt_name in placeholders:  # sentence-transformers: the empty prompt
            return ""
        if model.prompt_name not in prompts:
            known = ", ".join(sorted([*prompts, *placeholders])) or (
                "none: the model has no config_sentence_transformers.json prompts"
            )
            raise PromptNameError(
                f"model.prompt_name {model.prompt_name!r} is not a prompt of the model {model.name_or_path}; known: "
                f"{known} (or give the text itself as model.prompt)"
            )
        return prompts[model.prompt_name]
    if kind == "query" and model.task is not None:
        return task_prompt(model.task, prompts.get("query"))
    name = role_prompt_name(kind, prompts, default_prompt_name, placeholders)
    if name is None and default_prompt_name is not None:
        known = ", ".join(sorted([*prompts, *placeholders])) or "none"
        empty = (
            ' (an empty name is not "no default": delete the key or set it to null in a copy of the model folder)'
            if default_prompt_name == ""
            else ""
        )
        raise PromptNameError(
            f"the model {model.name_or_path} sets default_prompt_name {default_prompt_name!r} ({ST_CONFIG}), which "
            f"names none of its prompts (known: {known}){empty}; sentence-transformers refuses to load it, and which "
            'prompt was meant is unknown. Set model.prompt (the text; "" for none) or model.prompt_name'
        )
    if kind == "query" and name is None:
        log.warning(
            "input.kind is 'query' but the model declares no 'query' prompt and no model.task is set: queries are "
            "embedded as they are. Set model.task (instruction models) or model.prompt (e5: 'query: ')"
        )
    return prompts.get(name, "") if name is not None else ""
