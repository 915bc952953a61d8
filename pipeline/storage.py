"""Local and S3 storage through pyarrow filesystems: resolution, deterministic listing, atomic writes.

Credentials are never read here: pyarrow's S3 client takes them from the environment, the AWS profile or the
instance/pod role, so they cannot leak into logs, configs or outputs.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import StorageConfig
from pipeline.errors import UserError

GLOB_CHARS = "*?["
HIDDEN_PREFIXES = ("_", ".")  # _SUCCESS, _rejects/, .part-tmp files: never input, never dataset files


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path on it; `uri` is what the user wrote, for messages."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> Location:
        """A location under this one; parts that would leave it (absolute, `..`) are refused, not normalized."""
        for part in parts:
            if part.startswith("/") or ".." in part.split("/"):
                raise ValueError(f"refusing to write outside {self.uri}: {part!r} is absolute or contains '..'")
        path = posixpath.join(self.path, *parts)
        uri = posixpath.join(self.uri, *parts)
        return Location(self.fs, path, uri)


def make_filesystem(uri: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    if uri.startswith("s3://"):
        retry = pafs.AwsStandardS3RetryStrategy(max_attempts=storage.max_attempts)
        kwargs = {"anonymous": storage.anon, "retry_strategy": retry}
        if storage.region:
            kwargs["region"] = storage.region
        if storage.endpoint_url:
            scheme, _, host = storage.endpoint_url.rpartition("://")
            kwargs.update(endpoint_override=host or storage.endpoint_url, scheme=scheme or "https")
            kwargs.setdefault("region", "us-east-1")  # custom endpoints (MinIO, moto) ignore it but pyarrow asks
        return pafs.S3FileSystem(**kwargs), uri[len("s3://") :].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported URI scheme in {uri!r}: use a local path or s3://bucket/prefix")
    path = uri.removeprefix("file://")
    return pafs.LocalFileSystem(), os.path.abspath(path)


def resolve(uri: str, storage: StorageConfig) -> Location:
    fs, path = make_filesystem(uri, storage)
    return Location(fs, path, uri)


def list_files(uri: str, storage: StorageConfig) -> tuple[Location, list[str]]:
    """Sorted files under a directory/prefix, one file, or a glob; returns the listing root and relative paths.

    Raises:
        FileNotFoundError: nothing matches, naming the URI.
    """
    glob_at = min((uri.find(c) for c in GLOB_CHARS if c in uri), default=-1)
    base_uri = uri if glob_at < 0 else uri[: uri.rfind("/", 0, glob_at) + 1].rstrip("/")
    root = resolve(base_uri, storage)
    info = root.fs.get_file_info(root.path)
    if info.type == pafs.FileType.File:
        parent = resolve(posixpath.dirname(base_uri.rstrip("/")) or ".", storage)
        return parent, [posixpath.basename(root.path)]
    names: list[str] = []
    if info.type == pafs.FileType.Directory or root.uri.startswith("s3://"):
        selector = pafs.FileSelector(root.path, recursive=True, allow_not_found=True)
        for entry in root.fs.get_file_info(selector):
            rel = posixpath.relpath(entry.path, root.path)
            if entry.type != pafs.FileType.File or any(p.startswith(HIDDEN_PREFIXES) for p in rel.split("/")):
                continue
            names.append(rel)
    if glob_at >= 0:
        pattern = posixpath.relpath(uri, base_uri) if base_uri else uri
        matcher = glob_regex(pattern)
        names = [n for n in names if matcher.fullmatch(n)]
    if not names:
        raise FileNotFoundError(f"no input files found at {uri} (check input.uri and storage settings)")
    return root, sorted(names)


class StorageWriteError(UserError, OSError):
    """A write that failed after the S3 client's retries; the message names the object and the last error."""


def glob_regex(pattern: str) -> re.Pattern:
    """Shell-style glob where `*` and `?` stay within one path segment and `**` crosses segments."""
    parts = re.split(r"(\*\*|\*|\?|\[[^\]]*\])", pattern)
    table = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    regex = "".join(table.get(p) or (p if p.startswith("[") and p.endswith("]") else re.escape(p)) for p in parts)
    return re.compile(regex)


def write_parquet_atomic(table: pa.Table, target: Location) -> None:
    """Write so that readers never see a half-written file.

    S3 objects appear only when the upload completes; on local disks we write a hidden temp file and rename it.
    """
    try:
        target.fs.create_dir(posixpath.dirname(target.path), recursive=True)
        if isinstance(target.fs, pafs.LocalFileSystem):
            name = f".{posixpath.basename(target.path)}.{uuid.uuid4().hex}"
            tmp = posixpath.join(posixpath.dirname(target.path), name)
            pq.write_table(table, tmp, filesystem=target.fs)
            target.fs.move(tmp, target.path)
        else:
            pq.write_table(table, target.path, filesystem=target.fs)
    except OSError as err:
        raise StorageWriteError(f"cannot write {target.uri}: {err}") from err


def write_bytes(data: bytes, target: Location) -> None:
    try:
        target.fs.create_dir(posixpath.dirname(target.path), recursive=True)
        with target.fs.open_output_stream(target.path) as out:
            out.write(data)
    except OSError as err:
        raise StorageWriteError(f"cannot write {target.uri}: {err}") from err


def read_bytes(target: Location) -> bytes:
    with target.fs.open_input_stream(target.path) as f:
        return f.read()
