"""The file names transformers' tokenizers give their SentencePiece models (`spiece.model`, `spm.model`, ...).

Taken from the tokenizer modules' `VOCAB_FILES_NAMES` / `vocab_files_names` dicts, read as source text rather than
imported: without the sentencepiece package several of those modules cannot be imported (Marian, M2M100, SigLIP,
Speech2Text) and the others' classes are placeholders without the attribute. Read only on the error path of a
tokenizer that fails to load (pipeline.model_loading.sentencepiece_hint).
"""

from __future__ import annotations

import ast
import functools

from pipeline.transformers_source import parsed, transformers_dir

# Names known before the lookup (T5, XLM-R, Llama / Mistral, Marian, RemBERT, DeBERTa-v2/v3 and mDeBERTa), kept
# should a transformers release move its tokenizer modules
KNOWN = (
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "source.spm",
    "target.spm",
    "sentencepiece.model",
    "spm.model",
    "spm_char.model",
)


@functools.cache
def sentencepiece_file_names() -> tuple[str, ...]:
    """Every vocabulary file name ending in `.model` or `.spm` that a transformers tokenizer module declares, with
    KNOWN first (the most common first); no duplicates."""
    names = dict.fromkeys(KNOWN)
    package = transformers_dir()
    for path in sorted((package / "models").glob("*/tokenization_*.py")) if package is not None else ():
        tree = parsed(path)
        if tree is None:
            continue
        for name in declared_files(tree):
            if name.endswith((".model", ".spm")):
                names.setdefault(name)
    return tuple(names)


def declared_files(tree: ast.AST) -> list[str]:
    """The string values of the dict literals assigned to VOCAB_FILES_NAMES or vocab_files_names in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        named = any(isinstance(t, ast.Name) and t.id in ("VOCAB_FILES_NAMES", "vocab_files_names") for t in targets)
        if named and isinstance(value, ast.Dict):
            found += [v.value for v in value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return found
