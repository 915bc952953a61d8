"""Duplicate ids in an incrementally re-embedded corpus: the embed job's pre-pass over every listed file.

input.duplicate_ids means here what it means for the embed job (pipeline.duplicate_ids): with `keep_first` the
first row of each id in (file order, row) order is embedded and later copies are rejects `duplicate id (first at
<file> row <n>)`; `error` fails before embedding; `unchecked` skips the pass. Which copy is first depends on the
other files: a new file can hold an id an unchanged one already has, and deleting a file can make a later copy the
first. So each file's entry records a digest of its duplicate rejects (`FileEntry.duplicates`), and a file whose
digest changed is embedded again like a changed file (pipeline.reembed.planner). Only the digests reach the driver:
one 64-bit sum per file, never a row.

The pass needs every listed file's ids, but a file that has not changed has the same ones: each file's id digests
(24 bytes a row) are kept under the version root, named by the file's key (its path, size and change token) and the
read settings, so a night on which one file changed reads that file's ids and the others' kept digests, not the
whole corpus (it read every listed file, so its cost grew with the corpus, not with the change).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import pyarrow.dataset as pads

from pipeline.config import EmbedConfig
from pipeline.duplicate_ids import FILE_INDEX
from pipeline.duplicate_pass import find_duplicate_ids
from pipeline.objects import delete_files, list_tree
from pipeline.reading import ReadSpec
from pipeline.reembed.manifest import NO_DUPLICATES
from pipeline.storage import Location
from pipeline.units import Unit, pack_runs, packing

DUPLICATES_DIR = "_duplicates"  # under the version root: the pass's repeats, deleted once the run has published
IDS_DIR = "_ids"  # under the version root: each listed file's id digests, kept between runs (kept_digest_files)


def checks_ids(cfg: EmbedConfig) -> bool:
    """Whether the job runs the duplicate-id pass (an id column, and duplicate_ids other than 'unchecked')."""
    return cfg.input.id_column is not None and cfg.input.duplicate_ids != "unchecked"


def check_ids(
    cfg: EmbedConfig,
    spec: ReadSpec,
    files: list[str],
    target: Location,
    sizes: dict[str, int] | None = None,
    keys: dict[str, str] | None = None,
    kept_at: Location | None = None,
) -> dict[str, str]:
    """Run the pre-pass over every file of `files` (the whole sorted listing, reused files included) into `target`;
    returns each file's duplicate digest (NO_DUPLICATES when it repeats no earlier id). Needs Ray.

    Args:
        sizes: the listed size of each file; a JSONL or text file grown past it is read up to it, as its read stage
            reads it (pipeline.read_content.listed_prefix), so that an appended row is no earlier copy of an id.
        keys, kept_at: each file's key (pipeline.reembed.sources.SourceFile.key) and the folder where the files' id
            digests are kept between runs (IDS_DIR): a file whose digests an earlier run kept is not read; the kept
            digests of files no longer listed, or changed, are deleted. None: every file is read.

    Raises:
        DuplicateIdError: input.duplicate_ids is 'error' and some id repeats.
    """
    sizes = sizes or {}
    units = pass_units(files, sizes, packing(cfg.input.unit_bytes))
    names = kept_digest_files(spec, files, keys) if kept_at is not None and keys is not None else None
    kept = None
    if names is not None:
        at = [kept_at.join(name) for name in names]
        kept = [tuple(at[part.file_index] for part in unit.parts()) for unit in units]
    find_duplicate_ids(units, files, spec, cfg.input.duplicate_ids, target, cfg.compute, kept)
    if names is not None:
        in_use = set(names)
        stale = [rel for rel in list_tree(kept_at, temp_files=True) if rel not in in_use]
        delete_files(kept_at, stale)
    return file_digests(target, files)


def pass_units(files: list[str], sizes: dict[str, int], limit: dict[str, int]) -> list[Unit]:
    """The pass's units: consecutive small files packed together as the embed job packs them
    (pipeline.units.pack_runs, `limit`: packing()), any other file, or one without a listed size, alone. One Ray task
    per unit: a corpus of thousands of small files ran thousands of tasks each night, whose start-up outweighed the
    kept digests."""
    units: list[Unit] = []
    for indices, _ in pack_runs([sizes.get(path) for path in files], limit):
        paths = [files[i] for i in indices]
        units.append(
            Unit(paths[0], indices[0], packed=tuple(paths[1:]), sizes=tuple(sizes[p] for p in paths if p in sizes))
        )
    return units


def kept_digest_files(spec: ReadSpec, files: list[str], keys: dict[str, str]) -> list[str]:
    """The name under IDS_DIR of each file's kept id digests: its key (path, size, change token) and what decides
    which of its rows have an id to compare (format, text and id columns: a row without text is a reject)."""
    settings = f"{spec.format}\0{spec.text_column}\0{spec.id_column}"
    return [hashlib.sha1(f"{keys[path]}\0{settings}".encode()).hexdigest()[:24] + ".parquet" for path in files]


def file_digests(target: Location, files: list[str]) -> dict[str, str]:
    """{file: digest of its (row, reason) repeats}: an order-free sum of 64-bit blake2b hashes, so the repeats are
    streamed in batches in any order and the driver keeps one integer per file."""
    sums: dict[int, int] = defaultdict(int)
    dataset = pads.dataset(target.path, filesystem=target.fs, format="parquet", partitioning="hive")
    if not dataset.files:  # no id repeats: the pass wrote only its summary
        return dict.fromkeys(files, NO_DUPLICATES)
    for batch in dataset.to_batches(columns=[FILE_INDEX, "row", "reason"]):
        columns = (batch.column(c).to_pylist() for c in (FILE_INDEX, "row", "reason"))
        for index, row, reason in zip(*columns):
            digest = hashlib.blake2b(f"{row}\0{reason}".encode(), digest_size=8).digest()
            sums[index] = (sums[index] + int.from_bytes(digest, "little")) % (1 << 64)
    return {path: f"{sums[i]:016x}" if i in sums else NO_DUPLICATES for i, path in enumerate(files)}


def remove_pass(target: Location) -> None:
    """Delete the pass's result once the run has published (a killed run's is replaced by the next pass)."""
    try:
        target.fs.delete_dir(target.path)
    except FileNotFoundError:
        pass
