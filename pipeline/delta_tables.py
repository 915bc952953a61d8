"""Delta Lake tables in an input folder: only the Parquet files of the table's current version hold its rows.

A Delta table is a folder of Parquet files and a `_delta_log/` of commits (JSON lines of `add` / `remove` actions,
with a Parquet checkpoint every few commits). An overwrite, update, delete or compaction removes files from the
table in the log but leaves them in the folder until VACUUM, so a listing read them all: rows deleted or replaced
were embedded next to the current ones, without a word. The listing skips `_delta_log/` as it skips every `_` name;
check_tables replays each table's log (the last checkpoint, then the commits after it) and refuses an input whose
folder holds Parquet files the current version does not list, or whose files have rows deleted in place (deletion
vectors). An append-only table (every file live) is read as before.

An Apache Iceberg table (`metadata/*.metadata.json` beside `data/`) lists its files in Avro manifests, which are not
read here: such a folder is refused saying how to read the table (the job failed on its `.avro` manifests as an
unknown extension, whose message said to set input.format).
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import urllib.parse
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import UserError

log = logging.getLogger(__name__)
LOG = "_delta_log"
COMMIT = re.compile(r"(\d{20})\.json")
CHECKPOINT = re.compile(r"(\d{20})\.checkpoint(?:\.\d+\.\d+)?\.parquet")


class DeltaTableError(UserError, ValueError):
    """An input folder that is a Delta Lake table whose folder holds more than its current version."""


def table_roots(rels: Iterable[str]) -> list[str]:
    """The folders (relative to the listing root, '' for the root itself) that hold a `_delta_log/`, from the
    relative paths of a listing's entries, hidden ones included."""
    roots = set()
    for rel in rels:
        parts = rel.split("/")
        if LOG in parts:
            roots.add("/".join(parts[: parts.index(LOG)]))
    return sorted(roots)


def iceberg_roots(rels: Iterable[str]) -> list[str]:
    """The folders (relative to the listing root, '' for the root) that hold an Iceberg table's
    `metadata/<...>.metadata.json`, from a listing's relative file paths."""
    roots = set()
    for rel in rels:
        if not rel.endswith(".metadata.json"):  # one test per listed file: listings can hold millions
            continue
        parts = rel.split("/")
        if len(parts) >= 2 and parts[-2] == "metadata":
            roots.add("/".join(parts[:-2]))
    return sorted(roots)


def check_iceberg(uri: str, rels: list[str], key: str) -> None:
    """Refuse a listing (`rels`: its files) that holds an Apache Iceberg table's metadata.

    Raises:
        DeltaTableError: names the table and how to read its current snapshot.
    """
    for table in iceberg_roots(rels):
        where = posixpath.join(uri, table) if table else uri
        raise DeltaTableError(
            f"{key}: {where} is an Apache Iceberg table (it has metadata/*.metadata.json); its files are listed in "
            "Avro manifests that are not read here, and its data/ folder keeps the files of older snapshots, so "
            "reading the folder would embed rows the table no longer has. Write its current snapshot out as Parquet "
            "(pyiceberg: pyarrow.parquet.write_table(catalog.load_table(NAME).scan().to_arrow(), OUT); Spark: "
            f"spark.table(NAME).write.parquet(OUT)) and set {key} to that"
        )


def live_files(fs: pafs.FileSystem, table: str) -> tuple[set[str], int]:
    """(paths relative to the table folder of the files its current version lists, how many of them carry a deletion
    vector), replaying `table`/_delta_log: the newest checkpoint's `add` actions, then each later commit's `add` and
    `remove` in order."""
    log = posixpath.join(table, LOG)
    commits, checkpoints = {}, {}
    for info in fs.get_file_info(pafs.FileSelector(log, recursive=False)):
        name = posixpath.basename(info.path)
        if found := COMMIT.fullmatch(name):
            commits[int(found.group(1))] = info.path
        elif found := CHECKPOINT.fullmatch(name):
            checkpoints.setdefault(int(found.group(1)), []).append(info.path)
    live: dict[str, bool] = {}  # path -> has a deletion vector
    start = max(checkpoints, default=-1)
    for part in sorted(checkpoints.get(start, [])):
        with fs.open_input_file(part) as f:
            adds = pq.read_table(f, columns=["add"]).column("add").to_pylist()
        for add in adds:
            if add is not None:
                live[relative(add["path"], table)] = add.get("deletionVector") is not None
    for version in sorted(v for v in commits if v > start):
        with fs.open_input_stream(commits[version]) as f:
            for line in f.read().decode("utf-8").splitlines():
                action = json.loads(line) if line.strip() else {}
                if "add" in action:
                    live[relative(action["add"]["path"], table)] = action["add"].get("deletionVector") is not None
                elif "remove" in action:
                    live.pop(relative(action["remove"]["path"], table), None)
    return set(live), sum(live.values())


def relative(path: str, table: str) -> str:
    """A log's file path as a listing below the table names it: relative ones are URL-encoded
    (`lang%3Dfr/part-0.parquet`); an absolute one (`s3://bucket/t/part-0.parquet`, `file:/data/t/part-0.parquet`,
    as shallow clones and some writers record) is made relative to `table` (the filesystem path) where it is below."""
    parsed = urllib.parse.urlparse(path)
    if not parsed.scheme and not path.startswith("/"):
        return urllib.parse.unquote(path)
    full = urllib.parse.unquote(parsed.netloc + parsed.path if parsed.scheme not in ("", "file") else parsed.path)
    return full.removeprefix(table.rstrip("/") + "/")


def check_tables(fs: pafs.FileSystem, root: str, uri: str, rels: list[str], entries: Iterable[str], key: str) -> None:
    """Refuse a listing (`rels`: its files, relative to `root`) that would read more than the current version of a
    Delta table in it (`entries`: every entry's relative path, hidden ones included).

    Raises:
        DeltaTableError: names the table, how many Parquet files its current version does not list (or that have
            rows deleted in place), an example, and how to read the current version.
    """
    for table in table_roots(entries):
        where = posixpath.join(uri, table) if table else uri
        try:
            live, with_vectors = live_files(fs, posixpath.join(root, table) if table else root)
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:  # a log this reader cannot follow
            log.warning(
                "%s: %s has a %s folder that could not be read (%s: %s): its Parquet files are read as a plain "
                "folder, which includes files a Delta table no longer lists",
                key,
                where,
                LOG,
                type(err).__name__,
                err,
            )
            continue
        below = [r.removeprefix(table + "/") if table else r for r in rels if not table or r.startswith(table + "/")]
        stale = sorted(r for r in below if r.endswith(".parquet") and r not in live)
        if not stale and not with_vectors:
            continue
        what = (
            f"its folder holds {len(stale)} Parquet file(s) its current version no longer lists (e.g. {stale[0]!r}: "
            "removed by an overwrite, update, delete or compaction and not yet vacuumed)"
            if stale
            else f"{with_vectors} of its files have rows deleted in place (deletion vectors)"
        )
        raise DeltaTableError(
            f"{key}: {where} is a Delta Lake table (it has a {LOG} folder) and {what}, so reading its Parquet files "
            "would embed rows the table no longer has. Write its current version out as Parquet (deltalake: "
            "pyarrow.parquet.write_table(DeltaTable(URI).to_pyarrow_table(), OUT); Spark: "
            f"spark.read.format('delta').load(URI).write.parquet(OUT)) and set {key} to that, or VACUUM the table "
            "(and purge its deletion vectors) first"
        )
