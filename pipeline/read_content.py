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
Light imports: runs in every read task.
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
from pipeline.storage import Location


def stat_token(root: Location, rel: str) -> tuple[int, str] | None:
    """(size, change token) of a local file now; None when it is gone."""
    try:
        st = os.stat(root.join(rel).path)
    except FileNotFoundError:
        return None
    return st.st_size, local_token(st.st_mtime_ns, st.st_ctime_ns)


def read_as(root: Location, rel: str, before: tuple[int, str] | None) -> str | None:
    """`[path, size, token]` (JSON) of a local file read whole at (size, token) `before`, when it still has them
    after the read; None when it moved meanwhile or is gone."""
    if before is None or stat_token(root, rel) != before:
        return None
    return json.dumps([rel, before[0], before[1]])


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


def parse_read(values: Iterable[str]) -> dict[str, tuple[int, str]]:
    """{path: (size, token)} of read_as values."""
    parsed = {}
    for value in values:
        path, size, token = json.loads(value)[:3]
        parsed[path] = (size, token)
    return parsed
