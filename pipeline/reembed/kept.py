"""Kept-column types of a re-embedded version: one type per column for all its files, as in the embed job.

The embed job decides each kept column's type once from every input file (pipeline.kept_columns.decide): JSON
values of mixed types become JSON text, integer widths unify, and so on. A re-embed run reads only its new and
changed files, so it decides from those files plus the types the version already stores (recorded in the manifest,
`Manifest.kept_types`). A new file that would change a stored type (a string column meeting integers, which makes it
JSON text) cannot join the version: its files would not read as one table. That fails before any model work,
naming the column, the file and both types.

A kept column that held no value in any file so far (a field the corpus has not filled yet: absent or null
everywhere) is written as a string column of nulls, as the embed job writes it, but recorded as NO_VALUES: it
constrains nothing. The first file that brings values decides its type, and the version's other files are embedded
again with that type (their column holds only nulls), so its files still read as one table. It used to be recorded
as `string` and every later run with such a file failed ("needs JSON text ... stores type string").
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pyarrow as pa
import ray

from pipeline.config import ComputeConfig
from pipeline.kept_columns import MIXED, KeptColumnTypeError, KeptType, decide, unify
from pipeline.reading import ReadSpec, observed_or_none
from pipeline.stages import io_task
from pipeline.type_widening import what_changes, widens_losslessly

PUBLISHED = "the published version"  # how messages name the stored types
# The manifest's record of a kept column with no value in any file of the version (written as a string of nulls).
NO_VALUES = KeptType(pa.null())


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
) -> tuple[ReadSpec, dict[str, KeptType]]:
    """`spec` with the type of each kept column decided from `files` (one Ray task each) and the version's stored
    types `published` (None for a new version; {} for one recorded before the types were, whose other files may
    hold a column these files lack), and the types to record in the manifest: the same, but NO_VALUES for a column
    without a value in these files and the version (`spec` writes it as a string of nulls).

    Raises:
        KeptColumnTypeError: two files' types cannot be reconciled (as in the embed job), or a file would change a
            type the version stores.
    """
    if not spec.keep_columns:
        return spec, {}
    task = io_task(observed_or_none, compute)  # a corrupt file has no types: it is one reject row (staging)
    observed = ray.get([task.remote(spec, rel) for rel in files])
    # the stored types act as one more file, read first; a JSON-text column as mixed JSON values, a column without
    # values as one of nulls (it fits any type)
    published_types = stored_types(published or {}, spec.keep_columns)
    stored = {c: MIXED if t.json_text else t.type for c, t in published_types.items()}
    per_file = ([(PUBLISHED, "jsonl", stored)] if stored else []) + [
        (rel, fmt, obs) for rel, (fmt, obs) in zip(files, observed)
    ]
    columns = list(spec.keep_columns)
    if published is not None:  # the version's other files may hold a column these lack: no misspelling check
        columns = [c for c in columns if any(c in obs for _, _, obs in per_file)]
    types = decide(columns, per_file)
    valued = {c for _, _, obs in per_file for c, t in obs.items() if t is MIXED or not pa.types.is_null(t)}
    types |= {c: KeptType(pa.string()) for c in spec.keep_columns if c not in types}  # null in these files
    # NO_VALUES only where every file of the version is known to hold none: not for a version recorded before the
    # types were ({}), whose other files may hold values; there a string of nulls stays a string, as it was
    unknown = published is not None and not published
    recorded = {
        c: types[c] if c in valued or unknown or published_types.get(c, NO_VALUES) != NO_VALUES else NO_VALUES
        for c in spec.keep_columns
    }
    for column, before in published_types.items():
        after = types[column]
        if before == NO_VALUES or after == before or widens(before, after):
            continue  # a wider type of the same kind: the version's other files are written again with it (retyped)
        culprit = next(
            (rel for rel, (_, obs) in zip(files, observed) if changes(obs.get(column, NULL), before)), files[0]
        )
        raise KeptColumnTypeError(
            f"kept column {column!r}: {culprit} needs {describe(after)}, but {PUBLISHED} stores {describe(before)} "
            f"and its files cannot change type: {why_not(before, after)}; write the file's {column!r} as "
            f"{describe(before)} where its values have that type{example(before, after)}, else drop {column!r} from "
            "output.keep_columns (a new version)"
        )
    return dataclasses.replace(spec, kept_types=types), recorded


NULL = pa.null()  # a file without the column


def example(before: KeptType, after: KeptType) -> str:
    """' (e.g. 2, not 2.0)' where integers are stored and floats arrive (JSON numbers written with a point)."""
    typed = not before.json_text and not after.json_text
    if typed and pa.types.is_integer(before.type) and pa.types.is_floating(after.type):
        return " (e.g. 2, not 2.0)"
    return ""


def widens(before: KeptType, after: KeptType) -> bool:
    """Whether a stored type may become `after`: both typed (not JSON text) and every stored value casts exactly."""
    return not before.json_text and not after.json_text and widens_losslessly(before.type, after.type)


def changes(seen: pa.DataType | None, before: KeptType) -> bool:
    """Whether a file's observed type (MIXED for mixed JSON values) moves the stored type `before`."""
    if seen is MIXED:
        return not before.json_text
    return not before.json_text and unify(before.type, seen) != before.type


def why_not(before: KeptType, after: KeptType) -> str:
    """Why the stored values cannot take the new type, in words."""
    if before.json_text or after.json_text:
        return "typed values and JSON text do not mix in one column"
    return (
        f"{before.type} -> {after.type} could change stored values ({what_changes(before.type, after.type)}; see "
        "docs/reembed.md, Kept columns)"
    )


def retyped(published: dict[str, KeptType] | None, recorded: dict[str, KeptType]) -> dict[str, str]:
    """Kept columns whose stored type this run's files change, with why (the version's other files must be written
    again with the new type, so that the version reads as one table): a column without values (NO_VALUES) that
    gets its first ones, or a type widened without changing a value (int32 -> int64, timestamp[s] -> [ms])."""
    changed = {}
    for column, before in (published or {}).items():
        after = recorded.get(column, NO_VALUES)
        if before == NO_VALUES and after != NO_VALUES:
            changed[column] = f"gets its first values (type {after.type})"
        elif before != NO_VALUES and after != NO_VALUES and after != before:
            changed[column] = f"widened from {before.type} to {after.type} (no value changes)"
    return changed


def as_written(recorded: dict[str, KeptType]) -> dict[str, KeptType]:
    """The types the files are written with: a column without values as a string of nulls."""
    return {c: KeptType(pa.string()) if t == NO_VALUES else t for c, t in recorded.items()}


def stored_types(published: dict[str, KeptType], columns: tuple[str, ...]) -> dict[str, KeptType]:
    return {c: t for c, t in published.items() if c in columns}


def describe(kept: KeptType) -> str:
    return "JSON text (values of mixed types)" if kept.json_text else f"type {kept.type}"
