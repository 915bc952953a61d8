"""The effective configuration as commented YAML: every key with its value, default and description.

`rayembed config show CONFIG [--set ...]` and `python -m jobs.X --config CONFIG --show-config` print it; the output is
itself a valid config file (values are written as JSON, a subset of YAML).
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

WIDTH = 118


def _scalar(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, ensure_ascii=False)


def _default(field: Any) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()
    return PydanticUndefined


def render_config(cfg: BaseModel, indent: int = 0) -> str:
    """Commented YAML for `cfg`: `# description` above each key, `# default: X` after a value that differs.

    Args:
        cfg: a validated config (any job's).
        indent: spaces before each line (nested sections).
    """
    pad = " " * indent
    lines: list[str] = []
    for name, field in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        if field.description:
            wrapped = textwrap.wrap(field.description, WIDTH - indent - 2)
            lines += [f"{pad}# {line}" for line in wrapped]
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.append(render_config(value, indent + 2).rstrip("\n"))
            continue
        default = _default(field)
        if default is PydanticUndefined:
            note = "  # required"
        elif isinstance(default, BaseModel) or default == value:
            note = ""
        else:
            note = f"  # default: {_scalar(default)}"
        lines.append(f"{pad}{name}: {_scalar(value)}{note}")
    return "\n".join(lines) + "\n"
