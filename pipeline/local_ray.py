"""Ray's settings for a head that a job starts in its own process (no cluster address): where Ray's defaults cost
a one-node job CPU for nothing. A cluster's head is its administrator's; a job that connects to one changes nothing.

Idle workers. A raylet kills a worker that has been idle for a second once its node runs more workers than
`num_workers_soft_limit` (default: the node's CPUs), and that count includes the workers that hold actors. A job's
long-lived actors (the tokenizer and model actors, and the three Ray Data starts for itself: its stats actor,
autoscaling coordinator and actor-location tracker) fill that count on a small node, so every task worker was
killed a second after its task: the kept-column pre-pass, the read and the write tasks each started a new Python
worker (~1 CPU-s each, and the write on the job's critical path, docs/performance.md). The limit is raised by
`KEPT_WORKERS_BEYOND_CPUS`, so the task workers are reused; Ray still starts no more workers than the tasks need.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Workers a node may hold beyond its CPUs before idle ones are killed: room for the actors of one node (model
# actors, one per GPU of up to 8, tokenizer actors, Ray Data's three) with the task workers kept beside them.
KEPT_WORKERS_BEYOND_CPUS = 16


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), as Ray counts a local node's CPUs by default."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def head_environment(cpus: int | None = None) -> dict[str, str]:
    """Ray's settings for a head with `cpus` CPUs (default: usable_cpus), as the `RAY_<name>` environment variables
    its raylet reads at start. A value the user set in the environment is left to win."""
    wanted = {"RAY_num_workers_soft_limit": str((cpus or usable_cpus()) + KEPT_WORKERS_BEYOND_CPUS)}
    return {name: value for name, value in wanted.items() if not os.environ.get(name)}


@contextlib.contextmanager
def local_head_settings(cpus: int | None = None) -> Iterator[None]:
    """Around a `ray.init` that may start a head in this process: head_environment set in this process's
    environment, which the head's processes inherit, and taken out again afterwards.

    Through the environment rather than `ray.init(_system_config=...)`: a `ray.init()` without an address joins
    the cluster that `ray start` last started on this machine, where `_system_config` is refused (ValueError) and
    these variables do nothing.
    """
    values = head_environment(cpus)
    os.environ.update(values)
    try:
        yield
    finally:
        for name in values:
            os.environ.pop(name, None)
