"""Input files with a change token: what decides whether a file's embeddings can be reused.

The token is the strongest cheap identity the filesystem gives: the ETag on S3 (a content hash for ordinary
uploads; for multipart uploads a hash of part hashes, still content-derived), the mtime + ctime in nanoseconds on
local disks (pipeline.change_tokens: why the ctime, and how older tokens still match), and a sha256 of the content
where neither exists. A file rewritten with its old size and mtime is embedded again: one file embedded again,
never a stale vector.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow.fs as pafs

from pipeline.change_tokens import local_token
from pipeline.errors import UserError
from pipeline.read_content import ReadAs
from pipeline.storage import ListedFile, Location

log = logging.getLogger(__name__)

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


def changed_since_listed(
    root: Location, src: SourceFile, sha: str | None = None, read: ReadAs | None = None
) -> str | None:
    """How `src` differs now from when it was listed (`listed 120 bytes, now 180 bytes`), or None when its size and
    change token are the same. Any write moves a local file's ctime and an S3 object's ETag, so a file found
    unchanged once its rows are read was read as listed (and its content hash, taken meanwhile, is of those bytes).
    A file whose token alone moved (a `touch`, `chmod`, an rsync/cp of the same bytes) is hashed and compared with
    `sha` (its sha256 taken while it had the listed token: hash_as_listed): None, with an INFO line, when the content
    is the same; no `sha` (none taken while it was as listed) or other content is a change saying which, unless
    `read` (the (size, token) at which the run's read task read it whole: pipeline.read_content) says its rows are of
    the listed file or of the file now (changed_now)."""
    now = source_now(root, src.path)
    return changed_now(root, src.path, src.size, src.token, None if now is None else (now.size, now.token), sha, read)


def changed_now(
    root: Location,
    rel: str,
    size: int,
    token: str,
    now: tuple[int, str] | None,
    sha: str | None,
    read: ReadAs | None = None,
) -> str | None:
    """How a local file listed with `size` and change `token` differs from `now` ((size, token), None when gone),
    or None when its rows are of the listed file: same size and token, or same size and the content of `sha`
    (`sha256:<hex>` of the listed bytes) when only the token moved (one read of the file). Used by both jobs' checks.

    `read`: the ReadAs of the run's read task's read of the whole file (pipeline.read_content). Read at the
    listed ones, its rows are of the listed file whatever happened to it after the read (the next run sees that);
    read at a later token (a touch or a rewrite between the listing and the read), its rows are of the file as it is
    now when it still has that token (an INFO line says which). An empty file is its own content.

    `read` with a `prefix` hash: the read task read the first `read.size` bytes of a file grown since the listing
    (pipeline.read_content.listed_prefix): its rows are of the listed file when that hash is `sha` (listed_prefix_read).
    """
    if read is not None and read.is_prefix:
        return listed_prefix_read(root, rel, size, now, sha, read)
    if read is not None and (read.size, read.token) == (size, token):
        if now != (size, token):
            log.info(
                "%s: changed after this run read it as listed (%s): its rows are of the listed file; the next run "
                "sees the change",
                root.join(rel).uri,
                "now gone" if now is None else f"now {now[0]} bytes, change token {now[1]}",
            )
        return None
    if now is None:
        return f"listed with {size} bytes, now gone"
    if now[0] != size:
        return f"listed with {size} bytes, now {now[0]} bytes"
    if now[1] == token or size == 0:
        return None
    moved = f"listed with change token {token}, now {now[1]} (same size"
    if sha is None and read is not None and read[0] == size:
        return same_as_read(root, rel, now, read, moved)
    if sha is None:
        return f"{moved}; no hash of its listed content to compare with, so its content may have changed)"
    try:
        sha_now = content_token(root, rel)
    except OSError as err:
        return f"{moved}; cannot read it to compare its content: {err})"
    if sha_now != sha:
        return f"{moved}, other content: sha256 {sha[7:19]}... listed, {sha_now[7:19]}... now)"
    log.info(
        "%s: its change token moved while this run read it (a touch or a copy of the same bytes), its content "
        "is the listed one (sha256 compared): going on",
        root.join(rel).uri,
    )
    return None


def listed_prefix_read(
    root: Location, rel: str, size: int, now: tuple[int, str] | None, sha: str | None, read: ReadAs
) -> str | None:
    """changed_now for a file whose read task read only its first `read.size` bytes (it had grown past its listed
    `size`) and hashed them (`read.prefix`): None, with an INFO line, when they are the listed bytes (the hash `sha`
    of the listed file, taken while it had its listed token, is theirs); else how it changed."""
    grown = "now gone" if now is None else f"now {now[0]} bytes"
    how = f"listed with {size} bytes, {grown}; this run read its first {read.size} bytes"
    if read.size != size:
        return how
    if sha is None:
        # appended to before the driver hashed it (a log written all the time): the rows are the file's first
        # `size` bytes as it is now when it still holds the bytes read (the appended ones are left for the next run)
        return prefix_still_read(root, rel, size, now, read, how)
    if sha != read.prefix:
        return f"{how}, other content: sha256 {sha[7:19]}... listed, {read.prefix[7:19]}... read"
    log.info(
        "%s: grew from %d bytes to %s while this run read it: its rows are of its listed %d bytes (sha256 compared); "
        "the appended bytes are left for the next run",
        root.join(rel).uri,
        size,
        grown.removeprefix("now "),
        size,
    )
    return None


def prefix_still_read(
    root: Location, rel: str, size: int, now: tuple[int, str] | None, read: ReadAs, how: str
) -> str | None:
    """listed_prefix_read for a file grown before any hash of its listed bytes was taken: None, with an INFO line,
    when its first `size` bytes now hash to what the read task read (`read.prefix`): the rows are those bytes, the
    start of the file as it is now (a file only appended to); else how it changed (`how`: what was read)."""
    try:
        sha_now = None if now is None else content_token(root, rel, size=size)
    except OSError as err:
        return f"{how}; no hash of its listed bytes was taken before it grew, and it cannot be read now: {err}"
    if sha_now != read.prefix:
        return (
            f"{how}; no hash of its listed bytes was taken before it grew, and its first {size} bytes now are not "
            "the ones read: it was rewritten, not only appended to"
        )
    log.info(
        "%s: grew from %d bytes to %s before this run hashed it: its rows are its first %d bytes, which it still "
        "holds (sha256 of the bytes read compared with its first bytes now); the appended bytes are left for the next "
        "run",
        root.join(rel).uri,
        size,
        now[0],
        size,
    )
    return None


def ranges_prefix_read(root: Location, rel: str, size: int, now: tuple[int, str], sha: str | None) -> str | None:
    """changed_now for a file split into line ranges (pipeline.line_ranges: its units end at its listed `size`, each
    read by its own task) that has grown since it was listed: None, with an INFO line, when its first `size` bytes
    now are the listed ones (`sha`: their hash, taken while it had its listed size and token) and the last of them
    ends a line (so no range read past it into the appended bytes); else how it changed. No hash of the listed
    bytes: a change (its ranges were read at different times, and nothing says what each read)."""
    grown = f"listed with {size} bytes, now {now[0]} bytes"
    if sha is None:
        return (
            f"{grown}; it is split into line ranges that several tasks read at different times, and no hash of its "
            "listed bytes was taken before it grew, so nothing proves its ranges hold them. Run again once it has "
            "stopped growing; a file that grows all the time (a log) is read as its listed bytes when it is below "
            "input.unit_bytes (one task reads it whole): rotate it into smaller files"
        )
    try:
        sha_now = content_token(root, rel, size=size)
        with root.fs.open_input_file(root.join(rel).path) as f:
            last = f.read_at(1, size - 1) if size else b"\n"
    except OSError as err:
        return f"{grown}; cannot read it to compare its first {size} bytes: {err}"
    if sha_now != sha:
        return f"{grown}; its first {size} bytes are not the listed ones: it was rewritten, not only appended to"
    if last not in (b"\n", b"\r"):
        return f"{grown}; its listed last line had no line end, so its last range read into the appended bytes"
    log.info(
        "%s: grew from %d bytes to %d while this run read its line ranges: its first %d bytes are the listed ones "
        "(sha256 compared), so are its ranges' rows; the appended bytes are left for the next run",
        root.join(rel).uri,
        size,
        now[0],
        size,
    )
    return None


def same_as_read(root: Location, rel: str, now: tuple[int, str], read: ReadAs, moved: str) -> str | None:
    """changed_now for a file whose token moved before the run read it and whose listed bytes were not hashed: None,
    with an INFO line, when the file still has the token it was read at (its bytes now are the bytes read)."""
    if now[1] != read.token:
        return f"{moved}; changed again after this run read it at change token {read.token})"
    log.info(
        "%s: its change token moved before this run read it, before its listed content was hashed (a touch, a copy "
        "of the same bytes, or a same-size edit): its rows are of the file as it is now (change token compared): "
        "going on",
        root.join(rel).uri,
    )
    return None


def hash_as_listed(root: Location, src: SourceFile) -> str | None:
    """content_token of a local file taken while it has its listed size and token (a stat before and after the
    read); None when it had not, or is gone: no hash of the listed bytes is then known."""
    try:
        if local_source(root, src.path) != src:
            return None
        sha = content_token(root, src.path)
        return sha if local_source(root, src.path) == src else None
    except FileNotFoundError:
        return None


def hash_as_read(root: Location, rel: str, read: ReadAs) -> str | None:
    """`sha256:<hex>` of the bytes the rows of a read task's read (pipeline.read_content.ReadAs) hold: for a file
    read up to its listed size, the hash the read task took of exactly those bytes (never a hash of the file, which
    holds the appended bytes too); for a file read whole, hash_as_listed at the size and token it was read at,
    while it still has them; None otherwise."""
    if read.is_prefix:
        return read.prefix
    return hash_as_listed(root, SourceFile(rel, read.size, read.token))


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


def content_token(root: Location, rel: str, stop: threading.Event | None = None, size: int | None = None) -> str | None:
    """`sha256:<hex>` of the file's bytes, or of its first `size` bytes when given (None when it holds fewer); None
    when `stop` is set before the end (checked every 8 MiB read)."""
    digest = hashlib.sha256()
    left = size
    with root.fs.open_input_stream(root.join(rel).path, compression=None) as f:  # the bytes, not a .gz's text
        while left != 0 and (chunk := f.read(8 << 20 if left is None else min(left, 8 << 20))):
            if stop is not None and stop.is_set():
                return None
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return None if left else f"sha256:{digest.hexdigest()}"


def content_tokens(root: Location, sources: list[SourceFile], pool: Executor) -> dict[str, Future[str | None]]:
    """`sha256:<hex>` of each local file as listed (hash_as_listed: None for a file whose token moved before or
    while it was hashed), computed on `pool` while the caller goes on (hashing releases the GIL; the embedding of the
    same files takes far longer); {} on S3, whose ETag names the content."""
    if not isinstance(root.fs, pafs.LocalFileSystem):
        return {}
    return {s.path: pool.submit(hash_as_listed, root, s) for s in sources}
