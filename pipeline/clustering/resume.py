"""How the clustering job resumes: its fingerprint, and the fit's centroids kept across attempts.

The fit (a sample pass, k-means++ on the driver, then up to `max_iter` passes over the sample) is the expensive
stage; its state is a (k, d) matrix and a few numbers. A run records them while it fits and once fitted:

    <out>/_run/fit/iteration-NNNNN.npy  the centroids after iteration N (numpy's .npy format), at most every
                                        CHECKPOINT_SECONDS; older ones are deleted once the next is recorded
    <out>/_run/units/fit-iteration.json the marker of the last one (pipeline.commit.mark_unit): N, file, history
    <out>/_run/fit/centroids.npy        the fitted centroids, exactly as fitted
    <out>/_run/units/fit.json           the stage marker, written after the matrix

A rerun of the same configuration after a crash loads the fitted centroids instead of fitting again, or continues
the fit from the last recorded iteration (kmeans.lloyd's `history`: the same iterations as an uninterrupted fit),
then deletes what the assignment stage left and assigns again (one pass over the rows). Pure storage: no Ray.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from typing import Any

import numpy as np

from pipeline import commit
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.kmeans import FitResult, Iteration
from pipeline.fingerprint import listing_digest
from pipeline.objects import delete_files, list_tree
from pipeline.rules import applied, rule_fields
from pipeline.storage import ListedFile, Location, read_bytes, write_bytes

FIT_STAGE, ITERATION_STAGE = "fit", "fit-iteration"
FIT_DIR = f"{commit.RUN_DIR}/fit"
CENTROIDS = f"{FIT_DIR}/centroids.npy"
# A checkpoint costs one write of k x d float32 (4 MB at k=1000, d=1024); an iteration is one pass over the fit
# sample. Every 30 s keeps the write a small share of a long fit and skips it for fits of a few seconds.
CHECKPOINT_SECONDS = 30.0


def cluster_fingerprint(
    cfg: ClusterConfig, listed: list[ListedFile], rules: dict[str, str] | None = None
) -> dict[str, Any]:
    """The fields that decide whether an unfinished clustering run may be resumed, by name.

    Everything that changes the assignments: the input listing (count and sha256 of every path, size and change token, as
    for the embed job), the columns read and carried, and every clustering setting. Resources (compute), storage
    settings, `output.overwrite` and the embed step's own settings (its output is the input, so its listing stands
    for it) are left out.
    """
    return {
        "input.listing": listing_digest(listed),
        "input.id_column": cfg.input.id_column,
        "input.embedding_column": cfg.input.embedding_column,
        "input.text_column": cfg.input.text_column,
        "output.keep_columns": list(cfg.output.keep_columns),
        **{f"clustering.{k}": v for k, v in sorted(cfg.clustering.model_dump().items())},
        **rule_fields(cluster_rules() if rules is None else rules),
    }


def applied_cluster_rules(cfg: ClusterConfig, recorded: dict[str, Any] | None) -> dict[str, str]:
    """This version's clustering rules as a run of `cfg` is checked and fingerprinted with (pipeline.rules.applied):
    dedup's without clustering.dedup and center's without clustering.center_by as the run recorded them."""
    unused = set() if cfg.clustering.dedup else {"dedup"}
    return applied(cluster_rules(), unused | (set() if cfg.clustering.center_by else {"center"}), recorded)


def cluster_rules() -> dict[str, str]:
    """The code's rules that decide a clustering run's centroids, assignments and duplicates (pipeline.rules), each
    as 'version: the rule', with its constants read from the code. Bump a rule's version with its code: a run started
    under another version of a rule is refused on resume, naming it.

    History: vectors 1 used float16-stored rows as read (before 6b1fcb7); dedup 1 took an eps below float32's
    cosine rounding as given (before d83483b), dedup 2 did not compare the rows kept by the pieces of a split
    cluster with each other (copies cut apart by the split stayed), dedup 3 neither when they were more than
    max_cluster_rows (exact copies cut apart stayed too); kmeans 1 reseeded empty clusters every pass and measured an unchanged
    centroid's shift as 1 - dot (before 6498eba, dc78bdf); kmeans 2 took a row's cosine from a float32 GEMM, whose
    last bit (and a near tie's cluster) depended on how Ray cut the rows into blocks (before 2026-12-02).
    """
    from pipeline.clustering.dedup import EPS_FLOOR
    from pipeline.clustering.vectors import NORM_TOLERANCE, UNIT_TOLERANCE

    return {
        "vectors": (
            f"2: a row further than {UNIT_TOLERANCE} from unit length is divided by its norm; further than "
            f"{NORM_TOLERANCE} it counts as not normalized"
        ),
        "center": "1: each center_by group's mean subtracted, rows made unit length again",
        "kmeans": (
            "3: spherical Lloyd from k-means++ on the sample, float64 sums; an unchanged centroid moves 0; the fit "
            "stops once no centroid moves, reseeds included; a row's cosine is an exact float64 dot rounded to "
            "float32, its nearest centroid decided in float64 at a float32 near tie"
        ),
        "dedup": (
            f"4: duplicates at cosine >= 1 - max(eps, {EPS_FLOOR}) within a cluster, joined transitively; the rows "
            "kept by the pieces of a split cluster compared again up to max_cluster_rows of them; exact copies "
            "always joined"
        ),
    }


def history_record(history: list[Iteration]) -> list[dict[str, Any]]:
    """The fit's history as strict JSON: a NaN (the shift of iteration 0, which has no previous centroids) is null."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in dataclasses.asdict(h).items()}
        for h in history
    ]


def read_history(record: list[dict[str, Any]]) -> list[Iteration]:
    """history_record's inverse (null is NaN again)."""
    return [Iteration(**{k: math.nan if v is None else v for k, v in h.items()}) for h in record]


def write_matrix(x: np.ndarray, at: Location) -> None:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    write_bytes(buf.getvalue(), at)


def read_matrix(at: Location) -> np.ndarray:
    return np.load(io.BytesIO(read_bytes(at)), allow_pickle=False)


class IterationCheckpoints:
    """kmeans.lloyd's `on_iteration`: records the centroids and history at most every CHECKPOINT_SECONDS."""

    def __init__(self, out: Location, init_rows: int):
        self.out, self.init_rows = out, init_rows
        self.last = time.monotonic()

    def __call__(self, centroids: np.ndarray, history: list[Iteration]) -> None:
        if time.monotonic() - self.last < CHECKPOINT_SECONDS:
            return
        rel = f"{FIT_DIR}/iteration-{len(history) - 1:05d}.npy"
        write_matrix(centroids, self.out.join(rel))
        record = {"file": rel, "history": history_record(history), "init_rows": self.init_rows}
        commit.mark_unit(self.out, ITERATION_STAGE, record)  # the marker names its file: never a half-written one
        self.discard(keep=rel)
        self.last = time.monotonic()

    def discard(self, keep: str | None = None) -> None:
        """Delete the iterations' matrices but `keep` (superseded by a newer one, or by the fitted centroids),
        those an attempt that crashed mid-way left included."""
        fit_dir = self.out.join(FIT_DIR)
        old = [n for n in list_tree(fit_dir, temp_files=True) if "iteration-" in n and f"{FIT_DIR}/{n}" != keep]
        delete_files(fit_dir, old)


def load_iteration(out: Location, record: dict[str, Any]) -> tuple[np.ndarray, list[Iteration], int]:
    """The last recorded iteration of a fit cut short: (centroids, history, rows the init ran on)."""
    history = read_history(record["history"])
    return read_matrix(out.join(record["file"])), history, record["init_rows"]


def save_fit(out: Location, fit: FitResult, facts: dict[str, Any]) -> None:
    """Record the fitted centroids, then the stage marker: from here on a rerun skips the fit."""
    write_matrix(fit.centroids, out.join(CENTROIDS))
    record = {
        "sizes": fit.sizes.tolist(),
        "objective": fit.objective,
        "converged": fit.converged,
        "history": history_record(fit.history),
        "facts": facts,
    }
    commit.mark_unit(out, FIT_STAGE, record)


def load_fit(out: Location, record: dict[str, Any]) -> tuple[FitResult, dict[str, Any]]:
    """The fit an earlier attempt recorded (save_fit), and its facts about the sample."""
    centroids = read_matrix(out.join(CENTROIDS))
    history = read_history(record["history"])
    fit = FitResult(centroids, np.asarray(record["sizes"]), record["objective"], record["converged"], history)
    return fit, record["facts"]
