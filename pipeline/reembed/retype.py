"""Rewrite a version's stored output files with new kept-column types, without the model.

When a run's files change a kept column's stored type (its first values, or a lossless widening:
pipeline.reembed.kept.retyped), the version's other files must hold the new type too, so that the version reads as
one table. Their vectors do not change: only the kept column does, and its values cast exactly (a column of nulls
becomes nulls of the new type; a widening is checked by pipeline.type_widening before). So each output file is read,
its kept columns cast, and written again under this run's folder (`data/<key>/<run>/`, the file name kept); the
reject files are copied next to them, since garbage collection keeps a file's outputs by its run folder. It used to
embed those files again through the model, the whole version for one new file.

A run killed while rewriting leaves files in a run folder no manifest names: the next run decides the same types,
rewrites again, and garbage collection removes the orphans.
"""

from __future__ import annotations

import dataclasses
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from pipeline.config import ComputeConfig
from pipeline.kept_columns import KeptType, cast_kept
from pipeline.reembed.layout import VersionLayout
from pipeline.reembed.manifest import FileEntry
from pipeline.stages import io_task
from pipeline.storage import Location, write_parquet_atomic


def retyped_table(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """`table` with each column named in `types` cast to its type (a column of nulls: nulls of the type); fields
    keep their metadata, the schema its metadata (rayembed.*).

    Raises:
        KeptColumnTypeError-like pyarrow errors: a value does not cast exactly (not expected after the checks).
    """
    for column, target in types.items():
        if column not in table.column_names or table.schema.field(column).type == target:
            continue
        index = table.schema.get_field_index(column)
        field = table.schema.field(index)
        values = table.column(index)
        cast = pa.nulls(len(values), target) if values.null_count == len(values) else cast_kept(values, target)
        table = table.set_column(index, field.with_type(target), cast)
    return table


def rewrite_entry(root: Location, entry: FileEntry, run_id: str, types: dict[str, pa.DataType]) -> FileEntry:
    """`entry` with its output files written again under `run_id` with `types`; the entry as it is when none of its
    files holds a column of another type. Paths are relative to the version root `root`."""
    schemas = [pq.read_schema(root.join(rel).path, filesystem=root.fs) for rel in entry.files]
    stale = any(c in s.names and s.field(c).type != t for s in schemas for c, t in types.items())
    if not stale:
        return entry
    folder = VersionLayout.run_dir(entry.key, run_id)
    files = []
    for rel in entry.files:
        table = pq.read_table(root.join(rel).path, filesystem=root.fs)
        files.append(f"{folder}/{posixpath.basename(rel)}")
        write_parquet_atomic(retyped_table(table, types), root.join(files[-1]))
    rejects = []
    for rel in entry.rejects:
        rejects.append(f"{folder}/_rejects/{posixpath.basename(rel)}")
        if rel != rejects[-1]:  # a file this run moved there already (pipeline.reembed.moves)
            root.fs.create_dir(posixpath.dirname(root.join(rejects[-1]).path), recursive=True)
            root.fs.copy_file(root.join(rel).path, root.join(rejects[-1]).path)
    return dataclasses.replace(entry, run_id=run_id, files=files, rejects=rejects)


def rewrite_entries(
    root: Location, entries: list[FileEntry], run_id: str, types: dict[str, KeptType], compute: ComputeConfig
) -> list[FileEntry]:
    """Each entry rewritten with the kept types as written (rewrite_entry), one Ray task per entry, in order."""
    written = {c: t.type for c, t in types.items()}
    task = io_task(rewrite_entry, compute)
    return ray.get([task.remote(root, e, run_id, written) for e in entries])
