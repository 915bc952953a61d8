"""pipeline.model_files: the workers load the model the run's fingerprint names (a local directory's files checked
where the weights are loaded, a hub commit pinned)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import pytest

from pipeline.actor_start import ActorStartError
from pipeline.actors import EmbedActor
from pipeline.config import ModelConfig
from pipeline.fingerprint import hash_directory, model_identity
from pipeline.model_files import ModelChangedError, ModelFiles, ModelUnreadableError, files_digest, held_to

sys.path.insert(0, str(Path(__file__).parent))
from robustness_helpers import make_config, run_without_root_powers


@pytest.fixture
def model_dir(tiny_models, tmp_path, monkeypatch):
    """A copy of the tiny BERT that a test may change, with its own hash cache."""
    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(tmp_path / "cache"))
    return Path(shutil.copytree(tiny_models["bert"], tmp_path / "model"))


def rewrite_keeping_size_and_mtime(path: Path) -> None:
    """New bytes, same size and mtime (a `cp -p` / `rsync -t` of other weights): only the ctime tells."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_files_are_those_of_the_directorys_content_hash_and_every_change_is_named(model_dir):
    files = ModelFiles.of(model_dir)
    assert files_digest(files.sha256) == hash_directory(model_dir) and "config.json" in files.sha256
    files.check("a test")  # nothing changed
    (model_dir / ".git").mkdir()
    (model_dir / ".git" / "FETCH_HEAD").write_text("x")  # hidden: not part of the model
    files.check("a test")
    rewrite_keeping_size_and_mtime(model_dir / "model.safetensors")
    (model_dir / "tokenizer_config.json").unlink()
    (model_dir / "added.json").write_text("{}")
    with pytest.raises(ModelChangedError) as err:
        files.check("an embedding actor on node-a")
    message = str(err.value)
    assert "model.safetensors (changed), tokenizer_config.json (gone), added.json (new)" in message
    assert f"model directory {model_dir} changed after this run hashed it" in message and "node-a" in message


def test_a_local_directory_changed_after_the_fingerprint_is_refused_before_any_actor_starts(model_dir):
    model = ModelConfig(name_or_path=str(model_dir))
    identity = model_identity(model)
    assert held_to(model, identity)[1].sha256 == ModelFiles.of(model_dir).sha256
    (model_dir / "config.json").write_text((model_dir / "config.json").read_text().replace("{", '{"x": 1, ', 1))
    with pytest.raises(ModelChangedError, match="changed after this run hashed it .*before any embedding actor"):
        held_to(model, identity)


def test_a_hub_model_is_loaded_by_the_workers_at_the_commit_the_driver_resolved():
    """A branch (`main`, or no revision) moved upstream during the run gave later actors other weights."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    model = ModelConfig(name_or_path="org/model", revision="main")
    pinned, files = held_to(model, {"source": "hub", "commit": commit})
    assert (pinned.revision, pinned.name_or_path, files) == (commit, "org/model", None)
    assert held_to(model, None) == (model, None)


def test_an_embedding_actor_refuses_weights_changed_since_the_driver_hashed_them(model_dir, tmp_path):
    """Weights replaced in place while a run goes on (a nightly sync at the hour of the run): an actor that started
    after it loaded them and embedded under the fingerprint of the old ones, without a word. Now it fails the job
    at its first call, naming the file (a UserError: no restarts, pipeline.actor_start)."""
    cfg = make_config(model_dir, tmp_path / "c.jsonl", tmp_path / "out", "jsonl")
    files = ModelFiles.of(model_dir)
    assert EmbedActor(cfg.model, cfg.batching, 1, "float32", model_files=files).start_failure is None
    rewrite_keeping_size_and_mtime(model_dir / "model.safetensors")
    actor = EmbedActor(cfg.model, cfg.batching, 1, "float32", model_files=files)
    with pytest.raises(ActorStartError, match=r"ModelChangedError: model directory .* \(model.safetensors \(changed\)"):
        actor(None)


def test_embed_stages_hold_the_actors_to_the_fingerprints_identity(model_dir, tmp_path, ray_session):
    """The job's own stage builder (shared by jobs.embed and jobs.reembed) pins and checks; before, it handed the
    actors the model config alone."""
    import ray

    from pipeline.embed_job import embed_stages
    from pipeline.resolution_cache import resolve_remembered

    cfg = make_config(model_dir, tmp_path / "c.jsonl", tmp_path / "out", "jsonl")
    settings, identity = resolve_remembered(cfg.model)
    ds = ray.data.from_items([{"x": 1}])
    embed_stages(ds, cfg, "", None, dataclasses.replace(settings, identity=identity))  # lazy: builds the plan only
    rewrite_keeping_size_and_mtime(model_dir / "config.json")
    with pytest.raises(ModelChangedError):
        embed_stages(ds, cfg, "", None, dataclasses.replace(settings, identity=identity))


def test_a_folder_linked_into_the_model_directory_is_part_of_its_files(model_dir, tmp_path):
    """A module or tokenizer folder linked in from a shared place (`2_Dense -> /shared/dense`) is loaded through the
    link, but Path.rglob does not enter a linked folder: its weights were in neither the identity nor the actors'
    check. Links are followed now; a link back into the directory (`self -> .`) is not entered again, and the hub
    cache's layout (snapshots/COMMIT/ of links into ../../blobs/) and a directory that is itself a link hash as the
    plain copy does."""
    plain = hash_directory(model_dir)
    hub = tmp_path / "models--org--m"
    snapshot = hub / "snapshots" / "c0ffee"
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir)
        if path.is_dir():
            (snapshot / rel).mkdir(parents=True, exist_ok=True)
            continue
        blob = hub / "blobs" / str(rel).replace("/", "__")
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, blob)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(os.path.relpath(blob, (snapshot / rel).parent))
    (tmp_path / "linked").symlink_to(model_dir)
    assert hash_directory(snapshot) == hash_directory(tmp_path / "linked") == plain

    shared = tmp_path / "shared" / "dense"
    shared.mkdir(parents=True)
    (shared / "config.json").write_text('{"out_features": 8}')
    (model_dir / "2_Dense").symlink_to(shared, target_is_directory=True)
    (model_dir / "self").symlink_to(".", target_is_directory=True)
    files = ModelFiles.of(model_dir)
    assert "2_Dense/config.json" in files.sha256 and not any(p.startswith("self/") for p in files.sha256)
    assert files_digest(files.sha256) == hash_directory(model_dir) != plain
    (shared / "config.json").write_text('{"out_features": 4}')
    with pytest.raises(ModelChangedError, match=r"2_Dense/config.json \(changed\)"):
        files.check("a test")


def test_a_hub_cache_below_a_folder_named_snapshots_gives_the_commit(tiny_models, tmp_path, monkeypatch):
    """`HF_HOME=/data/snapshots/hf`: the first `snapshots` of the path was taken, so the identity's commit was `hf`
    (every commit of the model the same identity) and the workers, held to that revision, found no such commit."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "snapshots" / "hf" / "hub"
    repo = cache / "models--acme--tiny-bert"
    shutil.copytree(tiny_models["bert"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    model = ModelConfig(name_or_path="acme/tiny-bert")
    identity = model_identity(model)
    assert identity == {"source": "hub", "commit": commit}
    pinned, _ = held_to(model, identity)
    from transformers.utils import cached_file

    assert Path(cached_file(pinned.name_or_path, "config.json", revision=pinned.revision)).is_file()


def test_folders_a_filesystem_or_nas_keeps_are_not_part_of_the_model(model_dir):
    """Synology's indexer adds `@eaDir/` beside files at any hour: a new file there stopped the run as a changed
    model (and gave a new re-embed version between runs); `lost+found/` at a volume's root is mode 700. Left out,
    as the input listing leaves them out (special_entries.system_folder)."""
    files = ModelFiles.of(model_dir)
    for folder in ("@eaDir/model.safetensors", "lost+found", "#recycle"):
        (model_dir / folder).mkdir(parents=True)
        (model_dir / folder / "SYNO@.fileindexdb").write_text("x")
    files.check("a test")
    assert hash_directory(model_dir) == files_digest(files.sha256)


def test_a_file_or_folder_of_the_model_the_user_may_not_read_is_named(model_dir):
    """A file the job's user may not read was a PermissionError traceback; a folder was skipped by Path.rglob
    without a word (its files not part of the identity). Both are named, with what to do."""

    call = (
        "from pathlib import Path; from pipeline.fingerprint import hash_directory\n"
        f"try: hash_directory(Path({str(model_dir)!r}))\n"
        "except Exception as e: print(type(e).__name__, e)"
    )

    def hashed() -> str:
        return run_without_root_powers(call).stdout

    locked = model_dir / "README.md"
    locked.write_text("card")
    locked.chmod(0o000)
    out = hashed()
    assert out.startswith(f"ModelUnreadableError model directory {model_dir}: {locked} is a file the job's user")
    assert "chmod -R a+rX" in out
    locked.chmod(0o644)
    (model_dir / "onnx").mkdir()
    (model_dir / "onnx" / "model.onnx").write_text("x")
    (model_dir / "onnx").chmod(0o000)
    try:
        assert f"{model_dir / 'onnx'} is a folder the job's user may not read" in hashed()
    finally:
        (model_dir / "onnx").chmod(0o755)


def test_code_a_model_runs_from_another_repo_is_part_of_its_identity(tiny_models, tmp_path, monkeypatch):
    """nomic-embed-text-v1's auto_map names `nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel`:
    with model.trust_remote_code, transformers runs that other repo's module at its `main`, which neither the
    model's commit nor a local directory's content hash pinned: code pushed there changed the vectors under the same
    identity. Its commit is part of the identity now (a hub model and a local directory alike); without
    trust_remote_code the code does not run and the identity is as before."""
    import json

    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(tmp_path / "cache"))

    def publish(repo: str, commit: str, files: dict[str, str]) -> Path:
        folder = cache / f"models--{repo.replace('/', '--')}"
        for name, text in files.items():
            (folder / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "snapshots" / commit / name).write_text(text)
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(commit)
        return folder / "snapshots" / commit

    local = Path(shutil.copytree(tiny_models["bert"], tmp_path / "model"))
    config = json.loads((local / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "acme/code--modeling_tiny.TinyModel"}
    (local / "config.json").write_text(json.dumps(config))
    hub = shutil.copytree(local, publish("acme/tiny", "a" * 40, {}), dirs_exist_ok=True)
    publish("acme/code", "c" * 40, {"modeling_tiny.py": "class TinyModel: pass\n"})
    for name in ("acme/tiny", str(local)):
        trusted = ModelConfig(name_or_path=name, trust_remote_code=True)
        before = model_identity(trusted)
        assert before["code"] == f"acme/code@{'c' * 40}"
        assert "code" not in model_identity(ModelConfig(name_or_path=name))
        publish("acme/code", "d" * 40, {"modeling_tiny.py": "class TinyModel: version = 2\n"})
        assert model_identity(trusted)["code"] == f"acme/code@{'d' * 40}"
        publish("acme/code", "c" * 40, {})  # refs/main back to the first commit
    assert hub.is_dir()


@pytest.mark.parametrize("target", ["../blobs/gone", "loop"])
def test_a_link_to_nothing_in_the_model_directory_is_named(model_dir, target):
    """A hub snapshot copied without its blobs, or a blob removed by a cache cleanup, leaves a link to nothing: it
    was left out of the identity and the loader took the file as missing without a word (a tokenizer built from
    vocab.txt instead of tokenizer.json). Named now, with what to do; a loop of links too."""
    link = model_dir / "tokenizer.json"
    link.unlink()
    link.symlink_to(target)
    if target == "loop":
        (model_dir / "loop").symlink_to("tokenizer.json")
    with pytest.raises(ModelUnreadableError, match=rf"{link} is a symbolic link to '{target}', which does not exist"):
        model_identity(ModelConfig(name_or_path=str(model_dir)))
