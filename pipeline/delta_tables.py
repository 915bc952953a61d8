"""Delta Lake tables in an input folder: their current version is read, through the deltalake package (delta-rs).

A Delta table is a folder of Parquet files and a `_delta_log/` of commits and checkpoints. An overwrite, update,
delete or compaction removes files from the table in the log but leaves them in the folder until VACUUM, so reading
the folder's Parquet files embeds rows the table no longer has. The listing skips `_delta_log/` as it skips every
`_` name, and current_files asks deltalake which files the table's current version holds: the others are left out
of the listing (one INFO line per table says how many), so a job embeds the table's rows. The log is read by
delta-rs (classic, multi-part and v2 checkpoints, `_last_checkpoint`, logs cleaned up after a checkpoint), not here.
A table is found as the listing root, in a folder below it (its `_delta_log/` listed), or above it when the root is
one of its `key=value` partition folders (enclosing_table). deltalake is imported only when a table is found.

Refused, as Parquet files alone cannot give the table's rows: deletion vectors (rows deleted in place), column
mapping (the files' column names are not the table's), a protocol delta-rs cannot read, partition values a file's
path does not carry as `key=value/` folders (pipeline.reading takes a kept column a file lacks from them), and files
of the current version that are not in the listing (rows that would be lost).

An Apache Iceberg table (`metadata/*.metadata.json` beside `data/`) lists its files in Avro manifests, which are not
read here (pyiceberg needs a catalog): such a folder is refused saying how to read the table.
"""

from __future__ import annotations

import logging
import posixpath
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.config import StorageConfig
from pipeline.errors import UserError
from pipeline.s3_tls import ssl_cert_file

if TYPE_CHECKING:
    from pipeline.storage import ListedFile

log = logging.getLogger(__name__)
LOG = "_delta_log"
# what a refusal tells the user to do: write the current version out as plain Parquet files
WRITE_OUT = (
    "Write its current version out as Parquet (deltalake: pyarrow.parquet.write_table(pyarrow.table("
    "DeltaTable(URI).scan()), OUT); Spark: spark.read.format('delta').load(URI).write.parquet(OUT)) and set {key} to "
    "that"
)


class DeltaTableError(UserError, ValueError):
    """An input folder that is a Delta Lake (or Iceberg) table whose current version Parquet files alone cannot give."""


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


def storage_options(uri: str, storage: StorageConfig) -> dict[str, str]:
    """deltalake's `storage_options` for a table at `uri` with the settings pyarrow's and boto3's S3 clients get
    (pipeline.storage.make_filesystem, pipeline.s3_listing.s3_client): endpoint, region, anonymous access, virtual
    addressing, and the credentials boto3 finds (environment, profile, role). {} for a local table. Its CA bundle is
    SSL_CERT_FILE (current_files); its proxy the environment's, as boto3's."""
    if not uri.startswith("s3://"):
        return {}
    import boto3

    session = boto3.Session()
    options: dict[str, str] = {}
    if storage.endpoint_url:
        options["AWS_ENDPOINT_URL"] = storage.endpoint_url
        options["AWS_ALLOW_HTTP"] = "true" if storage.endpoint_url.startswith("http://") else "false"
        if storage.addressing_style == "virtual":  # object_store takes the bucket's own host as the endpoint then
            scheme, _, host = storage.endpoint_url.partition("://")
            bucket = uri.removeprefix("s3://").split("/", 1)[0]
            options["AWS_ENDPOINT_URL"] = f"{scheme}://{bucket}.{host}"
            options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "true"
    region = storage.region or ("us-east-1" if storage.endpoint_url else session.region_name)
    if region:
        options["AWS_REGION"] = region
    if storage.anon:
        options["AWS_SKIP_SIGNATURE"] = "true"
    elif (found := session.get_credentials()) is not None:
        credentials = found.get_frozen_credentials()
        options["AWS_ACCESS_KEY_ID"] = credentials.access_key
        options["AWS_SECRET_ACCESS_KEY"] = credentials.secret_key
        if credentials.token:
            options["AWS_SESSION_TOKEN"] = credentials.token
    return options


def relative(path: str, table: str) -> str | None:
    """An add action's path (a URI reference, as the log keeps it: `k=a%2520b/part-0.parquet` is the folder
    `k=a%20b`) as a listing below the table names it (None: not below the table); an absolute one (a shallow
    clone's `s3://bucket/t/a.parquet`, `file:///data/t/a.parquet`) is made relative to `table`, the table's URI."""
    parsed = urllib.parse.urlparse(path)
    if not parsed.scheme and not path.startswith("/"):
        return urllib.parse.unquote(path)
    full = (
        f"{parsed.scheme}://{parsed.netloc}{urllib.parse.unquote(parsed.path)}"
        if parsed.scheme not in ("", "file")
        else urllib.parse.unquote(parsed.path)
    )
    prefix = table.rstrip("/") + "/"
    return full[len(prefix) :] if full.startswith(prefix) else None


def as_strings(column: pa.ChunkedArray) -> list[str | None]:
    """A partition column's values as the `key=value/` folder names them (only the types compared: string, integer,
    boolean; others are compared by key alone)."""
    if pa.types.is_boolean(column.type):
        return [None if v is None else ("true" if v else "false") for v in column.to_pylist()]
    return [None if v is None else str(v) for v in column.to_pylist()]


def current_files(table_uri: str, storage: StorageConfig, key: str) -> tuple[int, dict[str, str | None]]:
    """(the table's current version, {path as the table names it: the path relative to the table folder, or None
    when the file is not below it}) of the Delta table at `table_uri` (a local absolute path or `s3://bucket/prefix`).

    Raises:
        DeltaTableError: the table cannot be read from its Parquet files: a log or protocol delta-rs cannot read,
            column mapping, deletion vectors, partition values its files' paths do not carry. Each names the table,
            why, and how to write its current version out.
    """
    try:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError
    except ImportError as err:  # a dependency: an install that lacks it
        raise DeltaTableError(
            f"{key}: {table_uri} is a Delta Lake table (it has a {LOG} folder) and reading its current version needs "
            "the deltalake package: pip install 'deltalake==1.6.6'"
        ) from err
    refuse = f"{key}: {table_uri} is a Delta Lake table (it has a {LOG} folder) and "
    write_out = WRITE_OUT.format(key=key)
    s3 = table_uri.startswith("s3://")
    try:
        with ssl_cert_file(storage.ca_bundle if s3 else None):
            table = DeltaTable(table_uri, storage_options=storage_options(table_uri, storage))
        protocol, metadata = table.protocol(), table.metadata()
        mapping = metadata.configuration.get("delta.columnMapping.mode", "none")
        if mapping != "none":
            raise DeltaTableError(
                f"{refuse}it uses column mapping (delta.columnMapping.mode = {mapping}): its Parquet files name the "
                f"columns otherwise than the table does, so they cannot be read as plain Parquet files. {write_out}"
            )
        if "deletionVectors" in (protocol.reader_features or []):
            deleted = pa.table(table.deletion_vectors())
            if deleted.num_rows:
                example = deleted.column("filepath")[0].as_py()
                raise DeltaTableError(
                    f"{refuse}{deleted.num_rows} of its files have rows deleted in place (deletion vectors; e.g. "
                    f"{example!r}), which reading the Parquet files would embed. {write_out}, or purge the deletion "
                    "vectors (Spark: REORG TABLE ... APPLY (PURGE))"
                )
        actions = pa.table(table.get_add_actions(flatten=True))
    except DeltaError as err:  # a protocol or log delta-rs cannot read (an unknown reader feature, a broken log)
        raise DeltaTableError(
            f"{refuse}the deltalake package cannot read it ({type(err).__name__}: {err}). Upgrade deltalake if "
            f"the table uses a newer protocol, or: {write_out}"
        ) from err
    if not actions.num_rows:  # every row deleted: no file
        return table.version(), {}
    from pipeline.reading import hive_partitions  # the reader's own rule for `key=value/` folders

    partitions = list(metadata.partition_columns)
    values = {name: as_strings(actions.column(f"partition.{name}")) for name in partitions}
    compared = {
        name
        for name in partitions
        if (t := actions.column(f"partition.{name}").type) is not None
        and (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_boolean(t))
    }
    files: dict[str, str | None] = {}
    for i, path in enumerate(actions.column("path").to_pylist()):
        rel = relative(path, table_uri)
        files[path] = rel
        in_path = hive_partitions(rel or path)
        for name in partitions:
            value = values[name][i]
            # without its folder a null reads as null; a value of a type compared must be the folder's
            wrong = value is not None if name not in in_path else name in compared and in_path[name] != value
            if wrong:
                raise DeltaTableError(
                    f"{refuse}its file {path!r} holds rows of partition {name} = {value!r}, a value the "
                    f"table keeps in its log and not in the file, whose path does not name it as a '{name}=...' "
                    f"folder, so the rows would be read without it. {write_out}"
                )
    return table.version(), files


def live_listing(
    files: list[ListedFile],
    table: str,
    table_uri: str,
    storage: StorageConfig,
    key: str,
    complete: bool,
    inside: str = "",
) -> list[ListedFile]:
    """`files` (a listing's, relative to its root) less those of the Delta table at `table_uri` (its absolute path or
    `s3://` URI) that the table's current version does not hold. The table is the listing root's folder `table`
    ('' for the root itself), or, with `inside` (the root's path relative to the table: a partition folder), a
    folder above the root. One INFO line names the table, its version, and how many files were left out.
    `complete`: the listing holds every file of the root (no glob pattern), so a file of the current version below
    it that is not listed is one whose rows would be lost.

    Raises:
        DeltaTableError: from current_files; or a file of the current version is not in a `complete` listing
            (deleted from the folder, or not below it: a shallow clone's absolute paths).
    """
    version, live = current_files(table_uri, storage, key)
    prefix = f"{table}/" if table else ""
    above = f"{inside}/" if inside else ""

    def in_table(path: str) -> str:
        return above + path[len(prefix) :]

    below = {in_table(f.path) for f in files if f.path.startswith(prefix)}
    held = {rel for rel in live.values() if rel is not None}
    missing = sorted(p for p, rel in live.items() if rel is None or (rel.startswith(above) and rel not in below))
    if complete and missing:
        raise DeltaTableError(
            f"{key}: {table_uri} is a Delta Lake table whose current version (version {version}) holds "
            f"{len(missing)} file(s) that are not in its folder (e.g. {missing[0]!r}: deleted, or kept elsewhere, as "
            f"a shallow clone's files are), so their rows would be lost. {WRITE_OUT.format(key=key)}"
        )
    left_out = below - held
    log.info(
        "%s: %s is a Delta Lake table at version %d: reading the %d file(s) of its current version%s; left out %d "
        "file(s) that it no longer holds (removed by an overwrite, update, delete or compaction, not yet vacuumed)",
        key,
        table_uri,
        version,
        len(below & held),
        f" in {inside}/" if inside else "",
        len(left_out),
    )
    return [f for f in files if not f.path.startswith(prefix) or in_table(f.path) not in left_out]


def enclosing_table(fs: pafs.FileSystem, path: str) -> tuple[str, str] | None:
    """(the table folder, `path` relative to it) when `path` (a listing root on `fs`) is a partition folder of a
    Delta table (a `key=value` segment whose parent holds a `_delta_log/`: one request per such segment, none for
    a path without one), else None."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if i and "=" in part.strip("="):
            folder = "/".join(parts[:i])
            if fs.get_file_info(posixpath.join(folder, LOG)).type == pafs.FileType.Directory:
                return folder, "/".join(parts[i:])
    return None
