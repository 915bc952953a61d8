"""Model-derived defaults on the driver: pooling auto, prompts by role, fail-fast on an unavailable hub model."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from conftest import MODELS_DIR
from safetensors.torch import save_file

from pipeline.calibration import output_precision
from pipeline.config import EmbedConfig, ModelConfig
from pipeline.errors import UserError
from pipeline.model_defaults import (
    DenseSpec,
    ModelUnavailableError,
    check_available,
    model_prompt,
    module_layout,
    resolve_pooling,
    with_model_defaults,
)
from pipeline.model_loading import check_model_pooling


def copy_config(src, dst, **files):
    """A model directory with `src`'s config.json (no weights needed to resolve defaults) plus `files`."""
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    for name, content in files.items():
        path = dst / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
    return dst


MEAN = {"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
CLS = {"pooling_mode_cls_token": True}


@pytest.mark.parametrize(
    "arch, files, expected, source",
    [
        ("bert", {}, "mean", "default for an encoder"),  # sentence-transformers' default for a plain encoder
        ("gemma3", {}, "last_token", "default for a decoder"),
        ("qwen3", {}, "last_token", "default for a decoder"),
        ("gemma3", {"1_Pooling__config.json": MEAN}, "mean", "1_Pooling/config.json"),
        ("bert", {"1_Pooling__config.json": CLS}, "cls", "1_Pooling/config.json"),
        ("bert", {"1_Pooling__config.json": {"pooling_mode": "lasttoken"}}, "last_token", "1_Pooling/config.json"),
        (  # modules.json names the Pooling module's folder
            "bert",
            {
                "modules.json": [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "pool", "type": "sentence_transformers.models.Pooling"},
                ],
                "pool__config.json": CLS,
                "1_Pooling__config.json": MEAN,
            },
            "cls",
            "pool/config.json",
        ),
    ],
)
def test_pooling_auto(tiny_models, tmp_path, arch, files, expected, source):
    model = copy_config(tiny_models[arch], tmp_path / "m", **files)
    choice = resolve_pooling(ModelConfig(name_or_path=str(model)))
    assert choice.pooling == expected and source in choice.source


def test_explicit_pooling_wins(tiny_models):
    choice = resolve_pooling(ModelConfig(name_or_path=str(tiny_models["bert"]), pooling="cls"))
    assert (choice.pooling, choice.source) == ("cls", "model.pooling")


def test_pooling_auto_refuses_what_it_cannot_serve(tiny_models, tmp_path):
    """Several modes: sentence-transformers concatenates them, which rayembed does not."""
    model = copy_config(
        tiny_models["bert"],
        tmp_path / "m",
        **{"1_Pooling__config.json": {"pooling_mode_max_tokens": 1, "pooling_mode_mean_tokens": True}},
    )
    with pytest.raises(UserError, match="cannot serve"):
        resolve_pooling(ModelConfig(name_or_path=str(model)))


TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}


@pytest.mark.parametrize(
    "pooling_config, expected",
    [
        ({"pooling_mode_max_tokens": 1}, "max"),  # sentence-transformers reads the flags as truthy
        ({"pooling_mode_mean_sqrt_len_tokens": True}, "mean_sqrt_len_tokens"),
        ({"pooling_mode_weightedmean_tokens": True}, "weightedmean"),
        ({"pooling_mode": "max"}, "max"),
        ({"pooling_mode": ["cls"]}, "cls"),  # the list form with one mode
        ({"word_embedding_dimension": 8, "pooling_mode_cls_token": False}, "mean"),  # none on: ST's default, mean
        ({"embedding_dimension": 8}, "mean"),
    ],
)
def test_pooling_auto_reads_every_sentence_transformers_form(tiny_models, tmp_path, pooling_config, expected):
    """On a decoder, whose architecture default (last_token) would otherwise win."""
    model = copy_config(
        tiny_models["gemma3"],
        tmp_path / "m",
        **{"modules.json": [TRANSFORMER, POOLING], "1_Pooling__config.json": pooling_config},
    )
    assert resolve_pooling(ModelConfig(name_or_path=str(model))).pooling == expected


def test_layout_reads_dense_normalize_and_include_prompt(tiny_models, tmp_path):
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    norm = {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}
    model = copy_config(
        tiny_models["bert"],
        tmp_path / "m",
        **{
            # listed order decides, as in sentence-transformers (idx is ignored: test_st_head::modules_run_in_the_order_...)
            "modules.json": [TRANSFORMER, POOLING, dense, norm],
            "1_Pooling__config.json": {"pooling_mode": "cls", "include_prompt": False},
            "2_Dense__config.json": {"in_features": 64, "out_features": 32, "bias": False},
        },
    )
    save_file({}, str(model / "2_Dense" / "model.safetensors"))  # presence is checked here, shapes in st_head
    layout = module_layout(ModelConfig(name_or_path=str(model)))
    assert (layout.pooling_modes, layout.include_prompt, layout.normalize) == (["cls"], False, True)
    assert layout.dense == (DenseSpec("2_Dense", 64, 32, False, "torch.nn.modules.activation.Tanh"),)  # the default


def test_a_null_dense_activation_is_identity(tiny_models, tmp_path):
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    model = copy_config(
        tiny_models["bert"],
        tmp_path / "m",
        **{
            "modules.json": [TRANSFORMER, POOLING, dense],
            "1_Pooling__config.json": MEAN,
            "2_Dense__config.json": {"in_features": 64, "out_features": 8, "activation_function": None},
        },
    )
    save_file({}, str(model / "2_Dense" / "model.safetensors"))
    assert module_layout(ModelConfig(name_or_path=str(model))).dense[0].activation == "torch.nn.modules.linear.Identity"


@pytest.mark.parametrize("pooling", ["auto", "mean"])
def test_modules_rayembed_does_not_run_are_refused_by_name(tiny_models, tmp_path, pooling):
    """A Router (query/document towers) or LayerNorm would change the vectors: refused, not silently skipped,
    whether pooling is resolved from the model or set explicitly."""
    router = {"idx": 2, "name": "2", "path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}
    model = copy_config(
        tiny_models["bert"],
        tmp_path / "m",
        **{"modules.json": [TRANSFORMER, POOLING, router], "1_Pooling__config.json": MEAN},
    )
    cfg = ModelConfig(name_or_path=str(model), pooling=pooling)
    with pytest.raises(UserError, match=r"2_LayerNorm \(sentence_transformers.models.LayerNorm\)"):
        resolve_pooling(cfg)
        check_model_pooling(cfg)


ADAPTER = {"peft_type": "LORA", "base_model_name_or_path": "org/base-model", "r": 4, "target_modules": ["query"]}


@pytest.mark.parametrize("beside", ["adapter alone", "adapter beside full weights"])
def test_a_peft_adapter_is_refused_saying_how_to_merge_it(tiny_models, tmp_path, beside):
    """A LoRA fine-tune saved as its adapter (adapter_config.json + adapter_model.safetensors): alone, every model
    actor failed ('Error no file named model.safetensors found'); beside the base model's config.json and weights,
    the adapter was left out without a word and the base model's vectors stored. sentence-transformers (with peft)
    applies it. Now refused on the driver, saying how to merge it."""
    model = tmp_path / "lora"
    keep = "*.safetensors" if beside == "adapter alone" else "adapter_*"
    shutil.copytree(tiny_models["bert"], model, ignore=shutil.ignore_patterns(keep))
    cfg = ModelConfig(name_or_path=str(model))
    with_model_defaults(EmbedConfig(input={"uri": "x"}, output={"uri": "y"}, model=cfg))  # no adapter: resolves
    (model / "adapter_config.json").write_text(json.dumps(ADAPTER))
    save_file(
        {"base_model.model.encoder.layer.0.attention.self.query.lora_A.weight": torch.zeros(4, 64)},
        str(model / "adapter_model.safetensors"),
    )
    with pytest.raises(
        UserError, match=r"holds a PEFT adapter \(adapter_config.json: LORA on base model 'org/base-model'\)"
    ) as err:
        with_model_defaults(EmbedConfig(input={"uri": "x"}, output={"uri": "y"}, model=cfg))
    assert "merge_and_unload()" in str(err.value)
    assert ("embedded without it" in str(err.value)) == (beside != "adapter alone")


def test_modules_sharing_a_name_are_refused(tiny_models, tmp_path):
    """A hand-edited modules.json: a Dense added as name "2" beside the Normalize "2". sentence-transformers keys its
    modules by name and silently dropped the Dense (Transformer, Pooling, Normalize: 384 wide on all-MiniLM-L6-v2
    with a 384->128 Dense added); rayembed ran it (128 wide): the two disagreed without a word. Now refused."""
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    normalize = {**NORMALIZE, "idx": 3}
    files = {"modules.json": [TRANSFORMER, POOLING, dense, normalize], "1_Pooling__config.json": MEAN}
    model = copy_config(tiny_models["bert"], tmp_path / "m", **files)
    with pytest.raises(UserError, match=r"modules.json lists 2 modules named '2' \(2_Dense, 2_Normalize\)"):
        resolve_pooling(ModelConfig(name_or_path=str(model)))
    normalize["name"] = "3"
    files = {"modules.json": [TRANSFORMER, POOLING, normalize], "1_Pooling__config.json": MEAN}
    assert resolve_pooling(ModelConfig(name_or_path=str(copy_config(tiny_models["bert"], tmp_path / "ok", **files))))


@pytest.mark.parametrize("arch", ["bert", "qwen3"])
def test_a_pooling_module_without_its_config_is_refused(tiny_models, tmp_path, arch):
    """A listed Pooling folder without config.json (an incomplete download): sentence-transformers refuses to load
    the model ('Pooling.__init__() missing ... embedding_dimension'); rayembed pooled by the architecture's default
    (mean, last_token) without a word."""
    model = copy_config(tiny_models[arch], tmp_path / "m", **{"modules.json": [TRANSFORMER, POOLING, NORMALIZE]})
    with pytest.raises(
        UserError, match=r"lists a Pooling module in 1_Pooling/ \(modules.json\) but has no 1_Pooling/co"
    ):
        resolve_pooling(ModelConfig(name_or_path=str(model)))


@pytest.mark.parametrize(
    "pooling_config",
    [{"pooling_mode": "cls"}, {"pooling_mode_cls_token": True}],
)
def test_explicit_pooling_that_contradicts_the_model_is_refused(tiny_models, tmp_path, pooling_config):
    """Both the legacy flags and the newer `pooling_mode` form, in a folder modules.json names."""
    pooling = {**POOLING, "path": "pool"}
    model = copy_config(
        tiny_models["bert"],
        tmp_path / "m",
        **{"modules.json": [TRANSFORMER, pooling], "pool__config.json": pooling_config},
    )
    with pytest.raises(UserError, match=r"trained with .* pooling \(pool/config.json\).*set model.pooling: cls"):
        check_model_pooling(ModelConfig(name_or_path=str(model), pooling="mean"))


@pytest.mark.models
@pytest.mark.parametrize(
    "name, expected", [("multilingual-e5-small", "mean"), ("all-minilm-l6-v2", "mean"), ("smollm2-135m", "last_token")]
)
def test_pooling_auto_on_real_models(name, expected):
    if not (MODELS_DIR / name).is_dir():
        pytest.skip(f"{MODELS_DIR / name} absent (../shared/tools/get-models.sh)")
    cfg = ModelConfig(name_or_path=str(MODELS_DIR / name))
    assert resolve_pooling(cfg).pooling == expected


def test_with_model_defaults_resolves_into_the_config(tiny_models):
    from pipeline.config import EmbedConfig

    cfg = EmbedConfig.model_validate(
        {
            "input": {"uri": "x", "format": "text"},
            "output": {"uri": "o"},
            "model": {"name_or_path": str(tiny_models["bert"])},
        }
    )
    resolved, choice = with_model_defaults(cfg)
    assert resolved.model.pooling == "mean" == choice.pooling and cfg.model.pooling == "auto"


def test_e5_style_passage_prompt_from_the_model(tiny_models, tmp_path):
    prompts = {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}
    model = copy_config(tiny_models["bert"], tmp_path / "m", **{"config_sentence_transformers.json": prompts})
    assert model_prompt(ModelConfig(name_or_path=str(model)), "document") == ("passage: ", "passage")
    assert model_prompt(ModelConfig(name_or_path=str(model)), "query") == ("query: ", "query")
    assert model_prompt(ModelConfig(name_or_path=str(model), prompt="x: "), "document") == ("x: ", None)


@pytest.mark.parametrize(
    "name, hint",
    [
        ("microsoft/harrier-oss-v1-270m", "set model.name_or_path=DIR (a local model directory"),
        ("intfloat/multilingual-e5-smal", "check the id for typos"),
        ("./models/not-there", "there is no directory './models/not-there'"),
    ],
)
def test_unavailable_hub_model_fails_fast_with_one_message(name, hint):
    """conftest sets HF_HUB_OFFLINE=1: the hub is unreachable, as on an offline cluster."""
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        check_available(ModelConfig(name_or_path=name))
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert f"model.name_or_path {name!r}" in message and hint in message and "\n" not in message


def test_local_directory_without_config(tmp_path):
    with pytest.raises(ModelUnavailableError, match="has no config.json"):
        check_available(ModelConfig(name_or_path=str(tmp_path)))


def test_older_sentence_transformers_layout_says_how_to_resave(tmp_path):
    """Transformer in 0_Transformer/ (sentence-transformers < 2 saves): named, with the fix, not 'no config.json'."""
    nested = {**TRANSFORMER, "path": "0_Transformer"}
    (tmp_path / "modules.json").write_text(json.dumps([nested, POOLING]))
    with pytest.raises(ModelUnavailableError, match=r"keeps its transformer in 0_Transformer/.*save it again"):
        check_available(ModelConfig(name_or_path=str(tmp_path)))


def test_embed_job_fails_on_the_driver_before_ray(tmp_path, capsys):
    """One line, exit 1, nothing written, no Ray started (the actors would otherwise retry for ~90 s each)."""
    import ray

    from jobs.embed import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("hello\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"input: {{uri: {corpus}, format: text}}\noutput: {{uri: {tmp_path / 'out'}}}\n")
    was_running = ray.is_initialized()
    assert main(["--config", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: model.name_or_path 'microsoft/harrier-oss-v1-270m'")
    assert not (tmp_path / "out").exists()
    assert ray.is_initialized() == was_running


@pytest.fixture
def fake_hub(monkeypatch):
    """A Hugging Face hub on loopback that knows no repo (404 RepoNotFound, as huggingface.co answers a typo)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from huggingface_hub import constants

    class Hub(BaseHTTPRequestHandler):
        def do_HEAD(self):
            known = self.path == "/"
            self.send_response(200 if known else 404)
            if not known:
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("X-Error-Message", "Repository not found")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    endpoint = f"http://127.0.0.1:{server.server_port}"  # what HF_ENDPOINT sets at import
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    yield
    server.shutdown()


def test_misspelled_hub_id_is_caught_when_the_hub_answers(fake_hub):
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="RepositoryNotFoundError.*check the id for typos"):
        check_available(ModelConfig(name_or_path="intfloat/multilingual-e5-smal"))
    assert time.perf_counter() - start < 10


def test_unreachable_hub_is_one_try_not_backoff(monkeypatch):
    from conftest import free_port
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="ConnectError"):
        check_available(ModelConfig(name_or_path="intfloat/multilingual-e5-small"))
    assert time.perf_counter() - start < 5  # huggingface_hub alone retries 5 times over ~25 s


NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


@pytest.mark.parametrize(
    "modules, similarity, normalize, warning",
    [
        ([TRANSFORMER, POOLING], "dot", True, "scored by dot product and has no Normalize module"),
        ([TRANSFORMER, POOLING], "cosine", True, None),
        ([TRANSFORMER, POOLING], "dot", False, None),
        # distances change under normalizing as dot products do; they got no warning
        ([TRANSFORMER, POOLING], "euclidean", True, "scored by euclidean distance and has no Normalize module"),
        ([TRANSFORMER, POOLING], "manhattan", True, "keep its manhattan distance scores"),
        ([TRANSFORMER, POOLING, NORMALIZE], "cosine", False, "declares a Normalize module"),
        ([TRANSFORMER, POOLING, NORMALIZE], "cosine", True, None),
    ],
)
def test_normalize_that_contradicts_the_model_warns(
    tiny_models, tmp_path, caplog, modules, similarity, normalize, warning
):
    model = copy_config(
        tiny_models["bert"],
        tmp_path / "m",
        **{
            "modules.json": modules,
            "1_Pooling__config.json": {"pooling_mode": "cls"},
            "config_sentence_transformers.json": {"similarity_fn_name": similarity},
        },
    )
    caplog.set_level("WARNING")
    with_model_defaults(
        EmbedConfig.model_validate(
            {
                "input": {"uri": "x"},
                "output": {"uri": "y"},
                "model": {"name_or_path": str(model), "normalize": normalize},
            }
        )
    )
    assert (warning in caplog.text) if warning else "normaliz" not in caplog.text.lower()


@pytest.mark.parametrize("model_type", ["CrossEncoder", "SparseEncoder"])
def test_a_cross_or_sparse_encoder_is_refused(tiny_models, tmp_path, model_type):
    model = copy_config(
        tiny_models["bert"], tmp_path / "m", **{"config_sentence_transformers.json": {"model_type": model_type}}
    )
    with pytest.raises(UserError, match=f"is a sentence-transformers {model_type}"):
        resolve_pooling(ModelConfig(name_or_path=str(model)))


def test_normalize_before_a_dense_module_is_refused(tiny_models, tmp_path):
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    model = copy_config(
        tiny_models["bert"],
        tmp_path / "m",
        **{
            "modules.json": [TRANSFORMER, POOLING, NORMALIZE, dense],
            "1_Pooling__config.json": MEAN,
            "3_Dense__config.json": {"in_features": 64, "out_features": 8},
        },
    )
    with pytest.raises(UserError, match="normalizes before a Dense module"):
        module_layout(ModelConfig(name_or_path=str(model)))


def test_an_offline_cached_hub_model_without_optional_files_resolves(tiny_models, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 with a cache filled by a snapshot download (the offline-cluster convention of transformers,
    TEI and vLLM): a file the model does not have (modules.json, 1_Pooling/config.json) means 'none', not
    'cannot be fetched'. A model missing from the cache still fails as unavailable."""
    offline_cache(tmp_path, monkeypatch, "acme/tiny-bert", tiny_models["bert"])
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": "acme/tiny-bert"}}
    )
    cfg, choice = with_model_defaults(cfg)
    assert choice.pooling == "mean" and module_layout(cfg.model).pooling_modes == []
    check_model_pooling(cfg.model)
    with pytest.raises(ModelUnavailableError, match="acme/not-cached"):
        check_available(ModelConfig(name_or_path="acme/not-cached"))


@pytest.mark.parametrize(
    "output, expected",
    [
        ({}, 32),  # unset: the model's truncate_dim, as sentence-transformers applies it
        ({"dimensions": 16}, 16),  # explicit wins
        ({"dimensions": None}, None),  # explicit null: every dimension
    ],
)
def test_output_dimensions_default_to_the_model_truncate_dim(tiny_models, tmp_path, output, expected):
    model = copy_config(
        tiny_models["bert"], tmp_path / "m", **{"config_sentence_transformers.json": {"truncate_dim": 32}}
    )
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y", **output}, "model": {"name_or_path": str(model)}}
    )
    assert with_model_defaults(cfg)[0].output.dimensions == expected


def offline_cache(tmp_path, monkeypatch, repo_id: str, source) -> None:
    """`source` as the hub cache holds a snapshot download of `repo_id`, with HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_a_short_sentence_transformers_name_is_completed(tiny_models, tmp_path, monkeypatch):
    """SentenceTransformer("all-MiniLM-L6-v2") loads sentence-transformers/all-MiniLM-L6-v2; so does rayembed."""
    offline_cache(tmp_path, monkeypatch, "sentence-transformers/tiny-bert", tiny_models["bert"])
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": "tiny-bert"}}
    )
    assert with_model_defaults(cfg)[0].model.name_or_path == "sentence-transformers/tiny-bert"
    missing = cfg.model_copy(update={"model": ModelConfig(name_or_path="no-such-model")})
    with pytest.raises(
        ModelUnavailableError, match=r"'no-such-model'.*\(also tried sentence-transformers/no-such-model\)"
    ):
        with_model_defaults(missing)


@pytest.mark.parametrize("truncate_dim", [64, 100])
def test_a_truncate_dim_at_or_above_the_model_dimension_keeps_every_dimension(tiny_models, tmp_path, truncate_dim):
    """sentence-transformers slices `[:, :truncate_dim]`, a no-op here (the tiny bert has 64 dimensions); the job
    failed with 'output.dimensions (100) exceeds the dimension of model', a key the config never set."""
    model = copy_config(
        tiny_models["bert"], tmp_path / "m", **{"config_sentence_transformers.json": {"truncate_dim": truncate_dim}}
    )
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": str(model)}}
    )
    cfg = with_model_defaults(cfg)[0]
    assert cfg.output.dimensions is None
    assert output_precision(cfg).dimensions is None


CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n"


def test_a_model_sentence_transformers_feeds_through_its_chat_template_is_refused(tiny_models, tmp_path):
    """sentence-transformers 6 saves `modality_config` with 'message' for a tokenizer with a chat template and then
    renders each text through the template; rayembed embedded the bare text (cosine 0.2 on SmolLM2 saved so).
    Refused naming the file; without the 'message' entry it is plain text for both and accepted."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    source = tmp_path / "qwen3"
    shutil.copytree(tiny_models["qwen3"], source)
    (source / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    saved = tmp_path / "saved"
    SentenceTransformer(modules=[Transformer(str(source)), Pooling(64, "lasttoken"), Normalize()]).save(str(saved))
    st_file = saved / "sentence_bert_config.json"
    declared = json.loads(st_file.read_text())
    assert "message" in declared["modality_config"]
    rendered = SentenceTransformer(str(saved), device="cpu")[0].preprocess(["a text"])["input_ids"][0].tolist()
    cfg = ModelConfig(name_or_path=str(saved))
    with pytest.raises(UserError, match=r"declares the 'message' modality \(sentence_bert_config.json modality"):
        resolve_pooling(cfg)
    del declared["modality_config"]["message"]
    st_file.write_text(json.dumps(declared))
    plain = SentenceTransformer(str(saved), device="cpu")[0].preprocess(["a text"])["input_ids"][0].tolist()
    assert len(rendered) > len(plain)  # the template's role markers, which rayembed did not add
    assert resolve_pooling(cfg).pooling == "last_token"
    declared["modality_config"]["text"] = {"method": "get_text_features", "method_output_name": "pooler_output"}
    st_file.write_text(json.dumps(declared))
    with pytest.raises(UserError, match=r"embeds text with get_text_features\(\) -> pooler_output"):
        resolve_pooling(cfg)
