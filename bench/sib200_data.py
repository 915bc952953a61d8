"""SIB-200 loading, planted near-duplicates and cached multilingual-e5-small embeddings for the clustering benches.

Embeddings are cached under /tmp/rayembed-bench-cache (RAYEMBED_BENCH_CACHE): embedding 20 languages takes minutes
on a laptop CPU while the clustering runs take seconds.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch

SHARED = Path(os.environ.get("RAYEMBED_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SIB200 = SHARED / "data" / "sib200"
MODEL = (
    Path(os.environ.get("RAYEMBED_MODELS", Path(__file__).resolve().parents[1] / ".models")) / "multilingual-e5-small"
)
CACHE = Path(os.environ.get("RAYEMBED_BENCH_CACHE", "/tmp/rayembed-bench-cache"))


def available() -> str | None:
    """None when the data and model are there, else the reason to skip."""
    if not SIB200.is_dir():
        return f"SIB-200 not found at {SIB200} (set RAYEMBED_SHARED)"
    if not MODEL.is_dir():
        return f"model not found at {MODEL}: run shared/tools/get-models.sh .models"
    return None


def languages() -> list[str]:
    return sorted(p.name for p in SIB200.iterdir() if p.is_dir())


def load_sib200(lang: str) -> tuple[list[str], list[str], list[str]]:
    """(index_ids, categories, texts) over train+dev+test, sorted by index_id so languages line up row by row."""
    rows = []
    for split in ("train", "dev", "test"):
        with open(SIB200 / lang / f"{split}.tsv", newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows.sort(key=lambda r: int(r["index_id"]))
    return [r["index_id"] for r in rows], [r["category"] for r in rows], [r["text"] for r in rows]


def small_edit(text: str, rng: random.Random) -> str:
    """One or two surface edits a scraper or a copy-editor makes: drop/repeat a word, swap two, a typo, punctuation."""
    words = text.split()
    for _ in range(rng.choice([1, 2])):
        op = rng.choice(["drop", "swap", "typo", "punct", "case"])
        i = rng.randrange(len(words))
        if op == "drop" and len(words) > 4:
            del words[i]
        elif op == "swap" and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == "typo" and len(words[i]) > 3:
            w = words[i]
            j = rng.randrange(1, len(w) - 1)
            words[i] = w[:j] + rng.choice("aeioustnrl") + w[j + 1 :]
        elif op == "case":
            words[i] = words[i].upper() if rng.random() < 0.5 else words[i].lower()
        else:
            words[-1] = words[-1].rstrip(".!?") + rng.choice([" !", "...", ";", ""])
    return " ".join(words)


def embed(texts: list[str], prompt: str = "query: ", batch_tokens: int = 8192) -> np.ndarray:
    """Embed with the pipeline's own components (TextTokenizer + Encoder, mean pooling), cached on disk."""
    digest = hashlib.sha256(("\x00".join([prompt, str(MODEL)] + texts)).encode()).hexdigest()[:16]
    path = CACHE / f"e5small-{digest}.npy"
    if path.exists():
        return np.load(path)
    from pipeline.config import ModelConfig
    from pipeline.encoder import Encoder
    from pipeline.model_loading import load_model, load_tokenizer, pick_device
    from pipeline.tokenization import TextTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = ModelConfig(name_or_path=str(MODEL), pooling="mean", max_tokens=512, prompt=prompt)
    tok = load_tokenizer(cfg)
    ids = TextTokenizer(tok, prompt, cfg.max_tokens, "truncate", 0).encode(texts)
    lengths = np.array([len(i) for i in ids])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.fromiter((t for row in ids for t in row), dtype=np.int64, count=int(lengths.sum()))
    enc = Encoder(load_model(cfg, pick_device()), "mean", True, tok.pad_token_id, tok.padding_side, batch_tokens, 256)
    x = enc.encode(values, offsets).embeddings
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x
