"""Ray that does not start, in this process or at a cluster address: one `error:` line from every job, not Ray's
traceback (pipeline.embed_job.init_ray, the one place every job starts or joins Ray)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO

from pipeline.embed_job import start_failure


@pytest.fixture
def ray_tmpdir():
    """A short RAY_TMPDIR of the test's own (Ray's socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_python(args: list[str], env: dict[str, str], ray_tmpdir: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full.update(PYTHONPATH=str(REPO), RAY_TMPDIR=ray_tmpdir, HF_HUB_OFFLINE="1", **env)
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=180, check=False
    )


def test_ray_failing_to_start_in_process_is_one_error_saying_what_to_do(ray_tmpdir):
    """Provoked for real: a port setting Ray cannot parse (RAY_GCS_SERVER_PORT=abc: Ray's ValueError) and a RAY_*
    setting it cannot use (RAY_gcs_storage=rocksdb without its path). Both were tracebacks out of ray.init; each is
    a RayStartError (a UserError, which the jobs print as one line) naming the variable and what to do."""
    code = textwrap.dedent(
        """
        import json, os
        from pipeline.config import ComputeConfig
        from pipeline.embed_job import RayStartError, init_ray
        from pipeline.errors import UserError
        said = []
        for name, value in [("RAY_GCS_SERVER_PORT", "abc"), ("RAY_gcs_storage", "rocksdb")]:
            os.environ[name] = value
            try:
                init_ray(ComputeConfig(dashboard=False))
                said.append(["started", ""])
            except RayStartError as err:
                said.append([isinstance(err, UserError), str(err)])
            del os.environ[name]
        print(json.dumps(said))
        """
    )
    done = run_python(["-c", code], {}, ray_tmpdir)
    assert done.returncode == 0, done.stderr[-3000:]
    (port_ok, port), (rocks_ok, rocks) = json.loads(done.stdout.strip().splitlines()[-1])
    assert port_ok is True and rocks_ok is True
    assert port.startswith("cannot start Ray in this process: ValueError: invalid literal for int()")
    assert "A port Ray was told to use is taken or is no port number" in port
    assert "RAY_GCS_SERVER_PORT" in port and "RAY_gcs_storage" not in port
    assert rocks.startswith("cannot start Ray in this process: ValueError: RAY_gcs_storage=rocksdb requires")
    assert "RAY_* variables set here: " in rocks and "RAY_gcs_storage" in rocks
    assert f"{ray_tmpdir}/ray/session_latest/logs" in rocks
    assert "TOKEN" not in port + rocks  # the token's variables are never named (their value may be a secret)


def test_the_message_follows_what_ray_said():
    """Ray's own words for its start-up limit (ray/_private/node.py) and for a GCS whose port is taken
    (ray/_private/node.py `Failed to start GCS`, as printed by a real start with RAY_GCS_SERVER_PORT on a port in
    use, which takes Ray ~40 s to give up: too slow for this suite)."""
    timeout = Exception(
        "The current node timed out during startup. This could happen because some of the raylet failed to "
        "startup or the GCS has become overloaded."
    )
    said = start_failure(timeout, None, "RAY_ADDRESS")
    assert said.startswith("cannot start Ray in this process: Exception: The current node timed out during startup")
    assert "fixed 30 s to start" in said and "ray start --head" in said and "RAY_ADDRESS=auto" in said
    taken = RuntimeError(
        "Failed to start GCS.  Last 1 lines of error files:\n[...] (gcs_server) grpc_server.cc:134: ... Check failed:"
        " server_ Failed to start the grpc server. The specified port is 47111. ... `Address already in use` ..."
    )
    said = start_failure(taken, "10.0.0.1:6379", "compute.ray_address")
    assert said.startswith("cannot connect to the Ray cluster at 10.0.0.1:6379 (compute.ray_address): RuntimeError:")
    assert "\n" not in said and "port Ray was told to use is taken" in said
    assert "Ray's own logs" not in said  # a cluster's logs are on its head, not here


def test_the_port_advice_only_for_a_port(monkeypatch):
    """The port advice came for any text holding "port" ("not supported", "import") and whenever a RAY_*PORT*
    variable was set: now for Ray's words on a port, or a RAY_*_PORT setting that is no whole number (named)."""
    for name in [v for v in os.environ if v.startswith("RAY_")]:
        monkeypatch.delenv(name)
    port_advice = "port Ray was told to use is taken"
    monkeypatch.setenv("RAY_GCS_SERVER_PORT", "6380")  # a good port, set: not the cause of an unrelated failure
    for unrelated in ("object spilling to this URI is not supported", "cannot import name 'x' from 'ray._raylet'"):
        said = start_failure(ValueError(unrelated), None, "RAY_ADDRESS")
        assert port_advice not in said and "Check the Ray settings" in said and "RAY_GCS_SERVER_PORT" in said
    said = start_failure(ValueError("The port 6380 is in use"), None, "RAY_ADDRESS")
    assert port_advice in said and "not a port number" not in said
    monkeypatch.setenv("RAY_DASHBOARD_PORT", " 8265x")
    said = start_failure(ValueError("invalid literal for int() with base 10: '8265x'"), None, "RAY_ADDRESS")
    assert port_advice in said and said.count("not a port number: RAY_DASHBOARD_PORT") == 1


def test_every_job_entry_point_says_it_in_one_line(ray_tmpdir, tmp_path):
    """`rayembed cluster CONFIG` (the console script, through the job's own entry point) with Ray failing to start:
    exit 1, one `error:` line, no traceback. Every job starts Ray through the same init_ray."""
    rows = 8
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(rows)],
            "embedding": pa.array(list(np.eye(rows, 4, dtype=np.float32)), type=pa.list_(pa.float32(), 4)),
        }
    )
    (tmp_path / "emb").mkdir()
    pq.write_table(table, tmp_path / "emb" / "part-0.parquet")
    config = tmp_path / "cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": {"uri": str(tmp_path / "emb"), "id_column": "id", "embedding_column": "embedding"},
                "output": {"uri": str(tmp_path / "out")},
                "clustering": {"k": 2},
            }
        )
    )
    done = run_python(["-m", "pipeline.cli", "cluster", str(config)], {"RAY_GCS_SERVER_PORT": "abc"}, ray_tmpdir)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot start Ray in this process: ValueError:")
    assert "RAY_GCS_SERVER_PORT" in errors[0]
