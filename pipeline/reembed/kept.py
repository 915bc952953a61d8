"""Kept-column types of a re-embedded version: one type per column for all its files, as in the embed job.

The embed job decides each kept column's type once from every input file (pipeline.kept_columns.decide): JSON
values of mixed types become JSON text, integer widths unify, and so on. A re-embed run reads only its new and
changed files, so it decides from those files plus the types the version already stores (recorded in the manifest,
`Manifest.kept_types`). A new file that would change a stored type (a string column meeting integers, which makes it
JSON text) cannot join the version: its files would not read as one table. That fails before any model work,
naming the column, the file and both types.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pyarrow as pa
import ray

from pipeline.config import ComputeConfig
from pipeline.kept_columns import MIXED, KeptColumnTypeError, KeptType, decide
from pipeline.reading import ReadSpec, observed_or_none
from pipeline.stages import io_task

PUBLISHED = "the published version"  # how messages name the stored types


def encode(types: dict[str, KeptType]) -> dict[str, dict[str, Any]]:
    """JSON-safe form for the manifest: each type as a base64 Arrow schema of one field, and the JSON-text flag."""
    return {
        column: {
            "type": base64.b64encode(pa.schema([pa.field(column, kept.type)]).serialize().to_pybytes()).decode(),
            "json_text": kept.json_text,
        }
        for column, kept in types.items()
    }


def decode(raw: dict[str, dict[str, Any]] | None) -> dict[str, KeptType]:
    """The inverse of encode; {} for a manifest written before kept types were recorded."""
    types = {}
    for column, entry in (raw or {}).items():
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(entry["type"])))
        types[column] = KeptType(schema.field(0).type, bool(entry["json_text"]))
    return types


def decide_for_run(
    spec: ReadSpec, files: list[str], published: dict[str, KeptType] | None, compute: ComputeConfig
) -> ReadSpec:
    """`spec` with the type of each kept column decided from `files` (one Ray task each) and the version's stored
    types `published` (None for a new version; {} for one recorded before the types were, whose other files may
    hold a column these files lack).

    Raises:
        KeptColumnTypeError: two files' types cannot be reconciled (as in the embed job), or a file would change a
            type the version stores.
    """
    if not spec.keep_columns:
        return spec
    task = io_task(observed_or_none, compute)  # a corrupt file has no types: it is one reject row (staging)
    observed = ray.get([task.remote(spec, rel) for rel in files])
    # the stored types act as one more file, read first; a JSON-text column as mixed JSON values
    published_types = stored_types(published or {}, spec.keep_columns)
    stored = {c: MIXED if t.json_text else t.type for c, t in published_types.items()}
    per_file = ([(PUBLISHED, "jsonl", stored)] if stored else []) + [
        (rel, fmt, obs) for rel, (fmt, obs) in zip(files, observed)
    ]
    columns = list(spec.keep_columns)
    if published is not None:  # the version's other files may hold a column these lack: no misspelling check
        columns = [c for c in columns if any(c in obs for _, _, obs in per_file)]
    types = decide(columns, per_file)
    types |= {c: KeptType(pa.string()) for c in spec.keep_columns if c not in types}  # null in these files
    for column, before in published_types.items():
        if types[column] != before:
            culprit = next((rel for rel, (_, obs) in zip(files, observed) if column in obs), files[0])
            raise KeptColumnTypeError(
                f"kept column {column!r}: {culprit} needs {describe(types[column])}, but {PUBLISHED} stores "
                f"{describe(before)} and its files cannot change type; rewrite the file with the stored type, or "
                f"drop {column!r} from output.keep_columns (a new version)"
            )
    return dataclasses.replace(spec, kept_types=types)


def stored_types(published: dict[str, KeptType], columns: tuple[str, ...]) -> dict[str, KeptType]:
    return {c: t for c, t in published.items() if c in columns}


def describe(kept: KeptType) -> str:
    return "JSON text (values of mixed types)" if kept.json_text else f"type {kept.type}"
