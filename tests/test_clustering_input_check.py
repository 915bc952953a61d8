"""The clustering input check (pipeline.clustering.input_check): one read of every file for the vectors and the ids.

Real Parquet on a moto S3 server behind the counting proxy (tests/s3_fault_proxy.py), the session's local Ray.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from pipeline.cluster_config import ClusterConfig
from pipeline.clustering.job import run_cluster
from pipeline.config import StorageConfig, parse_config
from pipeline.storage import resolve

pytestmark = pytest.mark.slow


class Stop(Exception):
    pass


def test_the_input_check_reads_each_file_once(ray_session, s3_bucket, proxy, monkeypatch):
    """The vectors' check and the duplicate-id check each read every input file (the vectors, then the ids again)
    before k-means: +1-6 s at 1M x 384. One read serves both now: up to the job's own dataset read, every file but
    the first (whose footer the job opens to plan) is fetched with the GETs of one read of its columns."""
    client, bucket = s3_bucket
    rng = np.random.default_rng(0)
    for f in range(3):
        x = rng.normal(size=(300, 16)).astype(np.float32)
        table = pa.table({"id": [f"f{f}-{i}" for i in range(300)], "embedding": pa.array(list(x))})
        body = io.BytesIO()
        pq.write_table(table, body, row_group_size=100)
        client.put_object(Bucket=bucket, Key=f"emb/part-{f}.parquet", Body=body.getvalue())
    storage = StorageConfig(endpoint_url=proxy.url)

    def gets(key: str) -> int:
        return proxy.forwarded[("GET", f"/{bucket}/{key}")]

    one_read = {}
    for f in range(3):  # one read of a file's columns, as a task reads it
        loc = resolve(f"s3://{bucket}/emb/part-{f}.parquet", storage)
        before = gets(f"emb/part-{f}.parquet")
        for _ in pq.ParquetFile(loc.path, filesystem=loc.fs).iter_batches(columns=["embedding", "id"]):
            pass
        one_read[f] = gets(f"emb/part-{f}.parquet") - before
    assert all(n > 0 for n in one_read.values())
    proxy.forwarded.clear()

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(ray.data, "read_parquet", stop)  # the job's dataset read: the checks are done
    cfg = parse_config(
        ClusterConfig,
        {
            "input": {"uri": f"s3://{bucket}/emb"},
            "output": {"uri": f"s3://{bucket}/out"},
            "storage": {"endpoint_url": proxy.url},
            "clustering": {"k": 2},
        },
    )
    with pytest.raises(Stop):
        run_cluster(cfg)
    assert {f: gets(f"emb/part-{f}.parquet") for f in (1, 2)} == {1: one_read[1], 2: one_read[2]}
