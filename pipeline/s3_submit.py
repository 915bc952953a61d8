"""The submitter's AWS settings and a job submitted to a Ray cluster (`rayembed submit`).

The job's driver runs on the cluster and finds storage.endpoint_url, region, ca_bundle and max_attempts, where the
config leaves them out, in its own node's environment and AWS profile (pipeline.config.StorageConfig.
as_the_aws_tools_find_it). A variable exported in the submitter's shell, as for the AWS CLI, does not travel with
the job: the job reached AWS, or the cluster's store, instead of the one the submitter named. left_behind names
such variables so that submit can say so before the job runs. Pure Python.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline import s3_endpoint, s3_tls
from pipeline.config import s3_locations

# Each variable the driver's lookup reads, with the storage key that gives its value in the config instead: taken
# from the lookups themselves (pipeline.s3_endpoint, pipeline.s3_tls), so a variable a lookup learns is named here.
VARIABLE_KEYS = (
    *((name, "endpoint_url") for name in s3_endpoint.ENV_VARS),
    *((name, "region") for name in s3_endpoint.REGION_VARS),
    *((name, "ca_bundle") for name in s3_tls.CA_BUNDLE_VARS),
    *((name, "max_attempts") for name in s3_endpoint.ATTEMPTS_VARS),
    *((name, key) for name in s3_endpoint.PROFILE_VARS for key in s3_endpoint.PROFILE_KEYS),
)
# Credentials have no storage key (secrets do not belong in a config): the job's driver and workers use their own
# nodes' (a pod's role, the cluster's variables or credential files).
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE")


def left_behind(cfg: object, env_vars: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """(variable, storage key) for each AWS variable set here that the submitted job's driver would use but does
    not get: the config (`cfg`, a job's config checked without this machine's AWS configuration) reads or writes S3,
    leaves the key out, and the runtime env's `env_vars` do not carry the variable. Empty for a job on local paths."""
    storage = getattr(cfg, "storage", None)
    if storage is None or not s3_locations(cfg):
        return []
    env_vars = env_vars or {}
    return [
        (name, f"storage.{key}")
        for name, key in VARIABLE_KEYS
        if set_here(name) and name not in env_vars and key not in storage.model_fields_set
    ]


def set_here(name: str) -> bool:
    """Whether the variable is set (not blank) in this process; AWS_CONFIG_FILE only where it names a file (the
    lookups read none otherwise)."""
    value = os.environ.get(name, "").strip()
    return bool(value) and (name != "AWS_CONFIG_FILE" or os.path.isfile(os.path.expanduser(value)))


def left_behind_note(found: list[tuple[str, str]]) -> str:
    """One line for left_behind's answer (non-empty)."""
    names = list(dict.fromkeys(name for name, _ in found))
    keys = ", ".join(dict.fromkeys(key for _, key in found))
    return (
        f"note: {', '.join(names)} set here {'is' if len(names) == 1 else 'are'} not sent with the job: its driver on the cluster "
        f"uses its own node's AWS settings; to use these values give {keys} (--set) or pass the variables in "
        "--runtime-env-json '{\"env_vars\": {...}}'"
    )


def credentials_left_behind(cfg: object, env_vars: Mapping[str, str] | None) -> list[str]:
    """The AWS credential variables set here that a submitted job reading or writing S3 (not anonymously) does not
    get: CREDENTIAL_VARS not in the runtime env's `env_vars`. Empty for a job on local paths."""
    storage = getattr(cfg, "storage", None)
    if storage is None or storage.anon or not s3_locations(cfg):
        return []
    return [name for name in CREDENTIAL_VARS if set_here(name) and name not in (env_vars or {})]


def credentials_note(names: list[str]) -> str:
    """One line for credentials_left_behind's answer (non-empty)."""
    return (
        f"note: {', '.join(names)} set here {'is' if len(names) == 1 else 'are'} not sent with the job: its driver "
        "and workers use the cluster's own AWS credentials (a pod's or node's role, its variables or credential "
        "files); where the cluster has none for this store, give it credentials there (a Kubernetes secret in the "
        "pods' env, a service account's role)"
    )
