"""Models laid out as sentence-transformers saves them, embedded through the product's driver resolution and the
stage UDFs (no Ray), against `SentenceTransformer(...).encode_document`: Dense modules after pooling, pooling modes
beyond mean/cls/last_token, `include_prompt: false`, `do_lower_case`; cosine >= 0.9999 in float32."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file

from pipeline.actors import EmbedActor, TokenizeActor
from pipeline.calibration import output_precision
from pipeline.columns import EMBEDDING, REJECT, TEXT
from pipeline.config import EmbedConfig
from pipeline.errors import UserError
from pipeline.model_defaults import model_prompt, with_model_defaults
from pipeline.model_loading import check_model, pooling_skip, resolve_model_settings
from pipeline.st_head import load_head

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello World",
    "Ein kleiner Test auf Deutsch mit etwas mehr Text, um die Länge zu variieren.",
    "Bonjour TOUT le monde",
]
TANH, IDENTITY = "torch.nn.modules.activation.Tanh", "torch.nn.modules.linear.Identity"


def st_model(base: Path, dst: Path, pooling: dict, dense=(), normalize=True, prompts=None, lower=False) -> Path:
    """`base` (a tiny transformers model) saved as sentence-transformers lays a model out: modules.json, a Pooling
    config, Dense modules (in, out, activation, bias) with random weights, optionally Normalize."""
    shutil.copytree(base, dst)
    (dst / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts or {}}))
    (dst / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": lower}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 64, **pooling}))
    for i, (inf, outf, activation, bias) in enumerate(dense, start=2):
        folder = dst / f"{i}_Dense"
        folder.mkdir()
        config = {"in_features": inf, "out_features": outf, "bias": bias, "activation_function": activation}
        (folder / "config.json").write_text(json.dumps(config))
        g = torch.Generator().manual_seed(i)
        weights = {"linear.weight": torch.randn(outf, inf, generator=g) * 0.2}
        if bias:
            weights["linear.bias"] = torch.randn(outf, generator=g) * 0.1
        save_file(weights, str(folder / "model.safetensors"))
        modules.append({"idx": i, "name": str(i), "path": folder.name, "type": "sentence_transformers.models.Dense"})
    if normalize:
        i = len(modules)
        modules.append(
            {"idx": i, "name": str(i), "path": f"{i}_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    (dst / "modules.json").write_text(json.dumps(modules))
    return dst


def ours(model_dir: Path, texts: list[str], kind: str = "document", **model) -> np.ndarray:
    """The embed job's path without Ray: driver resolution (pooling, prompt, limits, dimensions), then the two stage
    UDFs. `model`: more keys of the model section."""
    cfg = EmbedConfig.model_validate(
        {
            "input": {"uri": "x", "kind": kind},
            "output": {"uri": "y"},
            "model": {"name_or_path": str(model_dir), **model},
        }
    )
    cfg, _ = with_model_defaults(cfg)
    check_model(cfg.model)
    prompt, _ = model_prompt(cfg.model, kind)
    settings = resolve_model_settings(cfg.model)
    block = pa.table({TEXT: pa.array(texts), REJECT: pa.array([None] * len(texts), pa.string())})
    tokens = TokenizeActor(settings.model, prompt, settings.tokenizer)(block)
    skip = pooling_skip(settings.model, prompt, settings.tokenizer)
    precision = output_precision(cfg.model_copy(update={"model": settings.model}))
    embed = EmbedActor(settings.model, cfg.batching, 1, output=precision, padding=settings.padding, pool_skip=skip)
    return np.asarray(embed(tokens).column(EMBEDDING).to_pylist(), dtype=np.float32)


def reference(model_dir: Path, texts: list[str], max_seq_length: int | None = None) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model.encode_document(texts, convert_to_numpy=True, normalize_embeddings=True)


CASES = {
    "cls + Dense tanh (LaBSE's layout)": {"pooling": {"pooling_mode": "cls"}, "dense": [(64, 32, TANH, True)]},
    "mean + 2 Dense (EmbeddingGemma's layout)": {
        "pooling": {"pooling_mode": "mean"},
        "dense": [(64, 96, IDENTITY, False), (96, 48, IDENTITY, False)],
    },
    "max": {"pooling": {"pooling_mode_max_tokens": True}},
    "weightedmean": {"pooling": {"pooling_mode": "weightedmean"}},
    "mean_sqrt_len_tokens, no Normalize module": {
        "pooling": {"pooling_mode": "mean_sqrt_len_tokens"},
        "normalize": False,
    },
    "mean, include_prompt false": {
        "pooling": {"pooling_mode": "mean", "include_prompt": False},
        "prompts": {"document": "passage: "},
    },
    "cls, include_prompt false": {
        "pooling": {"pooling_mode": "cls", "include_prompt": False},
        "prompts": {"document": "Represent this: "},
    },
    "do_lower_case": {"pooling": {"pooling_mode": "mean"}, "lower": True, "prompts": {"document": "Passage: "}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_vectors_equal_sentence_transformers(tiny_models, tmp_path, case):
    model = st_model(tiny_models["bert"], tmp_path / "m", **CASES[case])
    got, want = ours(model, TEXTS), reference(model, TEXTS)
    assert got.shape == want.shape
    cosines = np.sum(got * want, axis=1)
    assert cosines.min() >= 0.9999, cosines


def test_modules_run_in_the_order_modules_json_lists_them_whatever_their_idx(tiny_models, tmp_path):
    """sentence-transformers runs the modules in list order and ignores `idx` (a hand-edited modules.json: a Dense
    added with the next free idx before the Normalize). rayembed sorted by idx: a Normalize before the Dense,
    refused; now the vectors equal sentence-transformers'."""
    model = st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "mean"}, dense=[(64, 32, TANH, True)])
    modules = json.loads((model / "modules.json").read_text())
    assert [module["path"] for module in modules[2:]] == ["2_Dense", "3_Normalize"]
    modules[2]["idx"], modules[3]["idx"] = 3, 2
    (model / "modules.json").write_text(json.dumps(modules))
    got, want = ours(model, TEXTS), reference(model, TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 32)
    assert np.sum(got * want, axis=1).min() >= 0.9999


def test_dense_on_a_decoder_with_left_padding(tiny_models, tmp_path):
    model = st_model(
        tiny_models["qwen3"], tmp_path / "m", {"pooling_mode": "lasttoken"}, dense=[(64, 16, IDENTITY, True)]
    )
    got, want = ours(model, TEXTS), reference(model, TEXTS)
    assert got.shape == (4, 16) and np.sum(got * want, axis=1).min() >= 0.9999


@pytest.mark.parametrize("dtype", ["auto", "float16"])
def test_a_decoder_whose_tokenizer_has_no_pad_token_embeds_as_sentence_transformers_given_one(
    tiny_models, tmp_path, dtype
):
    """A last-token decoder whose tokenizer declares no pad token, padded on the left: sentence-transformers fails
    ('Asking to pad but the tokenizer does not have a padding token') until one is set (pad_token = eos_token, what
    its error suggests); rayembed embeds it as it then does, in float32 (auto on a CPU) and in float16 on a CPU."""
    from sentence_transformers import SentenceTransformer

    model = st_model(tiny_models["qwen3"], tmp_path / "m", {"pooling_mode": "lasttoken"})
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("pad_token", None)
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    st = SentenceTransformer(str(model), device="cpu")
    with pytest.raises(ValueError, match="does not have a padding token"):
        st.encode_document(TEXTS)
    st.tokenizer.pad_token = st.tokenizer.eos_token
    want = st.encode_document(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    assert np.sum(ours(model, TEXTS, dtype=dtype) * want, axis=1).min() >= 0.9999


def test_dense_with_an_activation_outside_torch_is_refused(tiny_models, tmp_path):
    model = st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "cls"}, dense=[(64, 8, "os.system", True)])
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": str(model)}}
    )
    with pytest.raises(UserError, match="code outside torch; set model.trust_remote_code"):
        load_head(cfg.model)


@pytest.mark.parametrize("dimensions, fits", [(16, True), (24, True), (32, False)])
def test_output_dimensions_are_checked_against_the_dense_output(tiny_models, tmp_path, dimensions, fits):
    """The stored dimension is the last Dense's (24), not the transformer's hidden size (64): the driver refuses
    32 before any actor starts instead of an actor failing on every block."""
    model = st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "cls"}, dense=[(64, 24, TANH, True)])
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y", "dimensions": dimensions}, "model": {"name_or_path": str(model)}}
    )
    if fits:
        assert output_precision(cfg).dimensions == dimensions
    else:
        with pytest.raises(UserError, match=r"output.dimensions \(32\) exceeds the dimension .* \(24\)"):
            output_precision(cfg)


@pytest.mark.parametrize("kind", ["document", "query"])
def test_a_model_saved_by_sentence_transformers_itself(tiny_models, tmp_path, kind):
    """The current save format, written by sentence-transformers (modules.json types under base/, `pooling_mode`,
    Dense with module names, saved prompts and truncate_dim): weightedmean without the prompt, a GELU Dense,
    Normalize, Matryoshka truncation; every one at once."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    modules = [
        Transformer(str(tiny_models["bert"])),
        Pooling(64, "weightedmean", include_prompt=False),
        Dense(64, 8, activation_function=torch.nn.GELU()),
        Normalize(),
    ]
    saved = tmp_path / "saved"
    SentenceTransformer(modules=modules, prompts={"query": "q: ", "document": "d: "}, truncate_dim=4).save(str(saved))
    reference_model = SentenceTransformer(str(saved), device="cpu")
    encode = reference_model.encode_document if kind == "document" else reference_model.encode_query
    want = encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    got = ours(saved, TEXTS, kind)
    assert got.shape == want.shape == (4, 4)
    assert np.sum(got * want, axis=1).min() >= 0.9999


def test_a_dense_module_with_pickle_weights_is_refused_on_the_driver(tiny_models, tmp_path):
    """Older saves (LaBSE's 2_Dense) hold pytorch_model.bin: refused before any actor starts, naming the key that
    allows it; with model.allow_pickle_weights it loads and equals sentence-transformers."""
    model = st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "cls"}, dense=[(64, 16, TANH, True)])
    weights = model / "2_Dense" / "model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(str(weights)), str(model / "2_Dense" / "pytorch_model.bin"))
    weights.unlink()
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": str(model)}}
    )
    with pytest.raises(UserError, match="pytorch_model.bin loads only with model.allow_pickle_weights: true"):
        with_model_defaults(cfg)
    allowed = cfg.model.model_copy(update={"allow_pickle_weights": True})
    assert load_head(allowed)[0].linear.out_features == 16


def test_a_row_with_nothing_left_to_pool_after_the_prompt_is_a_reject(tiny_models, tmp_path):
    """include_prompt false, prompt 'query: ' on a BPE tokenizer: 'x' merges into the prompt's trailing space
    ('Ġx'), so every token of the row is the prompt's. sentence-transformers gives it a zero vector (norm 0 in a
    'normalized' output); it is a reject naming why, and the other rows are embedded as before."""
    model = st_model(
        tiny_models["gemma3"],
        tmp_path / "m",
        {"pooling_mode": "mean", "include_prompt": False},
        prompts={"document": "query: "},
    )
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": str(model)}}
    )
    cfg, _ = with_model_defaults(cfg)
    prompt, _ = model_prompt(cfg.model, "document")
    settings = resolve_model_settings(cfg.model)
    texts = ["x", "Hello World"]
    block = pa.table({TEXT: pa.array(texts), REJECT: pa.array([None] * 2, pa.string())})
    tokens = TokenizeActor(settings.model, prompt, settings.tokenizer)(block)
    skip = pooling_skip(settings.model, prompt, settings.tokenizer)
    embed = EmbedActor(settings.model, cfg.batching, 1, padding=settings.padding, pool_skip=skip)
    out = embed(tokens)
    reasons, vectors = out.column(REJECT).to_pylist(), out.column(EMBEDDING).to_pylist()
    assert reasons[0].startswith("no token left to pool") and vectors[0] is None
    assert reasons[1] is None
    want = reference(model, texts[1:])[0]
    assert float(np.dot(np.asarray(vectors[1], np.float32), want)) >= 0.9999


@pytest.mark.parametrize(
    "dense, message",
    [
        ([(32, 16, IDENTITY, True)], r"'2_Dense' has in_features 32 but gets 64 from the pooled vector"),
        ([(64, 32, TANH, True), (48, 8, IDENTITY, True)], r"'3_Dense' has in_features 48 but gets 32 from Dense"),
    ],
)
def test_dense_modules_that_do_not_fit_together_are_refused_on_the_driver(tiny_models, tmp_path, dense, message):
    """They failed in every model actor's first forward pass ('mat1 and mat2 shapes cannot be multiplied')."""
    model = st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "mean"}, dense=dense)
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": str(model)}}
    )
    cfg, _ = with_model_defaults(cfg)
    with pytest.raises(UserError, match=message):
        check_model(cfg.model)


@pytest.mark.parametrize(
    "layout", ["sentence-t5 (mean, Dense, Normalize)", "a bare T5 checkpoint", "a bare BART checkpoint"]
)
def test_an_encoder_decoder_model_runs_its_encoder_as_sentence_transformers_does(tmp_path, layout):
    """sentence-t5 / GTR: AutoModel gives T5Model, whose forward needs decoder inputs, so every actor failed
    ('You must specify exactly one of input_ids or inputs_embeds'); sentence-transformers loads T5EncoderModel.
    BART it runs whole (the decoder's states), and so must we."""
    from conftest import sample_texts
    from model_factory import build_model, train_tokenizer

    arch = "bart" if "BART" in layout else "t5"
    base = build_model(tmp_path / arch, arch, train_tokenizer(sample_texts()))
    if layout.startswith("sentence-t5"):
        model = st_model(base, tmp_path / "st", {"pooling_mode": "mean"}, dense=[(64, 32, IDENTITY, False)])
    else:
        model = base  # no sentence-transformers files: mean pooling, as sentence-transformers defaults to
    got, want = ours(model, TEXTS), reference(model, TEXTS)
    assert got.shape == want.shape
    assert np.min(np.sum(got * want, axis=1)) >= 0.9999


def test_t5gemma2_runs_its_text_encoder_as_sentence_transformers_does(tmp_path):
    """T5Gemma 2 nests its widths under encoder.text_config: every model actor failed ("'T5Gemma2Config' object has
    no attribute 'hidden_size'"), after pooling `auto` had taken it for a decoder (last_token). sentence-transformers
    loads T5Gemma2Encoder from the encoder's config and mean-pools it; its own loader cannot read a checkpoint saved
    by T5Gemma2Model (it looks under `model.encoder.`), so the reference loads that encoder the same way with this
    checkpoint's prefix."""
    import torch
    from conftest import sample_texts
    from model_factory import build_model, train_tokenizer
    from sentence_transformers.base.modules.transformer import set_temporary_class_attrs
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.t5gemma2.modeling_t5gemma2 import T5Gemma2Encoder

    model = build_model(tmp_path / "t5gemma2", "t5gemma2", train_tokenizer(sample_texts()))
    with set_temporary_class_attrs(
        T5Gemma2Encoder, _keys_to_ignore_on_load_unexpected=["decoder.*"], base_model_prefix="encoder"
    ):
        encoder = T5Gemma2Encoder.from_pretrained(model, config=AutoConfig.from_pretrained(model).encoder).eval()
    batch = AutoTokenizer.from_pretrained(model)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    got = ours(model, TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 64)
    assert np.min(np.sum(got * want, axis=1)) >= 0.9999


@pytest.mark.parametrize("arch", ["mpnet", "deberta-v2", "distilbert", "modernbert"])
def test_common_encoder_architectures_equal_sentence_transformers(tmp_path, arch):
    """all-mpnet-base-v2 (the most downloaded sentence-transformers model) and DeBERTa-v2 failed to load: their
    transformers classes support no SDPA, which `attn_implementation: auto` asked for; they now get transformers'
    default (eager), as in sentence-transformers. DistilBERT and ModernBERT guard the other common layouts."""
    from conftest import sample_texts
    from model_factory import build_model, train_tokenizer

    model = build_model(tmp_path / arch, arch, train_tokenizer(sample_texts()))
    got, want = ours(model, TEXTS), reference(model, TEXTS)
    assert got.shape == want.shape
    assert np.min(np.sum(got * want, axis=1)) >= 0.9999


def test_a_marian_checkpoint_saved_by_transformers_runs_its_encoder(tiny_models, tmp_path):
    """An opus-mt style MarianMTModel saved by transformers 5 holds no sinusoidal position tables (computed at load,
    the same in every actor): rayembed refused it as lacking 1 of the encoder's weights (encoder.embed_positions).
    Its vectors are the checkpoint's encoder, mean-pooled; sentence-transformers 6.2 is no reference here: its
    MarianEncoder loader finds none of the checkpoint's weights under their `model.encoder.` names and runs random
    ones."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, MarianConfig, MarianMTModel, set_seed

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    widths = {"d_model": 64, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
    layers = {"encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2, "decoder_attention_heads": 2}
    config = MarianConfig(
        vocab_size=len(tokenizer), pad_token_id=0, decoder_start_token_id=0, scale_embedding=True, **widths, **layers
    )
    set_seed(0)
    MarianMTModel(config).save_pretrained(tmp_path / "marian")
    tokenizer.save_pretrained(tmp_path / "marian")
    encoder = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "marian").get_encoder().eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    got = ours(tmp_path / "marian", TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 64)
    assert np.min(np.sum(got * want, axis=1)) >= 0.9999
    st_weights = SentenceTransformer(str(tmp_path / "marian"), device="cpu")[0].auto_model.embed_tokens.weight
    assert not torch.equal(st_weights, encoder.embed_tokens.weight)


@pytest.mark.parametrize("arch", ["gemma3 with use_bidirectional_attention (EmbeddingGemma's)", "xlnet"])
def test_a_bidirectional_model_without_a_pooling_module_is_mean_pooled_as_sentence_transformers_does(
    tiny_models, tmp_path, arch
):
    """A folder without a Pooling module whose every token sees the whole text: pooling auto took a Gemma-3 config
    switched to bidirectional attention and XLNet (no masked-LM head) for decoders and pooled the last token
    (cosine 0.47 and 0.16 to sentence-transformers on these texts); sentence-transformers mean-pools them, as any
    encoder."""
    from conftest import sample_texts
    from model_factory import build_model, train_tokenizer

    if arch == "xlnet":
        model = build_model(tmp_path / arch, arch, train_tokenizer(sample_texts()))
    else:
        model = shutil.copytree(tiny_models["gemma3"], tmp_path / "gemma3")
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "use_bidirectional_attention": True}))
    got, want = ours(model, TEXTS), reference(model, TEXTS)
    assert got.shape == want.shape
    assert np.min(np.sum(got * want, axis=1)) >= 0.9999


def with_settings(model: Path, **settings) -> Path:
    """`model` with `settings` added to its Transformer module's sentence_bert_config.json."""
    path = model / "sentence_bert_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **settings}))
    return model


def test_max_tokens_above_the_saved_max_seq_length_embeds_as_sentence_transformers_set_so(tiny_models, tmp_path):
    """`model.max_seq_length = 20` on a model saved with max_seq_length 6 makes sentence-transformers embed 20 tokens;
    rayembed's model.max_tokens: 20 was cut to the saved 6 (cosine 0.90 on these texts)."""
    model = with_settings(st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "mean"}), max_seq_length=6)
    got, want = ours(model, TEXTS, max_tokens=20), reference(model, TEXTS, max_seq_length=20)
    assert np.sum(got * want, axis=1).min() >= 0.9999


def test_the_saved_max_seq_length_replaces_a_shorter_tokenizer_limit_as_in_sentence_transformers(tiny_models, tmp_path):
    """sentence-transformers gives sentence_bert_config.json's max_seq_length to the tokenizer as its model_max_length,
    so a tokenizer saved with a shorter one (nomic-embed-text-v1: max_seq_length 8192, tokenizer 512) is cut at
    max_seq_length; rayembed cut at the smaller of the two (cosine 0.95 on these texts with 16 against 8)."""
    model = with_settings(st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "mean"}), max_seq_length=16)
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 8}))
    texts = [*TEXTS, " ".join(TEXTS)]
    got, want = ours(model, texts), reference(model, texts)
    assert np.sum(got * want, axis=1).min() >= 0.9999


@pytest.mark.parametrize(
    "settings",
    [
        {"tokenizer_args": {"model_max_length": 5}},  # below max_seq_length 128
        {"processor_kwargs": {"model_max_length": 300}, "max_seq_length": 6},  # above it: it still wins
    ],
    ids=["below", "above"],
)
def test_the_tokenizer_kwargs_model_max_length_cuts_as_sentence_transformers_does(tiny_models, tmp_path, settings):
    """sentence-transformers gives the tokenizer kwargs' model_max_length to the tokenizer instead of max_seq_length;
    rayembed cut at max_seq_length (cosine 0.86 on these texts with 5)."""
    model = with_settings(st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "mean"}), **settings)
    got, want = ours(model, TEXTS), reference(model, TEXTS)
    assert np.sum(got * want, axis=1).min() >= 0.9999


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"config_args": {"num_hidden_layers": 1}}, "config_args num_hidden_layers: 1 (overrides of config.json)"),
        ({"config_kwargs": {"hidden_act": "relu"}}, "config_kwargs hidden_act: 'relu'"),
        ({"tokenizer_args": {"truncation_side": "left"}}, "tokenizer_args truncation_side: 'left' (arguments of"),
        ({"processor_kwargs": {"add_eos_token": True}}, "processor_kwargs add_eos_token: True"),
        ({"model_kwargs": {"rope_scaling": {"type": "linear"}}}, "model_kwargs rope_scaling:"),
        ({"transformer_task": "fill-mask"}, "transformer_task: 'fill-mask' (its vectors come from another head"),
        ({"module_output_name": "scores"}, "module_output_name: 'scores'"),
        ({"tokenizer_name_or_path": "bert-base-cased"}, "tokenizer_name_or_path: 'bert-base-cased' (it tokenizes"),
        ({"query_length": 32}, "query_length: 32 (it cuts queries at that length; model.max_tokens does so"),
        ({"processing_kwargs": {"text": {"max_length": 8}}}, "processing_kwargs text: {'max_length': 8}"),
    ],
)
def test_transformer_settings_sentence_transformers_applies_are_refused_by_name(tiny_models, tmp_path, settings, named):
    """sentence_bert_config.json settings that sentence-transformers applies when it loads the model (config
    overrides, tokenizer and model kwargs, another head or tokenizer, per-kind lengths) were ignored without a word:
    num_hidden_layers 1 ran every layer, truncation_side left kept the start of long texts."""
    model = with_settings(st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "mean"}), **settings)
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": str(model)}}
    )
    with pytest.raises(UserError, match=re.escape(f"sentence_bert_config.json sets {named}") + ".*rayembed does not"):
        with_model_defaults(cfg)


def test_a_refused_setting_does_change_sentence_transformers_vectors(tiny_models, tmp_path):
    """The refusal is not over-cautious: config_args num_hidden_layers 1 gives other vectors in
    sentence-transformers than the model as saved (which rayembed computed)."""
    plain = st_model(tiny_models["bert"], tmp_path / "plain", {"pooling_mode": "mean"})
    fewer = with_settings(
        st_model(tiny_models["bert"], tmp_path / "fewer", {"pooling_mode": "mean"}),
        config_args={"num_hidden_layers": 1},
    )
    assert np.sum(reference(plain, TEXTS) * reference(fewer, TEXTS), axis=1).min() < 0.9999


def test_transformer_settings_that_leave_the_vectors_alone_pass(tiny_models, tmp_path):
    """dtype, attention kernel (also gte / stella's config_kwargs unpad_inputs and use_memory_efficient_attention,
    which their model cards set: they were refused), trust_remote_code and the defaults sentence-transformers 6 writes
    (transformer_task feature-extraction, module_output_name token_embeddings) are accepted, and the vectors equal
    sentence-transformers'. (A padding side is accepted too: rayembed's vectors do not depend on it, while
    sentence-transformers' BERT under left padding shifts each padded row's positions, docs/conventions.md.)"""
    model = with_settings(
        st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "mean"}),
        model_kwargs={"attn_implementation": "eager", "torch_dtype": "float32"},
        processor_kwargs={"use_fast": True},
        config_kwargs={"trust_remote_code": False, "unpad_inputs": False, "use_memory_efficient_attention": False},
        unpad_inputs=False,
        transformer_task="feature-extraction",
        module_output_name="token_embeddings",
        processing_kwargs={"chat_template": {"add_generation_prompt": True}},
    )
    got, want = ours(model, TEXTS), reference(model, TEXTS)
    assert np.sum(got * want, axis=1).min() >= 0.9999


def test_a_bfloat16_checkpoint_runs_in_float32_on_a_cpu(tiny_models, tmp_path):
    """A deliberate difference (docs/conventions.md): sentence-transformers under transformers 5 loads a checkpoint
    saved as bfloat16 in bfloat16 even on a CPU; `model.dtype: auto` runs it in float32 there, equal to
    sentence-transformers loaded in float32."""
    from sentence_transformers import SentenceTransformer

    model = st_model(tiny_models["qwen3"], tmp_path / "m", {"pooling_mode": "lasttoken"})
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16", "torch_dtype": "bfloat16"}))
    assert next(SentenceTransformer(str(model), device="cpu").parameters()).dtype == torch.bfloat16
    st32 = SentenceTransformer(str(model), device="cpu", model_kwargs={"dtype": torch.float32})
    want = st32.encode_document(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    assert np.sum(ours(model, TEXTS) * want, axis=1).min() >= 0.9999
