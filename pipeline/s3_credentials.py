"""What to tell a user whose AWS credentials or configuration botocore cannot resolve (pipeline.s3_listing.s3_client).

botocore raises these while it resolves credentials or builds a client, before any request: a profile named by
AWS_PROFILE that no file has, half of a key pair, a config file it cannot parse, a role without a source, a
credential_process that fails, an expired SSO login, a region that is not one. Each becomes one sentence naming the
cause (the variable, profile or file) and what to do, instead of botocore's traceback.
"""

from __future__ import annotations

import os
from typing import Any

ANON_HINT = "a public bucket is read with storage.anon: true (as `aws s3 --no-sign-request`)"


def aws_files() -> tuple[str, str]:
    """(config file, shared credentials file) as botocore finds them (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE)."""
    config = os.path.expanduser(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    credentials = os.path.expanduser(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
    return config, credentials


def present(path: str) -> str:
    return path if os.path.isfile(path) else f"{path} (absent)"


def explain(err: Any) -> str:
    """The message for a botocore.exceptions.BotoCoreError raised while resolving credentials or making a client."""
    from botocore import exceptions as e

    config, credentials = aws_files()
    files = f"{present(config)} / {present(credentials)}"
    kwargs = getattr(err, "kwargs", {})
    if isinstance(err, e.ProfileNotFound):
        source = "AWS_PROFILE" if os.environ.get("AWS_PROFILE") else "the configuration"
        return (
            f"the AWS profile {kwargs.get('profile')!r} (from {source}) is in none of the AWS files ({files}): fix or "
            "unset AWS_PROFILE (`aws configure list-profiles` lists the profiles), or create it with "
            f"`aws configure --profile {kwargs.get('profile')}`; {ANON_HINT}"
        )
    if isinstance(err, e.PartialCredentialsError):
        missing, provider = kwargs.get("cred_var"), kwargs.get("provider")
        if provider == "env":
            return (
                f"AWS credentials in the environment are incomplete: {missing} is not set. Set both "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or unset "
                f"them to use the profile or role; {ANON_HINT}"
            )
        return (
            f"AWS credentials are incomplete: the profile {os.environ.get('AWS_PROFILE', 'default')!r} lacks "
            f"{missing} (botocore's {provider} credentials, {files}): add it to the profile (`aws configure`), or "
            f"give both keys in the environment; {ANON_HINT}"
        )
    if isinstance(err, e.ConfigParseError):
        return f"cannot parse the AWS file {kwargs.get('path')}: fix its syntax (INI sections and key = value lines)"
    if isinstance(err, e.InvalidRegionError):
        return f"{str(err).rstrip('.')}: fix storage.region, AWS_REGION / AWS_DEFAULT_REGION or the profile's region ({present(config)})"
    if isinstance(err, (e.TokenRetrievalError, e.SSOTokenLoadError, e.UnauthorizedSSOTokenError)):
        return f"the AWS SSO login cannot be used ({err}): run `aws sso login` with this profile, then run again"
    return (
        f"the AWS credentials cannot be resolved ({type(err).__name__}: {err}); fix the profile "
        f"{os.environ.get('AWS_PROFILE', 'default')!r} in {files} or the AWS_* variables (`aws sts "
        f"get-caller-identity` shows whether the AWS CLI can use them); {ANON_HINT}"
    )
