"""GPU demand from zero: the shipped configs (configs/reembed.yaml, configs/mine_bitext.yaml, unchanged but for their
URIs and a tiny model) on a Ray cluster whose only GPU worker type has `min_workers: 0`, as infra/k8s's GPU groups.
Ray's autoscaler (fake multi-node provider: the real autoscaler, launching local raylets) must add a GPU node
because the jobs' actors ask for GPUs, and those actors must run there. Each job starts from zero GPU nodes.

The GPU is logical (a CPU machine): the node advertises GPU: 1 and the actors run torch on CPU.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE
from ray_clusters import TERMINAL, autoscaling_cluster, job_env, submit

pytestmark = pytest.mark.slow
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
GPU_TYPE = {"resources": {"CPU": 2, "GPU": 1, "object_store_memory": 150 * 2**20}, "node_config": {}}
WORKER_TYPES = {"ray.worker.gpu": {**GPU_TYPE, "min_workers": 0, "max_workers": 1}}


def gpu_nodes(address: str) -> dict[str, str]:
    """{node id: state} of every node that advertises a GPU (alive or already removed)."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=address, detail=True, raise_on_missing_output=False)
    return {n.node_id: n.state for n in nodes if (n.resources_total or {}).get("GPU", 0) > 0}


def actor_nodes(address: str, class_part: str) -> set[str]:
    from ray.util.state import list_actors

    actors = list_actors(address=address, limit=10_000, raise_on_missing_output=False)
    return {a.node_id for a in actors if class_part in a.class_name and a.node_id}


def run_job(address: str, entrypoint: str, timeout: float = 420) -> str:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    job = submit(address, entrypoint, runtime_env=job_env())
    deadline = time.time() + timeout
    while (status := str(client.get_job_status(job))) not in TERMINAL:
        assert time.time() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(0.5)
    assert status == "SUCCEEDED", client.get_job_logs(job)[-4000:]
    return client.get_job_logs(job)


def wait_until_no_gpu_node(address: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while any(state == "ALIVE" for state in gpu_nodes(address).values()):
        assert time.time() < deadline, "the idle GPU node was not removed by the autoscaler"
        time.sleep(0.5)


def shipped(config: str, tiny_model: Path, **overrides) -> str:
    """`python -m jobs.X --config configs/<config>` with URI and model overrides only: the GPU settings are shipped."""
    sets = {"model.name_or_path": tiny_model, **overrides}
    return f"--config {REPO / 'configs' / config} " + " ".join(f"--set {k}={v}" for k, v in sets.items())


@pytest.mark.timeout(900)
def test_shipped_configs_make_the_autoscaler_add_gpu_nodes_from_zero(tiny_models, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:60]))
    (tmp_path / "fra.txt").write_text("".join(r["text"] + "\n" for r in RECORDS[:30]))
    (tmp_path / "eng.txt").write_text("".join(r["text"] + "\n" for r in RECORDS[30:60]))
    reembed = shipped(
        "reembed.yaml",
        tiny_models["gemma3"],
        **{"input.uri": corpus, "output.uri": tmp_path / "re", "model.max_tokens": 64},
    )
    mine = shipped(
        "mine_bitext.yaml",
        tiny_models["bert"],
        **{"source.uri": tmp_path / "fra.txt", "target.uri": tmp_path / "eng.txt", "output.uri": tmp_path / "mined"},
    )
    with autoscaling_cluster(WORKER_TYPES, head_cpus=1, idle_minutes=0.2) as address:
        submit(address, "true")  # the Jobs API answers: the cluster is up
        assert gpu_nodes(address) == {}  # scaling from zero
        run_job(address, f"{sys.executable} -m jobs.reembed {reembed}")
        first = gpu_nodes(address)
        assert len(first) == 1, first  # the autoscaler added the GPU worker type for the embedding actors
        assert actor_nodes(address, "EmbedActor") == set(first), "the embedding actors did not run on the GPU node"

        wait_until_no_gpu_node(address)  # idle: removed again, so the next job starts from zero as well
        run_job(address, f"{sys.executable} -m jobs.mine_bitext {mine}")
        second = set(gpu_nodes(address)) - set(first)
        assert len(second) == 1, gpu_nodes(address)  # a new GPU node, launched for this job
        assert actor_nodes(address, "EmbedActor") - set(first) == second
        assert actor_nodes(address, "ShardActor") == second  # the k-NN shards asked for a GPU too
    (summary,) = [p for p in (tmp_path / "mined").glob("*summary.json")]  # the commit marker, written last
    assert json.loads(summary.read_text())["source"]["rows_mined"] == 30
    assert json.loads((tmp_path / "re" / "_current.json").read_text())  # reembed published its version
