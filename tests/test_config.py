from __future__ import annotations

import re

import pytest

from pipeline.config import ConfigError, EmbedConfig, load_config

MINIMAL = "input: {uri: data/, format: jsonl}\noutput: {uri: out/}\n"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_target_harrier(tmp_path):
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL))
    assert cfg.model.name_or_path == "microsoft/harrier-oss-v1-270m"
    assert (cfg.model.pooling, cfg.model.normalize, cfg.model.max_tokens) == ("auto", True, 32768)
    assert cfg.model.trust_remote_code is False


def test_overrides_are_typed(tmp_path):
    cfg = load_config(
        EmbedConfig,
        write(tmp_path, MINIMAL),
        ["model.max_tokens=512", "output.keep_columns=[lang, topic]", "compute.ray_address=auto"],
    )
    assert cfg.model.max_tokens == 512 and cfg.output.keep_columns == ["lang", "topic"]
    assert cfg.compute.ray_address == "auto"


@pytest.mark.parametrize(
    "extra, message",
    [
        ("model: {max_tokenz: 5}", "model.max_tokenz: Extra inputs are not permitted"),
        ("model: {max_tokens: 0}", "model.max_tokens: Input should be greater than 0"),
        ("model: {max_tokens: lots}", "model.max_tokens: Input should be a valid integer"),
        ("model: {pooling: median}", "model.pooling: Input should be 'auto', 'last_token', 'mean', 'cls', 'max'"),
        ("model: {prompt: 'a', prompt_name: query}", "either 'prompt'"),
        ("compute: {min_actors: 3, max_actors: 2}", "exceeds compute.max_actors"),
        ("output: {uri: o/, keep_columns: [embedding]}", "clash with output columns"),
        ("output: {uri: [a/, b/]}", "output.uri: Input should be a valid string (one location: a file, a directory"),
    ],
)
def test_bad_values_name_the_key(tmp_path, extra, message):
    text = MINIMAL.replace("output: {uri: out/}\n", "") if extra.startswith("output") else MINIMAL
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(")", "\\)")):
        load_config(EmbedConfig, write(tmp_path, text + extra + "\n"))


def test_missing_required_section(tmp_path):
    with pytest.raises(ConfigError, match="output: Field required"):
        load_config(EmbedConfig, write(tmp_path, "input: {uri: x, format: text}\n"))


def test_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), ["model.max_tokens"])


@pytest.mark.parametrize("override", ["model..max_tokens=5", ".max_tokens=5", "model.=5", "model. .x=5"])
def test_set_with_an_empty_key_name_is_a_syntax_error_naming_the_flag(tmp_path, override):
    """`--set model..max_tokens=5` (a doubled dot) was blamed on the file: `c.yaml:3: model.: Extra inputs ...`."""
    with pytest.raises(ConfigError) as err:
        load_config(EmbedConfig, write(tmp_path, MINIMAL + "model: {pooling: mean}\n"), [override])
    assert str(err.value).startswith(f"--set {override!r}: ") and "empty name between dots" in str(err.value)


@pytest.mark.parametrize(
    "text, line, key",
    [
        ("model:\n  pooling: mean\n  max_tokens: 8\n  pooling: cls\n", 6, "pooling"),  # block mapping
        ("model: {pooling: mean, pooling: cls}\n", 3, "pooling"),  # flow mapping
        ("model: {pooling: mean}\nmodel: {max_tokens: 8}\n", 4, "model"),  # a section written twice
        ("output: {uri: o2/}\n", 3, "output"),  # a section MINIMAL has
        ("model:\n  'pooling': mean\n  pooling: cls\n", 5, "pooling"),  # quoted and plain spellings
    ],
)
def test_a_key_written_twice_in_the_yaml_is_refused_naming_both_lines(tmp_path, text, line, key):
    """PyYAML keeps the last value of a repeated key without a word: `pooling: mean` then `pooling: cls` ran cls,
    and a second `model:` section dropped the first one's keys. Refused, exit 2, naming the key and both lines."""
    from jobs.embed import main

    path = write(tmp_path, MINIMAL + text)
    with pytest.raises(ConfigError) as err:
        load_config(EmbedConfig, path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}:") and f"the key {key!r} is written twice" in msg and "first at line" in msg
    assert main(["--config", str(path), "--show-config"]) == 2


def test_yaml_anchors_and_merge_keys_are_not_repeats(tmp_path):
    """An alias used twice, and a `<<: *anchor` merge whose key is then written out (YAML's override), load."""
    text = (
        "input: {uri: data/, format: jsonl}\n"
        "output: &out {uri: out/, dtype: float16}\n"
        "model: {max_tokens: &n 64}\n"
        "batching:\n  <<: {max_tokens_per_batch: 128, max_batch_size: 8}\n  max_batch_size: *n\n"
    )
    cfg = load_config(EmbedConfig, write(tmp_path, text))
    assert (cfg.model.max_tokens, cfg.batching.max_tokens_per_batch, cfg.batching.max_batch_size) == (64, 128, 64)


def test_top_level_extension_fields_hold_anchors_and_configure_nothing(tmp_path):
    """Docker Compose's `x-common: &common {...}` section, merged into several sections, loads; it was refused as an
    unknown section. Another unknown section still is, and its line says how to name an anchors-only section."""
    text = (
        "x-common: &common {max_tokens: 64, pooling: mean}\n"
        "x-out: {dtype: float16}\n"
        "input: {uri: data/, format: jsonl}\n"
        "output: {uri: out/}\n"
        "model: {<<: *common, max_tokens: 32}\n"
    )
    cfg = load_config(EmbedConfig, write(tmp_path, text))
    assert (cfg.model.max_tokens, cfg.model.pooling, cfg.output.dtype) == (32, "mean", "float32")
    with pytest.raises(ConfigError) as err:
        load_config(EmbedConfig, write(tmp_path, text.replace("x-common", "common")))
    assert "c.yaml:1: common: Extra inputs" in str(err.value) and "named x-common" in str(err.value)
    with pytest.raises(ConfigError, match="modle: .*did you mean model\\?"):
        load_config(EmbedConfig, write(tmp_path, MINIMAL + "modle: {pooling: mean}\n"))


def test_a_set_into_an_extension_field_is_refused_saying_where_to_set_it(tmp_path):
    """`--set x-common.max_tokens=16` after the file's anchors were resolved reaches no section: it was refused as an
    unknown section whose message said to name it `x-x-common`. It now says that the anchors were resolved and to set
    the key in the section that uses it; that --set works."""
    text = (
        "x-common: &common {max_tokens: 64}\ninput: {uri: data/, format: jsonl}\noutput: {uri: out/}\nmodel: *common\n"
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"--set 'x-common.max_tokens=16': .*resolved .*--set <section>.max_tokens"):
        load_config(EmbedConfig, path, ["x-common.max_tokens=16"])
    assert load_config(EmbedConfig, path, ["model.max_tokens=16"]).model.max_tokens == 16


@pytest.mark.parametrize(
    "text, overrides, where, reference",
    [
        ("input: {uri: data/, format: jsonl}\noutput: {uri: '${HOME}/out'}\n", [], "c.yaml:2: output.uri", "${HOME}"),
        ("input: {uri: 's3://${BUCKET}/corpus/'}\noutput: {uri: out/}\n", [], "c.yaml:1: input.uri", "${BUCKET}"),
        ("input: {uri: [a/, '${oc.env:DATA}/b']}\noutput: {uri: out/}\n", [], "c.yaml:1: input.uri", "${oc.env:DATA}"),
        (
            MINIMAL,
            ["model.name_or_path=$RAYEMBED_T7B/e5"],
            "--set model.name_or_path=$RAYEMBED_T7B/e5",
            "$RAYEMBED_T7B",
        ),
        (MINIMAL, ["storage.ca_bundle=${CA}"], "--set storage.ca_bundle=${CA}", "${CA}"),
        # cmd.exe's %NAME%: a name Windows sets, or one set here (any case), also after a percent-escape
        ("input: {uri: data/}\noutput: {uri: '%UserProfile%\\out'}\n", [], "c.yaml:2: output.uri", "%UserProfile%"),
        (MINIMAL, ["output.uri=s3://b/caf%C3%A9%rayembed_t7b%/"], "--set output.uri=", "%rayembed_t7b%"),
    ],
)
def test_an_environment_variable_in_a_location_is_refused_not_taken_as_a_name(
    tmp_path, monkeypatch, text, overrides, where, reference
):
    """`output.uri: ${HOME}/out` (docker-compose, OmegaConf and shells expand it) was a folder named `${HOME}` below
    the working directory, `s3://${BUCKET}/` a bucket of that name. Refused, naming the key, where it was written
    and what to do."""
    monkeypatch.setenv("RAYEMBED_T7B", "/models")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(EmbedConfig, write(tmp_path, text), overrides)
    line = next(x for x in str(err.value).splitlines() if reference in x)
    assert line.strip().startswith(where.replace("c.yaml", str(tmp_path / "c.yaml"))) and "is not expanded" in line
    assert "--set" in line and "envsubst" in line


def test_a_dollar_that_names_no_set_variable_or_sits_in_a_text_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("PRICES", raising=False)
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL), ["output.uri=out/$PRICES/", "model.prompt=${task}: "])
    assert (cfg.output.uri, cfg.model.prompt) == ("out/$PRICES/", "${task}: ")
    # percent-escapes of an S3 key (caf\u00e9, \u20ac) and a %NAME% no one set are no variable
    monkeypatch.setenv("CD", "x")
    for uri in ("s3://b/caf%C3%A9/%E2%82%AC/%CD%85/", "out/100%PRICES%/", "//srv/C$/data/"):
        assert load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"output.uri={uri}"]).output.uri == uri


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(EmbedConfig, tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "override, key, value",
    [
        ("model.prompt=query: ", "prompt", "query: "),  # e5's documented prefix, trailing space kept
        ("model.revision=20240101", "revision", "20240101"),  # a string field stays a string
        ("model.prompt=a=b", "prompt", "a=b"),  # the value is everything after the first '='
        ("model.prompt='passage: '", "prompt", "passage: "),  # quoting for YAML still works
        ("model.revision=null", "revision", None),
        ("model.prompt=true", "prompt", "true"),
        ("model.max_tokens=512", "max_tokens", 512),
    ],
)
def test_set_takes_string_fields_verbatim(tmp_path, override, key, value):
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL), [override])
    assert getattr(cfg.model, key) == value


@pytest.mark.parametrize(
    "override, expected",
    [
        ("output.keep_columns=lang,topic", ["lang", "topic"]),
        ("output.keep_columns=[a, b]", ["a", "b"]),
        ("output.keep_columns=lang", ["lang"]),
        ("output.keep_columns=[]", []),
        ("output.keep_columns=[tags[0], meta.lang]", ["tags[0]", "meta.lang"]),  # list positions: not YAML
        ('output.keep_columns=["tags[0]"]', ["tags[0]"]),
    ],
)
def test_set_string_lists(tmp_path, override, expected):
    assert load_config(EmbedConfig, write(tmp_path, MINIMAL), [override]).output.keep_columns == expected


def test_set_errors_name_the_flag_not_the_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(EmbedConfig, write(tmp_path, MINIMAL), ["model.max_tokens=lots"])
    assert "--set model.max_tokens=lots: model.max_tokens: Input should be a valid integer" in str(err.value)


def test_yaml_errors_point_at_file_and_line(tmp_path):
    path = write(tmp_path, MINIMAL + "model:\n  max_tokens: 8\n  pooling: [mean\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+:\d+: YAML syntax error"):
        load_config(EmbedConfig, path)
    path = write(tmp_path, MINIMAL + "model:\n  max_tokens: 0\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: model.max_tokens: Input should be greater than 0"):
        load_config(EmbedConfig, path)


@pytest.mark.parametrize(
    "text, overrides, hint",
    [
        ("model: {poolng: mean}\n", [], "did you mean pooling?"),
        ("", ["model.max_token=5"], "did you mean max_tokens?"),
        ("modle: {pooling: mean}\n", [], "did you mean model?"),
        ("batching: {zzz: 1}\n", [], "known keys: max_tokens_per_batch"),
    ],
)
def test_unknown_key_suggests_the_closest(tmp_path, text, overrides, hint):
    with pytest.raises(ConfigError, match=hint):
        load_config(EmbedConfig, write(tmp_path, MINIMAL + text), overrides)


def test_yaml_syntax_error_exits_2_with_file_and_line(tmp_path, capsys):
    from jobs.embed import main

    path = write(tmp_path, "input: {uri: x, format: text\n")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and "YAML syntax error" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "override, key, value",
    [
        ("model.pooling=lasttoken", "pooling", "last_token"),  # sentence-transformers' name
        ("model.pooling=last-token", "pooling", "last_token"),  # TEI's --pooling
        ("model.pooling=LAST", "pooling", "last_token"),  # vLLM's pooling_type
        ("model.pooling=CLS", "pooling", "cls"),
        ("model.pooling=pooling_mode_mean_tokens", "pooling", "mean"),  # the key in 1_Pooling/config.json
        ("model.pooling=weighted-mean", "pooling", "weightedmean"),
        ("model.dtype=bf16", "dtype", "bfloat16"),
        ("model.dtype=half", "dtype", "float16"),  # vLLM
        ("model.dtype=FP32", "dtype", "float32"),
    ],
)
def test_other_tools_value_names_are_accepted(tmp_path, override, key, value):
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL), [override])
    assert getattr(cfg.model, key) == value


@pytest.mark.parametrize(
    "override, says",
    [
        ("model.pooling=splade", "'splade': TEI's splade pooling gives sparse vocabulary-sized vectors"),
        ("model.pooling=SPLADE", "rayembed makes dense vectors"),
        ("model.pooling=ALL", "'ALL': vLLM's ALL pooling returns one vector per token"),
        ("model.pooling=STEP", "'STEP': vLLM's STEP pooling returns per-step reward scores"),
    ],
)
def test_another_tools_pooling_rayembed_does_not_make_says_why(tmp_path, override, says):
    """TEI's --pooling splade and vLLM's ALL / STEP name outputs that are not one dense vector per text: refused
    saying so (they got the list of accepted values alone)."""
    with pytest.raises(ConfigError, match=re.escape("model.pooling: Value error, ") + ".*" + re.escape(says)):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [override])


@pytest.mark.parametrize("text, expected", [("fp16", "float16"), ("Float32", "float32"), ("INT8", "int8")])
def test_output_dtype_takes_other_spellings(tmp_path, text, expected):
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"output.dtype={text}"])
    assert cfg.output.dtype == expected


@pytest.mark.parametrize(
    "override, hint",
    [
        ("model.truncate_dim=128", "did you mean output.dimensions? (sentence-transformers' truncate_dim)"),
        ("model.max_seq_length=128", "did you mean model.max_tokens?"),
        ("model.normalize_embeddings=false", "did you mean model.normalize?"),
        # spelled like min_batch_tokens, but TEI's --max-batch-tokens is our token budget
        ("batching.max_batch_tokens=9000", "did you mean batching.max_tokens_per_batch? (TEI's --max-batch-tokens)"),
        ("output.precision=int8", "did you mean output.dtype?"),
        ("model.batch_size=8", "did you mean batching.max_batch_size?"),
        ("model.model_id=x", "did you mean model.name_or_path?"),
        ("compute.concurrency=2", "did you mean compute.num_actors?"),
        ("model.dimensions=64", "did you mean output.dimensions? (a key of the output section)"),
        ("output.normalize=false", "did you mean model.normalize?"),
        # sentence-transformers' prompts dict and device: 'did you mean prompt?' / the list of known keys
        ("model.prompts.query=q", "did you mean model.prompt_name? (sentence-transformers' prompts: the model's own"),
        ("model.device=cuda", "did you mean compute.gpus_per_actor? (sentence-transformers' device"),
    ],
)
def test_unknown_key_from_another_tool_points_at_ours(tmp_path, override, hint):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [override])


def test_key_aliases_point_at_keys_that_exist():
    from pipeline.cluster_config import ClusterConfig
    from pipeline.config_loading import KEY_ALIASES, field_annotation
    from pipeline.mine_config import MineConfig

    jobs = (EmbedConfig, ClusterConfig, MineConfig)
    missing = [t for t, _ in KEY_ALIASES.values() if t and all(field_annotation(j, t.split(".")) is None for j in jobs)]
    assert not missing


@pytest.mark.parametrize(
    "override, hint",
    [
        # TEI: got 'known keys: ...' and 'did you mean name_or_path?'
        ("model.truncation_direction=left", "TEI's truncation_direction: rayembed has no such setting; a long text is"),
        # TEI's truncate: false fails a too-long input: got 'did you mean model.long_inputs? (truncate or chunk)' alone
        ("model.truncate=false", "TEI's false, a too-long input failing, has no rayembed form"),
        ("model.auto_truncate=false", "TEI's false, a too-long input failing, has no rayembed form"),
        # FlagEmbedding (BGE) / LangChain: got 'known keys: ...' alone; their instruction is a prefix, not model.task
        ("model.query_instruction_for_retrieval=x", "did you mean model.prompt? (FlagEmbedding's query_instruction"),
        ("model.query_instruction=x", "give it as model.prompt on the query corpus (input.kind: query); model.task"),
        ("model.passage_instruction_for_retrieval=x", "the prefix each document gets, model.prompt on the document"),
        ("model.use_fp16=true", "did you mean model.dtype? (FlagEmbedding's use_fp16: true is model.dtype: float16)"),
        ("model.query_max_len=64", "did you mean model.max_tokens? (FlagEmbedding's query_max_len"),
        ("model.dense_path=2_Dense", "TEI's --dense-path: rayembed has no such setting; it runs the Dense modules"),
        ("model.hf_api_token=x", "set HF_TOKEN in the job's environment"),  # got 'did you mean max_tokens?'
        ("model.max_concurrent_requests=512", "(a batch job serves no requests); parallelism is compute.num_actors"),
        ("model.max_batch_requests=8", "did you mean batching.max_batch_size? (TEI's --max-batch-requests)"),
        ("dtype=float16", "did you mean model.dtype? (TEI's --dtype"),  # got 'did you mean output.dtype?'
        # sentence-transformers' encode and constructor
        ("model.show_progress_bar=false", "show_progress_bar: rayembed has no such setting; a job prints a progress"),
        ("model.convert_to_numpy=true", "vectors are written to output.uri as Parquet"),
        ("model.output_value=token_embeddings", "it stores one sentence embedding per row"),
        ("model.similarity_fn_name=dot", "so cosine similarity is their dot product"),
        ("model.backend=onnx", "it runs the model's safetensors weights in PyTorch"),
        ("model.token=hf_x", "set HF_TOKEN in the job's environment"),  # got 'did you mean max_tokens?'
        ("model.cache_folder=/c", "set HF_HOME (or HF_HUB_CACHE)"),
        ("model.local_files_only=true", "set HF_HUB_OFFLINE=1"),
        (
            "model.model_kwargs={torch_dtype: bfloat16}",
            "did you mean model.dtype? (sentence-transformers' model_kwargs",
        ),
        # vLLM
        ("model.override_pooler_config={pooling_type: MEAN}", "did you mean model.pooling? (vLLM's pooler config"),
        ("model.tensor_parallel_size=2", "each actor holds a whole model copy"),
        ("model.gpu_memory_utilization=0.9", "bounded by batching.max_tokens_per_batch"),
        (
            "model.enforce_eager=true",
            "did you mean model.compile? (vLLM's enforce_eager: true is model.compile: false)",
        ),
        ("model.runner=pooling", "every run is an embedding (pooling) run: remove it"),
        ("model.hf_overrides={num_hidden_layers: 2}", "write the change into config.json of a copy of the model"),
        # Ray Data / Ray
        ("compute.batch_size=64", "Ray Data's map_batches(batch_size=...): rows per forward pass"),
        ("compute.min_size=1", "did you mean compute.min_actors? (Ray Data's ActorPoolStrategy(min_size=...))"),
        ("compute.runtime_env={pip: [x]}", "give it where the job is started (ray job submit --runtime-env"),
        ("compute.memory=1000", "did you mean compute.memory_per_actor? (Ray's memory= per actor"),
        # a RAG splitter's chunk_size is our chunk window; `pool` stays a misspelled pooling
        ("model.chunk_size=512", "did you mean model.max_tokens? (a chunk window with model.long_inputs: chunk is"),
        ("model.pool=mean", "did you mean pooling?"),
        # long inputs and widths as vLLM and sentence-transformers name them: got 'known keys: ...' or 'did you mean
        # prompt?' (include_prompt)
        ("model.truncate_prompt_tokens=512", "did you mean model.max_tokens? (vLLM's truncate_prompt_tokens: k is"),
        ("model.truncate_prompt_tokens=512", "vLLM keeps the last k tokens, rayembed cuts where the model's tokenizer"),
        ("model.enable_chunked_processing=true", "did you mean model.long_inputs? (vLLM's enable_chunked_processing"),
        ("model.enable_chunked_processing=true", "vLLM averages a text's windows into one vector, rayembed does not"),
        ("model.max_embed_len=100000", "did you mean model.long_inputs? (vLLM's max_embed_len"),
        ("model.truncation_side=left", "its truncation_side in tokenizer_config.json"),
        ("output.matryoshka_dimensions=[256]", "did you mean output.dimensions? (vLLM's matryoshka_dimensions"),
        ("model.include_prompt=false", "it reads include_prompt from the model's Pooling config (1_Pooling/config"),
        ("model.pooling_mode_lasttoken=true", "did you mean model.pooling? (sentence-transformers' Pooling pooling_mo"),
        ("model.pooling_mode_cls_token=true", "model.pooling: cls (or auto"),
        ("input.columns=[text, id]", "did you mean output.keep_columns? (Ray Data's read_parquet(columns=...)"),
        ("output.max_rows_per_file=5000", "did you mean output.rows_per_file?"),
        # a key of another section that means something else there: got 'did you mean input.format?'
        ("output.format=jsonl", "rayembed has no such setting: output is always Parquet files under output.uri"),
        ("output.compression=zstd", "pyarrow's default compression (snappy)"),
        # another job's key (the cluster job's vectors): got 'did you mean text_column?'
        ("input.vector_column=vector", "input.embedding_column is a key of another job's config, not of this one"),
        ("model.n_clusters=8", "clustering.k is a key of another job's config, not of this one"),
    ],
)
def test_every_key_users_bring_from_tei_sentence_transformers_vllm_and_ray_points_at_ours_or_says_why_none(
    tmp_path, override, hint
):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [override])


def test_every_hint_in_the_table_reaches_the_user():
    """The whole table: each key, written under the section of its target (or of its `section.key` entry), gets its
    own hint, not a spelling match or another section's key."""
    from pipeline.cluster_config import ClusterConfig
    from pipeline.config_loading import KEY_ALIASES, field_annotation, section_fields, suggestion
    from pipeline.mine_config import MineConfig

    for key, (target, text) in KEY_ALIASES.items():
        section, _, leaf = key.rpartition(".")
        section = section or (target.split(".")[0] if target else "model")
        where = target.split(".") if target else [section]  # the job that has the target (input.embedding_column)
        job = next(j for j in (EmbedConfig, MineConfig, ClusterConfig) if field_annotation(j, where) is not None)
        # a `section.key` entry of a nested section (dedup.threshold) is written under its target's sections
        top = section in (section_fields(job, ()) or [])
        loc = (section, leaf) if top or target is None else (*target.split(".")[:-1], leaf)
        hint = suggestion(job, loc)
        want = f"; {text}" if target is None else f"; did you mean {target}? ({text})"
        assert hint == want, key


@pytest.mark.parametrize(
    "task, whose",
    [
        ("embed", "vLLM's task"),
        ("Embedding", "vLLM's task"),
        ("query", "sentence-transformers' task (its Router's route): whether texts are queries or documents is input"),
        ("document", "sentence-transformers' task"),
        ("classify", "vLLM's task for another kind of model"),
        ("retrieval.query", "jina-embeddings-v3's task"),
        ("query: ", "a prompt prefix (e5's 'query: ', nomic-embed's 'search_query: '), which texts get as it is: give"),
        ("search_query:", "a prompt prefix"),
    ],
)
def test_another_tools_task_name_is_not_taken_for_the_query_instruction(tmp_path, task, whose):
    """vLLM's `task: embed` (or sentence-transformers' Router task `query`) in model.task was the query instruction:
    every query was embedded as 'Instruct: embed\nQuery: ...', without a word; e5's prefix `query: ` there as
    'Instruct: query: \nQuery: ...'."""
    with pytest.raises(ConfigError, match=r"model\.task: .*is the query instruction, a sentence .*" + re.escape(whose)):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"model.task={task}"])
    instruction = "Given a web search query, retrieve relevant passages that answer the query"
    assert load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"model.task={instruction}"]).model.task == instruction


@pytest.mark.parametrize(
    "job, override, hint",
    [
        ("cluster", "clustering.niter=20", "did you mean clustering.max_iter? (FAISS Kmeans' niter)"),
        ("cluster", "clustering.n_clusters=8", "did you mean clustering.k? (scikit-learn KMeans' n_clusters)"),
        ("cluster", "clustering.nredo=3", "did you mean clustering.seed?"),
        ("mine", "mining.neighborhood=8", "did you mean mining.k? (LASER mine_bitexts' --neighborhood)"),
        ("mine", "mining.nprobe=16", "did you mean mining.ivf.nprobe?"),
        ("mine", "mining.nlist=64", "did you mean mining.ivf.nlist?"),
        # sentence-transformers' bitext mining example, LASER's flags, scikit-learn, FAISS, NeMo Curator's SemDedup:
        # each got only the list of known keys
        ("mine", "mining.knn_neighbors=4", "did you mean mining.k?"),
        ("mine", "mining.top_k=4", "did you mean mining.k?"),
        ("mine", "mining.min_score=1.05", "did you mean mining.threshold?"),
        ("mine", "mining.use_ann_search=true", "did you mean mining.index? (sentence-transformers' bitext mining"),
        ("mine", "mining.ann_num_clusters=64", "did you mean mining.ivf.nlist?"),
        ("mine", "mining.ann_num_top_clusters=8", "did you mean mining.ivf.nprobe?"),
        ("mine", "mining.unify=true", "did you mean mining.dedup? (LASER mine_bitexts' --unify"),
        ("mine", "mining.gpu=true", "did you mean mining.gpus_per_shard?"),
        ("cluster", "clustering.random_state=1", "did you mean clustering.seed? (scikit-learn's random_state)"),
        ("cluster", "clustering.spherical=true", "rayembed's k-means is always spherical"),
        ("cluster", "clustering.dedup.eps_to_extract=0.01", "did you mean clustering.dedup.eps? (NeMo Curator"),
        ("cluster", "clustering.dedup.threshold=0.95", "did you mean clustering.dedup.eps? (a similarity threshold s"),
        ("cluster", "clustering.dedup.similarity_threshold=0.95", "is eps: 1 - s"),
        # another tool's name for the vector column: 'did you mean text_column?' (a column of the texts)
        ("cluster", "input.vector_column=vector", "did you mean input.embedding_column? (the column of the vectors"),
        ("mine", "source.vector_column_name=vector", "did you mean source.embedding_column? (the column of the"),
        ("mine", "target.embedding_field=vector", "did you mean target.embedding_column?"),
        # an input alias under a mining side, an input section of its own name: 'did you mean text_column?' alone
        ("mine", "source.text_key=body", "did you mean source.text_column? (the text column or JSONL key)"),
        ("mine", "target.id_field=doc", "did you mean target.id_column? (the id column or JSONL key)"),
    ],
)
def test_a_faiss_sklearn_or_laser_key_points_at_the_clustering_or_mining_key(tmp_path, job, override, hint):
    """FAISS's niter under clustering was answered "did you mean init?" (spelled alike, a different thing), and
    LASER's neighborhood or FAISS's nprobe under mining got only the list of known keys. Another tool's name for the
    vector column was answered 'did you mean text_column?', and an input key's alias under a mining side (source,
    target: input sections of their own names) got a spelling match without the other tool's name."""
    from pipeline.cluster_config import ClusterConfig
    from pipeline.mine_config import MineConfig

    if job == "cluster":
        model, text = ClusterConfig, "input: {uri: in}\noutput: {uri: out}\nclustering: {k: 4}\n"
    else:
        model, text = MineConfig, "source: {uri: a.txt, lang: fra}\ntarget: {uri: b.txt, lang: eng}\noutput: {uri: o}\n"
    with pytest.raises(ConfigError, match=re.escape(hint)):
        load_config(model, write(tmp_path, text), [override])


@pytest.mark.parametrize("text, expected", [("passage", "document"), ("corpus", "document"), ("Queries", "query")])
def test_input_kind_takes_the_prompt_names_of_sentence_transformers(tmp_path, text, expected):
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"input.kind={text}"])
    assert cfg.input.kind == expected


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            "output: {uri: o/, dimensions: true}",
            "output.dimensions: Value error, expects an integer or null, not the boolean true",
        ),
        ("compute: {num_actors: yes}", "compute.num_actors: Value error, expects an integer or null, not the boolean"),
        ("input: {uri: x, max_reject_fraction: on}", "input.max_reject_fraction: Value error, expects a number, not"),
        ("compute: {gpus_per_actor: true}", "compute.gpus_per_actor: Value error, expects a number or null, not"),
        ("model: {max_tokens: false}", "model.max_tokens: Value error, expects an integer, not the boolean false"),
    ],
)
def test_a_boolean_is_not_taken_for_a_number(tmp_path, extra, message):
    """pydantic's lax mode read `true` as 1: `output.dimensions: true` stored 1-dimensional vectors."""
    section = extra.partition(":")[0]  # a section MINIMAL has is replaced, not written twice (refused)
    text = "".join(line for line in MINIMAL.splitlines(keepends=True) if not line.startswith(section + ":"))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(EmbedConfig, write(tmp_path, text + extra + "\n"))
    with pytest.raises(ConfigError, match=re.escape("--set model.max_tokens=true: model.max_tokens: Value error")):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), ["model.max_tokens=true"])
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL), ["model.normalize=no", "model.compile=on"])
    assert (cfg.model.normalize, cfg.model.compile) == (False, True)  # YAML booleans still work for booleans


def test_yes_no_on_off_are_strings_where_a_string_is_expected(tmp_path):
    """YAML 1.1 reads an unquoted no / on / yes / off as a boolean: `lang: no` (Norwegian) was refused 'expects a
    string or list, not the boolean false', and a column named `on` too. Where a key takes a string the word is
    kept as written; where it takes a boolean it is one; where it takes a number it is still refused."""
    from pipeline.mine_config import MineConfig

    text = (
        "source: {uri: c.jsonl, lang: [de, no, NO], lang_column: lang, text_column: on}\n"
        "target: {uri: c.jsonl, lang: Yes, lang_column: lang}\noutput: {uri: o, overwrite: yes}\n"
        "model: {normalize: off}\n"
    )
    cfg = load_config(MineConfig, write(tmp_path, text))
    assert (cfg.source.lang, cfg.source.text_column, cfg.target.lang) == (["de", "no", "NO"], "on", "Yes")
    assert all(type(v) is str for v in [*cfg.source.lang, cfg.source.text_column, cfg.target.lang])
    assert (cfg.output.overwrite, cfg.model.normalize) == (True, False)
    cfg = load_config(MineConfig, write(tmp_path, text), ["source.lang=[no, en]", "target.lang=off"])
    assert (cfg.source.lang, cfg.target.lang) == (["no", "en"], "off")
    with pytest.raises(ConfigError, match=re.escape("compute.num_actors: Value error, expects an integer or null")):
        load_config(MineConfig, write(tmp_path, text + "compute: {num_actors: no}\n"))


@pytest.mark.parametrize("uri", ["gs://bucket/corpus", "hf://datasets/x/y", "abfs://c@a.dfs.core.windows.net/x"])
@pytest.mark.parametrize("key", ["input.uri", "output.uri"])
def test_a_location_of_another_scheme_is_a_config_error(tmp_path, uri, key):
    """It was a traceback at run time (`ValueError: unsupported URI scheme`); the message says how to reach an
    S3-compatible store."""
    with pytest.raises(
        ConfigError,
        match=rf"--set {key}={re.escape(uri)}: {key}: Value error, the scheme \w+:// is not "
        r"supported; use a local path .* storage.endpoint_url",
    ):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"{key}={uri}"])
    assert load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"{key}=file:///data/x"])


@pytest.mark.parametrize("scheme", ["s3a", "s3n", "S3", "S3A"])
def test_hadoop_s3a_and_s3n_uris_are_read_as_s3(tmp_path, scheme):
    """URIs copied from Spark or Hive configs (`s3a://bucket/prefix`) name the same bucket and key as s3://; they
    were refused as another scheme. A list naming one place both ways is one location twice."""
    cfg = load_config(
        EmbedConfig, write(tmp_path, MINIMAL), [f"input.uri={scheme}://b/corpus", f"output.uri={scheme}://b/e"]
    )
    assert (cfg.input.uri, cfg.output.uri) == ("s3://b/corpus", "s3://b/e")
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"input.uri=[{scheme}://b/a, s3://b/c]"])
    assert cfg.input.uri == ["s3://b/a", "s3://b/c"]
    with pytest.raises(ConfigError, match="lists the same location twice"):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"input.uri=[{scheme}://b/a, s3://b/a]"])


@pytest.mark.parametrize(
    ("key", "uri", "segment"),
    [
        ("input.uri", "s3://b/corpus//a.jsonl", "an empty"),
        ("input.uri", "s3://b//corpus", "an empty"),
        ("input.uri", "s3://b/corpus/./x", "a '.'"),
        ("output.uri", "s3://b/emb//run", "an empty"),
        ("output.uri", "s3://b/x/../emb", "a '..'"),
    ],
)
def test_an_s3_key_with_an_empty_or_dot_segment_is_a_config_error(tmp_path, key, uri, segment):
    """pyarrow's S3 filesystem refuses such a key: the job failed with `ArrowInvalid: Empty path component in path
    b/corpus//a.jsonl` (a traceback) when it listed or wrote there. A trailing '/' or '//' is fine (stripped)."""
    with pytest.raises(
        ConfigError, match=rf"{key}: Value error, the S3 key in '{re.escape(uri)}' has {segment} segment"
    ):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"{key}={uri}"])
    with pytest.raises(ConfigError, match=r"input.uri: Value error, item 1 \('s3://b/c//d'\) the S3 key in"):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), ["input.uri=[s3://b/a, s3://b/c//d]"])
    for fine in ("s3://b/corpus/", "s3://b/corpus//", "s3://b", "s3://b/", "s3://b/a.b/c..d/.e"):
        assert load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"{key}={fine}"])


def test_input_uri_takes_a_list_of_locations(tmp_path):
    """Ray Data's paths=[...] and HF data_files=[...]: a list in YAML or --set; a string stays a string, commas and
    all (a path may hold one), and a number-like path stays text."""
    text = "input: {uri: [data/a, s3x/b], format: jsonl}\noutput: {uri: out/}\n"
    assert load_config(EmbedConfig, write(tmp_path, text)).input.uri == ["data/a", "s3x/b"]
    assert load_config(EmbedConfig, write(tmp_path, MINIMAL), ["input.uri=[a/, b/]"]).input.uri == ["a/", "b/"]
    for value in ("data/a,b", "2024", "~/corpus"):
        assert load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"input.uri={value}"]).input.uri == value
    assert load_config(EmbedConfig, write(tmp_path, MINIMAL), ["input.uri='[x]'"]).input.uri == "[x]"


@pytest.mark.parametrize(
    "uri, message",
    [
        ("[]", "input.uri: Value error, is an empty list"),
        ("[a/, b, ./a]", r"lists the same location twice \(items 0 and 2: 'a/', './a'\)"),
        ("[a, s3://bkt/b]", "mixes local paths and s3:// URIs"),
        ("[a, gs://bkt/b]", r"input.uri: Value error, item 1 \('gs://bkt/b'\) the scheme gs:// is not supported"),
        ("[a, '']", r"input.uri: Value error, item 1 \(''\) is empty"),
        ("[a, 5]", r"input.uri: Value error, expects a location \(a string\) or a list of them, not \['a', 5\]"),
    ],
)
def test_a_bad_list_of_input_locations_is_a_config_error(tmp_path, uri, message):
    with pytest.raises(ConfigError, match=message):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"input.uri={uri}"])


def test_an_output_inside_any_listed_input_is_refused(tmp_path):
    text = f"input: {{uri: [{tmp_path}/a, {tmp_path}/b], format: jsonl}}\noutput: {{uri: {tmp_path}/b/emb}}\n"
    with pytest.raises(ConfigError, match=r"output.uri \(.*/b/emb\) is inside the input input.uri\[1\]"):
        load_config(EmbedConfig, write(tmp_path, text))


@pytest.mark.parametrize(
    "name, message",
    [
        ("s3://bucket/models/e5", "is a URL (s3://); rayembed loads a model from the Hugging Face hub"),
        ("gs://bucket/e5", "is a URL (gs://)"),
        ("hf://intfloat/multilingual-e5-small", "is a URL; give the hub id as it is: 'intfloat/multilingual-e5-small'"),
        (
            "https://huggingface.co/intfloat/multilingual-e5-small/tree/main",
            "is a URL; give the hub id as it is: 'intfloat/",
        ),
        ("file:///models/e5", "is a file:// URL; give the local directory as a path: '/models/e5'"),
        ("https://hf.co/intfloat/multilingual-e5-small", "is a URL; give the hub id as it is: 'intfloat/multilingual"),
    ],
)
def test_a_model_url_is_refused_saying_what_to_give(tmp_path, name, message):
    """vLLM loads `s3://` model paths; rayembed loads hub ids and local directories, and a URL got 'cannot be fetched
    from the Hugging Face hub (HFValidationError: Repo id must be in the form ...)' once the job had started."""
    with pytest.raises(ConfigError, match=r"model\.name_or_path: Value error, " + re.escape(message)):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"model.name_or_path={name}"])


def test_a_list_position_in_a_yaml_flow_list_says_to_quote_it(tmp_path):
    """`keep_columns: [tags[0]]` is a YAML syntax error at the second '[': the message says what to write."""
    path = write(tmp_path, "input: {uri: data/, format: jsonl}\noutput:\n  uri: out/\n  keep_columns: [tags[0]]\n")
    with pytest.raises(ConfigError, match=r"quote an item holding \[ \] in a \[a, b\] list \(keep_columns: \[\"tags"):
        load_config(EmbedConfig, path)


@pytest.mark.parametrize(
    "job, override, hint",
    [
        ("embed", "input.column=body", "did you mean input.text_column? (the column holding the text)"),
        ("embed", "input.paths=[a.jsonl]", "did you mean input.uri? (Ray Data's read_*(paths=...), datasets'"),
        ("embed", "input.data_files=a.jsonl", "did you mean input.uri?"),
        ("embed", "data_dir=corpus", "did you mean input.uri?"),
        ("embed", "output.path=out", "did you mean output.uri? (the folder or S3 prefix written to"),
        ("embed", "output_dir=out", "did you mean output.uri?"),
        ("embed", "model.path=m", "did you mean model.name_or_path? (a hub id or a local model directory)"),
        ("cluster", "output.dir=o", "did you mean output.uri?"),
    ],
)
def test_ray_data_and_datasets_names_for_where_the_data_is_point_at_the_uri_keys(tmp_path, job, override, hint):
    """`input.column` was answered 'did you mean id_column?' (spelled alike, another column); `input.paths`,
    `data_files`, `output.path`, `model.path` got only the section's list of known keys."""
    from pipeline.cluster_config import ClusterConfig

    model, text = {
        "embed": (EmbedConfig, MINIMAL),
        "cluster": (ClusterConfig, "input: {uri: in}\noutput: {uri: out}\nclustering: {k: 4}\n"),
    }[job]
    with pytest.raises(ConfigError, match=re.escape(hint)):
        load_config(model, write(tmp_path, text), [override])


@pytest.mark.parametrize(
    "key, ours",
    [
        ("path", "uri"),
        ("paths", "uri"),
        ("dir", "uri"),
        ("files", "uri"),
        ("data_files", "uri"),
        ("column", "text_column"),  # was 'did you mean id_column?'
        ("text", "text_column"),
    ],
)
@pytest.mark.parametrize("side", ["source", "target"])
def test_a_mining_sides_input_key_in_another_tools_words_points_at_the_sides_key(tmp_path, side, key, ours):
    """`source.path` / `target.paths` / `.dir` / `.files` (Ray Data's paths, the embed job's input.path) got only the
    list of known keys, and `source.column` 'did you mean id_column?': a side is an input section of its own name,
    so it takes the input section's aliases, in the YAML file and in --set alike."""
    from pipeline.mine_config import MineConfig

    sides = {"source": "source: {uri: a.txt, lang: fra}", "target": "target: {uri: b.txt, lang: eng}"}
    sides[side] = f"{side}: {{{key}: a.txt, lang: fra}}" if side == "source" else f"{side}: {{{key}: b.txt, lang: eng}}"
    text = f"{sides['source']}\n{sides['target']}\noutput: {{uri: o}}\n"
    with pytest.raises(ConfigError, match=rf"{side}\.{key}: .*did you mean {side}\.{ours}\? \(") as err:
        load_config(MineConfig, write(tmp_path, text), [])
    assert "known keys" not in str(err.value)
    with pytest.raises(ConfigError, match=rf"did you mean {side}\.{ours}\? \("):
        load_config(
            MineConfig,
            write(tmp_path, "source: {uri: a.txt, lang: fra}\ntarget: {uri: b.txt, lang: eng}\noutput: {uri: o}\n"),
            [f"{side}.{key}=x"],
        )


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("16GiB", 16 * 2**30),
        ("16Gi", 16 * 2**30),  # Kubernetes' (KubeRay's pod resources)
        ("512Mi", 512 * 2**20),
        ("16GB", 16 * 10**9),
        ("1.5 GiB", 3 * 2**29),
        ("17179869184", 16 * 2**30),
    ],
)
def test_memory_per_actor_takes_bytes_or_a_size(tmp_path, value, size):
    cfg = load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"compute.memory_per_actor={value}"])
    assert cfg.compute.memory_per_actor == size
    assert load_config(EmbedConfig, write(tmp_path, MINIMAL)).compute.memory_per_actor is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("16 gigs", "expects a size: bytes, or a number with a unit such as 16GiB, 16Gi or 16GB, not '16 gigs'"),
        ("-1GiB", "expects a size"),
        ("0", "must be above 0 bytes"),
        ("true", "not the boolean true"),
    ],
)
def test_memory_per_actor_that_is_no_size_names_the_key(tmp_path, value, says):
    with pytest.raises(ConfigError, match=rf"compute\.memory_per_actor.*{re.escape(says)}"):
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"compute.memory_per_actor={value}"])


def test_an_environment_variable_in_any_location_key_of_any_job_is_refused(tmp_path, monkeypatch):
    """The refusal went by a list of key names, which missed mine_bitext's `source.embeddings_uri:
    ${EMB}/vectors` (a folder named `${EMB}` read as the embeddings). Every location-typed field of every job's
    config is now a location key, and a key named like one (`*_uri`, `*_path`) too."""
    import typing

    import pydantic

    from pipeline.cluster_config import ClusterConfig
    from pipeline.config_loading import is_location_key
    from pipeline.mine_config import MineConfig
    from pipeline.reembed.config import ReembedConfig

    def location_fields(model: type[pydantic.BaseModel], seen: set) -> set[str]:
        found = set()
        for name, field in model.model_fields.items():
            shown = repr(field.annotation) + repr(field.metadata)
            if "storage_location" in shown or "locations" in shown:
                found.add(name)
            for arg in [field.annotation, *typing.get_args(field.annotation)]:
                if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel) and arg not in seen:
                    seen.add(arg)
                    found |= location_fields(arg, seen)
        return found

    names = set()
    for job in (EmbedConfig, ReembedConfig, MineConfig, ClusterConfig):
        names |= location_fields(job, set())
    assert "embeddings_uri" in names and "uri" in names
    assert [n for n in sorted(names) if not is_location_key(n)] == []

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.yaml"
    path.write_text(
        "source: {uri: c.jsonl, lang: en, embeddings_uri: '${EMB}/vectors'}\ntarget: {uri: c.jsonl, lang: de}\n"
        "output: {uri: o}\n"
    )
    with pytest.raises(ConfigError, match=r"source.embeddings_uri: '\$\{EMB\}/vectors' holds \$\{EMB\}"):
        load_config(MineConfig, path)


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        ("output: {uri: o, rows_per_file: 1e6}", "output.rows_per_file: Input should be a valid integer"),
        ("batching: {max_tokens_per_batch: 2.5e5}", "batching.max_tokens_per_batch: Input should be a valid integer"),
    ],
)
def test_a_whole_number_yaml_reads_as_text_says_what_to_write(tmp_path, written, hint):
    """PyYAML reads `1e6` and `2.5e5` as strings (its float needs a dot and a signed exponent): `rows_per_file: 1e6`
    was refused 'unable to parse string as an integer' with no word of why. The error says what to write; a
    number that is not whole, or no number, gets no such line; where a float is expected the text is taken."""
    section = written.partition(":")[0]
    text = "".join(line for line in MINIMAL.splitlines(keepends=True) if not line.startswith(section + ":"))
    value = written.rpartition(": ")[2].rstrip("}")
    whole = int(float(value))
    with pytest.raises(ConfigError) as err:
        load_config(EmbedConfig, write(tmp_path, text + written + "\n"))
    assert hint in str(err.value) and f"(YAML reads {value!r} as text, not as a number: write {whole})" in str(
        err.value
    )
    key = hint.partition(":")[0]
    with pytest.raises(ConfigError) as err:
        load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"{key}={value}"])
    assert f"--set {key}={value}: {key}:" in str(err.value) and f"write {whole})" in str(err.value)
    for other in ("2.5e-1", "12k", "1e400"):
        with pytest.raises(ConfigError) as err:
            load_config(EmbedConfig, write(tmp_path, MINIMAL), [f"{key}={other}"])
        assert "YAML reads" not in str(err.value)
    fraction = load_config(EmbedConfig, write(tmp_path, MINIMAL), ["input.max_reject_fraction=5e-1"])
    assert fraction.input.max_reject_fraction == 0.5  # a float key takes the text as its number


def test_a_missing_config_in_a_ray_job_says_where_a_relative_path_was_read(tmp_path, monkeypatch):
    """`ray job submit --working-dir sub -- python -m jobs.embed --config sub/configs/x.yaml` (the path as typed in
    the submitter's directory), a RayJob whose config is not mounted: the bare `config file … does not exist`. Ray's
    job supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR in the driver's environment (pipeline.cluster_paths)."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "x.yaml").write_text("input: {}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as outside:
        load_config(EmbedConfig, "sub/configs/x.yaml")
    assert str(outside.value) == "config file sub/configs/x.yaml does not exist"  # not a Ray job: as before
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_1.zip"}}')
    with pytest.raises(ConfigError) as uploaded:
        load_config(EmbedConfig, "sub/configs/x.yaml")
    assert str(uploaded.value) == (
        "config file sub/configs/x.yaml does not exist: a relative path is read from the job's working directory, "
        f"Ray's copy of the directory uploaded as --working-dir ({tmp_path}), not from where the job was submitted; "
        "relative to the uploaded directory it is configs/x.yaml"
    )
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # a RayJob's entrypoint: no working_dir
    with pytest.raises(ConfigError, match=r"has no uploaded working_dir; give the path the file has there \(a Con"):
        load_config(EmbedConfig, "configs/embed.yaml")
    with pytest.raises(ConfigError, match=r"does not exist on this node \(.*\), where the Ray job's driver runs"):
        load_config(EmbedConfig, str(tmp_path / "nowhere.yaml"))


JOB_CONFIGS = {
    "embed": ("EmbedConfig", MINIMAL),
    "cluster": ("ClusterConfig", "input: {uri: in}\noutput: {uri: out}\nclustering: {k: 4}\n"),
    "mine": ("MineConfig", "source: {uri: a.txt, lang: fra}\ntarget: {uri: b.txt, lang: eng}\noutput: {uri: o}\n"),
}


def job_config(job: str):
    from pipeline.cluster_config import ClusterConfig
    from pipeline.mine_config import MineConfig

    name, text = JOB_CONFIGS[job]
    return {"EmbedConfig": EmbedConfig, "ClusterConfig": ClusterConfig, "MineConfig": MineConfig}[name], text


@pytest.mark.parametrize(
    "job, override, path, value",
    [
        ("mine", "mining.margin=Ratio", "mining.margin", "ratio"),  # LASER's --mode / docs write it capitalised
        ("mine", "mining.retrieval=MAX", "mining.retrieval", "max"),
        ("mine", "mining.retrieval= Intersect ", "mining.retrieval", "intersect"),
        ("mine", "mining.index=IVF", "mining.index", "ivf"),
        ("mine", "mining.backend=Ray", "mining.backend", "ray"),
        ("mine", "source.duplicate_ids=Keep-First", "source.duplicate_ids", "keep_first"),
        ("cluster", "clustering.init=KMeans++", "clustering.init", "kmeans++"),
        ("cluster", "clustering.dedup.eps=0.05;clustering.dedup.keep=Random", "clustering.dedup.keep", "random"),
        ("embed", "input.format=JSONL", "input.format", "jsonl"),
        ("embed", "input.duplicate_ids=KEEP_FIRST", "input.duplicate_ids", "keep_first"),
        ("embed", "model.long_inputs=Chunk", "model.long_inputs", "chunk"),
        ("embed", "model.padding_side=LEFT", "model.padding_side", "left"),
        ("embed", "model.attn_implementation=flash-attention-2", "model.attn_implementation", "flash_attention_2"),
        ("embed", "model.compile=AUTO", "model.compile", "auto"),
        ("embed", "storage.addressing_style=Virtual", "storage.addressing_style", "virtual"),
    ],
)
def test_a_choice_in_another_case_or_with_dashes_is_the_choice(tmp_path, job, override, path, value):
    """`mining.margin: Ratio` was refused with "Input should be 'ratio', 'distance' or 'absolute'": every key that
    takes one of a list of words takes it in any case, with blanks around it and `-` for `_`, stored as we spell it."""
    model, text = job_config(job)
    cfg = load_config(model, write(tmp_path, text), override.split(";"))
    section, _, key = path.rpartition(".")
    for part in section.split("."):
        cfg = getattr(cfg, part)
    assert getattr(cfg, key) == value


def test_every_choice_key_takes_any_case_and_dashes():
    """The whole kind: each Literal-valued key of every config section, in upper case with `-` for `_`."""
    # the jobs' own sections subclass Section once their modules are imported
    import pipeline.cluster_config
    import pipeline.mine_config
    import pipeline.reembed.config  # noqa: F401
    from pipeline.config import Section, choices, spelled_choice

    def sections(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from sections(sub)

    checked = 0
    for cls in sections(Section):
        for name, field in cls.model_fields.items():
            for choice in choices(field.annotation):
                assert spelled_choice(f" {choice.upper().replace('_', '-')}", field.annotation) == choice, (cls, name)
                checked += 1
    assert checked >= 40  # every section was found


@pytest.mark.parametrize("job, override", [("mine", "mining.margin=ratios"), ("cluster", "clustering.init=k-means")])
def test_a_word_that_is_no_choice_is_still_refused_listing_the_choices(tmp_path, job, override):
    model, text = job_config(job)
    with pytest.raises(ConfigError, match="Input should be"):
        load_config(model, write(tmp_path, text), [override])
