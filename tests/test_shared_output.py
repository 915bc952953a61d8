"""pipeline.shared_output: a write task of a local output first checks that its node sees the run's lease there, so a
node with a folder of its own at the output's path (one that joined after the start-up check of pipeline.node_paths)
fails its writes instead of keeping its part files where the driver's commit never sees them. The nodes of a real
multi-node cluster that share the path pass it in tests/test_multinode.py's jobs."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.bitext.output import finalize
from pipeline.clustering.distributed import ClusterSpec, finish_cluster
from pipeline.columns import SOURCE
from pipeline.config import EmbedConfig, StorageConfig
from pipeline.lease import LEASE, holding
from pipeline.reembed.staging import StageTarget, write_by_source
from pipeline.shared_output import (
    SEEN,
    OutputNotSharedError,
    RunLease,
    check_output_is_the_drivers,
    run_lease,
)
from pipeline.storage import resolve
from pipeline.writing import write_block


def test_the_driver_names_its_lease_for_a_local_output_only(tmp_path, s3_bucket, s3_server):
    storage = StorageConfig()
    out = resolve(str(tmp_path / "out"), storage)
    assert run_lease(out) is None  # no lease held: a caller outside a job
    with holding(out, storage, "embed", ttl=60) as lease:
        got = run_lease(out)
        assert got == RunLease(str(tmp_path / "out" / LEASE), lease.token)
        assert run_lease(resolve(str(tmp_path / "out" / "nested"), storage)) == got  # the lease above a nested step
        check_output_is_the_drivers(replace(got, wait_s=0))  # the driver's own node sees it
    _client, bucket = s3_bucket
    s3 = StorageConfig(endpoint_url=s3_server)
    on_s3 = resolve(f"s3://{bucket}/out", s3)
    with holding(on_s3, s3, "embed", ttl=60):
        assert run_lease(on_s3) is None  # object storage is one place for every node


def test_a_node_without_the_runs_lease_fails_its_writes_naming_the_folder(tmp_path):
    """A node whose folder at the output's path is its own: no lease there (a fresh disk), or an old run's lease
    (left on that node's disk by a run it once served). Stands in by pointing the check at another folder, which is
    what such a node's file system shows it."""
    SEEN.clear()
    own = tmp_path / "own"
    own.mkdir()
    missing = RunLease(str(own / LEASE), "this-run", wait_s=0)
    with pytest.raises(OutputNotSharedError) as err:
        check_output_is_the_drivers(missing)
    text = str(err.value)
    assert f"the output folder {own} is not one shared place on every node" in text, text
    assert f"the run's lease file {own / LEASE}, written there by the driver when the run started, is missing" in text
    assert "--set output.uri=s3://bucket/prefix" in text
    (own / LEASE).write_text(json.dumps({"token": "an-old-run", "run_id": "20261201T000000-aaaa"}))
    with pytest.raises(OutputNotSharedError, match=r"is another run's \(run 20261201T000000-aaaa\)"):
        check_output_is_the_drivers(missing)
    assert not SEEN


def test_a_lease_being_rewritten_or_seen_late_passes_and_is_checked_once_per_process(tmp_path):
    """A renewal truncates and rewrites the lease in place: a partial read is the file being there. A shared file
    system's client may show a new file late (NFS's cached listing): it is looked for again before failing."""
    SEEN.clear()
    (tmp_path / LEASE).write_text('{"token": "this-r')  # caught mid-rewrite
    check_output_is_the_drivers(RunLease(str(tmp_path / LEASE), "this-run", wait_s=0))
    late = tmp_path / "late"
    late.mkdir()
    lease = RunLease(str(late / LEASE), "late-run", wait_s=10)
    writer = threading.Timer(1.5, lambda: (late / LEASE).write_text(json.dumps({"token": "late-run"})))
    writer.start()
    started = time.monotonic()
    check_output_is_the_drivers(lease)
    assert 1.0 < time.monotonic() - started < 8
    (late / LEASE).unlink()
    check_output_is_the_drivers(replace(lease, wait_s=0))  # seen once in this process: not read again per block
    writer.join()


def test_the_write_tasks_check_before_they_write(tmp_path):
    SEEN.clear()
    cfg = EmbedConfig.model_validate({"input": {"uri": "x"}, "output": {"uri": str(tmp_path)}, "model": {}})
    out = resolve(str(tmp_path), cfg.storage)
    block = pa.table({"x": pa.array([], pa.int64())})
    elsewhere = RunLease(str(tmp_path / LEASE), "this-run", wait_s=0.0)  # not 15 s of looking again per task
    with pytest.raises(OutputNotSharedError):
        write_block(block, out, cfg, {}, elsewhere)
    spec = ClusterSpec(out, (), None, 0, elsewhere)
    group = pa.table({"id": ["a"], "cluster_id": [0], "cosine_to_centroid": [1.0]})
    with pytest.raises(OutputNotSharedError):
        finish_cluster(group, spec)
    with pytest.raises(OutputNotSharedError):
        finalize([], "fra", "eng", [], [], False, False, str(tmp_path / "pairs"), StorageConfig(), elsewhere)
    staged = StageTarget(out, "run", {}, (), False, {}, 10, lease=elsewhere)  # the re-embed job's write task
    with pytest.raises(OutputNotSharedError):
        write_by_source(pa.table({SOURCE: pa.array([], pa.string())}), staged)
    assert list(tmp_path.iterdir()) == []


def test_every_mining_step_checks_the_output_first_on_its_node(ray_session, tmp_path):
    """The mining job's steps (pipeline.bitext.executor) all read or write its work files under the output: each Ray
    task checks the run's lease first. A node with a folder of its own there fails the step before it writes."""
    from pipeline.bitext.executor import RayExecutor

    SEEN.clear()
    with holding(resolve(str(tmp_path), StorageConfig()), StorageConfig(), "mine_bitext", ttl=60) as lease:
        ours = RunLease(str(tmp_path / LEASE), lease.token)
        ex = RayExecutor(0.25, 0, ours)
        ex.get(ex.submit(os.makedirs, str(tmp_path / "a")))  # a step that writes under the output
        assert (tmp_path / "a").is_dir()
    elsewhere = RayExecutor(0.25, 0, RunLease(str(tmp_path / "other" / LEASE), lease.token, wait_s=0.0))
    with pytest.raises(Exception, match="OutputNotSharedError") as err:
        elsewhere.get(elsewhere.submit(os.makedirs, str(tmp_path / "b")))
    assert "is not one shared place on every node" in str(err.value)
    assert not (tmp_path / "b").exists()
    plain = RayExecutor(0.25, 0)  # an output on object storage: no lease to check
    plain.get(plain.submit(os.makedirs, str(tmp_path / "c")))
    assert (tmp_path / "c").is_dir()


def test_the_mining_job_hands_its_executor_the_runs_lease(tmp_path):
    from pipeline.bitext.job import make_executor
    from pipeline.mine_config import MineConfig

    sides = {"uri": str(tmp_path / "in"), "lang": "fra"}
    cfg = MineConfig.model_validate(
        {"source": sides, "target": {**sides, "lang": "eng"}, "output": {"uri": str(tmp_path / "out")}}
    )
    out = resolve(cfg.output.uri, cfg.storage)
    with holding(out, cfg.storage, "mine_bitext", ttl=60) as lease:
        assert make_executor(cfg, out)._lease == RunLease(str(tmp_path / "out" / LEASE), lease.token)
    local = cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"backend": "local"})})
    assert make_executor(local, out).distributed is False


@pytest.mark.slow
def test_the_embed_reembed_and_cluster_jobs_write_tasks_get_the_runs_lease(
    ray_session, tiny_models, tmp_path, monkeypatch
):
    """The jobs hand their write tasks the lease they hold on a local output (taken out, no write task checks
    anything). Driver-side spies on the stage builders; the write tasks themselves run the check (it passes on this
    one node)."""
    from pipeline import embed_job
    from pipeline.cluster_config import ClusterConfig
    from pipeline.clustering import job as cluster_job
    from pipeline.clustering.job import run_cluster
    from pipeline.embed_job import run_embed
    from pipeline.reembed import job as reembed_job
    from pipeline.reembed.config import ReembedConfig
    from pipeline.reembed.job import run_reembed

    seen = []

    def spy(module):
        real = module.io_stage

        def io_stage(fn, compute, kwargs, *args, **kw):
            lease = kwargs.get("lease") or getattr(kwargs.get("target"), "lease", None)
            if fn.__name__ in ("write_block", "write_by_source"):
                held = json.loads(Path(lease.path).read_text()) if lease else {}
                seen.append((fn.__name__, lease is not None and held.get("token") == lease.token, lease))
            return real(fn, compute, kwargs, *args, **kw)

        monkeypatch.setattr(module, "io_stage", io_stage)

    spy(embed_job)
    spy(reembed_job)
    real_lease = cluster_job.run_lease

    def cluster_lease(out):  # the cluster job's finish_cluster tasks get it in their ClusterSpec
        lease = real_lease(out)
        held = json.loads(Path(lease.path).read_text()) if lease else {}
        seen.append(("finish_cluster", lease is not None and held.get("token") == lease.token, lease))
        return lease

    monkeypatch.setattr(cluster_job, "run_lease", cluster_lease)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{"id": f"r{i}", "text": f"sentence number {i}"} for i in range(12)]
    (corpus / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sections = {
        "input": {"uri": str(corpus), "format": "jsonl", "id_column": "id"},
        "model": {"name_or_path": str(tiny_models["bert"]), "max_tokens": 32},
        "compute": {"num_actors": 1},
    }
    embed = EmbedConfig.model_validate({**sections, "output": {"uri": str(tmp_path / "emb")}})
    assert run_embed(embed)["output_rows"] == 12
    again = ReembedConfig.model_validate({**sections, "output": {"uri": str(tmp_path / "re")}})
    assert run_reembed(again)["rows_embedded"] == 12
    clusters = {"input": {"uri": str(tmp_path / "emb")}, "output": {"uri": str(tmp_path / "cl")}}
    run_cluster(ClusterConfig.model_validate({**clusters, "clustering": {"k": 2}}))
    assert (tmp_path / "cl" / "_SUCCESS").exists()
    names = [(name, ok) for name, ok, _ in seen]
    assert names == [("write_block", True), ("write_by_source", True), ("finish_cluster", True)], seen
    assert [lease.path for *_, lease in seen] == [str(tmp_path / d / LEASE) for d in ("emb", "re", "cl")]
