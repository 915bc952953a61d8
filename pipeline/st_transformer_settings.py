"""Settings of sentence-transformers' Transformer module (its `sentence_bert_config.json`) that change the vectors.

sentence-transformers builds the Transformer module from that file: besides `max_seq_length` and `do_lower_case`
(pipeline.model_limits, pipeline.model_loading) and `modality_config` (pipeline.model_defaults), it passes
`config_kwargs` to AutoConfig, `model_kwargs` to the model's from_pretrained, `processor_kwargs` to AutoTokenizer,
`processing_kwargs` to every tokenizer call, and reads `transformer_task`, `module_output_name`,
`tokenizer_name_or_path`, `query_length` / `document_length` and `query_expansion` (older files: `config_args`,
`model_args`, `tokenizer_args`). rayembed loads config.json, the weights and the tokenizer as saved, so such a
setting was ignored without a word: `config_args: {num_hidden_layers: 1}` ran every layer, `tokenizer_args:
{truncation_side: left}` kept the start of long texts (cosine 0.91 to sentence-transformers' vectors on a tiny BERT).

Settings that do not change the vectors (dtype, attention kernel: attn_implementation, unpad_inputs,
use_memory_efficient_attention, use_flash_attn; trust_remote_code, padding side) pass;
`model_max_length` in the tokenizer kwargs is applied as sentence-transformers applies it (it replaces
`max_seq_length`, pipeline.model_limits); any other is refused, naming the file, key and value and what to do. Pure:
JSON in, no model loaded.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import UserError

# kwarg sections, with their pre-5 names, and the keys in each that leave the vectors as rayembed computes them
CONFIG_KWARGS = ("config_kwargs", "config_args")
MODEL_KWARGS = ("model_kwargs", "model_args")
TOKENIZER_KWARGS = ("processor_kwargs", "tokenizer_args")
LOADING = {"trust_remote_code", "revision", "cache_dir", "token", "local_files_only", "use_auth_token"}
# attention-kernel switches of remote-code encoders, set in config_kwargs (model_kwargs reach the config too): gte /
# stella's NewModel (unpad_inputs, use_memory_efficient_attention: xformers or not), jina-bert and nomic-bert
# (use_flash_attn); each computes the same attention, and their model cards set them to run without xformers
KERNELS = {"unpad_inputs", "use_memory_efficient_attention", "use_flash_attn"}
HARMLESS = {
    "config_kwargs": LOADING | KERNELS | {"use_cache", "attn_implementation"},
    "model_kwargs": LOADING
    | KERNELS
    | {"torch_dtype", "dtype", "attn_implementation", "low_cpu_mem_usage", "device_map", "use_safetensors"}
    | {"add_pooling_layer"},  # BERT's pooler, which no embedding goes through
    "processor_kwargs": LOADING | {"padding_side", "use_fast", "clean_up_tokenization_spaces", "model_max_length"},
}
WHAT = {
    "config_kwargs": "overrides of config.json",
    "model_kwargs": "arguments of the model's from_pretrained",
    "processor_kwargs": "arguments of the tokenizer's from_pretrained",
}
# single settings: the values that mean what rayembed does
PLAIN = {
    "transformer_task": (None, "feature-extraction"),
    "module_output_name": (None, "token_embeddings"),
    "tokenizer_name_or_path": (None, ""),
    "query_length": (None,),
    "document_length": (None,),
    "query_expansion": (None,),
}
PLAIN_WHAT = {
    "transformer_task": "its vectors come from another head than the hidden states rayembed pools",
    "module_output_name": "the pooling reads another output than the token embeddings",
    "tokenizer_name_or_path": "it tokenizes with that tokenizer, rayembed with the one in the model folder",
    "query_length": "it cuts queries at that length; model.max_tokens does so for a run",
    "document_length": "it cuts documents at that length; model.max_tokens does so for a run",
    "query_expansion": "it pads queries with expansion tokens (ColBERT), a multi-vector setting",
}


def kwarg_sections(settings: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name as written, current name, kwargs) of each kwarg section the file has (a file may use the pre-5
    `*_args` names)."""
    return [
        (name, names[0], settings[name])
        for names in (CONFIG_KWARGS, MODEL_KWARGS, TOKENIZER_KWARGS)
        for name in names
        if isinstance(settings.get(name), dict)
    ]


def tokenizer_max_length(settings: dict[str, Any]) -> int | None:
    """`model_max_length` in the tokenizer kwargs: sentence-transformers truncates there instead of at
    `max_seq_length`, longer or shorter (sentence-transformers 6.2, checked with its `preprocess`)."""
    values = [kw.get("model_max_length") for _, section, kw in kwarg_sections(settings) if section in TOKENIZER_KWARGS]
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return ints[0] if ints else None


def unapplied_settings(settings: dict[str, Any]) -> list[str]:
    """One description per setting of `settings` (a parsed sentence_bert_config.json) that changes what
    sentence-transformers computes and rayembed does not apply; [] when there is none."""
    found = []
    for written, section, kwargs in kwarg_sections(settings):
        for key in sorted(set(kwargs) - HARMLESS[section]):
            found.append(f"{written} {key}: {kwargs[key]!r} ({WHAT[section]})")
    for key, fine in PLAIN.items():
        if settings.get(key) not in fine:
            found.append(f"{key}: {settings[key]!r} ({PLAIN_WHAT[key]})")
    processing = settings.get("processing_kwargs")
    for bucket in ("common", "text"):
        if isinstance(processing, dict) and processing.get(bucket):
            found.append(f"processing_kwargs {bucket}: {processing[bucket]!r} (arguments of every tokenizer call)")
    return found


def check_transformer_settings(name: str, filename: str, settings: dict[str, Any]) -> None:
    """Refuse a Transformer module whose settings sentence-transformers applies and rayembed would ignore.

    Args:
        name: the model, for the message.
        filename: the file the settings come from (sentence_bert_config.json, or under the module's folder).
        settings: its parsed content.

    Raises:
        UserError: naming every such setting, and what to do.
    """
    found = unapplied_settings(settings)
    if found:
        raise UserError(
            f"model {name}: {filename} sets {'; '.join(found)}. sentence-transformers applies "
            f"{'this' if len(found) == 1 else 'these'} when it loads the model and rayembed does not, so its vectors "
            "would differ; it is refused. Write the change into the model itself (config.json, the tokenizer files) "
            f"or, where it should not apply, delete the key from {filename} (in a copy of the model)"
        )
