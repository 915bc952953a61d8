"""Progress of the embed job on the driver, with a known total.

Ray Data's own bars show `0/?` rows (a read stage that yields many blocks per file has no row estimate), so they are
switched off for the embed job and replaced by one line per update: rows done of the total from the Parquet footers
(metadata only, no data read), and files done of the listing (the read stage flags each file's last row, FILE_DONE),
with rate and ETA. On a terminal it is a tqdm bar; in a log (ray job logs, CI) a line every `interval` seconds.
"""

from __future__ import annotations

import logging
import posixpath
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.columns import CHUNK_INDEX, FILE_DONE
from pipeline.storage import Location

log = logging.getLogger(__name__)

FOOTER_THREADS = 16  # footers are tiny reads; on S3 the latency, not the bandwidth, is what parallelism hides


def parquet_rows(root: Location, files: list[str]) -> int:
    """Rows of every Parquet file, from the footers alone."""

    def rows(rel: str) -> int:
        with root.fs.open_input_file(posixpath.join(root.path, rel)) as f:
            return pq.ParquetFile(f).metadata.num_rows if f.size() else 0  # a 0-byte file holds no rows

    with ThreadPoolExecutor(min(FOOTER_THREADS, max(len(files), 1))) as pool:
        return sum(pool.map(rows, files))


def expected_rows(fmt: str, root: Location, files: list[str]) -> int | None:
    """Input rows of the corpus when the format says so cheaply (Parquet footers), else None."""
    if fmt != "parquet":
        return None
    try:
        return parquet_rows(root, files)
    except (OSError, pa.ArrowInvalid) as err:  # a bad file fails later with its own, clearer error
        log.debug("no row total for the progress: %s", err)
        return None


def mark_file_end(blocks: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The blocks of one file, with a FILE_DONE column true on the last row of the last block (one block held back)."""
    held = None
    for block in blocks:
        if held is not None:
            yield held.append_column(FILE_DONE, pa.array([False] * held.num_rows))
        held = block
    if held is not None:
        flags = [False] * held.num_rows
        if flags:
            flags[-1] = True
        yield held.append_column(FILE_DONE, pa.array(flags))


def files_done(block: pa.Table) -> int:
    """Input files whose last row is in `block` (first chunks only: a chunked row repeats the flag)."""
    if FILE_DONE not in block.column_names or block.num_rows == 0:
        return 0
    first = pc.equal(block.column(CHUNK_INDEX), 0) if CHUNK_INDEX in block.column_names else None
    flags = block.column(FILE_DONE) if first is None else pc.and_(block.column(FILE_DONE), first)
    return pc.sum(flags).as_py() or 0


def quiet_ray_data_progress() -> None:
    """Switch off Ray Data's per-operator bars (and its notice that they are off) for this process."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


class RowProgress:
    """Rows done of `total` (None: unknown), as a tqdm bar on a terminal or a log line every `interval` seconds.

    Args:
        total: expected input rows, or None.
        files: input files (shown when the row total is unknown).
        interval: seconds between log lines when stderr is not a terminal.
    """

    def __init__(self, total: int | None, files: int, interval: float = 10.0, stream=None):
        self.total, self.files, self.interval = total, files, interval
        self.stream = stream or sys.stderr
        self.done = self.files_done = 0
        self.shown = (0, 0)  # (rows, files) of the last line printed
        self.start = self.last = time.perf_counter()
        self.bar = None
        if self.stream.isatty():
            from tqdm.auto import tqdm

            # rows when the total is known, else files (the listing always knows those)
            unit, count = ("rows", total) if total else ("files", files)
            self.bar = tqdm(total=count, unit=unit, desc="embedding", file=self.stream, dynamic_ncols=True)

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done / elapsed
        files = f"{self.files_done:,} / {self.files:,} files"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            pct = 100.0 * self.done / self.total
            return (
                f"progress: {self.done:,} / {self.total:,} rows ({pct:.0f}%), {files}, {rate:,.0f} rows/s, "
                f"ETA {eta:,.0f} s"
            )
        share = self.files_done / self.files if self.files else 0.0
        eta = f", ETA {elapsed * (1 - share) / share:,.0f} s" if 0 < share < 1 else ""
        return f"progress: {files} ({100 * share:.0f}%), {self.done:,} rows, {rate:,.0f} rows/s{eta}"

    def update(self, rows: int, files: int = 0) -> None:
        self.files_done += files
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows if self.total else files)
            return
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last, self.shown = now, (self.done, self.files_done)
            print(self.line(), file=self.stream, flush=True)

    def all_files_done(self) -> None:
        """The dataset is exhausted: every file is done, those without a row (which flag no last row) included."""
        if self.bar is not None and not self.total:
            self.bar.update(self.files - self.files_done)
        self.files_done = self.files

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.shown != (self.done, self.files_done) or self.done == 0:  # unless the last line already said it
            print(self.line(), file=self.stream, flush=True)


def collect_stats(batches: Iterable[pa.Table], total: int | None, files: int) -> list[pa.Table]:
    """Drain the write stage's stats rows (one per written block), reporting input rows as they complete."""
    progress = RowProgress(total, files)
    stats = []
    try:
        for batch in batches:
            stats.append(batch)
            rows = sum(int(batch.column(c).to_numpy().sum()) for c in ("rows_embedded", "rows_rejected"))
            done = int(batch.column("files_done").to_numpy().sum()) if "files_done" in batch.column_names else 0
            progress.update(rows, done)
    finally:
        progress.close()
    return stats
