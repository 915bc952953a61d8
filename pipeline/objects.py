"""Small JSON objects (pointers, manifests, markers, the lease) written whole or not at all.

An S3 PUT is atomic: a reader sees the old object or the new one. A local file written in place is not, so on
local disks we write a hidden temp file and rename it over the target (atomic on POSIX). A transient storage
failure (pipeline.transient_errors) is retried: writing or reading a whole small object again is safe.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from typing import Any

import pyarrow.fs as pafs

from pipeline.errors import UserError
from pipeline.storage import Location, read_bytes, write_bytes
from pipeline.transient_errors import retrying


@retrying
def put_json(obj: Any, target: Location) -> None:
    data = json.dumps(obj, indent=1, sort_keys=True).encode()
    if not isinstance(target.fs, pafs.LocalFileSystem):
        write_bytes(data, target)
        return
    folder, name = posixpath.split(target.path)
    tmp = Location(target.fs, posixpath.join(folder, f".{name}.{uuid.uuid4().hex}"), target.uri)
    write_bytes(data, tmp)
    target.fs.move(tmp.path, target.path)


class NotOurJsonError(UserError, ValueError):
    """A file where rayembed keeps one of its JSON objects holds something else: another tool's file of that name
    (Spark and Hadoop write an empty `_SUCCESS`) or a copy cut short."""


@retrying
def get_json(target: Location) -> Any | None:
    """The object, or None when it does not exist (any other storage error propagates).

    Raises:
        NotOurJsonError: the file is not JSON (empty, another tool's, cut short), naming it and its size.
    """
    try:
        data = read_bytes(target)
    except FileNotFoundError:
        return None
    try:
        return json.loads(data)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        shown = "empty" if not data else f"{len(data)} bytes, starting {data[:40]!r}"
        raise NotOurJsonError(
            f"{target.uri} is not the JSON object rayembed writes there ({shown}): another tool wrote a file of that "
            "name (Spark and Hadoop write an empty _SUCCESS) or a copy of the output was cut short. Give the job an "
            "output location of its own (output.uri), or put back the file rayembed wrote"
        ) from None


def list_tree(root: Location, temp_files: bool = False) -> list[str]:
    """Paths of the files under `root`, relative to it, sorted; empty when `root` does not exist.

    Temp files of interrupted local writes (`.name.<uuid>`) are skipped unless `temp_files`: they may be partial.
    """
    selector = pafs.FileSelector(root.path, recursive=True, allow_not_found=True)
    infos = root.fs.get_file_info(selector)
    paths = (posixpath.relpath(i.path, root.path) for i in infos if i.type == pafs.FileType.File)
    return sorted(p for p in paths if temp_files or not posixpath.basename(p).startswith("."))


def delete_files(root: Location, rel_paths: list[str]) -> None:
    for rel in rel_paths:
        try:
            root.fs.delete_file(root.join(rel).path)
        except FileNotFoundError:
            pass  # already gone: a previous garbage collection was interrupted after this delete
