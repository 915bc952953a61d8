"""How the clustering job resumes: its fingerprint, and the fitted centroids kept across attempts.

The fit (a sample pass, k-means++ on the driver, then up to `max_iter` passes over the sample) is the expensive
stage; it ends in a few numbers and a (k, d) matrix. A run records them once fitted:

    <out>/_run/fit/centroids.npy   the fitted centroids, exactly as fitted (numpy's .npy format)
    <out>/_run/units/fit.json      the stage marker (pipeline.commit.mark_unit), written after the matrix

A rerun of the same configuration after a crash loads them instead of fitting again, deletes what the assignment
stage left and assigns again (one pass over the rows). Pure storage: no Ray.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np

from pipeline import commit
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.kmeans import FitResult, Iteration
from pipeline.fingerprint import listing_digest
from pipeline.storage import ListedFile, Location, read_bytes, write_bytes

FIT_STAGE = "fit"
CENTROIDS = f"{commit.RUN_DIR}/fit/centroids.npy"


def cluster_fingerprint(cfg: ClusterConfig, listed: list[ListedFile]) -> dict[str, Any]:
    """The fields that decide whether an unfinished clustering run may be resumed, by name.

    Everything that changes the assignments: the input listing (count and sha256 of every path, size and mtime, as
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
    }


def save_fit(out: Location, fit: FitResult, facts: dict[str, Any]) -> None:
    """Record the fitted centroids, then the stage marker: from here on a rerun skips the fit."""
    buf = io.BytesIO()
    np.save(buf, fit.centroids, allow_pickle=False)
    write_bytes(buf.getvalue(), out.join(CENTROIDS))
    record = {
        "sizes": fit.sizes.tolist(),
        "objective": fit.objective,
        "converged": fit.converged,
        "history": [dataclasses.asdict(h) for h in fit.history],  # shift of entry 0 is NaN: JSON NaN, read back
        "facts": facts,
    }
    commit.mark_unit(out, FIT_STAGE, record)


def load_fit(out: Location, record: dict[str, Any]) -> tuple[FitResult, dict[str, Any]]:
    """The fit an earlier attempt recorded (save_fit), and its facts about the sample."""
    centroids = np.load(io.BytesIO(read_bytes(out.join(CENTROIDS))), allow_pickle=False)
    history = [Iteration(**h) for h in record["history"]]
    fit = FitResult(centroids, np.asarray(record["sizes"]), record["objective"], record["converged"], history)
    return fit, record["facts"]
