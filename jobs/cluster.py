"""Cluster (and optionally dedup) an embeddings dataset: `python -m jobs.cluster --config configs/cluster.yaml`."""

from __future__ import annotations

from jobs.common import run_job
from pipeline.cluster_config import ClusterConfig
from pipeline.process_exit import exit_process


def run(cfg: ClusterConfig) -> dict:
    """run_cluster, imported here: the imports of `pipeline.clustering.job` (Ray, torch; seconds) then run inside
    run_job's handling of Ctrl-C and SIGTERM, so an interrupt while they load is one `interrupted:` line, exit
    130 or 143, not a traceback."""
    from pipeline.clustering.job import run_cluster

    return run_cluster(cfg)


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "Spherical k-means clustering and semantic dedup of embeddings.",
        ClusterConfig,
        run,
        argv,
        resumable=True,
        name="cluster",
    )


if __name__ == "__main__":
    exit_process(main())
