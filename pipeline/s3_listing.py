"""S3 listings with each object's ETag, through boto3's ListObjectsV2: one request per 1,000 objects, as before.

pyarrow's S3FileSystem lists the same pages but drops the ETag the server sends with every object, leaving size and
LastModified, which the server gives to the second: an object rewritten with the same size in the same second passed
for unchanged on a resume (docs/resume.md). The ETag (a content hash for ordinary uploads, a hash of the part hashes
for multipart ones) tells the two apart at no extra request. Reads still go through pyarrow (pipeline.storage).
"""

from __future__ import annotations

import calendar
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.config import StorageConfig
from pipeline.errors import UserError
from pipeline.s3_credentials import explain
from pipeline.s3_tls import checked_ca_bundle

NO_CREDENTIALS = (
    "no AWS credentials found for S3 (looked in the environment's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the "
    "profile's files (AWS_PROFILE, ~/.aws/credentials, ~/.aws/config) and the instance or pod role): a public bucket "
    "is read with storage.anon: true (as `aws s3 --no-sign-request`); otherwise give credentials as for the AWS CLI"
)


class S3CredentialsError(UserError, RuntimeError):
    """No credentials for a signed S3 request, and storage.anon is false, or the AWS configuration that gives them
    cannot be used (pipeline.s3_credentials); the message says the cause, what to do and how to read a public
    bucket."""


def s3_client(storage: StorageConfig) -> Any:
    """A boto3 S3 client with the storage settings pyarrow's client gets (pipeline.storage.make_filesystem):
    endpoint, region, anonymous access, AWS standard retries with `max_attempts`, the CA bundle (`verify`) and the
    addressing style; credentials from the environment, profile or role; proxies from the environment (boto3's own
    choice, which make_filesystem gives pyarrow's client too).

    Raises:
        CABundleError: storage.ca_bundle is missing on this node or holds no PEM certificate.
        S3CredentialsError: not anonymous and no credentials found (it was botocore's bare NoCredentialsError
            traceback at the first request: the output's lease or the input's listing), or botocore cannot resolve
            them or make the client (AWS_PROFILE naming no profile, half a key pair, an unparsable config file, ...:
            its BotoCoreError traceback before).
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    # total_max_attempts counts the first attempt, as pyarrow's max_attempts and AWS_MAX_ATTEMPTS do; botocore's
    # max_attempts key counts retries only (one attempt more than pyarrow's client made)
    options: dict[str, Any] = {"retries": {"mode": "standard", "total_max_attempts": storage.max_attempts}}
    kwargs: dict[str, Any] = {}
    if storage.endpoint_url:
        kwargs["endpoint_url"] = storage.endpoint_url
        kwargs["region_name"] = storage.region or "us-east-1"
    elif storage.region:
        kwargs["region_name"] = storage.region
    if storage.ca_bundle:
        kwargs["verify"] = checked_ca_bundle(storage.ca_bundle)
    if storage.addressing_style:
        options["s3"] = {"addressing_style": storage.addressing_style}
    try:
        if storage.anon:
            options["signature_version"] = UNSIGNED
        elif boto3._get_default_session().get_credentials() is None:  # resolved once per process, as boto3.client
            raise S3CredentialsError(NO_CREDENTIALS + half_pair())
        return boto3.client("s3", config=Config(**options), **kwargs)
    except BotoCoreError as err:
        raise S3CredentialsError(explain(err)) from None


def half_pair() -> str:
    """A note for an environment that sets one of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (botocore ignores a
    secret without its key id), or ''."""
    key, secret = (bool(os.environ.get(n)) for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    if key == secret:
        return ""
    missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
    return (
        f". The environment sets {'AWS_ACCESS_KEY_ID' if key else 'AWS_SECRET_ACCESS_KEY'} but not {missing}: set both"
    )


@dataclass(frozen=True)
class S3Object:
    path: str  # bucket/key, as pyarrow's S3FileSystem names it
    size: int  # bytes
    mtime_ns: int  # LastModified, in nanoseconds since the epoch (what pyarrow reports)
    etag: str  # without its quotes


def list_objects(path: str, storage: StorageConfig) -> Iterator[S3Object]:
    """The objects below `path` (`bucket` or `bucket/prefix`, no trailing `/`), at any depth, in key order.
    Keys ending in `/` (folder markers) are left out, as pyarrow lists them as directories.

    Raises:
        botocore.exceptions.ClientError, BotoCoreError: the listing failed after the client's retries.
    """
    bucket, _, prefix = path.partition("/")
    pages = (
        s3_client(storage)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
    )
    for page in pages:
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                yield S3Object(f"{bucket}/{obj['Key']}", obj["Size"], mtime_ns(obj["LastModified"]), etag(obj["ETag"]))


def head_object(path: str, storage: StorageConfig) -> S3Object:
    """One object (`bucket/key`) by a HEAD request."""
    bucket, _, key = path.partition("/")
    got = s3_client(storage).head_object(Bucket=bucket, Key=key)
    return S3Object(path, got["ContentLength"], mtime_ns(got["LastModified"]), etag(got["ETag"]))


def mtime_ns(modified: Any) -> int:
    """A timezone-aware datetime in integer nanoseconds, exactly (no float rounding): equal to pyarrow's mtime_ns
    for the same LastModified, so listings recorded through pyarrow compare equal."""
    return calendar.timegm(modified.utctimetuple()) * 1_000_000_000 + modified.microsecond * 1000


def etag(value: str) -> str:
    return value.strip('"')
