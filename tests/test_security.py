"""Security: no code or pickles from a model unless asked, no credentials in any output, no writes outside the prefix.

Each negative check is paired with a positive control that proves the detector works (the remote code does run
when trusted, the pickle does execute when loaded with plain torch.load), so a passing test means something.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SAMPLE
from robustness_helpers import check_counts, record_figure

from jobs.embed import main as embed_main
from pipeline.config import ModelConfig, StorageConfig
from pipeline.errors import UserError
from pipeline.model_loading import load_model, load_tokenizer, resolve_model_settings
from pipeline.storage import Location, resolve

RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
# Set by tests/conftest.py before Ray starts, so every worker holds them in its environment.
SECRETS = ("testing-key-id", "testing-secret-key")

REMOTE_CODE = """
import os
from pathlib import Path
Path(os.environ["RAYEMBED_REMOTE_CODE_MARKER"]).write_text("remote code ran")
from transformers import BertModel


class EvilModel(BertModel):
    pass
"""


class Detonator:
    """Unpickling this writes a marker file: a stand-in for arbitrary code in a pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pickle ran"))


def copy_model(tiny_models, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_models["bert"], target)
    return target


class Records(logging.Handler):
    """Collects log messages (independent of pytest's logging plugin, so it also works under `-p no:logging`)."""

    def __init__(self, logger: str):
        super().__init__(logging.WARNING)
        self.logger, self.text = logging.getLogger(logger), ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)


def test_a_model_that_needs_its_own_code_says_which_key_to_set(tiny_models, tmp_path):
    """A model type transformers lacks, with an auto_map naming the shipped code (jina-embeddings-v3, nomic-embed's
    nomic_bert, ...): refused on the driver naming rayembed's key, model.trust_remote_code; transformers' message
    names only its own argument (trust_remote_code=True)."""
    model_dir = copy_model(tiny_models, tmp_path)
    (model_dir / "evil.py").write_text(REMOTE_CODE)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(model_type="evil-bert", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    (model_dir / "config.json").write_text(json.dumps(config))
    cfg = ModelConfig(name_or_path=str(model_dir), pooling="mean")
    with pytest.raises(UserError, match="set model.trust_remote_code: true") as refused:
        resolve_model_settings(cfg)
    assert str(model_dir) in str(refused.value)


def test_a_model_whose_weights_need_its_own_code_says_which_key_to_set(tiny_models, tmp_path):
    """A known model type whose auto_map names the model's own class (jina-embeddings-v2: bert with ALiBi, no position
    embeddings): untrusted, transformers loads the stock class, which lacks weights; the refusal names
    model.trust_remote_code (it said only to check the folder and the architecture)."""
    from safetensors.torch import load_file, save_file

    model_dir = copy_model(tiny_models, tmp_path)
    weights = load_file(model_dir / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "position_embeddings" not in k}, model_dir / "model.safetensors")
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        UserError, match=r"position_embeddings.*AutoModel: evil.EvilModel.*model.trust_remote_code: true"
    ):
        load_model(ModelConfig(name_or_path=str(model_dir), pooling="mean"), torch.device("cpu"))
    with Records("pipeline.model_loading") as logged:  # said on the driver, before any actor loads it
        resolve_model_settings(ModelConfig(name_or_path=str(model_dir), pooling="mean"))
    assert "ships its own code (config.json auto_map AutoModel: evil.EvilModel), not run" in logged.text


def test_tokenizer_code_the_model_ships_is_said_unrun_on_every_run(tiny_models, tmp_path, monkeypatch):
    """tokenizer_config.json's auto_map naming the model's own tokenizer class, model.trust_remote_code false:
    transformers loads its stock tokenizer without a word (the shipped class never runs); rayembed said nothing
    either. The warning is part of the driver's resolution, so a rerun served from its cache says it again."""
    from pipeline.resolution_cache import resolve_remembered

    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = copy_model(tiny_models, tmp_path)
    (model_dir / "evil.py").write_text(REMOTE_CODE)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizerFast"]}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    said = []
    for _ in range(2):  # the first run resolves, the second is served from the cache
        with Records("pipeline") as logged:
            resolve_remembered(ModelConfig(name_or_path=str(model_dir), pooling="mean"))
        said.append(logged.text)
    assert list((tmp_path / "cache").rglob("*.json"))  # the second was a cache hit
    for text in said:
        assert (
            "ships its own code (tokenizer_config.json auto_map AutoTokenizer: evil.EvilTokenizerFast), not run" in text
        )


def test_remote_code_runs_only_when_trusted_and_then_warns(tiny_models, tmp_path, monkeypatch):
    model_dir = copy_model(tiny_models, tmp_path)
    (model_dir / "evil.py").write_text(REMOTE_CODE)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "remote-code-ran"
    monkeypatch.setenv("RAYEMBED_REMOTE_CODE_MARKER", str(marker))

    cfg = ModelConfig(name_or_path=str(model_dir), pooling="mean")
    assert cfg.trust_remote_code is False
    with Records("pipeline.model_loading") as logged:
        model = load_model(cfg, torch.device("cpu"))
    assert type(model).__name__ == "BertModel" and not marker.exists()
    assert "trust_remote_code" not in logged.text

    trusted = cfg.model_copy(update={"trust_remote_code": True})
    with Records("pipeline.model_loading") as logged:
        load_tokenizer(trusted)
        model = load_model(trusted, torch.device("cpu"))
    assert type(model).__name__ == "EvilModel" and marker.exists()  # the control: trusted code does run
    assert f"model.trust_remote_code is true: running code shipped with {model_dir}" in logged.text


def test_weights_load_from_safetensors_never_from_a_pickle(tiny_models, tmp_path):
    model_dir = copy_model(tiny_models, tmp_path)
    marker = tmp_path / "pickle-ran"
    torch.save({"weights": Detonator(str(marker))}, model_dir / "pytorch_model.bin")
    cfg = ModelConfig(name_or_path=str(model_dir), pooling="mean")
    assert cfg.allow_pickle_weights is False
    load_model(cfg, torch.device("cpu"))
    assert not marker.exists()

    (model_dir / "model.safetensors").unlink()
    with pytest.raises(Exception, match="pickle .bin weights load only with model.allow_pickle_weights"):
        load_model(cfg, torch.device("cpu"))
    assert not marker.exists()

    torch.load(model_dir / "pytorch_model.bin", weights_only=False)  # the control: loading the pickle runs it
    assert marker.exists()


def test_output_paths_cannot_escape_the_prefix(tmp_path):
    out = resolve(str(tmp_path / "emb"), StorageConfig())
    for part in ("../x.parquet", "/etc/passwd", "a/../../b", ".."):
        with pytest.raises(ValueError, match="refusing to write outside"):
            out.join(part)
    with pytest.raises(ValueError, match="refusing to write outside"):
        out.join("_rejects", "../../x")
    assert out.join("_rejects", "part-1.parquet").path == f"{tmp_path}/emb/_rejects/part-1.parquet"
    assert isinstance(out, Location)


def grep_secrets(blob: bytes | str, where: str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for secret in SECRETS:
        assert secret.encode() not in data, f"credential {secret!r} found in {where}"


@pytest.mark.slow
def test_credentials_never_reach_outputs_logs_or_errors(
    ray_session, tiny_models, s3_bucket, s3_server, tmp_path, capfd
):
    """Fake keys are set (conftest); run on the S3 server, then grep every object, metadata, log line and error."""
    assert (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]) == SECRETS  # what the grep seeks
    client, bucket = s3_bucket
    lines = [json.dumps({"id": r["id"], "text": r["text"]}) for r in RECORDS[:40]]
    lines += [json.dumps({"id": "../../outside", "text": "a path-like id"}), json.dumps({"id": "x", "text": None})]
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body="\n".join(lines).encode())
    config = tmp_path / "embed.yaml"
    config.write_text(
        f"input: {{uri: 's3://{bucket}/corpus', format: jsonl, id_column: id}}\n"
        f"output: {{uri: 's3://{bucket}/out/emb'}}\n"
        f"model: {{name_or_path: '{tiny_models['qwen3']}', max_tokens: 96}}\n"
        f"storage: {{endpoint_url: '{s3_server}'}}\n"
        "batching: {max_tokens_per_batch: 2048, rows_per_block: 64}\n"
    )
    assert embed_main(["--config", str(config)]) == 0
    summary = json.loads(client.get_object(Bucket=bucket, Key="out/emb/_summary.json")["Body"].read())
    check_counts(summary, f"s3://{bucket}/out/emb", len(lines), endpoint=s3_server, case="credentials run")

    objects = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    # ids never became paths; the only key outside out/emb/ is the empty marker pyarrow puts for the parent "out/"
    assert all(k.startswith(("corpus/", "out/emb/")) or "out/emb/".startswith(k) for k in objects), objects
    for key in objects:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        grep_secrets(body, key)
        if key.endswith(".parquet"):  # data pages may be compressed: check decoded values and metadata too
            table = pq.read_table(pa.BufferReader(body))
            grep_secrets(json.dumps(table.to_pylist(), default=str), f"{key} rows")
            grep_secrets(repr(table.schema.metadata), f"{key} metadata")

    # A failing run: its error must not carry the keys either, whether the CLI prints it (checked with the captured
    # stderr below) or it is raised.
    try:
        code, failure = embed_main(["--config", str(config), "--set", "input.uri=s3://no-such-bucket-xyz/corpus"]), ""
    except Exception as err:  # noqa: BLE001 - any error type; only its text matters here
        code, failure = None, str(err) + repr(err)
    assert code != 0
    grep_secrets(failure, "the error of a failed run")

    captured = capfd.readouterr()
    grep_secrets(captured.out + captured.err, "driver stdout/stderr")
    logs = Path(ray_session._private.worker._global_node.get_session_dir_path()) / "logs"
    checked = 0
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            grep_secrets(path.read_bytes(), f"Ray log {path.name}")
            checked += 1
    record_figure("credentials grep", objects=len(objects), ray_log_files=checked)
