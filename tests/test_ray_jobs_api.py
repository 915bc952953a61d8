"""Submit the embed and mining jobs to a separate `ray start --head` on loopback through the Ray Jobs API."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, SAMPLE, free_port
from test_bitext_e2e import check_pairs_against_corpus, mine_config

pytestmark = pytest.mark.slow
# The working_dir both submitted jobs upload: one package, uploaded once to the module's head.
EXCLUDES = [".venv/", ".models/", ".git/", "**/__pycache__/", "out/"]


@pytest.fixture(scope="module")
def ray_head():
    """A head node of its own (not the session's in-process Ray), with token auth pinned by conftest's env; one per
    module, shared by the tests that submit jobs to it (each writes its own output).

    `ray start --block` in its own process group, so teardown stops exactly this cluster: `ray stop` would stop
    every Ray on the machine. A short temp dir keeps Ray's socket paths under the Unix length limit.
    """
    port, dashboard = free_port(), free_port()
    # Every port of its own: another Ray on the machine (the session's, a developer's) holds the default ones.
    own_ports = [
        f"--{name}={free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "node-manager-port",
            "object-manager-port",
            "ray-client-server-port",
        )
    ]
    ray = str(Path(sys.executable).parent / "ray")
    tmp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=3",
            "--disable-usage-stats",
            f"--temp-dir={tmp}",
            *own_ports,
        ],
        env={**os.environ, "RAY_TMPDIR": tmp},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    wait_until_up(address, head)
    yield address
    for sig in (signal.SIGTERM, signal.SIGKILL):  # up to 3 s to stop cleanly, then its whole group is killed
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=3)
    shutil.rmtree(tmp, ignore_errors=True)


def wait_until_up(address: str, head: subprocess.Popen, timeout: float = 180) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + timeout
    while True:
        assert head.poll() is None, "ray start --head exited early"
        try:
            JobSubmissionClient(address).list_jobs()
            return
        except Exception:  # noqa: BLE001 -- the dashboard is not serving yet; retried until the deadline
            assert time.time() < deadline, f"Ray head at {address} did not come up in {timeout} s"
            time.sleep(0.5)


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
    rc = cli.submit(None, "configs/quickstart.yaml", None, missing, True, sys.executable, runtime_env=probe)
    streamed = capsys.readouterr().out
    assert rc == 1, streamed[-3000:]
    assert "-m jobs.embed" in streamed and "no input files found" in streamed and "finished: FAILED" in streamed
    submitted = re.search(r"submitted (\S+):", streamed).group(1)
    assert client.get_job_info(submitted).runtime_env["env_vars"] == probe["env_vars"]


def sample_vectors(lang: str, dim: int = 16) -> bytes:
    """The sample's rows of `lang` as an embeddings file (the embed job's layout): each sentence's vector is its
    index_id's base vector plus a little noise, so a sentence's nearest other-language row is its translation."""
    import numpy as np
    import pyarrow as pa

    rows = [r for r in map(json.loads, SAMPLE.read_text().splitlines()) if r["lang"] == lang]
    ids = [r["id"] for r in rows]
    base = [np.random.default_rng(int(i.rsplit("-", 1)[1])).normal(size=dim) for i in ids]
    noise = np.random.default_rng(len(lang)).normal(scale=0.05, size=(len(ids), dim))
    x = (np.array(base) + noise).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), dim)
    table = pa.table({"id": ids, "embedding": vectors}).replace_schema_metadata({"rayembed.model": "sample-vectors"})
    body = io.BytesIO()
    pq.write_table(table, body)
    return body.getvalue()


def test_submit_as_ray_job(ray_head, s3_bucket, s3_server, tmp_path):
    """`ray job submit` path of the mining job (moved from test_bitext_e2e to share this module's head): the
    entrypoint runs on a separate head node, reading the texts and the vectors from the S3 server and writing the
    pairs there, its read, join, k-NN and write tasks and shard actor on the cluster. The sides' vectors are given
    (embeddings_uri) and one shard searches: embedding on S3 and two shards are
    test_bitext_e2e::test_mine_from_and_to_s3's, an embed run as a Ray job test_submit_embed_job's; repeating them
    here (two embed runs, a model and two shard actors in the job) cost ~20 s of the suite for nothing new."""
    import yaml
    from ray.job_submission import JobStatus, JobSubmissionClient

    client_s3, bucket = s3_bucket
    client_s3.put_object(Bucket=bucket, Key="corpus/sample.jsonl", Body=SAMPLE.read_bytes())
    raw = mine_config("unused", f"s3://{bucket}/corpus", f"s3://{bucket}/job-out", s3_server)
    for side in ("source", "target"):
        lang = raw[side]["lang"]
        client_s3.put_object(Bucket=bucket, Key=f"vectors/{lang}/part-0.parquet", Body=sample_vectors(lang))
        raw[side]["embeddings_uri"] = f"s3://{bucket}/vectors/{lang}"
    del raw["model"]  # no model runs
    raw["mining"]["num_shards"] = 1  # two shards' search is test_mine_from_and_to_s3's: one actor fewer to start
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    client = JobSubmissionClient(ray_head)
    job_id = submit_when_agent_ready(
        client,
        entrypoint=f"{sys.executable} -m jobs.mine_bitext --config {path}",
        runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES, "env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    status = wait_for_job(client, job_id, timeout=600)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-3000:]
    summary = json.loads(client_s3.get_object(Bucket=bucket, Key="job-out/summary.json")["Body"].read())
    assert summary["source"]["rows_mined"] == summary["target"]["rows_mined"] == 16 and summary["pairs_kept"] == 16
    body = client_s3.get_object(Bucket=bucket, Key="job-out/pairs/part-00000.parquet")["Body"].read()
    pairs = pq.read_table(io.BytesIO(body))
    check_pairs_against_corpus(pairs)
    for src, tgt in zip(pairs.column("src_id").to_pylist(), pairs.column("tgt_id").to_pylist()):
        assert src.rsplit("-", 1)[1] == tgt.rsplit("-", 1)[1]  # each sentence with its translation
