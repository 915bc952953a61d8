"""A write task's check that the local output folder it writes into is the driver's, on every node it runs on.

On a multi-node Ray cluster a local `output.uri` must be one shared place (NFS, a shared volume at the same mount
point). pipeline.node_paths checks the nodes that are alive when the job starts; a node that joins later (an
autoscaler adding workers, KubeRay replacing a lost pod) or whose mount of the shared file system is missing would
write its part files to a folder of its own at that path, and the driver would commit an output that misses them,
with no error. So before a write task of a local output writes, it looks for the run's lease file (`<out>/_lease.json`,
pipeline.lease: written by the driver when the run starts and held until after its commit) and the run's token in
it. Once per worker process and run: a stat and a read of a small file.

A shared file system's client may serve a folder's listing from its cache for a while (NFS: `acdirmax`, up to 60 s),
so a lease not found is looked for again, listing its folder each time (which revalidates that cache), for up to
WAIT_S before the task fails. A lease file being renewed (truncated and rewritten in place) may read as partial
JSON: the file is there, which is what the check needs.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import pyarrow.fs as pafs

from pipeline.errors import UserError
from pipeline.lease import held_for
from pipeline.storage import Location

P = ParamSpec("P")
R = TypeVar("R")

WAIT_S = 15.0
# (lease path, token) seen by this worker process
SEEN: set[tuple[str, str]] = set()


class OutputNotSharedError(UserError, RuntimeError):
    """A write task's node does not see the run's lease in the local output folder: the folder there is not the
    driver's. The message names the folder, the node and what to do."""


@dataclass(frozen=True)
class RunLease:
    """What a write task checks: the lease file's absolute local path and the run's token in it, and how long a node
    looks again for a lease it does not see (seconds; WAIT_S unless a test sets it, which reaches remote tasks)."""

    path: str
    token: str
    wait_s: float = WAIT_S


def run_lease(out: Location) -> RunLease | None:
    """On the driver: what the write tasks of local output `out` check, from the lease this process holds over it
    (None: `out` is on object storage, or this process holds no lease over it)."""
    lease = held_for(out)
    if lease is None or not isinstance(out.fs, pafs.LocalFileSystem):
        return None
    return RunLease(os.path.abspath(lease.target.path), lease.token)


def mismatch(lease: RunLease) -> str | None:
    """Why this node's copy of `lease.path` is not the run's (None: it is, or it is being rewritten)."""
    try:
        with open(lease.path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return f"the run's lease file {lease.path}, written there by the driver when the run started, is missing"
    except OSError as err:
        return f"the run's lease file {lease.path} cannot be read there ({type(err).__name__}: {err})"
    try:
        held = json.loads(data)
    except ValueError:
        return None  # its holder is rewriting it (a renewal): the file is there
    if not isinstance(held, dict) or held.get("token") != lease.token:
        run = held.get("run_id", "?") if isinstance(held, dict) else "?"
        return f"the lease file {lease.path} there is another run's (run {run}), not this run's"
    return None


def check_output_is_the_drivers(lease: RunLease | None) -> None:
    """Raise OutputNotSharedError unless this node sees `lease` as the driver wrote it (module docstring). None: an
    output on object storage (one place for every node), or no lease held (a caller outside a job): nothing to check.

    Raises:
        OutputNotSharedError: after the lease's wait_s of looking again, the lease is missing or another's.
    """
    if lease is None or (lease.path, lease.token) in SEEN:
        return
    deadline = time.monotonic() + lease.wait_s
    while (why := mismatch(lease)) is not None and time.monotonic() < deadline:
        time.sleep(1.0)
        try:
            os.listdir(os.path.dirname(lease.path))  # revalidates a shared file system's cached listing
        except OSError:
            pass
    if why is None:
        SEEN.add((lease.path, lease.token))
        return
    folder = os.path.dirname(lease.path)
    raise OutputNotSharedError(
        f"the output folder {folder} is not one shared place on every node of the Ray cluster: on node "
        f"{node_address()} {why}. This node has a folder of its own at that path (a node that joined after the "
        "job's start-up check, or one without the shared file system's mount), so the part files written there "
        "would be missing from the output. Give a path on a file system that every node mounts at the same place "
        "(NFS, a shared volume), or object storage: --set output.uri=s3://bucket/prefix"
    )


def checking_first(fn: Callable[P, R], lease: RunLease | None) -> Callable[P, R]:
    """`fn` run after check_output_is_the_drivers(lease) on the node it runs on: for the steps of a job whose every
    task reads or writes files under its output (the mining job's work files, pipeline.bitext.executor). None: `fn`.

    Raises (the returned function):
        OutputNotSharedError: as check_output_is_the_drivers, before `fn` runs.
    """
    if lease is None:
        return fn

    @functools.wraps(fn)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        check_output_is_the_drivers(lease)
        return fn(*args, **kwargs)

    return checked


def node_address() -> str:
    """This node's IP as Ray names it (ray.util.get_node_ip_address: it also answers outside a Ray worker)."""
    import ray.util

    return ray.util.get_node_ip_address()
