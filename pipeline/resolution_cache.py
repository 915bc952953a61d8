"""The driver's model resolution, remembered across runs of the same model, so that a rerun does not load the
tokenizer on the driver before Ray Data may start.

pipeline.model_loading.resolve_model_settings loads the model's tokenizer and config on the driver to decide the
effective token limit, the EOS/BOS conventions and the padding (for multilingual-e5-small's 17 MB tokenizer.json
that is seconds of CPU before the dataset can start; docs/performance.md). Its result is a handful of numbers and
strings, a pure function of:

- the model's content: `model_identity` (the content hash of a local directory, the resolved hub commit);
- the model section of the config (`ModelConfig`, every field, and which fields were set rather than left at their
  default: an explicit `model.max_tokens` is honoured above the model's saved limit, a default one is cut to it);
- the installed `transformers` and `tokenizers` versions (read from their package metadata, no import);
- rayembed's own resolution code (the source of the modules that decide it, hashed).

So it is kept as one small JSON file per such key under the cache directory of pipeline.file_hashes
(`$RAYEMBED_CACHE_DIR`, else `$XDG_CACHE_HOME/rayembed`, else `~/.cache/rayembed`), in `resolved/`. A hit gives
ModelSettings without a tokenizer on the driver. The tokenizer's snapshot (pipeline.tokenizer_snapshot, which the
tokenizer actors rebuild the tokenizer from) is kept with it, its backend JSON (megabytes) in `resolved/tokenizers/`
named by its sha256, so several configs of one model share one file; without it the actors load their own. The log
records the resolution wrote (a token limit lowered to the model's, an EOS warning) are kept with it and written
again on a hit, so a rerun says what the first run said.

JSON only (never a pickle): a cache file someone else wrote can at worst give wrong settings, which the key makes
unlikely and which `RAYEMBED_CACHE_DIR` pointing elsewhere (or deleting the folder) clears. Models with
`trust_remote_code` are never cached: their tokenizer code may depend on more than the files hashed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import ModelConfig
from pipeline.file_hashes import cache_root, write_atomically
from pipeline.fingerprint import model_identity
from pipeline.model_loading import ModelSettings, TokenizerPadding, resolve_model_settings
from pipeline.tokenizer_snapshot import TokenizerSnapshot

log = logging.getLogger(__name__)

FOLDER = "resolved"
# Modules whose code decides the resolution: a change to any of them is a new key.
DECIDING_MODULES = (
    "model_loading",
    "model_limits",
    "model_defaults",
    "model_kinds",
    "tokenization",
    "tokenizer_snapshot",
    "prompts",
    "st_transformer_settings",
    "resolution_cache",
)
BACKENDS = "tokenizers"  # sub-folder of FOLDER: snapshot backends by content
PACKAGES = ("transformers", "tokenizers")


def resolve_remembered(model: ModelConfig) -> tuple[ModelSettings, dict[str, str]]:
    """(resolve_model_settings(model), model_identity(model)), the first from the cache when this model, config,
    library versions and code were resolved before.

    Raises what resolve_model_settings and model_identity raise (a model that cannot be loaded, ModelLoadError).
    """
    identity = model_identity(model)
    key = cache_key(model, identity)
    path = entry_path(key) if key else None
    if path is not None:
        remembered = read_entry(path, model)
        if remembered is not None:
            return remembered, identity
    records: list[logging.LogRecord] = []
    settings = recording_logs(lambda: resolve_model_settings(model), records)
    if path is not None:
        write_entry(path, settings, records)
    return settings, identity


def cache_key(model: ModelConfig, identity: dict[str, str]) -> str | None:
    """sha256 of everything the resolution depends on (module docstring); None where it must not be cached."""
    if model.trust_remote_code:
        return None
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    parts = {
        "identity": identity,
        "model": model.model_dump(mode="json"),
        "set": sorted(model.model_fields_set),
        "versions": versions,
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def code_digest() -> str:
    """sha256 over the source of DECIDING_MODULES (the files next to this one)."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in DECIDING_MODULES:
        digest.update(name.encode() + b"\0" + (here / f"{name}.py").read_bytes() + b"\0")
    return digest.hexdigest()


def entry_path(key: str) -> Path:
    return cache_root() / FOLDER / f"{key}.json"


def read_entry(path: Path, model: ModelConfig) -> ModelSettings | None:
    """The remembered settings with their log records written again; None where the file is missing, unreadable
    or not of this module's shape (then the model is resolved as on a first run)."""
    try:
        entry = json.loads(path.read_text())
        settings = ModelSettings(
            model.model_copy(update={"max_tokens": int(entry["max_tokens"])}),
            {str(k): str(v) for k, v in entry["metadata"].items()},
            None,
            TokenizerPadding(int(entry["padding"][0]), str(entry["padding"][1])),
            read_snapshot(path.parent, entry.get("snapshot")),
        )
        logs = [(str(name), int(level), str(message)) for name, level, message in entry["logs"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    for name, level, message in logs:
        logging.getLogger(name).log(level, "%s", message)
    log.debug("model resolution of %s from %s", model.name_or_path, path)
    return settings


def write_entry(path: Path, settings: ModelSettings, records: list[logging.LogRecord]) -> None:
    entry: dict[str, Any] = {
        "max_tokens": settings.model.max_tokens,
        "metadata": settings.metadata,
        "padding": list(settings.padding),
        "logs": [(r.name, r.levelno, r.getMessage()) for r in records],
    }
    try:
        if settings.snapshot is not None:
            entry["snapshot"] = write_snapshot(path.parent, settings.snapshot)
        write_atomically(path, json.dumps(entry, indent=1))  # concurrent runs of one model write the same content
    except OSError as err:  # a read-only home: resolving again next time is the only cost
        log.info("cannot record the model resolution in %s: %s", path, err)


def write_snapshot(folder: Path, snapshot: TokenizerSnapshot) -> dict[str, Any]:
    """Store the snapshot's backend by content under `folder`/BACKENDS; returns the entry's record of the rest.

    Raises OSError where the folder cannot be written."""
    digest = hashlib.sha256(snapshot.backend.encode()).hexdigest()
    backend = folder / BACKENDS / f"{digest}.json"
    if not backend.is_file():
        write_atomically(backend, snapshot.backend)
    return {"backend": digest, "init": snapshot.init, "expected": snapshot.expected}


def read_snapshot(folder: Path, record: dict[str, Any] | None) -> TokenizerSnapshot | None:
    """The snapshot an entry records; None where it records none, or its backend file is gone or no longer has the
    sha256 it is named by (altered since: the probe of TokenizerSnapshot.load sees a few hundred tokens, not the
    whole vocabulary, so an altered backend could pass it and tokenize other text differently)."""
    if not record:
        return None
    path = folder / BACKENDS / f"{record['backend']}.json"
    try:
        backend = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if hashlib.sha256(backend.encode()).hexdigest() != record["backend"]:
        log.warning("tokenizer snapshot %s does not match its sha256 (altered): the actors load the tokenizer", path)
        return None
    return TokenizerSnapshot(backend, dict(record["init"]), dict(record["expected"]))


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def recording_logs(work: Callable[[], ModelSettings], records: list[logging.LogRecord]) -> ModelSettings:
    """`work()`, collecting the records that the `pipeline` loggers write from this thread meanwhile (they still go
    where they went; the driver's main thread, starting Ray meanwhile, is not this one)."""
    thread = threading.get_ident()
    handler = _Collect(records)
    root = logging.getLogger("pipeline")
    root.addHandler(handler)
    try:
        return work()
    finally:
        root.removeHandler(handler)
        records[:] = [r for r in records if r.thread == thread]
