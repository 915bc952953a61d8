"""Whether the connected Ray cluster can add nodes, and of which kinds, as the driver can read it from the GCS.

Ray publishes it in three places, read in this order (Ray 2.60):

1. The cluster config in the GCS (`ray._private.state.state.get_cluster_config()`, an
   `autoscaler_pb2.ClusterConfig`): the node groups with their resources and min/max counts, as reported by an
   autoscaler that reports it (`ReportClusterConfig`). Ray Data reads the same (`is_autoscaling_enabled`).
2. Autoscaler v2 (the GCS key `GCS_AUTOSCALER_V2_ENABLED_KEY` is `1`): `ray.autoscaler.v2.sdk.get_cluster_status`,
   whose nodes carry their node type name.
3. Autoscaler v1, the default (`ray start --head`, KubeRay's autoscaler sidecar): the monitor's status JSON in the
   internal KV (`__autoscaling_status`, what `ray status` prints), whose `autoscaler_report.node_type_mapping` gives
   each node's type.

A head started without an autoscaling config (`ray start --head`, a KubeRay RayCluster with
`enableInTreeAutoscaling: false`, `ray.cluster_utils.Cluster`) runs Ray's read-only provider: every node is its own
type `node_<node id>` (`ray.autoscaler._private.util.format_readonly_node_type`), and nothing can be added. An
autoscaler with real node types (KubeRay's worker groups, a cloud provider's `available_node_types`) may add nodes,
but v1 and v2 publish only the names of its types, not their resources: whether one of them could meet a request is
then unknown to the driver.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import ray

log = logging.getLogger(__name__)

FIXED = "fixed"  # cannot add a node
NODE_TYPES = "node_types"  # can add nodes of the types in `node_types`
AUTOSCALER = "autoscaler"  # an autoscaler runs with node types whose resources the driver cannot see
UNKNOWN = "unknown"  # nothing readable says either way


@dataclass(frozen=True)
class Scaling:
    """What the cluster can add.

    Args:
        kind: FIXED, NODE_TYPES, AUTOSCALER or UNKNOWN.
        source: where this was read, in words for a log line or an error (e.g. "Ray's read-only autoscaler
            provider: the head was started without an autoscaling config").
        node_types: (kind NODE_TYPES) {node group name: its resources, Ray resource dict} of the groups that can
            still grow (max_count above min_count, or -1 for no limit).
    """

    kind: Literal["fixed", "node_types", "autoscaler", "unknown"]
    source: str
    node_types: dict[str, dict[str, float]] = field(default_factory=dict)


def from_cluster_config(config: Any) -> Scaling | None:
    """Scaling of an `autoscaler_pb2.ClusterConfig` (None, or no node group: None, look elsewhere).

    A group can add nodes when its max_count is -1 (no limit) or above its min_count; groups of a fixed size and
    groups with max_count 0 cannot (as Ray Data's `is_autoscaling_enabled`).
    """
    if config is None or not config.node_group_configs:
        return None
    growing = {
        group.name or f"node group {i}": {name: float(amount) for name, amount in group.resources.items()}
        for i, group in enumerate(config.node_group_configs)
        if group.max_count != 0 and (group.max_count == -1 or group.max_count > group.min_count)
    }
    if not growing:
        return Scaling(FIXED, "the cluster config in the GCS has no node group that can grow (max_count)")
    return Scaling(NODE_TYPES, "the cluster config in the GCS (its node groups)", growing)


def from_node_type_names(names: list[str], node_ids: list[str], source: str) -> Scaling:
    """Scaling from the node type of each node an autoscaler reports: all read-only (`node_<node id>`) means no
    autoscaling config; any other name is a node type of an autoscaler that may add more; none: unknown."""
    from ray.autoscaler._private.util import format_readonly_node_type

    if not names:
        return Scaling(UNKNOWN, f"{source} lists no node yet")
    readonly = {format_readonly_node_type(node_id) for node_id in node_ids if node_id}
    anonymous = re.compile(re.escape(format_readonly_node_type("")) + "[0-9a-f]{56}")  # node_<a node id>
    real = sorted({name for name in names if name not in readonly and not anonymous.fullmatch(name)})
    if not real:
        return Scaling(
            FIXED, f"{source}: Ray's read-only provider (the head was started without an autoscaling config)"
        )
    return Scaling(AUTOSCALER, f"{source}: an autoscaler runs, node types up now {', '.join(real)}")


def from_v1_status(raw: bytes | str | None) -> Scaling:
    """Scaling from autoscaler v1's status JSON (the internal KV's `__autoscaling_status`; None when absent)."""
    if not raw:
        return Scaling(UNKNOWN, "no autoscaler status in the GCS (__autoscaling_status): no monitor runs yet")
    report = json.loads(raw).get("autoscaler_report") or {}
    mapping = report.get("node_type_mapping") or {}
    return from_node_type_names(list(mapping.values()), list(mapping), "the autoscaler status (__autoscaling_status)")


def current() -> Scaling:
    """Scaling of the cluster this driver is connected to (ray.init done). Never raises: what cannot be read is
    UNKNOWN, naming why."""
    try:
        from ray._private.state import state

        known = from_cluster_config(state.get_cluster_config())
        if known is not None:
            return known
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2(fetch_from_server=True):
            from ray.autoscaler.v2.sdk import get_cluster_status

            status = get_cluster_status(ray.get_runtime_context().gcs_address)
            nodes = [*status.active_nodes, *status.idle_nodes]
            return from_node_type_names(
                [n.ray_node_type_name for n in nodes], [n.node_id for n in nodes], "autoscaler v2's cluster status"
            )
        from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
        from ray.experimental.internal_kv import _internal_kv_get

        return from_v1_status(_internal_kv_get(DEBUG_AUTOSCALING_STATUS))
    except Exception as err:  # noqa: BLE001 -- a Ray internal that moved: the job goes on as before, saying so
        return Scaling(UNKNOWN, f"reading the autoscaler state failed ({type(err).__name__}: {err})")
