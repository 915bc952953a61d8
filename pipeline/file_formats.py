"""What a file is: its format from the extension, what its leading bytes say, and its bytes as UTF-8 lines.

Sniffing the first bytes catches the file that is not what the config says (a Parquet file read as text yields
hundreds of binary "lines", most rejected and a few embedded as garbage) before a single row is read. Compression is
recognised by its magic number, not by the extension. Byte-order marks: one UTF-8 BOM per file is dropped; UTF-16 and
UTF-32 files with a BOM are decoded (strictly: an undecodable sequence fails the file, naming the encoding).
Pure pyarrow + codecs, no Ray.
"""

from __future__ import annotations

import codecs
import json
import posixpath
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.compressed import MAGIC, Members, ZstdPadding
from pipeline.errors import UserError

FORMATS = ("parquet", "jsonl", "text")
EXTENSIONS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".txt": "text"}
COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd", ".bz2")
# Compressions and archives that are not read, by extension: what the file is and what to do. Without this a
# `corpus.jsonl.xz` said "cannot infer the format ... set input.format", and once set, "xz-compressed data".
UNREAD_SUFFIXES = {
    ".xz": "xz-compressed",
    ".lzma": "lzma-compressed",
    ".lz4": "lz4-compressed",
    ".br": "brotli-compressed",
    ".snappy": "snappy-compressed",
    ".z": "compress(1)-compressed",
}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".7z", ".rar")
# Delimited tables, by extension (also compressed): not read, and not text either. The generic hint ("set
# input.format to parquet, jsonl or text") led to input.format: text, which embedded the header line and each whole
# row (`1,"Hello, world",en`) as a text without a word.
TABLE_SUFFIXES = {".csv": "CSV", ".tsv": "TSV", ".tab": "TSV", ".psv": "pipe-separated"}
RECOMPRESS = "recompress it with gzip, zstd or bzip2 (e.g. xz -dc F.jsonl.xz | zstd -o F.jsonl.zst)"

PARQUET_MAGIC = b"PAR1"
# Codec names as pyarrow's CompressedInputStream takes them; bzip2 streams (also several concatenated, as pbzip2 and
# lbzip2 write) decode through its bz2 codec.
COMPRESSION_MAGIC = {magic: codec for codec, magic in MAGIC.items()}
# bzip2's 3-byte magic is ASCII ("BZh"), which a text file may start with: it counts only with a block size digit
# and the first block's (or an empty stream's end) 6-byte magic after it.
BZIP2_HEAD = re.compile(rb"BZh[1-9](\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")
MAGIC_BYTES = 10  # the leading bytes compression_of needs
OTHER_MAGIC = {
    b"\xfd7zXZ\x00": "xz-compressed data (not supported: recompress with gzip, zstd or bzip2)",
    b"PK\x03\x04": "a zip archive",
    b"%PDF": "a PDF document",
    b"ARROW1": "an Arrow IPC file",
    b"\x93NUMPY": "a NumPy .npy array",
    b"\x89HDF\r\n\x1a\n": "an HDF5 file",
}
UTF8_BOM = codecs.BOM_UTF8
# UTF-32 first: the UTF-32-LE mark starts with the UTF-16-LE one.
WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
SNIFF_BYTES = 4096
# A text file whose first 4 KB are more than this share of control bytes (other than tab, newline, CR, form feed)
# is binary: real text with a stray NUL or escape stays far below it.
BINARY_CONTROL_SHARE = 0.3
# UTF-16/32 text without a byte-order mark: of its mostly-ASCII characters' bytes, the high ones are zero. Above this
# share of zeros in those byte positions (and below 1 minus it in the others) a file is taken for such text.
WIDE_ZERO_SHARE = 0.7
READ_CHUNK = 1 << 20
LINE_END = re.compile(rb"\r\n|\r|\n")


class InputFileError(UserError, RuntimeError):
    """A file that cannot be read at all (corrupt, wrong format, missing column)."""


class CorruptFileError(InputFileError):
    """A file whose bytes do not parse as its format: a Parquet footer cut off or garbled, a file named or read as
    Parquet that is not one, a gzip/zstd stream cut short. Damage to that one file (an interrupted copy or upload),
    not a setting that is wrong for the corpus: the embed job rejects the file and embeds the rest (pipeline.units).

    `row`: where the reader was in the file when it failed (None: before its first row)."""

    def __init__(self, message: str, row: int | None = None):
        super().__init__(message)
        self.row = row


def compression_of(head: bytes) -> str | None:
    """The codec (pyarrow's name: gzip, zstd, bz2) whose magic number starts `head` (MAGIC_BYTES or more), or None."""
    codec = next((c for magic, c in COMPRESSION_MAGIC.items() if head.startswith(magic)), None)
    return None if codec == "bz2" and not BZIP2_HEAD.match(head) else codec


def infer_format(rel: str) -> str | None:
    """The format its extension names (`.parquet`, `.jsonl`/`.json`/`.ndjson`, `.txt`, each optionally `.gz`/`.zst`/
    `.bz2`)."""
    return EXTENSIONS.get(posixpath.splitext(uncompressed_name(rel))[1])


def uncompressed_name(rel: str) -> str:
    """`rel` in lower case without one compression suffix (COMPRESSED_SUFFIXES): `a.CSV.gz` -> `a.csv`."""
    name = rel.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def table_message(rel: str, kind: str) -> str:
    """Why a delimited table (`kind`: CSV, TSV, ...) is not read, and how to convert it."""
    sep = "" if kind == "CSV" else ", sep='\\t'" if kind == "TSV" else ", sep='|'"
    name = posixpath.basename(rel)
    out = posixpath.splitext(uncompressed_name(name))[0] + ".parquet"
    return (
        f"{rel}: a {kind} table is not read (no input.format reads one: its rows are fields with separators and "
        "quoting, and input.format: text would embed the header line and each whole row as one text). Convert it "
        f"to Parquet or JSONL (pandas: pd.read_csv({name!r}{sep}).to_parquet({out!r}); duckdb: COPY (FROM "
        f"{name!r}) TO {out!r}), then set input.text_column to the column holding the text"
    )


def file_format(configured: str | None, rel: str) -> str:
    """`input.format` when set, else the format the file's extension names.

    Raises:
        InputFileError: input.format is unset and the extension names no format.
    """
    if configured is not None:
        return configured
    inferred = infer_format(rel)
    if inferred is None:
        if (refusal := refused_by_name(rel)) is not None:
            raise InputFileError(refusal)
        known = ", ".join(sorted(EXTENSIONS))
        raise InputFileError(
            f"{rel}: cannot infer the format from the extension (known: {known}, optionally .gz/.zst/.bz2); "
            "set input.format to parquet, jsonl or text"
        )
    return inferred


def listing_formats(configured: str | None, rels: list[str], key: str = "input.uri") -> dict[str, str]:
    """{path: format} for every listed file (file_format), checked before any file is read.

    A corpus folder holds files that are no corpus: a README.md, a Thumbs.db, a `part-0.jsonl.crc` or `.tmp`
    beside the parts. One such file failed the job naming it alone, and the fix it named, input.format, would read it
    (and every other file) as that format: a README read as JSONL is a reject per line. Now every file whose
    extension names no format is named at once (the first ten and the count), and when other files name theirs,
    the message gives the glob that reads only those.

    Raises:
        InputFileError: a file whose extension names no format (or names one that is not read: xz, an archive, a
            CSV table), with what to do.
    """
    formats: dict[str, str] = {}
    unknown: list[str] = []
    for rel in rels:
        if configured is None and infer_format(rel) is None and refused_by_name(rel) is None:
            unknown.append(rel)
        else:
            formats[rel] = file_format(configured, rel)  # raises for a file refused by name
    if not unknown:
        return formats
    if not formats:
        file_format(configured, unknown[0])  # raises: no file names a format, so input.format is the fix
    known = ", ".join(sorted(EXTENSIONS))
    shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
    names = sorted({corpus_suffix(rel) for rel in formats})
    glob = names[0] if len(names) == 1 else "{" + ",".join(names) + "}"
    deep = any("/" in rel for rel in formats)
    raise InputFileError(
        f"{key}: {len(unknown)} of {len(rels)} listed files have an extension that names no format (known: {known}, "
        f"optionally .gz/.zst/.bz2): {shown}. Are they not part of the corpus (a README, checksums, temporary "
        f"files)? Move them out of the input, or list only the corpus files with a glob: {key}: "
        f"<input>/{'**/' if deep else ''}*{glob} (input.format would read every file, those too, as that format)"
    )


def refused_by_name(rel: str) -> str | None:
    """file_format's message for a file whose extension names something that is not read (an unread compression, an
    archive, a delimited table), saying what to do; None for any other file."""
    suffix = posixpath.splitext(rel.lower())[1]
    if suffix in UNREAD_SUFFIXES:
        return f"{rel}: {UNREAD_SUFFIXES[suffix]} files are not read; {RECOMPRESS}"
    if suffix in ARCHIVE_SUFFIXES:
        return f"{rel}: an archive ({suffix}) is not read; unpack it and give its files as input"
    if (table := TABLE_SUFFIXES.get(posixpath.splitext(uncompressed_name(rel))[1])) is not None:
        return table_message(rel, table)
    return None


def corpus_suffix(rel: str) -> str:
    """The extension that names a file's format, with its compression suffix: `a.jsonl.gz` -> `.jsonl.gz`."""
    name = posixpath.basename(rel)
    lower = name.lower()
    compressed = next((c for c in COMPRESSED_SUFFIXES if lower.endswith(c)), "")
    stem = name[: len(name) - len(compressed)]
    return posixpath.splitext(stem)[1] + name[len(name) - len(compressed) :]


def bom_encoding(head: bytes) -> str | None:
    """'utf-8', 'utf-16' or 'utf-32' when `head` starts with that byte-order mark."""
    if head.startswith(UTF8_BOM):
        return "utf-8"
    return next((enc for bom, enc in WIDE_BOMS if head.startswith(bom)), None)


def describe(head: bytes) -> str:
    """What the leading bytes of a file look like, in words for an error message."""
    if not head:
        return "an empty file"
    if head.startswith(PARQUET_MAGIC):
        return "a Parquet file (starts with PAR1)"
    if codec := compression_of(head):
        return f"{codec}-compressed data"
    for magic, what in OTHER_MAGIC.items():
        if head.startswith(magic):
            return what
    bom = bom_encoding(head)
    if bom and bom != "utf-8":
        return f"{bom.upper()} text (byte-order mark {head[:2].hex(' ').upper()})"
    text = head[3:] if bom else head
    if not bom and (wide := bomless_wide_encoding(head)):
        return f"text in {wide} without a byte-order mark"
    if control_share(text) > BINARY_CONTROL_SHARE:
        return "binary data"
    if single_byte_encoded(text):
        return SINGLE_BYTE
    stripped = text.lstrip()
    return "JSON text" if stripped[:1] in (b"{", b"[") else "plain text"


def bomless_wide_encoding(head: bytes) -> str | None:
    """'UTF-16LE', 'UTF-16BE', 'UTF-32LE' or 'UTF-32BE' (iconv's names) when `head` has that encoding's zero bytes of ASCII
    text (nearly every 2nd/4th byte zero, the others not) but no byte-order mark; else None."""
    sample = head[: SNIFF_BYTES - SNIFF_BYTES % 4]
    if len(sample) < 8:
        return None
    lanes = [sample[k::4] for k in range(4)]
    zero = [lane.count(0) / len(lane) for lane in lanes]
    high, low = WIDE_ZERO_SHARE, 1 - WIDE_ZERO_SHARE
    if zero[0] < low and min(zero[1:]) > high:
        return "UTF-32LE"
    if zero[3] < low and min(zero[:3]) > high:
        return "UTF-32BE"
    if zero[0] < low and zero[2] < low and zero[1] > high and zero[3] > high:
        return "UTF-16LE"
    if zero[1] < low and zero[3] < low and zero[0] > high and zero[2] > high:
        return "UTF-16BE"
    return wide_by_line_ends(sample)


# (iconv's name, Python's codec, code unit bytes); UTF-32 first: UTF-32 text also decodes as UTF-16.
WIDE_CODECS = (
    ("UTF-32LE", "utf-32-le", 4),
    ("UTF-32BE", "utf-32-be", 4),
    ("UTF-16LE", "utf-16-le", 2),
    ("UTF-16BE", "utf-16-be", 2),
)


def wide_by_line_ends(sample: bytes) -> str | None:
    """UTF-16/32 text without a byte-order mark in any script (Chinese, Russian: few zero bytes, so the share test
    of bomless_wide_encoding misses it): the sample holds zero bytes and decodes strictly in that encoding (a code
    unit cut at its end aside) into text without control characters other than tab, CR and form feed, whose line
    ends (U+000A) are at least half of the sample's newline bytes. Such a file read as UTF-8 was split at the
    newline byte of each U+000A and embedded as garbage (`你好世界` in UTF-16LE is the ASCII bytes "`O}YNLu")."""
    if b"\x00" not in sample:
        return None
    newline_bytes = sample.count(b"\n")
    for name, codec, unit in WIDE_CODECS:
        try:
            text = codecs.getincrementaldecoder(codec)("strict").decode(sample[: len(sample) - len(sample) % unit])
        except UnicodeDecodeError:
            continue
        line_ends = text.count("\n")
        if line_ends and 2 * line_ends >= newline_bytes and not any(c in text for c in TEXT_CONTROLS):
            return name
    return None


# Control characters that no text holds (tab, line feed, form feed and CR are text): in a text decoded in the wrong
# encoding they are the sign of it.
TEXT_CONTROLS = frozenset(chr(c) for c in [*range(0x20), 0x7F] if c not in (9, 10, 12, 13))


SINGLE_BYTE = "text in a single-byte encoding such as Latin-1 or cp1252, not UTF-8"
# A head with at least this many whole lines that hold non-ASCII bytes, nearly all of them (SINGLE_BYTE_SHARE) not
# valid UTF-8, is a file in a single-byte encoding: such bytes are almost never valid UTF-8 by chance, while a UTF-8
# file with a few broken lines has mostly valid ones (each broken line stays a reject of its row).
SINGLE_BYTE_LINES = 3
SINGLE_BYTE_SHARE = 0.9


def single_byte_encoded(head: bytes) -> bool:
    """Whether the whole lines of `head` look like text in Latin-1, cp1252 or another single-byte encoding: each line
    with a non-ASCII byte was a reject `invalid UTF-8 at byte N` and each line without one was embedded, so a French
    or German file was read in part, with no word about its encoding (docs/robustness.md)."""
    whole = LINE_END.split(head)[:-1]  # the last line may be cut short by the sniff
    high = [line for line in whole if max(line, default=0) >= 0x80]
    bad = 0
    for line in high:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    return bad >= SINGLE_BYTE_LINES and bad >= SINGLE_BYTE_SHARE * len(high)


def control_share(data: bytes) -> float:
    """Share of control bytes other than tab, newline, CR and form feed."""
    if not data:
        return 0.0
    sample = data[:SNIFF_BYTES]
    controls = sum(1 for b in sample if (b < 0x20 and b not in (9, 10, 12, 13)) or b == 0x7F)
    return controls / len(sample)


PARQUET_HEAD = 16  # bytes read for check_parquet_head


def check_parquet_head(head: bytes, uri: str) -> None:
    """Fail when a file configured or named as Parquet does not start like one (`head`: its first PARQUET_HEAD
    bytes, enough to tell a compressed file: bzip2's magic is 10 bytes)."""
    if not head.startswith(PARQUET_MAGIC):
        hint = "set input.format to match the file (or leave it unset to infer it from the extension)"
        if compression_of(head):  # p.parquet.gz / .bz2 / .zst: Parquet compresses its pages itself
            hint = (
                "decompress it (gunzip, bunzip2, zstd -d) and name it .parquet: a Parquet file is not read compressed "
                "as a whole (Parquet compresses its own pages: write it with compression='zstd' instead)"
            )
        raise CorruptFileError(f"{uri} is read as parquet but looks like {describe(head)}; {hint}")


def check_text_head(head: bytes, fmt: str, uri: str, compressed: str | None) -> None:
    """Fail when a line-oriented file (jsonl/text) is in fact Parquet, an archive or binary data."""
    what = describe(head)
    if what.endswith(("text", "an empty file")) or what.startswith(("UTF-16", "UTF-32")):
        return
    inside = f" inside {compressed}" if compressed else ""
    hint = "check input.uri and input.format"
    if what.startswith("a Parquet"):  # in a corpus of several formats, setting input.format would fail the others
        hint = "name it .parquet, or set input.format: parquet where every file is Parquet"
    if what == SINGLE_BYTE:
        hint = (
            "re-encode it as UTF-8 (e.g. iconv -f CP1252 -t UTF-8, or -f ISO-8859-2 etc. for its language); read as "
            "UTF-8, each line with an accented letter would be a reject and the others embedded"
        )
    elif what.endswith("without a byte-order mark"):
        encoding = what.split()[2]
        hint = f"re-encode it as UTF-8 (e.g. iconv -f {encoding} -t UTF-8), or add a byte-order mark"
    raise InputFileError(f"{uri} is read as {fmt} but looks like {what}{inside}; {hint}")


def checked_layout(stream: Iterator[bytes], fmt: str, uri: str) -> Iterator[bytes]:
    """The lines, after checking that the first non-blank one fits the format's layout.

    Raises:
        InputFileError: a text file whose first line is a JSON object (JSON Lines read as text would embed every
            record's JSON source, ids and all, with no reject to show it); a JSONL file whose first line is a lone
            `[` or `{` (one pretty-printed JSON document: every line would be a reject).
    """
    checked = False
    for line in stream:
        if not checked and line.strip():
            checked = True
            check_first_line(line.strip(), fmt, uri)
        yield line


def check_first_line(line: bytes, fmt: str, uri: str) -> None:
    if fmt == "jsonl" and line in (b"[", b"{"):
        raise InputFileError(
            f"{uri} is read as jsonl but looks like one multi-line JSON document (its first line is {line.decode()!r}), "
            "not JSON Lines (one object per line); convert it, e.g. jq -c '.[]' FILE > FILE.jsonl"
        )
    if fmt == "text" and line.startswith(b"{") and line.endswith(b"}"):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return
        if isinstance(record, dict):
            raise InputFileError(
                f"{uri} is read as text but looks like JSON Lines (its first line is a JSON object with keys "
                f"{sorted(record)[:8]}); set input.format: jsonl (or name the file .jsonl) and input.text_column"
            )


def open_input(fs: pafs.FileSystem, path: str) -> pa.NativeFile:
    """The file for random access; one of at most READ_CHUNK bytes is read whole at once, into memory.

    Readers peek at a file's first bytes (its magic number) before reading it, and a Parquet reader reads the footer
    before the data: on S3 each read is a GET, so a small file cost two GETs (a JSONL file) or three (Parquet) after
    the HEAD that sizes it, one after the other. Read whole, it costs one, which is what thousands of small files
    packed into one unit (pipeline.units) pay per file.
    """
    f = fs.open_input_file(path)
    if f.size() > READ_CHUNK:
        return f
    with f:
        return pa.BufferReader(f.read())


def open_raw(fs: pafs.FileSystem, path: str, opened: pa.NativeFile | None = None) -> tuple[pa.NativeFile, str | None]:
    """The file as a byte stream, decompressed when its magic number says gzip, zstd or bzip2; returns (stream, codec).
    A gzip or bzip2 file's members are read one after another and zero padding after the last is dropped
    (pipeline.compressed). `opened`: the file as open_input gave it already (pipeline.fetching), else it is opened here."""
    f = opened if opened is not None else open_input(fs, path)
    head = f.read(MAGIC_BYTES)
    f.seek(0)
    codec = compression_of(head)
    if codec in ("gzip", "bz2"):  # members one after another, then zero padding, as zcat and bzcat read them
        return Members(f, codec), codec
    if codec == "zstd":  # frames one after another (pyarrow reads them), then zero padding, as zstdcat reads it
        return pa.CompressedInputStream(pa.PythonFile(ZstdPadding(f), mode="r"), codec), codec
    return f, None


def utf8_chunks(
    fs: pafs.FileSystem, path: str, fmt: str, uri: str, opened: pa.NativeFile | None = None, plain: Any = None
) -> Iterator[bytes]:
    """The file's content as UTF-8 byte chunks: decompressed, sniffed, one UTF-8 BOM dropped, UTF-16/32 decoded.
    `opened`: as for open_raw. `plain`: a pipeline.read_content.DecompressedDigest fed with the decompressed bytes
    of a compressed file as they are read (untouched for a file that is not compressed).

    Raises:
        InputFileError: the content looks like Parquet, an archive or binary data; or a UTF-16/32 file holds a
            sequence that does not decode.
    """
    stream, codec = open_raw(fs, path, opened)
    if plain is not None and codec is not None:
        stream = plain.reading(stream)
    with stream:
        first = stream.read(READ_CHUNK)
        check_text_head(first[:SNIFF_BYTES], fmt, uri, codec)
        encoding = bom_encoding(first)
        if encoding == "utf-8":
            first = first[len(UTF8_BOM) :]
        if encoding in (None, "utf-8"):
            chunk = first
            while chunk:
                yield chunk
                chunk = stream.read(READ_CHUNK)
            return
        decoder = codecs.getincrementaldecoder(encoding)("strict")  # the utf-16/32 codecs consume the BOM
        consumed, chunk = 0, first
        while True:
            final = not chunk
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as err:
                raise InputFileError(
                    f"{uri}: decoding as {encoding.upper()} (from its byte-order mark) failed near byte "
                    f"{consumed + err.start}: {err.reason}; re-encode the file as UTF-8"
                ) from err
            yield text.encode("utf-8")
            if final:
                return
            consumed += len(chunk)
            chunk = stream.read(READ_CHUNK)


def lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Split byte chunks into lines without their ends: `\\n`, `\\r\\n` or a lone `\\r` (old Mac files), as Python's
    universal newlines do; a last line without an end is still a line.

    Each chunk is split once, so a line spread over many chunks costs its length, not its length squared.
    """
    pending: list[bytes] = []  # pieces of the line not yet ended
    after_cr = False  # the previous chunk ended with \r: a \n starting this one belongs to that line end
    for chunk in chunks:
        if not chunk:
            continue
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        *complete, rest = LINE_END.split(chunk)
        if complete:
            complete[0] = b"".join([*pending, complete[0]])
            pending = []
            yield from complete
        if rest:
            pending.append(rest)
    if pending:
        yield b"".join(pending)


def compressed_name(rel: str) -> bool:
    """Whether the name says compressed (COMPRESSED_SUFFIXES, any case)."""
    return rel.lower().endswith(COMPRESSED_SUFFIXES)
