"""GPU demand from zero: the shipped configs (configs/reembed.yaml, configs/mine_bitext.yaml, unchanged but for their
URIs and a tiny model) on a Ray cluster whose only GPU worker type has `min_workers: 0`, as infra/k8s's GPU groups.

One job runs on an autoscaling cluster: the mining job, whose embedding actors and k-NN shard actors both ask for
a GPU (tests/test_ray_jobs_api.py::test_shipped_configs_make_the_autoscaler_add_gpu_nodes_from_zero, on that
module's head, which the autoscaling head also serves the Jobs API tests as: one head start fewer). The re-embed job
builds its embedding actors with the same stage (pipeline.stages.embed_stage, through embed_job.embed_stages); that
its shipped config asks a cluster at zero GPUs for GPU actors is checked here, on the stage itself (a second job on
the cluster, from zero again after the first node's idle removal, cost about half the test for the same autoscaler
path).
"""

from __future__ import annotations

from conftest import REPO

from pipeline.actors import EmbedActor
from pipeline.config import load_config
from pipeline.reembed.config import ReembedConfig
from pipeline.stages import ClusterShape, embed_stage


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
