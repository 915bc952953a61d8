"""summary.json and the two PNGs (cluster sizes, objective per iteration): the human-readable side of a run.

Plots use matplotlib's Agg backend so the job runs on headless workers and in CI.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipeline.clustering.kmeans import FitResult


def fit_history(fit: FitResult) -> list[dict[str, Any]]:
    """One entry per pass over the fit sample; entry 0 scores the initial centroids."""
    return [
        {
            "iteration": i,
            "objective": round(h.objective, 7),
            "inertia": round(h.inertia, 4),
            "centroid_shift": None if np.isnan(h.shift) else float(h.shift),
            "reseeded": h.reseeded,
            "seconds": round(h.seconds, 4),
        }
        for i, h in enumerate(fit.history)
    ]


def sizes_png(sizes: np.ndarray) -> bytes:
    """Bar chart of cluster sizes, largest first, so imbalance is visible at a glance."""
    order = np.argsort(-sizes, kind="stable")
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    ax.bar(np.arange(len(sizes)), sizes[order], width=1.0 if len(sizes) > 50 else 0.8)
    if len(sizes) <= 50:
        ax.set_xticks(np.arange(len(sizes)), [str(c) for c in order], fontsize=7)
        ax.set_xlabel("cluster id (largest first)")
    else:
        ax.set_xlabel("clusters, largest first")
    ax.set_ylabel("rows")
    ax.set_title(f"Cluster sizes (k={len(sizes)}, {int(sizes.sum())} rows)")
    return _png(fig)


def objective_png(fit: FitResult) -> bytes:
    """Inertia (sum of 1 - cosine) and mean cosine per Lloyd iteration of the fit."""
    it = np.arange(len(fit.history))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(it, [h.inertia for h in fit.history], marker="o", ms=3)
    ax.set_xlabel("iteration (0 = initial centroids)")
    ax.set_ylabel("inertia = sum(1 - cos)")
    ax2 = ax.twinx()
    ax2.plot(it, [h.objective for h in fit.history], color="tab:orange", lw=0.8)
    ax2.set_ylabel("mean cosine to centroid", color="tab:orange")
    ax.set_title("Spherical k-means fit")
    return _png(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
