"""What a user needs to pick a threshold: pairs kept per threshold, a score histogram, and a PNG of it.

Plain numpy + matplotlib (Agg backend, no display), so it runs on headless workers and is unit-tested.
"""

from __future__ import annotations

import io

import numpy as np


def threshold_grid(scores: np.ndarray, threshold: float | None, points: int = 11) -> list[float]:
    """Evenly spaced cuts between the lowest and highest score, plus the configured threshold."""
    if len(scores) == 0:
        return [] if threshold is None else [float(threshold)]
    grid = np.linspace(float(scores.min()), float(scores.max()), points).round(4).tolist()
    if threshold is not None:
        grid.append(float(threshold))
    return sorted(set(grid))


def kept_per_threshold(scores: np.ndarray, thresholds: list[float]) -> list[dict[str, float | int]]:
    """How many pairs score >= each threshold."""
    ordered = np.sort(scores)
    return [{"threshold": t, "pairs": int(len(ordered) - np.searchsorted(ordered, t, side="left"))} for t in thresholds]


def histogram(scores: np.ndarray, bins: int) -> dict[str, list]:
    counts, edges = np.histogram(scores, bins=bins) if len(scores) else (np.zeros(0, int), np.zeros(0))
    return {"bin_edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}


def histogram_png(scores: np.ndarray, bins: int, threshold: float | None, title: str, xlabel: str) -> bytes:
    """PNG bytes of the score histogram with the threshold drawn as a vertical line."""
    kept = int((scores >= threshold).sum()) if threshold is not None else len(scores)
    return counts_png(histogram(scores, bins), threshold, kept, title, xlabel)


def counts_png(hist: dict[str, list], threshold: float | None, kept: int, title: str, xlabel: str) -> bytes:
    """PNG of a histogram given as bin edges and counts (as streamed by the selection), threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, counts = np.asarray(hist["bin_edges"]), np.asarray(hist["counts"])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if len(counts):
            ax.hist(edges[:-1], bins=edges, weights=counts, color="#4477aa")
        if threshold is not None:
            ax.axvline(threshold, color="#cc3311", linestyle="--", label=f"threshold {threshold:g}: {kept} pairs kept")
            ax.legend()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pairs")
        ax.set_title(title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def overview_png(rows: list[dict], threshold: float | None) -> bytes:
    """Bar chart of pairs kept per language pair (one bar per pair, largest first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: -r["pairs_kept"])
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(rows) + 2), 4), dpi=100)
    try:
        labels = [f"{r['src_lang']}-{r['tgt_lang']}" for r in rows]
        ax.bar(range(len(rows)), [r["pairs_kept"] for r in rows], color="#4477aa")
        ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=7)
        ax.set_ylabel("pairs kept")
        ax.set_title(f"pairs kept per language pair (threshold {threshold})")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
