"""GPU demand from zero: the shipped configs (configs/reembed.yaml, configs/mine_bitext.yaml, unchanged but for their
URIs and a tiny model) on a Ray cluster whose only GPU worker type has `min_workers: 0`, as infra/k8s's GPU groups.
Ray's autoscaler (fake multi-node provider: the real autoscaler, launching local raylets) must add a GPU node
because the job's actors ask for GPUs, and those actors must run there.

One job runs on the autoscaling cluster: the mining job, whose embedding actors and k-NN shard actors both ask for
a GPU. The re-embed job builds its embedding actors with the same stage (pipeline.stages.embed_stage, through
embed_job.embed_stages); that its shipped config asks a cluster at zero GPUs for GPU actors is checked on the stage
itself (a second job on the cluster, from zero again after the first node's idle removal, cost about half the
test for the same autoscaler path).

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

from pipeline.actors import EmbedActor
from pipeline.config import load_config
from pipeline.reembed.config import ReembedConfig
from pipeline.stages import ClusterShape, embed_stage

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


def shipped(config: str, tiny_model: Path, **overrides) -> str:
    """`python -m jobs.X --config configs/<config>` with URI and model overrides only: the GPU settings are shipped."""
    sets = {"model.name_or_path": tiny_model, **overrides}
    return f"--config {REPO / 'configs' / config} " + " ".join(f"--set {k}={v}" for k, v in sets.items())


def test_the_shipped_reembed_config_asks_a_cluster_at_zero_gpus_for_gpu_actors(tmp_path):
    """configs/reembed.yaml's embedding stage on a cluster whose GPU workers are at zero (Ray reports the head's
    CPUs alone): each actor asks for a GPU, so its pending actors are the demand the autoscaler adds a GPU node for,
    and the pool grows from 1 to 4 actors with the nodes added. Without the declared gpus_per_actor the actors
    would ask for none and run on CPU nodes (one per GPU counted at start: none)."""
    overrides = [f"input.uri={tmp_path / 'corpus'}", f"output.uri={tmp_path / 're'}"]
    cfg = load_config(ReembedConfig, REPO / "configs" / "reembed.yaml", overrides)
    at_zero = ClusterShape.of([{"CPU": 1.0}], cfg.compute.actor_requirements())
    stage = embed_stage(cfg, EmbedActor, shape=at_zero)
    assert (stage.num_gpus, stage.pool) == (1, (1, 4))


@pytest.mark.timeout(900)
def test_shipped_configs_make_the_autoscaler_add_gpu_nodes_from_zero(tiny_models, tmp_path):
    (tmp_path / "fra.txt").write_text("".join(r["text"] + "\n" for r in RECORDS[:30]))
    (tmp_path / "eng.txt").write_text("".join(r["text"] + "\n" for r in RECORDS[30:60]))
    mine = shipped(
        "mine_bitext.yaml",
        tiny_models["bert"],
        **{"source.uri": tmp_path / "fra.txt", "target.uri": tmp_path / "eng.txt", "output.uri": tmp_path / "mined"},
    )
    # The autoscaler's default idle timeout (1 min): the GPU node stays while the job moves between its stages.
    # The head's 3 CPUs hold the job's CPU work (infra/k8s's CPU group): a GPU node is added only for a GPU request.
    # With 1 CPU there, CPU embedding actors (gpus_per_actor removed from mine_bitext.yaml) did not fit, and the
    # autoscaler added the only worker type, the GPU one, for them too: the test passed without the declaration.
    with autoscaling_cluster(WORKER_TYPES, head_cpus=3) as address:
        submit(address, "true")  # the Jobs API answers: the cluster is up
        assert gpu_nodes(address) == {}  # scaling from zero
        logs = run_job(address, f"{sys.executable} -m jobs.mine_bitext {mine}")
        # No node had a GPU at the start, and the autoscaler's node types are names only: waited for, and said so
        assert "ask for compute.cpus_per_actor: 1, compute.gpus_per_actor: 1, which no node" in logs, logs[-3000:]
        assert "(__autoscaling_status): an autoscaler runs, node types up now ray.head.default)" in logs, logs[-3000:]
        added = gpu_nodes(address)
        assert len(added) == 1, added  # the autoscaler added the GPU worker type for the job's actors
        assert actor_nodes(address, "EmbedActor") == set(added), "the embedding actors did not run on the GPU node"
        assert actor_nodes(address, "ShardActor") == set(added)  # the k-NN shards asked for a GPU too
    (summary,) = [p for p in (tmp_path / "mined").glob("*summary.json")]  # the commit marker, written last
    assert json.loads(summary.read_text())["source"]["rows_mined"] == 30
