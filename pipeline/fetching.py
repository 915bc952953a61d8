"""The files of a pack of small files (pipeline.units) fetched a few at a time ahead of the one being read.

A pack's read task read its files one after the other, each costing a round trip or two to the store (on S3 a HEAD
and a GET, file_formats.open_input): on a store far away, a pack of 1,024 tiny files took 1,024 round trips end to
end. Here up to FETCH_AHEAD files are opened in threads while the task reads the current one, so the round trips
overlap; rows still come out in file order, since each file is read only when its turn comes.

Memory: at most FETCH_AHEAD files are held beyond the current one, each read whole only when it is at most
file_formats.READ_CHUNK bytes (larger ones are held as open handles and read as before), so at most
FETCH_AHEAD x READ_CHUNK bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.file_formats import open_input

# Files opened ahead of the one being read: enough to hide a store's latency (tens of ms per round trip) behind the
# parsing of small files, few enough to hold little (READ_CHUNK each at most) and not to flood the store.
FETCH_AHEAD = 16


@contextmanager
def fetched_ahead(fs: pafs.FileSystem, paths: list[str], ahead: int = FETCH_AHEAD) -> Iterator[Iterator[Callable]]:
    """Openers of `paths` in order, each returning its file as open_input opens it, the next `ahead` files being
    opened in threads meanwhile.

    An opener re-raises the error its file's open raised (a missing file, a transient storage error), when it is
    called: the reader names that file as if it had opened it itself. Leaving the context cancels what is not
    fetched yet and lets the threads end (files fetched and not read are dropped).
    """
    pool = ThreadPoolExecutor(max(1, min(ahead, len(paths))), thread_name_prefix="fetch")
    pending: deque[Future[pa.NativeFile]] = deque()

    def openers() -> Iterator[Callable[[], pa.NativeFile]]:
        rest = iter(paths)
        for path in rest:
            pending.append(pool.submit(open_input, fs, path))
            if len(pending) > ahead:
                break
        while pending:
            yield pending.popleft().result
            path = next(rest, None)
            if path is not None:
                pending.append(pool.submit(open_input, fs, path))

    try:
        yield openers()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
