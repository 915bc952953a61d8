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


@pytest.mark.parametrize(
    "env",
    [
        {"AWS_PROFILE": "typo", "AWS_CONFIG_FILE": "aws-config"},
        {"AWS_CA_BUNDLE": "/etc/pki/only-in-the-pods/ca.pem"},
        {"AWS_MAX_ATTEMPTS": "0"},
        {"AWS_ENDPOINT_URL": "minio.lan:9000"},  # no scheme
    ],
)
def test_submit_does_not_read_the_submitters_aws_configuration(tmp_path, no_aws_settings, monkeypatch, capsys, env):
    """The submitted job's driver finds the AWS settings on its own node. The local check of the config read this
    machine's and refused the submission (exit 2) for a stale AWS_PROFILE, a CA bundle at a path only the cluster's
    pods have, or another value the job never sees. Now only the cluster is missing here (exit 1)."""
    from conftest import free_port

    from pipeline import cli

    (tmp_path / "aws-config").write_text("[profile store]\nregion = garage\n")
    (tmp_path / "embed.yaml").write_text("input: {uri: s3://raw/web/}\noutput: {uri: s3://emb/web/}\n")
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value) if name == "AWS_CONFIG_FILE" else value)
    monkeypatch.setenv("RAY_ADDRESS", f"http://127.0.0.1:{free_port()}")
    assert cli.main(["submit", "embed.yaml", "--no-wait"]) == 1
    assert "cannot submit to the Ray cluster" in capsys.readouterr().err


def test_submit_names_the_aws_variables_set_here_that_the_job_would_not_get(tmp_path, no_aws_settings, monkeypatch):
    """A user exports AWS_ENDPOINT_URL as for the AWS CLI and submits: the job's driver on the cluster never saw it
    and reached another store. The note names each such variable and the storage key that carries its value; a key
    the config gives, a variable in the runtime env's env_vars, and a job on local paths get none."""
    from pipeline.config import EmbedConfig, aws_configuration_read_elsewhere
    from pipeline.s3_submit import left_behind, left_behind_note

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.lan:9000")
    monkeypatch.setenv("AWS_REGION", "garage")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "absent.pem"))

    def checked(raw: dict) -> EmbedConfig:
        with aws_configuration_read_elsewhere():
            return EmbedConfig.model_validate(raw)

    on_s3 = {"input": {"uri": str(tmp_path / "raw")}, "output": {"uri": "s3://emb/web/"}}
    cfg = checked(on_s3)
    assert cfg.storage.endpoint_url is None  # as written: the driver fills it on its node
    found = left_behind(cfg, None)
    assert found == [
        ("AWS_ENDPOINT_URL", "storage.endpoint_url"),
        ("AWS_REGION", "storage.region"),
        ("AWS_CA_BUNDLE", "storage.ca_bundle"),
    ]
    assert left_behind_note(found).startswith(
        "note: AWS_ENDPOINT_URL, AWS_REGION, AWS_CA_BUNDLE set here are not sent with the job: its driver on the "
        "cluster uses its own node's AWS settings; to use these values give storage.endpoint_url, storage.region, "
        "storage.ca_bundle (--set)"
    )
    cfg = checked({**on_s3, "storage": {"endpoint_url": "http://minio.lan:9000"}})
    assert left_behind(cfg, {"AWS_CA_BUNDLE": "/etc/pki/ca.pem"}) == [("AWS_REGION", "storage.region")]
    assert left_behind(checked({**on_s3, "output": {"uri": str(tmp_path / "out")}}), None) == []
    # outside submit, the job's own driver fills the config from this machine's settings, as before
    with pytest.raises(ValueError, match="absent.pem"):
        EmbedConfig.model_validate(on_s3)


PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SETTINGS = "region = garage\nendpoint_url = http://minio.lan:9000\nca_bundle = {ca}\nmax_attempts = 3\n"
PROFILE = f"[default]\n{SETTINGS}[profile store]\n{SETTINGS}"


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("AWS_ENDPOINT_URL_S3", "http://minio.lan:9000", "endpoint_url"),
        ("AWS_ENDPOINT_URL", "http://minio.lan:9000", "endpoint_url"),
        ("AWS_REGION", "garage", "region"),
        ("AWS_DEFAULT_REGION", "garage", "region"),
        ("AWS_CA_BUNDLE", "ca.pem", "ca_bundle"),
        ("REQUESTS_CA_BUNDLE", "ca.pem", "ca_bundle"),
        ("SSL_CERT_FILE", "ca.pem", "ca_bundle"),
        ("AWS_MAX_ATTEMPTS", "3", "max_attempts"),
        ("AWS_PROFILE", "store", "region"),
        ("AWS_DEFAULT_PROFILE", "store", "endpoint_url"),
        ("AWS_CONFIG_FILE", "aws-config", "ca_bundle"),
    ],
)
def test_submit_notes_every_variable_the_drivers_lookup_reads(
    tmp_path, no_aws_settings, monkeypatch, variable, value, key
):
    """Each variable the job's driver would take a storage value from (as_the_aws_tools_find_it, run here as the
    driver does) is one submit names when it is set here only. The note's table was a second list beside the lookups
    and lacked REQUESTS_CA_BUNDLE and SSL_CERT_FILE (the CA bundle a user trusts the store with for requests or
    pyarrow) and the profile variables."""
    from pipeline.config import EmbedConfig, StorageConfig, aws_configuration_read_elsewhere
    from pipeline.s3_submit import left_behind

    (tmp_path / "ca.pem").write_text(PEM)
    (tmp_path / "aws-config").write_text(PROFILE.format(ca=tmp_path / "ca.pem"))
    if variable in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv(variable, str(tmp_path / value) if value in ("ca.pem", "aws-config") else value)

    found_here = StorageConfig().as_the_aws_tools_find_it()  # what the driver's lookup takes from it
    assert getattr(found_here, key) not in (None, 6), f"the lookup does not read {variable}"
    with aws_configuration_read_elsewhere():
        cfg = EmbedConfig.model_validate({"input": {"uri": str(tmp_path / "raw")}, "output": {"uri": "s3://emb/x/"}})
    assert (variable, f"storage.{key}") in left_behind(cfg, None)
    assert (variable, f"storage.{key}") not in left_behind(cfg, {variable: value})
    cfg = cfg.model_copy(update={"storage": StorageConfig(**{key: getattr(found_here, key)})})
    assert all(k != f"storage.{key}" for _, k in left_behind(cfg, None))


def test_submit_notes_credentials_set_here_that_the_job_does_not_get(tmp_path, no_aws_settings, monkeypatch):
    """Credentials exported for the AWS CLI do not travel with a submitted job either (there is no storage key for
    them): submit says the job uses the cluster's own; nothing for an anonymous or a local job."""
    from pipeline.config import EmbedConfig, aws_configuration_read_elsewhere
    from pipeline.s3_submit import credentials_left_behind, credentials_note

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    raw = {"input": {"uri": str(tmp_path / "raw")}, "output": {"uri": "s3://emb/x/"}}
    with aws_configuration_read_elsewhere():
        cfg = EmbedConfig.model_validate(raw)
        anonymous = EmbedConfig.model_validate({**raw, "storage": {"anon": True}})
        local = EmbedConfig.model_validate({**raw, "output": {"uri": str(tmp_path / "out")}})
    names = credentials_left_behind(cfg, None)
    assert names == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert credentials_note(names).startswith(
        "note: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY set here are not sent with the job: its driver and workers "
        "use the cluster's own AWS credentials"
    )
    assert credentials_left_behind(cfg, {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}) == []
    assert credentials_left_behind(anonymous, None) == credentials_left_behind(local, None) == []
