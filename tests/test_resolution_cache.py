"""The driver's model resolution remembered across runs: same settings without loading the tokenizer, the log
records written again, a new resolution for any change of model files, config, library versions or code."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from pipeline import model_loading, resolution_cache
from pipeline.config import ModelConfig
from pipeline.resolution_cache import resolve_remembered


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / resolution_cache.FOLDER


@pytest.fixture
def tokenizer_loads(monkeypatch):
    """Counts the driver's tokenizer loads (the real ones run)."""
    seen = []
    real = model_loading.load_tokenizer

    def counting(cfg):
        seen.append(cfg.name_or_path)
        return real(cfg)

    monkeypatch.setattr(model_loading, "load_tokenizer", counting)
    return seen


@pytest.fixture
def bert(tiny_models, tmp_path):
    model = tmp_path / "bert"
    shutil.copytree(tiny_models["bert"], model)
    return model


def test_a_second_resolution_is_remembered_without_loading_the_tokenizer(bert, cache, tokenizer_loads, caplog):
    cfg = ModelConfig(name_or_path=str(bert), pooling="mean")  # max_tokens left at 32768: cut to the model's 512
    with caplog.at_level(logging.INFO):
        first, identity = resolve_remembered(cfg)
    assert tokenizer_loads == [str(bert)] and first.tokenizer is not None
    assert len(list(cache.glob("*.json"))) == 1
    said = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("pipeline.model")]
    assert any("using 512 tokens" in message for _, _, message in said)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        second, identity_again = resolve_remembered(cfg)
    assert tokenizer_loads == [str(bert)]  # not loaded again
    assert second.tokenizer is None and second.shipped_tokenizer is None  # the tokenizer actors load their own
    assert (second.model, second.metadata, second.padding) == (first.model, first.metadata, first.padding)
    assert second.model.max_tokens == 512 and identity_again == identity
    again = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("pipeline.model")]
    assert again == said  # the same warning, from the same logger, at the same level


def test_any_change_of_model_files_or_config_resolves_again(bert, cache, tokenizer_loads):
    cfg = ModelConfig(name_or_path=str(bert), pooling="mean")
    assert resolve_remembered(cfg)[0].model.max_tokens == 512
    assert resolve_remembered(cfg.model_copy(update={"max_tokens": 64}))[0].model.max_tokens == 64
    (bert / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert resolve_remembered(cfg)[0].model.max_tokens == 128  # a changed file is a new model
    assert len(tokenizer_loads) == 3
    resolve_remembered(cfg)
    assert len(tokenizer_loads) == 3
    # max_tokens set to its default value is not the default: honoured above the saved 128, not the cached 128
    explicit = ModelConfig(name_or_path=str(bert), pooling="mean", max_tokens=256)
    assert resolve_remembered(cfg.model_copy(update={"max_tokens": 256}))[0].model.max_tokens == 256
    default_256 = cfg.model_copy()
    object.__setattr__(default_256, "__pydantic_fields_set__", set(cfg.model_fields_set))
    default_256.__dict__["max_tokens"] = 256  # the same values, max_tokens not among the fields set
    assert default_256.model_dump() == explicit.model_dump()
    assert resolve_remembered(default_256)[0].model.max_tokens == 128


def test_other_library_versions_or_code_resolve_again(bert, cache, tokenizer_loads, monkeypatch):
    cfg = ModelConfig(name_or_path=str(bert), pooling="mean")
    resolve_remembered(cfg)
    real_version = resolution_cache.importlib.metadata.version
    monkeypatch.setattr(
        resolution_cache.importlib.metadata,
        "version",
        lambda name: "0.0.1" if name == "tokenizers" else real_version(name),
    )
    resolve_remembered(cfg)
    assert len(tokenizer_loads) == 2
    monkeypatch.setattr(resolution_cache, "code_digest", lambda: "other code")
    resolve_remembered(cfg)
    assert len(tokenizer_loads) == 3


@pytest.mark.parametrize("content", ["", "{", "[]", '{"max_tokens": "many"}', '{"max_tokens": 5}'])
def test_a_damaged_entry_is_resolved_again_and_replaced(bert, cache, tokenizer_loads, content):
    cfg = ModelConfig(name_or_path=str(bert), pooling="mean")
    first = resolve_remembered(cfg)[0]
    (entry,) = cache.glob("*.json")
    entry.write_text(content)
    again = resolve_remembered(cfg)[0]
    assert len(tokenizer_loads) == 2 and again.model == first.model and again.padding == first.padding
    assert resolve_remembered(cfg)[0].tokenizer is None  # the entry was written again


def test_remote_code_is_never_remembered(bert, cache, tokenizer_loads):
    cfg = ModelConfig(name_or_path=str(bert), pooling="mean", trust_remote_code=True)
    resolve_remembered(cfg)
    resolve_remembered(cfg)
    assert len(tokenizer_loads) == 2 and not cache.exists()


def test_an_unwritable_cache_only_costs_the_resolution(bert, tmp_path, monkeypatch, tokenizer_loads):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(blocker / "cache"))
    cfg = ModelConfig(name_or_path=str(bert), pooling="mean")
    assert resolve_remembered(cfg)[0].model.max_tokens == resolve_remembered(cfg)[0].model.max_tokens == 512
    assert len(tokenizer_loads) == 2


def test_a_failed_resolution_is_not_remembered(bert, cache):
    (bert / "tokenizer.json").write_text("{not json")
    cfg = ModelConfig(name_or_path=str(bert), pooling="mean")
    for _ in range(2):
        with pytest.raises(model_loading.ModelLoadError, match="cannot load the tokenizer"):
            resolve_remembered(cfg)
    assert not cache.exists() or not list(cache.glob("*.json"))


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "pooling"), [("qwen3", "last_token"), ("xlmr", "mean")])
def test_a_rerun_from_the_cache_writes_the_same_vectors(
    ray_session, tiny_models, tmp_path, cache, tokenizer_loads, arch, pooling
):
    """The cold run ships the driver's tokenizer to the tokenizer actors; the warm one lets them load their own and
    takes the padding, limit and EOS convention from the cache: the stored vectors and metadata must not differ."""
    import numpy as np
    import pyarrow.parquet as pq
    from conftest import SAMPLE

    from pipeline.config import EmbedConfig
    from pipeline.embed_job import run_embed

    def run(out: str) -> tuple[dict, np.ndarray, dict]:
        cfg = EmbedConfig.model_validate(
            {
                "input": {"uri": str(SAMPLE), "format": "jsonl"},
                "output": {"uri": str(tmp_path / out)},
                "model": {"name_or_path": str(tiny_models[arch]), "pooling": pooling, "max_tokens": 64},
                "batching": {"max_tokens_per_batch": 1024, "rows_per_block": 128},
            }
        )
        summary = run_embed(cfg)
        table = pq.read_table(tmp_path / out).sort_by("id")
        vectors = np.asarray(table.column("embedding").combine_chunks().values).reshape(table.num_rows, -1)
        metadata = {k: v for k, v in pq.read_schema(next((tmp_path / out).rglob("*.parquet"))).metadata.items()}
        return summary, vectors, metadata

    cold, cold_vectors, cold_metadata = run("cold")
    assert len(list(cache.glob("*.json"))) == 1
    warm, warm_vectors, warm_metadata = run("warm")
    assert len(tokenizer_loads) == 1  # the warm run did not load it on the driver
    assert warm["rows_embedded"] == cold["rows_embedded"] == 320
    assert warm["tokens"] == cold["tokens"] and warm["max_tokens"] == cold["max_tokens"] == 64
    np.testing.assert_array_equal(warm_vectors, cold_vectors)
    assert warm_metadata == cold_metadata


def test_a_rerun_ships_the_tokenizer_snapshot_of_the_first_run(bert, cache, tokenizer_loads):
    """The tokenizer actors of a rerun rebuild the tokenizer from the remembered snapshot (pipeline.tokenizer_snapshot)
    as those of the first run do; its backend (megabytes) is stored once for every config of the model."""
    first, _ = resolve_remembered(ModelConfig(name_or_path=str(bert), pooling="mean", max_tokens=64))
    second, _ = resolve_remembered(ModelConfig(name_or_path=str(bert), pooling="mean", max_tokens=64))
    other, _ = resolve_remembered(ModelConfig(name_or_path=str(bert), pooling="mean", max_tokens=32))
    assert tokenizer_loads == [str(bert), str(bert)]  # the third config is a new key: resolved again
    assert first.snapshot is not None and second.tokenizer is None
    assert second.snapshot == first.snapshot and second.snapshot.load() is not None
    assert len(list(cache.glob("*.json"))) == 2 and len(list((cache / resolution_cache.BACKENDS).iterdir())) == 1
    assert other.snapshot.backend == first.snapshot.backend


def test_a_missing_snapshot_backend_leaves_the_actors_to_load_the_tokenizer(bert, cache, tokenizer_loads):
    cfg = ModelConfig(name_or_path=str(bert), pooling="mean", max_tokens=64)
    first, _ = resolve_remembered(cfg)
    shutil.rmtree(cache / resolution_cache.BACKENDS)
    again, _ = resolve_remembered(cfg)
    assert tokenizer_loads == [str(bert)]  # the rest of the resolution is still remembered
    assert again.snapshot is None and (again.model, again.padding) == (first.model, first.padding)
