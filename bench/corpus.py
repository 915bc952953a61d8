"""A skewed, multilingual benchmark corpus: most texts short, a heavy tail of long documents.

Throughput numbers on uniform sentence lengths flatter every batching scheme (nothing to pad). Real corpora are
closer to lognormal in length, so each document here draws a target length from a lognormal distribution and is
filled with consecutive sentences of one language from ../shared/data (SIB-200 / FLORES and Tatoeba, 100+
languages and many scripts). Without that folder (users, the GPU machine) a synthetic generator writes
pseudo-words in several scripts with the same length distribution, so the benchmark never needs the data.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("RAYEMBED_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"

# Unicode ranges of letters for the synthetic fallback: Latin, Cyrillic, Greek, Arabic, Devanagari, Hangul, CJK.
SCRIPTS = {
    "lat": (0x61, 0x7A),
    "cyr": (0x430, 0x44F),
    "grc": (0x3B1, 0x3C9),
    "ara": (0x628, 0x64A),
    "dev": (0x915, 0x939),
    "kor": (0xAC00, 0xAC00 + 400),
    "zho": (0x4E00, 0x4E00 + 2000),
}


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    langs: list[str]
    source: str  # "shared" or "synthetic"

    def chars(self) -> np.ndarray:
        return np.fromiter((len(t) for t in self.texts), dtype=np.int64, count=len(self.texts))


def load_sentences(data: Path = DATA) -> dict[str, list[str]]:
    """Sentences per language from SIB-200 (all splits) and the non-English side of Tatoeba; {} when absent."""
    out: dict[str, list[str]] = {}
    sib = data / "sib200"
    if sib.is_dir():
        for lang_dir in sorted(p for p in sib.iterdir() if p.is_dir()):
            for split in ("train", "dev", "test"):
                path = lang_dir / f"{split}.tsv"
                if path.is_file():
                    with path.open(newline="", encoding="utf-8") as f:
                        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                        out.setdefault(lang_dir.name, []).extend(r["text"] for r in rows if r["text"])
    tatoeba = data / "tatoeba"
    if tatoeba.is_dir():
        for path in sorted(tatoeba.glob("tatoeba.*-eng.*")):
            lang = path.suffix[1:]
            if lang != "eng":
                lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
                out.setdefault(f"tatoeba_{lang}", []).extend(lines)
    return {k: v for k, v in out.items() if len(v) >= 20}


def synthetic_sentence(rng: np.random.Generator, script: str) -> str:
    lo, hi = SCRIPTS[script]
    dense = script in ("zho", "kor")  # no spaces between CJK "words" of 1-2 characters
    words = []
    for _ in range(int(rng.integers(4, 18))):
        n = int(rng.integers(1, 3)) if dense else int(rng.integers(2, 10))
        words.append("".join(chr(c) for c in rng.integers(lo, hi + 1, size=n)))
    return ("" if dense else " ").join(words) + "."


def target_lengths(rng: np.random.Generator, n: int, median_chars: float, sigma: float, max_chars: int) -> np.ndarray:
    """Lognormal document lengths in characters, clipped to [20, max_chars]."""
    return np.clip(rng.lognormal(np.log(median_chars), sigma, size=n), 20, max_chars).astype(np.int64)


def build_corpus(
    num_docs: int,
    seed: int = 0,
    median_chars: float = 150.0,
    sigma: float = 1.3,
    max_chars: int = 12_000,
    data: Path | None = DATA,
) -> Corpus:
    """`num_docs` documents of lognormal length, each in one language.

    Args:
        num_docs: documents to produce.
        seed: makes the corpus (and so every number measured on it) reproducible.
        median_chars: median document length; with sigma 1.3 the mean is about 2.3x the median and roughly 1 % of
            documents exceed 20x the median (thousands of tokens at max_chars 12 000).
        sigma: lognormal shape (larger: heavier tail).
        max_chars: cap on one document, in characters.
        data: the shared data folder; None or a missing folder selects the synthetic generator.
    """
    rng = np.random.default_rng(seed)
    sentences = load_sentences(data) if data is not None and data.is_dir() else {}
    targets = target_lengths(rng, num_docs, median_chars, sigma, max_chars)
    langs = sorted(sentences) if sentences else sorted(SCRIPTS)
    texts, doc_langs = [], []
    for target in targets:
        lang = langs[int(rng.integers(len(langs)))]
        pool = sentences.get(lang)
        parts, size = [], 0
        i = int(rng.integers(len(pool))) if pool else 0
        while size < target:
            s = pool[i % len(pool)] if pool else synthetic_sentence(rng, lang)
            i += 1
            parts.append(s)
            size += len(s) + 1
        text = " ".join(parts)
        texts.append(text[: max(target, len(parts[0]))] if len(parts) > 1 else text)
        doc_langs.append(lang)
    return Corpus(texts, doc_langs, "shared" if sentences else "synthetic")
