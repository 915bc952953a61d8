"""Defaults taken from the model itself, resolved once on the driver before Ray starts.

- Availability: a hub id that cannot be fetched (offline cluster, typo, gated repo) fails here within seconds, with
  one message naming `model.name_or_path` and the local-directory override, instead of in every actor.
- Pooling (`model.pooling: auto`): the sentence-transformers Pooling module the model declares (modules.json, else
  1_Pooling/config.json); else `mean` for an encoder (what sentence-transformers builds for a plain encoder) and
  `last_token` for a decoder (decoder embedding checkpoints: harrier, Qwen3-Embedding, e5-mistral).
- Prompt by role (pipeline.prompts.resolve_prompt), reading config_sentence_transformers.json.

Only JSON files are read (from the local directory or the hub cache): no weights, no torch.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipeline.auto_tables import model_types
from pipeline.columns import POOLINGS
from pipeline.config import ModelConfig
from pipeline.errors import UserError
from pipeline.model_architecture import ENCODER_ONLY_MODEL_TYPES
from pipeline.model_kinds import ADAPTER_CONFIG, adapter_refusal, config_refusal, module_kind, module_refusal
from pipeline.prompts import (
    ST_CONFIG,
    declared_prompts,
    placeholder_names,
    resolve_prompt,
    role_prompt_name,
    st_config,
)
from pipeline.st_transformer_settings import check_transformer_settings

log = logging.getLogger(__name__)

C = TypeVar("C")

# sentence-transformers Pooling config -> our pooling names (pipeline.pooling.POOLINGS)
ST_POOLING_FLAGS = {
    "pooling_mode_lasttoken": "last_token",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}
# newer `"pooling_mode": "..."` form (a name or a list of names)
ST_POOLING_NAMES = {
    "lasttoken": "last_token",
    "mean": "mean",
    "cls": "cls",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "weightedmean": "weightedmean",
}
# sentence-transformers modules after the transformer that rayembed runs; any other one is refused by name
SERVED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize", "Dropout")
IDENTITY = "torch.nn.modules.linear.Identity"


class ModelUnavailableError(UserError, RuntimeError):
    """The configured model can be found neither as a local directory nor on the Hugging Face hub."""


@dataclass(frozen=True)
class PoolingChoice:
    pooling: str  # one of pipeline.pooling.POOLINGS
    source: str  # where it came from, recorded in the summary


def is_local(cfg: ModelConfig) -> bool:
    return Path(cfg.name_or_path).is_dir()


def runs_shipped_code(cfg: ModelConfig) -> bool:
    """Whether the workers run code the model ships: model.trust_remote_code true and an `auto_map` in its
    config.json or tokenizer_config.json (pipeline.model_loading.shipped_code). Such a model's vectors change with
    the key (jina-embeddings-v2: BertModel untrusted, its ALiBi class trusted), so the fingerprints record it; the
    key alone on a model that ships no code changes nothing and is not recorded.

    Raises:
        ModelUnavailableError: as model_file.
    """
    if not cfg.trust_remote_code:
        return False
    for name in ("config.json", "tokenizer_config.json"):
        path = model_file(cfg, name)
        try:
            declared = json.loads(path.read_text()) if path is not None else {}
        except (OSError, ValueError):
            continue  # refused where it is loaded, naming the file
        if isinstance(declared, dict) and declared.get("auto_map"):
            return True
    return False


def model_file(cfg: ModelConfig, filename: str) -> Path | None:
    """`filename` of the model (local directory, else hub cache or hub download); None when the model has none.

    Raises:
        ModelUnavailableError: the hub cannot be reached and the file is not cached, the repo does not exist or is
            gated, or the revision does not exist.
    """
    if is_local(cfg):
        path = Path(cfg.name_or_path) / filename
        return path if path.is_file() else None
    from huggingface_hub import _CACHED_NO_EXIST, constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        cached = try_to_load_from_cache(cfg.name_or_path, filename, revision=cfg.revision)
        if isinstance(cached, str):
            return Path(cached)
        if cached is _CACHED_NO_EXIST:
            return None  # the hub answered before that the repo has no such file
        # offline (HF_HUB_OFFLINE=1, a pre-filled cache): a cached model without an optional file (modules.json,
        # 1_Pooling/..., config_sentence_transformers.json) has none, as a snapshot download brings every file
        if (
            constants.HF_HUB_OFFLINE
            and filename != "config.json"
            and isinstance(try_to_load_from_cache(cfg.name_or_path, "config.json", revision=cfg.revision), str)
        ):
            return None
        if not constants.HF_HUB_OFFLINE:
            probe_hub(cfg)
        return Path(hf_hub_download(cfg.name_or_path, filename, revision=cfg.revision))
    except LocalEntryNotFoundError as err:  # offline/unreachable and not cached: an availability error
        raise unavailable(cfg, err) from None
    except EntryNotFoundError:
        return None  # the repo exists but has no such file
    except (OSError, ValueError) as err:  # repo/revision not found, gated, invalid id (HFValidationError)
        raise unavailable(cfg, err) from None


HUB_PROBE_SECONDS = 5.0


def probe_hub(cfg: ModelConfig) -> None:
    """One request to the hub endpoint, no retries: huggingface_hub retries a failing connection 5 times with
    backoff (~25 s and a warning each), which an offline cluster should not pay before its one clear error.

    Raises:
        ModelUnavailableError: the endpoint cannot be reached within HUB_PROBE_SECONDS.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import HTTPError
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_SECONDS)
    except (HTTPError, OSError) as err:  # DNS, refused, timeout, proxy: reported, not swallowed
        raise unavailable(cfg, err) from None


def unavailable(cfg: ModelConfig, err: BaseException) -> ModelUnavailableError:
    name = cfg.name_or_path
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        hint = f"there is no directory {name!r} here; fix model.name_or_path (a local model directory or a hub id)"
    else:
        hint = (
            f"if the cluster is offline, download it once (`huggingface-cli download {name} --local-dir DIR`) and "
            "set model.name_or_path=DIR (a local model directory, on every node); check the id for typos; for a "
            "gated model accept its terms on the hub and set HF_TOKEN"
        )
    return ModelUnavailableError(
        f"model.name_or_path {name!r}{f' (revision {cfg.revision})' if cfg.revision else ''} cannot be fetched "
        f"from the Hugging Face hub ({type(err).__name__}: {reason}); {hint}"
    )


def check_available(cfg: ModelConfig) -> None:
    """Fail fast, on the driver, when the model is neither a local directory nor fetchable from the hub.

    Raises:
        ModelUnavailableError: see model_file; also for a local directory without config.json.
        UserError: a folder without config.json whose modules.json names a static embedding or a Router
            (pipeline.model_kinds), said as that rather than as a missing config.json; a PEFT adapter
            (pipeline.model_kinds.adapter_refusal), local or, without config.json, on the hub.
    """
    has_config = model_file(cfg, "config.json") is not None
    if (is_local(cfg) or not has_config) and model_file(cfg, ADAPTER_CONFIG) is not None:
        try:
            adapter = read_json(cfg, ADAPTER_CONFIG)
        except ValueError:  # unreadable JSON: still an adapter's file, named without its base
            adapter = {}
        local = Path(cfg.name_or_path)
        weights = (
            [p for p in [*local.glob("*.safetensors"), *local.glob("*.bin")] if p.is_file()] if is_local(cfg) else []
        )
        beside = has_config and any(not p.name.startswith("adapter_model") for p in weights)
        raise adapter_refusal(cfg.name_or_path, adapter if isinstance(adapter, dict) else {}, beside)
    if not has_config:
        refusal = modules_refusal(cfg)
        if refusal is not None:  # a static embedding model or a Router keeps no transformer at the root
            raise refusal
        nested = [m.get("path") for m in read_modules(cfg) if module_kind(m) == "Transformer" and m.get("path")]
        if nested:
            raise ModelUnavailableError(
                f"model.name_or_path {cfg.name_or_path!r} keeps its transformer in {nested[0]}/ (an older "
                "sentence-transformers layout), which rayembed does not load; save it again with a current "
                "sentence-transformers (SentenceTransformer(PATH).save(DIR)) and set model.name_or_path=DIR"
            )
        raise ModelUnavailableError(
            f"model.name_or_path {cfg.name_or_path!r} has no config.json: it is not a transformers model directory"
        )


# sentence-transformers' default organization: SentenceTransformer("all-MiniLM-L6-v2") loads
# sentence-transformers/all-MiniLM-L6-v2.
ST_ORGANIZATION = "sentence-transformers"


def with_hub_id(cfg: ModelConfig) -> ModelConfig:
    """`cfg` after check_available, with a short sentence-transformers name completed as sentence-transformers does:
    an id without '/' that is neither a local directory nor a model on the hub (or in its cache) is tried as
    `sentence-transformers/<id>`.

    Raises:
        ModelUnavailableError: neither is available (the message is the one for the id as written, naming the
            other try).
    """
    name = cfg.name_or_path
    if is_local(cfg) or "/" in name or name.startswith((".", "~")):
        check_available(cfg)
        return cfg
    try:
        check_available(cfg)
        return cfg
    except ModelUnavailableError as first:
        completed = cfg.model_copy(update={"name_or_path": f"{ST_ORGANIZATION}/{name}"})
        try:
            check_available(completed)
        except ModelUnavailableError:
            raise ModelUnavailableError(f"{first} (also tried {completed.name_or_path})") from None
    log.info("model.name_or_path %s -> %s (sentence-transformers' short name)", name, completed.name_or_path)
    return completed


def read_json(cfg: ModelConfig, filename: str) -> dict[str, Any]:
    path = model_file(cfg, filename)
    return json.loads(path.read_text()) if path is not None else {}


def pooling_from_st_config(config: dict[str, Any]) -> list[str]:
    """Pooling modes a sentence-transformers Pooling config switches on, as ST names them.

    A config that switches none on is mean pooling: sentence-transformers' Pooling defaults to it.
    """
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return [mode]
    if isinstance(mode, list) and mode:
        return [str(m) for m in mode]
    return [m for m, on in config.items() if m.startswith("pooling_mode_") and on] or ["mean"]


@dataclass(frozen=True)
class DenseSpec:
    """One sentence-transformers Dense module: `activation(linear(x))` (+ x or a projection of x with use_residual)."""

    path: str  # folder of the module in the model (its config.json and weights)
    in_features: int
    out_features: int
    bias: bool
    activation: str  # dotted class name, e.g. torch.nn.modules.activation.Tanh
    use_residual: bool = False


@dataclass(frozen=True)
class ModuleLayout:
    """What the model's sentence-transformers modules (modules.json) do after the transformer.

    `pooling_modes` ([] without a Pooling module) and `pooling_file` where they were read; `include_prompt` false:
    the prompt's tokens are left out of pooling; `dense`: Dense modules run after pooling, in order; `normalize`:
    a Normalize module is declared.
    """

    pooling_modes: list[str] = field(default_factory=list)
    pooling_file: str = ""
    include_prompt: bool = True
    dense: tuple[DenseSpec, ...] = ()
    normalize: bool = False


def modules_refusal(cfg: ModelConfig) -> UserError | None:
    """pipeline.model_kinds.module_refusal for the model's modules.json (a Router's or Asym's routes read from its
    router_config.json / asym_config.json); None when it lists none of those kinds."""
    modules = read_modules(cfg)
    routes = None
    for entry in modules:
        if module_kind(entry) in ("Router", "Asym"):
            filename = posixpath.join(entry.get("path") or "", f"{module_kind(entry).lower()}_config.json")
            structure = (read_json(cfg, filename) if model_file(cfg, filename) else {}).get("structure")
            routes = [str(r) for r in structure] if isinstance(structure, dict) else None
    return module_refusal(cfg.name_or_path, modules, routes)


def check_model_kind(cfg: ModelConfig) -> None:
    """Refuse, naming what it is and what to do, a model that gives its vectors without one text transformer whose
    states rayembed pools: a static embedding model (model2vec, StaticEmbedding), a Router / Asym, a dual encoder
    (CLIP, SigLIP, ...). See pipeline.model_kinds.

    Raises:
        UserError: the model is one of them.
    """
    refusal = config_refusal(cfg.name_or_path, read_json(cfg, "config.json")) or modules_refusal(cfg)
    if refusal is not None:
        raise refusal


def read_modules(cfg: ModelConfig) -> list[dict[str, Any]]:
    """The entries of the model's modules.json in the order listed ([] when it has none): sentence-transformers runs
    them in that order and ignores their `idx`."""
    modules = read_json(cfg, "modules.json") if model_file(cfg, "modules.json") else []
    if not isinstance(modules, list):
        return []
    return modules


def module_layout(cfg: ModelConfig) -> ModuleLayout:
    """The model's sentence-transformers modules, read from modules.json (else a lone 1_Pooling/config.json).

    Raises:
        ModelUnavailableError: the model's files cannot be read.
        UserError: a module rayembed does not run (anything but Transformer, Pooling, Dense, Normalize, Dropout), a
            Dense module it cannot read, a Pooling module without its config.json, or several Pooling modules: its vectors would silently differ from the ones
            sentence-transformers gives; or a CrossEncoder / SparseEncoder (model_type), which gives none.
    """
    model_type = st_config_of(cfg).get("model_type")
    if model_type not in (None, "SentenceTransformer"):
        raise UserError(
            f"model {cfg.name_or_path} is a sentence-transformers {model_type} (config_sentence_transformers.json "
            "model_type), not a SentenceTransformer: it gives no dense sentence embeddings to store"
        )
    modules = read_modules(cfg)
    refusal = modules_refusal(cfg)
    if refusal is not None:
        raise refusal
    unserved = [
        f"{m.get('path') or '(root)'} ({m.get('type')})" for m in modules if module_kind(m) not in SERVED_MODULES
    ]
    if unserved:
        raise UserError(
            f"model {cfg.name_or_path} declares sentence-transformers modules rayembed does not run: "
            f"{', '.join(unserved)} (modules.json); it runs Transformer, Pooling, Dense and Normalize. Its vectors "
            "would differ from what sentence-transformers gives, so it is refused"
        )
    check_module_names(cfg, modules)
    check_text_modality(cfg, modules)
    check_transformer_settings(cfg.name_or_path, *transformer_settings(cfg, modules))
    kinds = [module_kind(m) for m in modules]
    if "Normalize" in kinds and "Dense" in kinds[kinds.index("Normalize") :]:
        raise UserError(
            f"model {cfg.name_or_path} normalizes before a Dense module (modules.json); rayembed runs Dense modules "
            "on the pooled vector and normalizes last"
        )
    poolings = [m.get("path", "") for m in modules if module_kind(m) == "Pooling"]
    if len(poolings) > 1:
        raise UserError(f"model {cfg.name_or_path} declares {len(poolings)} Pooling modules (modules.json)")
    folder = poolings[0] if poolings else ("1_Pooling" if not modules else "")
    pooling_file = f"{folder}/config.json" if folder else ""
    pooling_config = read_json(cfg, pooling_file) if pooling_file and model_file(cfg, pooling_file) else None
    if pooling_config is None and poolings and folder:
        raise UserError(
            f"model {cfg.name_or_path} lists a Pooling module in {folder}/ (modules.json) but has no "
            f"{pooling_file}, which says how it pools (sentence-transformers refuses to load the model too); an "
            "incomplete download or copy? Fetch that folder again, or write its config.json"
        )
    if pooling_config is None:
        pooling_file = ""
    dense = tuple(dense_spec(cfg, m.get("path", "")) for m in modules if module_kind(m) == "Dense")
    return ModuleLayout(
        pooling_modes=pooling_from_st_config(pooling_config) if pooling_config is not None else [],
        pooling_file=pooling_file,
        include_prompt=bool((pooling_config or {}).get("include_prompt", True)),
        dense=dense,
        normalize=any(module_kind(m) == "Normalize" for m in modules),
    )


def check_module_names(cfg: ModelConfig, modules: list[dict[str, Any]]) -> None:
    """Refuse modules.json entries that share a `name`: sentence-transformers keys its modules by name, so a later
    entry replaces the earlier one at the earlier one's place without a word (a hand-edited file: a Dense added as
    name "2" beside the Normalize "2" is dropped, the vectors then those of the model without it), where rayembed
    would run both; which one was meant cannot be told.

    Raises:
        UserError: naming the shared name and the modules' paths.
    """
    paths: dict[str, list[str]] = {}
    for m in modules:
        if m.get("name") is not None:
            paths.setdefault(str(m["name"]), []).append(m.get("path") or "(root)")
    shared = {name: where for name, where in paths.items() if len(where) > 1}
    if shared:
        name, where = next(iter(shared.items()))
        raise UserError(
            f"model {cfg.name_or_path}: modules.json lists {len(where)} modules named {name!r} ({', '.join(where)}); "
            "sentence-transformers keeps only the last of them, at the first one's place, so which modules the model "
            'runs is unclear. Give each module its own name (its place in the list: "0", "1", ...)'
        )


def transformer_settings(cfg: ModelConfig, modules: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(file name, parsed content) of the Transformer module's sentence_bert_config.json; {} when it has none."""
    folders = [m.get("path", "") for m in modules if module_kind(m) == "Transformer"] or [""]
    filename = posixpath.join(folders[0], "sentence_bert_config.json")
    return filename, (read_json(cfg, filename) if model_file(cfg, filename) else {})


def check_text_modality(cfg: ModelConfig, modules: list[dict[str, Any]]) -> None:
    """Refuse a Transformer module that sentence-transformers (6+) does not feed plain text through `forward`.

    Its `sentence_bert_config.json` `modality_config` (written by sentence-transformers 6 on save) may declare the
    `message` modality (a tokenizer with a chat template): sentence-transformers then renders every text through the
    chat template before tokenizing, and rayembed tokenizes the text itself, so the vectors would differ (cosine 0.2
    on a SmolLM2 saved that way). A `text` modality read through another method or output (`get_text_features`,
    `pooler_output`) differs as well. A save without `modality_config` (before sentence-transformers 6) is plain text.

    Raises:
        UserError: naming the file, the modality and how to use the model as plain text.
    """
    filename, settings = transformer_settings(cfg, modules)
    modalities = settings.get("modality_config")
    if not isinstance(modalities, dict):
        return
    if "message" in modalities:
        raise UserError(
            f"model {cfg.name_or_path} declares the 'message' modality ({filename} modality_config, written by "
            "sentence-transformers 6 for a tokenizer with a chat template): sentence-transformers renders each text "
            "through the chat template before embedding it, which rayembed does not do, so its vectors would differ; "
            "it is refused. To embed plain text with it (as sentence-transformers does once 'message' is removed), "
            f"delete the 'message' entry from modality_config in {filename}"
        )
    text = modalities.get("text", {})
    method = (text.get("method", "forward"), text.get("method_output_name", "last_hidden_state"))
    if method != ("forward", "last_hidden_state"):
        raise UserError(
            f"model {cfg.name_or_path} embeds text with {method[0]}() -> {method[1]} ({filename} modality_config); "
            "rayembed pools the last hidden states of forward(), so its vectors would differ; it is refused"
        )


def dense_spec(cfg: ModelConfig, folder: str) -> DenseSpec:
    """The Dense module in `folder`, from its config.json.

    Raises:
        UserError: no config.json, or a Dense that reads or writes another feature than the sentence embedding.
    """
    filename = f"{folder}/config.json"
    if model_file(cfg, filename) is None:
        raise UserError(f"model {cfg.name_or_path}: the Dense module {folder!r} of modules.json has no {filename}")
    config = read_json(cfg, filename)
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, "sentence_embedding"):
            raise UserError(
                f"model {cfg.name_or_path}: Dense module {folder!r} has {key} {config[key]!r}; rayembed runs Dense "
                "modules on the sentence embedding only"
            )
    spec = DenseSpec(
        path=folder,
        in_features=int(config["in_features"]),
        out_features=int(config["out_features"]),
        bias=bool(config.get("bias", True)),
        # absent: the constructor's default, Tanh; null: none (Dense(activation_function=None) is Identity)
        activation=str(config.get("activation_function", "torch.nn.modules.activation.Tanh") or IDENTITY),
        use_residual=bool(config.get("use_residual", False)),
    )
    check_dense(cfg, spec)
    return spec


def check_dense(cfg: ModelConfig, spec: DenseSpec) -> None:
    """On the driver, what the model actors would otherwise fail on, restart after restart: weights that will not load
    (a pickle without model.allow_pickle_weights, none at all) and an activation from outside torch without
    model.trust_remote_code.

    Raises:
        UserError: naming the Dense module and the key that allows it.
    """
    if not spec.activation.startswith("torch.") and not cfg.trust_remote_code:
        raise UserError(
            f"model {cfg.name_or_path}: Dense module {spec.path!r} uses activation {spec.activation!r}, code outside "
            "torch; set model.trust_remote_code: true if you trust the model"
        )
    if model_file(cfg, f"{spec.path}/model.safetensors") is not None:
        return
    pickle = model_file(cfg, f"{spec.path}/pytorch_model.bin") is not None
    if not (pickle and cfg.allow_pickle_weights):
        hint = " (its pytorch_model.bin loads only with model.allow_pickle_weights: true)" if pickle else ""
        raise UserError(f"model {cfg.name_or_path}: Dense module {spec.path!r} has no model.safetensors weights{hint}")


def declared_pooling(cfg: ModelConfig) -> tuple[list[str], str]:
    """(modes, file) of the model's sentence-transformers Pooling module; ([], "") when it declares none."""
    layout = module_layout(cfg)
    return layout.pooling_modes, layout.pooling_file


def to_our_pooling(modes: list[str]) -> str | None:
    """Our name for a single sentence-transformers mode, else None (several modes are concatenated)."""
    if len(modes) != 1:
        return None
    mode = modes[0]
    return ST_POOLING_FLAGS.get(mode) if mode.startswith("pooling_mode_") else ST_POOLING_NAMES.get(mode)


def model_dimension(cfg: ModelConfig) -> int | None:
    """Dimension of the model's vectors: its last Dense module's out_features, else the hidden size of config.json
    (hidden_size, d_model or n_embd, also under text_config); None when neither says."""
    layout = module_layout(cfg)
    if layout.dense:
        return layout.dense[-1].out_features
    return hidden_size(cfg)


def hidden_size(cfg: ModelConfig) -> int | None:
    """The transformer's hidden size from config.json (hidden_size, d_model or n_embd, also under text_config, and
    for an encoder-decoder run encoder-only under encoder / encoder.text_config, as `text_config` reads the loaded
    config), else as transformers reads it (loaded_hidden_size); None when neither says."""
    config = read_json(cfg, "config.json")
    sources = [config, config.get("text_config") or {}]  # multimodal configs nest the text model's
    encoder = config.get("encoder") if config.get("model_type") in ENCODER_ONLY_MODEL_TYPES else None
    if isinstance(encoder, dict):  # T5Gemma: encoder; T5Gemma2: encoder.text_config (encoder.vision_config beside)
        sources = [encoder.get("text_config") or {}, encoder, config]
    for source in sources:
        for key in ("hidden_size", "d_model", "n_embd"):
            if isinstance(source.get(key), int):
                return source[key]
    return loaded_hidden_size(cfg)


def loaded_hidden_size(cfg: ModelConfig) -> int | None:
    """The hidden size as transformers reads config.json: its config class maps the architecture's own key to
    `hidden_size` (DistilBERT's `dim`, ...), which the keys hidden_size reads miss; of the text config rayembed runs.
    None when transformers cannot read the config (a model type it lacks, code not trusted) or it has none. Only
    where the JSON keys do not say: it imports transformers."""
    from transformers import AutoConfig

    from pipeline.model_architecture import text_config

    try:
        config = AutoConfig.from_pretrained(
            cfg.name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError):
        return None
    size = getattr(text_config(config), "hidden_size", None)
    return size if isinstance(size, int) else None


def check_dense_chain(cfg: ModelConfig) -> None:
    """Each Dense module takes the width it is given: the pooled vector's (the hidden size), then the previous
    Dense module's out_features. Checked on the driver: otherwise every model actor fails in its first forward pass
    ('mat1 and mat2 shapes cannot be multiplied'), restart after restart.

    Raises:
        UserError: naming the Dense module, its in_features and the width it gets.
    """
    dense = module_layout(cfg).dense
    if not dense:
        return
    width, source = hidden_size(cfg), "the pooled vector (config.json hidden size)"
    for spec in dense:
        if width is not None and spec.in_features != width:
            raise UserError(
                f"model {cfg.name_or_path}: Dense module {spec.path!r} has in_features {spec.in_features} but gets "
                f"{width} from {source}; the model's modules do not fit together (check {spec.path}/config.json)"
            )
        width, source = spec.out_features, f"Dense module {spec.path!r}"


# Bidirectional model types with no masked-LM head in transformers: XLNet (a permutation LM, whose every token sees
# the whole text when no permutation mask is given).
BIDIRECTIONAL_MODEL_TYPES = frozenset({"xlnet"})


def is_encoder(cfg: ModelConfig) -> bool:
    """A bidirectional encoder (BERT, XLM-R, ModernBERT...): its architecture has a masked-LM head in transformers;
    or a T5-style encoder-decoder, of which rayembed runs the encoder (runs_encoder_only); or a model whose every
    token sees the whole text: XLNet, and a decoder family's config switched to bidirectional attention
    (EmbeddingGemma: Gemma-3 with `use_bidirectional_attention: true`; Gemma-4's `"all"`; `is_causal: false`), in
    config.json or its `text_config`."""
    config = read_json(cfg, "config.json")
    if config.get("model_type") in ENCODER_ONLY_MODEL_TYPES | BIDIRECTIONAL_MODEL_TYPES:
        return True
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    if any(
        c.get("use_bidirectional_attention") in (True, "all") or c.get("is_causal") is False for c in (config, text)
    ):
        return True
    masked_lm = model_types("MODEL_FOR_MASKED_LM_MAPPING_NAMES")
    return config.get("model_type") in masked_lm and not config.get("is_decoder", False)


def resolve_pooling(cfg: ModelConfig) -> PoolingChoice:
    """The pooling to run: an explicit model.pooling, else what the model declares, else the architecture default.

    Raises:
        ModelUnavailableError: the model's files cannot be read.
        UserError: with `auto`, the model declares several pooling modes (concatenated), which rayembed cannot
            serve; pipeline.model_loading.check_model refuses them under an explicit pooling too.
    """
    if cfg.pooling != "auto":
        return PoolingChoice(cfg.pooling, "model.pooling")
    modes, filename = declared_pooling(cfg)
    if modes:
        ours = to_our_pooling(modes)
        if ours is None:
            raise UserError(
                f"model {cfg.name_or_path} declares pooling {modes} in {filename}, which rayembed cannot serve "
                f"(it serves one of: {', '.join(POOLINGS)}; sentence-transformers concatenates several modes "
                "into one wider vector)"
            )
        return PoolingChoice(ours, filename)
    if is_encoder(cfg):
        return PoolingChoice("mean", "default for an encoder without a sentence-transformers Pooling module")
    return PoolingChoice("last_token", "default for a decoder without a sentence-transformers Pooling module")


def model_prompt(cfg: ModelConfig, kind: str) -> tuple[str, str | None]:
    """(prompt text, name of the model prompt it came from or None) for a corpus of `kind` (document/query).

    Raises:
        ValueError: model.prompt_name is not one of the model's prompts.
    """
    config = st_config_of(cfg)
    prompts, placeholders = declared_prompts(config), placeholder_names(config)
    default_name = config.get("default_prompt_name")
    prompt = resolve_prompt(cfg, kind, prompts, default_name, placeholders)
    explicit = cfg.prompt is not None or (kind == "query" and cfg.task is not None and cfg.prompt_name is None)
    name = None if explicit else (cfg.prompt_name or role_prompt_name(kind, prompts, default_name, placeholders))
    return prompt, name


def st_config_of(cfg: ModelConfig) -> dict[str, Any]:
    if is_local(cfg):
        return st_config(Path(cfg.name_or_path))
    return read_json(cfg, ST_CONFIG)


# sentence-transformers' similarity_fn_name values whose scores normalizing changes (cosine is the one it does not)
UNNORMALIZED_SCORES = {
    "dot": "dot product",
    "dot_product": "dot product",
    "euclidean": "euclidean distance",
    "manhattan": "manhattan distance",
}


def warn_normalization(cfg: ModelConfig) -> None:
    """Warn once, on the driver, where model.normalize contradicts what the model's sentence-transformers modules do.

    A model scored by dot product with no Normalize module (msmarco-*-dot, TAS-B) ranks by unnormalized vectors, so
    the default normalize changes its scores; `normalize: false` on a model with a Normalize module drops the
    normalization sentence-transformers always applies.
    """
    if not model_file(cfg, "modules.json"):
        return
    layout = module_layout(cfg)
    similarity = str(st_config_of(cfg).get("similarity_fn_name") or "")
    scored = UNNORMALIZED_SCORES.get(similarity.lower())
    if cfg.normalize and not layout.normalize and scored is not None:
        log.warning(
            "model %s is scored by %s and has no Normalize module, but model.normalize is true: its vectors are "
            "L2-normalized (cosine scores); set model.normalize: false to keep its %s scores",
            cfg.name_or_path,
            scored,
            scored,
        )
    elif not cfg.normalize and layout.normalize:
        log.warning(
            "model.normalize is false but model %s declares a Normalize module (modules.json): sentence-transformers "
            "always normalizes its vectors; these are not",
            cfg.name_or_path,
        )


def with_model_defaults(cfg: C) -> tuple[C, PoolingChoice]:
    """`cfg` (any config with a `model` section) with model.pooling resolved, after checking the model exists (a
    short sentence-transformers name completed, with_hub_id), and output.dimensions from the model's `truncate_dim`
    when the config leaves it unset (with_model_dimensions).

    Raises:
        ModelUnavailableError, UserError: see check_available, check_model_kind and resolve_pooling.
    """
    model = with_hub_id(cfg.model)
    if model is not cfg.model:
        cfg = cfg.model_copy(update={"model": model})
    check_model_kind(cfg.model)
    warn_normalization(cfg.model)
    choice = resolve_pooling(cfg.model)
    if choice.pooling != cfg.model.pooling:
        log.info("model.pooling auto -> %s (%s)", choice.pooling, choice.source)
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"pooling": choice.pooling})})
    return with_model_dimensions(cfg), choice


def with_model_dimensions(cfg: C) -> C:
    """`cfg` with output.dimensions = the model's saved `truncate_dim` (config_sentence_transformers.json, which
    sentence-transformers applies by default to a Matryoshka model saved with it) where output.dimensions is not set
    in the config; an explicit `dimensions: null` keeps every dimension. A truncate_dim at or above the model's
    dimension keeps every dimension too, as sentence-transformers' slice `[:, :truncate_dim]` does (it made every
    job fail with 'output.dimensions exceeds the dimension of model', a key the config never set)."""
    output = getattr(cfg, "output", None)
    if output is None or "dimensions" not in type(output).model_fields or "dimensions" in output.model_fields_set:
        return cfg
    saved = st_config_of(cfg.model).get("truncate_dim")
    if not isinstance(saved, int) or isinstance(saved, bool) or saved <= 0:
        return cfg
    if saved >= (model_dimension(cfg.model) or saved + 1):
        return cfg
    log.info("output.dimensions -> %d (the model's truncate_dim, %s)", saved, ST_CONFIG)
    return cfg.model_copy(update={"output": output.model_copy(update={"dimensions": saved})})
