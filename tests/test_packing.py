"""Padding-free packed batches: plans, packing and pooling by hand; packed == padded on real tiny decoders."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from test_encoder import tokenized_sample

from pipeline.config import ModelConfig
from pipeline.encoder import Encoder
from pipeline.model_loading import load_model, load_tokenizer
from pipeline.packing import pack_rows, plan_packed, pool_packed
from pipeline.pooling import POOLINGS, pool


def test_plan_packed_fills_the_budget_with_real_tokens_longest_first():
    lengths = np.array([3, 9, 4, 2, 12, 5])
    batches = plan_packed(lengths, max_tokens_per_batch=14, max_batch_size=8)
    assert [b.tolist() for b in batches] == [[4], [1, 5], [2, 0, 3]]  # sorted 12 9 5 4 3 2: 12 | 9+5 | 4+3+2
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))  # every row exactly once
    assert [b.tolist() for b in plan_packed(np.array([20, 1]), 8, 8)] == [[0], [1]]  # an over-budget row runs alone
    assert [len(b) for b in plan_packed(np.ones(5, dtype=np.int64), 100, 2)] == [2, 2, 1]  # max_batch_size caps rows


def test_pack_rows_lays_rows_end_to_end_with_positions_restarting():
    values = np.array([10, 11, 12, 20, 21, 30, 31, 32, 33])
    offsets = np.array([0, 3, 5, 9])
    ids, positions, starts, lengths = pack_rows(values, offsets, np.array([2, 0]))
    assert ids.tolist() == [[30, 31, 32, 33, 10, 11, 12]]
    assert positions.tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    assert (starts.tolist(), lengths.tolist()) == ([0, 4], [4, 3])


@pytest.mark.parametrize("skip", [0, 1])
@pytest.mark.parametrize("method", POOLINGS)
def test_pool_packed_equals_pool_over_the_padded_batch(method, skip):
    torch.manual_seed(0)
    lengths = [3, 1, 4]
    padded = torch.randn(3, 4, 5)
    mask = (torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]).long()
    packed = torch.cat([padded[i, :n] for i, n in enumerate(lengths)])  # (8, 5)
    starts = torch.tensor([0, 3, 4])
    got = pool_packed(packed, starts, torch.tensor(lengths), method, skip)
    torch.testing.assert_close(got, pool(padded, mask, method, skip))


def packed_and_padded(tiny_models, arch: str, pooling: str, attn: str = "sdpa", device: str = "cpu"):
    cfg = ModelConfig(name_or_path=str(tiny_models[arch]), pooling=pooling, max_tokens=128, attn_implementation=attn)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, torch.device(device))
    _, values, offsets = tokenized_sample(tokenizer)

    def encoder(packed: bool) -> Encoder:
        return Encoder(model, pooling, True, tokenizer.pad_token_id, "right", 600, 16, packed=packed)

    return encoder(True).encode(values, offsets), encoder(False).encode(values, offsets), np.diff(offsets)


@pytest.mark.parametrize(("arch", "pooling"), [("qwen3", "last_token"), ("gemma3", "last_token"), ("qwen3", "mean")])
def test_packed_batches_give_the_padded_batches_vectors_and_compute_no_padding(tiny_models, arch, pooling):
    """On CPU transformers turns the restarting position ids into a block-diagonal causal mask for SDPA: the same
    packing code path as FlashAttention-2 varlen on a GPU, checked against padded batches."""
    packed, padded, lengths = packed_and_padded(tiny_models, arch, pooling)
    cosine = np.sum(packed.embeddings * padded.embeddings, axis=1)
    assert cosine.min() >= 0.9999, f"min cosine {cosine.min()}"
    assert (packed.computed_tokens == lengths).all()  # padding efficiency 1.0
    assert (padded.computed_tokens >= lengths).all()


def test_only_a_causal_model_under_flash_attention_packs_by_default(tiny_models):
    cfg = ModelConfig(name_or_path=str(tiny_models["qwen3"]), max_tokens=128)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, torch.device("cpu"))
    assert model.config._attn_implementation == "sdpa"  # 'auto' on a machine without CUDA + flash_attn
    assert not Encoder(model, "last_token", True, tokenizer.pad_token_id, "right", 600, 16).packed


FLASH = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


@pytest.mark.gpu
@pytest.mark.skipif(
    not FLASH,
    reason="FlashAttention-2 varlen needs a CUDA GPU and the flash_attn package; here "
    f"cuda={torch.cuda.is_available()}, flash_attn={importlib.util.find_spec('flash_attn') is not None}",
)
@pytest.mark.parametrize("arch", ["qwen3", "gemma3"])
def test_flash_attention_varlen_packed_batches_equal_padded_batches(tiny_models, arch):
    packed, padded, lengths = packed_and_padded(tiny_models, arch, "last_token", "flash_attention_2", "cuda")
    cosine = np.sum(packed.embeddings * padded.embeddings, axis=1)
    assert cosine.min() >= 0.999, f"min cosine {cosine.min()}"
    assert (packed.computed_tokens == lengths).all()
