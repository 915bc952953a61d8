"""Units: the pieces of a corpus that an embed run commits one by one, and a rerun skips.

A unit is one input file, a range of whole row groups of a Parquet file larger than `input.unit_bytes`, a byte range
of an uncompressed JSONL or text file larger than that (the lines that start in it, pipeline.line_ranges), or a pack of
consecutive small files (PACK_SHARE, PACK_FILES): small enough that a crash redoes little, large enough that markers,
read tasks and output files stay few (one of each per tiny file made a corpus of 3,000 small files 4.5x slower
and left as many tiny Parquet files; docs/resume.md). Every row carries its unit's key through
the pipeline; the write task names each output file after the unit it holds, and the driver's `UnitProgress` adds
up the write stats and reports a unit complete once as many rows are written or rejected as its reader counted.
Only then is its marker written (pipeline.commit), so a unit is either fully in the dataset or redone.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.columns import ROW, UNIT, UNIT_ROWS, UNREADABLE
from pipeline.fetching import fetched_ahead
from pipeline.file_formats import SNIFF_BYTES, CorruptFileError, InputFileError, file_format
from pipeline.line_ranges import LINE_FORMATS, LineSpan, byte_ranges, splittable
from pipeline.progress import mark_file_end
from pipeline.read_content import ListedPrefix, ReadAs, listed_prefix, parse_read
from pipeline.reading import (
    CHUNK_ROWS,
    CORRUPT_HINT,
    Cursor,
    ReadSpec,
    count_span_rows,
    make_block,
    naming_errors,
    read_file,
)
from pipeline.storage import ListedFile, Location
from pipeline.transient_errors import retrying

# Small files are packed into one unit until it holds unit_bytes / PACK_SHARE bytes (16 MiB at the default 256 MiB:
# tens of thousands of rows, so a unit's fixed costs, one read task, one marker and at least one output file, are
# spread over many rows while a crash still redoes little) or PACK_FILES files (bounds the files one read task opens
# one after the other, each a GET on S3, and the file list in its marker). A file of that size or more is a unit alone.
PACK_SHARE = 16
PACK_FILES = 1024


@dataclass(frozen=True)
class Unit:
    path: str  # relative to the input root; a packed unit's first file
    file_index: int  # position in the sorted input listing (orders rows for duplicate ids)
    row_groups: tuple[int, int] | None = None  # [start, end) of a split Parquet file; None: the whole file
    packed: tuple[str, ...] = ()  # the files after `path` in a pack of small files (file_index + 1, + 2, ...)
    lines: LineSpan | None = None  # the byte range of a split JSONL or text file, and its rows; None: whole file
    # listed sizes of `paths` (bytes), for a unit of whole files: a line file grown since is read up to its listed
    # size (pipeline.read_content.listed_prefix); (): not known, each file is read whole
    sizes: tuple[int, ...] = field(default=(), compare=False)

    @property
    def paths(self) -> tuple[str, ...]:
        """The unit's input files, in listing order."""
        return (self.path, *self.packed)

    def parts(self) -> list[Unit]:
        """One single-file unit per input file of this one (itself when it is one file or row-group range)."""
        if not self.packed:
            return [self]
        return [Unit(p, self.file_index + k, sizes=self.sizes[k : k + 1]) for k, p in enumerate(self.paths)]

    @property
    def listed_size(self) -> int | None:
        """The listed size of a single whole file's unit (a part of a pack), None when not known or not whole."""
        whole = self.row_groups is None and self.lines is None and not self.packed
        return self.sizes[0] if whole and len(self.sizes) == 1 else None

    @property
    def key(self) -> str:
        """Names the unit in marker and output file names: 16 hex digits of sha1(paths, row groups or byte range)."""
        span = "" if self.row_groups is None else f"{self.row_groups[0]}-{self.row_groups[1]}"
        span += "" if self.lines is None else f"bytes {self.lines.start}-{self.lines.end}"
        return hashlib.sha1("\0".join((*self.paths, span)).encode()).hexdigest()[:16]

    def record(self) -> dict:
        record = {"path": self.path, "row_groups": list(self.row_groups) if self.row_groups else None}
        if self.lines is not None:
            record["bytes"] = [self.lines.start, self.lines.end]
            record["first_row"] = self.lines.first_row
        return record | ({"files": list(self.paths)} if self.packed else {})


def file_groups(units: list[Unit]) -> list[list[str]]:
    """The input files of `units`, each once, in listing order, grouped by unit (a split Parquet file's first
    range holds it): for passes that read whole files, one task per group."""
    groups, seen = [], set()
    for unit in units:
        group = [p for p in unit.paths if p not in seen]
        seen.update(group)
        if group:
            groups.append(group)
    return groups


def record_files(record: dict) -> list[str]:
    """The input files of a unit marker's record (Unit.record)."""
    return record.get("files") or [record["path"]]


def packing(unit_bytes: int) -> dict[str, int]:
    """How small files are packed into units (recorded in the resume fingerprint: another packing, another plan)."""
    return {"bytes": max(unit_bytes // PACK_SHARE, 1), "files": PACK_FILES}


def pack_runs(sizes: list[int | None], limit: dict[str, int]) -> list[tuple[list[int], bool]]:
    """The listing's files (their `sizes`, None where not known) in order, as (indices, packed) runs: consecutive files
    under limit["bytes"] packed together up to that many bytes and limit["files"] files (packed True, one file or
    more), every other file alone (packed False). `limit`: packing()."""
    runs: list[tuple[list[int], bool]] = []
    pack: list[int] = []
    pack_bytes = 0
    for index, size in enumerate(sizes):
        if size is not None and size < limit["bytes"]:
            if pack and (pack_bytes + size > limit["bytes"] or len(pack) == limit["files"]):
                runs.append((pack, True))
                pack, pack_bytes = [], 0
            pack.append(index)
            pack_bytes += size
            continue
        if pack:
            runs.append((pack, True))
            pack, pack_bytes = [], 0
        runs.append(([index], False))
    if pack:
        runs.append((pack, True))
    return runs


# counts the rows of each (file, format, start, end) byte range; count_locally, or Ray tasks in the embed job
RangeCounter = Callable[[list[tuple[str, str, int, int]]], list[int]]


def count_locally(root: Location) -> RangeCounter:
    """Counts ranges one after the other in this process (pipeline.reading.count_span_rows)."""
    return lambda ranges: [count_span_rows(root, rel, fmt, start, end) for rel, fmt, start, end in ranges]


def plan_units(
    root: Location,
    listed: list[ListedFile],
    fmt: str | None,
    unit_bytes: int,
    packed: bool = True,
    split_lines: bool = True,
    count: RangeCounter | None = None,
) -> list[Unit]:
    """Parquet files over `unit_bytes` become consecutive row-group ranges of ~unit_bytes; uncompressed UTF-8 JSONL
    and text files over it byte ranges of at most unit_bytes (pipeline.line_ranges), each knowing its first row;
    consecutive files under unit_bytes / PACK_SHARE are packed into units of up to that many bytes and PACK_FILES
    files; any other file is one unit.

    `fmt`: input.format, or None for each file's extension (pipeline.file_formats). `packed` False: no packing, one
    unit per small file (the plan of a run started before small files were packed, which resumes under it);
    `split_lines` False: a JSONL or text file is one unit whatever its size (the plan of a run started before they
    were split). `count`: counts the rows of byte ranges (default count_locally).

    Read: the footers of the large Parquet files (a few KB each), the first SNIFF_BYTES of the large line files, and
    the whole of the line files that are split (their rows counted by `count`, with the reader's row rule).
    """
    units: list[Unit] = []
    limit = packing(unit_bytes) if packed else {"bytes": 0, "files": 1}  # no file is under 0 bytes
    for indices, is_pack in pack_runs([f.size for f in listed], limit):
        if is_pack:
            files = [listed[i] for i in indices]
            paths, sizes = tuple(f.path for f in files[1:]), tuple(f.size for f in files)
            units.append(Unit(files[0].path, indices[0], None, paths, sizes=sizes))
            continue
        index, f = indices[0], listed[indices[0]]
        file_fmt = file_format(fmt, f.path)
        if split_lines and file_fmt in LINE_FORMATS and f.size > unit_bytes:
            units.extend(line_units(root, f, index, file_fmt, unit_bytes))
            continue
        if file_fmt != "parquet" or f.size <= unit_bytes:
            units.append(Unit(f.path, index, sizes=(f.size,)))
            continue
        try:
            meta = parquet_footer(root.join(f.path))
        except CorruptFileError:
            units.append(Unit(f.path, index))  # its read task rejects it (read_unit), as a small corrupt file
            continue
        sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
        ranges = split_ranges(sizes, unit_bytes)
        if len(ranges) == 1:
            units.append(Unit(f.path, index))
        else:
            units.extend(Unit(f.path, index, r) for r in ranges)
    return counted(units, file_fmts(units, fmt), count or count_locally(root))


def line_units(root: Location, f: ListedFile, index: int, fmt: str, unit_bytes: int) -> list[Unit]:
    """One unit per byte range of a JSONL or text file over `unit_bytes` (rows not yet counted), or the whole file
    when it cannot be split (compressed, UTF-16/32, not text: its reader says what is wrong with it)."""
    ranges = byte_ranges(f.size, unit_bytes)
    if len(ranges) == 1 or not splittable(file_head(root.join(f.path), fmt), fmt, root.join(f.path).uri):
        return [Unit(f.path, index, sizes=(f.size,))]
    return [Unit(f.path, index, lines=LineSpan(start, end)) for start, end in ranges]


def file_fmts(units: list[Unit], fmt: str | None) -> dict[str, str]:
    return {u.path: file_format(fmt, u.path) for u in units if u.lines is not None}


def counted(units: list[Unit], fmts: dict[str, str], count: RangeCounter) -> list[Unit]:
    """`units` with the rows of each byte range counted and its first row the sum of the ranges before it."""
    spans = [(u.path, fmts[u.path], u.lines.start, u.lines.end) for u in units if u.lines is not None]
    if not spans:
        return units
    rows = iter(count(spans))
    done, before = [], {}
    for u in units:
        if u.lines is None:
            done.append(u)
            continue
        n = next(rows)
        first = before.get(u.path, 0)
        before[u.path] = first + n
        done.append(replace(u, lines=replace(u.lines, first_row=first, rows=n)))
    return done


@retrying
def file_head(file: Location, fmt: str) -> bytes:
    """The first SNIFF_BYTES of a file (one ranged read).

    Raises:
        TransientStorageError: as parquet_footer.
        InputFileError: the file cannot be read.
    """
    with naming_errors(file.uri, fmt, Cursor()), file.fs.open_input_file(file.path) as handle:
        return handle.read(SNIFF_BYTES)


@retrying
def parquet_footer(file: Location) -> pq.FileMetaData:
    """The footer of a Parquet file (a few KB: two ranged reads).

    Raises:
        TransientStorageError: the storage failed in a way a later attempt may not (after `retrying`'s attempts).
        InputFileError: the file is not Parquet or cannot be read for another reason.
    """
    with naming_errors(file.uri, "parquet", Cursor()), file.fs.open_input_file(file.path) as handle:
        return pq.ParquetFile(handle).metadata


def split_ranges(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) ranges of items, each closed once its sizes reach `limit` (at least one item)."""
    ranges, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        total += size
        if total >= limit:
            ranges.append((start, i + 1))
            start, total = i + 1, 0
    if start < len(sizes) or not ranges:
        ranges.append((start, len(sizes)))
    return ranges


def unit_items(units: list[Unit]) -> list[dict]:
    """Rows of the Ray Data dataset that drives the read stage (one unit per row)."""
    return [
        {
            "path": u.path,
            "file_index": u.file_index,
            "rg_start": u.row_groups[0] if u.row_groups else -1,
            "rg_end": u.row_groups[1] if u.row_groups else -1,
            "packed": list(u.packed),
            # a split JSONL or text file's range: [start, end, first_row, rows]; empty for any other unit
            "lines": [u.lines.start, u.lines.end, u.lines.first_row, u.lines.rows] if u.lines else [],
            "sizes": list(u.sizes),  # listed sizes of the unit's files; empty when not known
        }
        for u in units
    ]


def units_of(batch: pa.Table) -> list[Unit]:
    names = ("path", "file_index", "rg_start", "rg_end", "packed", "lines")
    rows = zip(*(batch.column(c).to_pylist() for c in names))
    sizes = batch.column("sizes").to_pylist() if "sizes" in batch.column_names else [None] * batch.num_rows
    return [
        Unit(p, i, None if s < 0 else (s, e), tuple(more or ()), LineSpan(*span) if span else None, tuple(n or ()))
        for (p, i, s, e, more, span), n in zip(rows, sizes)
    ]


# (a file's single-file unit, its blocks, its ListedPrefix when read up to its listed size) -> blocks
FileBlocks = Callable[[Unit, Iterator[pa.Table], ListedPrefix | None], Iterable[pa.Table]]


def read_unit(spec: ReadSpec, unit: Unit, each_file: FileBlocks | None = None) -> Iterator[pa.Table]:
    """A unit's blocks (pipeline.reading columns), each with its key and each file's last row flagged
    (pipeline.progress.mark_file_end); the last block also carries the unit's row count.

    The files of a packed unit are read one after the other, the next ones fetched meanwhile (pipeline.fetching),
    and their blocks gathered up to CHUNK_ROWS rows: one block per tiny file would cost every stage a block (and
    the write stage a file) per file.

    Args:
        each_file: applied to each file's blocks before they are gathered, with that file's own single-file unit
            (its file_index) and its ListedPrefix when it is read up to its listed size (grown since it was listed:
            pipeline.read_content.listed_prefix), e.g. to reject its duplicate ids.
    """
    held, rows = None, 0
    for block in gathered(file_blocks(spec, unit, each_file)):
        if held is not None:
            yield tag(held, unit.key, -1)
        held, rows = block, rows + block.num_rows
    if held is not None:
        yield tag(held, unit.key, rows)


def file_blocks(spec: ReadSpec, unit: Unit, each_file: FileBlocks | None) -> Iterator[pa.Table]:
    """The blocks of each file of `unit` in turn; a pack's files are fetched ahead (pipeline.fetching)."""
    parts = unit.parts()
    paths = [posixpath.join(spec.root.path, p.path) for p in parts]
    with fetched_ahead(spec.root.fs, paths) if len(parts) > 1 else nullcontext([None]) as openers:
        for part, opener in zip(parts, openers):
            prefix = listed_prefix(spec.root, part.path, file_format(spec.format, part.path), part.listed_size)
            read = read_file(spec, part.path, part.row_groups, part.lines, opener, prefix)
            blocks = corrupt_as_reject(spec, part, read)
            yield from mark_file_end(each_file(part, blocks, prefix) if each_file else blocks)


# Replaces CORRUPT_HINT in a rejected file's reason: the run goes on, so "run again" would redo nothing.
REJECTED_HINT = (
    ". The file is cut short or corrupt (an interrupted copy or upload?), so it is rejected and the rest of the input "
    "embedded: copy it again from its source and embed it on its own (input.uri: the file, another output.uri)"
)


def corrupt_as_reject(spec: ReadSpec, part: Unit, blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """The blocks of one file, and in place of a CorruptFileError one reject row for the rest of the file.

    A corrupt file (pipeline.file_formats.CorruptFileError: a cut or garbled Parquet footer, a file named .parquet
    that is not one, a gzip stream cut short) is damage to that file alone, found only when its read task reaches
    it, maybe hours into a run: failing the job there lost the night, and the rerun was refused once the file was
    repaired (the input changed) or failed again at the same place. Its rows up to the damage (usually none) are
    kept; the reject row stands for the rest, with the first row not read, the reason and what to do, so rows in =
    rows written + rows rejected holds and input.max_reject_fraction still fails a job whose every file is corrupt.
    Other read errors (a missing column, a vanished file, a transient storage failure) still raise.
    """
    next_row = None
    try:
        for block in blocks:
            yield block
            if block.num_rows:
                next_row = block.column(ROW)[-1].as_py() + 1
    except CorruptFileError as err:
        if next_row is None:  # nothing read: the part's first row
            next_row = part.lines.first_row if part.lines else (err.row or 0) if part.row_groups else 0
        where = f" from row {next_row} on" if next_row else ""
        reason = f"{UNREADABLE}{where}: {str(err).replace(CORRUPT_HINT, REJECTED_HINT)}"
        keep = {c: [None] for c in spec.keep_columns}
        yield make_block(spec, part.path, next_row, [None], [None] if spec.id_column else None, keep, [reason])


def unless_gone(blocks: Iterator[pa.Table], root: Location | None = None, rel: str | None = None) -> Iterator[pa.Table]:
    """The blocks of one file; none when it is gone before its first block (renamed or deleted since the listing:
    a logrotate or a sync running at the same hour as the job). Its read task failed the whole run, the files in
    flight with it; now the file has no rows here and the driver's check finds it gone (`listed with N bytes, now
    gone`): the re-embed job (pipeline.reembed.staging.read_tagged; reembed.sources.changed_since_listed,
    objects_changed on S3) does not stage it, the embed job (duplicate_ids.read_units; input_contents.
    changed_inputs, changed_objects on S3) does not commit its unit, and both fail the run naming it once the other
    files are staged or committed. A file gone after its first block still raises (a local file read through an
    open descriptor is not cut short by a rename or an unlink). Not for the duplicate-id pass: a file missing there
    would decide other files' first copies without its ids, so that pass still fails naming it.

    With the file's input `root` and path `rel` below it: a local file whose folder is missing too raises, naming
    this node. That is a node of a multi-node cluster without the input (a path only the head has, a node the
    autoscaler added after pipeline.node_paths checked the others), where the driver's own node still has the
    file: its check found nothing gone and committed the unit without this file's rows.

    Raises:
        InputFileError: the file failed after its first block, or for another reason than being gone, or its
            folder is missing on this node.
    """
    started = False
    try:
        for block in blocks:
            started = True
            yield block
    except InputFileError as err:
        if started or not isinstance(err.__cause__, FileNotFoundError):
            raise
        if root is not None and rel is not None and isinstance(root.fs, pafs.LocalFileSystem):
            folder = posixpath.dirname(posixpath.join(root.path, rel))
            if not os.path.isdir(folder):
                raise InputFileError(node_lacks_folder(root.uri, rel, folder)) from err


def node_lacks_folder(uri: str, rel: str, folder: str) -> str:
    """The error of a listed local file whose folder this node does not have."""
    import ray

    node = ray.util.get_node_ip_address() if ray.is_initialized() else socket.gethostname()
    return (
        f"cannot read {rel} of {uri}: its folder {folder} does not exist on the node that read it ({node}), though "
        "the file was listed where the job started: the input is a local path that this node does not have (not "
        "one file system that every node mounts), or the folder was moved away during the run. Give the input "
        "on a file system that every node mounts at the same place (NFS, a shared volume), or on object storage "
        "(input.uri: s3://bucket/prefix)"
    )


def gathered(blocks: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """Consecutive blocks of one schema joined while they hold at most CHUNK_ROWS rows together; a block that
    already holds that many passes as it is."""
    pending: list[pa.Table] = []
    rows = 0
    for block in blocks:
        if pending and (rows + block.num_rows > CHUNK_ROWS or block.schema != pending[0].schema):
            yield joined(pending)
            pending, rows = [], 0
        pending.append(block)
        rows += block.num_rows
    if pending:
        yield joined(pending)


def joined(blocks: list[pa.Table]) -> pa.Table:
    return blocks[0] if len(blocks) == 1 else pa.concat_tables(blocks).combine_chunks()


def tag(block: pa.Table, key: str, unit_rows: int) -> pa.Table:
    block = block.append_column(UNIT, pa.array([key] * block.num_rows, pa.string()))
    return block.append_column(UNIT_ROWS, pa.array([unit_rows] * block.num_rows, pa.int64()))


def id_only(spec: ReadSpec) -> ReadSpec:
    """The spec of a pass that needs ids and reject reasons only (kept columns are not read)."""
    return replace(spec, keep_columns=())


# Summed per unit by UnitProgress; write tasks return one row per unit they wrote with these columns.
COUNTS = (
    "rows",
    "rows_embedded",
    "rows_rejected",
    "chunks_rejected",
    "nonfinite_recomputed",
    "nonfinite_rejected",
    "files_rejected",
    "rows_truncated",
    "rows_chunked",
    "output_rows",
    "output_files",
    "tokens",
    "computed_tokens",
)


class UnitProgress:
    """Driver-side sums of the write stats per unit still open; says when a unit is complete.

    Holds one small tally per unit in flight, never per row; completed units leave it.
    """

    def __init__(self, units: list[Unit]):
        self.units = {u.key: u for u in units}
        self.open: dict[str, dict[str, int]] = {}
        self.done: set[str] = set()
        self.totals = dict.fromkeys((*COUNTS, "embed_seconds"), 0)
        self.actor_vectors: dict[str, int] = {}  # vectors per embedding actor, this attempt
        # when each embedding actor began to start, and the latest time a row was tokenized (time.time(), seconds)
        self.actor_started: dict[str, float] = {}
        self.tokenized_at: float | None = None
        # what the read tasks read of each whole local file (pipeline.read_content): {path: (size, token)}
        self.read: dict[str, ReadAs] = {}

    def add(self, stats: pa.Table) -> list[tuple[Unit, dict[str, int]]]:
        """Fold in one batch of write stats; returns (unit, counts) for the units that just became complete.

        Raises:
            RuntimeError: a unit has more rows written than its reader counted (rows written twice).
        """
        completed = []
        for row in stats.to_pylist():
            key = row[UNIT]
            tally = self.open.setdefault(key, {**dict.fromkeys(COUNTS, 0), "unit_rows": -1})
            for name in COUNTS:
                tally[name] += row[name]
                self.totals[name] += row[name]
            self.totals["embed_seconds"] += row["embed_seconds"]
            for actor, vectors in row.get("actor_vectors") or ():
                self.actor_vectors[actor] = self.actor_vectors.get(actor, 0) + vectors
            for actor, started in row.get("actor_started") or ():
                self.actor_started[actor] = min(started, self.actor_started.get(actor, started))
            if row.get("tokenized_at") is not None:
                self.tokenized_at = max(row["tokenized_at"], self.tokenized_at or row["tokenized_at"])
            self.read.update(parse_read(row.get("read_as") or ()))
            tally["unit_rows"] = max(tally["unit_rows"], row[UNIT_ROWS])
            if 0 <= tally["unit_rows"] < tally["rows"]:
                raise RuntimeError(
                    f"{self.units[key].path}: {tally['rows']} rows written for {tally['unit_rows']} read"
                )
            if tally["rows"] == tally["unit_rows"]:
                completed.append(self.close(key))
        return completed

    def finish(self) -> list[tuple[Unit, dict[str, int]]]:
        """After the dataset is exhausted without error: the rest are complete (units without rows included).

        Raises:
            RuntimeError: a unit has fewer rows written than read (rows were lost).
        """
        rest = []
        for key in self.units:
            if key in self.done:
                continue
            tally = self.open.get(key)
            if tally is not None and tally["rows"] != tally["unit_rows"]:
                raise RuntimeError(f"{self.units[key].path}: {tally['rows']} of {tally['unit_rows']} rows written")
            rest.append(self.close(key))
        return rest

    def close(self, key: str) -> tuple[Unit, dict[str, int]]:
        self.done.add(key)
        tally = self.open.pop(key, None) or dict.fromkeys(COUNTS, 0)
        return self.units[key], {name: tally[name] for name in COUNTS}
