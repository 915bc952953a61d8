"""transformers' auto-model name tables (`MODEL_FOR_MASKED_LM_MAPPING_NAMES`, ...: model type -> class name), read
from its source without importing it.

Importing `transformers.models.auto.modeling_auto` imports torch (about 1.5 s of CPU on the driver, before Ray
starts), and the driver's model checks (pipeline.model_defaults, pipeline.model_kinds) run before every job, on the
path a rerun of a model otherwise keeps free of torch and transformers (pipeline.resolution_cache). The tables are
literals in that module's source; where a transformers release writes one otherwise, the module is imported.
"""

from __future__ import annotations

import ast
import functools

from pipeline.transformers_source import parsed, transformers_dir


def model_types(*tables: str) -> frozenset[str]:
    """The model types (keys) of the named tables of transformers.models.auto.modeling_auto, together."""
    return frozenset(key for table in tables for key in table_keys(table))


@functools.cache
def table_keys(table: str) -> tuple[str, ...]:
    """The keys of one table, in order; imports the module only when its source does not hold the table as a
    literal."""
    keys = source_tables().get(table)
    if keys:
        return keys
    from transformers.models.auto import modeling_auto

    return tuple(getattr(modeling_auto, table))


@functools.cache
def source_tables() -> dict[str, tuple[str, ...]]:
    """{table name: keys} of every `NAME = OrderedDict([("type", "Class"), ...])` (or dict literal) assignment in
    modeling_auto.py; {} when transformers or the file cannot be found or parsed."""
    package = transformers_dir()
    tree = parsed(package / "models" / "auto" / "modeling_auto.py") if package is not None else None
    if tree is None:
        return {}
    tables = {}
    for node in tree.body:
        named = isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        if named and (keys := literal_keys(node.value)):
            tables[node.targets[0].id] = keys
    return tables


def literal_keys(value: ast.expr) -> tuple[str, ...]:
    """The keys of `OrderedDict([("clip", "CLIPModel"), ...])` or `{"clip": "CLIPModel", ...}` written as literals
    (() for anything else)."""
    if isinstance(value, ast.Dict):
        items = [k for k in value.keys if k is not None]
    elif isinstance(value, ast.Call) and value.args and isinstance(value.args[0], (ast.List, ast.Tuple)):
        items = [e.elts[0] for e in value.args[0].elts if isinstance(e, ast.Tuple) and e.elts]
    else:
        return ()
    return tuple(k.value for k in items if isinstance(k, ast.Constant) and isinstance(k.value, str))
