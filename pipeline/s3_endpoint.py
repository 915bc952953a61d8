"""The S3 endpoint a user configured outside rayembed, found as the AWS CLI and boto3 find it.

Users of MinIO, Ceph, R2 or a local moto/LocalStack point their tools at the store with `AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL` or an `endpoint_url` in the profile (`~/.aws/config`, `AWS_PROFILE`), not with a rayembed key.
boto3 (our listings, pipeline.s3_listing) honoured them, pyarrow's S3 client (every read and write) does not: the
listing went to the configured store and the reads to AWS (`Could not resolve host: bucket.s3.us-east-1...`), and
on a cluster the workers' environment may lack the variable the driver had. `storage.endpoint_url` is therefore
filled from this lookup where the config leaves it out (pipeline.config.StorageConfig), on the driver, so both
clients and every worker use the one endpoint. The order is botocore's (configprovider.ConfiguredEndpointProvider):

1. `AWS_ENDPOINT_URL_S3`, 2. `AWS_ENDPOINT_URL`, 3. the profile's `services` section's `s3` `endpoint_url`,
4. the profile's own `endpoint_url`; none where `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` (or the profile's
`ignore_configured_endpoint_urls`) is true.

The region likewise (configured_region): pyarrow took `AWS_REGION` and boto3 ignored it (us-east-1), and with an
endpoint both signed for us-east-1 whatever the profile said (a MinIO or Garage store set to another region refuses
such signatures).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# The environment variables each lookup below reads, in its order (pipeline.s3_submit names them from here).
ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
ATTEMPTS_VARS = ("AWS_MAX_ATTEMPTS",)
# Which profile from_profile reads, and where: they decide every storage key a profile can give.
PROFILE_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE")
PROFILE_KEYS = ("endpoint_url", "region", "ca_bundle", "addressing_style", "max_attempts")
TRUE = ("true", "1", "yes")


class EndpointConfigError(ValueError):
    """The AWS configuration names a profile that does not exist or cannot be read; the message says which."""


def configured_endpoint() -> tuple[str, str] | None:
    """(endpoint URL, where it was found: the variable's name or `AWS profile 'name' (file)`), or None.

    Reads only the environment unless an AWS config file exists (`AWS_CONFIG_FILE`, else `~/.aws/config`).

    Raises:
        EndpointConfigError: `AWS_PROFILE` names a profile the config files lack, or a file cannot be parsed.
    """
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() in TRUE:
        return None
    for name in ENV_VARS:
        if value := os.environ.get(name, "").strip():
            return value, name

    def endpoint(session) -> str | None:
        from botocore.configprovider import ConfiguredEndpointProvider

        if str(session.get_config_variable("ignore_configured_endpoint_urls")).lower() in TRUE:
            return None
        return ConfiguredEndpointProvider(
            full_config=session.full_config, scoped_config=session.get_scoped_config(), client_name="s3"
        ).provide()

    return from_profile(endpoint, "storage.endpoint_url")


def configured_region() -> tuple[str, str] | None:
    """(region, where it was found) as the AWS CLI v2 and the SDKs find it: `AWS_REGION`, `AWS_DEFAULT_REGION`, the
    profile's `region`; None where none is set.

    Raises:
        EndpointConfigError: as configured_endpoint.
    """
    for name in REGION_VARS:
        if value := os.environ.get(name, "").strip():
            return value, name
    return from_profile(lambda session: session.get_scoped_config().get("region"), "storage.region")


def from_profile(read: Callable[[Any], str | None], key: str) -> tuple[str, str] | None:
    """(value, `AWS profile 'name' (file)`) that `read(botocore session)` finds in the AWS config file, or None
    (no such file, or no value there). Only where the file exists is botocore imported.

    Raises:
        EndpointConfigError: botocore cannot read the file or the profile (ProfileNotFound, ConfigParseError, a
            `services` section that does not exist); the message names the file, the profile and `key`.
    """
    config_file = os.path.expanduser(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    if not os.path.isfile(config_file):
        return None
    import botocore.session
    from botocore.exceptions import BotoCoreError

    session = botocore.session.Session()
    profile = session.profile or "default"
    try:
        value = read(session)
    except BotoCoreError as err:
        raise EndpointConfigError(
            f"cannot read the AWS configuration ({config_file}, profile {profile!r}): {err}; fix AWS_PROFILE or the "
            f"file, or give {key}"
        ) from err
    return (value, f"AWS profile {profile!r} ({config_file})") if value else None


def configured_addressing_style() -> tuple[str, str] | None:
    """(addressing style, where it was found) from the AWS profile's `s3` section (`s3 =\\n  addressing_style =
    virtual`), as boto3 reads it (no environment variable sets it); None where the profile sets none.

    Raises:
        EndpointConfigError: as configured_endpoint.
    """

    def style(session) -> str | None:
        s3 = session.get_scoped_config().get("s3")
        return s3.get("addressing_style") if isinstance(s3, dict) else None

    return from_profile(style, "storage.addressing_style")


def configured_max_attempts() -> tuple[int, str] | None:
    """(attempts per request, where it was found) as boto3 reads them: `AWS_MAX_ATTEMPTS`, the profile's
    `max_attempts` (the first attempt included, as storage.max_attempts counts them); None where neither is set.

    Raises:
        EndpointConfigError: the value is not a whole number of at least 1, or as configured_endpoint.
    """
    found = next(((value, name) for name in ATTEMPTS_VARS if (value := os.environ.get(name, "").strip())), None)
    if found is None:
        found = from_profile(lambda session: session.get_scoped_config().get("max_attempts"), "storage.max_attempts")
    if found is None:
        return None
    value, source = found
    if not str(value).strip().isdigit() or int(value) < 1:
        raise EndpointConfigError(
            f"max_attempts {value!r} of {source} is not a whole number of at least 1 (attempts per S3 request, the "
            "first included): fix it, or give storage.max_attempts"
        )
    return int(value), source


def endpoint_form(value: str, source: str = "storage.endpoint_url") -> str:
    """`value`, an S3 endpoint URL, as both clients take it: stripped, its scheme lower-case.

    boto3 read `HTTP://host` and ` http://host` as http and refused `host:9000` (`ValueError: Invalid endpoint`);
    pyarrow refused the first two (`Invalid S3 connection scheme 'HTTP'`) and took the third as https (a store
    without TLS then failed its handshake: curlCode 35).

    Raises:
        EndpointConfigError: no scheme, or one other than http and https; the message names `source`.
    """
    value = value.strip()
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise EndpointConfigError(
            f"{source} {value!r} has no scheme: write http://{value} for a store served without TLS (a local MinIO, "
            f"moto) or https://{value}"
        )
    if scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise EndpointConfigError(f"{source} {value!r} is not an http:// or https:// URL of an S3 endpoint")
    return f"{scheme.lower()}://{rest}"
