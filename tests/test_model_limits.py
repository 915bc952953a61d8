"""The effective token limit: the smallest of the config and every limit the model directory declares."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from pipeline.config import ModelConfig
from pipeline.model_limits import ModelLimitError, apply_token_limit, token_limit
from pipeline.model_loading import load_tokenizer, resolve_model_settings


def limit_of(path, **model):
    from transformers import AutoConfig

    cfg = ModelConfig(name_or_path=str(path), **model)
    return token_limit(cfg, load_tokenizer(cfg), AutoConfig.from_pretrained(str(path)))


def test_multilingual_e5_is_capped_at_512(real_model_dir):
    limit = limit_of(real_model_dir("multilingual-e5-small"), pooling="mean")
    assert limit.effective == 512
    assert limit.sources == {
        "model.max_tokens": 32768,
        "sentence_bert_config.json max_seq_length": 512,
        "tokenizer model_max_length": 512,
        "max_position_embeddings": 512,
    }


def test_no_limit_sentinel_of_a_tokenizer_is_ignored(real_model_dir):
    limit = limit_of(real_model_dir("smollm2-135m"))  # max_tokens left at 32768
    assert "tokenizer model_max_length" not in limit.sources  # transformers' int(1e30) means "none declared"
    assert limit.effective == limit.sources["max_position_embeddings"] == 8192


def test_roberta_family_positions_are_net_of_the_padding_offset(tiny_models, tmp_path):
    assert (
        limit_of(tiny_models["xlmr"], pooling="mean").sources[
            "max_position_embeddings 514 - 1 (positions start at padding_idx + 1)"
        ]
        == 513
    )  # pad id 0: positions 1..513
    model = tmp_path / "xlmr-pad1"
    shutil.copytree(tiny_models["xlmr"], model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "pad_token_id": 1}))  # the real XLM-R's pad id
    assert limit_of(model, pooling="mean").effective == 512


@pytest.mark.parametrize("pad", [1, 3])
@pytest.mark.parametrize(
    "model_type",
    [
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "data2vec-text",
        "roberta-prelayernorm",
        "ibert",
        "longformer",
        "mpnet",  # padding_idx fixed at 1 in its code: was pad_token_id + 1 (one token over with pad 0)
        "xmod",  # xmod, luke, esm: were missing, their full max_position_embeddings (two tokens over with pad 1)
        "luke",
        "esm",
        "bert",  # no offset
    ],
)
def test_the_position_limit_is_the_longest_row_each_architecture_runs(model_type, pad):
    """The limit read from config.json is what the class takes: a row of exactly that many tokens runs, one more
    fails (the row was a reject, 'model failed on this row: IndexError: index out of range in self', when the limit
    was above it). Every text-only type of PADDING_OFFSET_TYPES, tiny random weights, pad ids 1 (the real checkpoints') and 3."""
    import torch
    from transformers import AutoConfig, AutoModel

    from pipeline.model_limits import position_limit

    widths = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    extra = {"longformer": {"attention_window": [4]}, "xmod": {"languages": ["en_XX"], "default_language": "en_XX"}}
    config = AutoConfig.for_model(
        model_type, vocab_size=50, max_position_embeddings=24, pad_token_id=pad, **widths, **extra.get(model_type, {})
    )
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    if model_type == "xmod":
        model.set_default_language("en_XX")
    limit = position_limit(config)[1]

    def run(n: int) -> None:
        ids = torch.full((1, n), 5)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))

    run(limit)
    with pytest.raises((IndexError, RuntimeError)):  # the position table, or a buffer of its length
        run(limit + 1)


def test_sentence_transformers_max_seq_length_and_config_both_count(tiny_models, tmp_path):
    model = tmp_path / "bert-st"
    shutil.copytree(tiny_models["bert"], model)
    (model / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert limit_of(model, pooling="mean").effective == 128
    assert limit_of(model, pooling="mean", max_tokens=64).effective == 64  # a lower config wins


def test_an_explicit_max_tokens_is_honoured_above_the_saved_length_and_cut_to_the_models_limit_above_the_positions(
    tiny_models, tmp_path, caplog
):
    """sentence-transformers' model.max_seq_length = 400 on a model saved with 128 embeds 400 tokens: an explicit
    model.max_tokens is honoured as well (it was cut to the saved 128), with a warning naming the trained length;
    above the 512 positions, where every long row would fail in the model, it is cut to the model's own limit as a
    default is (the saved 128; the quickstart's 32768 on a small model keeps working), with a warning naming both
    numbers. Left at its default, the saved length still decides."""
    model = tmp_path / "bert-st"
    shutil.copytree(tiny_models["bert"], model)
    (model / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    cfg = ModelConfig(name_or_path=str(model), pooling="mean", max_tokens=400)
    with caplog.at_level(logging.WARNING):
        settings = resolve_model_settings(cfg)
    assert settings.model.max_tokens == 400
    assert (
        "using 400 tokens, above the length the model's files save (sentence_bert_config.json max_seq_length "
        "128" in caplog.text
    )
    assert json.loads(settings.metadata["max_tokens_limits"])["model.max_tokens"] == 400
    assert resolve_model_settings(ModelConfig(name_or_path=str(model), pooling="mean")).model.max_tokens == 128
    for max_tokens in (513, 32768):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            explicit = cfg.model_copy(update={"max_tokens": max_tokens})
            assert resolve_model_settings(explicit).model.max_tokens == 128
        assert f"model.max_tokens ({max_tokens}) is above the 512 positions of model" in caplog.text
        assert "using 128 tokens, the model's own limit" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert resolve_model_settings(cfg.model_copy(update={"max_tokens": 512})).model.max_tokens == 512
        assert resolve_model_settings(cfg.model_copy(update={"max_tokens": 100})).model.max_tokens == 100
    assert caplog.text.count("above the length the model's files save") == 1  # 100 is below it: no word


def test_the_decision_is_logged_and_chunk_overlap_checked(tiny_models, caplog):
    cfg = ModelConfig(name_or_path=str(tiny_models["bert"]), pooling="mean")  # max_tokens left at 32768
    with caplog.at_level(logging.INFO):
        settings = resolve_model_settings(cfg)
    resolved, metadata = settings.model, settings.metadata
    assert resolved.max_tokens == 512
    assert settings.padding == (0, "right")  # the BERT tokenizer's [PAD] id and side, handed to the model actors
    assert "model.max_tokens: using 512 tokens, the model's limit" in caplog.text
    assert json.loads(metadata["max_tokens_limits"])["max_position_embeddings"] == 512
    chunky = cfg.model_copy(update={"long_inputs": "chunk", "chunk_overlap_tokens": 300})
    with pytest.raises(ModelLimitError, match=r"chunk_overlap_tokens \(300\) must be below half .* limit 512"):
        apply_token_limit(chunky, limit_of(tiny_models["bert"], pooling="mean"))


def test_last_token_pooling_without_an_eos_convention_warns(tiny_models, caplog):
    with caplog.at_level(logging.WARNING):
        config = ModelConfig(name_or_path=str(tiny_models["gemma3"]), pooling="last_token")
        metadata = resolve_model_settings(config).metadata
    assert metadata["eos_token"] == "none"
    assert "appends no EOS token and declares none" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        metadata = resolve_model_settings(ModelConfig(name_or_path=str(tiny_models["qwen3"]))).metadata
    assert metadata["eos_token"] == "tokenizer" and "appends no EOS" not in caplog.text


def test_a_model_directory_under_the_home_directory_is_resolved_by_every_loader(tiny_models, tmp_path, monkeypatch):
    """`model.name_or_path: ~/models/bert`: the defaults took it for a local directory while the tokenizer and the
    limits took it for a hub id, so the job failed after Ray's start ("Repo id must be in the form ...")."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bert").symlink_to(tiny_models["bert"], target_is_directory=True)
    cfg = ModelConfig(name_or_path="~/models/bert", pooling="mean")
    assert cfg.name_or_path == str(tmp_path / "models" / "bert")
    settings = resolve_model_settings(cfg)
    assert settings.model.max_tokens == 512  # sentence_bert_config / positions read from the directory
    assert ModelConfig(name_or_path="intfloat/multilingual-e5-small").name_or_path == "intfloat/multilingual-e5-small"
