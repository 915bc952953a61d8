"""YAML + `--set` overrides -> a validated pydantic config, with errors that say where to look.

- `--set section.key=value` takes the text after the first `=`: as a plain string when the key is a string field
  (`--set "model.prompt=query: "`, `--set model.revision=20240101`), as YAML otherwise (`x=3`, `x=true`, `x=[a,b]`).
- Every error names its source: `FILE:LINE` for a key written in the YAML, `--set KEY=VALUE` for an override.
- A YAML syntax error is a ConfigError naming the file and line (the jobs exit 2 on it), not a traceback.
- An unknown key suggests ours for another tool's name (`truncate_dim` -> output.dimensions, TEI's `max_batch_tokens`
  -> batching.max_tokens_per_batch), says that rayembed has no such setting and what it does instead (TEI's
  `dense_path`, sentence-transformers' `convert_to_numpy`), names a key of another section, else the closest known one
  of its section ("did you mean pooling?").

Generic over the config class: works for every job's config (embed, mine_bitext, cluster, reembed).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

NULLS = {"null", "~", "Null", "NULL"}


class YamlWord(str):
    """An unquoted yes / no / on / off (any case) as written: YAML 1.1 reads it as a boolean, but `lang: no` is
    Norwegian and `text_column: on` a column. `boolean` is YAML 1.1's reading; config.Section keeps the word where a
    key takes a string and gives the boolean elsewhere (`overwrite: yes` is true, `num_actors: yes` still refused)."""

    boolean: bool

    def __new__(cls, text: str, boolean: bool):
        word = super().__new__(cls, text)
        word.boolean = boolean
        return word


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader but for yes / no / on / off, which load as YamlWord (true and false stay booleans)."""

    def construct_yaml_bool(self, node: yaml.ScalarNode) -> bool | YamlWord:
        value = self.construct_scalar(node)
        boolean = self.bool_values[value.lower()]
        return boolean if value.lower() in ("true", "false") else YamlWord(value, boolean)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """SafeLoader's mapping, refusing a key written twice in one mapping (`text_column: text` and later
        `text_column: txt`): PyYAML keeps the last value without a word, so which one was meant cannot be told.
        A key given by a `<<: *anchor` merge and then written out is an override, as YAML means it, not a repeat.

        Raises:
            yaml.constructor.ConstructorError: naming the key and the lines of both (load_yaml: a ConfigError).
        """
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                first = seen.setdefault(key, key_node)
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"the key {key!r} is written twice in one mapping (first at line {first.start_mark.line + 1}); "
                        "YAML keeps one value without a word, so which one is meant cannot be told: keep one "
                        "(to vary a key per run, use --set KEY=VALUE)",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_constructor("tag:yaml.org,2002:bool", ConfigLoader.construct_yaml_bool)


def load_text(text: str) -> Any:
    """A YAML document of a config or a `--set` value, yes / no / on / off kept as YamlWord."""
    return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader subclass


def plain(value: Any, wants_str: bool) -> Any:
    """`value` with every YamlWord in it (lists too) as its word (`wants_str`) or its boolean."""
    if isinstance(value, YamlWord):
        return str(value) if wants_str else value.boolean
    if isinstance(value, list):
        return [plain(v, wants_str) for v in value]
    return value


class ConfigError(ValueError):
    """A config file that cannot be used; the message says which key and how to fix it."""


def _unwrap(annotation: Any) -> list[Any]:
    """The members of `X | Y | None` (without None), or [annotation]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return [annotation]


def _section(annotation: Any) -> type[BaseModel] | None:
    for member in _unwrap(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def field_annotation(model: type[BaseModel], path: list[str]) -> Any | None:
    """The annotation of the field at `path` (e.g. ["model", "prompt"]), or None when no such field exists."""
    node: type[BaseModel] | None = model
    annotation: Any = None
    for part in path:
        if node is None or part not in node.model_fields:
            return None
        annotation = node.model_fields[part].annotation
        node = _section(annotation)
    return annotation


def section_fields(model: type[BaseModel], path: tuple[Any, ...]) -> list[str] | None:
    """Keys allowed in the section at `path` (() is the top level); None when `path` is not a section."""
    node: type[BaseModel] | None = model
    for part in path:
        if node is None or not isinstance(part, str) or part not in node.model_fields:
            return None
        node = _section(node.model_fields[part].annotation)
    return list(node.model_fields) if node is not None else None


def is_string_field(annotation: Any) -> bool:
    """str, `str | None` or a Literal of strings: a --set value for it is taken verbatim."""
    members = _unwrap(annotation)
    if len(members) != 1:
        return False
    member = members[0]
    if member is str:
        return True
    return typing.get_origin(member) is Literal and all(isinstance(a, str) for a in typing.get_args(member))


def is_string_or_list(annotation: Any) -> bool:
    """`str | list[str]` (input.uri: one location or a list of them), Annotated members included."""
    members = [_unwrap(m)[0] for m in _unwrap(annotation)]
    return len(members) == 2 and str in members and any(typing.get_origin(m) is list for m in members)


def override_value(annotation: Any, text: str) -> Any:
    """The value of `--set key=text` for a field annotated `annotation` (None: unknown key)."""
    if annotation is not None and is_string_or_list(annotation) and text.lstrip().startswith("["):
        try:
            return load_text(text)  # --set input.uri=[a/, b/]
        except yaml.YAMLError:
            return text
    if annotation is not None and (is_string_field(annotation) or is_string_or_list(annotation)):
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
        if quoted:
            return load_text(text)  # '"query: "' -> 'query: ' for users who quote for YAML
        optional = type(None) in typing.get_args(annotation)
        return None if optional and text in NULLS else text
    try:
        value = load_text(text)
    except yaml.YAMLError:
        if annotation is not None and is_string_list(annotation) and text.strip()[:1] + text.strip()[-1:] == "[]":
            # [tags[0], lang]: a list position inside YAML's flow list is a syntax error there
            return [v.strip() for v in text.strip()[1:-1].split(",") if v.strip()]
        return text  # not YAML: let validation say what the key expects
    if annotation is not None and is_string_list(annotation) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]  # --set output.keep_columns=lang,topic
    return value


def is_string_list(annotation: Any) -> bool:
    members = _unwrap(annotation)
    return len(members) == 1 and typing.get_origin(members[0]) is list and typing.get_args(members[0]) == (str,)


def apply_overrides(raw: dict[str, Any], overrides: list[str], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """Apply `a.b=c` overrides to `raw` in place and return it.

    Args:
        raw: the parsed YAML mapping.
        overrides: `section.key=value` strings; the value is everything after the first `=`.
        model: the config class; with it, string fields take the value verbatim instead of parsing it as YAML.

    Raises:
        ConfigError: an override without `=` or a key, a path through a key that is not a section, or a key in an
            extension field (EXTENSION_PREFIX: anchors only, already resolved).
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not of the form section.key=value")
        if any(not part.strip() for part in key.split(".")):
            # `model..x`, `.x`, `model.=1`: an empty name between dots, which no section or key has
            raise ConfigError(
                f"--set {item!r}: the key {key!r} has an empty name between dots; write section.key=value"
            )
        if key.startswith(EXTENSION_PREFIX):
            # the file's anchors were resolved when it was read: a value set here would reach no section
            raise ConfigError(
                f"--set {item!r}: top-level keys starting with {EXTENSION_PREFIX!r} only hold what the file's YAML "
                "anchors refer to and are left out; the aliases and <<: merges that use them were resolved when the "
                "file was read, so this would change nothing: set the key in the section that uses it (--set "
                f"<section>.{key.split('.')[-1]}=...)"
            )
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {part!r} is not a section")
            node = child
        annotation = field_annotation(model, key.split(".")) if model is not None else None
        node[leaf] = override_value(annotation, value) if model is not None else load_text(value)
    return raw


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key in a YAML document, by its path of keys."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def load_yaml(
    path: str | Path, overrides: list[str] | None = None, model: type[BaseModel] | None = None
) -> dict[str, Any]:
    """The YAML mapping at `path` with `overrides` applied.

    Raises:
        ConfigError: missing file, YAML syntax error (message `FILE:LINE:COLUMN: ...`), a top level that is not a
            mapping, or a malformed override.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.y*ml"))[:4]
        raise ConfigError(
            f"config file {path} is a directory; give one YAML file" + (f" in it ({', '.join(found)})" if found else "")
        )
    if not path.is_file():
        from pipeline.cluster_paths import missing_config_hint

        raise ConfigError(f"config file {path} does not exist{missing_config_hint(path)}")
    try:
        raw = load_text(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error_message(path, err)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return apply_overrides(without_extension_fields(raw), overrides or [], model)


# Docker Compose's extension fields: a top-level key starting with `x-` holds what the file's anchors refer to
# (`x-common: &common {...}`, then `model: {<<: *common, ...}`); it configures nothing itself.
EXTENSION_PREFIX = "x-"


def without_extension_fields(raw: dict[Any, Any]) -> dict[Any, Any]:
    """`raw` without its top-level extension fields (keys starting with EXTENSION_PREFIX). Their values reach a
    section only through the aliases and `<<:` merges that use them, which PyYAML has already resolved."""
    return {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith(EXTENSION_PREFIX))}


def yaml_error_message(path: Path, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    hint = ""
    if problem == "expected ',' or ']', but got '['" and context == "while parsing a flow sequence":
        # keep_columns: [tags[0]]: a column key with a list position (pipeline.column_paths) in a flow list
        hint = (
            '; quote an item holding [ ] in a [a, b] list (keep_columns: ["tags[0]"]), or write the list as "- " lines'
        )
    return f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else "") + hint


# What a BGE-style query instruction is to rayembed (KEY_ALIASES): a prefix, not model.task's template.
QUERY_PREFIX = (
    "a prefix each query gets as it is (BGE's 'Represent this sentence for searching relevant passages: '): give it "
    "as model.prompt on the query corpus (input.kind: query); model.task would wrap it as 'Instruct: ...\\nQuery: '"
)


# Keys users bring from the tools they know -> ours (path from the job's embedding section) and whose name it is.
# An unknown key with one of these names is pointed at ours before any spelling match: TEI's max_batch_tokens is
# batching.max_tokens_per_batch, not the min_batch_tokens it is spelled like. A key written as `section.key` applies
# in that section only (output.format is not input.format), before the plain key. A target of None: rayembed has no
# such setting, and the text says why and what to do instead (a spelling match would point at an unrelated key:
# TEI's dense_path got 'did you mean name_or_path?', hf_api_token 'max_tokens?').
# TLS verification switched off (boto3's verify=False, `aws --no-verify-ssl`, s3fs's client_kwargs): pyarrow's S3
# client, every read and write, has no such switch; the CA bundle makes both clients verify the store's certificate.
NO_VERIFY = (
    "a CA bundle, not a switch: give the PEM file of the CA certificates that sign the store's certificate as "
    "storage.ca_bundle (or AWS_CA_BUNDLE); verification cannot be switched off (boto3's verify: false, `aws "
    "--no-verify-ssl`): pyarrow's S3 client, that every read and write goes through, has no such setting"
)

KEY_ALIASES: dict[str, tuple[str | None, str]] = {
    "storage.verify": ("storage.ca_bundle", "boto3's verify: " + NO_VERIFY),
    "storage.verify_ssl": ("storage.ca_bundle", NO_VERIFY),
    "storage.ssl_verify": ("storage.ca_bundle", NO_VERIFY),
    "storage.no_verify_ssl": ("storage.ca_bundle", NO_VERIFY),
    "storage.tls_verify_certificates": ("storage.ca_bundle", NO_VERIFY),
    "storage.tls_ca_file_path": ("storage.ca_bundle", "pyarrow's tls_ca_file_path"),
    "storage.aws_ca_bundle": ("storage.ca_bundle", "the AWS CLI's AWS_CA_BUNDLE"),
    "storage.force_virtual_addressing": (
        "storage.addressing_style",
        "pyarrow's force_virtual_addressing: true is storage.addressing_style: virtual",
    ),
    "storage.force_path_style": (
        "storage.addressing_style",
        "Hadoop's fs.s3a.path.style.access / the AWS SDKs' forcePathStyle: true is storage.addressing_style: path",
    ),
    "storage.use_ssl": ("storage.endpoint_url", "boto3's use_ssl: the endpoint's scheme, https:// or http://"),
    "truncate_dim": ("output.dimensions", "sentence-transformers' truncate_dim"),
    "dimension": ("output.dimensions", "OpenAI/TEI/vLLM dimensions"),
    "output_dim": ("output.dimensions", "Matryoshka output dimension"),
    "embedding_dim": ("output.dimensions", "Matryoshka output dimension"),
    "precision": ("output.dtype", "sentence-transformers' encode(precision=...)"),
    "normalize_embeddings": ("model.normalize", "sentence-transformers' normalize_embeddings"),
    "max_seq_length": ("model.max_tokens", "sentence-transformers' max_seq_length"),
    "max_length": ("model.max_tokens", "the tokenizer's max_length"),
    "max_model_len": ("model.max_tokens", "vLLM's max_model_len"),
    "max_input_length": ("model.max_tokens", "TEI's max_input_length"),
    "auto_truncate": (
        "model.long_inputs",
        (
            "TEI's --auto-truncate: truncate (cut at model.max_tokens, counted in rows_truncated) or chunk (every token "
            "kept, one row per window); TEI's false, a too-long input failing, has no rayembed form: a job never fails "
            "a row for its length"
        ),
    ),
    "truncate": (
        "model.long_inputs",
        (
            "TEI's truncate: truncate (cut at model.max_tokens, counted in rows_truncated) or chunk (every token kept, "
            "one row per window); TEI's false, a too-long input failing, has no rayembed form: a job never fails a row "
            "for its length"
        ),
    ),
    "model_name_or_path": ("model.name_or_path", "sentence-transformers' model_name_or_path"),
    "model_id": ("model.name_or_path", "TEI's --model-id"),
    "model_name": ("model.name_or_path", "the hub id or a local directory"),
    "pooling_mode": ("model.pooling", "sentence-transformers' pooling_mode"),
    "pooling_type": ("model.pooling", "vLLM's pooling_type"),
    "default_prompt_name": ("model.prompt_name", "sentence-transformers' default_prompt_name"),
    "default_prompt": ("model.prompt", "TEI's --default-prompt"),
    # FlagEmbedding / LangChain / LlamaIndex: instructions that are prefixes (BGE), not the Instruct/Query template.
    "query_instruction_for_retrieval": (
        "model.prompt",
        ("FlagEmbedding's query_instruction_for_retrieval: " + QUERY_PREFIX),
    ),
    "query_instruction": ("model.prompt", "LangChain's query_instruction: " + QUERY_PREFIX),
    "query_prefix": ("model.prompt", QUERY_PREFIX),
    "passage_instruction_for_retrieval": (
        "model.prompt",
        (
            "FlagEmbedding's passage_instruction_for_retrieval: the prefix each document gets, model.prompt on the "
            "document corpus"
        ),
    ),
    "embed_instruction": ("model.prompt", "LangChain's embed_instruction: the prefix each document gets"),
    "passage_prefix": ("model.prompt", "the prefix each document gets, as model.prompt on the document corpus"),
    "document_prefix": ("model.prompt", "the prefix each document gets, as model.prompt on the document corpus"),
    "use_fp16": ("model.dtype", "FlagEmbedding's use_fp16: true is model.dtype: float16"),
    "max_seq_len": ("model.max_tokens", "the longest input in tokens"),
    "query_max_len": ("model.max_tokens", "FlagEmbedding's query_max_len, for a query corpus"),
    "passage_max_len": ("model.max_tokens", "FlagEmbedding's passage_max_len, for a document corpus"),
    "prompts": (
        "model.prompt_name",
        (
            "sentence-transformers' prompts: the model's own are read from config_sentence_transformers.json; name "
            "one there, or give the text in model.prompt"
        ),
    ),
    "device": ("compute.gpus_per_actor", "sentence-transformers' device: 0 for the CPU, 1 for a GPU per actor"),
    "instruction": ("model.task", "the query instruction"),
    "torch_dtype": ("model.dtype", "transformers' torch_dtype"),
    "batch_size": (
        "batching.max_batch_size",
        (
            "sentence-transformers' batch_size, Ray Data's map_batches(batch_size=...): rows per forward pass; the "
            "rows an actor sorts by length and cuts into batches at once are batching.rows_per_block"
        ),
    ),
    "max_client_batch_size": ("batching.max_batch_size", "TEI's --max-client-batch-size"),
    "max_batch_tokens": ("batching.max_tokens_per_batch", "TEI's --max-batch-tokens"),
    "max_num_batched_tokens": ("batching.max_tokens_per_batch", "vLLM's max_num_batched_tokens"),
    "max_num_seqs": ("batching.max_batch_size", "vLLM's max_num_seqs"),
    "tokenization_workers": ("compute.num_tokenizers", "TEI's --tokenization-workers"),
    "concurrency": (
        "compute.num_actors",
        "Ray Data's map_batches(concurrency=...); a (min, max) pair is compute.min_actors and compute.max_actors",
    ),
    "min_size": ("compute.min_actors", "Ray Data's ActorPoolStrategy(min_size=...)"),
    "max_size": ("compute.max_actors", "Ray Data's ActorPoolStrategy(max_size=...)"),
    "num_gpus": ("compute.gpus_per_actor", "Ray's num_gpus per actor"),
    "num_cpus": ("compute.cpus_per_actor", "Ray's num_cpus per actor"),
    "address": ("compute.ray_address", "ray.init(address=...)"),
    # where the data is, in the words of Ray Data (read_*(paths=...)), datasets (data_files, data_dir) and
    # sentence-transformers (fit's output_path): `input.column` was answered 'did you mean id_column?' and
    # `output.path` / `input.paths` got only the list of known keys
    "input.column": ("input.text_column", "the column holding the text"),
    "input.text": ("input.text_column", "the column holding the text"),
    **dict.fromkeys(
        (
            *(f"input.{leaf}" for leaf in ("path", "paths", "dir", "files")),
            "data_files",
            "data_dir",
            "input_path",
            "input_dir",
            "input_uri",
        ),
        ("input.uri", "Ray Data's read_*(paths=...), datasets' data_files / data_dir: a file, folder, glob or list"),
    ),
    **dict.fromkeys(
        ("output.path", "output.dir", "output_path", "output_dir", "output_uri", "output_folder"),
        ("output.uri", "the folder or S3 prefix written to, Ray Data's write_parquet(path=...)"),
    ),
    **dict.fromkeys(
        ("model.path", "model.model_path", "model.model_dir"),
        ("model.name_or_path", "a hub id or a local model directory"),
    ),
    "text_field": ("input.text_column", "the text column or JSONL key"),
    "text_key": ("input.text_column", "the text column or JSONL key"),
    "id_field": ("input.id_column", "the id column or JSONL key"),
    # the vector column of embeddings another tool wrote (the cluster job's input, a mining side's embeddings_uri):
    # 'vector_column' was answered 'did you mean text_column?', a column of the texts
    **dict.fromkeys(
        (
            "vector_column",
            "vector_column_name",
            "vector_field",
            "vector_key",
            "embedding_field",
            "embedding_key",
            "embeddings_column",
            "embedding_col",
            "emb_column",
        ),
        (
            "input.embedding_column",
            (
                "the column of the vectors another tool wrote: LanceDB's vector_column_name, a Milvus or "
                "Elasticsearch vector field; a mining side's embeddings_uri files name it with that side's "
                "embedding_column"
            ),
        ),
    ),
    "dtype": (
        "model.dtype",
        "TEI's --dtype, vLLM's dtype: the precision the model runs in; output.dtype is the one vectors are stored in",
    ),
    "enforce_eager": ("model.compile", "vLLM's enforce_eager: true is model.compile: false"),
    "torch_compile": ("model.compile", "torch.compile of the model's blocks"),
    "truncation": ("model.long_inputs", "truncate or chunk"),
    "override_pooler_config": (
        "model.pooling",
        "vLLM's pooler config: pooling_type is model.pooling, normalize model.normalize",
    ),
    "pooler_config": (
        "model.pooling",
        "vLLM's pooler config: pooling_type is model.pooling, normalize model.normalize",
    ),
    "model_kwargs": (
        "model.dtype",
        (
            "sentence-transformers' model_kwargs: its torch_dtype is model.dtype, attn_implementation "
            "model.attn_implementation"
        ),
    ),
    # settings rayembed does not have: what it does instead
    "truncation_direction": (
        None,
        (
            "TEI's truncation_direction: rayembed has no such setting; a long text is cut where the model's tokenizer "
            "cuts it (its truncation_side: the end of the text for nearly every model), as sentence-transformers does; "
            "model.long_inputs: chunk embeds the whole text as overlapping windows instead"
        ),
    ),
    "dense_path": (
        None,
        (
            "TEI's --dense-path: rayembed has no such setting; it runs the Dense modules the model's modules.json "
            "lists, in order. For another Dense folder (e.g. 2_Dense_1024), copy the model and point that modules.json "
            "entry's path at it; for fewer dimensions use output.dimensions"
        ),
    ),
    "hf_api_token": (None, "TEI's --hf-api-token: rayembed has no such setting; set HF_TOKEN in the job's environment"),
    "hf_token": (None, "the Hugging Face token: rayembed has no such setting; set HF_TOKEN in the job's environment"),
    "token": (None, "the Hugging Face token: rayembed has no such setting; set HF_TOKEN in the job's environment"),
    "use_auth_token": (
        None,
        "the Hugging Face token: rayembed has no such setting; set HF_TOKEN in the job's environment",
    ),
    "cache_folder": (
        None,
        "the model cache: rayembed has no such setting; set HF_HOME (or HF_HUB_CACHE) in the environment",
    ),
    "huggingface_hub_cache": (
        None,
        "TEI's --huggingface-hub-cache: rayembed has no such setting; set HF_HOME (or HF_HUB_CACHE) in the environment",
    ),
    "local_files_only": (
        None,
        (
            "rayembed has no such setting; set HF_HUB_OFFLINE=1 in the environment, or give a local directory in "
            "model.name_or_path"
        ),
    ),
    "show_progress_bar": (
        None,
        (
            "sentence-transformers' show_progress_bar: rayembed has no such setting; a job prints a progress line as "
            "files complete and a summary at the end"
        ),
    ),
    "convert_to_numpy": (
        None,
        (
            "sentence-transformers' convert_to_numpy: rayembed has no such setting; vectors are written to output.uri "
            "as Parquet (an `embedding` column of fixed-size lists), which numpy, pandas, polars and duckdb read"
        ),
    ),
    "convert_to_tensor": (
        None,
        (
            "sentence-transformers' convert_to_tensor: rayembed has no such setting; vectors are written to "
            "output.uri as Parquet (an `embedding` column of fixed-size lists), which numpy, pandas, polars and "
            "duckdb read"
        ),
    ),
    "output_value": (
        None,
        (
            "sentence-transformers' output_value: rayembed has no such setting; it stores one sentence embedding per "
            "row (per chunk with model.long_inputs: chunk), not token embeddings"
        ),
    ),
    "similarity_fn_name": (
        None,
        (
            "sentence-transformers' similarity_fn_name: rayembed has no such setting; it stores vectors, normalized by "
            "default (model.normalize), so cosine similarity is their dot product"
        ),
    ),
    "backend": (
        None,
        (
            "sentence-transformers' backend: rayembed has no such setting; it runs the model's safetensors weights in "
            "PyTorch (not ONNX or OpenVINO exports)"
        ),
    ),
    "chunk_size": (
        "model.max_tokens",
        (
            "a chunk window with model.long_inputs: chunk is model.max_tokens tokens, consecutive windows sharing "
            "model.chunk_overlap_tokens; sentence-transformers' multi-process chunk_size has no counterpart"
        ),
    ),
    "chunk_overlap": ("model.chunk_overlap_tokens", "tokens consecutive chunk windows share"),
    # long inputs and widths as vLLM and sentence-transformers name them: each got 'known keys: ...' or a spelling
    # match ('did you mean prompt?' for include_prompt)
    "truncate_prompt_tokens": (
        "model.max_tokens",
        (
            "vLLM's truncate_prompt_tokens: k is model.max_tokens: k, and -1 (the model's own limit) is leaving "
            "model.max_tokens out; vLLM keeps the last k tokens, rayembed cuts where the model's tokenizer cuts (its "
            "truncation_side: the end of a text for nearly every model), as sentence-transformers does; "
            "model.long_inputs: chunk keeps every token"
        ),
    ),
    "enable_chunked_processing": (
        "model.long_inputs",
        (
            "vLLM's enable_chunked_processing: true is model.long_inputs: chunk, which writes one row per window of "
            "model.max_tokens tokens (chunk_index, char_start, char_end); vLLM averages a text's windows into one "
            "vector, rayembed does not: average the rows of an id yourself for that"
        ),
    ),
    "max_embed_len": (
        "model.long_inputs",
        (
            "vLLM's max_embed_len: with model.long_inputs: chunk every token of a text is embedded, in windows of "
            "model.max_tokens tokens; there is no cap on a text's length to set"
        ),
    ),
    "truncation_side": (
        None,
        (
            "the tokenizer's truncation_side: rayembed has no such setting; a long text is cut where the model's "
            "tokenizer cuts it, as sentence-transformers does: its truncation_side in tokenizer_config.json (the end "
            "of the text for nearly every model; set truncation_side there, in a copy of the model, to keep the end "
            "instead); model.long_inputs: chunk embeds the whole text as overlapping windows"
        ),
    ),
    "matryoshka_dimensions": (
        "output.dimensions",
        "vLLM's matryoshka_dimensions, the widths a model was trained for: output.dimensions is the one to store",
    ),
    "include_prompt": (
        None,
        (
            "sentence-transformers' Pooling include_prompt: rayembed has no such setting; it reads include_prompt from "
            "the model's Pooling config (1_Pooling/config.json), as sentence-transformers does, and leaves the prompt's "
            "tokens out of pooling where it is false"
        ),
    ),
    **{
        flag: (
            "model.pooling",
            (
                f"sentence-transformers' Pooling {flag}: model.pooling: {mode} (or auto, which reads the model's "
                "Pooling config)"
            ),
        )
        for flag, mode in (
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_max_tokens", "max"),
            ("pooling_mode_lasttoken", "last_token"),
            ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
            ("pooling_mode_weightedmean_tokens", "weightedmean"),
        )
    },
    "tokenizer_kwargs": (
        None,
        (
            "rayembed has no such setting; it uses the model's own tokenizer files as saved (model.max_tokens, "
            "model.padding_side)"
        ),
    ),
    "tokenizer": (
        None,
        "rayembed has no such setting; it uses the tokenizer saved with the model (model.name_or_path)",
    ),
    "runner": (None, "vLLM's runner: rayembed has no such setting; every run is an embedding (pooling) run: remove it"),
    "convert": (
        None,
        "vLLM's convert: rayembed has no such setting; every run is an embedding (pooling) run: remove it",
    ),
    "hf_overrides": (
        None,
        (
            "vLLM's hf_overrides: rayembed has no such setting; it loads config.json as saved: write the change into "
            "config.json of a copy of the model"
        ),
    ),
    "config_kwargs": (
        None,
        (
            "sentence-transformers' config_kwargs: rayembed has no such setting; it loads config.json as saved: write "
            "the change into config.json of a copy of the model"
        ),
    ),
    "tokenizer_mode": (
        None,
        "vLLM's tokenizer_mode: rayembed has no such setting; it uses the model's fast tokenizer where it has one",
    ),
    "served_model_name": (
        None,
        (
            "TEI's and vLLM's served_model_name: rayembed has no such setting; the output records model.name_or_path "
            "(its summary and each file's metadata)"
        ),
    ),
    "tensor_parallel_size": (
        None,
        (
            "vLLM's tensor_parallel_size: rayembed has no such setting; each actor holds a whole model copy "
            "(compute.gpus_per_actor), more actors run more copies (compute.num_actors)"
        ),
    ),
    "device_map": (
        None,
        (
            "transformers' device_map: rayembed has no such setting; each actor holds a whole model copy on its device "
            "(compute.gpus_per_actor)"
        ),
    ),
    "gpu_memory_utilization": (
        None,
        (
            "vLLM's gpu_memory_utilization: rayembed has no such setting; a forward pass's memory is bounded by "
            "batching.max_tokens_per_batch, and a batch that runs out of memory is split"
        ),
    ),
    "quantization": (
        None,
        (
            "vLLM's quantization: rayembed has no such setting; the model runs in model.dtype; stored vectors can be "
            "quantized with output.dtype (int8, binary)"
        ),
    ),
    "max_concurrent_requests": (
        None,
        (
            "TEI's --max-concurrent-requests: rayembed has no such setting (a batch job serves no requests); "
            "parallelism is compute.num_actors"
        ),
    ),
    "max_batch_requests": ("batching.max_batch_size", "TEI's --max-batch-requests"),
    "override_num_blocks": (
        "input.unit_bytes",
        "Ray Data's override_num_blocks: the input is read in units of this size",
    ),
    "runtime_env": (
        None,
        (
            "Ray's runtime_env: rayembed has no such setting; give it where the job is started (ray job submit "
            "--runtime-env, a RayJob's spec.runtimeEnvYAML)"
        ),
    ),
    "memory": ("compute.memory_per_actor", "Ray's memory= per actor: bytes, or a size such as 16GiB or 16Gi"),
    "input.columns": (
        "output.keep_columns",
        (
            "Ray Data's read_parquet(columns=...): rayembed reads input.text_column and input.id_column; the input "
            "columns to carry into the output rows are output.keep_columns"
        ),
    ),
    "file_extensions": (
        None,
        (
            "Ray Data's file_extensions: rayembed has no such setting; give a glob in input.uri (corpus/**/*.jsonl); "
            "input.format fixes the format"
        ),
    ),
    "min_rows_per_file": ("output.rows_per_file", "Ray Data's write_parquet(min_rows_per_file=...): rows per file"),
    "max_rows_per_file": ("output.rows_per_file", "Ray Data's write_parquet(max_rows_per_file=...): rows per file"),
    "num_rows_per_file": ("output.rows_per_file", "Ray Data's write_parquet(num_rows_per_file=...): rows per file"),
    "output.format": (
        None,
        "rayembed has no such setting: output is always Parquet files under output.uri; input.format is the input's",
    ),
    "output.compression": (
        None,
        "rayembed has no such setting: output Parquet files are written with pyarrow's default compression (snappy)",
    ),
    # the clustering job (pipeline/cluster_config.py); only offered where the job has the section
    "niter": ("clustering.max_iter", "FAISS Kmeans' niter"),
    "max_iterations": ("clustering.max_iter", "Lloyd iterations"),
    "n_clusters": ("clustering.k", "scikit-learn KMeans' n_clusters"),
    "ncentroids": ("clustering.k", "FAISS Kmeans' k"),
    "num_clusters": ("clustering.k", "the number of clusters"),
    "n_init": ("clustering.seed", "scikit-learn's n_init: one fit per run here, compare runs of other seeds"),
    "nredo": ("clustering.seed", "FAISS Kmeans' nredo: one fit per run here, compare runs of other seeds"),
    "clustering.random_state": ("clustering.seed", "scikit-learn's random_state"),
    "clustering.spherical": (
        None,
        "FAISS Kmeans' spherical: rayembed's k-means is always spherical (cosine, unit-length centroids); no setting",
    ),
    "eps_to_extract": ("clustering.dedup.eps", "NeMo Curator SemDedup's eps_to_extract: a cosine distance, as eps"),
    "dedup.threshold": (
        "clustering.dedup.eps",
        "a similarity threshold s (sentence-transformers' community_detection threshold) is eps: 1 - s",
    ),
    "dedup.similarity_threshold": ("clustering.dedup.eps", "a similarity threshold s is eps: 1 - s"),
    # the mining job (pipeline/mine_config.py)
    "neighborhood": ("mining.k", "LASER mine_bitexts' --neighborhood"),
    "knn": ("mining.k", "neighbours per sentence"),
    "knn_neighbors": ("mining.k", "sentence-transformers' bitext mining example's knn_neighbors"),
    "mining.top_k": ("mining.k", "neighbours per sentence"),
    "mining.min_score": ("mining.threshold", "the lowest margin score kept"),
    "use_ann_search": ("mining.index", "sentence-transformers' bitext mining example's use_ann_search: index: ivf"),
    "ann_num_clusters": ("mining.ivf.nlist", "sentence-transformers' bitext mining example's ann_num_clusters"),
    "ann_num_top_clusters": (
        "mining.ivf.nprobe",
        "sentence-transformers' bitext mining example's ann_num_top_clusters",
    ),
    "mining.unify": ("mining.dedup", "LASER mine_bitexts' --unify: drop repeated sentences before mining"),
    "mining.gpu": ("mining.gpus_per_shard", "LASER mine_bitexts' --gpu: GPUs per k-NN shard"),
    "nprobe": ("mining.ivf.nprobe", "FAISS's nprobe, under mining.ivf"),
    "nlist": ("mining.ivf.nlist", "FAISS's nlist, under mining.ivf"),
}


def key_elsewhere(model: type[BaseModel], loc: tuple[Any, ...], target: list[str]) -> str | None:
    """`target` (e.g. ["output", "dimensions"]) under the deepest enclosing section of `loc` that has it, dotted."""
    for depth in range(len(loc) - 1, -1, -1):
        prefix = [str(p) for p in loc[:depth]]
        if field_annotation(model, prefix + target) is not None:
            return ".".join(prefix + target)
    return None


def suggestion(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """'; did you mean X?' for an unknown key: another tool's name for one of ours (KEY_ALIASES), a key of another
    section (`model.dimensions` -> output.dimensions), or the closest known key of its section; else the known keys.
    """
    if not loc or not isinstance(loc[-1], str):
        return ""
    known = section_fields(model, loc[:-1])
    if not known:
        return ""
    leaf = loc[-1].strip().lstrip("-").lower().replace("-", "_")  # TEI's --max-batch-tokens as written
    parent = str(loc[-2]) if len(loc) > 1 else ""
    # a section that reads input under another name (a mining side, source/target: uri, text_column, ...) takes
    # the input section's aliases (`source.path` -> source.uri); they were answered with the list of known keys
    reads_input = parent != "input" and {"uri", "text_column"} <= set(known)
    alias = (
        KEY_ALIASES.get(f"{parent}.{leaf}")
        or (KEY_ALIASES.get(f"input.{leaf}") if reads_input else None)
        or KEY_ALIASES.get(leaf)
    )
    if alias is not None and alias[0] is None:
        return f"; {alias[1]}"
    if alias is not None:
        target = alias[0].split(".")
        ours = key_elsewhere(model, loc, target)
        if ours is None and target[-1] in known:
            # the key's own section has it: a mining side (source, target) is an input section of its own name
            ours = ".".join([*map(str, loc[:-1]), target[-1]])
        if ours is not None:
            return f"; did you mean {ours}? ({alias[1]})"
        if field_annotation(model, target) is None and not any(
            field_annotation(model, [section, *target]) is not None for section in section_fields(model, ()) or []
        ):
            # a key of another job (the cluster job's input.embedding_column in an embed config): a spelling match
            # would point at an unrelated key ('did you mean text_column?')
            return f"; {alias[1]}: {alias[0]} is a key of another job's config, not of this one"
    for section in section_fields(model, ()) or []:
        ours = key_elsewhere(model, loc, [section, leaf]) if leaf not in known else None
        if ours is not None:
            return f"; did you mean {ours}? (a key of the {section} section)"
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    if len(loc) == 1:
        # an unknown section; perhaps one kept for the anchors of the file (without_extension_fields)
        return (
            (f"; did you mean {close[0]}?" if close else f"; known sections: {', '.join(known)}")
            + f" (a section that only holds what YAML anchors refer to is named {EXTENSION_PREFIX}{loc[0]}: top-level "
            f"keys starting with {EXTENSION_PREFIX!r} are left out, as Docker Compose leaves out its extension fields)"
        )
    if close:
        return f"; did you mean {close[0]}?"
    return f"; known keys: {', '.join(known)}"


# A list where one URI is expected: Ray Data's read_* and datasets' data_files take several paths.
MANY_URIS_HINT = (
    " (one location: a file, a directory or prefix, or a glob; for several files give their common directory or a "
    "glob such as corpus/**/*.jsonl)"
)


def whole_number_hint(text: str) -> str:
    """What to write instead of `text`, a number YAML 1.1 reads as text where a whole number is expected.

    PyYAML reads `1e6` and `2.5e5` as strings (its float needs a dot, and a sign after the `e`), so
    `rows_per_file: 1e6` was refused as 'unable to parse string as an integer' with no word of why. '' when `text`
    is no number or not a whole one.
    """
    try:
        value = float(text.strip())
    except ValueError:
        return ""
    if not math.isfinite(value) or value != int(value):
        return ""
    return f" (YAML reads {text!r} as text, not as a number: write {int(value)})"


def parse_config(
    model: type[BaseModel],
    raw: dict[str, Any],
    source: str = "config",
    overrides: list[str] | None = None,
    lines: dict[tuple[str, ...], int] | None = None,
) -> Any:
    """Validate `raw` into `model`, turning pydantic's errors into one readable line per key.

    Args:
        model: the config class.
        raw: the YAML mapping, overrides applied.
        source: the file name, used to say where a key was written.
        overrides: the `--set` items; an error about an overridden key names the flag instead of the file.
        lines: line of each key in the file (key_lines), to point at `FILE:LINE`.

    Raises:
        ConfigError: listing every invalid key.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        by_key = {o.partition("=")[0].strip(): o for o in overrides or []}
        lines = lines or {}
        out = [f"{source}: invalid configuration"]
        for e in err.errors():
            loc = tuple(e["loc"])
            where = ".".join(str(p) for p in loc) or "(top level)"
            msg = e["msg"] + (suggestion(model, loc) if e["type"] == "extra_forbidden" else "")
            if e["type"] == "string_type" and loc and loc[-1] == "uri" and isinstance(e.get("input"), list):
                msg += MANY_URIS_HINT
            if e["type"] == "int_parsing" and isinstance(e.get("input"), str):
                msg += whole_number_hint(e["input"])
            flag = next((o for k, o in by_key.items() if where == k or where.startswith(k + ".")), None)
            if flag is not None:
                out.append(f"  --set {flag}: {where}: {msg}")
                continue
            keys = tuple(str(p) for p in loc)
            line = next((lines[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in lines), None)
            prefix = f"{source}:{line}: " if line is not None else ""
            inner = [o for k, o in by_key.items() if k.startswith(where + ".")] if loc else list(by_key.values())
            also = f" (with --set {', --set '.join(inner)})" if inner else ""
            out.append(f"  {prefix}{where}: {msg}{also}")
        raise ConfigError("\n".join(out)) from None


# Keys whose values are locations (a path, a URI, an address): where `${BUCKET}` or `$HOME` is meant for expansion.
# A key named `*_uri`, `*_path`, `*_url` or `*_dir` is one too (is_location_key): mine_bitext's `embeddings_uri`
# was missed by a list of names, and so would the next such key be.
LOCATION_KEYS = frozenset({"uri", "name_or_path", "ca_bundle", "endpoint_url", "ray_address", "dashboard"})
LOCATION_SUFFIXES = ("_uri", "_path", "_url", "_dir")


def is_location_key(name: str) -> bool:
    """Whether a config key's value is a location (LOCATION_KEYS, or a name ending in LOCATION_SUFFIXES)."""
    return name in LOCATION_KEYS or name.endswith(LOCATION_SUFFIXES)


BRACED_VARIABLE = re.compile(r"\$\{[^}]*\}")  # ${BUCKET}, ${HOME:-/data}, OmegaConf's ${oc.env:BUCKET}
PLAIN_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
# cmd.exe's %NAME% (a config written on Windows, a .bat that fills it in): overlapping matches, so that a
# percent-escape before it (`%E2%HOME%`) does not hide it. Names as Windows sets them for every user, compared
# without case as Windows does, beside any name set here; a percent-escape (`caf%C3%A9`) names neither.
WINDOWS_VARIABLE = re.compile(r"%(?=([A-Za-z_][A-Za-z0-9_()]*)%)")
PERCENT_ESCAPE = re.compile(r"[0-9A-Fa-f]{2}$")  # %CD%85 is two escapes, whatever is set
WINDOWS_NAMES = frozenset(
    {
        "USERPROFILE", "APPDATA", "LOCALAPPDATA", "PROGRAMDATA", "PROGRAMFILES", "PROGRAMFILES(X86)", "TEMP", "TMP",
        "HOMEDRIVE", "HOMEPATH", "SYSTEMDRIVE", "SYSTEMROOT", "WINDIR", "USERNAME", "COMPUTERNAME", "ONEDRIVE",
        "PUBLIC",
    }
)  # fmt: skip


def variable_reference(value: str) -> str | None:
    """The environment variable reference in `value` a user meant to be expanded: any `${...}`, a `$NAME` whose
    NAME is set in this environment (a `$` in a file name otherwise stays a `$`), or a Windows `%NAME%` whose NAME is
    set here or is one Windows sets (WINDOWS_NAMES); None when there is none."""
    braced = BRACED_VARIABLE.search(value)
    if braced:
        return braced.group(0)
    plain = next((m for m in PLAIN_VARIABLE.finditer(value) if m.group(1) in os.environ), None)
    if plain:
        return plain.group(0)
    known = WINDOWS_NAMES | {name.upper() for name in os.environ}
    windows = next(
        (
            m
            for m in WINDOWS_VARIABLE.finditer(value)
            if m.group(1).upper() in known and not PERCENT_ESCAPE.match(m.group(1))
        ),
        None,
    )
    return f"%{windows.group(1)}%" if windows else None


def unexpanded_variables(
    raw: Any, source: str, overrides: list[str], lines: dict[tuple[str, ...], int], path: tuple[str, ...] = ()
) -> list[str]:
    """One line per location key (is_location_key, in any section, list items too) whose value holds an environment
    variable reference (variable_reference): rayembed reads the config as written, so `output.uri: ${HOME}/out`
    was a folder named `${HOME}` below the working directory, and `s3://${BUCKET}/x` a bucket of that name."""
    found: list[str] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            found += unexpanded_variables(value, source, overrides, lines, (*path, str(key)))
        return found
    if not path or not is_location_key(path[-1]):
        return found
    for value in raw if isinstance(raw, list) else [raw]:
        reference = variable_reference(value) if isinstance(value, str) else None
        if reference is None:
            continue
        key = ".".join(path)
        flag = next((o for o in overrides if o.partition("=")[0].strip() == key), None)
        where = f"--set {flag}" if flag else f"{source}:{lines[path]}" if path in lines else source
        found.append(
            f"  {where}: {key}: {value!r} holds {reference}, which is not expanded: rayembed reads the config as "
            f"written, so it would name a folder or bucket {reference}. Write the value itself, give it from a shell with --set "
            f'{key}="..." (the shell expands it, in double quotes), or expand the file first (envsubst < FILE > '
            "run.yaml)"
        )
    return found


def load_config(model: type[BaseModel], path: str | Path, overrides: list[str] | None = None) -> Any:
    """Load, override and validate a job config.

    Raises:
        ConfigError: see load_yaml and parse_config; and a location key holding an environment variable reference
            (unexpanded_variables).
    """
    raw = load_yaml(path, overrides, model)
    text = Path(path).read_text()
    lines = key_lines(text)
    unexpanded = unexpanded_variables(raw, str(path), overrides or [], lines)
    if unexpanded:
        raise ConfigError("\n".join([f"{path}: invalid configuration", *unexpanded]))
    return parse_config(model, raw, source=str(path), overrides=overrides, lines=lines)
