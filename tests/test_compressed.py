"""Compressed input read as zcat / bzcat / zstdcat read it: members one after another, zero padding dropped; a file
cut short or followed by other bytes stays a corrupt-file reject naming it (pipeline.compressed)."""

from __future__ import annotations

import bz2
import gzip

import pyarrow as pa
import pytest

from pipeline.compressed import Members, ZstdPadding
from pipeline.config import StorageConfig
from pipeline.file_formats import CorruptFileError
from pipeline.reading import TEXT, ReadSpec, read_file
from pipeline.storage import resolve

FIRST = b'{"text": "eins"}\n{"text": "zwei"}\n'
SECOND = b'{"text": "drei"}\n'
# incompressible lines, then zeros (zstd stores them as blocks of their own), then text: members of several blocks
LONG = bytes(range(256)) * 600 + b"\n" + b"\0" * 150_000 + b"\n" + b"x" * 50_000 + b"\n"
SKIPPABLE = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"


def zst(data: bytes) -> bytes:
    return pa.compress(data, codec="zstd", asbytes=True)


PACK = {"gzip": gzip.compress, "bz2": bz2.compress, "zstd": zst}


def stream(codec: str, data: bytes):
    raw = pa.BufferReader(data)
    if codec == "zstd":
        return pa.CompressedInputStream(pa.PythonFile(ZstdPadding(raw), mode="r"), "zstd")
    return Members(raw, codec)


def read_whole(codec: str, data: bytes, n: int) -> bytes:
    s, parts = stream(codec, data), []
    while chunk := s.read(n):
        assert len(chunk) <= n
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("codec", ["gzip", "bz2", "zstd"])
@pytest.mark.parametrize("n", [7, 1 << 16])
def test_members_and_zero_padding_are_read_as_the_tools_read_them(codec, n):
    pack = PACK[codec]
    for data, want in [
        (pack(FIRST) + pack(SECOND), FIRST + SECOND),  # `cat a.gz b.gz`, pigz / pbzip2 / pzstd
        (pack(FIRST) + b"\0" * 512, FIRST),  # a tape or blocked copy
        (pack(FIRST) + pack(SECOND) + b"\0" * (3 << 20), FIRST + SECOND),  # padding longer than a read
        (pack(b"") + b"\0" * 9, b""),  # an empty member (a gzip trailer of zeros: CRC 0, size 0) and padding
        (pack(LONG) + pack(FIRST) + b"\0" * 3, LONG + FIRST),  # members of many blocks
    ]:
        if n == 7 and len(want) > 1000:
            continue  # byte by byte through a large member: slow, and no other case
        assert read_whole(codec, data, n) == want


def test_zstd_skippable_frames_are_passed_over():
    data = SKIPPABLE + zst(FIRST) + SKIPPABLE + zst(SECOND) + SKIPPABLE + b"\0" * 100
    assert read_whole("zstd", data, 1 << 16) == FIRST + SECOND


@pytest.mark.parametrize("codec", ["gzip", "bz2", "zstd"])
def test_a_cut_or_garbled_tail_is_still_an_error(codec):
    pack = PACK[codec]
    for data in [
        pack(FIRST * 500)[:-20],  # cut short
        pack(FIRST) + pack(SECOND)[:12],  # a second member cut short
        pack(FIRST) + b"garbage",  # other bytes after the member
        pack(FIRST) + b"\0\0garbage",  # zeros, then other bytes: no padding
    ]:
        with pytest.raises(OSError):
            read_whole(codec, data, 1 << 16)


def test_the_reader_reads_padded_and_concatenated_files_and_still_rejects_a_cut_one(tmp_path):
    """A `.jsonl.gz` with trailing zeros (zcat reads it, ignoring the zeros) was a corrupt-file reject: pyarrow's
    'zlib inflate failed: unknown compression method'; the same for .bz2 and .zst. Each is read whole now, through
    the reader every job uses for JSONL and text (embed, re-embed, mining sides)."""
    spec = ReadSpec(resolve(str(tmp_path), StorageConfig()), None, "text", None, ())
    for codec, ext in [("gzip", "gz"), ("bz2", "bz2"), ("zstd", "zst")]:
        pack = PACK[codec]
        (tmp_path / f"padded.jsonl.{ext}").write_bytes(pack(FIRST) + pack(SECOND) + b"\0" * 4096)
        rows = pa.concat_tables(list(read_file(spec, f"padded.jsonl.{ext}"))).to_pylist()
        assert [r[TEXT] for r in rows] == ["eins", "zwei", "drei"]
        lines = "".join(f"line {i}\n" for i in range(20000)).encode()
        (tmp_path / f"cut.txt.{ext}").write_bytes(pack(lines)[:-30] + b"\0" * 100)
        with pytest.raises(CorruptFileError, match=rf"cut\.txt\.{ext} as text: .*cut short or corrupt"):
            list(read_file(spec, f"cut.txt.{ext}"))
