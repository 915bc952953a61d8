"""Local paths in a job's config when the job runs on a Ray cluster from an uploaded working directory.

`rayembed submit` and `ray job submit --working-dir .` copy the current directory to a temporary directory on the
cluster (Ray's runtime_env `working_dir`) and run the job there. A relative local path then means a place inside that
copy: what the job writes there is spread over the nodes that ran the write tasks and deleted with the copy, and an
input that was not uploaded (below an excluded directory, outside the current one) is not there. Light on purpose
(no Ray, no torch): the CLI checks a config before it uploads anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# Set by Ray's job supervisor in the environment of a submitted job's driver (ray._private.runtime_env.constants).
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def where(key: str) -> str:
    """The fix, in words."""
    if key.endswith("name_or_path"):
        return "use a hub id, or an absolute path that exists on every node (in the image or a mounted volume)"
    return (
        "use object storage (s3://bucket/prefix) or an absolute path on a file system that every node mounts, "
        f"e.g. --set {key.split('[')[0]}=s3://bucket/prefix"
    )


def config_strings(cfg: BaseModel, wanted: Callable[[str], bool]) -> list[tuple[str, str]]:
    """(dotted key, value) of every string of a loaded config whose key name is `wanted`, nested sections included;
    each string of a list (`input.uri: [a, b]`) as `key[i]`."""

    def walk(value: Any, path: str) -> list[tuple[str, str]]:
        if not isinstance(value, dict):
            return []
        found = []
        for k, v in value.items():
            if wanted(k) and isinstance(v, str):
                found.append((f"{path}{k}", v))
            elif wanted(k) and isinstance(v, list):
                found += [(f"{path}{k}[{i}]", item) for i, item in enumerate(v) if isinstance(item, str)]
        return found + [u for k, v in value.items() for u in walk(v, f"{path}{k}.")]

    return walk(cfg.model_dump(), "")


def config_uris(cfg: BaseModel) -> list[tuple[str, str]]:
    """(dotted key, value) of every `uri` / `*_uri` string of a loaded config, nested sections included."""
    return config_strings(cfg, lambda k: k == "uri" or k.endswith("_uri"))


def model_dirs(cfg: BaseModel, root: Path) -> list[tuple[str, str]]:
    """(dotted key, value) of every `model.name_or_path` that names a local directory below `root` (not a hub id)."""
    names = config_strings(cfg, lambda k: k == "name_or_path")
    return [(k, v) for k, v in names if is_relative_local(v) and (root / v).is_dir()]


def is_relative_local(uri: str) -> bool:
    """A local path relative to the working directory (no scheme, not absolute, not `~/...`)."""
    return "://" not in uri and not os.path.isabs(os.path.expanduser(uri))


def is_output(key: str) -> bool:
    return key == "output.uri" or key.endswith(".output.uri")


def in_uploaded_working_dir() -> bool:
    """True in the driver of a Ray job submitted with a `working_dir` (the Jobs API sets its job config)."""
    try:
        job = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}")
    except ValueError:
        return False
    return bool(((job or {}).get("runtime_env") or {}).get("working_dir"))


def relative_outputs(cfg: BaseModel) -> list[str]:
    """One message per output URI of `cfg` that is a relative local path (lost when the job runs on a cluster)."""
    return [
        f"{key} {uri!r} is a path relative to the job's working directory, which Ray copies to a temporary "
        "directory on the cluster: what the job writes there is spread over the nodes that run its write tasks and "
        f"deleted with that copy; {where(key)}"
        for key, uri in config_uris(cfg)
        if is_output(key) and is_relative_local(uri)
    ]


def missing_uploads(cfg: BaseModel, root: Path, excludes: list[str]) -> list[str]:
    """One message per input URI of `cfg` that is a relative local path the upload of `root` does not carry: outside
    `root`, or below one of the `excludes` directories (`name/` entries), or not there at all."""
    problems = []
    skipped = [e.strip("/") for e in excludes if e.endswith("/") and "*" not in e]
    for key, uri in config_uris(cfg) + model_dirs(cfg, root):
        if is_output(key) or not is_relative_local(uri):
            continue
        # normpath, not resolve: the upload takes the link `data -> /elsewhere` under its name
        path = Path(os.path.normpath(root / os.path.expanduser(uri)))
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            problems.append(f"{key} {uri!r} is outside {root}, the working directory that is uploaded; {where(key)}")
            continue
        excluded = next((p for p in parts if p in skipped), None)
        if excluded is not None:
            problems.append(f"{key} {uri!r} is below {excluded}/, which is not uploaded to the cluster; {where(key)}")
        elif not path.exists() and not any(c in uri for c in "*?["):
            problems.append(
                f"{key} {uri!r} does not exist in {root}, the working directory that is uploaded; {where(key)}"
            )
    return problems


def cluster_path_errors(cfg: BaseModel, root: Path | None = None, excludes: list[str] | None = None) -> list[str]:
    """What keeps `cfg` from running on a cluster from an uploaded working directory: relative local outputs, and
    (with `root`, the directory about to be uploaded) relative local inputs the upload does not carry."""
    errors = relative_outputs(cfg)
    if root is not None:
        errors += missing_uploads(cfg, root, excludes or [])
    return errors


def local_outputs_on_a_cluster(cfg: BaseModel, ray_address: str | None) -> list[str]:
    """One warning per local output URI of `cfg` when the job connects to a Ray cluster (`ray_address`, or
    RAY_ADDRESS, which a submitted job's driver always has): the write tasks run on every worker node and write to
    that node's disk, so unless the path is on a file system every node mounts, the files end up spread over the
    nodes. Not an error: a shared mount (NFS, a single-machine cluster) is a valid place."""
    address = ray_address or os.environ.get("RAY_ADDRESS")
    if not address or address == "local":
        return []
    return [
        f"{key} {uri!r} is a local path and the job runs on the Ray cluster at {address}: each node's write tasks "
        f"write to that node's own disk. Unless every node mounts it as one file system, the output is spread over "
        f"the nodes; {where(key)}"
        for key, uri in config_uris(cfg)
        if is_output(key) and "://" not in uri
    ]


def in_ray_job() -> bool:
    """True in the driver of a job submitted through Ray's Jobs API (`ray job submit`, `rayembed submit`, a KubeRay
    RayJob): Ray's job supervisor sets its job config in the driver's environment."""
    return JOB_CONFIG_ENV in os.environ


def missing_config_hint(path: str | os.PathLike) -> str:
    """Words for a config file that does not exist, when the job runs as a Ray job: where a relative path was looked
    for, and the path relative to the uploaded working directory when a tail of `path` exists there ("" outside a
    Ray job, or for an absolute path that is not on this node)."""
    if not in_ray_job():
        return ""
    cwd = os.getcwd()
    if os.path.isabs(path):
        return (
            f" on this node ({os.uname().nodename}), where the Ray job's driver runs: the file must be there (in the "
            "image, or mounted into the head pod: infra/README.md step 4)"
        )
    if not in_uploaded_working_dir():
        return (
            f": a relative path is read from the Ray job's working directory {cwd} on the driver's node, and the job "
            "has no uploaded working_dir; give the path the file has there (a ConfigMap mounted at /etc/rayembed), or "
            "submit with --working-dir . (rayembed submit does) from the directory that holds it"
        )
    parts = Path(path).parts
    tails = [Path(*parts[i:]) for i in range(1, len(parts))]
    found = next((str(t) for t in tails if (Path(cwd) / t).is_file()), None)
    words = (
        f": a relative path is read from the job's working directory, Ray's copy of the directory uploaded as "
        f"--working-dir ({cwd}), not from where the job was submitted"
    )
    return words + (f"; relative to the uploaded directory it is {found}" if found else "")
