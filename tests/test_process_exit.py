"""exit_process: the job processes' quick exit keeps the exit status and every line printed, and stops their Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, tmp_path: Path, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONUNBUFFERED", None)  # buffered, as for a user: the final flush is what is tested
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_exit_keeps_the_status_and_flushes_stdout_stderr_and_logging(tmp_path):
    done = run_python(
        f"""
        import logging, sys
        from pipeline.process_exit import exit_process
        logging.basicConfig(filename={str(tmp_path / "job.log")!r}, level=logging.INFO)
        logging.getLogger("job").info("logged line")
        sys.stdout.write("no newline on stdout")  # buffered: lost by a bare os._exit when stdout is a pipe
        sys.stderr.write("no newline on stderr")
        exit_process(3)
        """,
        tmp_path,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "no newline on stdout"
    assert done.stderr.endswith("no newline on stderr")
    assert "logged line" in (tmp_path / "job.log").read_text()
    assert run_python("from pipeline.process_exit import exit_process; exit_process(None)", tmp_path).returncode == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to fail every write")
def test_exit_reports_stdout_it_cannot_write_and_never_exits_0(tmp_path):
    code = "import sys; from pipeline.process_exit import exit_process; print('summary'); exit_process({})"
    with open("/dev/full", "w") as full:
        done = run_python(code.format(0), tmp_path, stdout=full)  # a full disk behind `> summary.json`
        assert done.returncode == 120  # as the interpreter's own exit on a failed flush
        assert "error: could not write the job's <stdout>" in done.stderr
        assert run_python(code.format(3), tmp_path, stdout=full).returncode == 3  # a failure keeps its own status


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to fail every write")
@pytest.mark.parametrize(
    "command",
    [
        [
            "-c",
            "from pipeline.process_exit import write_stdout, exit_process; write_stdout('summary\\n'); exit_process(0)",
        ],
        ["-m", "jobs.embed", "--config", "configs/quickstart.yaml", "--show-config"],
        ["-m", "pipeline.cli", "config", "show", "configs/quickstart.yaml"],
    ],
    ids=["write_stdout", "jobs.embed --show-config", "rayembed config show"],
)
def test_a_summary_written_to_a_full_disk_is_one_error_line_and_exit_120(command):
    """`> summary.json` on a full disk: write_stdout flushes at once, so the error comes there, not at exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, *command],
            check=False,
            cwd=ROOT,
            env=env,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 120, done.stderr
    assert done.stderr.count("error: could not write the job's <stdout>: [Errno 28]") == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_ctrl_c_while_ray_stops_keeps_the_jobs_status(tmp_path):
    """The user saw "done:" and pressed Ctrl-C while Ray stops (a second or two): still 0, no traceback."""
    done = run_python(
        """
        import os, signal, sys, time, types
        from pipeline.process_exit import exit_process
        ray = types.ModuleType("ray")  # a stand-in whose shutdown is interrupted like a slow real one
        ray.is_initialized = lambda: True
        ray.shutdown = lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.3))
        sys.modules["ray"] = ray
        print("done")
        exit_process(0)
        """,
        tmp_path,
    )
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_exit_stops_the_ray_the_process_started_the_autoscaler_monitor_first(tmp_path):
    """Ray 2.60's ray.shutdown stops the monitor after the GCS and waits out its 1 s grace; exit kills it first, then
    ray.shutdown stops the rest: no process of the Ray this process started outlives it. (One process: these were
    two tests, each with a Python and a Ray start.)"""
    done = run_python(
        """
        import ray, psutil
        from pipeline.process_exit import exit_process, stop_autoscaler_monitor
        ray.init(num_cpus=1, include_dashboard=False)
        children = psutil.Process().children(recursive=True)
        monitors = [p for p in psutil.Process().children() if "/autoscaler/" in " ".join(p.cmdline())]
        print(len(monitors), stop_autoscaler_monitor(), all(not p.is_running() for p in monitors))
        print(stop_autoscaler_monitor())  # none left: nothing to do
        print(*[p.pid for p in children if p not in monitors])
        exit_process(0)  # stops the other processes as ray.shutdown does
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() + lines[1].split() == ["1", "True", "True", "False"], done.stdout
    children = [int(pid) for pid in lines[2].split()]
    assert children, "Ray started no process"  # GCS, raylet, workers...
    deadline = time.monotonic() + 20
    while (alive := [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert not alive, f"Ray processes left running after exit_process: {alive}"


@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize(
    "command",
    [
        ["jobs.embed", "--config", "configs/quickstart.yaml", "--show-config"],
        ["pipeline.cli", "config", "show", "configs/quickstart.yaml"],
    ],
    ids=["jobs.embed --show-config", "rayembed config show"],
)
def test_a_reader_that_closes_stdout_early_is_no_error(command, unbuffered):
    """`... | head -1`: the pipe closes before the first write; exit 0, no traceback, no 'could not write'."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", *command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # before the child's imports are done, so every write meets a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr and "could not write" not in stderr, stderr


def test_a_clusters_monitor_is_not_this_processes_to_stop(tmp_path):
    done = run_python(
        """
        import ray, psutil
        from ray.cluster_utils import Cluster
        from pipeline.process_exit import stop_autoscaler_monitor
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        monitors = [p for p in psutil.Process().children() if "/autoscaler/" in " ".join(p.cmdline())]
        ray.init(address=cluster.address)
        print(stop_autoscaler_monitor(), [p.is_running() for p in monitors])
        ray.shutdown()
        cluster.shutdown()
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "[True]"], done.stdout


@pytest.mark.parametrize(
    "when",
    ["once Ray runs", pytest.param("while Ray starts", marks=pytest.mark.slow)],
)
def test_sigterm_stops_the_job_as_ctrl_c_does_and_exits_143(when, tmp_path):
    """SIGTERM (a pod evicted or deleted, `ray job stop`, `kill`, `timeout`) to a job that started Ray in-process.

    Before: once Ray ran, its core worker's handler printed a C++ stack dump and aborted the driver (SIGABRT, exit
    -6 / 134); while `ray.init` ran, Ray's own handler exited with status 15; no `interrupted:` line either way,
    and after the abort no `finally` ran, so a re-embed run's lease stayed held until its expiry (a RayJob retry
    on a new pod waited up to reembed.lease_ttl_seconds). With the handler in place, a SIGTERM while `ray.get`
    waited still exited 130 (Ray raises the interrupt again as a plain KeyboardInterrupt). Now: the
    `interrupted:` line, the lease released, exit 143. Found by bench/kill_anywhere.py."""
    (tmp_path / "job.yaml").write_text(
        f"input: {{uri: {tmp_path / 'corpus.jsonl'}}}\noutput: {{uri: {tmp_path / 'out'}}}\n"
    )
    done = run_python(
        f"""
        import os, signal, threading, time
        import ray
        from jobs.common import run_job
        from pipeline.config import EmbedConfig, StorageConfig
        from pipeline.embed_job import init_ray
        from pipeline.process_exit import exit_process
        from pipeline.reembed.lease import Lease
        from pipeline.storage import resolve

        def terminate():
            os.kill(os.getpid(), signal.SIGTERM)

        def run(cfg):
            with Lease(resolve("lease.json", StorageConfig()), "run-1", ttl=600, settle=0):
                print("lease held", os.path.exists("lease.json"), flush=True)
                if {when!r} == "while Ray starts":
                    threading.Timer(0.5, terminate).start()  # ray.init takes seconds
                init_ray(cfg.compute)  # ray.init installs Ray's own SIGTERM handlers
                threading.Timer(1.0, terminate).start()
                ray.get(ray.remote(lambda: time.sleep(60)).remote())  # Ray re-raises an interrupt here as a plain one

        exit_process(run_job("test", EmbedConfig, run, ["--config", "job.yaml"], name="embed", resumable=True))
        """,
        tmp_path,
    )
    assert done.returncode == 143, done.stderr[-3000:]
    assert done.stdout == "lease held True\n"
    assert "interrupted: the embed job stopped; the same command resumes it" in done.stderr
    assert "SIGTERM received" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "lease.json").exists(), "the lease was not released"


def test_the_job_modules_leave_ray_and_torch_to_the_run_so_an_early_ctrl_c_is_one_line(tmp_path):
    """`python -m jobs.<name>` used to import Ray, torch and transformers before run_job handled interrupts (5-17 s
    on a loaded 2-core machine): a Ctrl-C then printed a 30-line KeyboardInterrupt traceback and exited 1 or -2,
    a SIGTERM ended it with -15 (found by bench/kill_anywhere.py). They load inside the run now."""
    done = run_python(
        """
        import sys
        import jobs.cluster, jobs.embed, jobs.mine_bitext, jobs.reembed
        print(sorted(m for m in ("ray", "torch", "transformers") if m in sys.modules))
        """,
        tmp_path,
    )
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr
