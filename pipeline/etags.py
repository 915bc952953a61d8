"""Whether an S3 object's bytes now are those an earlier ETag named: one download instead of a model pass.

An S3 ETag names an object's content, but not in one way: a single-part upload's ETag is the MD5 of its bytes, a
multipart upload's the MD5 of its parts' MD5s, with `-<parts>` (`aws s3 cp` cuts parts of 8 MiB, boto3 too, the
console 16 MiB, other tools and `multipart_chunksize` settings other sizes). The same bytes uploaded again with other
part sizes (a sync tool, a re-upload by another client) get another ETag at the same size, and were taken for a
changed object: the re-embed job embedded it again, a run during the upload failed. Here the object is read once and
its bytes hashed the ways that can give the earlier ETag: the MD5 of all of them, or, for `<md5>-<N>`, the part
MD5s for each part size that cuts the object into N parts among the common sizes (COMMON_PART_MIB) and the smallest
whole MiB that does. A match is the same content (MD5's collisions are no accident); no match, another part size
or an ETag that is not an MD5 (SSE-KMS, SSE-C) is a change, as before: never the other way round.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from pipeline.storage import Location

log = logging.getLogger(__name__)

MIB = 1 << 20
# Part sizes of common uploaders, MiB: the S3 minimum (5), aws cli and boto3 (8), the console (16), rclone and
# s3cmd (5, 15), other SDK defaults and settings seen (32 to 1024).
COMMON_PART_MIB = (5, 8, 15, 16, 32, 50, 64, 100, 128, 256, 512, 1024)
READ_BYTES = 8 << 20
ETAG = re.compile(r'^"?([0-9a-fA-F]{32})(?:-([0-9]+))?"?$')


def part_sizes(size: int, parts: int) -> list[int]:
    """Part sizes (bytes) that cut `size` bytes into exactly `parts` parts: the common ones and the smallest whole
    MiB that does; [] when none."""

    def cuts(p: int) -> bool:
        return p > 0 and (parts - 1) * p < size <= parts * p

    if parts == 1:
        return [max(size, 1)]
    sizes = [m * MIB for m in COMMON_PART_MIB if cuts(m * MIB)]
    even = -(-size // parts)  # ceil(size / parts)
    smallest = -(-even // MIB) * MIB  # rounded up to a whole MiB
    return sizes + [smallest] if cuts(smallest) and smallest not in sizes else sizes


class PartHashes:
    """MD5s of consecutive parts of `part` bytes of a stream fed in chunks."""

    def __init__(self, part: int):
        self.part, self.filled, self.current, self.digests = part, 0, hashlib.md5(), []

    def update(self, chunk: memoryview) -> None:
        while chunk:
            take = min(self.part - self.filled, len(chunk))
            self.current.update(chunk[:take])
            self.filled, chunk = self.filled + take, chunk[take:]
            if self.filled == self.part:
                self.digests.append(self.current.digest())
                self.current, self.filled = hashlib.md5(), 0

    def etag(self) -> str:
        digests = self.digests + ([self.current.digest()] if self.filled or not self.digests else [])
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def bytes_give_etag(root: Location, rel: str, size: int, etag: str) -> bool:
    """Whether the object `rel` under `root` holds `size` bytes that give `etag` (an earlier listing's, quotes or
    not) as S3 computes it for a single-part or a multipart upload (module docstring); one read of the object.
    False for an ETag that is not of that form. Raises OSError where the object cannot be read."""
    if ETAG.match(etag.removeprefix("etag:")) is None:
        return False
    with root.fs.open_input_stream(root.join(rel).path, compression=None) as f:
        return stream_gives_etag(f, size, etag)


def stream_gives_etag(f: Any, size: int, etag: str) -> bool:
    """bytes_give_etag of the bytes `f.read` gives (a file's, or a compressed file's decompressed bytes) up to its
    end."""
    match = ETAG.match(etag.removeprefix("etag:"))
    if match is None:
        return False
    digest, parts = match.group(1).lower(), match.group(2)
    whole = hashlib.md5() if parts is None else None
    hashers = [] if parts is None else [PartHashes(p) for p in part_sizes(size, int(parts))]
    if whole is None and not hashers:
        return False
    read = 0
    while chunk := f.read(READ_BYTES):
        read += len(chunk)
        if read > size:  # more bytes than the ETag's object: not read to the end
            return False
        view = memoryview(chunk)
        if whole is not None:
            whole.update(view)
        for hasher in hashers:
            hasher.update(view)
    if read != size:
        return False
    if whole is not None:
        return whole.hexdigest() == digest
    return f"{digest}-{parts}" in {h.etag() for h in hashers}


class HashingReader:
    """A stream whose bytes read are also fed to a sha256 (`content`)."""

    def __init__(self, f: Any):
        self.f, self.sha, self.read_bytes = f, hashlib.sha256(), 0

    def read(self, n: int) -> bytes:
        chunk = self.f.read(n)
        self.sha.update(chunk)
        self.read_bytes += len(chunk)
        return chunk

    def content(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


def read_and_compare(root: Location, rel: str, size: int, etag: str) -> tuple[bool, str | None]:
    """(bytes_give_etag, `sha256:<hex>` of the object's bytes: None where they are not `size` bytes); one read of
    the object, also for an ETag that is not of an MD5 form (an opaque one: its sha256 is still taken). Raises
    OSError where the object cannot be read."""
    with root.fs.open_input_stream(root.join(rel).path, compression=None) as f:
        reader = HashingReader(f)
        same = stream_gives_etag(reader, size, etag)
        while reader.read_bytes <= size and reader.read(READ_BYTES):  # the rest, where the comparison stopped early
            pass
    return same, reader.content() if reader.read_bytes == size else None


def compare(root: Location, rel: str, size: int, etag: str) -> tuple[bool, str | None]:
    """read_and_compare, with an INFO line when the object holds the bytes of `etag` under another ETag; (False,
    None) (a change) where it cannot be read."""
    try:
        same, content = read_and_compare(root, rel, size, etag)
    except OSError as err:
        log.info("cannot read %s to compare it with its ETag %s: %s", root.join(rel).uri, etag, err)
        return False, None
    if same:
        log.info(
            "%s: another ETag at the same size, and its bytes give its earlier one (%s): uploaded again with other "
            "part sizes, the same content",
            root.join(rel).uri,
            etag.removeprefix("etag:"),
        )
    return same, content


def same_object(root: Location, rel: str, size: int, etag: str) -> bool:
    """compare's answer alone: whether the object holds the bytes an earlier ETag named."""
    return compare(root, rel, size, etag)[0]


class ObjectChecks:
    """same_object for the objects under one root, each (path, size, ETag) read once, keeping the sha256 of the
    bytes each read found (`contents`, by path). An ETag that is no MD5 of the bytes (SSE-KMS, SSE-C, some stores'
    own forms) changes with every upload of the same bytes, so the bytes cannot give it: the object is taken for
    changed and embedded again, and the re-embed job records this sha256 as its content (FileEntry.content); its
    next upload of the same bytes is then found the same by that (planner.make_plan), not embedded every night."""

    def __init__(self, root: Location):
        self.root = root
        self.contents: dict[str, str] = {}
        self._answers: dict[tuple[str, int, str], bool] = {}

    def __call__(self, rel: str, size: int, etag: str) -> bool:
        if (rel, size, etag) not in self._answers:
            same, content = compare(self.root, rel, size, etag)
            self._answers[(rel, size, etag)] = same
            if content is not None:
                self.contents[rel] = content
        return self._answers[(rel, size, etag)]
