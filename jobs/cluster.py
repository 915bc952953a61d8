"""Cluster (and optionally dedup) an embeddings dataset: `python -m jobs.cluster --config configs/cluster.yaml`."""

from __future__ import annotations

from jobs.common import run_job
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.job import run_cluster
from pipeline.process_exit import exit_process


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "Spherical k-means clustering and semantic dedup of embeddings.",
        ClusterConfig,
        run_cluster,
        argv,
        resumable=True,
        name="cluster",
    )


if __name__ == "__main__":
    exit_process(main())
