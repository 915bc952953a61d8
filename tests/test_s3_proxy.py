"""Proxies and addressing given the AWS tools' way reach both S3 clients (pipeline/s3_proxy.py, storage.addressing_style).

The store's endpoint is a name that does not resolve (`.invalid`), reached through tests/s3_fault_proxy.py as an
HTTP forward proxy: a request only arrives through the proxy, which sees the host each request addressed, so a
virtual-hosted-style request (`bucket.host`) is told from a path-style one without DNS for bucket names.
"""

from __future__ import annotations

import pytest
from s3_round_trip import listed_and_read

from pipeline.config import StorageConfig
from pipeline.storage import list_files

ENDPOINT_HOST = "s3.rayembed.invalid:9000"
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY")


@pytest.fixture
def no_proxy_settings(monkeypatch, tmp_path):
    import boto3

    for name in (*PROXY_VARIABLES, "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3's default session caches the profile it read


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "no scheme"])
def test_both_clients_go_through_the_proxy_the_environment_names(
    s3_bucket, proxy, no_proxy_settings, monkeypatch, variable
):
    """boto3 (the listing) took HTTP_PROXY / http_proxy, pyarrow (every read and write) ignored them: on a node
    that reaches the store only through a proxy, reads failed with `Could not resolve host`. NO_PROXY naming the
    store's domain sends both direct."""
    from pipeline.s3_listing import list_objects

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b"x\n")
    url = proxy.url.removeprefix("http://") if variable == "no scheme" else proxy.url
    monkeypatch.setenv("HTTP_PROXY" if variable == "no scheme" else variable, url)
    storage = StorageConfig(endpoint_url=f"http://{ENDPOINT_HOST}", max_attempts=1)
    assert listed_and_read(storage, f"s3://{bucket}/corpus") == {"a.jsonl": b"x\n"}
    assert set(proxy.hosts) == {ENDPOINT_HOST} and proxy.hosts[ENDPOINT_HOST] >= 4, proxy.hosts
    monkeypatch.setenv("NO_PROXY", "localhost,.rayembed.invalid")
    proxy.hosts.clear()
    with pytest.raises(OSError, match="Could not resolve host"):
        list_files(f"s3://{bucket}/corpus", storage)
    with pytest.raises(Exception, match="Could not connect to the endpoint URL"):
        next(list_objects(f"{bucket}/corpus", storage))
    assert not proxy.hosts


@pytest.mark.parametrize("where", ["profile", "storage.addressing_style"])
def test_a_store_that_refuses_path_style_requests_is_addressed_virtual_hosted_style(
    s3_bucket, proxy, no_proxy_settings, monkeypatch, tmp_path, where
):
    """Stores that serve only virtual-hosted-style requests (some R2, Wasabi, Alibaba OSS or on-prem gateways) are
    set up for boto3 with a profile's `s3 = addressing_style = virtual`; pyarrow addressed any custom endpoint
    path-style (`host/bucket/key`) and every read was refused. Both clients now take the style, from the profile
    or storage.addressing_style; every request names the bucket in the host."""
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b"x\n")
    proxy.virtual_host, proxy.refuse_path_style = ENDPOINT_HOST, True
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    given = {}
    if where == "profile":
        (tmp_path / "config").write_text("[profile gw]\ns3 =\n  addressing_style = virtual\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
        monkeypatch.setenv("AWS_PROFILE", "gw")
    else:
        given = {"addressing_style": "virtual"}
    storage = StorageConfig(endpoint_url=f"http://{ENDPOINT_HOST}", max_attempts=1, **given)
    storage = storage.as_the_aws_tools_find_it()
    assert storage.addressing_style == "virtual"
    assert listed_and_read(storage, f"s3://{bucket}/corpus") == {"a.jsonl": b"x\n"}
    assert set(proxy.hosts) == {f"{bucket}.{ENDPOINT_HOST}"}, proxy.hosts
    # the store does refuse path-style requests: the default style (path, with an endpoint) is turned away
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        list_files(f"s3://{bucket}/corpus", storage.model_copy(update={"addressing_style": "auto"}))


def test_an_addressing_style_boto3_does_not_take_is_a_config_error(no_proxy_settings, monkeypatch, tmp_path):
    from pydantic import ValidationError

    from pipeline.config import EmbedConfig

    (tmp_path / "config").write_text("[profile gw]\ns3 =\n  addressing_style = virtual-host\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "gw")
    job = {"input": {"uri": "s3://bucket/corpus"}, "output": {"uri": str(tmp_path / "out")}}
    with pytest.raises(
        ValidationError, match=r"addressing_style 'virtual-host' of AWS profile 'gw' .*\(auto, path or virtual\)"
    ):
        EmbedConfig.model_validate(job)
    with pytest.raises(ValidationError, match="addressing_style"):
        StorageConfig(addressing_style="virtual-host")


def test_the_attempts_given_the_aws_way_are_both_clients_attempts(no_proxy_settings, monkeypatch, tmp_path):
    """AWS_MAX_ATTEMPTS and a profile's max_attempts: both clients took storage.max_attempts' default (6) whatever
    they said. Left out of the config they are its value now; a config's own value, even 6, wins."""
    from pydantic import ValidationError

    from pipeline.config import EmbedConfig
    from pipeline.s3_listing import s3_client

    job = {"input": {"uri": "s3://bucket/corpus"}, "output": {"uri": str(tmp_path / "out")}}
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    assert EmbedConfig.model_validate(job).storage.max_attempts == 2
    assert EmbedConfig.model_validate({**job, "storage": {"max_attempts": 6}}).storage.max_attempts == 6
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")
    (tmp_path / "config").write_text("[profile flaky]\nmax_attempts = 9\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "flaky")
    storage = EmbedConfig.model_validate(job).storage
    assert storage.max_attempts == 9
    assert s3_client(storage).meta.config.retries["total_max_attempts"] == 9
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "many")
    with pytest.raises(ValidationError, match=r"max_attempts 'many' of AWS_MAX_ATTEMPTS is not a whole number"):
        EmbedConfig.model_validate(job)


def test_both_clients_make_max_attempts_requests_in_all(s3_bucket, proxy, no_proxy_settings):
    """botocore's `retries: max_attempts` counts retries, pyarrow's and AWS_MAX_ATTEMPTS count attempts: with
    storage.max_attempts 2 the listing's client asked 3 times and the reads' client 2. Both ask 2 times now."""
    from s3_fault_proxy import FaultRule

    from pipeline.s3_listing import head_object
    from pipeline.storage import make_filesystem

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    proxy.rules.append(FaultRule(("HEAD",), f"/{bucket}/k", count=100, kinds=(503,)))
    storage = StorageConfig(endpoint_url=proxy.url, max_attempts=2)
    with pytest.raises(Exception, match="503|Service Unavailable|SlowDown"):
        head_object(f"{bucket}/k", storage)
    boto3_attempts, proxy.faults = sum(proxy.faults.values()), type(proxy.faults)()
    fs, path = make_filesystem(f"s3://{bucket}/k", storage)
    with pytest.raises(OSError):
        fs.get_file_info(path)
    assert (boto3_attempts, sum(proxy.faults.values())) == (2, 2)


def test_a_delta_table_on_a_virtual_hosted_only_store(s3_bucket, proxy, no_proxy_settings, monkeypatch):
    """The deltalake client (a Delta table's log) addressed the endpoint path-style too."""
    import deltalake
    import pyarrow as pa

    client, bucket = s3_bucket
    options = {"AWS_ENDPOINT_URL": client.meta.endpoint_url, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    options["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"  # writing only: moto, no lock
    uri = f"s3://{bucket}/t"
    deltalake.write_deltalake(uri, pa.table({"text": ["a"]}), storage_options=options)
    deltalake.write_deltalake(uri, pa.table({"text": ["b"]}), mode="overwrite", storage_options=options)
    proxy.virtual_host, proxy.refuse_path_style = ENDPOINT_HOST, True
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    storage = StorageConfig(endpoint_url=f"http://{ENDPOINT_HOST}", max_attempts=1, addressing_style="virtual")
    assert len(list_files(uri, storage)[1]) == 1
    assert set(proxy.hosts) == {f"{bucket}.{ENDPOINT_HOST}"}, proxy.hosts


@pytest.mark.parametrize("written", ["HTTP://{host}", "  http://{host}/ ", "{host}", "ftp://{host}"])
def test_an_endpoint_as_users_write_it_reaches_both_clients_or_is_a_config_error(
    s3_bucket, s3_server, no_proxy_settings, monkeypatch, written
):
    """`HTTP://host` and a padded URL: boto3 took them, pyarrow refused them (`Invalid S3 connection scheme
    'HTTP'`); `host:9000` without a scheme: boto3 refused it (`ValueError: Invalid endpoint`, a traceback), pyarrow
    took https (a plain-HTTP store then failed its TLS handshake). Now the first two are read as written, the others
    are a config error naming the key or the variable."""
    from pydantic import ValidationError

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b"x\n")
    endpoint = written.format(host=s3_server.removeprefix("http://"))
    if "://" in endpoint and not endpoint.startswith("ftp"):
        storage = StorageConfig(endpoint_url=endpoint, max_attempts=1)
        assert listed_and_read(storage, f"s3://{bucket}/corpus") == {"a.jsonl": b"x\n"}
        return
    says = "has no scheme: write http://" if "://" not in endpoint else "is not an http:// or https:// URL"
    with pytest.raises(ValidationError, match=f"storage.endpoint_url '{endpoint}' {says}"):
        StorageConfig(endpoint_url=endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(ValueError, match=f"AWS_ENDPOINT_URL '{endpoint}' {says}"):
        StorageConfig().as_the_aws_tools_find_it()
