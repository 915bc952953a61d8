"""When a read task read a whole local input file: its size and change token while it was read (a stat before its
first block and after its last), so that the driver can tell a file changed before the read from one changed after.

Both jobs check a file's change token before they commit its rows (pipeline.input_contents.changed_inputs, the
re-embed job's stage check). Any write moves a local file's ctime (pipeline.change_tokens), so when size and token
did not move during the read, the rows are of the file at that token, and the driver compares it with the listing:

* read at the listed token: the rows are of the listed file, whatever happened to it after the read (a touch, an
  edit, an append: the next run sees that change); no hash is needed;
* read at a later token (touched or rewritten between the listing and the read): the rows are of the bytes now on
  disk when the file still has that token (pipeline.reembed.sources.changed_now; the re-embed job hashes those
  bytes on the driver for its manifest), else a change.

No hash is taken here: both jobs' drivers already hash every local file once (the embed job's ContentRecorder, the
re-embed job's content_tokens), and a second pass in the read task read every byte again: for a Parquet file read
for one text column beside wide others that was most of the read task's CPU (bench/read_content_cost.py).
Only whole files: a split file's units (Parquet row groups, JSONL byte ranges) read parts of it at different times,
so no unit's read proves the others'. S3 objects are not: their ETag is checked by one listing at the end of the run.

A whole local JSONL or text file (not compressed, UTF-8) that has grown past its listed size when its read task
starts (a log synced into the corpus while the job runs) is read up to its listed size only (listed_prefix): the
read task hashes the bytes it reads as it reads them and reports `[path, listed size, token, sha256]`. The driver
takes those rows as the listed file only when that hash equals the hash of the listed bytes it took while the file
had its listed token (pipeline.reembed.sources.changed_now); the appended bytes are left for the next run. No hash
of the listed bytes, another hash, or a listed file whose last line had no line end yet (a line half written when it
was listed: no prefix is reported) is a change, as before. Parquet and compressed files are never read as a prefix.

Each value is a ReadAs: which of those reads it was is a field (`prefix`), not the length of a tuple, so no caller can
take a prefix read's hash for the file's or the other way round. The re-embed job's read task also hashes a
compressed local file's decompressed bytes as it decompresses them (`decompressed`: DecompressedDigest), for the
entry's FileEntry.decompressed, where the driver decompressed the file a second time.
Light imports: runs in every read task.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, Self

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline.change_tokens import local_token
from pipeline.columns import READ_AS
from pipeline.file_formats import MAGIC_BYTES, bom_encoding, compression_of
from pipeline.line_ranges import LINE_FORMATS
from pipeline.storage import Location

LINE_ENDS = (b"\n", b"\r")


class ReadAs(NamedTuple):
    """What a read task read of one whole local file (with_read_content), as the driver's checks take it.

    `size`, `token`: the file's size and change token before and after the read (for a prefix read: its listed size
    and its token when the read began). `prefix`: `sha256:<hex>` of the first `size` bytes when the file had grown and
    was read up to its listed size (ListedPrefix); None when it was read whole. `decompressed`: `sha256:<hex>` of a
    compressed file's decompressed bytes, every one of them read (DecompressedDigest); None otherwise."""

    size: int
    token: str
    prefix: str | None = None
    decompressed: str | None = None

    @property
    def is_prefix(self) -> bool:
        return self.prefix is not None

    def to_json(self, rel: str) -> str:
        return json.dumps({"path": rel, **self._asdict()})


def stat_token(root: Location, rel: str) -> tuple[int, str] | None:
    """(size, change token) of a local file now; None when it is gone."""
    try:
        st = os.stat(root.join(rel).path)
    except FileNotFoundError:
        return None
    return st.st_size, local_token(st.st_mtime_ns, st.st_ctime_ns)


def read_as(root: Location, rel: str, before: tuple[int, str] | None, decompressed: str | None = None) -> str | None:
    """ReadAs (JSON) of a local file read whole at (size, token) `before`, when it still has them
    after the read; None when it moved meanwhile or is gone."""
    if before is None or stat_token(root, rel) != before:
        return None
    return ReadAs(*before, decompressed=decompressed).to_json(rel)


class ListedPrefix:
    """The first `size` bytes (the listed size) of a local line file that has grown since its listing, and the
    sha256 of the bytes a read through `opener` read, taken as they are read (a re-read after a seek back is not
    hashed twice)."""

    def __init__(self, size: int):
        self.size = size
        self.digest = hashlib.sha256()
        self.hashed = 0  # bytes [0, hashed) are in the digest
        self.last = b""  # the byte before `size`, once read

    def opener(self, open_file: Callable[[], pa.NativeFile]) -> Callable[[], pa.NativeFile]:
        """An opener of the file as `open_file` opens it, that ends at `size` bytes and hashes what is read."""
        return lambda: pa.PythonFile(_PrefixReader(self, open_file()), mode="r")

    def saw(self, pos: int, data: bytes) -> None:
        if pos <= self.hashed < pos + len(data):
            self.digest.update(data[self.hashed - pos :])
            self.hashed = pos + len(data)
            if self.hashed == self.size:
                self.last = data[-1:]

    def read_as(self, rel: str, token: str) -> str | None:
        """ReadAs (JSON) with `prefix` when all `size` bytes were read and the last one ends a line (or `size` is 0);
        None otherwise: the listed file's last line was not complete, its rows are not the listed file's."""
        if self.hashed != self.size or (self.size and self.last not in LINE_ENDS):
            return None
        return ReadAs(self.size, token, prefix=f"sha256:{self.digest.hexdigest()}").to_json(rel)


class _PrefixReader(io.RawIOBase):
    """A readable, seekable file object over `f` that ends at `prefix.size` and hashes what it reads."""

    def __init__(self, prefix: ListedPrefix, f: pa.NativeFile):
        super().__init__()
        self.prefix, self.f = prefix, f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)

    def tell(self) -> int:
        return self.f.tell()

    def readinto(self, buffer: memoryview | bytearray) -> int:
        pos = self.f.tell()
        data = self.f.read(max(0, min(len(buffer), self.prefix.size - pos)))
        self.prefix.saw(pos, data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.f.close()
        super().close()


class DecompressedDigest:
    """sha256 of a compressed file's decompressed bytes, taken as its read task decompresses them
    (pipeline.file_formats.utf8_chunks), so that the re-embed job records FileEntry.decompressed without a second
    decompression on the driver. `value()` is None unless every byte was read (a file cut short, or a reject that
    stopped the read, has none) and the decompressed bytes are not compressed again (moves.decompressed_token's
    rule)."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.head = b""
        self.ended = False

    def reading(self, stream: pa.NativeFile) -> _DigestStream:
        """`stream` (decompressed), hashing what is read from it."""
        return _DigestStream(self, stream)

    def saw(self, data: bytes) -> None:
        if not data:
            self.ended = True
            return
        if len(self.head) < MAGIC_BYTES:
            self.head += data[: MAGIC_BYTES - len(self.head)]
        self.digest.update(data)

    def value(self) -> str | None:
        if not self.ended or compression_of(self.head):
            return None
        return f"sha256:{self.digest.hexdigest()}"


class _DigestStream:
    """A decompressed stream's `read` and context manager, feeding what is read to a DecompressedDigest."""

    def __init__(self, owner: DecompressedDigest, stream: pa.NativeFile):
        self.owner, self.stream = owner, stream

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.owner.saw(data)
        return data

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


def listed_prefix(root: Location, rel: str, fmt: str, listed_size: int | None) -> ListedPrefix | None:
    """A ListedPrefix of `listed_size` bytes when a local JSONL or text file that is not compressed and not
    UTF-16/32 is larger now than it was listed (appended to since); None otherwise (read it whole, as listed or
    changed: the driver's check decides). `listed_size` None: not known (a split file's range, an older plan)."""
    if listed_size is None or fmt not in LINE_FORMATS or not isinstance(root.fs, pafs.LocalFileSystem):
        return None
    now = stat_token(root, rel)
    if now is None or now[0] <= listed_size:
        return None
    with open(root.join(rel).path, "rb") as f:
        head = f.read(MAGIC_BYTES)
    if compression_of(head) or bom_encoding(head) not in (None, "utf-8"):
        return None
    return ListedPrefix(listed_size)


def with_read_content(
    root: Location,
    rel: str,
    whole: bool,
    blocks: Iterable[pa.Table],
    prefix: ListedPrefix | None = None,
    plain: DecompressedDigest | None = None,
) -> Iterator[pa.Table]:
    """`blocks` of one file with the READ_AS column: read_as on its last row when `whole` (the unit reads the whole
    file) and the file is local, null elsewhere (one value per file, whatever its rows). `prefix`: the file was
    read up to its listed size (listed_prefix): its ListedPrefix.read_as instead. `plain`: the digest the read of
    `blocks` fed with the decompressed bytes (ReadAs.decompressed)."""
    local = whole and isinstance(root.fs, pafs.LocalFileSystem)
    before = stat_token(root, rel) if local else None
    held = None
    for block in blocks:
        if held is not None:
            yield held.append_column(READ_AS, pa.nulls(held.num_rows, pa.string()))
        held = block
    if held is not None:
        value = None
        if local and prefix is not None:
            value = prefix.read_as(rel, before[1] if before else "")
        elif local:
            value = read_as(root, rel, before, plain.value() if plain is not None else None)
        yield held.append_column(READ_AS, pa.array([None] * (held.num_rows - 1) + [value], pa.string()))


def read_values(block: pa.Table) -> list[str]:
    """The distinct READ_AS values of `block` (for a write stage's stats); [] without the column."""
    if READ_AS not in block.column_names or block.num_rows == 0:
        return []
    return [v for v in pc.unique(block.column(READ_AS)).to_pylist() if v is not None]


def parse_read(values: Iterable[str]) -> dict[str, ReadAs]:
    """{path: ReadAs} of read_as values (with_read_content)."""
    parsed: dict[str, ReadAs] = {}
    for value in values:
        fields = json.loads(value)
        path = fields.pop("path")
        parsed[path] = ReadAs(**fields)
    return parsed
