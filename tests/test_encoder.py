"""Batched, padded, length-sorted embeddings equal a one-text-at-a-time unpadded reference."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sample_texts
from transformers import AutoModel, Gemma3TextConfig

from pipeline.config import ModelConfig
from pipeline.encoder import Encoder, attends_causally
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
    ("qwen3", "mean", "right"),
]


def reference(model, ids: list[int], pooling: str) -> np.ndarray:
    """One row, no padding, no batching: the plain forward pass."""
    with torch.inference_mode():
        input_ids = torch.tensor([ids])
        mask = torch.ones_like(input_ids)
        hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        v = pool(hidden, mask, pooling)[0]
    return (v / v.norm()).numpy()


def tokenized_sample(tokenizer, max_tokens: int = 128) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    texts = sample_texts()[::13]  # 25 texts of mixed lengths and scripts
    rows = tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    values = np.concatenate([np.asarray(r) for r in rows])
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    return rows, values, offsets


@pytest.mark.parametrize("arch, pooling, side", CASES)
def test_batched_equals_unpadded_reference(tiny_models, arch, pooling, side):
    cfg = ModelConfig(name_or_path=str(tiny_models[arch]), pooling=pooling, padding_side=side, max_tokens=128)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, torch.device("cpu"))
    rows, values, offsets = tokenized_sample(tokenizer)
    encoder = Encoder(model, pooling, True, tokenizer.pad_token_id, side, max_tokens_per_batch=600, max_batch_size=16)
    # The padding mask is left out of attention exactly for causal models padded on the right.
    assert encoder.mask_to_model == (arch == "bert" or side == "left")
    got = encoder.encode(values, offsets)
    assert got.embeddings.shape == (len(rows), model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(got.embeddings, axis=1), 1.0, atol=1e-5)
    for i in range(len(rows)):
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


def test_causal_probe_tells_decoder_from_bidirectional_attention(tiny_models):
    def probe(model) -> bool:
        return attends_causally(model.eval(), torch.device("cpu"))

    assert probe(load_model(ModelConfig(name_or_path=str(tiny_models["qwen3"])), torch.device("cpu")))
    assert not probe(
        load_model(ModelConfig(name_or_path=str(tiny_models["bert"]), pooling="mean"), torch.device("cpu"))
    )
    # Same Gemma-3 architecture, bidirectional attention (as in EmbeddingGemma): the name alone would mislead.
    shape = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    shape.update(num_key_value_heads=1, head_dim=16)
    assert probe(AutoModel.from_config(Gemma3TextConfig(**shape)))
    assert not probe(AutoModel.from_config(Gemma3TextConfig(**shape, use_bidirectional_attention=True)))


def can_compile_on_cpu() -> bool:
    """torch.compile's CPU backend builds C++ against Python's headers at run time."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return bool(shutil.which("c++") or shutil.which("g++")) and headers.is_file()


@pytest.mark.skipif(not can_compile_on_cpu(), reason="torch.compile on CPU needs a C++ compiler and Python.h")
def test_compiled_model_gives_the_same_embeddings(tiny_models):
    cfg = ModelConfig(name_or_path=str(tiny_models["gemma3"]), max_tokens=128)
    tokenizer = load_tokenizer(cfg)
    _, values, offsets = tokenized_sample(tokenizer)

    def embed(model) -> np.ndarray:
        encoder = Encoder(model, "last_token", True, tokenizer.pad_token_id, "right", 600, 16)
        return encoder.encode(values, offsets).embeddings

    eager = embed(load_model(cfg, torch.device("cpu")))
    compiled_model = load_model(cfg.model_copy(update={"compile": True}), torch.device("cpu"))
    assert hasattr(compiled_model, "_orig_mod")  # really a torch.compile wrapper
    compiled = embed(compiled_model)
    assert np.min(np.sum(eager * compiled, axis=1)) >= 0.9999
