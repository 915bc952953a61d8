"""Margin scoring and pair selection from stored knn files, streamed (the scalable twin of `selection`).

    knn files (both directions) --densities--> (rows,) mean k-NN cosine per row and direction
    knn file + other side's densities --propose--> proposals file: each query's best candidate, sorted by score
    all proposals files --select_stream (k-way merge)--> kept pairs, in descending score, routed by source text file

Same formulas and tie order as `selection.select_pairs` (sorted by score desc, then source row, then target row),
so a run gives the same pairs whatever the sharding and blocking. State of the selection: the merge holds one
proposals file per direction and block; the 1:1 `max` keeps a used flag per row (1 byte) and the direction flag
needs each row's best candidate (8 bytes): bounded by rows, never by candidates or pairs.
"""

from __future__ import annotations

import heapq
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.bitext.margin import margin_score, neighbourhood_density
from pipeline.bitext.store import StoreRef
from pipeline.bitext.stream_search import read_knn
from pipeline.config import StorageConfig
from pipeline.storage import resolve, write_parquet_atomic

SRC, TGT, SCORE, COSINE, RANK, DIRECTION = "src_row", "tgt_row", "score", "cosine", "rank", "direction"
DIRECTIONS = ("forward", "backward", "both")  # codes 0, 1, 2


def densities(knn_uris: list[str], rows: int, margin: str, storage: StorageConfig) -> np.ndarray:
    """(rows,) float32 `neighbourhood_density` of every query row of one search for `margin`, read file by file."""
    out = np.zeros(rows, np.float32)
    for uri in knn_uris:
        q, _, sims = read_knn(uri, storage)
        out[q] = neighbourhood_density(sims, margin)
    return out


def propose(
    knn_uri: str, other_density: np.ndarray, margin: str, forward: bool, out_uri: str, storage: StorageConfig
) -> dict[str, Any]:
    """Each query's best-margin candidate of one knn file, written sorted by (score desc, src, tgt)."""
    q, nbrs, sims = read_knn(knn_uri, storage)
    valid = nbrs >= 0
    scores = margin_score(
        sims, neighbourhood_density(sims, margin)[:, None], other_density[np.where(valid, nbrs, 0)], margin
    )
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    pos = scores.argmax(axis=1)[:, None]  # (n, 1) first best on ties, as selection.best_candidates
    best = np.take_along_axis(nbrs, pos, 1)[:, 0]
    score = np.take_along_axis(scores, pos, 1)[:, 0]
    cosine = np.take_along_axis(sims, pos, 1)[:, 0]
    keep = best >= 0
    src, tgt = (q, best) if forward else (best, q)
    src, tgt, score, cosine = src[keep], tgt[keep], score[keep], cosine[keep]
    order = np.lexsort((tgt, src, -score))
    table = pa.table(
        {
            SRC: pa.array(src[order], pa.int64()),
            TGT: pa.array(tgt[order], pa.int64()),
            SCORE: pa.array(score[order], pa.float32()),
            COSINE: pa.array(cosine[order], pa.float32()),
        }
    )
    write_parquet_atomic(table, resolve(out_uri, storage))
    low = float(score.min()) if len(score) else None
    high = float(score.max()) if len(score) else None
    return {"uri": out_uri, "rows": len(score), "min": low, "max": high}


def best_of(proposal_uris: list[str], rows: int, forward: bool, storage: StorageConfig) -> np.ndarray:
    """(rows,) int64: each query row's best candidate row (-1 when it has none), from one direction's proposals."""
    best = np.full(rows, -1, np.int64)
    for uri in proposal_uris:
        t = read_table(uri, storage)
        q, b = (t.column(SRC), t.column(TGT)) if forward else (t.column(TGT), t.column(SRC))
        best[q.to_numpy()] = b.to_numpy()
    return best


def read_table(uri: str, storage: StorageConfig) -> pa.Table:
    loc = resolve(uri, storage)
    return pq.read_table(loc.path, filesystem=loc.fs)


def stream(uri: str, storage: StorageConfig, code: int) -> Iterator[tuple]:
    t = read_table(uri, storage)
    for s, t_, sc, c in zip(
        t.column(SRC).to_pylist(), t.column(TGT).to_pylist(), t.column(SCORE).to_pylist(), t.column(COSINE).to_pylist()
    ):
        yield (-sc, s, t_, code, c)


@dataclass(frozen=True)
class Window:
    threshold: float | None
    score_max: float | None
    edges: list[float]  # histogram bin edges over the candidates' score range
    grid: list[float]  # thresholds whose kept counts the summary reports


@dataclass(frozen=True)
class Route:
    """Where kept pairs go: one folder per source text file, files of at most `rows` pairs."""

    src: StoreRef
    work_uri: str
    rows: int


def select_stream(
    fwd_uris: list[str],
    bwd_uris: list[str],
    retrieval: str,
    fwd_best: np.ndarray,
    bwd_best: np.ndarray,
    window: Window,
    route: Route,
    storage: StorageConfig,
) -> dict[str, Any]:
    """Walk the proposals in descending score, select (fwd, bwd, intersect or 1:1 max), cut to the window.

    Writes the kept pairs with their rank (0 = best) and direction code, routed by source text file.
    Returns counts, the score histogram and kept-per-threshold of the selected pairs, and the written files.
    """
    sources = []
    if retrieval in ("fwd", "max", "intersect"):
        sources += [stream(u, storage, 0) for u in fwd_uris]
    if retrieval in ("bwd", "max"):
        sources += [stream(u, storage, 1) for u in bwd_uris]
    used_src = np.zeros(len(fwd_best), bool) if retrieval == "max" else None
    used_tgt = np.zeros(len(bwd_best), bool) if retrieval == "max" else None
    edges = np.asarray(window.edges, np.float64)
    hist = np.zeros(max(len(edges) - 1, 0), np.int64)
    grid = np.asarray(window.grid, np.float64)
    per_grid = np.zeros(len(grid), np.int64)
    writer = RoutedWriter(route, storage)
    selected = kept = above_max = 0
    batch: list[float] = []

    def count(scores: list[float]) -> None:
        values = np.asarray(scores, np.float64)
        if len(hist):
            hist[:] += np.histogram(values, bins=edges)[0]
        per_grid[:] += (values[:, None] >= grid[None, :]).sum(axis=0)

    for neg, s, t, _code, cos in heapq.merge(*sources):
        if retrieval == "max":
            if used_src[s] or used_tgt[t]:
                continue
            used_src[s] = used_tgt[t] = True
        elif retrieval == "intersect" and bwd_best[t] != s:
            continue
        score = -neg
        selected += 1
        batch.append(score)
        if len(batch) >= 65536:
            count(batch)
            batch = []
        if window.threshold is not None and score < window.threshold:
            continue
        if window.score_max is not None and score > window.score_max:
            above_max += 1
            continue
        direction = 2 if (fwd_best[s] == t and bwd_best[t] == s) else (0 if fwd_best[s] == t else 1)
        writer.add(kept, s, t, score, cos, direction)
        kept += 1
    if batch:
        count(batch)
    writer.close()
    return {
        "pairs_selected": selected,
        "pairs_in_window": kept,
        "pairs_above_score_max": above_max,
        "histogram": hist.tolist(),
        "per_threshold": per_grid.tolist(),
        "routed": writer.files,
    }


class RoutedWriter:
    """Buffers kept pairs per source text file; writes every buffer once `route.rows` pairs are buffered."""

    def __init__(self, route: Route, storage: StorageConfig):
        self.route, self.storage = route, storage
        self.buffers: dict[int, list[tuple]] = {}
        self.buffered = 0
        self.files: list[tuple[int, str]] = []  # (source text file index, uri)
        self.starts = np.asarray([start for _, start, _ in route.src.text_files], np.int64)

    def add(self, rank: int, s: int, t: int, score: float, cos: float, direction: int) -> None:
        f = int(np.searchsorted(self.starts, s, side="right")) - 1
        self.buffers.setdefault(f, []).append((rank, s, t, score, cos, direction))
        self.buffered += 1
        if self.buffered >= self.route.rows:
            self.flush()

    def flush(self) -> None:
        for f, items in sorted(self.buffers.items()):
            rank, s, t, score, cos, direction = zip(*items)
            table = pa.table(
                {
                    RANK: pa.array(rank, pa.int64()),
                    SRC: pa.array(s, pa.int64()),
                    TGT: pa.array(t, pa.int64()),
                    SCORE: pa.array(score, pa.float32()),
                    COSINE: pa.array(cos, pa.float32()),
                    DIRECTION: pa.array(direction, pa.int8()),
                }
            )
            uri = posixpath.join(self.route.work_uri, f"s{f:05d}", f"p{len(self.files):06d}.parquet")
            write_parquet_atomic(table, resolve(uri, self.storage))
            self.files.append((f, uri))
        self.buffers, self.buffered = {}, 0

    def close(self) -> None:
        if self.buffered:
            self.flush()
