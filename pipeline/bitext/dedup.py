"""Exact-duplicate removal before mining: mined data must not repeat a sentence.

Duplicates also distort the margin: n copies of a sentence share one neighbourhood, so each copy's k-NN list is filled
by its twins and its density term is inflated. Pure python/numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def first_occurrences(texts: Sequence[str]) -> np.ndarray:
    """Row numbers (ascending) of the first occurrence of each distinct text; exact string equality, no normalization."""
    seen: set[str] = set()
    keep = []
    for i, text in enumerate(texts):
        if text not in seen:
            seen.add(text)
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)
