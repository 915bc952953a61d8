"""Which S3 settings each step of a job uses, as a user writes them (YAML, `--set`, the AWS tools' variables).

Config-level only: no store is reached; what a step would reach is the storage section it is given.
"""

from __future__ import annotations

import pytest

from pipeline.cluster_config import ClusterConfig
from pipeline.config_loading import ConfigError, load_config

AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "AWS_MAX_ATTEMPTS",
    "AWS_PROFILE",
)

CLUSTER_YAML = """\
input: {uri: s3://emb/web/}
output: {uri: s3://clusters/web/}
clustering: {k: 2}
embed:
  input: {uri: s3://raw/web/}
  output: {uri: s3://emb/web/}
"""


@pytest.fixture
def no_aws_settings(tmp_path, monkeypatch):
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))


def cluster_config(tmp_path, overrides: list[str], extra_yaml: str = "") -> ClusterConfig:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER_YAML + extra_yaml)
    return load_config(ClusterConfig, path, overrides)


def settings(storage) -> tuple:
    return (storage.endpoint_url, storage.region, storage.ca_bundle, storage.addressing_style, storage.max_attempts)


@pytest.mark.parametrize("section", ["storage", "embed.storage"])
def test_the_cluster_jobs_embed_step_and_clustering_use_one_store(tmp_path, no_aws_settings, section):
    """The embed step writes input.uri and the clustering reads it. `--set storage.endpoint_url=...` reached the
    clustering only: the embed step (embed.storage left out) wrote to AWS, and `embed.storage...` alone left the
    clustering reading AWS. Each key given in either section now holds for both steps."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = cluster_config(
        tmp_path,
        [
            f"{section}.endpoint_url=HTTP://minio.lan:9000",
            f"{section}.region=garage",
            f"{section}.ca_bundle={bundle}",
            f"{section}.addressing_style=path",
            f"{section}.max_attempts=3",
        ],
    )
    want = ("http://minio.lan:9000", "garage", str(bundle), "path", 3)
    assert settings(cfg.storage) == want
    assert settings(cfg.embed.storage) == want


def test_the_two_storage_sections_of_the_cluster_job_merge_key_by_key(tmp_path, no_aws_settings, monkeypatch):
    """A key in each section, the same key written twice in two spellings of one value, and the AWS tools' variables
    for what neither gives: both steps get all of it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env-store:9000")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "9")
    cfg = cluster_config(
        tmp_path,
        ["storage.region=garage", "embed.storage.addressing_style=virtual"],
        "storage: {ca_bundle: null, anon: false}\n",
    )
    want = ("http://env-store:9000", "garage", None, "virtual", 9)
    assert (settings(cfg.storage), settings(cfg.embed.storage)) == (want, want)
    cfg = cluster_config(
        tmp_path, ["storage.endpoint_url=http://minio.lan:9000", "embed.storage.endpoint_url= HTTP://minio.lan:9000"]
    )
    assert cfg.storage.endpoint_url == cfg.embed.storage.endpoint_url == "http://minio.lan:9000"


def test_two_stores_for_the_cluster_jobs_two_steps_are_refused_naming_both_keys(tmp_path, no_aws_settings):
    with pytest.raises(
        ConfigError,
        match=r"storage\.endpoint_url \('http://a:9000'\) and embed\.storage\.endpoint_url \('http://b:9000'\) "
        r"differ: the embed step writes input\.uri, which the clustering reads",
    ):
        cluster_config(tmp_path, ["storage.endpoint_url=http://a:9000", "embed.storage.endpoint_url=http://b:9000"])
    with pytest.raises(ConfigError, match=r"storage\.anon \(True\) and embed\.storage\.anon \(False\) differ"):
        cluster_config(tmp_path, ["storage.anon=true", "embed.storage.anon=false"])
