"""What a Ray job's own driver holds on its node: `ray job submit --entrypoint-num-gpus 1` (or `-num-cpus`,
`-memory`, `-resources`; `rayembed submit` takes them too, a RayJob's `entrypointNumGpus`, ...).

Ray's Jobs API reserves these for the job's supervisor actor, the driver's parent, for the whole run. They are part
of the node's totals that `ray.nodes()` reports, yet no actor of the job can have them: a driver holding the only GPU
of a cluster left its GPU embedding actors waiting with no word (Ray Data gives up after 30 minutes without
progress). The jobs' checks of what the nodes can take (pipeline.stages: cluster_refusal, pool_capacity) count the
nodes without what the driver holds.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from pipeline.cluster_paths import JOB_CONFIG_ENV

log = logging.getLogger(__name__)

SUPERVISOR_NAME = "_ray_internal_job_actor_{}"  # ray.dashboard.modules.job.common.JOB_ACTOR_NAME_TEMPLATE


@dataclass(frozen=True)
class Reservation:
    """`resources` (Ray resource dict, amounts above 0) that the job's supervisor holds on the node `node_id`."""

    node_id: str
    resources: dict[str, float]

    def words(self) -> str:
        """`1 GPU, 0.5 CPU`, for a message."""
        return ", ".join(f"{amount:g} {name}" for name, amount in sorted(self.resources.items()))


def submission_id() -> str | None:
    """The Jobs API submission id of this driver's job (its job config's metadata), else None."""
    try:
        config = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}")
    except ValueError:
        return None
    return ((config or {}).get("metadata") or {}).get("job_submission_id")


def driver_reservation() -> Reservation | None:
    """What this job's driver holds (its supervisor actor's required resources), read from Ray's state API; None
    outside a Jobs API job, when it holds nothing, or when the state API does not answer (then nothing is taken off,
    as before)."""
    sid = submission_id()
    if not sid:
        return None
    try:
        from ray.util.state import list_actors

        found = list_actors(
            filters=[("name", "=", SUPERVISOR_NAME.format(sid)), ("state", "=", "ALIVE")],
            detail=True,
            raise_on_missing_output=False,
        )
    except Exception as err:  # noqa: BLE001 -- no dashboard (state API): the checks count whole nodes, as before
        log.debug("could not read what this job's driver holds: %s", err)
        return None
    for actor in found:
        held = {k: float(v) for k, v in (actor.required_resources or {}).items() if v and float(v) > 0}
        if held and actor.node_id:
            return Reservation(actor.node_id, held)
    return None


def without_reservation(nodes: list[tuple[str, dict[str, float]]], held: Reservation | None) -> list[dict[str, float]]:
    """The resource dicts of `nodes` ((node id, resources) pairs), the driver's node less what it holds."""
    out = []
    for node_id, resources in nodes:
        if held is not None and node_id == held.node_id:
            resources = {k: max(v - held.resources.get(k, 0.0), 0.0) for k, v in resources.items()}
        out.append(resources)
    return out
