"""A random-weight model with harrier-oss-v1-270m's exact Gemma-3 shape, for shape-faithful throughput numbers.

Compute per token depends on the shape alone, so random weights time the same as the real checkpoint (which needs
hub access). The tokenizer is a byte-level BPE trained on the benchmark corpus by tests/model_factory.py (the test
suite's own recipe), with Gemma's "<bos> $A" template: it needs no download, so the GPU machine can build it too.
Its ids all fall below the 262 144-row embedding table; only the tokens per text differ from Gemma's tokenizer,
which is why the benchmark reports tokens/s rather than texts/s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModel, Gemma3TextConfig, set_seed

from bench.corpus import DATA, build_corpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_factory import SPECIALS, train_tokenizer, wrap

VOCAB = 262_144
TOKENIZER_DOCS, TOKENIZER_SEED = 5000, 1  # a seed of its own: not the benchmark corpus (seed 0)


def harrier_config(pad_id: int, bos_id: int, eos_id: int, layers: int = 18) -> Gemma3TextConfig:
    """harrier-oss-v1-270m / gemma-3-270m: hidden 640, 4 heads of 256 sharing 1 KV head, MLP 2048."""
    return Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        max_position_embeddings=32_768,
        sliding_window=512,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )


def build_harrier_shape(out_dir: Path, layers: int = 18, tokenizer_vocab: int = 16_000) -> Path:
    """Save the model (float32 safetensors) and tokenizer to `out_dir`; reuse it when already built.

    The tokenizer is trained on a fixed 5000-document corpus rather than on the benchmark's own documents: a 16k
    vocabulary fitted to a few dozen documents would swallow whole phrases and shrink every text to a few tokens.

    Args:
        out_dir: destination directory.
        layers: 18 is harrier's; the CPU smoke test uses 2 to stay fast.
        tokenizer_vocab: BPE vocabulary size (capped by what the texts support).
    """
    marker = out_dir / "model.safetensors"
    if marker.is_file():
        return out_dir
    set_seed(0)
    texts = build_corpus(TOKENIZER_DOCS, seed=TOKENIZER_SEED, data=DATA).texts
    hf_tok = wrap(train_tokenizer(texts, vocab_size=tokenizer_vocab), "<bos> $A", "right")
    ids = {s: hf_tok.convert_tokens_to_ids(s) for s in SPECIALS}
    config = harrier_config(ids["<pad>"], ids["<bos>"], ids["<eos>"], layers)
    model = AutoModel.from_config(config, dtype=torch.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    hf_tok.save_pretrained(out_dir)
    (out_dir / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "", "document": ""}}))
    return out_dir
