"""A file renamed or moved (same content under a new path): its published vectors are reused, without the model.

`mv a.jsonl b.jsonl`, a folder renamed, a corpus reorganized into date partitions, two files swapped: the content
is the same bytes the version already embedded under another path, so its vectors are too. The planner
(pipeline.reembed.planner, `moves`) pairs such a file with the entry whose content it has: on local disks by the
entry's recorded sha256 (FileEntry.content, hashed only for a file whose size equals some entry's), on S3 by the
ETag (a content hash; a copy to a new key keeps it). The pair must be read alike (same format and compression
suffix: the same bytes named .txt are other rows than named .jsonl) and have the same duplicate-id rejects.

What depends on the path is written again here, the vectors are not: a row id derived from the path
(`<file>#<row>`, no input.id_column or a text file, pipeline.reading.make_block) gets the new path, as a new file's
would; the reject files' `source` column names the new path. Ids from an id column stay the same. Each output file
is read and written under `data/<new key>/<run>/` with its name kept (garbage collection keeps outputs by run
folder), so the new entry owns its files and the old one can leave the version. A run killed while moving
publishes nothing; the next run moves again and garbage collection removes the orphans.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.columns import ID, REJECT_COLUMNS
from pipeline.etags import stream_gives_etag
from pipeline.file_formats import (
    COMPRESSED_SUFFIXES,
    MAGIC_BYTES,
    InputFileError,
    compressed_name,
    compression_of,
    file_format,
    open_raw,
)
from pipeline.reembed.layout import VersionLayout
from pipeline.reembed.manifest import FileEntry
from pipeline.reembed.sources import SourceFile, hash_as_listed, local_source
from pipeline.storage import Location, write_parquet_atomic

log = logging.getLogger(__name__)

MOVE_THREADS = 4  # output files read and written at once (I/O bound: pyarrow releases the GIL)


def compression_suffix(rel: str) -> str:
    name = rel.lower()
    return next((s for s in COMPRESSED_SUFFIXES if name.endswith(s)), "")


def reads_alike(configured: str | None, old: str, new: str) -> bool:
    """Whether the same bytes under `old` and under `new` give the same rows: same format (input.format, else the
    extension's) and same compression suffix. False when an extension names no format."""
    try:
        same_format = file_format(configured, old) == file_format(configured, new)
    except InputFileError:
        return False
    return same_format and compression_suffix(old) == compression_suffix(new)


def same_format(configured: str | None, old: str, new: str) -> bool:
    """Whether `old` and `new` are read as one format (input.format, else the extension's, compression aside)."""
    try:
        return file_format(configured, old) == file_format(configured, new)
    except InputFileError:
        return False


def decompressed_token(root: Location, rel: str) -> str | None:
    """`sha256:<hex>` of a compressed local file's decompressed bytes (compression by magic number, as the reader
    decides it: pipeline.file_formats.open_raw), so that `a.jsonl` compressed into `a.jsonl.gz` is paired with the
    entry of `a.jsonl` (whose content hash is of those bytes). None: on S3, not compressed, compressed twice (the
    reader would not read the inner text), or not readable as its codec."""
    if not isinstance(root.fs, pafs.LocalFileSystem):
        return None
    digest = hashlib.sha256()
    try:
        stream, codec = open_raw(root.fs, root.join(rel).path)
        with stream:
            if codec is None:  # a plain file: nothing read past its magic number
                return None
            chunk = stream.read(8 << 20)
            if compression_of(chunk[:MAGIC_BYTES]):
                return None
            while chunk:
                digest.update(chunk)
                chunk = stream.read(8 << 20)
    except (OSError, pa.ArrowInvalid):  # a stream cut short: the embedding makes it one reject
        return None
    return f"sha256:{digest.hexdigest()}"


ZSTD_FRAME = b"\x28\xb5\x2f\xfd"
GZIP_FEXTRA = 0x04  # a gzip header with an extra field: bgzip's blocks (many members), whose ISIZE is the last one's


def declared_size(root: Location, rel: str) -> int | None:
    """The decompressed size a compressed file declares without being decompressed, modulo 2**32: a gzip
    file's ISIZE trailer (its last 4 bytes; a header with an extra field, as bgzip's many members have, declares
    none), a zstd file's first frame content size (written by `zstd FILE`, not by a stream from a pipe or pzstd).
    None: declares none (bzip2, those above), not compressed, or gone. A single-member gzip file or a
    one-frame zstd file decompresses to that many bytes (mod 2**32); a gzip file of several members concatenated
    (`cat a.gz b.gz`) declares its last member's, so such a file may be taken for another size (not paired: it is
    embedded as a new file)."""
    try:
        with root.fs.open_input_file(root.join(rel).path) as f:  # on S3: a HEAD and one or two ranged GETs
            size = f.size()
            head = f.read_at(min(18, size), 0)
            if head[:2] == b"\x1f\x8b" and len(head) >= 18 and not head[3] & GZIP_FEXTRA:
                return int.from_bytes(f.read_at(4, size - 4), "little")
    except OSError:
        return None
    if head[:4] != ZSTD_FRAME or len(head) < 6:
        return None
    descriptor = head[4]
    fcs_flag, single = descriptor >> 6, bool(descriptor & 0x20)
    fcs_bytes = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if not fcs_bytes:
        return None
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 0x03]  # window descriptor, dictionary id
    field = head[at : at + fcs_bytes]
    if len(field) < fcs_bytes:
        return None
    value = int.from_bytes(field, "little") + (256 if fcs_bytes == 2 else 0)
    return value % 2**32


def decompressed_gives_etag(root: Location, rel: str, size: int, etag: str) -> bool:
    """Whether the compressed object `rel` decompresses (by magic number, as the reader decides it) to `size` bytes
    that give `etag` (pipeline.etags: the MD5 of a single-part upload, the part MD5s of a multipart one): the
    object an S3 entry's ETag names, compressed since (`a.jsonl` replaced by `a.jsonl.gz`). One read of the object;
    False when it is not compressed, is compressed twice, or cannot be read."""
    try:
        stream, codec = open_raw(root.fs, root.join(rel).path)
        with stream:
            if codec is None:
                return False
            head = stream.read(MAGIC_BYTES)
            if compression_of(head):
                return False
            same = stream_gives_etag(_Prepended(head, stream), size, etag)
    except (OSError, pa.ArrowInvalid) as err:
        log.info("cannot read %s to compare it with %s: %s", root.join(rel).uri, etag, err)
        return False
    if same:
        log.info(
            "%s: its decompressed bytes give the ETag %s of an entry of the version: the same object, compressed since",
            root.join(rel).uri,
            etag.removeprefix("etag:"),
        )
    return same


class _Prepended:
    """`head` then the rest of `stream`, through `read(n)`."""

    def __init__(self, head: bytes, stream: pa.NativeFile):
        self.head, self.stream = head, stream

    def read(self, n: int) -> bytes:
        if self.head:
            data, self.head = self.head + self.stream.read(max(0, n - len(self.head))), b""
            return data
        return self.stream.read(n)


def decompressed_as_listed(root: Location, src: SourceFile) -> str | None:
    """decompressed_token of a local file whose name says it is compressed (file_formats.COMPRESSED_SUFFIXES), taken
    while it has its listed size and token (a stat before and after); None otherwise."""
    if not compressed_name(src.path) or not isinstance(root.fs, pafs.LocalFileSystem):
        return None
    try:
        if local_source(root, src.path) != src:
            return None
        sha = decompressed_token(root, src.path)
        return sha if local_source(root, src.path) == src else None
    except FileNotFoundError:
        return None


def renamed_ids(ids: pa.ChunkedArray | pa.Array, old: str, new: str) -> pa.Array:
    """Ids `<old>#<row>` as `<new>#<row>`.

    Raises:
        ValueError: an id does not start with `<old>#` (the output was not written with path ids).
    """
    prefix = f"{old}#"
    values = ids.to_pylist()
    if any(v is not None and not v.startswith(prefix) for v in values):
        bad = next(v for v in values if v is not None and not v.startswith(prefix))
        raise ValueError(f"id {bad!r} of {old} is not derived from its path")
    return pa.array([None if v is None else f"{new}#{v[len(prefix) :]}" for v in values], pa.string())


def moved_table(table: pa.Table, old: str, new: str, path_ids: bool, source: str | None = None) -> pa.Table:
    """`table` with path-derived ids renamed (when `path_ids`) and the column `source` (a reject file's) naming
    `new`; other columns, field and schema metadata kept."""
    if path_ids and ID in table.column_names:
        index = table.schema.get_field_index(ID)
        table = table.set_column(index, table.schema.field(index), renamed_ids(table.column(index), old, new))
    if source is not None and source in table.column_names:
        index = table.schema.get_field_index(source)
        table = table.set_column(index, table.schema.field(index), pa.array([new] * table.num_rows, pa.string()))
    return table


def move_entry(root: Location, entry: FileEntry, src: SourceFile, run_id: str, path_ids: bool) -> FileEntry:
    """The entry of `src` (the same content as `entry`'s file under a new path): `entry`'s output and reject files
    written under `src`'s key and `run_id` (moved_table), its counts, content and duplicates digest kept. Paths are
    relative to the version root `root`."""
    folder = VersionLayout.run_dir(src.key, run_id)
    files = [f"{folder}/{posixpath.basename(rel)}" for rel in entry.files]
    rejects = [f"{folder}/_rejects/{posixpath.basename(rel)}" for rel in entry.rejects]
    pairs = [(old, new, None) for old, new in zip(entry.files, files)]
    pairs += [(old, new, REJECT_COLUMNS[1]) for old, new in zip(entry.rejects, rejects)]  # rejects: `source` column
    for old, new, source in pairs:
        table = pq.read_table(root.join(old).path, filesystem=root.fs)
        write_parquet_atomic(moved_table(table, entry.path, src.path, path_ids, source), root.join(new))
    return dataclasses.replace(
        entry, path=src.path, size=src.size, token=src.token, key=src.key, run_id=run_id, files=files, rejects=rejects
    )


def recompressed_hashes(root: Location, src: SourceFile, old: FileEntry, entry: FileEntry) -> FileEntry:
    """`entry` (`old` moved to `src`: move_entry), with content and decompressed hashes of `src`'s bytes where the move
    crossed a compression (a.jsonl -> a.jsonl.gz, or back): the plain entry's content is the compressed file's
    decompressed hash, the compressed file's own bytes are hashed here while as listed (root: the input root); the
    other way, the compressed entry's decompressed hash is the plain file's content. They kept the old file's, so
    the file's own hash was missing (hashed again by the next run, which published a manifest for it) or wrong (a
    touch of it then compared other bytes: embedded again). Both compressed (recompressed, or a compressed file
    renamed): the content is `src`'s own bytes hashed here, the decompressed hash is `old`'s. Unchanged when neither
    is compressed, or on S3 (no content hashes)."""
    if not isinstance(root.fs, pafs.LocalFileSystem) or not (compressed_name(src.path) or compressed_name(old.path)):
        return entry
    if compressed_name(src.path) and compressed_name(old.path):  # recompressed: other bytes, the same plain ones
        return dataclasses.replace(entry, content=hash_as_listed(root, src), decompressed=old.decompressed)
    if compressed_name(src.path):
        return dataclasses.replace(entry, content=hash_as_listed(root, src), decompressed=old.content)
    return dataclasses.replace(entry, content=old.decompressed, decompressed=None)


def has_path_ids(id_column: str | None, configured: str | None, rel: str) -> bool:
    """Whether the rows of `rel` get ids `<file>#<row>`: no input.id_column, or a text file (no columns)."""
    return id_column is None or file_format(configured, rel) == "text"


def move_entries(
    root: Location,
    moves: list[tuple[SourceFile, FileEntry]],
    run_id: str,
    id_column: str | None,
    configured: str | None,
) -> list[FileEntry | None]:
    """move_entry for each (new file, entry with its content), on the driver's threads, in order; None for an entry
    whose output files are gone (an older manifest's, whose garbage collection was interrupted): that file is
    embedded instead. `id_column`, `configured`: input.id_column and input.format."""
    if not moves:
        return []

    def move(pair: tuple[SourceFile, FileEntry]) -> FileEntry | None:
        src, entry = pair
        try:
            return move_entry(root, entry, src, run_id, has_path_ids(id_column, configured, src.path))
        except FileNotFoundError as err:
            log.warning("%s: the outputs of %s are gone (%s); embedding it instead", src.path, entry.path, err)
            return None

    with ThreadPoolExecutor(MOVE_THREADS) as pool:
        return list(pool.map(move, moves))
