"""Load a Hugging Face model + tokenizer the same way for the hub and for a local directory."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import cached_file

from pipeline.config import ModelConfig
from pipeline.prompts import ST_CONFIG, named_prompts

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded or cannot serve the configured pooling."""


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pick_dtype(cfg: ModelConfig, device: torch.device, checkpoint_dtype: torch.dtype | None) -> torch.dtype:
    """'auto' is the checkpoint's own dtype on GPU and float32 on CPU (half precision on CPU is opt-in)."""
    if cfg.dtype != "auto":
        return DTYPES[cfg.dtype]
    if device.type == "cuda":
        if checkpoint_dtype in (torch.bfloat16, torch.float16):
            return checkpoint_dtype
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    warn_remote_code(cfg)
    tokenizer = AutoTokenizer.from_pretrained(
        cfg.name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
    )
    if cfg.padding_side != "auto":
        tokenizer.padding_side = cfg.padding_side
    if tokenizer.pad_token_id is None:
        # Decoder tokenizers often have no pad token; any id works because padded positions are masked out.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(f"tokenizer of {cfg.name_or_path} has no pad, eos or unk token to pad with")
    return tokenizer


def load_model(cfg: ModelConfig, device: torch.device) -> PreTrainedModel:
    """The transformer body (AutoModel, no LM head) in eval mode on `device`."""
    warn_remote_code(cfg)
    local = Path(cfg.name_or_path)
    if local.exists() and not any(local.glob("*.safetensors")):
        if not (cfg.allow_pickle_weights and any(local.glob("*.bin"))):
            raise ModelLoadError(
                f"{local} has no *.safetensors weights"
                + ("" if cfg.allow_pickle_weights else " (pickle .bin weights load only with model.allow_pickle_weights)")
            )
    config = AutoConfig.from_pretrained(cfg.name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    dtype = pick_dtype(cfg, device, getattr(config, "torch_dtype", None))
    try:
        model = AutoModel.from_pretrained(
            cfg.name_or_path,
            revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=None if cfg.allow_pickle_weights else True,
            dtype=dtype,
            attn_implementation=cfg.attn_implementation,
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load model {cfg.name_or_path}: {err}") from err
    return model.to(device).eval()


def load_prompts(cfg: ModelConfig) -> dict[str, str]:
    """The model's named prompts, from a local directory or the hub cache."""
    local = Path(cfg.name_or_path)
    if local.is_dir():
        return named_prompts(local)
    path = cached_file(cfg.name_or_path, ST_CONFIG, revision=cfg.revision, _raise_exceptions_for_missing_entries=False)
    return named_prompts(Path(path).parent) if path else {}


def warn_remote_code(cfg: ModelConfig) -> None:
    if cfg.trust_remote_code:
        log.warning("model.trust_remote_code is true: running code shipped with %s", cfg.name_or_path)
