"""Multi-node Ray clusters on this machine for tests: Ray's own `ray.cluster_utils.Cluster` (every node a raylet in
its own processes) and a head started with Ray's fake multi-node autoscaler (the real autoscaler, launching
worker nodes as local raylets).

Both stay out of other Ray instances' way on a shared machine: every port is picked free, and the session lives
under a temp dir of its own (RAY_TMPDIR while the cluster runs): `Cluster` writes the address file
`ray_current_cluster` that a bare `ray.init()` elsewhere on the machine would otherwise connect to.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import free_port

RAY = str(Path(sys.executable).parent / "ray")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def node_ports() -> dict[str, int]:
    """Every port a node listens on, free ones: other Ray instances on the machine hold the defaults."""
    names = ("dashboard_agent_listen_port", "metrics_agent_port", "metrics_export_port", "runtime_env_agent_port")
    return {name: free_port() for name in (*names, "object_manager_port")}


@contextlib.contextmanager
def private_ray_tmpdir() -> Iterator[str]:
    """A short temp dir (Unix socket paths have a length limit) set as RAY_TMPDIR for the cluster's lifetime."""
    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    (Path(tmp) / "ray").mkdir()
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    try:
        yield tmp
    finally:
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def local_cluster(workers: list[dict]) -> Iterator[tuple[object, str]]:
    """A `ray.cluster_utils.Cluster`: a head that runs drivers only (num-cpus 0, as in infra/k8s) with the dashboard
    (Jobs API), plus one worker node per dict of `add_node` arguments. Yields (cluster, dashboard URL).

    The GCS health-checks its raylets every second instead of Ray's 3 s: a node killed without notice (a reclaimed
    spot VM, `remove_node(allow_graceful=False)`) is declared dead after the same 5 failed checks, ~5 s instead of
    ~15 s, while a live node on a loaded machine keeps Ray's 10 s to answer each check."""
    from ray.cluster_utils import Cluster

    with private_ray_tmpdir() as tmp:
        dashboard = free_port()
        head = {
            "num_cpus": 0,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard,
            "_system_config": {"health_check_period_ms": 1000},
        }
        cluster = Cluster(initialize_head=True, head_node_args={**head, "temp_dir": f"{tmp}/ray", **node_ports()})
        try:
            for args in workers:
                cluster.add_node(**args, **node_ports())
            cluster.wait_for_nodes()
            yield cluster, f"http://127.0.0.1:{dashboard}"
        finally:
            cluster.shutdown()


@contextlib.contextmanager
def node_with_a_folder_of_its_own(gcs_address: str, folder: Path, cpus: int = 1) -> Iterator[subprocess.Popen]:
    """A worker node (`ray start --address`, its raylet and workers in a mount namespace of their own) that has an
    empty tmpfs of its own at `folder`: a path that differs between nodes, as `/tmp` does on two machines or a
    disk only the head has. Needs root and util-linux's `unshare` (the test skips without them). Yields the
    `ray start --block` process; the node is SIGKILLed with its process group at the end."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        import pytest

        pytest.skip("a node with a folder of its own needs root and unshare (a mount namespace)")
    folder.mkdir(parents=True, exist_ok=True)
    ports = node_ports()
    start = [
        RAY, "start", "--block", f"--address={gcs_address}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
        "--num-gpus=0", f"--object-store-memory={80 * 2**20}", "--disable-usage-stats",
        f"--dashboard-agent-listen-port={ports['dashboard_agent_listen_port']}",
        f"--dashboard-agent-grpc-port={ports['metrics_agent_port']}",
        f"--metrics-export-port={ports['metrics_export_port']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent_port']}",
        f"--object-manager-port={ports['object_manager_port']}",
    ]  # fmt: skip
    script = 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"'
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(folder), *start]
    node = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield node
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)


def fake_autoscaling_config(head_cpus: float, worker_types: dict, gcs_port: int, idle_minutes: float = 1.0) -> dict:
    """An autoscaler config for Ray's `fake_multinode` provider (its example.yaml, which the wheel does not ship).

    `gcs_address` points the provider's new nodes at this head's port instead of the default 6379.
    """
    return {
        "cluster_name": f"rayembed-test-{gcs_port}",
        "max_workers": sum(t["max_workers"] for t in worker_types.values()),
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
            **worker_types,
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_minutes,
        "auth": {},
        "docker": {},
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands")},
        **{key: [] for key in ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


@contextlib.contextmanager
def autoscaling_cluster(worker_types: dict, head_cpus: float = 1, idle_minutes: float = 1.0) -> Iterator[str]:
    """`ray start --head` with Ray's fake multi-node autoscaler, as `ray.cluster_utils.AutoscalingCluster` does,
    minus its `ray stop --force` (which would stop every Ray on the machine): its own process group, ports and temp
    dir, so teardown stops exactly this cluster and the nodes its autoscaler started. Yields the dashboard URL once
    its Jobs API answers."""
    with private_ray_tmpdir() as tmp:
        port, dashboard = free_port(), free_port()
        config = Path(tmp) / "autoscaler.json"
        config.write_text(json.dumps(fake_autoscaling_config(head_cpus, worker_types, port, idle_minutes)))
        ports = node_ports()
        cmd = [
            RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
            f"--num-cpus={head_cpus}", "--num-gpus=0", f"--autoscaling-config={config}",
            f"--object-store-memory={150 * 2**20}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
            f"--temp-dir={tmp}/ray", f"--dashboard-agent-listen-port={ports['dashboard_agent_listen_port']}",
            f"--dashboard-agent-grpc-port={ports['metrics_agent_port']}",
            f"--metrics-export-port={ports['metrics_export_port']}",
            f"--runtime-env-agent-port={ports['runtime_env_agent_port']}",
            f"--object-manager-port={ports['object_manager_port']}", f"--ray-client-server-port={free_port()}",
        ]  # fmt: skip
        env = {**os.environ, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"}
        output = Path(tmp) / "ray-start.log"
        with output.open("wb") as log:
            head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            address = f"http://127.0.0.1:{dashboard}"
            wait_until_up(address, head, output)
            yield address
        finally:
            stop_process_group(head)


def wait_until_up(address: str, head: subprocess.Popen, output: Path, timeout: float = 180) -> None:
    """Returns once the Jobs API at `address` answers; fails with the tail of `ray start`'s output (`output`) if
    the head process exits first or `timeout` seconds pass."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + timeout
    while True:
        assert head.poll() is None, f"ray start --head exited ({head.returncode}):\n{output.read_text()[-3000:]}"
        try:
            JobSubmissionClient(address).list_jobs()
            return
        except Exception:  # noqa: BLE001 -- the dashboard is not serving yet; retried until the deadline
            assert time.time() < deadline, f"Ray head at {address} did not come up in {timeout} s"
            time.sleep(0.5)


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL the group `proc` leads (the head and every raylet it or its autoscaler started).

    `ray start --block` does not exit on SIGTERM (it was still running 30 s after one), so the grace period is
    short: the raylets and the GCS get their SIGTERM, then the group is killed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=3)


def submit(address: str, entrypoint: str, timeout: float = 180, **job) -> str:
    """Submit through the Jobs API once the dashboard and the head's job agent answer (Ray asks callers to retry)."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + timeout
    while True:
        try:
            return JobSubmissionClient(address).submit_job(entrypoint=entrypoint, **job)
        except Exception as err:  # not serving yet (connection refused, "No available agent"): retried until deadline
            if time.time() > deadline:
                raise TimeoutError(f"the Jobs API at {address} did not accept the job in {timeout} s") from err
            time.sleep(0.5)


def job_env() -> dict:
    """runtime_env of a test job: this checkout on the import path (no upload), the hub offline."""
    repo = str(Path(__file__).resolve().parents[1])
    return {"env_vars": {"PYTHONPATH": repo, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}}
