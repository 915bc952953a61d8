"""Tiny random-weight models of the real architectures, with a real tokenizer trained on the fly.

Saved to disk and loaded back through pipeline.model_loading, the same path a hub model takes.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModel,
    BartConfig,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    Gemma3TextConfig,
    ModernBertConfig,
    MPNetConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
    T5Config,
    T5Gemma2Config,
    XLMRobertaConfig,
    XLNetConfig,
    set_seed,
)

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages\nQuery: "


def train_tokenizer(texts: list[str], vocab_size: int = 2000) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def wrap(tok: Tokenizer, template: str, padding_side: str) -> PreTrainedTokenizerFast:
    """`template`: where the specials go, e.g. "<bos> $A" (Gemma-3) or "$A <eos>" (Qwen-3 embedding models)."""
    tok = Tokenizer.from_str(tok.to_str())
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, ids[s]) for s in SPECIALS if s in template]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side=padding_side,
        model_max_length=32768,
    )


T5GEMMA2_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
}

ARCHS = {
    # harrier-oss-v1-270m's family: Gemma-3 text decoder, BOS first
    "gemma3": (
        lambda v: Gemma3TextConfig(
            vocab_size=v,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=32768,
            sliding_window=32,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        ),
        "<bos> $A",
        "right",
    ),
    # harrier-oss-v1-0.6b's family: Qwen-3 decoder, EOS appended, left padding like Qwen3-Embedding
    "qwen3": (
        lambda v: Qwen3Config(
            vocab_size=v,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=32768,
            pad_token_id=0,
            eos_token_id=3,
        ),
        "$A <eos>",
        "left",
    ),
    # an encoder for mean/cls pooling
    "bert": (
        lambda v: BertConfig(
            vocab_size=v,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=512,
            pad_token_id=0,
        ),
        "<bos> $A <eos>",
        "right",
    ),
    # multilingual-e5-base/large and bge-m3's family: XLM-RoBERTa counts positions from padding_idx + 1, so its
    # 514 position embeddings hold 512 tokens (here pad is id 0, so positions start at 1 and 513 fit)
    "xlmr": (
        lambda v: XLMRobertaConfig(
            vocab_size=v,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=514,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        ),
        "<bos> $A <eos>",
        "right",
    ),
    # sentence-t5 and GTR's family: an encoder-decoder, of which sentence-transformers runs the encoder alone
    "t5": (
        lambda v: T5Config(
            vocab_size=v,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=3,
            decoder_start_token_id=0,
        ),
        "$A <eos>",
        "right",
    ),
    # an encoder-decoder that sentence-transformers runs whole (the decoder's states)
    "bart": (
        lambda v: BartConfig(
            vocab_size=v,
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            decoder_start_token_id=3,
        ),
        "<bos> $A <eos>",
        "right",
    ),
    # all-mpnet-base-v2's family: no SDPA support in transformers, so it loads with eager attention
    "mpnet": (
        lambda v: MPNetConfig(
            vocab_size=v,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=514,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        ),
        "<bos> $A <eos>",
        "right",
    ),
    # DeBERTa-v2/v3 (mDeBERTa): no SDPA support either
    "deberta-v2": (
        lambda v: DebertaV2Config(
            vocab_size=v,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=512,
            pad_token_id=0,
        ),
        "<bos> $A <eos>",
        "right",
    ),
    # distiluse / msmarco-distilbert: DistilBERT takes no token_type_ids
    "distilbert": (
        lambda v: DistilBertConfig(
            vocab_size=v, dim=64, hidden_dim=128, n_layers=2, n_heads=4, pad_token_id=0, max_position_embeddings=512
        ),
        "<bos> $A <eos>",
        "right",
    ),
    # gte-modernbert / modernbert-embed: local and global attention layers
    "modernbert": (
        lambda v: ModernBertConfig(
            vocab_size=v,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            cls_token_id=2,
            sep_token_id=3,
        ),
        "<bos> $A <eos>",
        "right",
    ),
    # XLNet: bidirectional without a masked-LM head; its tokenizer appends <sep> <cls> and pads on the left
    "xlnet": (
        lambda v: XLNetConfig(
            vocab_size=v, d_model=64, n_layer=2, n_head=2, d_inner=128, pad_token_id=0, bos_token_id=2, eos_token_id=3
        ),
        "$A <eos> <bos>",
        "left",
    ),
    # T5Gemma 2: an encoder-decoder whose encoder also takes images; the text widths nest under encoder.text_config
    "t5gemma2": (
        lambda v: T5Gemma2Config(
            encoder={
                "text_config": {**T5GEMMA2_TEXT, "vocab_size": v},
                "vision_config": {
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "image_size": 28,
                    "patch_size": 14,
                },
            },
            decoder={**T5GEMMA2_TEXT, "vocab_size": v},
            vocab_size=v,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        ),
        "<bos> $A <eos>",
        "right",
    ),
}


def build_model(out_dir: Path, arch: str, tokenizer: Tokenizer, seed: int = 0) -> Path:
    make_config, template, padding_side = ARCHS[arch]
    set_seed(seed)
    hf_tok = wrap(tokenizer, template, padding_side)
    model = AutoModel.from_config(make_config(len(hf_tok)))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    hf_tok.save_pretrained(out_dir)
    prompts = {"query": QUERY_PROMPT, "document": ""}
    (out_dir / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return out_dir
