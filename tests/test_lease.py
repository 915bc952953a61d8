"""pipeline.lease: one run per output. Two real job processes, a killed holder, a stale lease, a lost lease, S3
conditional writes on the moto server and a store that ignores them (the fault proxy strips the headers)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import commit
from pipeline.config import StorageConfig
from pipeline.lease import LEASE, Lease, LeaseHeldError, LeaseLostError, holding
from pipeline.objects import get_json, list_tree, put_json
from pipeline.storage import resolve

REPO = Path(__file__).resolve().parents[1]
ROWS = [{"id": f"r{i}", "text": f"sentence number {i} of the corpus"} for i in range(60)]


def foreign(expires_in: float, host: str = "another-host") -> dict:
    """A lease another machine's run wrote."""
    return {
        "job": "embed",
        "owner": f"{host}:4242",
        "run_id": "20261130T120000-abcdef12",
        "host": host,
        "pid": 4242,
        "token": "theirs",
        "started_at": time.time() - 30,
        "expires_at": time.time() + expires_in,
    }


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """(output Location, StorageConfig) on local disk or on the moto S3 server."""
    if request.param == "local":
        storage = StorageConfig()
        return resolve(str(tmp_path / "out"), storage), storage
    _client, bucket = request.getfixturevalue("s3_bucket")
    storage = StorageConfig(endpoint_url=request.getfixturevalue("s3_server"))
    return resolve(f"s3://{bucket}/out", storage), storage


def test_a_live_lease_is_refused_naming_its_holder_and_an_expired_one_taken_over(where, caplog):
    out, storage = where
    put_json(foreign(60), out.join(LEASE))
    with pytest.raises(LeaseHeldError) as refused:
        Lease(out.join(LEASE), "mine", ttl=60, storage=storage).acquire()
    message = str(refused.value)
    assert f"output {out.uri} is being written by another embed run 20261130T120000-abcdef12" in message
    assert "host another-host, pid 4242, started 20" in message and "UTC" in message
    assert "wait for it to finish" in message and f"delete {out.join(LEASE).uri}" in message
    assert get_json(out.join(LEASE))["token"] == "theirs"  # untouched

    put_json(foreign(-1), out.join(LEASE))  # its holder died on another host; the lease expired
    with caplog.at_level(logging.WARNING, logger="pipeline.lease"), Lease(out.join(LEASE), "mine", 60, storage=storage):
        assert get_json(out.join(LEASE))["run_id"] == "mine"
    assert "took over the stale lease of embed run 20261130T120000-abcdef12" in caplog.text
    assert get_json(out.join(LEASE)) is None  # released


def test_a_wait_outlasts_a_dead_holder_on_another_host(where):
    out, storage = where
    put_json(foreign(1.5), out.join(LEASE))
    start = time.monotonic()
    with Lease(out.join(LEASE), "retry", ttl=60, wait=30, storage=storage):
        assert 1.0 < time.monotonic() - start < 15
    with pytest.raises(LeaseHeldError, match=r"refused \(waited 0 s\)"):
        put_json(foreign(60), out.join(LEASE))
        Lease(out.join(LEASE), "retry", ttl=60, wait=0.3, storage=storage).acquire()


def test_racing_runs_have_exactly_one_winner(where):
    """Eight runs that all find no lease at once: one holds it, seven are refused. No settle pause: on S3 the
    conditional create decides (the old write-then-read lease needed one), on local disk the file lock."""
    out, storage = where
    barrier, results, won = threading.Barrier(8), [], []

    def contend(i: int) -> None:
        lease = Lease(out.join(LEASE), f"run-{i}", ttl=60, settle=0, storage=storage)
        barrier.wait()
        try:
            lease.acquire()
            results.append(("won", i))
            won.append(lease)
        except LeaseHeldError:
            results.append(("refused", i))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r for r, _ in results) == ["refused"] * 7 + ["won"]
    winner = next(i for r, i in results if r == "won")
    assert get_json(out.join(LEASE))["run_id"] == f"run-{winner}"
    won[0].release()


def test_a_store_that_ignores_conditional_writes_falls_back_to_write_then_read_back(proxy, s3_bucket, caplog):
    """An S3-compatible store that ignores If-None-Match / If-Match (the proxy strips them): the lease says so in
    the log and falls back to write, pause, read back; racing runs within the pause still leave one winner."""
    _client, bucket = s3_bucket
    proxy.drop_headers = {"if-none-match", "if-match"}
    storage = StorageConfig(endpoint_url=proxy.url)
    target = resolve(f"s3://{bucket}/out", storage).join(LEASE)
    barrier, results, won = threading.Barrier(4), [], []

    def contend(i: int) -> None:
        lease = Lease(target, f"run-{i}", ttl=60, settle=1.0, storage=storage)
        barrier.wait()
        try:
            lease.acquire()
            results.append("won")
            won.append(lease)
        except LeaseHeldError:
            results.append("refused")

    with caplog.at_level(logging.WARNING, logger="pipeline.lease"):
        threads = [threading.Thread(target=contend, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == ["refused"] * 3 + ["won"]
    assert "does not honour conditional writes" in caplog.text
    won[0].release()


def test_an_output_that_refuses_writes_is_one_error_naming_the_lease(proxy, s3_bucket):
    """A bucket or prefix that refuses this run's writes (no s3:PutObject there, a bucket policy, object lock): the
    lease, the first write, died with botocore's bare `ClientError: AccessDenied` traceback. Now a UserError (one
    `error:` line) naming the lease and what to check."""
    from s3_fault_proxy import FaultRule

    from pipeline.errors import UserError

    _client, bucket = s3_bucket
    proxy.rules = [FaultRule(("PUT", "POST", "DELETE"), rf"^/{bucket}/out/", count=100, kinds=(403,))]
    storage = StorageConfig(endpoint_url=proxy.url, max_attempts=1)
    out = resolve(f"s3://{bucket}/out", storage)
    refused = rf"cannot take the output's lease s3://{bucket}/out/_lease.json.*AccessDenied"
    with pytest.raises(UserError, match=refused), holding(out, storage, "embed", 60, 0):
        pass


def test_a_run_that_lost_its_lease_writes_no_marker(where):
    """A run stalled past its lease's expiry (its renewals stopped) and taken over: its next unit marker or
    commit raises LeaseLostError instead of writing into the other run's output."""
    out, storage = where
    stalled = Lease(out.join(LEASE), "stalled", ttl=1.0, storage=storage)
    stalled.acquire()
    stalled._stop.set()  # the renewal thread of a paused process does not run
    stalled._thread.join()
    time.sleep(1.2)
    put_json(foreign(60), out.join(LEASE))  # another host's run found it expired and took it over
    with pytest.raises(LeaseLostError, match="now held by embed run 20261130T120000-abcdef12"):
        commit.mark_unit(out, "k", {"rows": 1})
    with pytest.raises(LeaseLostError):
        commit.commit(out, "embed", {}, "_summary.json")
    assert list_tree(out) == [LEASE]  # no marker, no summary, no _SUCCESS: only the other run's lease
    stalled.release()  # lost: leaves the other run's lease alone
    assert get_json(out.join(LEASE))["token"] == "theirs"


def test_overwrite_clears_everything_but_the_lease_and_the_lease_is_no_foreign_file(where):
    out, storage = where
    with holding(out, storage, "embed", ttl=60):
        assert commit.check_available(out, overwrite=False, resumable=True) is None  # the lease alone: empty
        put_json({"a": 1}, out.join("part-x.parquet"))
        put_json({"job": "embed"}, out.join("_SUCCESS"))
        commit.clear(out)
        assert list_tree(out) == [LEASE]
    assert list_tree(out) == []


# --- two real job processes --------------------------------------------------------------------------------------


def job_config(tmp_path: Path, model: Path, output: str, gcs: str) -> Path:
    """An embed config of 60 rows in two Parquet files, run on the session's Ray at `gcs` (a Ray of its own per job
    process would add its start and stop to each run; the lease is taken before Ray is touched)."""
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        corpus.mkdir()
        for i in range(2):
            pq.write_table(pa.Table.from_pylist(ROWS[i * 30 : (i + 1) * 30]), corpus / f"{i}.parquet")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"input: {{uri: {corpus}, format: parquet, id_column: id}}\noutput: {{uri: '{output}'}}\n"
        f"model: {{name_or_path: {model}, max_tokens: 32}}\n"
        "batching: {max_tokens_per_batch: 256, rows_per_block: 8}\n"
        f"compute: {{ray_address: '{gcs}'}}\n"
    )
    return config


def start_job(config: Path, *overrides: str) -> subprocess.Popen:
    """`python -m jobs.embed`; the environment is this one's, with the session Ray's auth token (conftest)."""
    args = [a for o in overrides for a in ("--set", o)]
    cmd = [sys.executable, "-m", "jobs.embed", "--config", str(config), *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def session_gcs(ray_session) -> str:
    return ray_session.get_runtime_context().gcs_address


def finish(job: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = job.communicate(timeout=600)
    return job.returncode, stdout, stderr


@pytest.mark.slow
def test_two_embed_runs_started_at_once_on_one_output_one_fails_at_once_naming_the_other(
    ray_session, tiny_models, tmp_path
):
    """Two cron jobs fire together: both `python -m jobs.embed` processes start at once on the same output. One
    runs to the end; the other exits 3 within seconds with one `error:` line naming the output and the winner's
    host, pid and start time, and touches nothing. Before, both ran: they interleaved unit markers and part files.
    On local disk only: what differs on S3 is the lease's conditional create, raced by eight contenders, refused
    naming its holder and released on both stores above (a pair of job processes on S3 proved no more); embed
    runs writing to S3 (test_embed_job, test_faults) hold their lease there."""
    output = str(tmp_path / "emb")
    config = job_config(tmp_path, tiny_models["bert"], output, session_gcs(ray_session))
    jobs = [start_job(config), start_job(config)]
    started = time.monotonic()
    results = [finish(j) for j in jobs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 3], [r[2][-2000:] for r in results]
    winner = next(j for j, r in zip(jobs, results) if r[0] == 0)
    loser = next(r for r in results if r[0] == 3)
    errors = [line for line in loser[2].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in loser[2], loser[2][-3000:]
    assert f"error: output {output} is being written by another embed run" in errors[0]
    assert f"host {socket.gethostname()}, pid {winner.pid}, started 20" in errors[0]
    assert json.loads(next(r for r in results if r[0] == 0)[1])["rows_embedded"] == 60
    assert time.monotonic() - started < 600
    out = resolve(output, StorageConfig())
    parts = [p for p in list_tree(out) if p.startswith("part-")]
    table = pa.concat_tables(
        [pq.read_table(out.join(p).path, filesystem=out.fs) for p in parts]  # every id once, from one run
    )
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in ROWS)
    assert commit.is_committed(out) and get_json(out.join(LEASE)) is None  # released at the end


@pytest.mark.slow
def test_a_rerun_with_another_config_or_overwrite_while_the_first_runs_is_refused(ray_session, tiny_models, tmp_path):
    """A user reruns with another prompt, then with output.overwrite=true, while the first run is still going (held
    paused once its Dataset starts, so it cannot finish first). Both exit 3 and neither deletes a file; the first
    run then finishes. Before, the second took over: its configuration differed and nothing was committed yet, so
    it cleared the output under the running job."""
    out = tmp_path / "emb"
    config = job_config(tmp_path, tiny_models["bert"], str(out), session_gcs(ray_session))
    # paused, the first run renews no lease: a TTL far above the time the others take to start on a loaded machine
    first = start_job(config, "output.lease_seconds=1800")
    seen = []
    for line in first.stderr:
        seen.append(line)
        if "Starting execution of Dataset" in line:
            first.send_signal(signal.SIGSTOP)
            break
    try:
        files_before = sorted(list_tree(resolve(str(out), StorageConfig()), temp_files=True))
        # both at once: each is refused before it starts Ray, and neither may take the lease from the other
        reruns = [start_job(config, "model.prompt=query: "), start_job(config, "output.overwrite=true")]
        for code, _, stderr in map(finish, reruns):
            assert code == 3, stderr[-3000:]
            assert f"error: output {out} is being written by another embed run" in stderr
            assert f"pid {first.pid}," in stderr
        assert sorted(list_tree(resolve(str(out), StorageConfig()), temp_files=True)) == files_before
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, ("".join(seen) + stderr)[-3000:]
    assert json.loads(stdout)["rows_embedded"] == 60
    # once it is done, nothing holds the output: an overwrite may start over (a full run of it was the test's
    # slowest step; the lease file is what would refuse it)
    done = resolve(str(out), StorageConfig())
    assert commit.is_committed(done) and get_json(done.join(LEASE)) is None


def test_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path):
    """kill -9 of a run (the OOM killer): its lease stays on storage, live for its TTL, but its pid is gone on this
    host, so the next run takes it over at once instead of waiting out the TTL."""
    out = resolve(str(tmp_path / "out"), StorageConfig())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "from pipeline.config import StorageConfig\n"
                "from pipeline.lease import holding\n"
                "from pipeline.storage import resolve\n"
                f"with holding(resolve({str(tmp_path / 'out')!r}, StorageConfig()), StorageConfig(), 'embed', 600):\n"
                "    print('held', flush=True)\n"
                "    time.sleep(600)\n"
            ),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(LeaseHeldError, match=f"pid {holder.pid},"):
        Lease(out.join(LEASE), "next", ttl=60).acquire()
    holder.kill()
    holder.wait()
    assert get_json(out.join(LEASE))["pid"] == holder.pid  # left behind, not expired
    start = time.monotonic()
    with Lease(out.join(LEASE), "next", ttl=60):
        assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("job", "config"),
    [
        ("cluster", "input: {{uri: {d}/emb}}\noutput: {{uri: {d}/out}}\nclustering: {{k: 2}}\n"),
        (
            "mine_bitext",
            "source: {{uri: {d}/a, lang: fra}}\ntarget: {{uri: {d}/b, lang: eng}}\noutput: {{uri: {d}/out}}\n",
        ),
        (
            "reembed",
            "input: {{uri: {d}/corpus}}\noutput: {{uri: {d}/out}}\nmodel: {{name_or_path: {model}}}\n",
        ),
    ],
)
def test_every_job_that_writes_an_output_holds_its_lease(job, config, tmp_path, capsys, tiny_models):
    """The clustering, mining and re-embed jobs refuse an output another run holds, exit 3, before reading their
    inputs (which do not exist here)."""
    import importlib

    (tmp_path / "c.yaml").write_text(config.format(d=tmp_path, model=tiny_models["bert"]))
    out = resolve(str(tmp_path / "out"), StorageConfig())
    put_json(foreign(60), out.join(LEASE))
    module = importlib.import_module(f"jobs.{job}")
    assert module.main(["--config", str(tmp_path / "c.yaml")]) == 3
    assert f"error: output {tmp_path / 'out'} is being written by another embed run" in capsys.readouterr().err
