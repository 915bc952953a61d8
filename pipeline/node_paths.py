"""Local paths of a job's config checked from every node of a multi-node Ray cluster, before any work.

A job's read and write tasks run on every worker node and open a local path (`/data/corpus`, `file:///mnt/out`) on
that node's own file system. On one machine, or where every node mounts the path (NFS, a shared volume at the same
mount point), that is one place. Where it is not (a path only the head has, `/tmp` that each node has its own of),
reads fail on the nodes that lack the input, and writes land on each node's own disk: the driver then commits an
output that holds only the files written on its own node, with no error. So once Ray is up, one tiny task on each
other alive node (num_cpus 0, pinned to the node) looks at every local location of the config:

- an input (`input.uri`, a mining side's `uri` / `embeddings_uri`, ...) must exist there (for a glob: the folder
  above its first pattern);
- an output (`output.uri`, nested ones too) must be the driver's: the driver writes a hidden probe file into it
  (`.rayembed-node-check-<random>`, removed afterwards; listings skip hidden files) and the node must read the same
  random token back.

Nodes that join later (an autoscaler adding GPU workers) are not checked; a node that does not answer within
`timeout_s` (a runtime_env being installed there, the node going away) is named in one warning and skipped, after
an INFO line saying what the driver waits for once `NOTE_AFTER_S` have passed.

The check leaves the file system as it found it: the probe files and the output folders it had to create for them
are removed afterwards, whether the check passed or refused the job (a refused job left an empty output folder; one
that goes on makes its output folder when it writes).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pipeline.cluster_paths import config_uris, is_output
from pipeline.errors import UserError
from pipeline.storage import has_glob, missing_folders, remove_empty_folders

log = logging.getLogger(__name__)

PROBE_PREFIX = ".rayembed-node-check-"
# (Ray cluster's GCS address, is an input, path) that passed the check in this process: each is checked once per
# cluster; one that failed is checked again (a notebook's second run after a refusal)
CHECKED: set[tuple[str, bool, str]] = set()
TIMEOUT_S = 60.0  # a node's first task may wait for a worker process (and its runtime_env) to start there
NOTE_AFTER_S = 5.0  # nodes still silent then are named in an INFO line before the rest of TIMEOUT_S is waited


class NodePathError(UserError, RuntimeError):
    """A local path of the config is not the same place on every node; the message names the key, the path, the
    node and what to do."""


@dataclass(frozen=True)
class Place:
    """One local location to check: `key` (dotted config key), `uri` as written, `path` the absolute path a node
    looks at, `token` the probe's content for an output (None: an input, which must only exist)."""

    key: str
    uri: str
    path: str
    token: str | None = None


def local_places(cfg: BaseModel) -> list[Place]:
    """Every local (not s3://) location of `cfg`'s `uri` / `*_uri` keys, as absolute paths; an input given as a glob
    by the folder above its first pattern (unless the path exists as written: a literal `[`)."""
    places = []
    for key, uri in config_uris(cfg):
        if uri.startswith("s3://") or ("://" in uri and not uri.startswith("file://")):
            continue
        path = os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
        if not is_output(key) and not os.path.exists(path):
            parts = path.split(os.sep)
            cut = next((i for i, part in enumerate(parts) if has_glob(part)), len(parts))
            path = os.sep.join(parts[:cut]) or os.sep
        places.append(Place(key, uri, path))
    return places


def look(places: list[Place]) -> dict[int, str]:
    """On a node (a Ray task): {index in `places`: why} of the places that are not as the driver has them."""
    problems = {}
    for i, place in enumerate(places):
        if place.token is None:
            if not os.path.exists(place.path):
                problems[i] = "the path does not exist there"
            continue
        probe = os.path.join(place.path, PROBE_PREFIX + place.token)
        try:
            with open(probe) as f:
                same = f.read() == place.token
        except OSError as err:
            problems[i] = (
                f"a file the driver had just written there is missing ({type(err).__name__}): the node has a "
                "folder of its own at this path"
            )
            continue
        if not same:
            problems[i] = "a file the driver had just written there holds other bytes on that node"
    return problems


def node_words(node: dict[str, Any]) -> str:
    """`10.0.0.3 (node id 1a2b3c4d…)`: how Ray's dashboard and `ray status` name a node."""
    return f"{node.get('NodeManagerAddress', '?')} (node id {str(node.get('NodeID', '?'))[:12]})"


def nodes_that_run_tasks(nodes: list[dict[str, Any]], here: str) -> list[dict[str, Any]]:
    """The alive nodes of `nodes` (ray.nodes()) other than `here` that have a CPU: every read and write task and every
    actor of the jobs asks for one, so a node without (KubeRay's head at `num-cpus: 0`, which need not mount the
    data) reads and writes nothing, and was refused for a path it never uses."""
    return [
        n
        for n in nodes
        if n.get("Alive") and n.get("NodeID") != here and float((n.get("Resources") or {}).get("CPU", 0)) > 0
    ]


def check_nodes_see_paths(cfg: BaseModel, timeout_s: float = TIMEOUT_S) -> None:
    """Checks that every other alive node of the connected Ray cluster sees `cfg`'s local locations as this
    driver does (module docstring). Nothing to do on one node or without local locations.

    Raises:
        NodePathError: a node lacks an input's path, or has an output's path as a folder of its own; the message
            names the key, the path, every such node, and says to use a shared file system or s3://.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    context = ray.get_runtime_context()
    here, cluster = context.get_node_id(), context.gcs_address
    others = nodes_that_run_tasks(ray.nodes(), here)
    places = [p for p in local_places(cfg) if (cluster, not is_output(p.key), p.path) not in CHECKED]
    if not others or not places:
        return
    probes: list[str] = []
    created: list[str] = []  # folders made for the probes, deepest first
    try:
        for i, place in enumerate(places):
            if is_output(place.key):
                token = uuid.uuid4().hex
                probe = os.path.join(place.path, PROBE_PREFIX + token)
                try:
                    created[:0] = missing_folders(place.path)
                    os.makedirs(place.path, exist_ok=True)
                    with open(probe, "w") as f:
                        probes.append(probe)
                        f.write(token)
                except OSError as err:
                    raise NodePathError(
                        f"{place.key} {place.uri!r}: cannot write into it on this driver's node to check that every "
                        f"node of the Ray cluster sees it as one place ({type(err).__name__}: {err}); the job writes "
                        "its output there: give a folder this user can create and write (not a file)"
                    ) from err
                places[i] = Place(place.key, place.uri, place.path, token)
        task = ray.remote(num_cpus=0, max_retries=0)(look)
        refs = {
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(places): n
            for n in others
        }
        ready, waiting = wait_for_nodes(refs, timeout_s, [p.key for p in places])
        found: dict[int, list[str]] = {}
        for ref in ready:
            try:
                problems = ray.get(ref)
            except Exception as err:  # noqa: BLE001 -- a node that went away meanwhile: nothing to say about it
                log.warning("could not check the local paths on node %s: %s", node_words(refs[ref]), err)
                continue
            for i, why in problems.items():
                found.setdefault(i, []).append(f"node {node_words(refs[ref])}: {why}")
        for ref in waiting:
            ray.cancel(ref, force=True)
            log.warning(
                "node %s did not answer within %g s whether it sees the job's local paths (%s); not checked there",
                node_words(refs[ref]),
                timeout_s,
                ", ".join(p.key for p in places),
            )
    finally:
        for probe in probes:
            try:
                os.remove(probe)
            except OSError:
                pass
        remove_empty_folders(created)  # only while empty: nothing else of the job has written there yet
    if found:
        host = ray.util.get_node_ip_address()
        raise NodePathError("; ".join(message(places[i], where, host) for i, where in sorted(found.items())))
    # a nested step's init_ray (the cluster job's embed step) checks these no more
    CHECKED.update((cluster, not is_output(p.key), p.path) for p in places)


def wait_for_nodes(refs: dict[Any, dict[str, Any]], timeout_s: float, keys: list[str]) -> tuple[list, list]:
    """`ray.wait` for every ref of `refs` ({ObjectRef: node}) up to `timeout_s` in all: (ready, still waiting). If
    some are still waiting after NOTE_AFTER_S, one INFO line names those nodes and how long more the driver waits
    (their first task may be starting a worker process or installing a runtime_env), so the wait is not silent."""
    import ray

    first = min(NOTE_AFTER_S, timeout_s)
    ready, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=first)
    if waiting and timeout_s > first:
        log.info(
            "waiting up to %g s more for %d node(s) to answer whether they see the job's local paths (%s): %s; a "
            "node's first task may be starting a worker process or installing the job's runtime_env there",
            timeout_s - first,
            len(waiting),
            ", ".join(keys),
            ", ".join(node_words(refs[ref]) for ref in waiting),
        )
        more, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=timeout_s - first)
        ready = [*ready, *more]
    return ready, waiting


def message(place: Place, nodes: list[str], host: str) -> str:
    """The error of one place, with the nodes that do not see it as the driver does; `host`: the driver's node."""
    if place.token is None:
        what = (
            f"{place.key} {place.uri!r} is a local path that this driver's node ({host}) has and other nodes of the "
            f"Ray cluster do not ({'; '.join(nodes)}); the job's read tasks run on every node and read it there"
        )
    else:
        what = (
            f"{place.key} {place.uri!r} is a local path that is not one shared place on every node of the Ray "
            f"cluster ({'; '.join(nodes)}): each node's write tasks would write their part of the output to that "
            f"node's own disk, and the output here would miss it"
        )
    return (
        f"{what}. Give a path on a file system that every node mounts at the same place (NFS, a shared volume), or "
        f"object storage: --set {place.key.split('[')[0]}=s3://bucket/prefix"
    )
