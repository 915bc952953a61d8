"""Input files with a change token: what decides whether a file's embeddings can be reused.

The token is the strongest cheap identity the filesystem gives: the ETag on S3 (a content hash for ordinary
uploads; for multipart uploads a hash of part hashes, still content-derived), the size + mtime + ctime in
nanoseconds on local disks, and a sha256 of the content where neither exists.

On a local disk the modification time alone can be set back (`touch -d`, `cp -p` of an edited copy, `rsync -t` of
an edit that keeps the size), so a rewritten file looked unchanged and kept its old vectors. The inode change time
(`st_ctime_ns`) moves with every write, rename over it, chmod or link, and no user tool sets it back: with it in the
token, such a file is embedded again (a chmod or a hard link makes it look changed too: one file embedded again,
never a stale vector). Tokens recorded by older versions (`mtime_ns:<m>` alone) are matched by
`same_token` on their mtime, so upgrading re-embeds nothing.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow.fs as pafs

from pipeline.storage import Location

HEAD_THREADS = 16  # S3 HEAD requests in flight; listing gives no ETag through pyarrow


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the input root, as in the `_source` column and derived ids
    size: int
    token: str  # "etag:...", "mtime_ns:...;ctime_ns:..." or "sha256:..."

    @property
    def key(self) -> str:
        """Names this file's content: a changed file gets a new key, hence new output paths."""
        return hashlib.sha1(f"{self.path}\0{self.size}\0{self.token}".encode()).hexdigest()[:20]


def scan_sources(root: Location, rel_paths: list[str]) -> list[SourceFile]:
    """Change tokens for `rel_paths` (sorted as given), one metadata request per file on object stores."""
    if isinstance(root.fs, pafs.LocalFileSystem):
        return [local_source(root, rel) for rel in rel_paths]
    with ThreadPoolExecutor(HEAD_THREADS) as pool:
        return list(pool.map(lambda rel: object_source(root, rel), rel_paths))


def local_source(root: Location, rel: str) -> SourceFile:
    st = os.stat(root.join(rel).path)
    return SourceFile(rel, st.st_size, f"mtime_ns:{st.st_mtime_ns};ctime_ns:{st.st_ctime_ns}")


def same_token(recorded: str, now: str) -> bool:
    """Whether a file whose entry recorded change token `recorded` still has it (`now`): the same token, or an
    older version's local token (`mtime_ns:<m>`, without the ctime) with the same mtime, which that version took
    for unchanged too."""
    if recorded == now:
        return True
    return recorded.startswith("mtime_ns:") and ";" not in recorded and now.startswith(recorded + ";ctime_ns:")


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


def content_token(root: Location, rel: str) -> str:
    digest = hashlib.sha256()
    with root.fs.open_input_stream(root.join(rel).path) as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
