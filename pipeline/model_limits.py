"""The longest row a model can take, decided once on the driver from everything the model directory says.

`model.max_tokens` defaults to 32,768 (harrier's context); an encoder such as multilingual-e5 has 512 positions, and a
longer row fails inside the model (`expanded size (2702) must match (512)`) after every retry. Left at its default,
the effective limit is the smallest of: 32,768; sentence-transformers' `max_seq_length` (sentence_bert_config.json,
what sentence-transformers itself truncates at: it gives it to the tokenizer as its `model_max_length`, longer or
shorter than the tokenizer's own), else the tokenizer's `model_max_length` (unless it is transformers' "no limit"
sentinel), both replaced by a `model_max_length` among that file's tokenizer kwargs (`processor_kwargs` /
`tokenizer_args`), which sentence-transformers gives the tokenizer instead; and the model config's
`max_position_embeddings` net of the positions a RoBERTa-family model reserves (its positions start at
`padding_idx + 1`, so 514 embeddings hold 512 tokens). Chunk windows are cut to the same limit.

An explicit `model.max_tokens` is what sentence-transformers' `model.max_seq_length = N` is: it is honoured above
the length the model's files save (the trained length; a warning names it) up to the positions; above the positions
(where an absolute-position model fails on every long row) it is cut to the model's own limit, as when left out,
with a warning naming both numbers, so a config written for a longer-context model keeps working.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import ModelConfig
from pipeline.errors import UserError
from pipeline.model_architecture import text_config
from pipeline.model_defaults import model_file
from pipeline.st_transformer_settings import tokenizer_max_length

if TYPE_CHECKING:  # the driver imports this module before Ray starts: transformers (and torch) load where used
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# transformers writes int(1e30) (VERY_LARGE_INTEGER) as model_max_length when a tokenizer declares no limit.
NO_LIMIT = 10**18
# Model types whose position ids start at padding_idx + 1 (transformers' create_position_ids_from_input_ids), so
# max_position_embeddings holds that many tokens fewer. Checked against each class: test_model_limits runs every
# text-only one at its computed limit and one token past it.
PADDING_OFFSET_TYPES = frozenset(
    {
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "longformer",
        "mpnet",
        "data2vec-text",
        "ibert",
        "roberta-prelayernorm",
        "markuplm",
        "lilt",
        "xmod",
        "luke",
        "esm",
    }
)
# Classes whose padding_idx is fixed in their code, not read from the config's pad_token_id (MPNetEmbeddings: 1).
FIXED_PADDING_IDX = {"mpnet": 1}
# Types whose position table exists only with absolute position embeddings (ESM-2's rotary ones have none).
ABSOLUTE_ONLY = frozenset({"esm"})


class ModelLimitError(UserError, ValueError):
    """The effective token limit leaves no room for the configured chunk overlap or prompt."""


@dataclass(frozen=True)
class TokenLimit:
    """The effective limit and each source's value (for the log line and the output metadata); `replaced`: sources
    recorded that do not decide (the tokenizer's model_max_length where sentence_bert_config.json's max_seq_length
    replaces it, as in sentence-transformers)."""

    effective: int
    sources: dict[str, int]
    replaced: frozenset[str] = frozenset()

    def describe(self) -> str:
        return ", ".join(
            f"{k} {v}{' (replaced by max_seq_length)' if k in self.replaced else ''}" for k, v in self.sources.items()
        )


def position_limit(config: PretrainedConfig) -> tuple[str, int] | None:
    """(description, tokens) from max_position_embeddings (or n_positions) of the text transformer rayembed runs
    (model_architecture.text_config: a multimodal or T5Gemma2 config nests it), net of a padding_idx offset."""
    config = text_config(config)
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    model_type = getattr(config, "model_type", None)
    padding_idx = FIXED_PADDING_IDX.get(model_type, getattr(config, "pad_token_id", None))
    absolute = model_type not in ABSOLUTE_ONLY or getattr(config, "position_embedding_type", None) == "absolute"
    if model_type in PADDING_OFFSET_TYPES and padding_idx is not None and absolute:
        offset = int(padding_idx) + 1
        return (
            f"max_position_embeddings {positions} - {offset} (positions start at padding_idx + 1)",
            positions - offset,
        )
    return "max_position_embeddings", positions


def token_limit(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> TokenLimit:
    """The effective max tokens (module docstring): an explicit model.max_tokens as given, else the minimum over it
    and the model's own limits. `sources` holds every limit read, whichever decides."""
    sources = {"model.max_tokens": cfg.max_tokens}
    st_path = model_file(cfg, "sentence_bert_config.json")
    st_settings = json.loads(st_path.read_text()) if st_path is not None else {}
    st_max = tokenizer_max_length(st_settings)
    seq = st_settings.get("max_seq_length")
    if st_max is not None:  # sentence-transformers gives it to the tokenizer instead of max_seq_length
        sources["sentence_bert_config.json tokenizer kwargs model_max_length"] = st_max
    elif isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
        sources["sentence_bert_config.json max_seq_length"] = seq
    model_max = getattr(tokenizer, "model_max_length", None)
    if st_max is None and isinstance(model_max, int) and 0 < model_max < NO_LIMIT:
        sources["tokenizer model_max_length"] = model_max
    # sentence-transformers gives max_seq_length to the tokenizer as its model_max_length, longer or shorter than the
    # tokenizer's own (nomic-embed-text-v1: 8192 over the tokenizer's 512): the tokenizer's is recorded, not used
    replaced = frozenset(
        {"tokenizer model_max_length"} & sources.keys() if "sentence_bert_config.json max_seq_length" in sources else ()
    )
    positions = position_limit(config)
    if positions is not None:
        sources[positions[0]] = positions[1]
    within = all(cfg.max_tokens <= v for k, v in sources.items() if is_position_limit(k))
    if explicit_max_tokens(cfg) and within:  # sentence-transformers' max_seq_length = N: N, up to the positions
        return TokenLimit(cfg.max_tokens, sources, replaced)
    return TokenLimit(min(v for k, v in sources.items() if k not in replaced), sources, replaced)


def explicit_max_tokens(cfg: ModelConfig) -> bool:
    """model.max_tokens was set (in the YAML or by --set), not left at its default."""
    return "max_tokens" in cfg.model_fields_set


def is_position_limit(name: str) -> bool:
    return name.startswith(("max_position", "n_positions"))


def saved_limits(limit: TokenLimit) -> dict[str, int]:
    """The limits the model's files save (its trained length): every source but the config, the positions and a
    replaced one."""
    return {
        k: v
        for k, v in limit.sources.items()
        if k != "model.max_tokens" and not is_position_limit(k) and k not in limit.replaced
    }


def apply_token_limit(cfg: ModelConfig, limit: TokenLimit) -> ModelConfig:
    """`cfg` with max_tokens set to the effective limit; logs the decision: an info line when the default was cut to
    the model's limit, a warning when an explicit value passes the length the model's files save (the trained
    length).

    Raises:
        ModelLimitError: chunk mode and the overlap is not below half the effective limit.
    """
    positions = {k: v for k, v in limit.sources.items() if is_position_limit(k) and v < cfg.max_tokens}
    if explicit_max_tokens(cfg) and positions:
        # above the positions every long row would fail in the model: the model's own limit, as when left out (a
        # config written for a longer-context model, or `config show`'s dump of the default, keeps working)
        name, tokens = min(positions.items(), key=lambda item: item[1])
        log.warning(
            "model.max_tokens (%d) is above the %d positions of model %s (%s): using %d tokens, the model's own "
            "limit (%s); set model.max_tokens to at most %d to embed past the length its files save",
            cfg.max_tokens,
            tokens,
            cfg.name_or_path,
            name,
            limit.effective,
            limit.describe(),
            tokens,
        )
    elif explicit_max_tokens(cfg):
        saved = {k: v for k, v in saved_limits(limit).items() if v < cfg.max_tokens}
        if saved:
            log.warning(
                "model.max_tokens: using %d tokens, above the length the model's files save (%s): sentence-"
                "transformers' max_seq_length set so is honoured too, but the model may not have been trained on "
                "rows that long (its vectors for them can be worse); leave model.max_tokens out to use %d",
                cfg.max_tokens,
                ", ".join(f"{k} {v}" for k, v in saved.items()),
                min(saved.values()),
            )
        else:
            log.info("model.max_tokens: %d tokens (%s)", limit.effective, limit.describe())
    elif limit.effective < cfg.max_tokens:
        log.info("model.max_tokens: using %d tokens, the model's limit (%s)", limit.effective, limit.describe())
    else:
        log.info("model.max_tokens: %d tokens (%s)", limit.effective, limit.describe())
    if cfg.long_inputs == "chunk" and cfg.chunk_overlap_tokens >= limit.effective // 2:
        raise ModelLimitError(
            f"model.chunk_overlap_tokens ({cfg.chunk_overlap_tokens}) must be below half of the model's effective "
            f"token limit {limit.effective} ({limit.describe()}); lower the overlap"
        )
    return cfg.model_copy(update={"max_tokens": limit.effective})
