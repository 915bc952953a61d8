from __future__ import annotations

import numpy as np

from pipeline.bitext.report import histogram, histogram_png, kept_per_threshold, threshold_grid


def test_kept_per_threshold_counts_scores_at_or_above():
    scores = np.array([0.9, 1.0, 1.0, 1.1, 1.3], dtype=np.float32)
    got = kept_per_threshold(scores, [0.0, 1.0, 1.05, 2.0])
    assert [g["pairs"] for g in got] == [5, 4, 2, 0]


def test_threshold_grid_spans_scores_and_includes_the_threshold():
    grid = threshold_grid(np.array([1.0, 2.0]), 1.234, points=3)
    assert grid == [1.0, 1.234, 1.5, 2.0]
    assert threshold_grid(np.array([]), None) == []


def test_histogram_counts_every_score():
    h = histogram(np.linspace(0, 1, 101), bins=10)
    assert sum(h["counts"]) == 101 and len(h["bin_edges"]) == 11


def test_png_is_written_with_and_without_threshold():
    scores = np.random.default_rng(0).normal(1.0, 0.05, 500)
    for threshold in (1.02, None):
        png = histogram_png(scores, 20, threshold, "t", "ratio margin")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
