"""Load a Hugging Face model + tokenizer the same way for the hub and for a local directory.

torch and transformers are imported where a model or tokenizer is loaded, not at module import: the driver runs
check_model and load_prompts on a local model directory without paying for them (seconds of start-up).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pipeline.columns import POOLINGS
from pipeline.config import ModelConfig
from pipeline.errors import UserError
from pipeline.load_report import held_load_report
from pipeline.model_architecture import runs_encoder_only
from pipeline.model_defaults import (
    check_dense_chain,
    declared_pooling,
    model_file,
    module_layout,
    resolve_pooling,
    to_our_pooling,
)
from pipeline.model_limits import apply_token_limit, token_limit
from pipeline.pointer_files import lfs_pointers, pointer_message
from pipeline.prompts import ST_CONFIG, named_prompts
from pipeline.sentencepiece_files import KNOWN, sentencepiece_file_names
from pipeline.tokenization import bos_convention, eos_convention
from pipeline.tokenizer_snapshot import TokenizerSnapshot

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class ModelLoadError(UserError, RuntimeError):
    """The configured model cannot be loaded or cannot serve the configured pooling."""


def pick_device() -> torch.device:
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pick_attention(requested: str, device: torch.device) -> str:
    """'auto' is FlashAttention-2 on a GPU where the flash_attn package imports, else PyTorch SDPA (load_model falls
    back to transformers' default, eager attention, for an architecture that supports neither)."""
    if requested != "auto":
        return requested
    has_flash = device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if has_flash else "sdpa"


def pick_dtype(cfg: ModelConfig, device: torch.device, checkpoint_dtype: torch.dtype | None) -> torch.dtype:
    """'auto' is the checkpoint's own dtype on GPU and float32 on CPU (half precision on CPU is opt-in)."""
    import torch

    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)  # float32, bfloat16 or float16
    if device.type == "cuda":
        if checkpoint_dtype in (torch.bfloat16, torch.float16):
            return checkpoint_dtype
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class TokenizerPadding(NamedTuple):
    """What the model actor needs of the tokenizer: the id written into padded positions and the side padded.

    Resolved once on the driver (pipeline.model_loading.resolve_model_settings) and handed to the model actors, so
    they do not load the tokenizer again (seconds per actor for a large vocabulary, on the start-up path).
    """

    pad_token_id: int
    padding_side: str  # "left" or "right"

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> TokenizerPadding:
        return cls(int(tokenizer.pad_token_id), str(tokenizer.padding_side))


@dataclass(frozen=True)
class ModelSettings:
    """The driver's resolution of a model: the config with its effective token limit, the metadata entries that
    record the limit and the EOS convention, the tokenizer's padding, and the tokenizer as loaded (configured
    padding side and pad token) where it was loaded: None when the resolution came from pipeline.resolution_cache.

    `snapshot` (pipeline.tokenizer_snapshot) goes to the tokenizer actors, which rebuild the tokenizer from it
    without transformers' model-specific class (nor torch); it is remembered with the resolution, so reruns ship it
    too. Where there is none (a slow tokenizer), `shipped_tokenizer` goes instead: unpickling it costs a fraction of
    loading it.
    """

    model: ModelConfig
    metadata: dict[str, str]
    tokenizer: PreTrainedTokenizerBase | None
    padding: TokenizerPadding
    snapshot: TokenizerSnapshot | None = None
    # the model's identity the run's fingerprint records (pipeline.fingerprint.model_identity): what the workers are
    # held to (pipeline.model_files); None: not checked
    identity: dict[str, str] | None = None

    @property
    def shipped_tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The tokenizer to hand to the tokenizer actors, or None where they must load their own: not loaded on the
        driver, or a tokenizer with code shipped with the model, which may not pickle and whose code should run
        where the user expects it, or a fast tokenizer with no snapshot because its backend cannot be serialized
        (a pre-tokenizer written in Python: RoFormer's), which cannot be pickled either."""
        if self.model.trust_remote_code or self.tokenizer is None:
            return None
        if self.snapshot is None and getattr(self.tokenizer, "is_fast", False):
            from pipeline.tokenizer_snapshot import backend_json

            return self.tokenizer if backend_json(self.tokenizer) is not None else None
        return self.tokenizer


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    warn_remote_code(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            cfg.name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except Exception as err:
        # a broken file raises KeyError, ValueError, OSError or the Rust tokenizers' plain Exception, depending on
        # which file and how: re-raised naming the model, the cause chained
        raise ModelLoadError(
            f"cannot load the tokenizer of model {cfg.name_or_path}: {type(err).__name__}: {err}; "
            + (
                sentencepiece_hint(cfg)
                or "check its tokenizer.json, tokenizer_config.json and config.json (a local directory as "
                "save_pretrained writes it)"
            )
        ) from err
    if cfg.padding_side != "auto":
        tokenizer.padding_side = cfg.padding_side
    if declares_lower_case(cfg):
        lower_case(tokenizer)
    if tokenizer.pad_token_id is None:
        # Decoder tokenizers often have no pad token; any id works because padded positions are masked out.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(f"tokenizer of {cfg.name_or_path} has no pad, eos or unk token to pad with")
    return tokenizer


# SentencePiece model files of tokenizers saved without a tokenizer.json: the names known without a lookup (T5, mT5,
# XLM-R, Llama / Mistral, Marian, RemBERT, DeBERTa-v2/v3); sentencepiece_hint looks for every name transformers'
# tokenizers declare (pipeline.sentencepiece_files)
SENTENCEPIECE_FILES = KNOWN


def sentencepiece_hint(cfg: ModelConfig) -> str:
    """What to do when the tokenizer is a SentencePiece model without a tokenizer.json and the sentencepiece package
    is missing: transformers then falls back to reading the file as tiktoken and fails saying `tiktoken` is required,
    which names neither the file nor the fix. '' in any other case."""
    if importlib.util.find_spec("sentencepiece") is not None or model_file(cfg, "tokenizer.json") is not None:
        return ""
    found = [name for name in sentencepiece_file_names() if model_file(cfg, name) is not None]
    if not found:
        return ""
    return (
        f"its tokenizer is a SentencePiece model ({found[0]}) without a tokenizer.json, which transformers reads only "
        "with the sentencepiece package, not installed here (it then tries the file as tiktoken, hence that "
        "message): install sentencepiece (pip install sentencepiece), or put the model's tokenizer.json in the "
        "folder (AutoTokenizer.from_pretrained(PATH).save_pretrained(PATH) where sentencepiece is installed writes it)"
    )


def declares_lower_case(cfg: ModelConfig) -> bool:
    """`do_lower_case` of the model's sentence_bert_config.json: sentence-transformers lowercases every input."""
    path = model_file(cfg, "sentence_bert_config.json")
    return path is not None and json.loads(path.read_text()).get("do_lower_case") is True


def lower_case(tokenizer: PreTrainedTokenizerBase) -> None:
    """Lowercase in the tokenizer's own normalizer, as sentence-transformers does for `do_lower_case` (the prompt
    too; character offsets still point into the original text, so chunk spans stay right).

    Raises:
        ModelLoadError: a slow tokenizer (no normalizer to extend).
    """
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError("sentence_bert_config.json sets do_lower_case, which rayembed applies to fast tokenizers")
    backend = tokenizer.backend_tokenizer
    current = backend.normalizer
    if current is not None and "Lowercase" in repr(current):
        return
    parts = [Lowercase()] + (list(current) if isinstance(current, NormalizerSequence) else [current] if current else [])
    backend.normalizer = NormalizerSequence(parts)


def pooling_skip(cfg: ModelConfig, prompt: str, tokenizer: PreTrainedTokenizerBase | None = None) -> int:
    """Leading tokens of every row to leave out of pooling: the prompt's, when the model's Pooling module has
    `include_prompt: false`, else 0.

    Counted as sentence-transformers counts them (Transformer._get_prompt_length): the prompt tokenized alone with
    the special tokens, less a trailing special token (EOS/SEP), so a leading one (CLS/BOS) is left out too.
    `tokenizer`: the model's, as load_tokenizer gives it (None: loaded here, only when needed).
    """
    if not prompt or module_layout(cfg).include_prompt:
        return 0
    tokenizer = tokenizer or load_tokenizer(cfg)
    ids = tokenizer(prompt)["input_ids"]
    prepended = bos_convention(tokenizer, declared_add_bos(cfg)).append  # a BOS rayembed puts first is before it
    return len(ids) - int(bool(ids) and ids[-1] in tokenizer.all_special_ids) + int(prepended)


def load_model(cfg: ModelConfig, device: torch.device) -> PreTrainedModel:
    """The transformer body (AutoModel, no LM head) in eval mode on `device`; of a T5-style encoder-decoder
    (sentence-t5, GTR: ENCODER_ONLY_MODEL_TYPES) its encoder alone, as sentence-transformers runs them. The whole
    model is read, then its decoder dropped before the move to `device`: a transient second copy of the weights in
    host memory."""
    from transformers import AutoConfig, AutoModel

    warn_remote_code(cfg)
    check_local_weights(cfg)
    config = AutoConfig.from_pretrained(
        cfg.name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
    )
    dtype = pick_dtype(cfg, device, getattr(config, "dtype", None))

    def from_pretrained(attention: str | None) -> tuple[PreTrainedModel, dict]:
        return AutoModel.from_pretrained(
            cfg.name_or_path,
            revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code,
            use_safetensors=None if cfg.allow_pickle_weights else True,
            dtype=dtype,
            attn_implementation=attention,
            output_loading_info=True,
        )

    # transformers' LOAD REPORT is shown when the load fails or lacks weights the vectors go through, not for an
    # unused pooler (multilingual-e5) in every actor of every run
    with held_load_report(cfg.name_or_path):
        try:
            try:
                loaded, info = from_pretrained(pick_attention(cfg.attn_implementation, device))
            except ValueError as err:
                if cfg.attn_implementation != "auto":
                    raise
                # an architecture without SDPA or FlashAttention-2 support (MPNet: all-mpnet-base-v2; DeBERTa-v2):
                # transformers' own default then, SDPA where the model supports it, else its eager attention
                log.info("model %s: %s; loading it with transformers' default attention", cfg.name_or_path, err)
                loaded, info = from_pretrained(None)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot load model {cfg.name_or_path}: {err}") from err
        # its decoder would need decoder inputs (T5Model's forward refuses to run)
        model = loaded.get_encoder() if runs_encoder_only(config) else loaded
        try:
            check_weights_loaded(cfg.name_or_path, loaded, model, info.get("missing_keys", ()))
        except ModelLoadError as err:
            shipped = (getattr(config, "auto_map", None) or {}).get("AutoModel")
            if not shipped or cfg.trust_remote_code:
                raise
            # jina-embeddings-v2: model_type bert, its own ALiBi class in auto_map; the stock BertModel lacks weights
            raise ModelLoadError(
                f"{err}. Its config.json auto_map names the model's own code (AutoModel: {shipped}), which runs only "
                "with model.trust_remote_code: true (sentence-transformers' trust_remote_code=True); set it if you "
                "trust the code"
            ) from err
    return model.to(device).eval()  # `model.compile` is applied by the Encoder, after its load-time probes


def check_weights_loaded(name: str, loaded: torch.nn.Module, runs: torch.nn.Module, missing: Iterable[str]) -> None:
    """Refuse a model whose checkpoint lacks weights that the embeddings go through.

    transformers initializes a weight the checkpoint lacks at random and only logs it (its LOAD REPORT), as
    sentence-transformers does; here each model actor would then draw different weights and compute different
    vectors for the same text, a whole run of them wrong (TEI refuses such a checkpoint too). Missing weights that
    no embedding goes through are fine: BERT's `pooler` (rayembed pools the hidden states itself) and, for a model
    run encoder-only, the decoder (`runs`, the module run, is then `loaded`'s encoder).

    Args:
        loaded: the model as transformers loaded it; `missing`: its `missing_keys` (names relative to `loaded`).
        runs: the module whose outputs are pooled: `loaded` or a part of it.

    Raises:
        ModelLoadError: naming up to five of the missing weights and their count.
    """
    used = {id(p) for p in runs.parameters()}
    pooler = getattr(runs, "pooler", None)  # None in a BERT built without one
    unused = {id(p) for p in pooler.parameters()} if pooler is not None else set()
    lacking = []
    for key in sorted(missing):
        try:
            param = loaded.get_parameter(key)
        except AttributeError:  # a buffer, or a name transformers renamed: not a weight of the module run
            continue
        if id(param) in used and id(param) not in unused and not computed_table(loaded, key):
            lacking.append(key)
    if lacking:
        total = sum(1 for _ in runs.parameters())
        raise ModelLoadError(
            f"cannot load model {name}: {len(lacking)} of the {total} weights of {type(runs).__name__} are not in "
            f"its checkpoint ({', '.join(lacking[:5])}{', ...' if len(lacking) > 5 else ''}); transformers would "
            "initialize them at random, differently in every model actor. Check that model.name_or_path is the "
            "folder of the model itself (config.json beside its weights) and that the checkpoint was saved for "
            "this architecture"
        )


def computed_table(loaded: torch.nn.Module, key: str) -> bool:
    """Whether parameter `key` of `loaded` is a sinusoidal position table (Marian, Pegasus, FSMT: a module class named
    *Sinusoidal*), whose values transformers computes from its shape at load, the same in every actor: transformers 5
    does not save it, so a checkpoint it wrote (a fine-tuned opus-mt) lacks it and is still whole."""
    owner = loaded.get_submodule(key.rpartition(".")[0]) if "." in key else loaded
    return "Sinusoidal" in type(owner).__name__


def check_local_weights(cfg: ModelConfig) -> None:
    """A local model directory must hold safetensors weights (or .bin ones, when pickles are allowed), each file whole
    and present, and no file of it may be a Git LFS pointer (pipeline.pointer_files).

    Every `*.safetensors` file's header, the model's and each Dense module's, is parsed and checked against the
    file's size (safetensors' own `safe_open`, which maps the file and reads no tensor: milliseconds), and every
    shard a sharded checkpoint's index names must exist, so a truncated, corrupt or partial download fails here,
    naming the file, instead of in every model actor's constructor, restart after restart.

    Raises:
        ModelLoadError: no usable weights, a weights file that does not open, a shard the index names that is not
            there, or a Git LFS pointer in place of a file.
    """
    local = Path(cfg.name_or_path)
    if local.is_dir():
        pointers = lfs_pointers(local)
        if pointers:
            raise ModelLoadError(pointer_message(local, pointers))
    weights = sorted(local.glob("*.safetensors"))
    pickles_allowed = cfg.allow_pickle_weights and any(local.glob("*.bin"))
    if local.exists() and not weights and not pickles_allowed:
        hint = "" if cfg.allow_pickle_weights else " (pickle .bin weights load only with model.allow_pickle_weights)"
        raise ModelLoadError(f"{local} has no *.safetensors weights{hint}{exported_weights_hint(local)}")
    check_shards(local, weights, pickles_allowed)
    if local.is_dir():
        weights += [p for spec in module_layout(cfg).dense for p in sorted((local / spec.path).glob("*.safetensors"))]
    from safetensors import SafetensorError, safe_open

    for path in weights:
        try:
            with safe_open(path, framework="numpy"):
                pass
        except (SafetensorError, OSError) as err:
            raise ModelLoadError(
                f"model weights {path} do not load: {err}. A truncated or corrupt download? Fetch the file again"
            ) from err


def check_shards(local: Path, weights: list[Path], pickles_allowed: bool) -> None:
    """Every file the index of a sharded checkpoint names is in `local`: the safetensors index where no single
    `model.safetensors` is there (transformers then loads the shards), the .bin one where .bin weights are what load.

    Raises:
        ModelLoadError: naming the index and the shards it lists that are missing (a partial download or copy).
    """
    indexes = []
    if not (local / "model.safetensors").is_file():
        indexes.append(local / "model.safetensors.index.json")
    if not weights and pickles_allowed and not (local / "pytorch_model.bin").is_file():
        indexes.append(local / "pytorch_model.bin.index.json")
    for index in indexes:
        if not index.is_file():
            continue
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelLoadError(f"sharded checkpoint index {index} does not read: {err!r}. Fetch it again") from err
        missing = [name for name in shards if not (local / name).is_file()]
        if missing:
            raise ModelLoadError(
                f"model directory {local}: {len(missing)} of the {len(shards)} weight shards that {index.name} lists "
                f"are not there ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): a partial download "
                "or copy? Fetch the missing files"
            )


def exported_weights_hint(local: Path) -> str:
    """'' or what to do when the folder holds only an export for another runtime (sentence-transformers' backend
    'onnx' / 'openvino' folders, optimum's model.onnx / openvino_model.xml), which rayembed does not run."""
    exports = sorted(
        {
            str(p.relative_to(local))
            for pattern in ("*.onnx", "*/*.onnx", "openvino*.xml", "*/openvino*.xml")
            for p in local.glob(pattern)
        }
    )
    if not exports:
        return ""
    return (
        f"; it holds {', '.join(exports[:3])}: weights exported for ONNX Runtime / OpenVINO (sentence-transformers' "
        "backend='onnx' / 'openvino'), which rayembed does not run. It runs the PyTorch weights, as "
        "sentence-transformers' default backend does: put the model's model.safetensors (the hub repo's) in the folder"
    )


def check_model(cfg: ModelConfig) -> None:
    """Fail on the driver, before any actor starts, when the model cannot give the vectors the config asks for.

    A model trained with one pooling gives meaningless vectors under another, a sentence-transformers module
    rayembed does not run would silently change them (pipeline.model_defaults.module_layout), and a model directory
    without weights would otherwise fail inside every embedding actor, restart after restart.
    """
    check_local_weights(cfg)
    check_model_pooling(cfg)
    check_dense_chain(cfg)


def check_model_pooling(cfg: ModelConfig) -> None:
    """The configured pooling is the one the model declares, and the model declares nothing rayembed cannot run.

    Raises:
        ModelLoadError: a contradicting or unservable pooling.
        UserError: a sentence-transformers module rayembed does not run (pipeline.model_defaults.module_layout).
    """
    modes, filename = declared_pooling(cfg)
    if not modes:
        return
    ours = to_our_pooling(modes)
    if ours is None:  # sentence-transformers concatenates several modes
        raise ModelLoadError(
            f"model {cfg.name_or_path} declares pooling {modes} in {filename}, which rayembed cannot serve "
            f"(one of: {', '.join(POOLINGS)})"
        )
    if cfg.pooling != ours:
        raise ModelLoadError(
            f"model {cfg.name_or_path} was trained with {' + '.join(modes)} pooling ({filename}) but "
            f"model.pooling is {cfg.pooling!r}; set model.pooling: {ours} (or auto)"
        )


def load_prompts(cfg: ModelConfig) -> dict[str, str]:
    """The model's named prompts, from a local directory or the hub cache."""
    local = Path(cfg.name_or_path)
    if local.is_dir():
        return named_prompts(local)
    from transformers.utils import cached_file

    path = cached_file(cfg.name_or_path, ST_CONFIG, revision=cfg.revision, _raise_exceptions_for_missing_entries=False)
    return named_prompts(Path(path).parent) if path else {}


def remote_code_fix(cfg: ModelConfig, err: BaseException, lead: str) -> str:
    """What to set when transformers refused to run code shipped with the model (an `auto_map` in config.json naming a
    model type transformers lacks): its message names its own argument, trust_remote_code=True, not rayembed's key.
    '' for any other error, or when the code is trusted already."""
    if cfg.trust_remote_code or "trust_remote_code" not in str(err):
        return ""
    return (
        f"{lead}the model ships its own code: set model.trust_remote_code: true (sentence-transformers' and "
        "transformers' trust_remote_code=True) if you trust the code in it"
    )


def warn_untrusted_code(cfg: ModelConfig, config: PretrainedConfig) -> None:
    """A warning on the driver when the model ships code that model.trust_remote_code false leaves unrun (shipped_code:
    config.json's auto_map naming the model's own class for a model type transformers knows, tokenizer_config.json's
    naming its own tokenizer): transformers' stock classes run instead (jina-embeddings-v2: BertModel without its
    ALiBi), as in sentence-transformers without trust_remote_code=True. Logged within the driver's resolution, so
    pipeline.resolution_cache writes it again on every run it serves."""
    shipped = shipped_code(cfg, config)
    if shipped and not cfg.trust_remote_code:
        log.warning(
            "model %s ships its own code (%s), not run: model.trust_remote_code is false, so transformers' own %s "
            "classes run. Vectors can differ from the model card's; set model.trust_remote_code: true if you trust "
            "the code",
            cfg.name_or_path,
            "; ".join(f"{where}: {name}" for where, name in shipped.items()),
            getattr(config, "model_type", "?"),
        )


def shipped_code(cfg: ModelConfig, config: PretrainedConfig) -> dict[str, str]:
    """{where: class} of the code the model ships for what rayembed loads: config.json auto_map AutoConfig and
    AutoModel, tokenizer_config.json auto_map AutoTokenizer (a [slow, fast] pair or one name). {} when none."""
    found = {}
    auto_map = getattr(config, "auto_map", None) or {}
    for key in ("AutoConfig", "AutoModel"):
        if auto_map.get(key):
            found[f"config.json auto_map {key}"] = str(auto_map[key])
    path = model_file(cfg, "tokenizer_config.json")
    tokenizer_map = (json.loads(path.read_text()).get("auto_map") if path is not None else None) or {}
    tokenizer = tokenizer_map.get("AutoTokenizer") if isinstance(tokenizer_map, dict) else None
    names = [n for n in (tokenizer if isinstance(tokenizer, list) else [tokenizer]) if isinstance(n, str) and n]
    if names:
        found["tokenizer_config.json auto_map AutoTokenizer"] = ", ".join(names)
    return found


def warn_remote_code(cfg: ModelConfig) -> None:
    if cfg.trust_remote_code:
        log.warning("model.trust_remote_code is true: running code shipped with %s", cfg.name_or_path)


def declared_add_eos(cfg: ModelConfig) -> bool | None:
    """`add_eos_token` from the model's tokenizer_config.json (None when unset), which transformers 5 ignores."""
    return declared_flag(cfg, "add_eos_token")


def declared_add_bos(cfg: ModelConfig) -> bool | None:
    """`add_bos_token` from the model's tokenizer_config.json (None when unset), which transformers 5 ignores."""
    return declared_flag(cfg, "add_bos_token")


def declared_flag(cfg: ModelConfig, key: str) -> bool | None:
    path = model_file(cfg, "tokenizer_config.json")
    if path is None:
        return None
    value = json.loads(path.read_text()).get(key)
    return value if isinstance(value, bool) else None


def resolve_model_settings(cfg: ModelConfig) -> ModelSettings:
    """Decide on the driver what every actor must agree on: the effective token limit, the EOS convention and the
    tokenizer's padding.

    Returns the model config with `max_tokens` set to the effective limit, metadata entries recording the first two,
    and the tokenizer (its padding: ModelSettings.padding).
    Warns when last_token pooling meets a tokenizer that appends no EOS and declares none (the pooled token is then
    the text's own last token: right only for models trained that way).
    """
    from transformers import AutoConfig

    tokenizer = load_tokenizer(cfg)
    try:
        config = AutoConfig.from_pretrained(
            cfg.name_or_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot read the configuration of model {cfg.name_or_path}: {err}{remote_code_fix(cfg, err, '; ')}"
        ) from err
    warn_untrusted_code(cfg, config)
    limit = token_limit(cfg, tokenizer, config)
    resolved = apply_token_limit(cfg, limit)
    eos = eos_convention(tokenizer, declared_add_eos(cfg))
    if eos.append:
        log.info("tokenizer of %s declares add_eos_token but appends no EOS: rayembed appends it", cfg.name_or_path)
    elif resolve_pooling(cfg).pooling == "last_token" and not eos.appended and eos.declared is not True:
        log.warning(
            "model.pooling is last_token but the tokenizer of %s appends no EOS token and declares none "
            "(add_eos_token): each row's own last token is pooled. Right for models trained that way; otherwise "
            "set add_eos_token: true in tokenizer_config.json",
            cfg.name_or_path,
        )
    bos = bos_convention(tokenizer, declared_add_bos(cfg))
    if bos.append:
        log.info("tokenizer of %s declares add_bos_token but prepends no BOS: rayembed prepends it", cfg.name_or_path)
    metadata = {
        "max_tokens_limits": json.dumps(limit.sources),
        "eos_token": eos.describe(),
        "bos_token": bos.describe(),
    }
    # Code shipped with the model (trust_remote_code) runs where the user expects it: the actors load it themselves.
    snapshot = None if cfg.trust_remote_code else TokenizerSnapshot.of(tokenizer)
    return ModelSettings(resolved, metadata, tokenizer, TokenizerPadding.of(tokenizer), snapshot)
