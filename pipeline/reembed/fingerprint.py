"""The embedding fingerprint: everything that changes the vectors, hashed into the dataset version's name.

Two runs with the same fingerprint produce interchangeable vectors, so an unchanged input file can keep its old
outputs; any difference (new weights, another prompt, float16 storage, ...) starts a new version instead of
mixing incompatible vectors in one dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.config import EmbedConfig
from pipeline.fingerprint import model_identity
from pipeline.model_defaults import runs_shipped_code

FORMAT_VERSION = 1  # bump when the layout or the meaning of a manifest changes


def fingerprint_recipe(cfg: EmbedConfig, prompt: str) -> dict[str, Any]:
    """The inputs of the embedding function, as recorded in the manifest.

    `model.dtype: auto` is recorded as written: it means float32 on CPU and the checkpoint's half precision on
    GPU, so pin the dtype when a dataset may be extended on both kinds of workers.
    """
    m = cfg.model
    identity = model_identity(m)
    return {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        # A local directory is identified by its content, so moving it does not re-embed the corpus.
        "model": Path(m.name_or_path).name if identity["source"] == "local" else m.name_or_path,
        "model_identity": identity,
        "pooling": m.pooling,
        "normalize": m.normalize,
        "prompt": prompt,
        "max_tokens": m.max_tokens,
        "long_inputs": m.long_inputs,
        "chunk_overlap_tokens": m.chunk_overlap_tokens if m.long_inputs == "chunk" else None,
        "model_dtype": m.dtype,
        "output_dtype": cfg.output.dtype,
        "input_kind": cfg.input.kind,
        "text_column": cfg.input.text_column,
        "id_column": cfg.input.id_column,
        "keep_columns": list(cfg.output.keep_columns),
        # Matryoshka truncation (explicit, or the model's truncate_dim); absent when every dimension is kept, so a
        # version recorded before the key existed (when the job ignored output.dimensions) keeps its name
        **({"dimensions": cfg.output.dimensions} if cfg.output.dimensions is not None else {}),
        # num_tokens/truncated columns: absent when off, so versions recorded before the job honoured the key keep
        # their names; on, a new version (its files have two more columns)
        **({"token_columns": True} if cfg.output.token_columns else {}),
        # the model's own code runs (model.trust_remote_code on a model that ships code): other vectors, a new
        # version; absent otherwise, so the versions of every other model keep their names
        **({"trust_remote_code": True} if runs_shipped_code(m) else {}),
    }


def fingerprint_hash(recipe: dict[str, Any]) -> str:
    """16 hex digits of sha256 over the canonical JSON: short enough for a path, far from colliding."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
