"""Models that are not one text transformer whose token states rayembed pools, refused on the driver by what they are.

rayembed runs a transformers model over token ids, pools its last hidden states, then the Dense and Normalize
modules a sentence-transformers folder lists. Users also point `model.name_or_path` at folders that give their
vectors another way; each is named here with what it is and what to do, instead of a message about a missing
config.json, a tokenizer without a pad token, or a crash in every model actor:

- a static embedding model (sentence-transformers `StaticEmbedding`, model2vec: a token-embedding table averaged),
- a `Router` / `Asym` (sentence-transformers' query and document routes through different modules),
- a text-image (or text-audio) dual encoder (CLIP, SigLIP, ALIGN, CLAP...), whose text vector is a projection of
  the text tower's pooled output (`get_text_features`),
- a PEFT adapter (LoRA and the like: `adapter_config.json`), whose vectors are its base model's weights changed by
  the adapter's, which rayembed does not apply.

Pure: parsed JSON in, a UserError or None out (no torch, no transformers: its name tables are read as source, pipeline.auto_tables).
"""

from __future__ import annotations

from typing import Any

from pipeline.auto_tables import model_types
from pipeline.errors import UserError

# sentence-transformers modules that replace the transformer: the model gives its vectors another way
STATIC = ("StaticEmbedding",)
ROUTERS = ("Router", "Asym")
DUAL_ENCODER_MODULES = ("CLIPModel",)
# config.json model types of text-image / text-audio dual encoders beyond transformers' zero-shot tables
DUAL_ENCODER_TYPES = frozenset({"clap", "x_clip", "groupvit", "flava", "owlvit", "owlv2"})
STATIC_TYPES = frozenset({"model2vec"})
# transformers' tables whose model types are text-image dual encoders (CLIP, SigLIP, ALIGN, OWL-ViT, ...)
ZERO_SHOT_TABLES = (
    "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES",
)


def module_kind(entry: dict[str, Any]) -> str:
    """`sentence_transformers.models.Dense` (or `...base.modules.dense.Dense`) -> 'Dense'."""
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def static_refusal(name: str, where: str) -> UserError:
    return UserError(
        f"model {name} is a static embedding model ({where}): each vector is the mean of rows of a token-embedding "
        "table, and no transformer runs. rayembed runs transformer models, so it is refused; embed it with model2vec "
        "(StaticModel.from_pretrained(PATH).encode(texts)) or sentence-transformers, which need no model actors"
    )


def module_refusal(name: str, modules: list[dict[str, Any]], routes: list[str] | None = None) -> UserError | None:
    """The refusal for a modules.json whose modules give their vectors without rayembed's one transformer chain.

    Args:
        name: model.name_or_path, for the message.
        modules: the modules.json entries, in order.
        routes: the route names of a Router / Asym (the `structure` of its router_config.json / asym_config.json),
            when read.

    Returns None when no module is one of these kinds (other unknown modules are module_layout's to refuse).
    """
    for entry in modules:
        kind, path = module_kind(entry), entry.get("path") or ""
        where = f"sentence-transformers {kind} {f'in {path}/' if path.strip('./') else 'at the root'}, modules.json"
        if kind in STATIC:
            return static_refusal(name, where)
        if kind in ROUTERS:
            named = f": routes {', '.join(routes)}" if routes else ""
            return UserError(
                f"model {name} sends texts through different modules by kind ({where}{named}); rayembed runs one chain of modules for every text, so it is refused. "
                "Embed it with sentence-transformers (encode_query / encode_document), or make each route a model "
                "folder of its own (the route's Transformer folder with its Pooling, Dense and Normalize modules in "
                "a modules.json) and run one job per route with input.kind set"
            )
        if kind in DUAL_ENCODER_MODULES:
            return dual_encoder_refusal(name, where)
    return None


def dual_encoder_refusal(name: str, where: str) -> UserError:
    return UserError(
        f"model {name} is a text-image (or text-audio) dual encoder ({where}): its text vector is a projection of "
        "its text tower's pooled output (get_text_features), in a space shared with images, not a pooling of "
        "token states. rayembed runs text transformers only, so it is refused; embed it with sentence-transformers "
        "or transformers' get_text_features"
    )


def config_refusal(name: str, config: dict[str, Any]) -> UserError | None:
    """The refusal for a config.json whose model type is a static embedding model or a dual encoder; None otherwise.

    Dual encoders are the model types of transformers' zero-shot image classification and object detection tables
    (CLIP, SigLIP, ALIGN, AltCLIP, BLIP, OWL-ViT...) and DUAL_ENCODER_TYPES.
    """
    model_type = config.get("model_type")
    if model_type in STATIC_TYPES:
        return static_refusal(name, f"config.json model_type {model_type!r}")
    if model_type in DUAL_ENCODER_TYPES | model_types(*ZERO_SHOT_TABLES):
        return dual_encoder_refusal(name, f"config.json model_type {model_type!r}")
    return None


ADAPTER_CONFIG = "adapter_config.json"


def adapter_refusal(name: str, adapter: dict[str, Any], beside_weights: bool) -> UserError:
    """The refusal for a folder holding a PEFT adapter (`adapter_config.json`: LoRA, IA3, ...).

    sentence-transformers (with peft installed) loads the adapter's base model, from the hub id the adapter names,
    and applies the adapter; rayembed loads full weights only: of an adapter alone every model actor failed ('no
    file named model.safetensors'), and beside full weights (a config.json and model.safetensors) the adapter was
    left out without a word, the base model's vectors stored as the fine-tuned one's.

    Args:
        beside_weights: the folder holds a config.json and full weights besides the adapter's.
    """
    base = adapter.get("base_model_name_or_path") or "BASE"
    kind = adapter.get("peft_type") or "PEFT"
    beside = (
        "; the folder's own weights would be embedded without it, vectors of the model before fine-tuning"
        if beside_weights
        else ""
    )
    return UserError(
        f"model {name} holds a PEFT adapter ({ADAPTER_CONFIG}: {kind} on base model {base!r}), which rayembed does "
        f"not apply{beside}. Merge it into its base and embed the merged model: PeftModel.from_pretrained("
        f"AutoModel.from_pretrained({base!r}), {name!r}).merge_and_unload().save_pretrained(OUT), then copy the "
        "tokenizer files and sentence-transformers files (modules.json, 1_Pooling/, ...) to OUT and set "
        "model.name_or_path=OUT"
    )
