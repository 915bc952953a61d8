"""Spherical k-means math: init, per-block partial sums, their reduction, and the centroid update.

Lloyd's iteration is split into a map (`partial_sums`: one block of unit vectors against the current centroids ->
per-cluster vector sums, counts, summed cosine and the block's farthest points) and a reduce (`merge` + `update`),
so the same code runs on one machine (`fit_blocks`) and over a Ray dataset's blocks (distributed.py). Sums are
float64 across blocks so that the reduction order barely matters; `merge` still takes parts in a fixed order so a seed gives one
result. Plain numpy/torch: no Ray in here.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class PartialSums:
    """What one block contributes to one Lloyd iteration; `merge` of several is again a PartialSums."""

    sums: np.ndarray  # (k, d) float64: sum of the block's vectors assigned to each cluster
    counts: np.ndarray  # (k,) int64
    cos_sum: float  # sum over rows of the cosine to the assigned centroid
    rows: int
    far_cos: np.ndarray  # (m,) ascending: the lowest cosines to the assigned centroid, reseeding candidates
    far_vec: np.ndarray  # (m, d) float32: the vectors having those cosines

    @property
    def objective(self) -> float:
        """Mean cosine to the assigned centroid (higher is better; 1 means every point sits on its centroid)."""
        return self.cos_sum / max(self.rows, 1)

    @property
    def inertia(self) -> float:
        """Sum of (1 - cosine): for unit vectors, half the squared Euclidean distance to the centroid."""
        return float(self.rows - self.cos_sum)


@dataclass
class Iteration:
    objective: float
    inertia: float
    reseeded: int  # clusters that were empty before this pass and got a farthest point
    shift: float  # max over clusters of 1 - cos(previous centroid, new centroid)
    seconds: float


@dataclass
class FitResult:
    centroids: np.ndarray  # (k, d) float32, unit rows
    sizes: np.ndarray  # (k,) rows of the fit data assigned to each final centroid
    objective: float  # mean cosine to centroid at the final centroids
    converged: bool
    history: list[Iteration] = field(default_factory=list)  # [0] is the initial centroids


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine: (labels (N,) int64, cosine (N,) float32). Ties go to the lower cluster id.

    A row's result does not depend on the rows around it: Ray cuts the same data into blocks differently from run
    to run, and a float32 GEMM rounds a row's dot products differently by the matrix's shape (the cosines of one
    seed's runs differed in the last bit for ~10 % of rows, and a row could change cluster at a near tie). So the
    GEMM only ranks the centroids: the cosine kept is the row's dot with its centroid summed by einsum's loop, one
    order per dim whatever the block's rows or memory alignment (tests/test_clustering_kmeans.py cuts blocks and
    shifts buffers), and a row whose float32 best is within the GEMM's rounding (`near_gap`) of another centroid is
    decided on float64 dots, where values within float64's rounding of the best tie and go to the lower cluster id.
    """
    labels = np.empty(len(x), dtype=np.int64)
    cos = np.empty(len(x), dtype=np.float32)
    d = centroids.shape[1]
    gap32, gap64 = near_gap(d, np.float32), near_gap(d, np.float64)
    nearest = np.empty((min(len(x), CHUNK_ROWS), d), dtype=np.float32)  # each row's centroid (np.take into it)
    for a in range(0, len(x), CHUNK_ROWS):
        chunk = x[a : a + CHUNK_ROWS]
        sims = chunk @ centroids.T  # (chunk, k) float32
        best = sims.argmax(axis=1)
        top = sims[np.arange(len(sims)), best]
        close = np.flatnonzero((sims >= (top - gap32)[:, None]).sum(axis=1) > 1)  # a near tie: decided in float64
        if close.size:
            exact = float64_dots(chunk[close], centroids)  # (close, k)
            best[close] = (exact >= exact.max(axis=1, keepdims=True) - gap64).argmax(axis=1)  # the lowest of the tied
        labels[a : a + len(chunk)] = best
        rows = np.take(centroids, best, axis=0, out=nearest[: len(chunk)])
        cos[a : a + len(chunk)] = np.einsum("id,id->i", chunk, rows)  # (chunk,): each row's own sum, as in any block
    return labels, cos


def float64_dots(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(n, k) float64 dot products of float32 rows and centroids. A few rows (the usual near ties) by einsum's
    loop: a float64 BLAS call costs ~7 ms of thread start whatever its size; many (rows all alike) by BLAS."""
    if len(x) <= EINSUM_ROWS:
        return np.einsum("id,kd->ik", x, centroids, dtype=np.float64)
    return x.astype(np.float64) @ centroids.T.astype(np.float64)


EINSUM_ROWS = 512  # einsum's loop is ~2.5x slower than BLAS per row: beyond this many rows BLAS wins


def near_gap(d: int, dtype: type) -> float:
    """Twice the bound on the rounding error of a dot product of two unit vectors of dim `d` summed in `dtype`
    (d * unit roundoff, |x_i c_i| summing to at most 1): two dots closer than this may swap order with the layout."""
    return float(d * np.finfo(dtype).eps)  # eps is twice the unit roundoff


CHUNK_ROWS = 16_384  # rows per chunk: bounds the (rows, k) cosine scratch and the float64 copy (48 MiB at d=384)


def onehot_csr(labels: np.ndarray, k: int) -> torch.Tensor:
    """(k, N) one-hot of the labels as a CSR matrix, each cluster's rows in input order."""
    crow = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))])
    with warnings.catch_warnings():  # torch calls CSR "beta" on first use; CSR @ dense has long been stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(np.argsort(labels, kind="stable")),
            torch.ones(len(labels), dtype=torch.float64),
            size=(k, len(labels)),
            check_invariants=False,
        )


def partial_sums(x: np.ndarray, centroids: np.ndarray, n_far: int | None = None) -> PartialSums:
    """The map step over one block of unit vectors (N, d) against unit centroids (k, d).

    Per chunk of rows the vectors are summed in float64 by a sparse one-hot matmul (measured 10-50x faster than
    np.add.at, np.add.reduceat or torch's index_add_, which is pathological for small k). Float64 matters: Ray may
    cut the same data into blocks differently from run to run, and float32 partial sums would then differ in the
    last bits, breaking "same seed, same centroids".

    Args:
        n_far: how many lowest-cosine points to keep for reseeding empty clusters; k by default, enough for every
            cluster to be empty at once.
    """
    k, d = centroids.shape
    n_far = k if n_far is None else n_far
    labels, cos = assign(x, centroids)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    sums = np.zeros((k, d), dtype=np.float64)
    with warnings.catch_warnings():  # blocks from Arrow are read-only views; the matmul only reads them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for a in range(0, len(x), CHUNK_ROWS):
        lab = labels[a : a + CHUNK_ROWS]
        onehot = onehot_csr(lab, k)
        sums += (onehot @ xt[a : a + len(lab)].double()).numpy()
    far = lowest(cos, n_far)
    return PartialSums(sums, counts, float(cos.astype(np.float64).sum()), len(x), cos[far], x[far].copy())


def lowest(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n smallest values, ascending, ties by index (argpartition, then a stable sort of n)."""
    if n < len(values):
        cand = np.sort(np.argpartition(values, n - 1)[:n])
        # argpartition may pick any of several tied values at the cut: widen to all of them, then cut stably
        cand = np.flatnonzero(values <= values[cand].max())
    else:
        cand = np.arange(len(values))
    return cand[np.argsort(values[cand], kind="stable")][:n]


def merge(parts: Sequence[PartialSums], n_far: int | None = None) -> PartialSums:
    """The reduce step: sum the parts in the order given (callers fix that order for determinism)."""
    if not parts:
        raise ValueError("no partial sums to merge: the data is empty")
    n_far = parts[0].sums.shape[0] if n_far is None else n_far
    far_cos = np.concatenate([p.far_cos for p in parts])
    far_vec = np.concatenate([p.far_vec for p in parts])
    keep = lowest(far_cos, n_far)
    return PartialSums(
        sums=np.sum([p.sums for p in parts], axis=0),
        counts=np.sum([p.counts for p in parts], axis=0),
        cos_sum=float(sum(p.cos_sum for p in parts)),
        rows=sum(p.rows for p in parts),
        far_cos=far_cos[keep],
        far_vec=far_vec[keep],
    )


def update(total: PartialSums, centroids: np.ndarray) -> tuple[np.ndarray, int]:
    """New unit centroids from reduced sums; clusters left empty take the farthest points (lowest cosine first).

    A cluster whose sum has (numerically) zero length has no direction either and is reseeded the same way.

    Returns:
        (centroids (k, d) float32, number of reseeded clusters)
    """
    norms = np.linalg.norm(total.sums, axis=1)  # (k,)
    empty = (total.counts == 0) | (norms < 1e-12)
    new = np.where(empty[:, None], 0.0, total.sums / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    empty_ids = np.flatnonzero(empty)
    if len(empty_ids):
        if len(empty_ids) > len(total.far_vec):
            raise ValueError(f"{len(empty_ids)} empty clusters but only {len(total.far_vec)} points to reseed them")
        new[empty_ids] = total.far_vec[: len(empty_ids)]
        log.info("reseeded %d empty clusters with the farthest points", len(empty_ids))
    return new, len(empty_ids)


def init_random(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct rows chosen uniformly (FAISS's default init)."""
    check_k(k, len(x))
    return x[np.sort(rng.choice(len(x), size=k, replace=False))].copy()


def init_kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator, n_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ (as scikit-learn): each new centre is the best of `n_trials` D^2-sampled candidates.

    Distance is 1 - cosine (half the squared Euclidean distance between unit vectors), so this is exactly
    k-means++ on the sphere. Cost is O(n_trials * N * k * d): run it on a sample.
    """
    check_k(k, len(x))
    n_trials = n_trials or 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(len(x)))
    centres[0] = x[first]
    dist = np.maximum(1.0 - x @ x[first], 0.0).astype(np.float64)  # (N,) distance to the closest centre so far
    for c in range(1, k):
        total = dist.sum()
        if total <= 0:  # every point coincides with a centre: any unused row will do
            cand = rng.choice(len(x), size=n_trials)
        else:
            cand = np.searchsorted(np.cumsum(dist), rng.random(n_trials) * total)
            cand = np.minimum(cand, len(x) - 1)
        cand_dist = np.minimum(dist[None, :], np.maximum(1.0 - x[cand] @ x.T, 0.0))  # (n_trials, N)
        best = int(np.argmin(cand_dist.sum(axis=1)))
        centres[c] = x[cand[best]]
        dist = cand_dist[best]
    return centres


def init_centroids(x: np.ndarray, k: int, method: str, seed: int) -> np.ndarray:
    """Initial unit centroids from the rows `x` (a sample), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    if method == "kmeans++":
        return init_kmeanspp(x, k, rng)
    if method == "random":
        return init_random(x, k, rng)
    raise ValueError(f"unknown init {method!r}: use 'kmeans++' or 'random'")


class ClusterCountError(UserError, ValueError):
    """clustering.k cannot be fitted: below 1, or more clusters than rows to fit them on."""


def check_k(k: int, rows: int, of_input: int | None = None, fraction: float | None = None) -> None:
    """Raises ClusterCountError (a user error: one line, no traceback) when `k` clusters cannot be fitted on `rows`.

    Args:
        rows: the rows to fit on: the whole input's, or the fit sample's when `of_input` (the input's rows) and
            `fraction` (clustering.sample_fraction) are given, so the message says which key helps.
    """
    if k < 1:
        raise ClusterCountError(f"clustering.k must be at least 1, got {k}")
    if k <= rows:
        return
    if of_input is None or of_input <= rows:  # the whole input: a larger sample cannot help
        raise ClusterCountError(
            f"k={k} clusters but only {rows} rows to fit them on: set clustering.k to at most {rows} (each cluster "
            "needs a row)"
        )
    raise ClusterCountError(
        f"k={k} clusters but only {rows} rows to fit them on: the fit sample (clustering.sample_fraction {fraction}) "
        f"holds {rows} of the input's {of_input} rows; raise clustering.sample_fraction (to 1.0 the sample is every "
        f"row) or lower clustering.k"
    )


Step = Callable[[np.ndarray], PartialSums]
OnIteration = Callable[[np.ndarray, list[Iteration]], None]


def centroid_shift(old: np.ndarray, new: np.ndarray) -> float:
    """The largest move of a centroid, 1 - cos(old, new) over the (k, d) unit rows: 0 for a centroid that did not
    change. Computed as 1 - dot, a float32 unit row's dot with itself reads 1 +- 2.4e-7, so an unchanged centroid
    looked like it moved and a tol below that (tol 0: run to the fixed point) never stopped the fit."""
    same = (old == new).all(axis=1)  # (k,)
    moved = 1.0 - np.sum(old.astype(np.float64) * new, axis=1)
    return float(np.max(np.where(same, 0.0, np.maximum(moved, 0.0)), initial=0.0))


def lloyd(
    step: Step,
    centroids: np.ndarray,
    max_iter: int,
    tol: float,
    history: list[Iteration] | None = None,
    on_iteration: OnIteration | None = None,
) -> FitResult:
    """Lloyd iterations driven by `step` (centroids -> reduced partial sums over all the fit data).

    Stops after `max_iter` updates, or once no centroid moved by more than `tol` (1 - cosine between its old and
    new position), counting a reseeded cluster's move to its new point: a reseed that lands where the cluster was
    changes nothing, so it ends the fit too (the data has fewer distinct directions than k). Runs `step` max_iter + 1 times at most: the last pass scores
    the final centroids, so `objective` and `sizes` describe what is returned.

    Args:
        history: continue a fit cut short: `centroids` are those after iteration len(history) - 1 and `history` the
            iterations up to it (as `on_iteration` got them). The state of an iteration is its centroids alone
            (`step` recomputes the sums), so the continued fit equals the uninterrupted one for a deterministic
            `step`.
        on_iteration: called with (centroids, history) after every update that does not end the fit (the
            clustering job records them to resume from).
    """
    t0 = time.perf_counter()
    total = step(centroids)
    if history is None:
        history = [Iteration(total.objective, total.inertia, 0, float("nan"), time.perf_counter() - t0)]
    history = list(history)
    converged = False
    for it in range(len(history), max_iter + 1):
        t0 = time.perf_counter()
        new, reseeded = update(total, centroids)
        shift = centroid_shift(centroids, new)
        centroids = new
        total = step(centroids)
        history.append(Iteration(total.objective, total.inertia, reseeded, shift, time.perf_counter() - t0))
        log.info("iteration %d: objective %.6f, shift %.2e, reseeded %d", it, total.objective, shift, reseeded)
        # A reseeded cluster that moved no more than tol went back where it was: with no centroid moving, the next
        # pass would assign the same rows and reseed the same way, so this is the fit's fixed point too (e.g. k
        # above the number of distinct vectors, which used to run all max_iter passes over the sample).
        if shift <= tol:
            converged = True
            break
        if on_iteration is not None:
            on_iteration(centroids, history)
    empty = int(np.sum(total.counts == 0))
    if empty:  # reseeding cannot fill a cluster when the data has fewer distinct directions than k
        log.warning(
            "%d of %d clusters are empty after %d iterations: the fit data has fewer distinct directions than "
            "clustering.k (identical or repeated vectors); lower clustering.k",
            empty,
            len(centroids),
            len(history) - 1,
        )
    return FitResult(centroids, total.counts.copy(), total.objective, converged, history)


def fit_blocks(
    blocks: Sequence[np.ndarray], k: int, max_iter: int, tol: float, seed: int, init: str | np.ndarray = "kmeans++"
) -> FitResult:
    """Single-process spherical k-means over blocks of unit vectors; `init` may be given centroids.

    The same map/reduce as the Ray version, so it doubles as that version's reference.
    """
    check_k(k, sum(len(b) for b in blocks))
    if isinstance(init, str):
        init = init_centroids(np.concatenate(blocks), k, init, seed)
    return lloyd(lambda c: merge([partial_sums(b, c) for b in blocks]), init.astype(np.float32), max_iter, tol)
