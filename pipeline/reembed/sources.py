"""Input files with a change token: what decides whether a file's embeddings can be reused.

The token is the strongest cheap identity the filesystem gives: the ETag on S3 (a content hash for ordinary
uploads; for multipart uploads a hash of part hashes, still content-derived), the mtime + ctime in nanoseconds on
local disks (pipeline.change_tokens: why the ctime, and how older tokens still match), and a sha256 of the content
where neither exists. A file rewritten with its old size and mtime is embedded again: one file embedded again,
never a stale vector.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow.fs as pafs

from pipeline.change_tokens import local_token
from pipeline.errors import UserError
from pipeline.storage import ListedFile, Location

HEAD_THREADS = 16  # S3 HEAD requests in flight, for files listed without an ETag
# Driver threads hashing local input files (content_token) while a job embeds them: sha256 releases the GIL, and the
# model's work on the same files takes far longer (re-embed's content_tokens, pipeline.input_contents' recorder).
HASH_THREADS = 4


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the input root, as in the `_source` column and derived ids
    size: int
    token: str  # "etag:...", "mtime_ns:...;ctime_ns:..." or "sha256:..."

    @property
    def key(self) -> str:
        """Names this file's content: a changed file gets a new key, hence new output paths."""
        return hashlib.sha1(f"{self.path}\0{self.size}\0{self.token}".encode()).hexdigest()[:20]


def scan_sources(root: Location, listed: list[ListedFile]) -> list[SourceFile]:
    """Change tokens for the `listed` files (sorted as given): a stat per local file; on S3 the ETag the listing
    returned with each object (ListObjectsV2: pipeline.s3_listing), so no request per file, and a HEAD request only
    for a file listed without one."""
    if isinstance(root.fs, pafs.LocalFileSystem):
        return [local_source(root, f.path) for f in listed]
    if all(f.etag for f in listed):  # no request to make: no threads
        return [listed_source(root, f) for f in listed]
    with ThreadPoolExecutor(HEAD_THREADS) as pool:
        return list(pool.map(lambda f: listed_source(root, f), listed))


def listed_source(root: Location, listed: ListedFile) -> SourceFile:
    """An object's token from its listing's ETag, else from a HEAD request (object_source)."""
    if listed.etag:
        return SourceFile(listed.path, listed.size, f"etag:{listed.etag}")
    return object_source(root, listed.path)


def local_source(root: Location, rel: str) -> SourceFile:
    st = os.stat(root.join(rel).path)
    return SourceFile(rel, st.st_size, local_token(st.st_mtime_ns, st.st_ctime_ns))


def object_source(root: Location, rel: str) -> SourceFile:
    with root.fs.open_input_file(root.join(rel).path) as f:  # a HEAD request; no body is read
        size, meta = f.size(), f.metadata()
    etag = meta.get("ETag") or meta.get(b"ETag")
    if etag:
        return SourceFile(rel, size, f"etag:{etag.decode() if isinstance(etag, bytes) else etag}".replace('"', ""))
    modified = meta.get("Last-Modified") or meta.get(b"Last-Modified")
    if modified:
        return SourceFile(rel, size, f"modified:{modified.decode() if isinstance(modified, bytes) else modified}")
    return SourceFile(rel, size, content_token(root, rel))


class InputChangedError(UserError, RuntimeError):
    """An input file changed while the run read it (changed_files): its rows are not published."""


def source_now(root: Location, rel: str) -> SourceFile | None:
    """The file's size and change token now (a stat locally, a HEAD request on S3); None when it is gone."""
    try:
        return local_source(root, rel) if isinstance(root.fs, pafs.LocalFileSystem) else object_source(root, rel)
    except FileNotFoundError:
        return None


def changed_since_listed(root: Location, src: SourceFile) -> str | None:
    """How `src` differs now from when it was listed (`listed 120 bytes, now 180 bytes`), or None when its size and
    change token are the same. Any write moves a local file's ctime and an S3 object's ETag, so a file found
    unchanged once its rows are read was read as listed (and its content hash, taken meanwhile, is of those bytes)."""
    now = source_now(root, src.path)
    if now is None:
        return f"listed with {src.size} bytes, now gone"
    if now.size != src.size:
        return f"listed with {src.size} bytes, now {now.size} bytes"
    if now.token != src.token:
        return f"listed with change token {src.token}, now {now.token} (same size)"
    return None


def changed_files_message(root: Location, changed: dict[str, str]) -> str:
    """The error of a run whose input files in `changed` ({path: how}) changed while it read them."""
    first = next(iter(changed))
    more = f" (and {len(changed) - 1} more: {', '.join(list(changed)[1:4])})" if len(changed) > 1 else ""
    return (
        f"{root.join(first).uri} changed while this run read it ({changed[first]}){more}: its rows may mix the "
        "file before and after the change, so nothing was published; the other files this run embedded are staged. "
        "Run the same command again once the file is complete (it is embedded again, the staged files are not); "
        "write input files under another name (or a hidden .name) and rename them into the corpus when complete, so "
        "that a run never reads one being written"
    )


def content_token(root: Location, rel: str, stop: threading.Event | None = None) -> str | None:
    """`sha256:<hex>` of the file's bytes; None when `stop` is set before the end (checked every 8 MiB read)."""
    digest = hashlib.sha256()
    with root.fs.open_input_stream(root.join(rel).path, compression=None) as f:  # the bytes, not a .gz's text
        while chunk := f.read(8 << 20):
            if stop is not None and stop.is_set():
                return None
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def content_tokens(root: Location, rels: list[str], pool: Executor) -> dict[str, Future[str]]:
    """`sha256:<hex>` of each local file (content_token), computed on `pool` while the caller goes on (hashing
    releases the GIL; the embedding of the same files takes far longer); {} on S3, whose ETag names the content."""
    if not isinstance(root.fs, pafs.LocalFileSystem):
        return {}
    return {rel: pool.submit(content_token, root, rel) for rel in rels}
