"""Where the mining job's steps run: Ray tasks (the job) or the calling process (`mining.backend: local`).

Both executors take the same plain functions, so every step is one function tested in-process and run unchanged as a
Ray task. Through Ray, results stay in the object store as references: the driver passes them from one task to the
next (Ray resolves top-level reference arguments) and fetches only small summaries, never a side's rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.shared_output import RunLease, checking_first
from pipeline.transient_errors import retrying


class LocalExecutor:
    """Runs each step immediately in this process; `get` and `put` are the identity."""

    distributed = False

    def put(self, value: Any) -> Any:
        return value

    def submit(self, fn: Callable, *args: Any, num_returns: int = 1) -> Any:
        return fn(*args)

    def get(self, value: Any) -> Any:
        return value

    def wait_one(self, pending: list) -> tuple[Any, list]:
        return pending[0], pending[1:]


class RayExecutor:
    """Runs each step as a Ray task reserving `cpus`, retried `max_retries` times when its worker dies and, inside
    the task with backoff, when it raises a transient storage error (pipeline.transient_errors.retrying: a step
    recomputes its whole return and rewrites its own output objects).

    `lease`: the run's lease in a local output (pipeline.shared_output.run_lease): every step reads or writes the
    job's work files under that output, so each task first checks that its node sees the driver's folder there."""

    distributed = True

    def put(self, value: Any) -> Any:
        """One copy in the object store; pass the reference to many tasks or actor calls."""
        return self._ray.put(value)

    def __init__(self, cpus: float, max_retries: int, lease: RunLease | None = None):
        import ray

        self._ray = ray
        self._options = {"num_cpus": cpus, "max_retries": max_retries}
        self._retries = max_retries
        self._lease = lease
        self._remote: dict[Callable, Any] = {}

    def submit(self, fn: Callable, *args: Any, num_returns: int = 1) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(checking_first(retrying(fn, self._retries), self._lease))
        return self._remote[fn].options(num_returns=num_returns, **self._options).remote(*args)

    def get(self, value: Any) -> Any:
        return self._ray.get(value)

    def wait_one(self, pending: list) -> tuple[Any, list]:
        """Wait for the first of `pending` to finish; returns its value and the rest."""
        done, rest = self._ray.wait(pending, num_returns=1)
        return self._ray.get(done[0]), rest
