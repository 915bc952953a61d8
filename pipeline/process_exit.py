"""End a job's process as soon as the job is done, instead of through the interpreter's slow teardown; turn
SIGTERM into an interruption the job handles as it handles Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn


def exit_process(code: int | None) -> NoReturn:
    """Stop the Ray this process started (or disconnect from a cluster), flush, and end the process with `code`.

    For the `__main__` of the jobs and of `rayembed` only, once the job has returned: every file it wrote is closed
    and its summary printed. A library caller (tests, a notebook) calls `main()` and keeps its process.

    What it skips, and why (measured in docs/performance.md, "The job's exit"): Ray's exit handler sleeps
    before stopping the Ray it started so that straggling worker log lines get printed, and the interpreter then
    tears down torch, transformers, pyarrow and Ray module by module; together seconds of a short job's wall time.
    Worker log lines that reach the driver after the job returned may be cut; they are in Ray's session logs.

    `code`: the exit status (None is 0). A failure to flush stdout or stderr is reported on file descriptor 2 and
    turns a 0 into 120, as the interpreter's own exit does. Ctrl-C is ignored from here on: the job has returned,
    and stopping Ray takes a second or two.
    """
    ignore_sigint()  # the job is over: a Ctrl-C now (the user saw "done:") must not make it a traceback and exit 1
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nor a SIGTERM: stopping Ray takes a second or two
    ray = sys.modules.get("ray")  # imported by every job that started or joined Ray; never imported here for nothing
    if ray is not None and ray.is_initialized():
        stop_autoscaler_monitor()
        ray.shutdown()
    logging.shutdown()
    code = code or (120 if _stdout_failed else 0)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError) as err:
            # What the interpreter's own exit does when the standard streams cannot be flushed (a full disk behind
            # `> summary.json`, a reader that closed the pipe): say so and exit 120, never a silent 0.
            code = code or 120
            report_unwritable(stream, err)
    os._exit(code)


def stop_autoscaler_monitor() -> bool:
    """Kill the autoscaler monitor of the Ray head this process started, before `ray.shutdown` stops the rest.

    `ray.shutdown` stops a head's processes one kind at a time, each with SIGTERM and up to 1 s of grace: the raylet,
    then the GCS, then the monitor. The monitor's SIGTERM handler reports its own end to the GCS, which is gone by
    then, so it outlives the grace and is killed all the same, 1 s later on every run (Ray 2.60; `ray stop` stops the
    GCS last since ray-project/ray#30672, `ray.shutdown` does not). The monitor holds no state of the run. Killing it
    first leaves `ray.shutdown` the same processes to stop, minus that second.

    Returns whether a monitor was killed: False when connected to a cluster (its monitor is not this process's),
    when none runs, or when this Ray's internals differ from 2.60's (then `ray.shutdown` alone stops everything).
    """
    try:
        from ray._private import ray_constants, worker

        node = worker._global_node
        infos = node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node and node.is_head() else []
        processes = [info.process for info in infos]
    except (ImportError, AttributeError):
        return False
    killed = False
    for process in processes:
        if process.poll() is None:
            process.kill()
            try:
                process.wait(timeout=10)  # reaped, as ray.shutdown reaps the processes it kills
            except subprocess.TimeoutExpired:
                pass  # ray.shutdown waits on it again and logs it if it never ends
            killed = True
    return killed


def report_unwritable(stream, err: OSError | ValueError) -> None:
    """The one line for a standard stream that refused a write, on file descriptor 2 (stderr may be that stream)."""
    try:
        os.write(2, f"error: could not write the job's {getattr(stream, 'name', 'output')}: {err}\n".encode())
    except OSError:
        pass


TERMINATED = 143  # the exit status of a job stopped by SIGTERM: 128 + 15, what a shell reports for it


class Terminated(KeyboardInterrupt):
    """SIGTERM received: the job stops as on Ctrl-C (its `finally` blocks run, a re-embed lease is released) and
    exits with TERMINATED."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"signal {signum}")


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread (elsewhere nothing changes).

    SIGTERM is what stops a job from outside: Kubernetes evicting or deleting a pod (then SIGKILL after the grace
    period), `ray job stop`, `kill`, `timeout`, systemd. Ray replaces the handler in `ray.init` (with `sys.exit`)
    and its core worker then installs a C++ one that prints a stack dump and aborts the process (SIGABRT, exit 134):
    no `finally` block ran, so a re-embed run's lease stayed held until its expiry and the job said nothing about
    resuming. Called by the job entrypoints and again by `pipeline.embed_job.init_ray` once Ray is up.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def ignore_sigint() -> Callable | int | None:
    """Ignore Ctrl-C (SIGINT) from now on; returns the handler it replaced. Signals are set in the main thread only:
    elsewhere nothing changes and None is returned."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ctrl-C does nothing inside (main thread only): a second one cannot cut the handling of the first."""
    previous = ignore_sigint()
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def write_stdout(text: str) -> None:
    """Write `text` to stdout and flush, without raising: what cannot be written is reported, never a traceback.

    - A reader that closed the pipe (`... | head -1`) takes no more: the rest is dropped and the exit status is kept
      (the recipe of Python's signal module documentation for SIGPIPE).
    - Any other write error (a full disk behind `> summary.json`) is said once on stderr, and exit_process then
      turns a 0 into 120, as the interpreter does when it cannot flush stdout at exit.

    In both cases standard output points at os.devnull from then on, so that a later print or the final flush
    does not fail again.
    """
    global _stdout_failed
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _point_stdout_at_devnull()
    except OSError as err:
        _stdout_failed = True
        report_unwritable(sys.stdout, err)
        _point_stdout_at_devnull()


_stdout_failed = False  # set by write_stdout when stdout refused a write other than a closed pipe


def _point_stdout_at_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
