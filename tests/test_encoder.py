"""Batched, padded, length-sorted embeddings equal a one-text-at-a-time unpadded reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import sample_texts
from pipeline.config import ModelConfig
from pipeline.encoder import Encoder
from pipeline.model_loading import ModelLoadError, load_model, load_tokenizer
from pipeline.pooling import pool

CASES = [
    ("gemma3", "last_token", "right"),
    ("gemma3", "last_token", "left"),
    ("qwen3", "last_token", "left"),
    ("qwen3", "last_token", "right"),
    ("bert", "mean", "right"),
    ("bert", "cls", "right"),
    ("gemma3", "mean", "left"),
]


def reference(model, ids: list[int], pooling: str) -> np.ndarray:
    """One row, no padding, no batching: the plain forward pass."""
    with torch.inference_mode():
        input_ids = torch.tensor([ids])
        mask = torch.ones_like(input_ids)
        hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        v = pool(hidden, mask, pooling)[0]
    return (v / v.norm()).numpy()


@pytest.mark.parametrize("arch, pooling, side", CASES)
def test_batched_equals_unpadded_reference(tiny_models, arch, pooling, side):
    cfg = ModelConfig(name_or_path=str(tiny_models[arch]), pooling=pooling, padding_side=side, max_tokens=128)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, torch.device("cpu"))
    texts = sample_texts()[::13]  # 25 texts of mixed lengths and scripts
    rows = tokenizer(texts, truncation=True, max_length=cfg.max_tokens)["input_ids"]
    values = np.concatenate([np.asarray(r) for r in rows])
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    encoder = Encoder(model, pooling, True, tokenizer.pad_token_id, side, max_tokens_per_batch=600, max_batch_size=16)
    got = encoder.encode(values, offsets)
    assert got.embeddings.shape == (len(texts), model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(got.embeddings, axis=1), 1.0, atol=1e-5)
    for i in range(len(texts)):
        cos = float(got.embeddings[i] @ reference(model, rows[i], pooling))
        assert cos >= 0.9999, f"row {i}: cosine {cos}"
    assert (got.computed_tokens >= np.diff(offsets)).all()


def test_weights_must_be_safetensors(tmp_path, tiny_models):
    model_dir = tmp_path / "no-weights"
    model_dir.mkdir()
    for f in tiny_models["qwen3"].iterdir():
        if f.suffix != ".safetensors":
            (model_dir / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelLoadError, match="no \\*.safetensors weights"):
        load_model(ModelConfig(name_or_path=str(model_dir)), torch.device("cpu"))
