"""Real pretrained models from ../shared/tools/get-models.sh, through the same loading path as a hub model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SAMPLE

from pipeline.config import ModelConfig
from pipeline.encoder import Encoder
from pipeline.model_defaults import resolve_pooling
from pipeline.model_loading import load_model, load_tokenizer
from pipeline.tokenization import TextTokenizer

pytestmark = pytest.mark.models
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def embed(cfg: ModelConfig, texts: list[str], prompt: str, budget: int = 4096) -> np.ndarray:
    tokenizer = load_tokenizer(cfg)
    rows = TextTokenizer(tokenizer, prompt, cfg.max_tokens, "truncate", 0).tokenize(texts).token_ids
    encoder = Encoder(
        load_model(cfg, torch.device("cpu")),
        resolve_pooling(cfg).pooling,
        cfg.normalize,
        tokenizer.pad_token_id,
        tokenizer.padding_side,
        max_tokens_per_batch=budget,
        max_batch_size=64,
    )
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    return encoder.encode(np.concatenate([np.asarray(r) for r in rows]), offsets).embeddings


def by_lang(lang: str) -> dict[str, str]:
    return {r["id"].split("-", 1)[1]: r["text"] for r in RECORDS if r["lang"] == lang}


@pytest.mark.parametrize("lang", ["fra_Latn", "zho_Hans"])
def test_e5_mean_pooling_finds_translations(real_model_dir, lang):
    cfg = ModelConfig(name_or_path=str(real_model_dir("multilingual-e5-small")), pooling="mean", max_tokens=512)
    eng, other = by_lang("eng_Latn"), by_lang(lang)
    keys = sorted(eng)
    a = embed(cfg, [eng[k] for k in keys], "query: ")
    b = embed(cfg, [other[k] for k in keys], "query: ")
    accuracy = float(np.mean(np.argmax(a @ b.T, axis=1) == np.arange(len(keys))))
    assert accuracy >= 0.9, f"eng->{lang} top-1 accuracy {accuracy}"


def test_real_decoder_batched_equals_one_at_a_time(real_model_dir):
    cfg = ModelConfig(name_or_path=str(real_model_dir("smollm2-135m")), max_tokens=128, padding_side="left")
    texts = [r["text"] for r in RECORDS[::80]]
    batched = embed(cfg, texts, "")
    single = np.stack([embed(cfg, [t], "")[0] for t in texts])
    cosines = np.sum(batched * single, axis=1)
    assert cosines.min() >= 0.9999, cosines
