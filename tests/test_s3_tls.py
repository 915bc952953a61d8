"""A store with a private CA (pipeline/s3_tls.py): the bundle given the AWS tools' way serves both S3 clients.

The store is the session's moto server's data served over HTTPS by a second server in this process (moto keeps its
buckets in the process), with a certificate signed by a CA made here.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import re
import threading

import pytest
from s3_round_trip import listed_and_read

from pipeline.config import StorageConfig
from pipeline.storage import list_files

TLS_VARIABLES = ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "AWS_PROFILE")


def make_certificates(folder) -> tuple[str, str, str]:
    """(CA bundle, server certificate, server key) PEM files: a CA and a certificate it signs for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rayembed test private CA")])

    def certificate(subject, public_key, extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256())

    usage = dict.fromkeys(
        ["content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "encipher_only"], False
    )
    ca = certificate(
        ca_name,
        ca_key.public_key(),
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, decipher_only=False, **usage),
                True,
            ),
            (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
        ],
    )
    server = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
        key.public_key(),
        [
            (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
            (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ],
    )
    paths = [str(folder / name) for name in ("ca.pem", "server.pem", "server.key")]
    for path, data in zip(
        paths,
        [
            ca.public_bytes(serialization.Encoding.PEM),
            server.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        ],
    ):
        with open(path, "wb") as f:
            f.write(data)
    return paths[0], paths[1], paths[2]


@pytest.fixture(scope="module")
def https_store(s3_server, tmp_path_factory):
    """(HTTPS endpoint URL, CA bundle path) of the session's moto data behind a certificate of a private CA."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    ca, cert, key = make_certificates(tmp_path_factory.mktemp("tls"))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler, ssl_context=(cert, key))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", ca
    server.shutdown()


@pytest.fixture
def no_tls_settings(monkeypatch, tmp_path):
    """An environment without CA bundle settings (this machine sets AWS_CA_BUNDLE, SSL_CERT_FILE, ... to the
    system bundle) and without an AWS config file."""
    import boto3

    for name in TLS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3's default session caches the profile it read


@pytest.mark.parametrize(
    "where", ["AWS_CA_BUNDLE", "profile ca_bundle", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "storage.ca_bundle"]
)
def test_a_private_ca_given_the_aws_way_serves_the_listing_and_the_reads(
    https_store, s3_bucket, no_tls_settings, monkeypatch, tmp_path, where
):
    """boto3 (the listing) honours AWS_CA_BUNDLE, a profile's ca_bundle and REQUESTS_CA_BUNDLE and ignores
    SSL_CERT_FILE; pyarrow (every read and write) the reverse: the listing worked and every read failed with
    `curlCode: 60 ... unable to get local issuer certificate`, or the listing failed. Both use the bundle now."""
    endpoint, ca = https_store
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b'{"text": "x"}\n')
    given = {}
    if where == "profile ca_bundle":
        (tmp_path / "config").write_text(f"[profile store]\nca_bundle = {ca}\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
        monkeypatch.setenv("AWS_PROFILE", "store")
    elif where == "storage.ca_bundle":
        given = {"ca_bundle": ca}
    else:
        monkeypatch.setenv(where, ca)
    storage = StorageConfig(endpoint_url=endpoint, max_attempts=1, **given).as_the_aws_tools_find_it()
    assert storage.ca_bundle == ca
    assert listed_and_read(storage, f"s3://{bucket}/corpus") == {"a.jsonl": b'{"text": "x"}\n'}
    assert client.get_object(Bucket=bucket, Key="corpus/_written")["Body"].read() == b"w"


def embed_args(tmp_path, input_uri: str, output_uri: str, endpoint: str) -> list[str]:
    config = tmp_path / "embed.yaml"
    config.write_text(
        f"input: {{uri: '{input_uri}'}}\noutput: {{uri: '{output_uri}'}}\n"
        f"storage: {{endpoint_url: '{endpoint}', max_attempts: 1}}\n"
    )
    return ["--config", str(config)]


def test_without_the_ca_bundle_a_job_fails_with_one_line_naming_the_setting(
    https_store, s3_bucket, no_tls_settings, tmp_path, capsys
):
    """A TLS failure (pyarrow's `curlCode: 60` OSError from the first request: the input's listing, or the check of
    an S3 output for a finished run) was a traceback; now one `error:` line, exit 1, before Ray starts, naming
    storage.ca_bundle and AWS_CA_BUNDLE. boto3's SSLError: test_tls_failures_of_both_clients_are_named..."""
    from jobs.embed import main

    endpoint, _ = https_store
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b'{"text": "x"}\n')
    said = (
        r"^error: the S3 endpoint's TLS certificate was not verified \(.*unable to get local issuer certificate.*\); "
        r"storage.ca_bundle is not set \(nor AWS_CA_BUNDLE, .*\), so each client used its default trust store: a store "
        r"with a private or self-signed certificate "
        r".*give the PEM file of the CA certificates as storage.ca_bundle, or as AWS_CA_BUNDLE .*every node needs "
        r"the file at that path"
    )
    for output in (str(tmp_path / "out"), f"s3://{bucket}/out"):
        assert main(embed_args(tmp_path, f"s3://{bucket}/corpus", output, endpoint)) == 1, output
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert re.search(said, err), (output, err)


def test_tls_failures_of_both_clients_are_named_and_not_retried(https_store, s3_server, no_tls_settings):
    """The errors both clients really raise: an unknown CA, and an https:// endpoint that speaks plain HTTP (a local
    MinIO). pyarrow reports them as `AWS Error NETWORK_CONNECTION`, which was taken for a transient error and
    retried with backoff, then raised as TransientStorageError."""
    from pipeline.s3_listing import list_objects
    from pipeline.s3_tls import tls_failure
    from pipeline.transient_errors import is_transient

    plain = "https://" + s3_server.removeprefix("http://")
    for endpoint, says in ((https_store[0], "not verified"), (plain, "does not speak TLS")):
        storage = StorageConfig(endpoint_url=endpoint, max_attempts=1)
        for client, call in (
            ("pyarrow", lambda storage=storage: list_files("s3://bucket/x", storage)),
            ("boto3", lambda storage=storage: next(list_objects("bucket/x", storage))),
        ):
            with pytest.raises(Exception) as raised:
                call()
            assert not is_transient(raised.value), (client, endpoint, raised.value)
            message = tls_failure(raised.value, None)
            assert message is not None and says in message, (client, endpoint, message)
        if says == "does not speak TLS":
            assert "an http:// endpoint" in message


def test_a_ca_bundle_that_cannot_serve_is_named_with_where_it_came_from(
    https_store, no_tls_settings, monkeypatch, tmp_path
):
    """A bundle found the AWS way that is missing, a folder, or no PEM (a DER file, a key) is a config error naming
    the variable; one given as storage.ca_bundle is checked on the job's driver, and missing on another node it is
    named by that node's first S3 client, saying every node needs it (a worker may lack the file)."""
    from pydantic import ValidationError

    from pipeline.config import EmbedConfig, aws_configuration_read_elsewhere
    from pipeline.s3_tls import CABundleError
    from pipeline.storage import make_filesystem

    (tmp_path / "ca.der").write_bytes(b"\x30\x82\x01\x0a")
    job = {"input": {"uri": "s3://bucket/corpus"}, "output": {"uri": str(tmp_path / "out")}}
    for value, says in (
        (str(tmp_path / "none.pem"), "does not exist on this node"),
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "ca.der"), r"holds no PEM certificate .*openssl x509 -inform der"),
        (https_store[1].replace("ca.pem", "server.key"), "holds no PEM certificate"),
    ):
        monkeypatch.setenv("AWS_CA_BUNDLE", value)
        with pytest.raises(ValidationError, match=rf"storage.ca_bundle '{value}' \(from AWS_CA_BUNDLE\) {says}"):
            EmbedConfig.model_validate(job)
    monkeypatch.delenv("AWS_CA_BUNDLE")
    # given as the key, it is checked where the job's driver reads its config (it failed at its first S3 request,
    # exit 1, after Ray had started); not where the config is only checked for a job that runs elsewhere (submit)
    given = {**job, "storage": {"ca_bundle": str(tmp_path / "none.pem")}}
    with pytest.raises(ValidationError, match=r"storage.ca_bundle '.*none.pem' does not exist on this node"):
        EmbedConfig.model_validate(given)
    with aws_configuration_read_elsewhere():
        EmbedConfig.model_validate(given)
    EmbedConfig.model_validate({**given, "input": {"uri": str(tmp_path / "corpus")}})  # no S3 location: unused
    missing = StorageConfig(ca_bundle=str(tmp_path / "elsewhere.pem"))
    with pytest.raises(
        CABundleError, match=r"does not exist on this node \(.*\): .*Every node that reads or writes S3"
    ):
        make_filesystem("s3://bucket/k", missing)
    # a relative path is the driver's: the workers, in another working directory, get it absolute
    monkeypatch.chdir(tmp_path)
    assert StorageConfig(ca_bundle="certs/ca.pem").ca_bundle == str(tmp_path / "certs" / "ca.pem")


@pytest.mark.parametrize("key", ["verify: false", "verify_ssl: false", "verify: /etc/ca.pem", "tls_ca_file_path: x"])
def test_switching_verification_off_is_refused_saying_to_give_the_ca_bundle(tmp_path, key):
    """`verify: false` (`aws --no-verify-ssl`) has no form in pyarrow's client: refused at config time, pointing
    at storage.ca_bundle (it was 'did you mean anon?' or a list of keys)."""
    from pipeline.config import ConfigError, EmbedConfig, load_config

    config = tmp_path / "c.yaml"
    config.write_text(f"input: {{uri: {tmp_path}/a}}\noutput: {{uri: {tmp_path}/o}}\nstorage:\n  {key}\n")
    with pytest.raises(ConfigError, match=r"did you mean storage.ca_bundle\?"):
        load_config(EmbedConfig, str(config), [])


def test_a_delta_table_on_a_private_ca_store_is_read_with_the_bundle(https_store, s3_bucket, no_tls_settings):
    """The deltalake package's S3 client has no CA setting and took the platform's certificates: a Delta table's
    log on such a store failed (`error sending request`, after 10 retries) where the listing and reads worked."""
    import deltalake
    import pyarrow as pa

    endpoint, ca = https_store
    client, bucket = s3_bucket
    plain = client.meta.endpoint_url
    options = {"AWS_ENDPOINT_URL": plain, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    options["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"  # writing only: moto, no lock
    uri = f"s3://{bucket}/t"
    deltalake.write_deltalake(uri, pa.table({"text": ["a"]}), storage_options=options)
    deltalake.write_deltalake(uri, pa.table({"text": ["b"]}), mode="overwrite", storage_options=options)
    storage = StorageConfig(endpoint_url=endpoint, max_attempts=1, ca_bundle=ca)
    live = pa.table(deltalake.DeltaTable(uri, storage_options=options).get_add_actions()).column("path").to_pylist()
    assert list_files(uri, storage)[1] == live and len(live) == 1
    assert "SSL_CERT_FILE" not in __import__("os").environ  # put back as it was


def test_a_worker_node_without_the_ca_bundle_names_it(https_store, no_tls_settings, tmp_path):
    """A worker gets the driver's filesystem pickled: pyarrow's client is rebuilt there with the bundle's path,
    without the driver's check. On a node that lacks the file its requests fail with curl's code 77; the job's line
    names the setting and says each node needs the file (it read `certificate was not verified`, or a traceback)."""
    import pickle
    import shutil

    from pipeline.s3_tls import tls_failure
    from pipeline.storage import make_filesystem
    from pipeline.transient_errors import is_transient

    endpoint, ca = https_store
    here = str(shutil.copy(ca, tmp_path / "ca.pem"))
    fs, path = make_filesystem("s3://bucket/k", StorageConfig(endpoint_url=endpoint, max_attempts=1, ca_bundle=here))
    (tmp_path / "ca.pem").unlink()  # the other node
    with pytest.raises(OSError) as raised:
        pickle.loads(pickle.dumps(fs)).get_file_info(path)
    assert not is_transient(raised.value)
    message = tls_failure(raised.value, here)
    assert message.startswith("the CA bundle could not be read where an S3 request was made (")
    assert f"storage.ca_bundle is '{here}': every node that reads or writes S3 needs that file" in message


def test_an_https_store_behind_a_proxy_is_reached_by_both_clients_with_the_bundle(
    https_store, s3_bucket, proxy, no_tls_settings, monkeypatch
):
    """HTTPS_PROXY (the corporate case: a TLS store reached only through a proxy): boto3 tunnelled through it, pyarrow
    ignored it. Both tunnel now (CONNECT), and check the store's certificate against the bundle inside the tunnel."""
    from pipeline.s3_listing import list_objects
    from pipeline.storage import make_filesystem

    for name in ("HTTP_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    endpoint, ca = https_store
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b"x\n")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    storage = StorageConfig(endpoint_url=endpoint, max_attempts=1, ca_bundle=ca)
    assert listed_and_read(storage, f"s3://{bucket}/corpus") == {"a.jsonl": b"x\n"}
    assert set(proxy.hosts) == {endpoint.removeprefix("https://")}, proxy.hosts
    for client in ("boto3", "pyarrow"):  # each on its own: a fresh client's first request opens a tunnel
        proxy.hosts.clear()
        if client == "boto3":
            assert f"{bucket}/corpus/a.jsonl" in {o.path for o in list_objects(f"{bucket}/corpus", storage)}
        else:
            fs, path = make_filesystem(f"s3://{bucket}/corpus/a.jsonl", storage)
            assert fs.open_input_stream(path).read() == b"x\n"
        assert proxy.hosts, client


def test_a_handshake_the_network_cuts_stays_a_transient_error(no_tls_settings):
    """A store (or a load balancer in front of it) that resets the connection during the TLS handshake: pyarrow
    reports curl's code 35 too, `SSL connect error; Details: Recv failure: Connection reset by peer`; that is the
    network's, retried, not a certificate to give."""
    import socket
    import struct

    from pipeline.s3_tls import tls_failure
    from pipeline.storage import make_filesystem
    from pipeline.transient_errors import is_transient

    server = socket.create_server(("127.0.0.1", 0))

    def reset_each() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(16)  # the client's hello has begun
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    threading.Thread(target=reset_each, daemon=True).start()
    storage = StorageConfig(endpoint_url=f"https://127.0.0.1:{server.getsockname()[1]}", max_attempts=1)
    fs, path = make_filesystem("s3://bucket/k", storage)
    with pytest.raises(OSError, match="curlCode: 35") as raised:
        fs.get_file_info(path)
    server.close()
    assert is_transient(raised.value) and tls_failure(raised.value, None) is None
