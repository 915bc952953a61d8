"""Submit the embed and mining jobs to a separate `ray start --head` on loopback through the Ray Jobs API, and
scale its GPU workers from zero with the shipped configs.

One head serves the module (a head start is a GCS, a raylet, a dashboard and their agents): the head of
test_shipped_configs_make_the_autoscaler_add_gpu_nodes_from_zero, an autoscaling one whose CPU work fits on the head,
also runs the other tests' CPU jobs, which must not make it add a node (that test checks there is none at its start).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, SAMPLE
from ray_clusters import TERMINAL, autoscaling_cluster, job_env, submit

pytestmark = pytest.mark.slow
# The working_dir test_submit_embed_job uploads (its `rayembed submit` uploads the same files: one package).
EXCLUDES = [".venv/", ".models/", ".git/", "**/__pycache__/", "out/"]
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
GPU_TYPE = {"resources": {"CPU": 2, "GPU": 1, "object_store_memory": 150 * 2**20}, "node_config": {}}
WORKER_TYPES = {"ray.worker.gpu": {**GPU_TYPE, "min_workers": 0, "max_workers": 1}}


@pytest.fixture(scope="module")
def ray_head():
    """A head node of its own (not the session's in-process Ray), with token auth pinned by conftest's env: `ray
    start --head` with 3 CPUs and Ray's fake multi-node autoscaler, whose only worker type, a GPU node, is at
    `min_workers: 0` (tests/ray_clusters.autoscaling_cluster). One per module, shared by the tests that submit
    jobs to it (each writes its own output): the CPU jobs run on the head, and the autoscaling test, which adds the
    GPU node, runs last. Yields the dashboard URL."""
    with autoscaling_cluster(WORKER_TYPES, head_cpus=3) as address:
        yield address


def wait_for_job(client, job_id: str, timeout: float) -> str:
    """The job's terminal status; fails with the job's log tail after `timeout` seconds."""
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(0.5)
    return status


def submit_when_agent_ready(client, timeout: float = 180, **job) -> str:
    """Submit, retrying what a busy or starting head answers: the dashboard answers before the node's job agent
    registers ("No available agent"), and under load the working_dir upload or the submit itself can fail with a
    5xx or a dropped connection. Anything else (a 4xx, a bad entrypoint) fails at once.

    The submission id is fixed before the first try, so a retry after a submit that did reach the head returns that
    job instead of starting a second one writing the same output.
    """
    job.setdefault("submission_id", f"rayembed-test-{uuid.uuid4().hex[:12]}")
    deadline = time.time() + timeout
    while True:
        try:
            return client.submit_job(**job)
        except (RuntimeError, OSError) as err:  # OSError: requests' and Ray's connection errors
            transient = (
                isinstance(err, OSError)
                or "No available agent" in str(err)
                or re.search(r"status code 5\d\d", str(err))
            )
            if not transient or time.time() > deadline:
                raise
            with contextlib.suppress(RuntimeError, OSError):
                client.get_job_info(job["submission_id"])
                return job["submission_id"]  # the failed call had submitted it after all
            time.sleep(2)


class FlakyHead:
    """A JobSubmissionClient stand-in answering like a loaded head: the upload fails with a 500, then the submit
    reaches the head but the connection drops before the answer, then the id is known to the head."""

    def __init__(self):
        self.calls, self.jobs = [], set()

    def submit_job(self, submission_id, **job):
        self.calls.append(submission_id)
        if len(self.calls) == 1:
            raise RuntimeError("Request failed with status code 500: Failed to upload package.")
        self.jobs.add(submission_id)
        raise ConnectionError("Connection aborted.")

    def get_job_info(self, submission_id):
        if submission_id not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: job {submission_id} does not exist.")
        return {"submission_id": submission_id}


def test_submit_retries_what_a_loaded_head_answers_and_never_submits_twice(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    head = FlakyHead()
    job_id = submit_when_agent_ready(head, entrypoint="echo")
    assert head.calls == [job_id, job_id] and head.jobs == {job_id}


class BadRequestHead(FlakyHead):
    def submit_job(self, submission_id, **job):
        self.calls.append(submission_id)
        raise RuntimeError("Request failed with status code 400: bad runtime_env.")


def test_submit_does_not_retry_a_client_error():
    head = BadRequestHead()
    with pytest.raises(RuntimeError, match="status code 400"):
        submit_when_agent_ready(head, entrypoint="echo")
    assert len(head.calls) == 1


def test_submit_embed_job(ray_head, tiny_models, tmp_path, monkeypatch, capsys):
    from ray.job_submission import JobStatus, JobSubmissionClient

    out = tmp_path / "emb"
    client = JobSubmissionClient(ray_head)
    job_id = submit_when_agent_ready(
        client,
        entrypoint=(
            f"{sys.executable} -m jobs.embed --config configs/quickstart.yaml"
            f" --set input.uri={SAMPLE} --set output.uri={out} --set model.name_or_path={tiny_models['gemma3']}"
            " --set model.max_tokens=128 --set output.keep_columns=[lang]"
        ),
        runtime_env={
            "working_dir": str(REPO),
            "excludes": EXCLUDES,
            "env_vars": {"HF_HUB_OFFLINE": "1"},
        },
    )
    status = wait_for_job(client, job_id, timeout=400)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_in"] == summary["rows_embedded"] == 320
    assert '"rows_embedded": 320' in logs  # the job prints its summary
    assert f"output.uri '{out}' is a local path and the job runs on the Ray cluster" in logs  # one disk here

    # `rayembed submit` on the same head: the address from RAY_ADDRESS, the job guessed from the sections, the job's
    # logs streamed while it runs, the job's exit status as ours. A config error is exit 2 here, before any upload;
    # an input that is not on the cluster fails the job there (its exit 1).
    from pipeline import cli

    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    monkeypatch.chdir(REPO)
    capsys.readouterr()
    assert cli.submit(None, "configs/mine_bitext.yaml", None, ["model.poolng=mean"], True, sys.executable) == 2
    assert "did you mean pooling?" in capsys.readouterr().err
    missing = [f"input.uri={tmp_path / 'missing.jsonl'}", f"output.uri={tmp_path / 'never'}"]
    probe = {"env_vars": {"RAYEMBED_PROBE": "1"}}  # --runtime-env-json's fields reach the job
    # --entrypoint-num-cpus, as ray job submit takes it (Ray checks the keywords and their types; the Jobs API's job
    # details do not show them)
    driver = {"entrypoint_num_cpus": 0.5}
    rc = cli.submit(
        None, "configs/quickstart.yaml", None, missing, True, sys.executable, runtime_env=probe, entrypoint=driver
    )
    streamed = capsys.readouterr().out
    assert rc == 1, streamed[-3000:]
    assert "-m jobs.embed" in streamed and "no input files found" in streamed and "finished: FAILED" in streamed
    submitted = re.search(r"submitted (\S+):", streamed).group(1)
    assert client.get_job_info(submitted).runtime_env["env_vars"] == probe["env_vars"]


def gpu_nodes(address: str) -> dict[str, str]:
    """{node id: state} of every node that advertises a GPU (alive or already removed)."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=address, detail=True, raise_on_missing_output=False)
    return {n.node_id: n.state for n in nodes if (n.resources_total or {}).get("GPU", 0) > 0}


def actor_nodes(address: str, job_id: str, class_part: str) -> set[str]:
    """The nodes of the Ray job `job_id`'s actors whose class name holds `class_part` (the module's earlier jobs ran
    theirs on the head: left out)."""
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("job_id", "=", job_id)], raise_on_missing_output=False)
    return {a.node_id for a in actors if class_part in a.class_name and a.node_id}


def run_job(address: str, entrypoint: str, timeout: float = 420) -> tuple[str, str]:
    """(logs, Ray job id) of the job `entrypoint` once it succeeded."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    job = submit(address, entrypoint, runtime_env=job_env())
    deadline = time.time() + timeout
    while (status := str(client.get_job_status(job))) not in TERMINAL:
        assert time.time() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(0.5)
    assert status == "SUCCEEDED", client.get_job_logs(job)[-4000:]
    return client.get_job_logs(job), client.get_job_info(job).job_id


def shipped(config: str, tiny_model: Path, **overrides) -> str:
    """`python -m jobs.X --config configs/<config>` with URI and model overrides only: the GPU settings are shipped."""
    sets = {"model.name_or_path": tiny_model, **overrides}
    return f"--config {REPO / 'configs' / config} " + " ".join(f"--set {k}={v}" for k, v in sets.items())


@pytest.mark.timeout(900)
def test_shipped_configs_make_the_autoscaler_add_gpu_nodes_from_zero(ray_head, tiny_models, s3_bucket, s3_server):
    """configs/mine_bitext.yaml, unchanged but for its URIs on the S3 server, the server's endpoint and a tiny model,
    on the module's head whose only GPU worker type is at `min_workers: 0`, as infra/k8s's GPU groups: Ray's
    autoscaler (fake multi-node provider: the real autoscaler, launching local raylets) must add a GPU node because
    the job's embedding actors and k-NN shard actors ask for GPUs, and those actors must run there. The GPU is
    logical (a CPU machine): the node advertises GPU: 1 and the actors run torch on CPU. Last in the module: the GPU
    node it adds stays a minute once idle.

    It is also the `ray job submit` path of the mining job on object storage (test_submit_as_ray_job's, a mining job
    of its own on this head, with the sides' vectors given): the driver on the separate head reads the texts from
    S3 and writes the pairs and the summary there. The pairs' quality on given vectors is test_bitext_e2e's."""
    client_s3, bucket = s3_bucket
    texts = {"fra": [r["text"] for r in RECORDS[:30]], "eng": [r["text"] for r in RECORDS[30:60]]}
    for lang, lines in texts.items():
        client_s3.put_object(Bucket=bucket, Key=f"mine/{lang}.txt", Body="".join(t + "\n" for t in lines).encode())
    mine = shipped(
        "mine_bitext.yaml",
        tiny_models["bert"],
        **{
            "source.uri": f"s3://{bucket}/mine/fra.txt",
            "target.uri": f"s3://{bucket}/mine/eng.txt",
            "output.uri": f"s3://{bucket}/mined",
            "storage.endpoint_url": s3_server,
        },
    )
    # The autoscaler's default idle timeout (1 min): the GPU node stays while the job moves between its stages.
    # The head's 3 CPUs hold the job's CPU work (infra/k8s's CPU group): a GPU node is added only for a GPU request.
    # With 1 CPU there, CPU embedding actors (gpus_per_actor removed from mine_bitext.yaml) did not fit, and the
    # autoscaler added the only worker type, the GPU one, for them too: the test passed without the declaration.
    address = ray_head
    assert gpu_nodes(address) == {}  # scaling from zero: the module's CPU jobs did not make it add a node
    logs, job_id = run_job(address, f"{sys.executable} -m jobs.mine_bitext {mine}")
    # No node had a GPU at the start, and the autoscaler's node types are names only: waited for, and said so
    assert "ask for compute.cpus_per_actor: 1, compute.gpus_per_actor: 1, which no node" in logs, logs[-3000:]
    assert "(__autoscaling_status): an autoscaler runs, node types up now ray.head.default)" in logs, logs[-3000:]
    added = gpu_nodes(address)
    assert len(added) == 1, added  # the autoscaler added the GPU worker type for the job's actors
    assert actor_nodes(address, job_id, "EmbedActor") == set(added), "the embedding actors did not run on the GPU node"
    assert actor_nodes(address, job_id, "ShardActor") == set(added)  # the k-NN shards asked for a GPU too
    summary = json.loads(client_s3.get_object(Bucket=bucket, Key="mined/summary.json")["Body"].read())
    assert summary["source"]["rows_mined"] == summary["target"]["rows_mined"] == 30
    listed = client_s3.list_objects_v2(Bucket=bucket, Prefix="mined/pairs/")["Contents"]
    keys = [o["Key"] for o in listed if o["Key"].endswith(".parquet")]  # not the folder's 0-byte marker
    pairs = pa.concat_tables(
        [pq.read_table(io.BytesIO(client_s3.get_object(Bucket=bucket, Key=k)["Body"].read())) for k in keys]
    )
    assert pairs.num_rows == summary["pairs_kept"]
    # the joins lost nothing: each pair's texts are those of its sides' rows
    assert set(pairs.column("src_text").to_pylist()) <= set(texts["fra"])
    assert set(pairs.column("tgt_text").to_pylist()) <= set(texts["eng"])
