"""A side store: one language of one side of a mining run, as numbered rows in files on storage.

    <output>/texts/<side>/lang=<L>/part-NNNNN.parquet     row, id, text, kept columns: rows in order, contiguous
    <output>/work/vectors/<side>/lang=<L>/bNNNNN.parquet   row, embedding (float32, unit length): rows in any order

`row` numbers the language's rows 0..n-1 after filtering and dedup. Text files hold contiguous row ranges, so the
file of a row is a binary search in `StoreRef.text_files`; vector files hold any rows, so a key shard or a query
block is simply some vector files (or slices of them) and every search result names rows by number. Nothing here
imports Ray or torch: the functions run inside Ray tasks and actors, which load only the slices they are given.
"""

from __future__ import annotations

import bisect
import itertools
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import StorageConfig
from pipeline.storage import resolve

ROW = "row"
EMBEDDING = "embedding"


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) (positions within the file, not row numbers) of one vector file."""

    uri: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class StoreRef:
    """Where one language of one side lives; small and picklable, it is what the driver holds of a side."""

    side: str  # "source" or "target", for messages and paths
    lang: str
    rows: int
    text_files: tuple[tuple[str, int, int], ...]  # (uri, first row, end row), ascending and contiguous
    vector_files: tuple[tuple[str, int], ...] = ()  # (uri, rows in the file)
    dim: int = 0
    model: str = "unknown"

    @property
    def vector_rows(self) -> int:
        """Rows with a vector: `rows` less those the embed step rejected (they are never keys or queries)."""
        return sum(n for _, n in self.vector_files)

    @property
    def name(self) -> str:
        return f"{self.side}/{self.lang}"

    def text_file_of(self, rows: np.ndarray) -> np.ndarray:
        """(p,) index into text_files of each row number."""
        starts = [start for _, start, _ in self.text_files]
        return np.searchsorted(np.asarray(starts, dtype=np.int64), rows, side="right") - 1

    def vector_pieces(self, max_rows: int) -> list[Piece]:
        """The vector files cut into pieces of at most max_rows rows, in file order."""
        return [Piece(uri, a, min(a + max_rows, n)) for uri, n in self.vector_files for a in range(0, n, max_rows)]

    def shards(self, count: int) -> list[list[Piece]]:
        """Split the vectors into `count` near-equal runs of consecutive rows of the file sequence."""
        total = sum(n for _, n in self.vector_files)
        count = max(1, min(count, total))
        edges = np.linspace(0, total, count + 1).round().astype(np.int64).tolist()
        offsets = np.cumsum([0] + [n for _, n in self.vector_files]).tolist()
        shards: list[list[Piece]] = []
        for lo, hi in itertools.pairwise(edges):
            pieces = []
            first = bisect.bisect_right(offsets, lo) - 1
            for f in range(first, len(self.vector_files)):
                if offsets[f] >= hi:
                    break
                uri, n = self.vector_files[f]
                a, b = max(lo - offsets[f], 0), min(hi - offsets[f], n)
                if b > a:
                    pieces.append(Piece(uri, a, b))
            shards.append(pieces)
        return shards


def fixed_list(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) float32 -> fixed_size_list<float32>[d]."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def list_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """fixed/variable list<float> column -> (n, dim) float32 (a copy)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, dim), np.float32)
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(arr), dim)


READ_BATCH_BYTES = 2 << 20  # float32 vectors decoded at a time when reading a piece: the read's memory, any file


def read_batch_rows(dim: int) -> int:
    """Rows per decoded batch of a vector file: READ_BATCH_BYTES of float32 vectors (8,192 rows at dim 64).

    Sized in bytes, not rows: Arrow's decode holds several copies of a batch at its peak, so 8,192 rows at dim 384
    cost 86 MB of transient memory in a shard actor against 12 MB at 2 MB batches (docs/bitext.md).
    """
    return max(1, READ_BATCH_BYTES // (4 * dim))


CENTRED_MIN_NORM = 1e-6  # below this a centred unit row has no direction left (clustering.centering's cut)
READ_BUFFER_BYTES = 1 << 20  # buffered column-chunk reads: pages stream instead of a whole row group in memory


def read_piece(
    piece: Piece, storage: StorageConfig, dim: int, mean: np.ndarray | None = None, out: np.ndarray | None = None
) -> tuple:
    """Row numbers (p,) int64 and vectors (p, dim) float32 of a piece, optionally centred and re-normalized.

    Only the row groups that hold the piece are read, page by page and batch by batch, into one (p, dim) array: the
    memory of a read is the result plus one batch of `read_batch_rows(dim)` rows, not the file.

    Args:
        mean: (dim,) language mean to subtract (mining.center); None leaves the stored unit vectors as they are.
            A row equal to the mean keeps its own (uncentred) vector.
        out: (p, dim) float32 array to fill (a slice of a shard's keys), so a shard is never held twice.
    Raises:
        ValueError: the file has fewer rows than the piece names.
    """
    loc = resolve(piece.uri, storage)
    vectors = np.empty((len(piece), dim), np.float32) if out is None else out
    with loc.fs.open_input_file(loc.path) as handle:
        rows, filled = read_rows(handle, piece.start, piece.stop, dim, vectors)
    if filled != len(piece):
        raise ValueError(f"{piece.uri}: rows {piece.start}..{piece.stop} asked, the file has {filled} of them")
    if mean is not None:  # in place: no second copy of the shard
        centre = mean.astype(np.float32)
        vectors -= centre
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (p, 1)
        vectors /= np.maximum(norms, 1e-12)
        # A row equal to the mean (a language of one sentence, or of one repeated vector) has no direction left:
        # it keeps its own vector, as clustering's centring does. A zero row made every cosine with it 0 and its
        # ratio margins 0 / 0 = NaN in the pairs. Such a row is the mean, so its own vector is the mean's direction.
        degenerate = norms[:, 0] < CENTRED_MIN_NORM
        if degenerate.any():
            vectors[degenerate] = centre / max(float(np.linalg.norm(centre)), 1e-12)
    return rows, vectors


def read_rows(source, start: int, stop: int, dim: int, out: np.ndarray) -> tuple[np.ndarray, int]:
    """Fill out[: stop - start] with the vectors at file positions [start, stop) of a vector file.

    Returns:
        (rows read) int64 row numbers and how many rows the file had in that range.
    """
    # pre_buffer off and a read buffer: column chunks stream page by page instead of being read whole
    pfile = pq.ParquetFile(source, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
    groups, first, pos = [], None, 0  # the row groups overlapping [start, stop), the file position of the first
    for g in range(pfile.metadata.num_row_groups):
        n = pfile.metadata.row_group(g).num_rows
        if pos < stop and pos + n > start:
            groups.append(g)
            first = pos if first is None else first
        pos += n
    rows = np.empty(stop - start, np.int64)
    pos, filled = first or 0, 0
    for batch in pfile.iter_batches(read_batch_rows(dim), groups, [ROW, EMBEDDING], use_threads=False):
        a, b = max(start - pos, 0), min(stop - pos, batch.num_rows)
        if b > a:
            rows[filled : filled + b - a] = batch.column(ROW).slice(a, b - a).to_numpy()
            out[filled : filled + b - a] = list_matrix(batch.column(EMBEDDING).slice(a, b - a), dim)
            filled += b - a
        pos += batch.num_rows
        if pos >= stop:
            break
    return rows[:filled], filled


def warm_reader(dim: int = 8) -> None:
    """Run the vector-file reader once on a 2-row in-memory file: loads the Parquet code and Arrow's thread pools,
    so that a process measuring its base memory afterwards counts them as base, not as the arrays it reads later."""
    flat = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * dim, np.float32)), dim)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({ROW: pa.array([0, 1], pa.int64()), EMBEDDING: flat}), sink)
    read_rows(pa.BufferReader(sink.getvalue()), 0, 2, dim, np.empty((2, dim), np.float32))


def read_pieces(pieces: list[Piece], storage: StorageConfig, dim: int, mean: np.ndarray | None = None) -> tuple:
    """(rows, vectors) of several pieces, read one after another into one preallocated (sum p, dim) array."""
    vectors = np.empty((sum(len(p) for p in pieces), dim), np.float32)
    rows, at = [], 0
    for p in pieces:
        rows.append(read_piece(p, storage, dim, mean, out=vectors[at : at + len(p)])[0])
        at += len(p)
    return (np.concatenate(rows) if rows else np.zeros(0, np.int64)), vectors


def store_mean(store: StoreRef, storage: StorageConfig) -> np.ndarray:
    """(dim,) float64 mean of the store's unit vectors, read file by file (memory: one file)."""
    total = np.zeros(store.dim, np.float64)
    for uri, n in store.vector_files:
        _, vectors = read_piece(Piece(uri, 0, n), storage, store.dim)
        total += vectors.sum(axis=0, dtype=np.float64)
    return total / max(store.vector_rows, 1)


def text_dir(output_uri: str, side: str, lang: str) -> str:
    return posixpath.join(output_uri.rstrip("/"), "texts", side, f"lang={lang}")


def read_text_rows(store: StoreRef, file_index: int, storage: StorageConfig, columns: list[str]) -> pa.Table:
    uri, _, _ = store.text_files[file_index]
    loc = resolve(uri, storage)
    return pq.read_table(loc.path, filesystem=loc.fs, columns=[ROW, *columns])
