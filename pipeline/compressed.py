"""A compressed file's bytes as the command-line tools give them: every member, then nothing for zero padding.

gzip and bzip2 allow several members (streams) one after another (`cat a.gz b.gz`, pigz/pbzip2 output, bgzip's
blocks), and files copied in fixed-size blocks (tape, `dd conv=sync`, some object-store gateways) end in zero bytes
after the last member: `zcat` and `bzcat` read both, dropping the zeros. pyarrow's decompressor reads the members but
fails on the zeros ("zlib inflate failed: unknown compression method"), which made the file a corrupt-file reject.
zstd frames (and skippable frames) are read by pyarrow's decompressor; zero padding after the last frame is cut here
by following the frames' own lengths (zstd_frames_end), as `zstdcat` reads it.

What stays an error (an OSError, as pyarrow raises: the reader names the file as cut short or corrupt): a member
or frame cut short, a corrupt member, and bytes after the last member that are neither a member nor zeros.
Pure stdlib + pyarrow, no Ray.
"""

from __future__ import annotations

import bz2
import zlib
from typing import Any, Self

RAW_CHUNK = 1 << 20  # compressed bytes read at a time
# Each codec's magic number, by pyarrow's codec name (pipeline.file_formats.compression_of reads a file's head with it)
MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "bz2": b"BZh"}


def _decompressor(codec: str) -> Any:
    return zlib.decompressobj(wbits=31) if codec == "gzip" else bz2.BZ2Decompressor()


class Members:
    """`read(n)` of the decompressed bytes of a gzip or bzip2 file (`codec`: "gzip" or "bz2") read from `raw`
    (anything with `read(n)` and `close()`): its members in turn, zero bytes after the last one ignored.

    Memory: at most RAW_CHUNK compressed bytes and `n` decompressed bytes at a time, whatever the ratio.

    Raises (from read):
        OSError: a member cut short ("Truncated compressed stream"), corrupt data, or bytes after a member that
            are neither another member nor zeros to the end of the file (the offset of the first one).
    """

    def __init__(self, raw: Any, codec: str):
        self.raw, self.codec = raw, codec
        self.dec = _decompressor(codec)
        self.pending = b""  # compressed bytes read from raw, not yet given to self.dec
        self.started = False  # self.dec has been given bytes of its member
        self.done = False

    def _next_member(self) -> None:
        """After a member's end: the next one, or the end of the file when nothing or only zeros follow."""
        self.pending = self.dec.unused_data + self.pending
        zeros = False
        while True:
            stripped = self.pending.lstrip(b"\0")
            zeros = zeros or len(stripped) < len(self.pending)
            if stripped:
                break
            self.pending = self.raw.read(RAW_CHUNK)
            if not self.pending:  # zeros (or nothing) to the end: done, as zcat and bzcat read it
                self.done = True
                return
        if zeros or not stripped.startswith(MAGIC[self.codec][: len(stripped)]):
            raise OSError(
                f"{self.codec} data ends, then other bytes follow that are neither another {self.codec} member nor "
                "zero padding (trailing garbage: a file appended to, or two files joined?)"
            )
        self.dec, self.started = _decompressor(self.codec), False

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        size = 0
        while not self.done and (n < 0 or size < n):
            if self.dec.eof:
                self._next_member()
                continue
            gzip = self.codec == "gzip"
            if gzip or self.dec.needs_input:  # bz2 keeps the input it has not used; zlib hands it back
                if not self.pending:
                    self.pending = self.raw.read(RAW_CHUNK)
                if not self.pending:
                    if self.started:
                        raise OSError("Truncated compressed stream")
                    self.done = True
                    break
            data, self.pending = (self.pending, b"") if gzip or self.dec.needs_input else (b"", self.pending)
            limit = -1 if n < 0 else n - size
            try:
                out = self.dec.decompress(data, max(limit, 0)) if gzip else self.dec.decompress(data, limit)
            except zlib.error as err:
                raise OSError(f"zlib inflate failed: {err}") from err
            if gzip:  # at a member's end the input after it is in unused_data (unconsumed_tail may repeat it)
                self.pending = b"" if self.dec.eof else self.dec.unconsumed_tail
            self.started = True
            parts.append(out)
            size += len(out)
        return b"".join(parts)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ZSTD_SKIPPABLE = b"\x2a\x4d\x18"  # bytes 1-3 of a skippable frame's magic (0x184D2A50-5F, little-endian)
PASS_ALL = 1 << 62  # "the rest": bytes that are no frame structure known here go to the decompressor as they are


class ZstdPadding:
    """The compressed bytes of a zstd file (`raw`: anything with `read(n)` and `close()`) through `read(n)`, for
    pyarrow's decompressor, ending where the last frame ends when only zero bytes follow it.

    Follows the frames' own lengths (frame header, each block's header, the optional checksum; skippable frames'
    sizes) without decompressing. Anything it does not recognise, and a frame cut short, goes to the decompressor as
    it is, which raises as before.
    """

    def __init__(self, raw: Any):
        self.raw = raw
        self.buf, self.pos = b"", 0  # bytes read from raw; those before pos were handed on
        self.left = 0  # bytes from pos on known to belong to the current frame
        self.state = "frame"  # what starts at pos + left: a frame, a block header, a checksum
        self.checksum = False
        self.ended = False

    def _have(self, k: int) -> bool:
        """At least `k` bytes past what is known (pos + left) in buf, reading raw as needed."""
        while len(self.buf) - self.pos - self.left < k:
            chunk = self.raw.read(RAW_CHUNK)
            if not chunk:
                return False
            self.buf = self.buf[self.pos :] + chunk
            self.pos = 0
        return True

    def _peek(self, k: int) -> bytes:
        at = self.pos + self.left
        return self.buf[at : at + k]

    def _parse(self) -> None:
        """Extend `left` over the next structure, or end (zero padding), or give up following (PASS_ALL)."""
        if self.state == "frame":
            if not self._have(1):
                self.ended = True
                return
            if self._peek(1) == b"\0":  # zeros to the end of the file are padding; anything else is not ours
                while not self.buf[self.pos :].strip(b"\0"):
                    self.buf, self.pos = b"", 0  # zeros only so far: dropped
                    if not self._have(1):
                        self.ended = True
                        return
                self.left = PASS_ALL
                return
            if not self._have(6):
                self.left = PASS_ALL
                return
            head = self._peek(6)
            if head[:4] == MAGIC["zstd"]:
                fhd = head[4]
                single = bool(fhd & 0x20)
                fcs = ((1 if single else 0), 2, 4, 8)[fhd >> 6]
                self.left += 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
                self.checksum, self.state = bool(fhd & 0x04), "block"
            elif head[1:4] == ZSTD_SKIPPABLE and head[0] & 0xF0 == 0x50:
                if not self._have(8):
                    self.left = PASS_ALL
                    return
                self.left += 8 + int.from_bytes(self._peek(8)[4:8], "little")
            else:
                self.left = PASS_ALL
        elif self.state == "block":
            if not self._have(3):
                self.left = PASS_ALL
                return
            header = int.from_bytes(self._peek(3), "little")
            kind, size = (header >> 1) & 3, header >> 3
            self.left += 3 + (1 if kind == 1 else size)
            if header & 1:
                self.state = "checksum"
        else:
            self.left += 4 if self.checksum else 0
            self.state = "frame"

    def read(self, n: int = -1) -> bytes:
        while self.left == 0 and not self.ended:
            self._parse()
        if self.ended:
            return b""
        if len(self.buf) == self.pos and not self._have_any():
            return b""
        take = len(self.buf) - self.pos if n < 0 else min(n, len(self.buf) - self.pos)
        take = min(take, self.left)
        out = self.buf[self.pos : self.pos + take]
        self.pos += take
        self.left -= take
        return out

    def _have_any(self) -> bool:
        chunk = self.raw.read(RAW_CHUNK)
        if not chunk:
            return False
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return True

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        self.raw.close()
