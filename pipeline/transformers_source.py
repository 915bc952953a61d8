"""transformers' own source files, found and parsed without importing transformers.

Some of what rayembed needs to know about transformers is written as literals in its modules (the auto-model name
tables: pipeline.auto_tables; the tokenizers' vocabulary file names: pipeline.sentencepiece_files), and importing those
modules costs torch (the auto tables) or fails without an optional package (sentencepiece tokenizers).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def transformers_dir() -> Path | None:
    """The installed transformers package's folder, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec("transformers")
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def parsed(path: Path) -> ast.Module | None:
    """The module at `path` parsed (not run); None when it cannot be read or parsed."""
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
