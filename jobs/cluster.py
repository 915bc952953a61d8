"""Cluster (and optionally dedup) an embeddings dataset: `python -m jobs.cluster --config configs/cluster.yaml`."""

from __future__ import annotations

import sys

from jobs.common import run_job
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.job import run_cluster


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "Spherical k-means clustering and semantic dedup of embeddings.",
        ClusterConfig,
        run_cluster,
        argv,
        name="cluster",
    )


if __name__ == "__main__":
    sys.exit(main())
