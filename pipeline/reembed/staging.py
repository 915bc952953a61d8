"""Embed the files to (re)do into a run's staging paths, and notice each input file as soon as it is complete.

Two Ray Data UDFs wrap the embed stages: the reader tags every file's last block with the file's row count, and
the writer splits blocks by input file so that each output file comes from exactly one input file (so a changed
file's outputs can be dropped without touching its neighbours'). The driver-side `Progress` adds up the write
stats and hands out a `FileEntry` once all rows of a file are on storage; the job then writes its marker, which
is what lets a killed run resume per file instead of from scratch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline.columns import CHUNK_INDEX, COMPUTED, ID, REJECT, REJECT_COLUMNS, ROW, SOURCE, TOKEN_COUNT, UNREADABLE
from pipeline.duplicate_ids import file_duplicates, reject_rows
from pipeline.file_formats import compressed_name, file_format
from pipeline.read_content import (
    DecompressedDigest,
    ReadAs,
    listed_prefix,
    parse_read,
    read_values,
    with_read_content,
)
from pipeline.reading import ReadSpec, read_file
from pipeline.reembed.layout import VersionLayout
from pipeline.reembed.manifest import FileEntry
from pipeline.reembed.sources import SourceFile
from pipeline.shared_output import RunLease, check_output_is_the_drivers
from pipeline.storage import Location, write_parquet_atomic
from pipeline.units import Unit, corrupt_as_reject, unless_gone
from pipeline.writing import block_file_name, output_table, rejects_with_reason

FILE_ROWS = "_file_rows"  # on a file's last block: rows in the file; -1 elsewhere


def read_tagged(batch: pa.Table, spec: ReadSpec, duplicates: Location | None = None) -> Iterator[pa.Table]:
    """Ray Data generator UDF: blocks of each file, the last one tagged with the file's row count.

    `duplicates`: the committed duplicate-id pass (pipeline.reembed.duplicates), whose repeats of the file at
    `file_index` become rejects; None when ids are not checked. A corrupt file (cut short, garbled, not the format
    its name says) is one reject row naming it, as in the embed job (pipeline.units.corrupt_as_reject): its entry is
    published with that reject, and once the file is copied again its new change token makes it a changed file.
    `size` (a column, optional): each file's listed size; a JSONL or text file grown past it is read up to it
    (pipeline.read_content.listed_prefix).
    """
    indexes = batch.column("file_index").to_pylist() if "file_index" in batch.column_names else None
    sizes = batch.column("size").to_pylist() if "size" in batch.column_names else [None] * batch.num_rows
    for i, rel in enumerate(batch.column("file").to_pylist()):
        reasons = file_duplicates(duplicates, indexes[i]) if duplicates is not None else {}
        held = None
        index = indexes[i] if indexes is not None else -1
        # a line file grown since it was listed: its listed bytes only (pipeline.read_content.listed_prefix)
        prefix = listed_prefix(spec.root, rel, file_format(spec.format, rel), sizes[i])
        # a compressed local file: its decompressed bytes hashed as read, for its entry (FileEntry.decompressed)
        local = isinstance(spec.root.fs, pafs.LocalFileSystem)
        plain = DecompressedDigest() if local and compressed_name(rel) else None
        blocks = read_file(spec, rel, prefix=prefix, plain=plain)
        blocks = corrupt_as_reject(spec, Unit(rel, index), unless_gone(blocks, spec.root, rel))
        # what it read of a local file, for the driver's check of a touch or an append during the run
        for block in with_read_content(spec.root, rel, True, blocks, prefix, plain):
            block = reject_rows(block, reasons) if reasons else block
            if held is not None:
                yield tag(held, -1)
            held = block
        if held is not None:
            yield tag(held, pc.max(held.column(ROW)).as_py() + 1)


def tag(block: pa.Table, file_rows: int) -> pa.Table:
    return block.append_column(FILE_ROWS, pa.array([file_rows] * block.num_rows, pa.int64()))


@dataclass(frozen=True)
class StageTarget:
    """Where and how the write tasks of one run write; shipped to every write task."""

    version_root: Location
    run_id: str
    keys: dict[str, str]  # input path -> SourceFile.key
    keep_columns: tuple[str, ...]
    chunked: bool
    metadata: dict[str, str]
    rows_per_file: int
    token_columns: bool = False  # output.token_columns: num_tokens and truncated columns
    lease: RunLease | None = None  # the run's lease in a local output, checked on each node (pipeline.shared_output)


def write_by_source(block: pa.Table, target: StageTarget) -> pa.Table:
    """Write each input file's rows of `block` under its own run directory; one stats row per input file.

    Raises:
        OutputNotSharedError: this node has a folder of its own at the local output's path (pipeline.shared_output).
    """
    check_output_is_the_drivers(target.lease)
    stats = []
    for source in pc.unique(block.column(SOURCE)).to_pylist():
        group = block.filter(pc.equal(block.column(SOURCE), source))
        stats.append(write_group(group, source, target))
    return pa.Table.from_pylist(stats, schema=STATS_SCHEMA)


STATS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("rows", pa.int64()),
        ("embedded", pa.int64()),
        ("rejected", pa.int64()),
        ("unreadable", pa.int64()),
        ("output_rows", pa.int64()),
        ("file_rows", pa.int64()),
        ("files", pa.list_(pa.string())),
        ("rejects", pa.list_(pa.string())),
        ("tokens", pa.int64()),
        ("computed_tokens", pa.int64()),
        ("read_as", pa.list_(pa.string())),  # pipeline.read_content
    ]
)


def write_group(group: pa.Table, source: str, target: StageTarget) -> dict:
    is_reject = pc.invert(pc.is_null(group.column(REJECT)))
    good, rejects = group.filter(pc.invert(is_reject)), group.filter(is_reject)
    folder = VersionLayout.run_dir(target.keys[source], target.run_id)
    name = block_file_name(group)  # deterministic: a retried write task overwrites its own files
    table = output_table(good, list(target.keep_columns), target.chunked, target.metadata, target.token_columns)
    files, reject_files = [], []
    for part, start in enumerate(range(0, good.num_rows, target.rows_per_file)):
        files.append(f"{folder}/{name}-{part:04d}.parquet")
        write_parquet_atomic(table.slice(start, target.rows_per_file), target.version_root.join(files[-1]))
    if rejects.num_rows:
        reject_files.append(f"{folder}/_rejects/{name}.parquet")
        reasons = rejects.select([ID, SOURCE, ROW, REJECT]).rename_columns(list(REJECT_COLUMNS))
        write_parquet_atomic(reasons, target.version_root.join(reject_files[-1]))
    first_chunks = pc.sum(pc.equal(good.column(CHUNK_INDEX), 0)).as_py() or 0
    return {
        "source": source,
        "rows": first_chunks + rejects.num_rows,  # every input row has exactly one chunk 0 or is one reject
        "embedded": first_chunks,
        "rejected": rejects.num_rows,
        "unreadable": rejects_with_reason(rejects, UNREADABLE),  # a corrupt file
        "output_rows": good.num_rows,
        "file_rows": pc.max(group.column(FILE_ROWS)).as_py(),
        "files": files,
        "rejects": reject_files,
        "tokens": pc.sum(good.column(TOKEN_COUNT)).as_py() or 0,
        "computed_tokens": pc.sum(good.column(COMPUTED)).as_py() or 0,
        "read_as": read_values(group),
    }


@dataclass
class _Tally:
    rows: int = 0
    embedded: int = 0
    rejected: int = 0
    unreadable: int = 0
    output_rows: int = 0
    file_rows: int = -1
    files: list[str] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)


class Progress:
    """Driver-side sums of the write stats per input file; says when a file is complete."""

    def __init__(self, sources: list[SourceFile], run_id: str, duplicates: dict[str, str] | None = None):
        self.sources = {s.path: s for s in sources}
        self.run_id = run_id
        self.duplicates = duplicates or {}  # file -> duplicate-id digest (pipeline.reembed.duplicates)
        self.tallies = {s.path: _Tally() for s in sources}
        self.done: set[str] = set()
        self.tokens = 0
        self.computed_tokens = 0
        # what the read tasks read of each local file (pipeline.read_content): {path: (size, token)}
        self.read: dict[str, ReadAs] = {}

    def add(self, stats: pa.Table) -> list[FileEntry]:
        """Fold in one batch of write stats; returns the files that just became complete."""
        completed = []
        for row in stats.to_pylist():
            t = self.tallies[row["source"]]
            self.read.update(parse_read(row.get("read_as") or ()))
            t.rows += row["rows"]
            t.embedded += row["embedded"]
            t.rejected += row["rejected"]
            t.unreadable += row["unreadable"]
            t.output_rows += row["output_rows"]
            t.file_rows = max(t.file_rows, row["file_rows"])
            t.files += row["files"]
            t.rejects += row["rejects"]
            self.tokens += row["tokens"]
            self.computed_tokens += row["computed_tokens"]
            if t.file_rows >= 0 and t.rows > t.file_rows:
                raise RuntimeError(f"{row['source']}: {t.rows} rows written for {t.file_rows} rows read (duplicates)")
            if t.rows == t.file_rows and row["source"] not in self.done:
                self.done.add(row["source"])
                completed.append(self.entry(row["source"]))
        return completed

    def finish(self) -> list[FileEntry]:
        """After the dataset is exhausted without error: the rest are complete (files without rows included)."""
        rest = []
        for path, t in self.tallies.items():
            if path in self.done:
                continue
            if t.file_rows != t.rows and t.rows:
                raise RuntimeError(f"{path}: {t.rows} of {t.file_rows} rows written; rows were lost")
            self.done.add(path)
            rest.append(self.entry(path))
        return rest

    def entry(self, path: str) -> FileEntry:
        src, t = self.sources[path], self.tallies[path]
        return FileEntry(
            path=path,
            size=src.size,
            token=src.token,
            key=src.key,
            run_id=self.run_id,
            rows=t.rows,
            embedded=t.embedded,
            rejected=t.rejected,
            output_rows=t.output_rows,
            files=sorted(t.files),
            rejects=sorted(t.rejects),
            duplicates=self.duplicates.get(path),
            unreadable=t.unreadable > 0,
        )
