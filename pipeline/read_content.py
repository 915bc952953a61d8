"""What a read task read of a whole local input file: its size and change token while it was read, and the sha256
of those bytes, so that the driver can tell a `touch` of the file from an edit also when it has no hash of the
listed bytes.

Both jobs check a file's change token before they commit its rows (pipeline.input_contents.changed_inputs, the
re-embed job's stage check); a token moved at the same size (a `touch`, an rsync/cp of the same bytes) is compared
by content with the sha256 the driver took while the file had its listed token. A file touched before the driver's
hashing threads reached it had no such hash, and the run failed for nothing. The read task knows which bytes it
read: it stats the file before its first block and after its last; when size and token did not move meanwhile
(any write moves the ctime: pipeline.change_tokens), the rows are of the file at that token, and it hashes the file
at that token (a stat after the hash again; a second read of bytes the page cache holds). The value travels on the
file's last row (READ_AS), the write stage passes it on in its stats, and the driver compares:

* read at the listed token: the sha256 is of the listed bytes (the hash the driver lacked);
* read at a later token: the rows are of the bytes now on disk when the file still has that token, or when its
  bytes now hash the same (pipeline.reembed.sources.changed_now).

Only whole files are hashed: a split file's units (Parquet row groups, JSONL byte ranges) read parts of it at
different times, so no unit's read proves the others'. S3 objects are not: their ETag is checked by one listing at
the end of the run. Light imports: runs in every read task.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline.change_tokens import local_token
from pipeline.columns import READ_AS
from pipeline.reembed.sources import content_token
from pipeline.storage import Location


def stat_token(root: Location, rel: str) -> tuple[int, str] | None:
    """(size, change token) of a local file now; None when it is gone."""
    try:
        st = os.stat(root.join(rel).path)
    except FileNotFoundError:
        return None
    return st.st_size, local_token(st.st_mtime_ns, st.st_ctime_ns)


def read_as(root: Location, rel: str, before: tuple[int, str] | None) -> str | None:
    """`[path, size, token, "sha256:<hex>"]` (JSON) of a local file read whole at (size, token) `before`, when it
    still has them after the read and after its hash; None when it moved meanwhile, is gone, or cannot be read."""
    if before is None or stat_token(root, rel) != before:
        return None
    try:
        sha = content_token(root, rel)
    except OSError:
        return None
    if stat_token(root, rel) != before:
        return None
    return json.dumps([rel, before[0], before[1], sha])


def with_read_content(root: Location, rel: str, whole: bool, blocks: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """`blocks` of one file with the READ_AS column: read_as on its last row when `whole` (the unit reads the whole
    file) and the file is local, null elsewhere (one value per file, whatever its rows)."""
    local = whole and isinstance(root.fs, pafs.LocalFileSystem)
    before = stat_token(root, rel) if local else None
    held = None
    for block in blocks:
        if held is not None:
            yield held.append_column(READ_AS, pa.nulls(held.num_rows, pa.string()))
        held = block
    if held is not None:
        value = read_as(root, rel, before) if local else None
        yield held.append_column(READ_AS, pa.array([None] * (held.num_rows - 1) + [value], pa.string()))


def read_values(block: pa.Table) -> list[str]:
    """The distinct READ_AS values of `block` (for a write stage's stats); [] without the column."""
    if READ_AS not in block.column_names or block.num_rows == 0:
        return []
    return [v for v in pc.unique(block.column(READ_AS)).to_pylist() if v is not None]


def parse_read(values: Iterable[str]) -> dict[str, tuple[int, str, str]]:
    """{path: (size, token, sha256)} of read_as values."""
    parsed = {}
    for value in values:
        path, size, token, sha = json.loads(value)
        parsed[path] = (size, token, sha)
    return parsed
