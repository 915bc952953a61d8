"""One writer per output: a lease object with an owner and an expiry, renewed while the job runs.

pyarrow gives no conditional PUT, so acquisition is write-then-verify: a run that sees no live lease writes its
own, waits `settle` seconds and reads it back; of two runs that raced, only the one whose write landed last
still finds its token and proceeds, the other refuses. The holder re-reads the lease before every marker and
before publishing, so even a run that lost its lease (paused past the expiry) stops before writing anything a
reader could see. Data files are written under per-run paths, so a loser never overwrites the winner's files.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from pipeline.objects import get_json, put_json
from pipeline.storage import Location

log = logging.getLogger(__name__)
POLL_SECONDS = 5.0  # re-read of a held lease while waiting for it (reembed.lease_wait_seconds)


class LeaseHeldError(RuntimeError):
    """Another run holds the output's lease; the message names it and says how to proceed."""


class LeaseLostError(RuntimeError):
    """This run's lease was taken over (it expired while the run was stalled); nothing was published."""


def describe(lease: dict[str, Any]) -> str:
    left = lease["expires_at"] - time.time()
    return (
        f"{lease['owner']} (run {lease['run_id']}, host {lease['host']}, pid {lease['pid']}, expires in {left:.0f} s)"
    )


def is_stale(lease: dict[str, Any], now: float) -> bool:
    """Expired, or held by a process on this host that no longer exists (a killed driver)."""
    if lease["expires_at"] <= now:
        return True
    if lease["host"] != socket.gethostname():
        return False
    try:
        os.kill(lease["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by another user
    return False


class Lease:
    """Context manager: acquire on enter, renew in a daemon thread, release on exit."""

    def __init__(
        self, target: Location, run_id: str, ttl: float, settle: float, owner: str | None = None, wait: float = 0.0
    ):
        """`wait`: seconds to wait for a live lease of another run to be released or to expire before refusing
        (0: refuse at once)."""
        self.target, self.run_id, self.ttl, self.settle, self.wait = target, run_id, ttl, settle, wait
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.token = uuid.uuid4().hex
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": self.token,
            "expires_at": time.time() + self.ttl,
        }

    def acquire(self) -> None:
        held = self.wait_for_release()
        if held is not None:
            log.warning("taking over the stale lease of %s", describe(held))
        put_json(self.record(), self.target)
        time.sleep(self.settle)
        now = get_json(self.target)
        if now is None or now["token"] != self.token:
            raise LeaseHeldError(self.refusal(now) if now else f"lease {self.target.uri} vanished while acquiring it")
        self._thread = threading.Thread(target=self._renew_loop, name="reembed-lease", daemon=True)
        self._thread.start()

    def wait_for_release(self) -> dict[str, Any] | None:
        """The stored lease once it is gone or stale, polled for at most `self.wait` seconds.

        Raises:
            LeaseHeldError: another run's lease is still live after the wait.
        """
        deadline = time.monotonic() + self.wait
        held = get_json(self.target)
        if held is not None and not is_stale(held, time.time()) and self.wait > 0:
            log.warning("output lease held by %s; waiting up to %.0f s for it to end", describe(held), self.wait)
        while held is not None and not is_stale(held, time.time()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise LeaseHeldError(self.refusal(held))
            time.sleep(max(0.05, min(POLL_SECONDS, left, held["expires_at"] - time.time())))
            held = get_json(self.target)
        return held

    def refusal(self, held: dict[str, Any]) -> str:
        return (
            f"output {self.target.uri.rsplit('/', 1)[0]} is being written by {describe(held)}. Two re-embed runs "
            f"on one output are refused{f' (waited {self.wait:.0f} s)' if self.wait > 0 else ''}; wait for it to "
            f"finish, or if it is dead, wait for the expiry (reembed.lease_wait_seconds waits for it) or delete "
            f"{self.target.uri}"
        )

    def check(self) -> None:
        """Raise LeaseLostError unless the stored lease is still ours (read from storage, not cached)."""
        now = get_json(self.target)
        if now is None or now["token"] != self.token:
            self.lost = f"lease {self.target.uri} now held by {describe(now) if now else 'nobody'}"
        if self.lost:
            raise LeaseLostError(f"{self.lost}; stopping without publishing")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.check()
                put_json(self.record(), self.target)
            except LeaseLostError:
                return
            except OSError as err:  # a storage hiccup: the next renewal retries well before expiry
                log.warning("renewing lease %s failed: %s", self.target.uri, err)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        now = get_json(self.target)
        if now is not None and now["token"] == self.token:
            self.target.fs.delete_file(self.target.path)

    def __enter__(self) -> Lease:  # noqa: PYI034 (py3.10 has no typing.Self)
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
