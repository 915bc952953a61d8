"""The CA bundle both S3 clients check the store's TLS certificate against, and what to say when the check fails.

A store with a private or self-signed certificate (MinIO, Ceph, an on-prem gateway) is trusted the AWS tools' way:
`AWS_CA_BUNDLE` or a profile's `ca_bundle` (and, for botocore, `REQUESTS_CA_BUNDLE`). boto3 (listings, heads, the
lease) honours those and ignores `SSL_CERT_FILE`; pyarrow's S3 client (every read and write) ignores them and takes
`SSL_CERT_FILE` (Python's default verify paths, read when pyarrow.fs is imported). So the listing worked and every
read failed with `curlCode: 60, SSL peer certificate ... unable to get local issuer certificate`, or the reverse.
`storage.ca_bundle`, left out, is found on the driver in that order (configured_ca_bundle) and given to both clients
(`verify`, `tls_ca_file_path`) on every node, which needs the file at the same path (checked_ca_bundle).

`verify = false` (`aws --no-verify-ssl`) has no form in pyarrow's client and is refused at config time
(pipeline.config_loading.KEY_ALIASES): give the store's CA bundle instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
from collections.abc import Iterator

from pipeline.errors import UserError

KEY = "storage.ca_bundle"
# configured_ca_bundle's variables: AWS_CA_BUNDLE before the profile's ca_bundle, the others after it.
CA_BUNDLE_VARS = ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"

# A TLS failure as each client reports it. pyarrow: `AWS Error NETWORK_CONNECTION ... curlCode: N, ...` with curl's
# codes 35 (handshake: e.g. an https:// endpoint that speaks plain HTTP), 51 and 60 (the peer's certificate or name
# not verified), 58 (client certificate), 77 (the CA file cannot be read), 83 (issuer check), 90 (pinned key).
# boto3: botocore's SSLError, `SSL validation failed for URL [SSL: CERTIFICATE_VERIFY_FAILED] ...`.
CURL_TLS = re.compile(r"curlCode: (35|51|58|60|77|83|90)\b")
BOTO_TLS = re.compile(r"SSL validation failed for ")
# The reasons a CA bundle cannot fix, and what can.
PLAIN_HTTP = re.compile(r"wrong version number|packet length too long", re.IGNORECASE)
NAME_MISMATCH = re.compile(r"match|subject name|hostname", re.IGNORECASE)
# A handshake the network cut: curl's 35 says `Recv failure: Connection reset by peer` or an unexpected EOF.
CUT_HANDSHAKE = re.compile(
    r"reset by peer|unexpected eof|EOF occurred|connection (reset|aborted)|timed out", re.IGNORECASE
)
# The bundle itself: pyarrow's curl on a node that lacks the file (a worker's client is unpickled, not made through
# checked_ca_bundle) or cannot parse it; boto3's `[Errno 2] No such file`, `NO_CERTIFICATE_OR_CRL_FOUND`.
UNREADABLE_BUNDLE = re.compile(r"curlCode: 77\b|\[Errno 2\]|NO_CERTIFICATE_OR_CRL_FOUND")
EXPIRED = re.compile(r"expired|not yet valid", re.IGNORECASE)


class CABundleError(UserError, ValueError):
    """The CA bundle that storage.ca_bundle names (given, or found the AWS tools' way) is missing on this node, is
    not a file, or holds no PEM certificate; the message names the file, where it came from and this host."""


def configured_ca_bundle() -> tuple[str, str] | None:
    """(CA bundle path, where it was found) as the AWS tools and the S3 clients find one: botocore's ca_bundle
    setting (`AWS_CA_BUNDLE`, then the AWS profile's `ca_bundle`), then `REQUESTS_CA_BUNDLE` (botocore's fallback),
    then `SSL_CERT_FILE` (which only pyarrow's client reads); None where none is set. Reads the AWS config
    file (and imports botocore) only where one exists.

    Raises:
        EndpointConfigError: AWS_PROFILE names a profile the config file lacks, or the file cannot be parsed.
    """
    from pipeline.s3_endpoint import from_profile

    first, *after_profile = CA_BUNDLE_VARS
    if value := os.environ.get(first, "").strip():
        return value, first
    if found := from_profile(lambda session: session.get_scoped_config().get("ca_bundle"), KEY):
        return found
    for name in after_profile:
        if value := os.environ.get(name, "").strip():
            return value, name
    return None


def checked_ca_bundle(path: str, source: str = KEY) -> str:
    """`path` as an absolute path (`~` expanded) once it is known to be a readable file holding a PEM certificate.

    Called on the driver where the config is read and by each S3 client made on any node (pipeline.storage,
    pipeline.s3_listing): a worker on another node needs the file at the same path. Checked once per path and
    process.

    Raises:
        CABundleError: missing, not a file, unreadable or without a PEM certificate; names `source` and the host.
    """
    return _checked(os.path.abspath(os.path.expanduser(path)), source)


@functools.lru_cache(maxsize=16)
def _checked(path: str, source: str) -> str:
    host = socket.gethostname()
    where = f"{KEY} {path!r}" + (f" (from {source})" if source != KEY else "")
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise CABundleError(
            f"{where} {what} on this node ({host}): give the PEM file of the CA certificates that sign the S3 "
            "endpoint's certificate (a directory of certificates: concatenate them, `cat DIR/*.pem > bundle.pem`). "
            "Every node that reads or writes S3 needs the file at this same path: put it in the image or mount it "
            "on each node"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError as err:
        raise CABundleError(f"{where} cannot be read on this node ({host}): {err}") from None
    if PEM_CERTIFICATE not in head:
        raise CABundleError(
            f"{where} holds no PEM certificate ('-----BEGIN CERTIFICATE-----'); a DER file is converted with "
            "`openssl x509 -inform der -in ca.der -out ca.pem`, and a private key is not a CA bundle"
        )
    return path


def tls_failure(err: BaseException, ca_bundle: str | None) -> str | None:
    """One line for an error that is, wraps or names a TLS failure of either S3 client, else None.

    Follows Ray's RayTaskError `cause` and `__cause__` (at most 10 links) and reads each error's text, so a
    failure wrapped by a reader or writer (InputFileError, StorageWriteError) is found too.

    Args:
        ca_bundle: storage.ca_bundle as the job used it (None: each client's default trust store).
    """
    for _ in range(10):
        text = str(err)
        if is_tls_failure(err):
            return tls_message(text, ca_bundle)
        nxt = getattr(err, "cause", None) or err.__cause__
        if not isinstance(nxt, BaseException):
            return None
        err = nxt
    return None


def tls_message(text: str, ca_bundle: str | None) -> str:
    """What to tell a user whose S3 request failed with `text`, a TLS error of either client."""
    reason = text.strip().splitlines()[-1] if text.strip() else "TLS error"
    reason = reason if len(reason) < 400 else reason[:400] + "..."
    if UNREADABLE_BUNDLE.search(text):
        return (
            f"the CA bundle could not be read where an S3 request was made ({reason}); {KEY} is {ca_bundle!r}: every "
            "node that reads or writes S3 needs that file at this same path, holding PEM certificates: put it in the "
            "image or mount it on each node"
        )
    if PLAIN_HTTP.search(text):
        return (
            f"the S3 endpoint does not speak TLS ({reason}): a store served over plain HTTP (a local MinIO, moto) "
            "takes an http:// endpoint: fix storage.endpoint_url (or AWS_ENDPOINT_URL / the profile's endpoint_url)"
        )
    used = (
        f"{KEY} is {ca_bundle!r}"
        if ca_bundle
        else f"{KEY} is not set (nor AWS_CA_BUNDLE, the profile's ca_bundle, REQUESTS_CA_BUNDLE or SSL_CERT_FILE), "
        "so each client used its default trust store"
    )
    if EXPIRED.search(text):
        fix = "the store's certificate is outside its validity dates: the store's operator has to renew it"
    elif NAME_MISMATCH.search(text) and "issuer" not in text:
        fix = (
            "the certificate does not name the endpoint's host: give storage.endpoint_url with a host name the "
            "certificate carries"
        )
    else:
        fix = (
            f"a store with a private or self-signed certificate (MinIO, Ceph, on-prem) needs its CA: give the PEM "
            f"file of the CA certificates as {KEY}, or as AWS_CA_BUNDLE or the profile's ca_bundle (the AWS CLI's "
            "setting); both S3 clients then use it, and every node needs the file at that path"
            + system_store_hint(ca_bundle)
        )
    return f"the S3 endpoint's TLS certificate was not verified ({reason}); {used}: {fix}"


def system_store_hint(ca_bundle: str | None) -> str:
    """Where the CA was added to this system's trust store (update-ca-certificates), its bundle file; boto3 uses
    certifi's bundle, not the system's."""
    import ssl

    system = ssl.get_default_verify_paths().openssl_cafile
    if ca_bundle or not system or not os.path.isfile(system):
        return ""
    return f" (a CA added to this system's trust store is in {os.path.realpath(system)}: give that file)"


def is_tls_failure(err: BaseException) -> bool:
    """True when `err`'s own text is a TLS failure of either client that a later attempt meets again (the same
    certificate, the same plain-HTTP server); a handshake cut by the network (curl's 35 with `Connection reset by
    peer`, an EOF) is not one: it stays a transient error (pipeline.transient_errors)."""
    text = str(err)
    return bool(CURL_TLS.search(text) or BOTO_TLS.search(text)) and not CUT_HANDSHAKE.search(text)


@contextlib.contextmanager
def ssl_cert_file(ca_bundle: str | None) -> Iterator[None]:
    """`SSL_CERT_FILE` set to `ca_bundle` (a checked path; None: unchanged) for the calls inside, then put back.

    The deltalake package's S3 client (object_store: rustls with the platform's certificates) has no CA bundle
    option; it reads that variable when it makes a client. Driver only, around the Delta log's reads
    (pipeline.delta_tables); pyarrow read it at import, boto3 never.
    """
    if ca_bundle is None:
        yield
        return
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = checked_ca_bundle(ca_bundle)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = before
