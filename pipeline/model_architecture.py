"""Which transformer inside a loaded model rayembed runs: the encoder alone of some encoder-decoders, the text part of
multimodal configs. Light (no torch, no pydantic): the Encoder imports it, and so does the GPU bench, whose machine has
neither Ray nor pydantic.
"""

from __future__ import annotations

from typing import Any

# Encoder-decoder model types whose encoder alone sentence-transformers runs (its Transformer module loads
# T5EncoderModel, MarianEncoder and the like: sentence_transformers/base/modules/transformer.py, text models).
# Others, such as BART, it runs whole (the decoder's states, from decoder inputs shifted from the text), and so do we.
ENCODER_ONLY_MODEL_TYPES = frozenset(
    {
        "t5",
        "mt5",
        "umt5",
        "longt5",
        "switch_transformers",
        "prophetnet",
        "blenderbot",
        "blenderbot-small",
        "m2m_100",
        "pegasus",
        "pegasus_x",
        "marian",
        "t5gemma",
        "t5gemma2",
    }
)


def runs_encoder_only(config: object) -> bool:
    """Whether rayembed runs only the encoder of this model config (ENCODER_ONLY_MODEL_TYPES)."""
    return getattr(config, "model_type", None) in ENCODER_ONLY_MODEL_TYPES


def text_config(config: Any) -> Any:
    """The config of the text transformer rayembed runs, a transformers `PretrainedConfig`: the encoder's for an
    encoder-decoder it runs encoder-only (T5Gemma and T5Gemma2 nest it under `encoder`, T5Gemma2's text part once
    more under `encoder.text_config`); else transformers' own `get_text_config()`, which is a multimodal config's
    `text_config` and a text model's config itself. Its `hidden_size` is the width of the states pooled."""
    if runs_encoder_only(config) and getattr(config, "encoder", None) is not None:
        config = config.encoder
    return config.get_text_config() if hasattr(config, "get_text_config") else config
