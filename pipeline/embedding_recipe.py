"""Which model and settings made the vectors of an embeddings file, and whether two files' vectors are comparable.

The embed job writes its recipe into every file's Parquet metadata (`rayembed.model`, `rayembed.pooling`, ...:
pipeline.writing.embedding_metadata). Vectors of two models, or of one model with another pooling or prompt, live in
different spaces even when their widths agree (e5-small and MiniLM are both 384 wide): mixed in one input, their
cosines, margins and clusters mean nothing, and no error would say so. So the cluster and mining jobs compare the
recipe of every file they read and refuse a mix, naming two files and what differs.

Compared (RECIPE_KEYS): the model (by its name without its folder, so `.models/e5`, `/abs/.models/e5` and
`intfloat/e5` are one), its revision (when both files name one; '' and 'main' name none), the pooling (`auto`, which
does not say which, matches any) and the prompt. Not compared, because they leave the vectors comparable: the stored
dtype (float16 or float32 storage of one vector), `normalized` (both jobs make every vector unit length),
`max_tokens`, `long_inputs`, the rayembed version, the input's format. The width is checked separately, from the
vectors. A file without rayembed metadata (another tool's: TEI, sentence-transformers, LanceDB exports) has no recipe
and is compared with nothing.

Pure Python: no pyarrow, numpy or Ray.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.columns import METADATA_PREFIX

RECIPE_KEYS = ("model", "revision", "pooling", "prompt")
NO_REVISION = ("", "main")  # the default branch: names no revision
ANY_POOLING = ("", "auto")  # a recipe that does not say which pooling ran


def file_recipe(metadata: Mapping | None) -> dict[str, str] | None:
    """The recipe of a file from its Parquet schema metadata (keys and values as bytes or str, `rayembed.` prefixed
    or not); None when it holds no `rayembed.model` (another tool's file)."""
    entries = {}
    for key, value in (metadata or {}).items():
        key = key.decode() if isinstance(key, bytes) else str(key)
        value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        entries[key.removeprefix(METADATA_PREFIX)] = value
    if not entries.get("model"):
        return None
    return {key: entries.get(key, "") for key in RECIPE_KEYS}


def model_name(name: str) -> str:
    """A model's name without the folder holding it: `.models/multilingual-e5-small/` and
    `intfloat/multilingual-e5-small` are both 'multilingual-e5-small' (case kept: hub names are case-insensitive but
    a local folder need not be)."""
    return posixpath.basename(name.replace("\\", "/").rstrip("/")) or name


def differences(a: Mapping[str, str], b: Mapping[str, str], keys: Iterable[str] = RECIPE_KEYS) -> list[str]:
    """The recipe keys (of `keys`) in which two recipes make incomparable vectors, in RECIPE_KEYS order."""
    out = []
    for key in keys:
        x, y = a.get(key, ""), b.get(key, "")
        if key == "model":
            same = model_name(x).casefold() == model_name(y).casefold()
        elif key == "revision":
            same = x in NO_REVISION or y in NO_REVISION or x == y
        elif key == "pooling":
            same = x in ANY_POOLING or y in ANY_POOLING or x == y
        else:
            same = x == y
        if not same:
            out.append(key)
    return out


def describe(recipe: Mapping[str, str]) -> str:
    """'model .models/e5, pooling mean, prompt 'query: '' (revision when it names one)."""
    parts = [f"model {recipe.get('model')}"]
    if recipe.get("revision", "") not in NO_REVISION:
        parts.append(f"revision {recipe['revision']}")
    parts.append(f"pooling {recipe.get('pooling') or '(not recorded)'}")
    parts.append(f"prompt {recipe.get('prompt', '')!r}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Conflict:
    """Two files of one input whose vectors are not comparable."""

    first: str  # the first file with a recipe, in listing order
    first_recipe: dict[str, str]
    other: str  # the first later file whose recipe differs from it
    other_recipe: dict[str, str]
    keys: list[str]  # what differs
    files_like_other: int  # files whose recipe differs from the first's like `other`'s does (other included)
    files_unrecorded: int  # files without rayembed metadata (compared with nothing)

    def message(self, what: str, fix: str) -> str:
        """The error: `what` names the input (its key and URI), `fix` what to do."""
        shown = "; ".join(
            f"{key}: {self.first_recipe.get(key)!r} vs {self.other_recipe.get(key)!r}" for key in self.keys
        )
        more = f" ({self.files_like_other} files differ from the first so)" if self.files_like_other > 1 else ""
        return (
            f"{what} mixes embeddings of different recipes ({shown}): {self.first} has {describe(self.first_recipe)}, "
            f"but {self.other} has {describe(self.other_recipe)}{more}. Vectors of another model, pooling or prompt "
            f"are not comparable, even at one width: their cosines would be meaningless. {fix}"
        )


def first_conflict(recipes: Iterable[tuple[str, dict[str, str] | None]]) -> Conflict | None:
    """The first file, in the given (listing) order, whose recipe differs from the first recorded one; None when all
    recorded recipes agree. `recipes`: (file, file_recipe) pairs; files with None are compared with nothing."""
    base: tuple[str, dict[str, str]] | None = None
    found: tuple[str, dict[str, str], list[str]] | None = None
    like, unrecorded = 0, 0
    for file, recipe in recipes:
        if recipe is None:
            unrecorded += 1
            continue
        if base is None:
            base = (file, recipe)
            continue
        keys = differences(base[1], recipe)
        if keys:
            found = found or (file, recipe, keys)
            like += 1
    if base is None or found is None:
        return None
    return Conflict(base[0], base[1], found[0], found[1], found[2], like, unrecorded)


def known(recipes: Iterable[dict[str, str] | None]) -> dict[str, str] | None:
    """The first recorded recipe (the one every other recorded recipe agrees with, after first_conflict)."""
    return next((r for r in recipes if r is not None), None)
