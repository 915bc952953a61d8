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
from pipeline.config import EmbedConfig, ModelConfig

FORMAT_VERSION = 1  # bump when the layout or the meaning of a manifest changes
HASH_CHUNK = 8 << 20


def model_identity(model: ModelConfig) -> dict[str, str]:
    """Pin the weights: the hub commit a revision resolves to, or a content hash of a local model directory.

    A branch name such as `main` moves; the resolved commit does not, so a model updated upstream under the same
    name yields a new fingerprint. Local directories have no commit, so their files are hashed (tokenizer and
    config included: they change the vectors too). That reads the weights once per run: ~1 s per GB.
    """
    local = Path(model.name_or_path)
    if local.is_dir():
        return {"source": "local", "sha256": hash_directory(local)}
    from transformers.utils import cached_file

    config_path = Path(cached_file(model.name_or_path, "config.json", revision=model.revision))
    parts = config_path.parts
    if "snapshots" not in parts:
        raise RuntimeError(f"cannot resolve the commit of {model.name_or_path}: {config_path} is not in a hub cache")
    return {"source": "hub", "commit": parts[parts.index("snapshots") + 1]}


def hash_directory(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


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
    }


def fingerprint_hash(recipe: dict[str, Any]) -> str:
    """16 hex digits of sha256 over the canonical JSON: short enough for a path, far from colliding."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
