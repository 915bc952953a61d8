"""A request no node of a connected cluster meets: refused at once when the cluster cannot add such a node, waited
for (and said so) when its autoscaler can or may. Ray's own state objects: the GCS cluster config
(autoscaler_pb2.ClusterConfig), autoscaler v1's status JSON (its AutoscalerSummary), autoscaler v2's NodeInfo.

On a real cluster: tests/test_multinode.py (ray.cluster_utils, no autoscaler) and tests/test_ray_jobs_api.py (Ray's
autoscaler with the fake multi-node provider)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from ray.autoscaler._private.autoscaler import AutoscalerSummary
from ray.autoscaler._private.util import format_readonly_node_type
from ray.autoscaler.v2.schema import NodeInfo
from ray.core.generated.autoscaler_pb2 import ClusterConfig, NodeGroupConfig

from pipeline.cluster_scaling import (
    AUTOSCALER,
    FIXED,
    NODE_TYPES,
    UNKNOWN,
    Scaling,
    from_cluster_config,
    from_node_type_names,
    from_v1_status,
)
from pipeline.config import ComputeConfig
from pipeline.stages import cluster_refusal


@pytest.fixture
def ray_data_context():
    """This process's DataContext at Ray's defaults, restored after the test."""
    from ray.data import DataContext

    previous = DataContext.get_current()
    DataContext._set_current(DataContext())
    yield DataContext.get_current()
    DataContext._set_current(previous)


HEAD, WORKER = "a1" * 28, "b2" * 28  # node ids (56 hex digits)
CPU_NODES = [{"CPU": 8.0, "memory": 3e10}, {"CPU": 8.0, "memory": 3e10}]
GPU_GROUP = NodeGroupConfig(name="gpu-group", resources={"CPU": 8, "GPU": 1, "memory": 30 * 2**30}, max_count=4)


def v1_status(mapping: dict[str, str]) -> str:
    """The monitor's `__autoscaling_status` JSON as autoscaler v1 writes it (monitor.py: asdict(summary))."""
    summary = AutoscalerSummary(
        active_nodes={t: 1 for t in mapping.values()},
        idle_nodes=None,
        pending_nodes=[],
        pending_launches={},
        failed_nodes=[],
        node_type_mapping=mapping,
        legacy=True,
    )
    return json.dumps({"time": 0.0, "autoscaler_report": dataclasses.asdict(summary), "load_metrics_report": {}})


@pytest.mark.parametrize(
    "status, kind",
    [
        # `ray start --head` without --autoscaling-config, KubeRay without enableInTreeAutoscaling, cluster_utils
        (v1_status({HEAD: format_readonly_node_type(HEAD), WORKER: format_readonly_node_type(WORKER)}), FIXED),
        # the keys are node IPs for some providers: the anonymous type still names a node id
        (v1_status({"10.0.0.1": format_readonly_node_type(HEAD)}), FIXED),
        # KubeRay's autoscaler sidecar, a cloud provider's available_node_types
        (v1_status({"10.0.0.1": "headgroup", "10.0.0.2": "gpu-group"}), AUTOSCALER),
        (v1_status({}), UNKNOWN),  # no node reported yet
        (json.dumps({"time": 0.0, "load_metrics_report": {}}), UNKNOWN),  # a monitor without an autoscaler report
        (None, UNKNOWN),  # no monitor has written its status
    ],
)
def test_autoscaler_v1_status_tells_a_fixed_cluster_from_an_autoscaling_one(status, kind):
    assert from_v1_status(status).kind == kind


def test_autoscaler_v2_node_types_tell_a_fixed_cluster_from_an_autoscaling_one():
    def node(node_id: str, node_type: str) -> NodeInfo:
        return NodeInfo(instance_type_name="", ray_node_type_name=node_type, instance_id="", ip_address="",
                        node_status="RUNNING", node_id=node_id)  # fmt: skip

    readonly = [node(HEAD, format_readonly_node_type(HEAD)), node(WORKER, format_readonly_node_type(WORKER))]
    typed = [node(HEAD, "headgroup"), node(WORKER, "gpu-group")]
    for nodes, kind in ((readonly, FIXED), (typed, AUTOSCALER), ([], UNKNOWN)):
        names, ids = [n.ray_node_type_name for n in nodes], [n.node_id for n in nodes]
        assert from_node_type_names(names, ids, "v2").kind == kind


def test_the_gcs_cluster_config_gives_the_node_types_that_can_grow():
    fixed_group = NodeGroupConfig(name="cpu-group", resources={"CPU": 8}, min_count=2, max_count=2)
    off = NodeGroupConfig(name="off", resources={"CPU": 64}, max_count=0)
    unlimited = NodeGroupConfig(name="spot", resources={"CPU": 4}, max_count=-1)
    assert from_cluster_config(None) is None and from_cluster_config(ClusterConfig()) is None  # nothing reported
    assert from_cluster_config(ClusterConfig(node_group_configs=[fixed_group, off])).kind == FIXED
    scaling = from_cluster_config(ClusterConfig(node_group_configs=[fixed_group, GPU_GROUP, off, unlimited]))
    assert scaling.kind == NODE_TYPES
    assert scaling.node_types == {"gpu-group": {"CPU": 8.0, "GPU": 1.0, "memory": 30.0 * 2**30}, "spot": {"CPU": 4.0}}


FIXED_CLUSTER = Scaling(FIXED, "the autoscaler status: Ray's read-only provider")
CAN_ADD_GPUS = from_cluster_config(ClusterConfig(node_group_configs=[GPU_GROUP]))
MAY_ADD = Scaling(AUTOSCALER, "the autoscaler status: an autoscaler runs, node types up now gpu-group")


@pytest.mark.parametrize(
    "compute, key",
    [
        ({"accelerator_type": "H100"}, "compute.accelerator_type: H100"),
        ({"resources": {"x": 1}}, "compute.resources.x: 1"),
        ({"gpus_per_actor": 1}, "compute.gpus_per_actor: 1"),
        ({"cpus_per_actor": 64}, "compute.cpus_per_actor: 64"),
        ({"cpus_per_tokenizer": 9}, "the tokenizer actors ask for compute.cpus_per_tokenizer: 9"),
        ({"cpus_per_io_task": 16}, "the read and write tasks ask for compute.cpus_per_io_task: 16"),
    ],
)
def test_a_request_no_node_meets_on_a_fixed_cluster_is_refused_naming_the_key_and_the_nodes(compute, key):
    reason, note = cluster_refusal(ComputeConfig(**compute), CPU_NODES, FIXED_CLUSTER)
    assert key in reason and "(8 CPUs and 0 GPUs; 8 CPUs and 0 GPUs)" in reason, reason
    assert "cannot add a node (the autoscaler status: Ray's read-only provider)" in reason and note == ""


def test_an_autoscaler_whose_node_types_meet_the_request_is_waited_for_and_the_others_are_named():
    reason, note = cluster_refusal(ComputeConfig(gpus_per_actor=1), CPU_NODES, CAN_ADD_GPUS)
    assert reason is None and "waiting for the autoscaler to add a node of type gpu-group" in note
    for compute in ({"gpus_per_actor": 2}, {"accelerator_type": "H100"}, {"cpus_per_actor": 64}):
        reason, note = cluster_refusal(ComputeConfig(**compute), CPU_NODES, CAN_ADD_GPUS)
        assert "no node type its autoscaler can add has (gpu-group: 8 CPUs and 1 GPUs" in reason, compute
    # the embedding actors can be waited for, the tokenizer actors cannot: refused
    reason, _ = cluster_refusal(ComputeConfig(gpus_per_actor=1, cpus_per_tokenizer=16), CPU_NODES, CAN_ADD_GPUS)
    assert reason.startswith("the tokenizer actors ask for compute.cpus_per_tokenizer: 16, which no node"), reason


def test_when_the_cluster_may_add_nodes_the_job_waits_saying_how_long_and_which_key(ray_data_context):
    for scaling in (MAY_ADD, Scaling(UNKNOWN, "no autoscaler status in the GCS")):
        reason, note = cluster_refusal(ComputeConfig(accelerator_type="H100"), CPU_NODES, scaling)
        assert reason is None
        assert "Ray Data waits up to 1800 s without progress (DataContext.execution_no_progress_timeout_s)" in note
        assert "change compute.cpus_per_actor, compute.gpus_per_actor, compute.accelerator_type" in note
        assert scaling.source in note


def test_the_wait_named_is_ray_datas(ray_data_context):
    ray_data_context.wait_for_min_actors_s = 600
    _, note = cluster_refusal(ComputeConfig(accelerator_type="H100"), CPU_NODES, MAY_ADD)
    assert "Ray Data waits up to 600 s (DataContext.wait_for_min_actors_s)" in note
    ray_data_context.execution_no_progress_timeout_s = -1
    _, note = cluster_refusal(ComputeConfig(cpus_per_io_task=16), CPU_NODES, MAY_ADD)
    assert "the read and write tasks ask for" in note and "Ray Data waits without a limit" in note, note


def test_a_request_some_node_meets_needs_no_look_at_the_autoscaler():
    nodes = [*CPU_NODES, {"CPU": 8.0, "GPU": 1.0, "accelerator_type:H100": 1.0}]
    assert cluster_refusal(ComputeConfig(accelerator_type="H100"), nodes, FIXED_CLUSTER) == (None, "")


class Clock:
    """A clock the wait's sleeps advance, and the nodes alive at each ask (the last list stays)."""

    def __init__(self, node_lists: list[list[dict[str, float]]]):
        self.now, self.asks, self.node_lists = 0.0, 0, node_lists

    def alive_nodes(self) -> list[dict[str, float]]:
        self.asks += 1
        return self.node_lists[min(self.asks, len(self.node_lists)) - 1]

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_fixed_cluster_is_given_time_for_a_node_that_meets_the_request_to_join(caplog):
    """A fixed cluster whose H100 worker is being replaced (a KubeRay pod recreated) or still joining: the job waits
    up to compute.wait_for_nodes_s, asking the cluster again, and goes on when the node is up; none joins: refused
    after the wait, saying so. It was refused the moment the job started."""
    from pipeline.stages import cluster_refusal_after_waiting

    h100 = {"CPU": 8.0, "GPU": 1.0, "accelerator_type:H100": 1.0}
    compute = ComputeConfig(accelerator_type="H100", wait_for_nodes_s=60)
    clock = Clock([CPU_NODES, CPU_NODES, [*CPU_NODES, h100]])
    wait = {"poll_s": 5, "clock": lambda: clock.now, "sleep": clock.sleep, "scaling": FIXED_CLUSTER}
    with caplog.at_level("WARNING", logger="pipeline.stages"):
        assert cluster_refusal_after_waiting(compute, clock.alive_nodes, **wait) == (None, "")
    assert clock.now == 10 and clock.asks == 3
    assert "Waiting up to 60s for such a node to join" in caplog.text and "compute.wait_for_nodes_s" in caplog.text

    clock = Clock([CPU_NODES])
    wait.update(clock=lambda: clock.now, sleep=clock.sleep)
    reason, _ = cluster_refusal_after_waiting(compute, clock.alive_nodes, **wait)
    assert clock.now == 60 and "compute.accelerator_type: H100, which no node of the cluster has" in reason
    assert reason.endswith("(no such node joined in the 60 s compute.wait_for_nodes_s waits)"), reason
    clock = Clock([CPU_NODES])
    wait.update(clock=lambda: clock.now, sleep=clock.sleep)
    reason, _ = cluster_refusal_after_waiting(
        compute.model_copy(update={"wait_for_nodes_s": 0}), clock.alive_nodes, **wait
    )
    assert clock.now == 0 and clock.asks == 1 and "cannot add a node" in reason
