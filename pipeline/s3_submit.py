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

from pipeline.config import s3_locations

# Each variable the driver's lookup reads, with the storage key that gives its value in the config instead.
VARIABLE_KEYS = (
    ("AWS_ENDPOINT_URL_S3", "endpoint_url"),
    ("AWS_ENDPOINT_URL", "endpoint_url"),
    ("AWS_REGION", "region"),
    ("AWS_DEFAULT_REGION", "region"),
    ("AWS_CA_BUNDLE", "ca_bundle"),
    ("AWS_MAX_ATTEMPTS", "max_attempts"),
)


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
        if os.environ.get(name, "").strip() and name not in env_vars and key not in storage.model_fields_set
    ]


def left_behind_note(found: list[tuple[str, str]]) -> str:
    """One line for left_behind's answer (non-empty)."""
    names = ", ".join(name for name, _ in found)
    keys = ", ".join(dict.fromkeys(key for _, key in found))
    return (
        f"note: {names} set here {'is' if len(found) == 1 else 'are'} not sent with the job: its driver on the cluster "
        f"uses its own node's AWS settings; to use these values give {keys} (--set) or pass the variables in "
        "--runtime-env-json '{\"env_vars\": {...}}'"
    )
