"""Byte ranges of a big uncompressed JSONL or text file: the units such a file is split into, each read on its own.

A range [start, end) owns the lines that START in it. A line starts at the file's first byte (after a UTF-8 BOM)
and after every line end (`\\n`, `\\r\\n` or a lone `\\r`, as pipeline.file_formats.lines splits them). A range's
bytes are read from start - 1: `lines` splits them, and the first line it yields is dropped (the end of a line that
started before `start`, or an empty one when byte start - 1 ends a line); reading goes on past `end` to the end of
the line that byte end - 1 is in. So every line of the file is yielded by exactly one range, whole, by the same
`lines` that splits an unsplit file: the same bytes, the same lines, in the same order.

A range's row numbers continue the file's: each range's rows are counted first (pipeline.reading.count_span_rows,
with the reader's own row rule), and a range starts at the sum of the ranges before it. Compressed files and
UTF-16/32 files cannot be entered in the middle and stay one unit. Pure pyarrow, no Ray.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from pipeline.file_formats import (
    READ_CHUNK,
    SNIFF_BYTES,
    UTF8_BOM,
    InputFileError,
    bom_encoding,
    check_text_head,
    compression_of,
    lines,
)

LINE_FORMATS = ("jsonl", "text")
# No range is shorter than this: a range boundary then never falls inside a UTF-8 BOM (3 bytes), which belongs to
# no line, and no configuration makes ranges of a few bytes each (input.unit_bytes may be set as small as 1).
MIN_RANGE_BYTES = 64
END_BYTE = re.compile(rb"[\r\n]")
TAIL_CHUNK = 64 << 10  # read past a range's end in steps of this size to the end of its last line


@dataclass(frozen=True)
class LineSpan:
    """Bytes [start, end) of a file, and its rows: `first_row` is the file's row number of the range's first row,
    `rows` how many rows it holds (both -1 until counted)."""

    start: int
    end: int
    first_row: int = -1
    rows: int = -1


def byte_ranges(size: int, unit_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of equal length (to a byte) covering `size` bytes, each at most `unit_bytes` long (and
    at least MIN_RANGE_BYTES); one range when the file is not larger than `unit_bytes`."""
    count = max(1, min(-(-size // unit_bytes), size // MIN_RANGE_BYTES))
    return [(k * size // count, (k + 1) * size // count) for k in range(count)]


def splittable(head: bytes, fmt: str, uri: str) -> bool:
    """Whether a line file whose first bytes (SNIFF_BYTES of them, or all of a shorter file) are `head` can be split:
    not compressed, UTF-8 (or ASCII) with or without a BOM, and text by pipeline.file_formats.check_text_head. A
    file that is not stays one unit, so its reader reports what is wrong with it exactly as before."""
    if fmt not in LINE_FORMATS or compression_of(head):
        return False
    if bom_encoding(head) not in (None, "utf-8"):
        return False
    try:
        check_text_head(head[:SNIFF_BYTES], fmt, uri, None)
    except InputFileError:
        return False
    return True


def span_chunks(f: pa.NativeFile, start: int, end: int) -> Iterator[bytes]:
    """The bytes a range's lines are split from: [start - 1, E) (from 0 for the first range, its UTF-8 BOM
    dropped), E the end of the line that byte end - 1 is in, its line end included (or the file's end)."""
    pos = start - 1 if start else 0
    f.seek(pos)
    last, first = b"", start == 0
    while pos < end:
        chunk = f.read(min(READ_CHUNK, end - pos))
        if not chunk:
            return  # the file is shorter than planned: the reader's row check names it
        pos += len(chunk)
        last = chunk[-1:]
        yield chunk[len(UTF8_BOM) :] if first and chunk.startswith(UTF8_BOM) else chunk
        first = False
    if last == b"\r":
        yield from newline_after_cr(f)
    elif last != b"\n":
        yield from rest_of_line(f)


def rest_of_line(f: pa.NativeFile) -> Iterator[bytes]:
    """From the current position up to and including the next line end (to the file's end without one)."""
    while chunk := f.read(TAIL_CHUNK):
        found = END_BYTE.search(chunk)
        if found is None:
            yield chunk
            continue
        at = found.start()
        if chunk[at : at + 1] == b"\n":
            yield chunk[: at + 1]
        elif at + 1 < len(chunk):
            yield chunk[: at + 1 + (chunk[at + 1 : at + 2] == b"\n")]
        else:
            yield chunk
            yield from newline_after_cr(f)
        return


def newline_after_cr(f: pa.NativeFile) -> Iterator[bytes]:
    """After a `\\r`: the `\\n` that makes it one `\\r\\n` line end, if the next byte is one."""
    if (after := f.read(1)) == b"\n":
        yield after


def span_lines(f: pa.NativeFile, start: int, end: int) -> Iterator[bytes]:
    """The lines that start in bytes [start, end) of `f`, without their ends (pipeline.file_formats.lines)."""
    stream = lines(span_chunks(f, start, end))
    if start:
        next(stream, None)  # the end of the line that byte start - 1 is in: the range before owns it
    yield from stream
