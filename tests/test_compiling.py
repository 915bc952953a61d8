"""model.compile: regional torch.compile of the repeated blocks, applied after the load-time probes, same vectors as
eager, and a compile that fails puts the model back to eager instead of failing the job."""

from __future__ import annotations

import logging
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sample_texts
from model_factory import build_model, train_tokenizer
from test_encoder import Wrapped, poisoned_sample, tokenized_sample

from pipeline.compiling import OptimizedModule, compile_model, repeated_blocks, uncompiled, wants_compile
from pipeline.config import ConfigError, EmbedConfig, ModelConfig, load_config
from pipeline.encoder import Encoder
from pipeline.model_loading import load_model, load_tokenizer


def can_compile_on_cpu() -> bool:
    """torch.compile's CPU backend builds C++ against Python's headers at run time."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return bool(shutil.which("c++") or shutil.which("g++")) and headers.is_file()


needs_cpu_compiler = pytest.mark.skipif(not can_compile_on_cpu(), reason="torch.compile on CPU needs c++ and Python.h")


def loaded(tiny_models, arch: str, **model):
    cfg = ModelConfig(name_or_path=str(tiny_models[arch]), max_tokens=128, **model)
    return load_tokenizer(cfg), load_model(cfg, torch.device("cpu"))


def test_auto_compiles_on_cuda_devices_only():
    assert wants_compile("auto", torch.device("cuda", 0)) and not wants_compile("auto", torch.device("cpu"))
    assert wants_compile(True, torch.device("cpu")) and not wants_compile(False, torch.device("cuda"))


@pytest.mark.parametrize(
    "arch, block", [("gemma3", "Gemma3DecoderLayer"), ("qwen3", "Qwen3DecoderLayer"), ("bert", "BertLayer")]
)
def test_the_blocks_compiled_are_the_models_repeated_layers_and_uncompiling_restores_them(tiny_models, arch, block):
    _, model = loaded(tiny_models, arch)
    before = dict(model.named_parameters())
    blocks = repeated_blocks(model)
    assert [type(b).__name__ for _, _, b in blocks] == [block] * model.config.num_hidden_layers
    assert compile_model(model) is model  # in place
    wrapped = [m for m in model.modules() if isinstance(m, OptimizedModule)]
    assert len(wrapped) == len(blocks)
    assert uncompiled(model) is model
    assert not any(isinstance(m, OptimizedModule) for m in model.modules())
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_a_model_that_names_no_blocks_is_compiled_whole(tiny_models):
    _, model = loaded(tiny_models, "bert")
    model._no_split_modules = None  # an architecture without the list (custom code)
    compiled = compile_model(model)
    assert isinstance(compiled, OptimizedModule) and uncompiled(compiled) is model


@needs_cpu_compiler
@pytest.mark.parametrize(
    "arch, pooling, side",
    [("qwen3", "last_token", "left"), ("bert", "mean", "right")],  # gemma3, last_token, right: the OOM test's
)
def test_a_compiled_encoder_gives_the_eager_vectors(tiny_models, arch, pooling, side):
    tokenizer, model = loaded(tiny_models, arch, pooling=pooling, padding_side=side)
    _, values, offsets = tokenized_sample(tokenizer)

    def encoder(compile: bool) -> Encoder:
        return Encoder(model, pooling, True, tokenizer.pad_token_id, side, 600, 16, compile=compile)

    eager = encoder(False).encode(values, offsets).embeddings
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = encoder(True)
    # the load-time probes (other shapes, a KV cache, float32) ran on the eager model: nothing compiled yet
    assert sum(torch._dynamo.utils.counters["stats"].values()) == 0
    assert compiled.compiled and any(isinstance(m, OptimizedModule) for m in compiled.model.modules())
    vectors = compiled.encode(values, offsets).embeddings
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # really compiled
    assert compiled.compiled  # no fallback happened
    assert np.min(np.sum(eager * vectors, axis=1)) >= 0.9999
    uncompiled(model)


@needs_cpu_compiler
def test_a_compile_that_fails_runs_the_model_eager_with_one_warning(tiny_models, caplog):
    from torch._inductor import config as inductor_config

    tokenizer, model = loaded(tiny_models, "gemma3")
    _, values, offsets = tokenized_sample(tokenizer)
    eager = Encoder(model, "last_token", True, tokenizer.pad_token_id, "right", 600, 16).encode(values, offsets)
    # a machine without a working C++ compiler: Inductor's CPU backend cannot build its kernels; no kernel built by
    # another test is reused. config.patch, not monkeypatch: monkeypatch's undo deletes `cpp.cxx` from Inductor's
    # config, which breaks every later compile in the process
    no_compiler = {"cpp.cxx": ("/nonexistent/c++",), "force_disable_caches": True}
    torch._dynamo.reset()
    encoder = Encoder(model, "last_token", True, tokenizer.pad_token_id, "right", 600, 16, compile=True)
    with inductor_config.patch(no_compiler), caplog.at_level(logging.WARNING, logger="pipeline.encoder"):
        result = encoder.encode(values, offsets)
    assert not encoder.compiled and not any(isinstance(m, OptimizedModule) for m in encoder.model.modules())
    warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "model.compile: false" in warnings[0]
    assert not result.reasons or not any(result.reasons)  # no row lost to the failed compile
    np.testing.assert_allclose(result.embeddings, eager.embeddings, atol=1e-6)


@pytest.mark.parametrize(
    "oom",
    [
        lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),  # a GPU autotuning
        lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes"),
    ],
    ids=["cuda", "cpu"],
)
def test_running_out_of_memory_while_compiling_splits_the_batch_and_keeps_the_compile(tiny_models, caplog, oom):
    """Out of memory inside Inductor (a GPU's autotuning, a big first batch) is a memory error, not a broken compiler:
    the batch is split and its budget lowered as for any out-of-memory, and the model stays compiled; falling back to
    eager would lose the compile for the actor's whole life. Also the gemma3 (last_token, right padding) case of
    test_a_compiled_encoder_gives_the_eager_vectors, whose compile is the costly part of each."""
    from torch._inductor import compile_fx

    tokenizer, model = loaded(tiny_models, "gemma3", pooling="last_token", padding_side="right")
    _, values, offsets = tokenized_sample(tokenizer)
    eager = Encoder(model, "last_token", True, tokenizer.pad_token_id, "right", 600, 16).encode(values, offsets)
    real, calls = compile_fx.compile_fx, []

    def out_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise oom()
        return real(*args, **kwargs)

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    encoder = Encoder(model, "last_token", True, tokenizer.pad_token_id, "right", 600, 16, compile=True)
    # the load-time probes (other shapes, a KV cache, float32) ran on the eager model: nothing compiled yet
    assert sum(torch._dynamo.utils.counters["stats"].values()) == 0
    assert encoder.compiled and any(isinstance(m, OptimizedModule) for m in encoder.model.modules())
    compile_fx.compile_fx = out_of_memory_once
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.encoder"):
            result = encoder.encode(values, offsets)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    finally:
        compile_fx.compile_fx = real
        torch._dynamo.reset()
    assert len(calls) >= 2  # compiled again after the memory error
    assert graphs >= 1  # really compiled
    assert encoder.compiled and any(isinstance(m, OptimizedModule) for m in encoder.model.modules())
    assert not any("torch.compile failed" in r.getMessage() for r in caplog.records)
    assert any("out of memory" in r.getMessage().lower() for r in caplog.records)  # the split's own warning
    assert not result.reasons or not any(result.reasons)
    np.testing.assert_allclose(result.embeddings, eager.embeddings, atol=1e-5)
    assert np.min(np.sum(eager.embeddings * result.embeddings, axis=1)) >= 0.9999


def test_model_compile_defaults_to_auto_and_takes_yaml_booleans():
    assert ModelConfig(name_or_path="m").compile == "auto"
    assert ModelConfig(name_or_path="m", compile="on").compile is True
    assert ModelConfig(name_or_path="m", compile=False).compile is False


def encode_lengths(encoder: Encoder, lengths: list[int]) -> None:
    """Rows of `lengths` tokens (ids 4.. below the vocabulary), one encode call."""
    values = np.concatenate([np.arange(4, 4 + n) for n in lengths]).astype(np.int64)
    encoder.encode(values, np.concatenate([[0], np.cumsum(lengths)]))


@needs_cpu_compiler
def test_blocks_of_two_kinds_compile_every_batch_shape_instead_of_falling_back_to_eager(tmp_path):
    # T5's first block holds the relative position bias, so its two blocks are two variants of one code object, each
    # specialized by Dynamo for 1 row and for 1 token: the batches below need 10 variants, past Dynamo's default 8
    tokenizer_path = build_model(tmp_path / "t5", "t5", train_tokenizer(sample_texts()))
    cfg = ModelConfig(name_or_path=str(tokenizer_path), max_tokens=128, pooling="mean")
    tokenizer, model = load_tokenizer(cfg), load_model(cfg, torch.device("cpu"))
    encoder = Encoder(model, "mean", True, tokenizer.pad_token_id, "right", 600, 16, compile=True)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for lengths in ([1], [5], [1, 1], [5, 5], [3, 7]):
        encode_lengths(encoder, lengths)
    frames = torch._dynamo.utils.counters["frames"]
    assert frames["total"] >= 9 and frames["ok"] == frames["total"]  # none left to run eager


@needs_cpu_compiler
def test_the_float32_recompute_of_non_finite_rows_compiles_nothing(tiny_models):
    tokenizer, model = loaded(tiny_models, "gemma3", dtype="bfloat16")
    _, values, offsets = poisoned_sample(tokenizer)
    encoder = Encoder(model, "last_token", True, tokenizer.pad_token_id, "right", 600, 16, compile=True)
    encoder.model = Wrapped(encoder.model, "overflow_half")  # the poisoned rows' vectors are NaN in bfloat16
    torch._dynamo.reset()
    encoder.encode(*tokenized_sample(tokenizer)[1:])  # the bfloat16 variants of these batches
    torch._dynamo.utils.counters.clear()
    got = encoder.encode(values, offsets)
    assert np.flatnonzero(got.recomputed).tolist() == [3, 11] and got.reasons == {}
    assert torch._dynamo.utils.counters["frames"]["total"] == 0  # the float32 rows ran eager: no variant compiled
    assert next(model.parameters()).dtype == torch.bfloat16


def test_model_compile_takes_auto_in_any_case_and_a_wrong_value_gets_one_message(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("input: {uri: in.jsonl}\noutput: {uri: out}\nmodel: {name_or_path: m}\n")
    for value, expected in (("auto", "auto"), ("AUTO", "auto"), ("Auto", "auto"), ("on", True), ("no", False)):
        assert load_config(EmbedConfig, config, [f"model.compile={value}"]).model.compile == expected
    with pytest.raises(ConfigError) as err:
        load_config(EmbedConfig, config, ["model.compile=maybe"])
    lines = str(err.value).splitlines()[1:]
    wanted = "should be auto, true or false (or on/off, yes/no), not 'maybe'"
    assert lines == [f"  --set model.compile=maybe: model.compile: Value error, {wanted}"]


def test_a_torch_without_a_per_module_limit_gets_its_process_limit_raised_never_lowered():
    """torch before 2.13 takes no recompile_limit argument (the H200 ran 2.11): the process-wide limit is raised."""
    from types import SimpleNamespace

    from pipeline.compiling import RECOMPILE_LIMIT, raise_global_recompile_limit

    old = SimpleNamespace(cache_size_limit=8)  # torch < 2.7 spelled it so
    raise_global_recompile_limit(old)
    assert old.cache_size_limit == RECOMPILE_LIMIT
    newer = SimpleNamespace(recompile_limit=8, cache_size_limit=8)
    raise_global_recompile_limit(newer)
    assert newer.recompile_limit == RECOMPILE_LIMIT
    higher = SimpleNamespace(recompile_limit=1000)
    raise_global_recompile_limit(higher)
    assert higher.recompile_limit == 1000
