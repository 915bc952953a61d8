"""CPU seconds of a command's whole process tree, Ray's daemons and workers included (Linux).

This process becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER): descendants orphaned when their parent exits
(Ray's raylet, GCS and workers after the driver's exit) are reparented here and reaped by reap_orphans, so their CPU
lands in this process's RUSAGE_CHILDREN (children_cpu). On a machine loaded by other work, CPU seconds move little
where wall seconds move a lot. Used by bench.start_cost, bench.process_cpu and bench.reembed_nightly_cost.

A lower bound: Ray's raylet ignores SIGCHLD, so a worker that exits while the raylet runs (an idle worker it ends, a
killed actor) reaches no parent's RUSAGE_CHILDREN and is not counted (docs/performance.md, "Where the fixed cost
went"). Compare two commands counted this way; for absolute figures, sample the tree (bench.wallclock does).
"""

from __future__ import annotations

import ctypes
import os
import resource
import time

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux prctl); False where that is not available."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children_cpu() -> float:
    """user + system CPU seconds of every descendant reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap_orphans(seconds: float = 60.0) -> None:
    """Wait for every descendant left over (Ray's daemons stop after the driver's exit), at most `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.1)
