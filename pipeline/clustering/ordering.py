"""Order- and layout-independent row keys: a seeded uniform per id, and a natural sort key for ids.

Ray Data does not promise the order of blocks or of rows within a shuffle, so everything that must be
deterministic for a seed (the fit sample, "first" and "random" in dedup) is a function of the row's id alone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np

_DIGITS = re.compile(r"(\d+)")


def stable_uniform(ids: Iterable[str], seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per id, the same for the same (seed, id) on every machine and run.

    Python's `hash` is salted per process, so it cannot be used; blake2b of the id keyed by the seed is.
    """
    key = seed.to_bytes(8, "little", signed=True)
    out = [int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8, key=key).digest(), "little") for i in ids]
    return np.asarray(out, dtype=np.uint64).astype(np.float64) / 2.0**64


def natural_key(value: str) -> tuple:
    """Sort key comparing digit runs as numbers: 'doc#2' before 'doc#10', as the embed job's ids are meant."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(value))


def natural_order(ids: list[str]) -> np.ndarray:
    """Indices that put `ids` in natural order (ties, i.e. equal ids, keep their input order)."""
    return np.asarray(sorted(range(len(ids)), key=lambda i: natural_key(ids[i])), dtype=np.int64)
