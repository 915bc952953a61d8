"""Model directory hashes: a file is read again only when its size, mtime, inode or ctime changed; no cache still
works."""

from __future__ import annotations

import os
import shutil

import pytest

from pipeline import file_hashes
from pipeline.fingerprint import hash_directory


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 1000)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "1_Pooling" / "config.json").write_text("{}")
    return folder


@pytest.fixture
def reads(monkeypatch):
    seen = []
    real = file_hashes.sha256_of

    def counting(path):
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(file_hashes, "sha256_of", counting)
    monkeypatch.setattr(file_hashes, "REMEMBERED", {})  # a fresh process: nothing hashed yet
    return seen


def test_unchanged_files_are_not_read_again(model_dir, reads):
    first = hash_directory(model_dir)
    assert sorted(reads) == ["config.json", "config.json", "model.safetensors"]
    reads.clear()
    assert hash_directory(model_dir) == first and reads == []


def test_same_size_new_content_changes_the_hash(model_dir, reads):
    first = hash_directory(model_dir)
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"v" * 1000)  # fine-tuned weights: same size, new content
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    reads.clear()
    assert hash_directory(model_dir) != first and reads == ["model.safetensors"]


def test_weights_rewritten_with_their_old_size_and_mtime_change_the_hash(model_dir, reads):
    """Fine-tuned weights copied over the old ones with `cp -p`/`rsync -t` from a copy whose mtime is the old one (or
    the mtime set back with `touch -r`): same size, same mtime, same inode (the copy writes into the file). The
    cache served the old hash, so the model's identity, hence a resume's fingerprint, did not change and a resumed
    run mixed the vectors of two models. The inode change time moves with the write (as git's index uses it)."""
    first = hash_directory(model_dir)
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"v" * 1000)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    reads.clear()
    assert hash_directory(model_dir) != first and reads == ["model.safetensors"]


def test_the_hash_is_the_content_not_the_cache(model_dir, tmp_path, monkeypatch):
    """A directory copied elsewhere (new paths, inodes, times) has the same hash; a renamed file changes it."""
    first = hash_directory(model_dir)
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(tmp_path / "other-cache"))
    assert hash_directory(copy) == first
    (copy / "config.json").rename(copy / "config2.json")
    assert hash_directory(copy) != first


def test_an_unwritable_cache_only_costs_rereading(model_dir, tmp_path, monkeypatch, reads):
    """Another process (REMEMBERED empty) reads every file again; this one does not: the driver hashes a model for
    the fingerprint and again to hold the actors to it (model_files.held_to), which read the weights twice."""
    from pipeline.config import ModelConfig
    from pipeline.fingerprint import model_identity
    from pipeline.model_files import held_to

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(blocker / "cache"))
    model = ModelConfig(name_or_path=str(model_dir))
    first = model_identity(model)
    assert len(reads) == 3
    reads.clear()
    assert held_to(model, first)[1] is not None and reads == []
    monkeypatch.setattr(file_hashes, "REMEMBERED", {})  # as in another process
    assert hash_directory(model_dir) == first["sha256"] and len(reads) == 3


@pytest.mark.parametrize("content", ["[]", "null", '"x"', '{"k": 1}', "{broken"])
def test_a_cache_that_is_not_a_table_of_hashes_is_ignored(model_dir, tmp_path, reads, content):
    """A cache file of another shape (hand-edited, another tool's, truncated) costs a re-read, not the run."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / file_hashes.CACHE_NAME).write_text(content)
    first = hash_directory(model_dir)
    assert len(reads) == 3
    reads.clear()
    assert hash_directory(model_dir) == first and reads == []  # and the cache was rewritten in shape


@pytest.mark.parametrize(
    "hidden",
    [
        ".git/FETCH_HEAD",  # rewritten by every `git pull` of a model cloned from the hub, new commit or not
        ".git/lfs/objects/ab/cd/abcd",  # git-lfs's own copy of the weights
        ".cache/huggingface/download/model.safetensors.metadata",  # `huggingface-cli download --local-dir`
        "1_Pooling/.ipynb_checkpoints/config-checkpoint.json",  # a hidden folder below a module folder
        "1_Pooling/.DS_Store",
    ],
)
def test_files_under_hidden_folders_are_not_part_of_the_model(model_dir, hidden):
    """Only `.` file names were left out: a file under `.git/` or `.cache/` gave the same weights a new identity, so a
    nightly `git pull` that changed nothing made the re-embed job write a whole new version, and refused a resume.
    A file the model does load still counts."""
    first = hash_directory(model_dir)
    path = model_dir / hidden
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("abc\tbranch 'main' of https://huggingface.co/org/model\n")
    assert hash_directory(model_dir) == first
    path.write_text("fetched again")
    assert hash_directory(model_dir) == first
    (model_dir / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert hash_directory(model_dir) != first
