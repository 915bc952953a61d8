"""Job configuration: one pydantic source of truth, loaded from YAML with `--set a.b=c` overrides
(pipeline.config_loading).

Every section forbids unknown keys so a typo in the YAML is an error, not a silently ignored setting.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import types
import typing
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.config_loading import ConfigError, apply_overrides, load_config, load_yaml, parse_config, plain

__all__ = ["ConfigError", "apply_overrides", "load_config", "load_yaml", "parse_config"]

from pipeline.columns import OUTPUT_COLUMNS, PoolingName

log = logging.getLogger(__name__)

# What users write for the same things in sentence-transformers (modules, `pooling_mode_*`), TEI (`--pooling
# last-token`, `--dtype float16`), vLLM (`PoolerConfig(pooling_type="LAST")`, `dtype="half"`) and torch: accepted,
# case and `-` insensitive, and stored under our name.
VALUE_ALIASES = {
    "pooling": {
        "lasttoken": "last_token",
        "last": "last_token",
        "eos": "last_token",
        "pooling_mode_lasttoken": "last_token",
        "mean_tokens": "mean",
        "pooling_mode_mean_tokens": "mean",
        "avg": "mean",
        "average": "mean",
        "cls_token": "cls",
        "pooling_mode_cls_token": "cls",
        "max_tokens": "max",
        "pooling_mode_max_tokens": "max",
        "mean_sqrt_len": "mean_sqrt_len_tokens",
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
        "weighted_mean": "weightedmean",
        "weightedmean_tokens": "weightedmean",
        "pooling_mode_weightedmean_tokens": "weightedmean",
    },
    # input.kind: the prompt names sentence-transformers' encode_document / encode_query look for
    "kind": {
        "passage": "document",
        "passages": "document",
        "corpus": "document",
        "documents": "document",
        "doc": "document",
        "queries": "query",
    },
    "dtype": {
        "fp32": "float32",
        "float": "float32",
        "torch.float32": "float32",
        "fp16": "float16",
        "half": "float16",
        "torch.float16": "float16",
        "bf16": "bfloat16",
        "torch.bfloat16": "bfloat16",
    },
}


# Values other tools take that name something rayembed does not make: refused saying what it is and what to do
# (they got only the list of accepted values).
REFUSED_VALUES = {
    "pooling": {
        "splade": "TEI's splade pooling gives sparse vocabulary-sized vectors (a SPLADE model, sentence-transformers' "
        "SparseEncoder); rayembed makes dense vectors: use a dense embedding model, or TEI / sentence-transformers "
        "for SPLADE",
        "all": "vLLM's ALL pooling returns one vector per token; rayembed stores one vector per text: set a pooling "
        "(auto follows the model)",
        "step": "vLLM's STEP pooling returns per-step reward scores, not text embeddings: set a pooling (auto "
        "follows the model)",
    },
}


def value_alias(kind: str):
    """A before-validator mapping another tool's spelling of a `kind` value to ours; other values pass unchanged
    (validation then lists the accepted ones)."""

    def canonical(value: object) -> object:
        if not isinstance(value, str):
            return value
        key = value.strip().lower().replace("-", "_")
        if key in REFUSED_VALUES.get(kind, {}):
            raise ValueError(f"{value!r}: {REFUSED_VALUES[kind][key]}")
        return VALUE_ALIASES[kind].get(key, key if key != value else value)

    return BeforeValidator(canonical)


def accepts_bool(annotation: object) -> bool:
    """Whether a field annotated `annotation` takes a YAML boolean (bool, `bool | None`, a union with bool)."""
    if annotation is bool:
        return True
    return any(accepts_bool(arg) for arg in typing.get_args(annotation))


def accepts_str(annotation: object) -> bool:
    """Whether a field annotated `annotation` takes a string (str, `str | list[str]`, a Literal of strings)."""
    if annotation is str:
        return True
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return any(isinstance(arg, str) for arg in args)
    return any(accepts_str(arg) for arg in args)


def not_blank(value: str | None) -> str | None:
    """A location that is not empty: an empty `output.uri` was the current directory (emptied by output.overwrite),
    as an unset variable in `--set output.uri=$OUT` makes it."""
    if value is not None and not value.strip():
        raise ValueError("is empty; give a local path or s3://bucket/prefix (an unset shell variable in --set?)")
    return value


NonBlank = Annotated[str, AfterValidator(not_blank)]

SCHEME_HINT = (
    "use a local path (or file://) or s3://bucket/prefix; any S3-compatible store works through storage.endpoint_url "
    "(Google Cloud Storage: https://storage.googleapis.com with HMAC keys; MinIO, Ceph, R2)"
)


# Other spellings of s3:// for the same bucket and key: Hadoop's S3A and S3N connectors (URIs copied from Spark and
# Hive configs), and an upper-case scheme. They were refused as another scheme.
S3_SCHEMES = frozenset({"s3", "s3a", "s3n"})


def canonical_uri(value: str) -> str:
    """`value` with `s3a://`, `s3n://` (any case) or `S3://` written as `s3://`; any other value as it is."""
    scheme, sep, rest = value.partition("://")
    return f"s3://{rest}" if sep and scheme.lower() in S3_SCHEMES else value


def storage_location(value: str | None) -> str | None:
    """A location rayembed can read or write: not blank, and local, file:// or s3:// (s3a:// and s3n:// are taken
    as s3://: canonical_uri). Another scheme (gs://, hf://, abfs://) failed at run time with a traceback.

    Returns:
        The location, in its canonical spelling (canonical_uri).
    """
    not_blank(value)
    value = canonical_uri(value) if value is not None else None
    scheme, sep, rest = (value or "").partition("://")
    if sep and scheme not in ("s3", "file"):
        raise ValueError(f"the scheme {scheme}:// is not supported; {SCHEME_HINT}")
    if scheme == "s3" and (segment := odd_key_segment(rest.partition("/")[2].rstrip("/"))) is not None:
        raise ValueError(
            f"the S3 key in {value!r} has {segment} segment ('//', '/./' or '/../', often from joining a prefix that "
            "ends in '/'), which pyarrow's S3 client, that every read and write goes through, cannot address (its "
            "error: 'Empty path component'); copy the objects to keys without one and give that prefix"
        )
    return value


def odd_key_segment(key: str) -> str | None:
    """ "an empty", "a '.'" or "a '..'" when an S3 key (or a key relative to the input) has such a segment: pyarrow's
    S3 filesystem refuses an empty one (`Empty path component`), and finds no object at a key with `.` or `..`
    (the request's path is normalized on the way), so such objects cannot be read or written (tried on moto)."""
    for segment in key.split("/") if key else ():
        if segment in ("", ".", ".."):
            return "an empty" if not segment else f"a {segment!r}"
    return None


Location = Annotated[str, AfterValidator(storage_location)]


def same_place(uri: str) -> str:
    """A location's spelling for finding repeats in a list: `~` expanded, local paths absolute, no trailing `/`."""
    if uri.startswith("s3://"):
        return uri.rstrip("/")
    return os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))


def locations(value: str | list[str]) -> str | list[str]:
    """One input location (storage_location), or a list of them read as one corpus
    (pipeline.storage.list_locations): not empty, each location once, all local or all S3 (one store per run)."""
    if isinstance(value, str):
        return storage_location(value)
    if not value:
        raise ValueError("is an empty list; give at least one location (a path, s3:// URI or glob)")
    for i, uri in enumerate(value):
        try:
            storage_location(uri)
        except ValueError as err:
            raise ValueError(f"item {i} ({uri!r}) {err}") from None
    value = [canonical_uri(uri) for uri in value]
    seen: dict[str, int] = {}
    for i, uri in enumerate(value):
        first = seen.setdefault(same_place(uri), i)
        if first != i:
            raise ValueError(
                f"lists the same location twice (items {first} and {i}: {value[first]!r}, {uri!r}); "
                "its rows would be read twice: remove one"
            )
    if len({uri.startswith("s3://") for uri in value}) > 1:
        raise ValueError(
            "mixes local paths and s3:// URIs; one run reads one store: copy the files to one of them and list them there"
        )
    return value


def one_or_more(value: object) -> object:
    """A string or a list of strings, else one clear error (a union's two type errors said neither)."""
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    raise ValueError(f"expects a location (a string) or a list of them, not {value!r}")


Locations = Annotated[str | list[str], BeforeValidator(one_or_more), AfterValidator(locations)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: object, info: ValidationInfo) -> object:
        """`true`/`yes`/`on` where a number is expected is an error: pydantic's lax mode took it for 1
        (`output.dimensions: true` stored 1-dimensional vectors, `compute.num_actors: yes` one actor). An unquoted
        yes / no / on / off (config_loading.YamlWord) is the word where the key takes a string (`lang: no`,
        Norwegian), the boolean elsewhere."""
        if info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        value = plain(value, wants_str=accepts_str(annotation) and not accepts_bool(annotation))
        if isinstance(value, bool) and not accepts_bool(annotation):
            raise ValueError(f"expects {type_words(annotation)}, not the boolean {str(value).lower()}")
        return spelled_choice(value, annotation)


def choice_key(value: str) -> str:
    """How two spellings of one choice compare: case, surrounding blanks and `-` for `_` aside."""
    return value.strip().lower().replace("-", "_")


def choices(annotation: object) -> tuple[str, ...]:
    """The string values a field's Literal (in a union, Optional or Annotated too) allows: ('ratio', 'distance', ...)."""
    if typing.get_origin(annotation) is Literal:
        return tuple(arg for arg in typing.get_args(annotation) if isinstance(arg, str))
    return tuple(c for arg in typing.get_args(annotation) for c in choices(arg))


def spelled_choice(value: object, annotation: object) -> object:
    """A choice written in another case or with `-` for `_` (`mining.margin: Ratio`, `retrieval: MAX`,
    `input.duplicate_ids: Keep-First`) as the field spells it; anything else unchanged, for validation to accept (a
    free string, an alias) or refuse listing the accepted values."""
    if not isinstance(value, str):
        return value
    spelled = {choice_key(c): c for c in choices(annotation)}
    return spelled.get(choice_key(value), value)


def type_words(annotation: object) -> str:
    """`int | None` -> 'an integer or null', for messages."""
    names = {int: "an integer", float: "a number", str: "a string", type(None): "null"}
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    words = [names.get(m, getattr(m, "__name__", str(m))) for m in members or (annotation,)]
    return " or ".join(words)


class InputConfig(Section):
    uri: Locations = Field(
        description="Local path or s3://bucket/prefix; a directory/prefix, one file, or a glob. Or a list of them "
        "(all local or all S3, buckets may differ), read as one corpus, each file once: file paths (in `_source` and "
        "derived ids) are then relative to the deepest directory holding every location (docs/robustness.md)."
    )
    format: Literal["parquet", "jsonl", "text"] | None = Field(
        None,
        description="File format of every listed file; unset: each file's format is inferred from its extension "
        "(.parquet, .jsonl/.json/.ndjson, .txt, each optionally .gz/.zst/.bz2). Either way each file's leading bytes are "
        "checked, and a file that looks like another format fails naming what it looks like.",
    )
    text_column: str = Field(
        "text",
        description="Column (JSONL key) holding the text; ignored for format=text. A dotted path reaches into a "
        "struct column or JSON object (meta.text, translation.en), [N] takes item N (from 0) of a list column or "
        "JSON array (sentences[0], turns[1].text); a column literally named so wins. A row whose struct or list is "
        "null or lacks the field or item is a reject saying so (docs/robustness.md, nested columns).",
    )
    id_column: str | None = Field(
        None,
        description="Column holding a unique row id (a dotted path such as meta.id reaches into a struct, as "
        "text_column). When absent, ids are '<relative path>#<row>'.",
    )
    kind: Annotated[Literal["document", "query"], value_alias("kind")] = Field(
        "document",
        description="Queries get the model's query prompt or model.task's instruction; documents the model's "
        "document/passage/corpus prompt, if any (passage and corpus are accepted as names for document).",
    )
    duplicate_ids: Literal["error", "keep_first", "unchecked"] = Field(
        "keep_first",
        description="With input.id_column: 'keep_first' embeds the first row of each id (file order, then row) and "
        "rejects later ones with reason 'duplicate id'; 'error' fails before embedding. Both cost one extra read of "
        "the ids (a Ray Data hash shuffle of 16-byte id digests; the driver holds none of them, see README); "
        "'unchecked' skips that check for corpora whose ids are known to be unique.",
    )
    unit_bytes: int = Field(
        256 << 20,
        gt=0,
        description="Parquet files larger than this (bytes) are split into units of whole row groups of about this "
        "size, uncompressed JSONL and text files into byte ranges of at most this size (each holding the lines that "
        "start in it; compressed files stay one unit); files under 1/16 of it are packed with their neighbours in the listing into units of up to that "
        "size (and 1,024 files); other files are one unit each. A unit is what a crashed run commits and a rerun "
        "skips, so larger units redo more work after a crash and smaller ones write more markers and files.",
    )
    max_reject_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Most rows rejected / rows read for a job that still succeeds. Above it the job writes its "
        "embeddings, rejects and a summary with status 'failed', and exits non-zero with the counts (like BigQuery's "
        "max_bad_records or Spark's FAILFAST). 0.5: a real corpus rejects a few percent (empty, duplicate, broken "
        "rows), while reading the wrong column, encoding or format rejects nearly everything; raise it for corpora "
        "that are mostly blank lines, set 1.0 to turn the guard off.",
    )


class StorageConfig(Section):
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000 or MinIO.")
    region: str | None = Field(None, description="S3 region; defaults to the environment/profile's.")
    anon: bool = Field(False, description="Anonymous access to public buckets.")
    max_attempts: int = Field(
        6,
        ge=1,
        description="Attempts per S3 request, the first included (AWS standard retry: transient errors, backoff with "
        "jitter). Left out: AWS_MAX_ATTEMPTS or the AWS profile's max_attempts, as found on the driver, else 6.",
    )
    ca_bundle: str | None = Field(
        None,
        description="PEM file of the CA certificates both S3 clients check the endpoint's TLS certificate against (a "
        "store with a private or self-signed certificate: MinIO, Ceph, on-prem). Left out: AWS_CA_BUNDLE, the AWS "
        "profile's ca_bundle, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, as found on the driver; none: each client's default "
        "trust store. Every node needs the file at this path. There is no verify: false (pyarrow's client has none).",
    )
    addressing_style: Literal["auto", "path", "virtual"] | None = Field(
        None,
        description="How both S3 clients name the bucket (boto3's names): path (endpoint/bucket/key), virtual "
        "(bucket.endpoint/key: stores that refuse path-style requests), auto (path with endpoint_url, virtual on "
        "AWS). Left out: the AWS profile's s3 addressing_style, else auto.",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_form(cls, value: str | None) -> str | None:
        from pipeline.s3_endpoint import endpoint_form

        return endpoint_form(value) if value and value.strip() else None

    @field_validator("ca_bundle")
    @classmethod
    def _absolute_ca_bundle(cls, value: str | None) -> str | None:
        # the workers' working directory is not the driver's: a relative path would name another file there
        return os.path.abspath(os.path.expanduser(value)) if value and value.strip() else None

    def as_the_aws_tools_find_it(self) -> StorageConfig:
        """This storage with `endpoint_url`, `region`, `ca_bundle`, `addressing_style` and `max_attempts`, where left
        out, as the AWS CLI and boto3 would use them (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's
        endpoint_url; AWS_REGION, AWS_DEFAULT_REGION, the profile's region: pipeline.s3_endpoint; AWS_CA_BUNDLE, the
        profile's ca_bundle, REQUESTS_CA_BUNDLE, SSL_CERT_FILE: pipeline.s3_tls; the profile's s3 addressing_style;
        AWS_MAX_ATTEMPTS, the profile's max_attempts: both clients took 6 whatever they said). A job's config
        takes them on the driver when it reads or writes S3 (JobConfig), so that pyarrow's S3 client, which ignores
        them, and every worker use them too. A CA bundle found so, or given, must be a PEM file here.

        Raises:
            EndpointConfigError (a ValueError): AWS_PROFILE names a profile the config files lack, a file cannot
                be parsed, or the profile's addressing_style is not auto, path or virtual.
            CABundleError (a ValueError): the CA bundle found is missing or holds no PEM certificate.
        """
        from pipeline.s3_endpoint import (
            EndpointConfigError,
            configured_addressing_style,
            configured_endpoint,
            configured_max_attempts,
            configured_region,
            endpoint_form,
        )
        from pipeline.s3_tls import checked_ca_bundle, configured_ca_bundle

        found, source = {}, {}
        lookups = (
            ("endpoint_url", configured_endpoint),
            ("region", configured_region),
            ("ca_bundle", configured_ca_bundle),
            ("addressing_style", configured_addressing_style),
        )
        for name, lookup in lookups:
            if getattr(self, name) is None and (value := lookup()) is not None:
                log.info("storage.%s: %s, from %s", name, *value)
                found[name], source[name] = value
        # a default, not None, where left out: what the config did not set is taken from the AWS tools' settings
        if "max_attempts" not in self.model_fields_set and (value := configured_max_attempts()) is not None:
            log.info("storage.max_attempts: %s, from %s", *value)
            found["max_attempts"] = value[0]
        if "endpoint_url" in found:
            found["endpoint_url"] = endpoint_form(found["endpoint_url"], source["endpoint_url"])
        if "ca_bundle" in found:
            found["ca_bundle"] = checked_ca_bundle(found["ca_bundle"], source["ca_bundle"])
        elif self.ca_bundle is not None:  # given: the driver, where the job runs, needs it as much as its workers
            checked_ca_bundle(self.ca_bundle)
        if found.get("addressing_style", "auto") not in ("auto", "path", "virtual"):
            raise EndpointConfigError(
                f"the s3 addressing_style {found['addressing_style']!r} of {source['addressing_style']} is not one "
                "boto3 takes (auto, path or virtual): fix the profile, or give storage.addressing_style"
            )
        return self.model_copy(update=found) if found else self


def storage_for(uri: str, storage: StorageConfig | None = None) -> StorageConfig:
    """`storage`, or for a library call that gives none the default one, as the AWS tools would fill it where `uri`
    is on S3 (StorageConfig.as_the_aws_tools_find_it); a local `uri` never reads the AWS configuration."""
    storage = storage or StorageConfig()
    return storage.as_the_aws_tools_find_it() if canonical_uri(uri).startswith("s3://") else storage


def s3_locations(section: BaseModel) -> list[str]:
    """The s3:// values of `section`'s string fields, its lists of strings and its sections', nested ones included."""
    found: list[str] = []
    for name in type(section).model_fields:
        value = getattr(section, name)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, BaseModel):
                found += s3_locations(item)
            elif isinstance(item, str) and item.startswith("s3://"):
                found.append(item)
    return found


# False while a config is checked for a job whose driver runs on another machine (`rayembed submit`): that driver
# reads the AWS configuration of its own node. This machine's (a stale AWS_PROFILE, a CA bundle at a path only the
# cluster's pods have, AWS_MAX_ATTEMPTS=0) refused the submission of a job it would never reach.
_READS_AWS_CONFIGURATION: contextvars.ContextVar[bool] = contextvars.ContextVar("reads_aws_configuration", default=True)


@contextlib.contextmanager
def aws_configuration_read_elsewhere() -> typing.Iterator[None]:
    """Job configs validated inside are checked without this machine's AWS configuration (JobConfig leaves `storage`
    as written): for a job submitted to a Ray cluster, whose driver fills it from its own node's."""
    token = _READS_AWS_CONFIGURATION.set(False)
    try:
        yield
    finally:
        _READS_AWS_CONFIGURATION.reset(token)


class JobConfig(Section):
    """A job's whole config (embed, re-embed, mine, cluster). Where any of its locations is on S3, its `storage`
    takes the endpoint and region the AWS tools would use (StorageConfig.as_the_aws_tools_find_it) here, on the
    driver. A job that reads and writes only local paths never reads the AWS configuration: a stale `AWS_PROFILE`
    does not refuse it, and botocore is not imported for it; nor does a config checked inside
    aws_configuration_read_elsewhere (`rayembed submit`)."""

    if typing.TYPE_CHECKING:  # each job's config declares the field itself, in its place among its sections
        storage: StorageConfig

    @model_validator(mode="after")
    def _storage_as_the_aws_tools_find_it(self) -> JobConfig:
        from pipeline.s3_endpoint import EndpointConfigError
        from pipeline.s3_tls import CABundleError

        if s3_locations(self) and _READS_AWS_CONFIGURATION.get():
            try:
                filled = self.storage.as_the_aws_tools_find_it()
            except (EndpointConfigError, CABundleError) as err:
                raise ValueError(str(err)) from None
            # object.__setattr__: assigning would validate (and run this validator) again
            object.__setattr__(self, "storage", filled)
        return self


# Task names of other tools, which model.task (the query instruction) must not take: (names, whose and what to do).
OTHER_TOOLS_TASKS = (
    (
        frozenset({"embed", "embedding", "embeddings", "encode", "pooling", "token_embed", "auto"}),
        "vLLM's task (or runner/convert): every rayembed run embeds; remove model.task",
    ),
    (
        frozenset({"query", "queries", "document", "documents", "passage", "passages", "corpus"}),
        "sentence-transformers' task (its Router's route): whether texts are queries or documents is input.kind",
    ),
    (
        frozenset({"classify", "classification", "score", "reward", "generate", "token_classify"}),
        "vLLM's task for another kind of model; rayembed embeds with embedding models only: remove model.task",
    ),
    (
        frozenset({"retrieval.query", "retrieval.passage", "text-matching", "separation"}),
        "jina-embeddings-v3's task (a LoRA adapter its own code picks), which rayembed does not run; remove model.task",
    ),
)
# A model's prompt prefix, written as model.task (`task: "query: "`): e5's query/passage, nomic-embed's search_query,
# search_document, classification and clustering. Taken as the instruction it became 'Instruct: query: \nQuery: ...'.
PROMPT_PREFIX_WORDS = frozenset(
    {"query", "queries", "passage", "passages", "document", "documents"}
    | {"search_query", "search_document", "classification", "clustering"}
)


class ModelConfig(Section):
    name_or_path: NonBlank = Field(
        "microsoft/harrier-oss-v1-270m", description="Hugging Face hub id or a local model directory."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    pooling: Annotated[Literal["auto", PoolingName], value_alias("pooling")] = Field(
        "auto",
        description="How token states become one vector: last_token, mean, cls, max, mean_sqrt_len_tokens or "
        "weightedmean (sentence-transformers' formulas; its names such as lasttoken, TEI's last-token and vLLM's "
        "LAST are accepted too). 'auto': the model's sentence-transformers Pooling module (modules.json / "
        "1_Pooling/config.json, with its include_prompt), else mean for an encoder and last_token for a decoder; "
        "the choice is recorded in the summary (pooling, pooling_source) and the file metadata.",
    )
    normalize: bool = Field(True, description="L2-normalize embeddings (cosine = dot product).")
    max_tokens: int = Field(
        32768,
        gt=0,
        description="Longest input in tokens, prompt and special tokens included (sentence-transformers' "
        "max_seq_length). Left out: 32768, cut to the model's own limit (sentence_bert_config.json max_seq_length, the "
        "tokenizer's model_max_length, its positions). Set, even to 32768: used as given up to the model's positions "
        "(a warning above the length its files save); above them cut to the model's own limit, with a warning naming "
        "both numbers (a config written for a longer-context model keeps working).",
    )
    dtype: Annotated[Literal["auto", "float32", "bfloat16", "float16"], value_alias("dtype")] = Field(
        "auto",
        description="'auto': the checkpoint's dtype on GPU, float32 on CPU (fp32/float, fp16/half and bf16 are "
        "accepted, as in vLLM and torch).",
    )
    prompt: str | None = Field(None, description="Explicit prefix for every text; beats prompt_name and task.")
    prompt_name: str | None = Field(
        None,
        description="Name of a prompt in the model's config_sentence_transformers.json. Unset: documents get the "
        "model's prompt named document, else passage, else corpus, else its default_prompt_name; queries the one "
        "named query (after model.task), else default_prompt_name (as sentence-transformers' encode_document / "
        "encode_query).",
    )
    task: str | None = Field(
        None,
        description="Query instruction; queries get 'Instruct: {task}\\nQuery: {text}' (documents none), ending as the "
        "model's own query prompt ends when it has that shape (Qwen3-Embedding: 'Query:' with no space).",
    )
    trust_remote_code: bool = Field(False, description="Run code shipped with the model. Only for models you trust.")
    allow_pickle_weights: bool = Field(
        False, description="Allow loading .bin (pickle) weights; by default only safetensors load."
    )
    long_inputs: Literal["truncate", "chunk"] = Field(
        "truncate", description="'truncate' at max_tokens, or 'chunk' into overlapping windows (one row per chunk)."
    )
    chunk_overlap_tokens: int = Field(64, ge=0, description="Tokens shared by consecutive chunks in chunk mode.")
    padding_side: Literal["auto", "left", "right"] = Field(
        "auto", description="'auto' follows the tokenizer; last_token pooling is correct for both sides."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto",
        description="transformers attention kernel. 'auto': flash_attention_2 on a GPU when the flash_attn package "
        "is installed (a causal model then gets padding-free batches: varlen attention, nothing padded is "
        "computed), else sdpa; an architecture that supports neither (MPNet, DeBERTa-v2) gets its eager attention.",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the model's repeated blocks with dynamic shapes (regional compilation, "
        "pipeline/compiling.py): fuses the small element-wise kernels between matmuls, for a one-off compile per "
        "actor at its first batch (seconds on a GPU; needs a C++ compiler on CPU). 'auto': on CUDA devices only, "
        "as vLLM compiles by default on GPUs; a compile that fails falls back to the eager model with a warning. "
        "See docs/performance.md.",
    )

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_setting(cls, value: object) -> object:
        """'auto' in any case, as YAML's booleans are (True, ON); a wrong value gets one message naming the settings
        instead of pydantic's two (one per member of the union)."""
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            return TypeAdapter(bool).validate_python(value)
        except ValidationError:
            raise ValueError(f"should be auto, true or false (or on/off, yes/no), not {value!r}") from None

    @field_validator("task")
    @classmethod
    def _task_is_an_instruction(cls, value: str | None) -> str | None:
        """A task name from another tool is not an instruction: `task: embed` (vLLM) or `task: query`
        (sentence-transformers' Router) was taken as one, and every query was embedded as 'Instruct: embed\\nQuery:
        ...' without a word; nor is a prompt prefix (`task: "query: "`, e5's)."""
        if value is None:
            return value
        name = value.strip().lower()
        if name.endswith(":") and name[:-1].strip() in PROMPT_PREFIX_WORDS:
            raise ValueError(
                f"is the query instruction, a sentence (e.g. 'Given a web search query, retrieve relevant passages "
                f"that answer the query'), and {value!r} is a prompt prefix (e5's 'query: ', nomic-embed's "
                "'search_query: '), which texts get as it is: give it in model.prompt (or name the model's own "
                "prompt in model.prompt_name), and remove model.task"
            )
        for names, whose in OTHER_TOOLS_TASKS:
            if name in names:
                raise ValueError(
                    f"is the query instruction, a sentence (e.g. 'Given a web search query, retrieve relevant passages "
                    f"that answer the query'), and {value!r} is {whose}"
                )
        return value

    @field_validator("name_or_path")
    @classmethod
    def _expand_home(cls, value: str) -> str:
        """`~/models/e5` is the user's home directory, for every loader (a hub id never starts with `~`)."""
        return os.path.expanduser(value) if value.startswith("~") else value

    @field_validator("name_or_path")
    @classmethod
    def _no_url(cls, value: str) -> str:
        """A URL is neither a hub id nor a local directory: `s3://bucket/model` (vLLM streams models from object
        storage), `hf://org/name`, the model page's address. It got 'cannot be fetched from the Hugging Face hub
        (HFValidationError: Repo id must be in the form ...)'."""
        scheme, sep, rest = value.partition("://")
        if not sep:
            return value
        hub_hosts = ("huggingface.co/", "www.huggingface.co/", "hf.co/")  # hf.co: the hub's short links
        hub = next((rest[len(h) :] for h in hub_hosts if rest.startswith(h)), rest).strip("/")
        if scheme == "hf" or (scheme in ("http", "https") and rest.startswith(hub_hosts)):
            raise ValueError(f"is a URL; give the hub id as it is: {'/'.join(hub.split('/')[:2])!r}")
        if scheme == "file":
            raise ValueError(f"is a file:// URL; give the local directory as a path: {rest!r}")
        raise ValueError(
            f"is a URL ({scheme}://); rayembed loads a model from the Hugging Face hub (an id such as "
            "'intfloat/multilingual-e5-small') or a local directory, not from object storage or a web server: copy "
            "the model folder to a directory every Ray node can read (the image, a volume; e.g. `aws s3 sync "
            "s3://bucket/models/e5 /models/e5`) and give that path"
        )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.prompt is not None and self.prompt_name is not None:
            raise ValueError("model: set either 'prompt' (explicit text) or 'prompt_name', not both")
        if self.long_inputs == "chunk" and self.chunk_overlap_tokens >= self.max_tokens // 2:
            raise ValueError(
                f"model.chunk_overlap_tokens ({self.chunk_overlap_tokens}) must be below half of "
                f"model.max_tokens ({self.max_tokens}); lower the overlap"
            )
        return self

    def for_workers(self) -> ModelConfig:
        """This config as the Ray workers must get it: a relative local model directory made absolute.

        A relative `name_or_path` names a directory below the driver's working directory, and a worker runs in
        another one (a cluster's, or its runtime environment's), where transformers would take the path for a hub
        id. Hub ids, absolute paths and paths that are no directory here are returned unchanged. Records (output
        metadata, the summary) keep the path as the user wrote it.
        """
        if os.path.isabs(self.name_or_path) or not os.path.isdir(self.name_or_path):
            return self
        return self.model_copy(update={"name_or_path": os.path.abspath(self.name_or_path)})


class BatchingConfig(Section):
    max_tokens_per_batch: int = Field(
        16384, gt=0, description="Budget of padded tokens per forward pass: rows x longest row <= this."
    )
    max_batch_size: int = Field(256, gt=0, description="Upper bound on rows per forward pass.")
    min_batch_tokens: int | None = Field(
        None,
        gt=0,
        description="Padded tokens a batch holds before it may end at a length bucket; None: max_tokens_per_batch / 4 "
        "on a GPU (fewer, larger forward passes), / 64 on a CPU (less padding).",
    )
    rows_per_block: int = Field(
        4096,
        gt=0,
        description="Rows the model actor sorts by length and cuts into batches at once (Ray Data batch size of the "
        "model stage): larger blocks pad less but hold more memory. With several embedding actors the input is cut "
        "into blocks of this many rows, fewer for a corpus too small to give each actor one (pipeline.spreading).",
    )


class ComputeConfig(Section):
    ray_address: str | None = Field(
        None,
        description="Ray cluster address; None uses RAY_ADDRESS (set by `ray job submit`) or starts Ray in-process.",
    )
    dashboard: bool = Field(
        False,
        description="Start the Ray dashboard with an in-process Ray (no ray_address or RAY_ADDRESS). Off by default: "
        "its ten-odd processes cost seconds of start-up a one-off job does not use; a cluster keeps its own.",
    )
    num_actors: int | None = Field(
        None,
        gt=0,
        description="Fixed number of embedding actors. None (and max_actors unset): one per GPU of the cluster "
        "(GPU actors), one per node (CPU actors).",
    )
    min_actors: int = Field(1, gt=0, description="Autoscaling lower bound (when num_actors is unset).")
    max_actors: int | None = Field(
        None,
        gt=0,
        description="Autoscaling upper bound (when num_actors is unset); None: a fixed pool of one actor per GPU "
        "(GPU actors) or per node (CPU actors), at least min_actors.",
    )
    gpus_per_actor: float | None = Field(
        None,
        ge=0,
        description="GPUs per embedding actor. Set it (e.g. 1) on an autoscaling cluster: the request is what makes "
        "the autoscaler add GPU nodes. None: 1 when the cluster has GPUs at start, else 0 (CPU actors, a warning).",
    )
    cpus_per_actor: float = Field(
        1.0,
        gt=0,
        description="CPUs Ray reserves per embedding actor, and the least torch threads it runs (see torch_threads).",
    )
    accelerator_type: str | None = Field(
        None,
        min_length=1,
        description="The accelerator the embedding actors must run on (Ray's accelerator_type: A100, H100, L4, ... as "
        "ray.util.accelerators names them and Ray detects them on GPU nodes). On a cluster with several GPU kinds "
        "the default pool is one actor per GPU of the nodes of this kind, and gpus_per_actor defaults to 1. None: any "
        "node with the GPUs asked for.",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each embedding actor requests (Ray's resources=, e.g. {gpu_pool_a: 1} for "
        "nodes started with --resources '{\"gpu_pool_a\": 8}'): the actors run only on nodes that have them, and the "
        "default pool counts only the GPUs (or, for CPU actors, the nodes) that have them. CPU and GPU are "
        "cpus_per_actor and gpus_per_actor.",
    )
    memory_per_actor: int | None = Field(
        None,
        description="Memory Ray reserves per embedding actor, in bytes or as a size: 16GiB, 16Gi (Kubernetes), 16GB "
        "(10^9 bytes). Ray's memory= resource, which KubeRay sets per node from the pod's memory limit: the actors "
        "run only on nodes with that much memory Ray has not given out yet, and a request no node can meet is "
        "refused at start as cpus_per_actor and gpus_per_actor are. A reservation, not a limit: Ray does not stop an "
        "actor from using more. None: nothing reserved (Ray's default).",
    )
    torch_threads: int | None = Field(
        None,
        gt=0,
        description="torch intra-op threads per embedding actor. None: the CPUs of the actor's node shared among the "
        "model actors on that node (all of them for the default one CPU actor per node), at least cpus_per_actor: "
        "Ray's CPU reservation is logical, and the tokenizer/IO stages need little.",
    )
    num_tokenizers: int = Field(1, gt=0, description="Tokenizer actors (CPU stage ahead of the model stage).")
    cpus_per_tokenizer: float = Field(0.5, gt=0, description="CPUs per tokenizer actor.")
    cpus_per_io_task: float = Field(
        0.25, gt=0, description="CPUs per read/write task; mostly waiting on storage, so a fraction is enough."
    )
    max_restarts: int = Field(
        3,
        ge=0,
        description="Actors that die in a row while loading the model before the job fails (k-NN shard actors: "
        "restarts of a dead actor). Actors lost with their node later are always restarted: a preempted node is "
        "not a failure (pipeline.stages.configure_retries).",
    )
    wait_for_nodes_s: float = Field(
        300.0,
        ge=0,
        description="On a connected cluster, seconds a job waits at its start for a node that meets its requests "
        "(GPUs, accelerator_type, resources, CPUs) when no node does and the cluster cannot add one: a worker being "
        "replaced or still joining. Then it is refused naming the key. 0: refused at once.",
    )
    max_task_retries: int = Field(
        3,
        ge=0,
        description="Retries of a block whose stage raised an exception (e.g. a transient CUDA error); the job's own "
        "errors (bad input, missing model) are never retried. Ray Data stages redo work lost with a worker or node "
        "without a count; plain Ray tasks (k-NN steps) retry it this many times.",
    )

    @field_validator("memory_per_actor", mode="before")
    @classmethod
    def _byte_size(cls, value: object) -> object:
        """Bytes, or a size in pydantic's ByteSize words (16GiB, 16GB, 1.5 GiB) or Kubernetes' (16Gi, 512Mi)."""
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"expects a size in bytes (e.g. 16GiB), not the boolean {str(value).lower()}")  # noqa: TRY004 -- pydantic reports ValueError
        text = value.strip() if isinstance(value, str) else value
        if isinstance(text, str) and re.fullmatch(r"[0-9.]+\s*[KMGTPE]i", text):
            text += "B"  # Kubernetes' binary suffixes: 16Gi is 16GiB
        try:
            size = int(TypeAdapter(ByteSize).validate_python(text))
        except ValidationError:
            raise ValueError(
                f"expects a size: bytes, or a number with a unit such as 16GiB, 16Gi or 16GB, not {value!r}"
            ) from None
        if size <= 0:
            raise ValueError(f"must be above 0 bytes, not {value!r} (leave it unset to reserve nothing)")
        return size

    @field_validator("resources")
    @classmethod
    def _custom_resources_only(cls, value: dict[str, float]) -> dict[str, float]:
        builtin = {"CPU": "compute.cpus_per_actor", "GPU": "compute.gpus_per_actor"}
        for name, amount in value.items():
            if name in builtin or name.startswith("accelerator_type:"):
                instead = builtin.get(name, "compute.accelerator_type")
                raise ValueError(f"{name!r} is not a custom resource: set {instead} instead")
            if not amount > 0:
                raise ValueError(f"{name!r}: the amount must be above 0, not {amount:g}")
        return value

    @model_validator(mode="after")
    def _check(self) -> ComputeConfig:
        if self.max_actors is not None and self.min_actors > self.max_actors:
            raise ValueError(f"compute.min_actors ({self.min_actors}) exceeds compute.max_actors ({self.max_actors})")
        return self

    def actor_requirements(self) -> dict[str, float]:
        """The custom Ray resources an embedding actor asks for: `resources`, and the accelerator type as Ray
        represents it (a node resource `accelerator_type:<type>`, of which a request takes 0.001)."""
        accelerator = {f"accelerator_type:{self.accelerator_type}": 0.001} if self.accelerator_type else {}
        return {**self.resources, **accelerator}

    def requested_gpus(self) -> float | None:
        """gpus_per_actor, where an accelerator_type asks for 1 when it is unset (None: decided by the cluster)."""
        if self.gpus_per_actor is None and self.accelerator_type:
            return 1.0
        return self.gpus_per_actor

    def actor_pool_size(self, default_actors: int = 1) -> tuple[int, int]:
        """(min, max) embedding actors; `default_actors` (one per GPU or per node) when neither num_actors nor
        max_actors is set."""
        if self.num_actors is not None:
            return self.num_actors, self.num_actors
        if self.max_actors is None:
            size = max(self.min_actors, default_actors)
            return size, size
        return self.min_actors, self.max_actors


class OutputConfig(Section):
    uri: Location = Field(description="Local directory or s3://bucket/prefix for the embeddings dataset.")
    dtype: Annotated[Literal["float32", "float16", "int8", "uint8", "binary", "ubinary"], value_alias("dtype")] = Field(
        "float32",
        description="Stored embedding precision (sentence-transformers' precision names): float32, float16; int8 / "
        "uint8 scalar-quantized per dimension with ranges calibrated on the first output.calibration_rows rows and "
        "recorded in the file metadata; binary / ubinary one sign bit per dimension packed 8 per byte (int8 = byte - "
        "128 / uint8). See pipeline/quantization.py. The bitext and cluster jobs need float32 or float16.",
    )
    dimensions: int | None = Field(
        None,
        gt=0,
        description="Keep the first N dimensions and re-normalize (Matryoshka; sentence-transformers' truncate_dim, "
        "`dimensions` in OpenAI/TEI/vLLM). Unset: the model's saved truncate_dim (config_sentence_transformers.json) "
        "if any, as sentence-transformers applies it; null: all of the model's.",
    )
    calibration_rows: int = Field(
        10_000,
        gt=0,
        description="For output.dtype int8/uint8: rows embedded first (from the first files; rows rejected on "
        "reading do not count) to calibrate the per-dimension ranges.",
    )
    token_columns: bool = Field(
        False,
        description="Add `num_tokens` (tokens the model read, prompt and special tokens included) and `truncated` "
        "(the row was cut at model.max_tokens) output columns, to find truncated rows.",
    )
    keep_columns: list[str] = Field(
        default_factory=list,
        description="Input columns copied to the output rows; a column a file lacks takes the value its directory "
        "names in Hive's key=value layout (lang=fr/part-0.parquet: lang 'fr', a string), else null. A dotted path "
        "(meta.title) keeps that struct field under the flat output column named as written ('meta.title').",
    )
    rows_per_file: int = Field(100_000, gt=0, description="Most rows in one output Parquet file.")
    overwrite: bool = Field(
        False,
        description="Allow writing into a location that already holds a dataset (its files are replaced). Another "
        "run that is writing there now is still refused (output.lease_seconds).",
    )
    lease_seconds: float = Field(
        120.0,
        gt=0,
        description="Lifetime of the output's lease (<output>/_lease.json, docs/resume.md): the run renews it every "
        "third of this, and a second run on the same output fails at once (exit 3) naming the first. A run killed "
        "on another host blocks the next one for at most this long (same host: a dead process is taken over at "
        "once).",
    )
    lease_wait_seconds: float = Field(
        0.0,
        ge=0,
        description="How long a run waits for another live run's lease on its output to end before it fails "
        "(0: at once). A retry whose earlier attempt died on another host (a new pod) needs a wait above "
        "lease_seconds to resume instead of failing.",
    )


class EmbedConfig(JobConfig):
    input: InputConfig
    output: OutputConfig
    storage: StorageConfig = Field(default_factory=StorageConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)

    @model_validator(mode="after")
    def _check(self) -> EmbedConfig:
        clash = sorted(OUTPUT_COLUMNS & set(self.output.keep_columns))
        if clash:
            raise ValueError(f"output.keep_columns {clash} clash with output columns; remove them")
        if self.input.format == "text" and self.output.keep_columns:
            raise ValueError("output.keep_columns needs a columnar input (parquet or jsonl), not format=text")
        from pipeline.overlap import check_apart  # imports pipeline.storage, which imports this module

        check_apart("output.uri", self.output.uri, {"input.uri": self.input.uri})
        return self
