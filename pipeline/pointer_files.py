"""Git LFS pointer files in a local model directory: the text stub a hub repo's large files are without git-lfs.

`git clone https://huggingface.co/...` on a machine without git-lfs (or with `GIT_LFS_SKIP_SMUDGE=1`) checks out
each large file (`model.safetensors`, a sharded checkpoint's parts, a big `tokenizer.json`, `sentencepiece.bpe.model`,
a Dense module's weights) as a ~130-byte text naming the real file's sha256 and size. Loaders then fail on it with
their own words ('Error while deserializing header: header too large', 'JSONDecodeError: Expecting value'), which
say nothing of the cause or of `git lfs pull`. Pure: no torch.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.model_files import model_paths

LFS_HEADER = b"version https://git-lfs.github.com/spec/"
POINTER_MAX_BYTES = 1024  # a pointer is ~130 bytes: version, oid, size lines (and optional extension lines)
NAMED = 5  # pointers a message names


def is_lfs_pointer(path: Path) -> bool:
    """Whether `path` is a Git LFS pointer: a small file starting with the LFS spec's version line. A file that
    cannot be read is not one (the loader names that error)."""
    try:
        if path.stat().st_size > POINTER_MAX_BYTES:
            return False
        with path.open("rb") as f:
            return f.read(len(LFS_HEADER)) == LFS_HEADER
    except OSError:
        return False


def lfs_pointers(folder: Path) -> list[str]:
    """The files below `folder` (as pipeline.model_files.model_paths lists them: hidden names left out, links
    followed) that are Git LFS pointers, as paths relative to `folder`, sorted."""
    return [str(p.relative_to(folder)) for p in model_paths(folder) if is_lfs_pointer(p)]


def pointer_message(folder: Path, pointers: list[str]) -> str:
    """What a refusal says about `pointers` (non-empty) of model directory `folder`."""
    more = f" and {len(pointers) - NAMED} more" if len(pointers) > NAMED else ""
    return (
        f"model directory {folder}: {', '.join(pointers[:NAMED])}{more} "
        f"{'is a Git LFS pointer' if len(pointers) == 1 else 'are Git LFS pointers'} (a ~130-byte text naming the "
        "file), not the file itself: the repository was cloned without git-lfs. Fetch the files: "
        "`git lfs install && git -C DIR lfs pull`, or `hf download REPO --local-dir DIR`"
    )
