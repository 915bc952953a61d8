"""Batched, padded, length-sorted embeddings equal a one-text-at-a-time unpadded reference."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sample_texts
from transformers import AutoModel, Gemma3TextConfig

from pipeline.batching import CPU_LENGTH_RATIO
from pipeline.config import ModelConfig
from pipeline.encoder import Encoder, attends_causally
from pipeline.model_loading import ModelLoadError, check_model, load_model, load_tokenizer
from pipeline.pooling import pool

CASES = [
    ("gemma3", "last_token", "right"),
    ("gemma3", "last_token", "left"),
    ("qwen3", "last_token", "left"),
    ("qwen3", "last_token", "right"),
    ("bert", "mean", "right"),
    ("bert", "cls", "right"),
    ("gemma3", "mean", "left"),
    ("qwen3", "mean", "right"),
    # RoBERTa family: positions count from padding_idx + 1, so the model must compute them itself under left padding
    ("xlmr", "mean", "left"),
    ("xlmr", "cls", "left"),
    ("xlmr", "mean", "right"),
]


def reference(model, ids: list[int], pooling: str) -> np.ndarray:
    """One row, no padding, no batching: the plain forward pass."""
    with torch.inference_mode():
        input_ids = torch.tensor([ids])
        mask = torch.ones_like(input_ids)
        hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        v = pool(hidden, mask, pooling)[0]
    return (v / v.norm()).numpy()


def tokenized_sample(tokenizer, max_tokens: int = 128) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    texts = sample_texts()[::13]  # 25 texts of mixed lengths and scripts
    rows = tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    values = np.concatenate([np.asarray(r) for r in rows])
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    return rows, values, offsets


@pytest.mark.parametrize("arch, pooling, side", CASES)
def test_batched_equals_unpadded_reference(tiny_models, arch, pooling, side):
    cfg = ModelConfig(name_or_path=str(tiny_models[arch]), pooling=pooling, padding_side=side, max_tokens=128)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, torch.device("cpu"))
    rows, values, offsets = tokenized_sample(tokenizer)
    encoder = Encoder(model, pooling, True, tokenizer.pad_token_id, side, max_tokens_per_batch=600, max_batch_size=16)
    # The padding mask is left out of attention exactly for causal models padded on the right.
    assert encoder.mask_to_model == (arch in ("bert", "xlmr") or side == "left")
    assert encoder.left == (side == "left")  # the padding probe passed on the configured side
    use_cache = []  # what each forward pass asked for: a decoder must not build a KV cache it never reads
    model.register_forward_pre_hook(lambda _m, _a, kwargs: use_cache.append(kwargs.get("use_cache")), with_kwargs=True)
    got = encoder.encode(values, offsets)
    assert use_cache and set(use_cache) == ({None} if arch in ("bert", "xlmr") else {False})
    assert got.embeddings.shape == (len(rows), model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(got.embeddings, axis=1), 1.0, atol=1e-5)
    for i in range(len(rows)):
        cos = float(got.embeddings[i] @ reference(model, rows[i], pooling))
        assert cos >= 0.9999, f"row {i}: cosine {cos}"
    assert (got.computed_tokens >= np.diff(offsets)).all()


def test_weights_must_be_safetensors(tmp_path, tiny_models):
    model_dir = tmp_path / "no-weights"
    model_dir.mkdir()
    for f in tiny_models["qwen3"].iterdir():
        if f.suffix != ".safetensors":
            (model_dir / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelLoadError, match="no \\*.safetensors weights"):
        load_model(ModelConfig(name_or_path=str(model_dir)), torch.device("cpu"))


@pytest.mark.parametrize(
    "spm, tokenizer_class",
    [
        ("spiece.model", "T5Tokenizer"),
        ("sentencepiece.bpe.model", "XLMRobertaTokenizer"),
        ("tokenizer.model", "LlamaTokenizer"),
        ("spm.model", "DebertaV2Tokenizer"),  # DeBERTa-v3 / mDeBERTa: not in the hand list before
        ("spm_char.model", "SpeechT5Tokenizer"),
    ],
)
def test_a_sentencepiece_tokenizer_without_its_library_says_what_to_install(
    tmp_path, tiny_models, spm, tokenizer_class
):
    """A T5 / XLM-R / Llama tokenizer saved as its SentencePiece file alone (no tokenizer.json) where the
    sentencepiece package is missing: transformers falls back to tiktoken and the error said only "`tiktoken` is
    required to read a `tiktoken` file", with 'check its tokenizer.json ...'."""
    import importlib.util

    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("sentencepiece is installed: such a tokenizer loads")
    model_dir = shutil.copytree(tiny_models["bert"], tmp_path / "spm", ignore=shutil.ignore_patterns("tokenizer*"))
    (model_dir / spm).write_bytes(b"\x0a\x05hello")
    (model_dir / "tokenizer_config.json").write_text(
        f'{{"tokenizer_class": "{tokenizer_class}", "unk_token": "<unk>"}}'
    )
    with pytest.raises(
        ModelLoadError,
        match=rf"SentencePiece model \({re.escape(spm)}\) without a tokenizer.json.*"
        r"pip install sentencepiece",
    ):
        load_tokenizer(ModelConfig(name_or_path=str(model_dir)))


@pytest.mark.parametrize("export", ["onnx/model.onnx", "openvino/openvino_model.xml", "model.onnx"])
def test_a_folder_with_only_onnx_or_openvino_weights_says_what_to_put_in_it(tmp_path, tiny_models, export):
    """sentence-transformers' backend='onnx' / 'openvino' folders (and optimum's exports) hold weights rayembed does not
    run: refused on the driver naming the export and the weights it runs (it said only 'no *.safetensors weights')."""
    model_dir = tmp_path / "exported"
    shutil.copytree(tiny_models["bert"], model_dir, ignore=shutil.ignore_patterns("*.safetensors"))
    (model_dir / export).parent.mkdir(exist_ok=True)
    (model_dir / export).write_bytes(b"exported graph")
    with pytest.raises(ModelLoadError, match=f"it holds {export}: .* put the model's model.safetensors"):
        check_model(ModelConfig(name_or_path=str(model_dir)))


@pytest.fixture
def transformers_log():
    """The records transformers' loggers emit (its root logger does not propagate to pytest's caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def rewrite_weights(src: Path, dst: Path, edit) -> Path:
    """A copy of model folder `src` whose safetensors weights are `edit(state dict)`."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    save_file(edit(load_file(weights)), weights, metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize(
    "arch, edit, lacking",
    [
        # an ST wrapper's state dict saved as the model's: no name matches, every weight would be random
        ("bert", lambda sd: {f"0.auto_model.{k}": v for k, v in sd.items()}, r"\d+ of the \d+ weights of BertModel"),
        ("bert", lambda sd: {k: v for k, v in sd.items() if ".layer.1." not in k}, r"encoder\.layer\.1\."),
        ("qwen3", lambda sd: {k: v for k, v in sd.items() if not k.endswith("norm.weight")}, r"norm\.weight"),
    ],
    ids=["renamed", "a layer missing", "decoder norms missing"],
)
def test_a_checkpoint_lacking_weights_the_embeddings_use_is_refused(
    tmp_path, tiny_models, arch, edit, lacking, transformers_log
):
    """transformers initializes missing weights at random and only logs it: every actor would have drawn its own
    and computed its own vectors. Now the load fails naming them, and transformers' LOAD REPORT is still shown."""
    broken = rewrite_weights(tiny_models[arch], tmp_path / "broken", edit)
    with pytest.raises(ModelLoadError, match=f"cannot load model {broken}: .*{lacking}.*at random"):
        load_model(ModelConfig(name_or_path=str(broken), pooling="mean"), torch.device("cpu"))
    assert any("LOAD REPORT" in r.getMessage() and "MISSING" in r.getMessage() for r in transformers_log)


def test_missing_weights_no_embedding_uses_are_fine_and_not_reported(tmp_path, tiny_models, transformers_log):
    """BERT's pooler (multilingual-e5 ships without one): rayembed pools the hidden states itself. transformers'
    LOAD REPORT ('pooler.dense.weight | MISSING') was printed by every model actor of every run, read as an error."""
    no_pooler = rewrite_weights(
        tiny_models["bert"], tmp_path / "no-pooler", lambda sd: {k: v for k, v in sd.items() if "pooler" not in k}
    )
    assert set(AutoModel.from_pretrained(no_pooler, output_loading_info=True)[1]["missing_keys"]) == {
        "pooler.dense.weight",
        "pooler.dense.bias",
    }
    assert any("pooler.dense.weight" in r.getMessage() for r in transformers_log)  # transformers' own report
    transformers_log.clear()
    load_model(ModelConfig(name_or_path=str(no_pooler), pooling="mean"), torch.device("cpu"))
    assert not [r.getMessage() for r in transformers_log if "LOAD REPORT" in r.getMessage()]


@pytest.mark.parametrize("cut", ["half", "header only", "inside the header", "empty"])
def test_weights_that_do_not_open_fail_on_the_driver_naming_the_file(tmp_path, tiny_models, cut):
    """A truncated download: the header or the data end early. check_model fails before any actor starts."""
    model_dir = tmp_path / "truncated"
    shutil.copytree(tiny_models["bert"], model_dir)
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    weights.write_bytes(
        {
            "half": data[: len(data) // 2],
            "header only": data[:header_end],
            "inside the header": data[:100],
            "empty": b"",
        }[cut]
    )
    with pytest.raises(ModelLoadError, match=f"model weights {weights} do not load: .*Fetch the file again"):
        check_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"))
    check_model(ModelConfig(name_or_path=str(tiny_models["bert"]), pooling="mean"))  # the whole file passes


LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d0fd5e1d7e41a0c1f27b2c4c2a4c6c7f1f1b0f2a6c8d0e1f2a3b4c5d6e7f8a9\nsize 470045872\n"
)


def dense_model(src: Path, dst: Path) -> Path:
    """A copy of tiny model `src` laid out as sentence-transformers saves it, with one Dense module (64 -> 32)."""
    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (dst / "modules.json").write_text(json.dumps(modules))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 64, "pooling_mode": "mean"}))
    (dst / "2_Dense").mkdir()
    dense = {"in_features": 64, "out_features": 32, "bias": True, "activation_function": "torch.nn.Identity"}
    (dst / "2_Dense" / "config.json").write_text(json.dumps(dense))
    weights = {"linear.weight": torch.zeros(32, 64), "linear.bias": torch.zeros(32)}
    save_file(weights, str(dst / "2_Dense" / "model.safetensors"))
    return dst


@pytest.mark.parametrize(
    "pointers", [["model.safetensors"], ["tokenizer.json"], ["2_Dense/model.safetensors", "tokenizer.json"]]
)
def test_git_lfs_pointers_in_place_of_files_are_refused_saying_git_lfs_pull(tmp_path, tiny_models, pointers):
    """A hub repo cloned without git-lfs: each large file is a ~130-byte pointer. The weights failed as 'header too
    large. A truncated or corrupt download?', a pointer tokenizer.json as 'JSONDecodeError: Expecting value' on the
    driver; now check_model (driver, and every model load) names the pointers and `git lfs pull`."""
    model_dir = dense_model(tiny_models["bert"], tmp_path / "cloned")
    check_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"))  # the whole folder passes
    for name in pointers:
        (model_dir / name).write_text(LFS_POINTER)
    with pytest.raises(
        ModelLoadError, match=rf"{re.escape(', '.join(pointers))} (is a|are) Git LFS pointers?.*lfs pull"
    ):
        check_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"))
    with pytest.raises(ModelLoadError, match="Git LFS pointer"):
        load_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"), torch.device("cpu"))


def test_a_text_file_that_only_mentions_git_lfs_is_not_a_pointer(tmp_path, tiny_models):
    model_dir = tmp_path / "notes"
    shutil.copytree(tiny_models["bert"], model_dir)
    (model_dir / "README.md").write_text("Clone it with git-lfs:\n" + LFS_POINTER)
    check_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"))


def shard(src: Path, dst: Path) -> list[Path]:
    """A copy of tiny model `src` with its weights in two shards and their index, as save_pretrained writes a large
    model; the shard paths."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(src / "model.safetensors")
    keys = sorted(weights)
    parts = {f"model-0000{i + 1}-of-00002.safetensors": keys[i::2] for i in range(2)}
    for name, names in parts.items():
        save_file({k: weights[k] for k in names}, str(dst / name), metadata={"format": "pt"})
    weight_map = {k: name for name, names in parts.items() for k in names}
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return [dst / name for name in parts]


def test_a_sharded_checkpoint_missing_or_cutting_a_shard_fails_on_the_driver(tmp_path, tiny_models):
    """A partial copy of a sharded checkpoint: a shard the index lists was not there and every model actor failed
    to start (ActorStartError ... No such file or directory); a cut shard was checked already. Both fail in
    check_model now, naming the shard."""
    model_dir = tmp_path / "sharded"
    first, second = shard(tiny_models["bert"], model_dir)
    check_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"))  # both shards: passes
    second.unlink()
    with pytest.raises(ModelLoadError, match=rf"1 of the 2 weight shards .* not there \({second.name}\)"):
        check_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"))
    first.write_bytes(first.read_bytes()[:-100])
    second.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=f"model weights {first} do not load"):
        check_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"))


def test_cut_dense_module_weights_fail_on_the_driver_naming_the_file(tmp_path, tiny_models):
    """A Dense module's weights (2_Dense/model.safetensors) cut short: only the model's own were checked, and every
    model actor failed with a bare 'SafetensorError: incomplete metadata'."""
    model_dir = dense_model(tiny_models["bert"], tmp_path / "dense")
    weights = model_dir / "2_Dense" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match=f"model weights {weights} do not load: .*Fetch the file again"):
        check_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"))


def test_causal_probe_tells_decoder_from_bidirectional_attention(tiny_models):
    def probe(model) -> bool:
        return attends_causally(model.eval(), torch.device("cpu"))

    assert probe(load_model(ModelConfig(name_or_path=str(tiny_models["qwen3"])), torch.device("cpu")))
    assert not probe(
        load_model(ModelConfig(name_or_path=str(tiny_models["bert"]), pooling="mean"), torch.device("cpu"))
    )
    # Same Gemma-3 architecture, bidirectional attention (as in EmbeddingGemma): the name alone would mislead.
    shape = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    shape.update(num_key_value_heads=1, head_dim=16)
    assert probe(AutoModel.from_config(Gemma3TextConfig(**shape)))
    assert not probe(AutoModel.from_config(Gemma3TextConfig(**shape, use_bidirectional_attention=True)))


# --- issue 15: padding probe, poison rows, non-finite vectors, ids outside the vocabulary ---------------------------

TRIGGER = 100  # a token id that the wrappers below treat as poison (not among the padding probe's ids 3..18)


class Wrapped(torch.nn.Module):
    """A real model with one injected behaviour on rows holding TRIGGER (or on every row with `always`)."""

    def __init__(self, model, behaviour: str):
        super().__init__()
        self.model, self.behaviour, self.config = model, behaviour, model.config

    def forward(self, input_ids, **kwargs):
        out = self.model(input_ids=input_ids, **kwargs)
        hit = (input_ids == TRIGGER).any(dim=1)
        if self.behaviour == "broken" and input_ids.shape[1] > 1 and input_ids.shape[0] * input_ids.shape[1] > 40:
            raise RuntimeError("device lost")  # every real batch fails; the tiny health check does too below
        if self.behaviour == "broken":
            raise RuntimeError("device lost")
        if hit.any() and self.behaviour == "raise":
            raise ValueError("cannot embed this row")
        if hit.any() and self.behaviour in ("overflow_half", "nan_always"):
            half = next(self.parameters()).dtype != torch.float32
            if self.behaviour == "nan_always" or half:
                out.last_hidden_state[hit] = float("nan")
        if hit.any() and self.behaviour == "oom_alone":
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return out


def poisoned_sample(tokenizer, poison_rows=(3, 11)):
    rows, _, _ = tokenized_sample(tokenizer)
    rows = [list(r) for r in rows]
    for i in poison_rows:
        rows[i] = rows[i][:2] + [TRIGGER] + rows[i][2:]
    values = np.concatenate([np.asarray(r) for r in rows])
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    return rows, values, offsets


def encoder_for(tiny_models, arch="gemma3", behaviour=None, dtype="float32", pooling="last_token", side="right"):
    cfg = ModelConfig(name_or_path=str(tiny_models[arch]), pooling=pooling, max_tokens=128, dtype=dtype)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, torch.device("cpu"))
    encoder = Encoder(model, pooling, True, tokenizer.pad_token_id, side, max_tokens_per_batch=600, max_batch_size=16)
    if behaviour:
        encoder.model = Wrapped(model, behaviour)
    return encoder, tokenizer, model


def check_against_reference(model, rows, got, skip=(), pooling="last_token"):
    reference_model = model.float()
    for i in range(len(rows)):
        if i in skip:
            continue
        cos = float(got.embeddings[i] @ reference(reference_model, rows[i], pooling))
        assert cos >= 0.9999, f"row {i}: cosine {cos}"


@pytest.mark.parametrize(
    "arch, pooling, side", [("qwen3", "last_token", "left"), ("qwen3", "mean", "right"), ("bert", "mean", "right")]
)
def test_a_pad_id_the_embeddings_lack_pads_with_one_they_have(tiny_models, caplog, arch, pooling, side):
    """A pad token added to the tokenizer without resizing the embeddings (`add_special_tokens({"pad_token":
    "[PAD]"})` on SmolLM2-135M: id 49152 of 49152 rows): every model actor failed in its load probe with
    'AttributeError: Encoder object has no attribute compiled', which hid 'IndexError: index out of range in self'
    (sentence-transformers fails with the latter). Padded positions are masked out, so another id gives each text
    its vector alone; one warning says so."""
    cfg = ModelConfig(name_or_path=str(tiny_models[arch]), pooling=pooling, max_tokens=128)
    tokenizer, model = load_tokenizer(cfg), load_model(cfg, torch.device("cpu"))
    rows = model.get_input_embeddings().num_embeddings
    with caplog.at_level(logging.WARNING, logger="pipeline.encoder"):
        encoder = Encoder(model, pooling, True, rows, side, max_tokens_per_batch=600, max_batch_size=16)
    assert f"pad token id {rows} has no row in the model's {rows} input embeddings" in caplog.text
    assert 0 <= encoder.pad_token_id < rows
    token_rows, values, offsets = tokenized_sample(tokenizer)
    got = encoder.encode(values, offsets)
    assert not got.reasons
    check_against_reference(model, token_rows, got, pooling=pooling)


def test_a_row_that_raises_in_the_model_is_a_reject_and_the_rest_embeds(tiny_models):
    encoder, tokenizer, model = encoder_for(tiny_models, behaviour="raise")
    rows, values, offsets = poisoned_sample(tokenizer)
    got = encoder.encode(values, offsets)
    assert got.reasons == {
        3: "model failed on this row: ValueError: cannot embed this row",
        11: "model failed on this row: ValueError: cannot embed this row",
    }
    check_against_reference(model, rows, got, skip=(3, 11))


def test_a_model_that_fails_on_every_input_raises_instead_of_rejecting_everything(tiny_models):
    encoder, tokenizer, _ = encoder_for(tiny_models, behaviour="broken")
    _, values, offsets = poisoned_sample(tokenizer)
    with pytest.raises(RuntimeError, match="device lost"):
        encoder.encode(values, offsets)


def test_non_finite_half_precision_rows_are_recomputed_in_float32(tiny_models):
    encoder, tokenizer, model = encoder_for(tiny_models, behaviour="overflow_half", dtype="bfloat16")
    rows, values, offsets = poisoned_sample(tokenizer)
    got = encoder.encode(values, offsets)
    assert got.reasons == {}
    assert np.flatnonzero(got.recomputed).tolist() == [3, 11]
    assert np.isfinite(got.embeddings).all()
    assert next(model.parameters()).dtype == torch.bfloat16  # back in its own dtype afterwards
    fp32 = model.float()
    for i in (3, 11):  # recomputed alone in float32: equal to the float32 one-text reference
        assert float(got.embeddings[i] @ reference(fp32, rows[i], "last_token")) >= 0.99999


def test_rows_non_finite_in_float32_too_are_rejects(tiny_models):
    encoder, tokenizer, model = encoder_for(tiny_models, behaviour="nan_always", pooling="mean", arch="bert")
    rows, values, offsets = poisoned_sample(tokenizer)
    got = encoder.encode(values, offsets)
    assert got.reasons == {3: "non-finite embedding (NaN or inf) in torch.float32", 11: got.reasons[3]}
    assert not got.recomputed.any()
    assert (got.embeddings[[3, 11]] == 0).all()
    check_against_reference(model, rows, got, skip=(3, 11), pooling="mean")


def test_out_of_memory_on_one_row_alone_is_a_reject(tiny_models):
    encoder, tokenizer, model = encoder_for(tiny_models, behaviour="oom_alone")
    rows, values, offsets = poisoned_sample(tokenizer, poison_rows=(5,))
    got = encoder.encode(values, offsets)
    assert list(got.reasons) == [5] and got.reasons[5].startswith("out of memory on this row alone")
    check_against_reference(model, rows, got, skip=(5,))


def test_ids_outside_the_vocabulary_and_empty_rows_never_reach_the_model(tiny_models):
    encoder, _, model = encoder_for(tiny_models)
    rows = [[5, 6, 7], [5, encoder.vocab_size + 3, 7], [], [8, -1], [9, 10]]
    values = np.asarray([t for r in rows for t in r], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    got = encoder.encode(values, offsets)
    assert got.reasons == {
        1: f"token id {encoder.vocab_size + 3} is outside the model's vocabulary ({encoder.vocab_size} ids)",
        2: "row has no tokens",
        3: f"token id -1 is outside the model's vocabulary ({encoder.vocab_size} ids)",
    }
    check_against_reference(model, rows, got, skip=(1, 2, 3))
    empty = encoder.encode(np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64))  # a block with no rows at all
    assert empty.embeddings.shape == (0, encoder.dim) and empty.reasons == {}


def test_left_padding_that_breaks_an_encoder_is_switched_to_right_with_a_warning(tiny_models, caplog):
    """BERT counts positions from 0 at the first (padded) position: left padding changes its vectors."""
    encoder, tokenizer, model = encoder_for(tiny_models, arch="bert", pooling="mean", side="left")
    assert not encoder.left
    assert "padding on the right instead" in caplog.text
    rows, values, offsets = tokenized_sample(tokenizer)
    check_against_reference(model, rows, encoder.encode(values, offsets), pooling="mean")


class WidthDependent(torch.nn.Module):
    """Gives every token a state that depends on the padded width: no padding side can pass the probe."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, **kwargs):
        out = self.model(input_ids=input_ids, **kwargs)
        out.last_hidden_state = out.last_hidden_state + float(input_ids.shape[1])
        return out


def test_a_model_that_fails_the_padding_probe_on_both_sides_is_refused(tiny_models):
    from pipeline.encoder import PaddingProbeError

    cfg = ModelConfig(name_or_path=str(tiny_models["bert"]), pooling="mean")
    model = WidthDependent(load_model(cfg, torch.device("cpu")))
    with pytest.raises(PaddingProbeError, match=r"padded in a batch another vector .* refusing to embed"):
        Encoder(model, "mean", True, 0, "right", max_tokens_per_batch=600, max_batch_size=16)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_batch_of_one_token_rows_embeds_on_either_padding_side(tiny_models, side):
    # a one-token text, or the last chunk of a long one, batched with rows as short: the (B, 1) padded batch
    encoder, _, model = encoder_for(tiny_models, arch="qwen3", side=side)
    rows = [[7], [9], [11]]
    got = encoder.encode(np.asarray([7, 9, 11]), np.asarray([0, 1, 2, 3]))
    assert got.reasons == {}
    check_against_reference(model, rows, got)


def test_a_cpu_encoder_plans_the_cpu_length_buckets_unless_told(tiny_models):
    encoder, _, model = encoder_for(tiny_models, "bert", pooling="mean")
    assert encoder.min_length_ratio == CPU_LENGTH_RATIO
    told = Encoder(model, "mean", True, 0, "right", max_tokens_per_batch=600, max_batch_size=16, min_length_ratio=0.5)
    assert told.min_length_ratio == 0.5


def test_the_sentencepiece_hint_knows_every_sentencepiece_file_name_of_transformers_tokenizers():
    """The hint looked for a hand list of five names, so DeBERTa-v2/v3 and mDeBERTa (spm.model) still got
    transformers' 'tiktoken is required'. Every `.model` / `.spm` file that an importable tokenizer class of
    transformers declares in vocab_files_names is now among the names looked for."""
    import transformers
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    from pipeline.sentencepiece_files import sentencepiece_file_names

    looked_for = set(sentencepiece_file_names())
    declared: dict[str, str] = {}
    for classes in TOKENIZER_MAPPING_NAMES.values():
        for name in classes if isinstance(classes, (tuple, list)) else (classes,):
            try:  # a placeholder class (needs sentencepiece or another package) raises at its first attribute
                files = getattr(getattr(transformers, name), "vocab_files_names", None) or {} if name else {}
            except (ImportError, AttributeError):
                continue
            for file in files.values():
                if isinstance(file, str) and file.endswith((".model", ".spm")):
                    declared[file] = name
    assert declared.keys() - {"prophetnet.tokenizer"}, "no SentencePiece tokenizer class could be imported"
    assert not declared.keys() - looked_for, {f: declared[f] for f in declared.keys() - looked_for}
