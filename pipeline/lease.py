"""One writer per output: a lease object `<out>/_lease.json` with an owner and an expiry, renewed while the run lives.

Every job that writes an output (embed, reembed, cluster, mine_bitext and their nested embed steps) holds its
output's lease for the whole run, so a second run started on the same output (two cron jobs, a rerun while the first
still runs) fails before it reads, deletes or writes anything, naming the holder (host, pid, start time). A run that
died (kill -9, a lost node) leaves its lease behind: it is stale once its expiry passes (the holder renews it every
third of `ttl`), or at once when it was held by a process of this host that no longer exists.

Every change of the lease is a compare-and-swap on the store:
- S3: conditional writes, `If-None-Match: *` to create and `If-Match: <ETag>` to renew, take over or delete
  (through boto3: pyarrow's S3 client sends no conditional headers). A store that ignores the headers (older
  S3-compatible servers) is detected by a second create that should fail; there the lease falls back to
  write, wait `settle` seconds, read back: two runs that race within that window can both proceed (logged).
- local disk (and POSIX shared filesystems with working locks, e.g. NFSv4): the lease file itself is locked
  (flock) for each read-decide-write; a killed holder's lock goes with its process.
Times are wall clock (time.time()): hosts sharing an output need synchronised clocks (NTP); the expiry is in
the lease for that reason, in seconds since the epoch.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow.fs as pafs

from pipeline.config import StorageConfig
from pipeline.errors import LeaseHeldError, UserError
from pipeline.storage import Location, missing_folders, remove_empty_folders

log = logging.getLogger(__name__)

LEASE = "_lease.json"
POLL_SECONDS = 5.0  # re-read of a held lease while waiting for it (wait > 0)
__all__ = ["LEASE", "Lease", "LeaseHeldError", "LeaseLostError", "holding", "is_lease_file", "verify_held"]
KEEP, DELETE = object(), object()  # what an update returns: leave the lease as it is / delete it


class LeaseStoreError(UserError, RuntimeError):
    """The output's lease could not be read or written (the location refuses this run's requests: no write access,
    a bucket policy, object lock / WORM; or the store kept failing): the message names the lease and the error."""


class LeaseLostError(UserError, RuntimeError):
    """This run's lease was taken over (it expired while the run was stalled); the run stops before its next commit,
    with one error line naming the run that holds it now."""


def is_lease_file(rel: str) -> bool:
    """The lease of the location a path is relative to, or the temp file of its fallback write: never data, never
    a foreign file, never deleted by the run that holds it (pipeline.commit.clear)."""
    return rel == LEASE or (posixpath.dirname(rel) == "" and rel.startswith(f".{LEASE}."))


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(held: dict[str, Any]) -> str:
    """The holder in words: job, host, pid, start time, run id, expiry."""
    left = held.get("expires_at", 0) - time.time()
    job = f"{held['job']} " if held.get("job") else ""
    started = f", started {_when(held['started_at'])}" if "started_at" in held else ""
    return (
        f"{job}run {held.get('run_id', '?')} ({held.get('owner', '?')}: host {held.get('host', '?')}, pid "
        f"{held.get('pid', '?')}{started}; lease expires in {left:.0f} s unless renewed)"
    )


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def is_stale(held: dict[str, Any], now: float) -> bool:
    """Expired, or held by a process that no longer exists on this machine (a killed driver). The pid is only
    checked when the lease was written on this boot of this host in this pid namespace: a container beside ours
    with the same host name has pids of its own."""
    if held.get("expires_at", 0) <= now:
        return True
    same_machine = (
        held.get("host") == socket.gethostname()
        and held.get("boot_id") == _boot_id()
        and held.get("pid_ns") == _pid_namespace()
    )
    if not same_machine or not isinstance(held.get("pid"), int):
        return False
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by another user
    return False


class _LocalStore:
    """The lease file on a local (or POSIX shared) filesystem; each update runs under flock of the file itself."""

    def __init__(self, target: Location):
        self.path = target.path
        self.created: list[str] = []  # the folders the lease created, deepest first: removed with it when left empty

    @contextmanager
    def _locked(self) -> Iterator[int]:
        while True:
            folder = posixpath.dirname(self.path)
            self.created = missing_folders(folder) or self.created
            os.makedirs(folder, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:  # not a file that a releasing holder unlinked while we waited for its lock
                    yield fd
                    return
            finally:
                os.close(fd)  # closing releases the lock

    def update(self, change: Callable[[dict | None], Any]) -> tuple[dict | None, bool]:
        """Apply `change` to the stored lease atomically; returns (the lease it saw, whether it wrote or deleted)."""
        with self._locked() as fd:
            data = os.pread(fd, 1 << 20, 0)
            try:
                held = json.loads(data) if data else None
            except ValueError:
                held = None  # its writer died mid-write (it held the lock): no lease
            new = change(held)
            if new is DELETE or (new is KEEP and held is None):
                os.unlink(self.path)  # released, or the empty file this lock created
            elif new is not KEEP:
                body = json.dumps(new, indent=1, sort_keys=True).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, body, 0)
                os.fsync(fd)
            return held, new is not KEEP

    def read(self) -> dict | None:
        return self.update(lambda held: KEEP)[0]

    def tidy(self) -> None:
        """Remove the folders the lease created if nothing else was written there: a run refused or failed before
        it wrote leaves no empty output folder behind."""
        remove_empty_folders(self.created)  # a folder with the output's files in it stays


# A store that refuses the conditional headers outright (instead of ignoring them)
UNSUPPORTED_CODES = ("NotImplemented", "InvalidArgument", "InvalidRequest")


class _S3Store:
    """The lease object on S3 through conditional requests (boto3; pyarrow sends no conditional headers)."""

    def __init__(self, target: Location, storage: StorageConfig, settle: float):
        from pipeline.s3_listing import s3_client

        self.bucket, _, self.key = target.path.partition("/")
        self.uri = target.uri
        self.client = s3_client(storage)
        self.settle = settle
        self.conditional: bool | None = None  # whether the store honours If-None-Match; known after a create

    def _get(self) -> tuple[dict | None, str | None]:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None, None
        body = got["Body"].read()
        try:
            return json.loads(body), got["ETag"]
        except ValueError:
            return None, got["ETag"]  # not a lease of ours: replaced as a stale one

    @staticmethod
    def _code(err: Exception) -> str | None:
        response = getattr(err, "response", None) or {}
        code = response.get("Error", {}).get("Code")
        if response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
            return "PreconditionFailed"
        return code

    def _fallback(self) -> None:
        if self.conditional is not False:
            log.warning(
                "the store of %s does not honour conditional writes (If-None-Match / If-Match): two runs started "
                "within %.0f s of each other may both proceed. The lease is written, read back after that pause, "
                "and the run refused if another run's write replaced it",
                self.uri,
                self.settle,
            )
        self.conditional = False

    def _call(self, op: Callable[..., Any], **kwargs: Any) -> bool:
        """Run a conditional request; False when its condition failed (412, or 409 while another conditional
        request on the key is in flight). A store that refuses the headers gets the request without them."""
        if self.conditional is False:
            kwargs.pop("IfNoneMatch", None), kwargs.pop("IfMatch", None)
        try:
            op(Bucket=self.bucket, Key=self.key, **kwargs)
        except Exception as err:
            code = self._code(err)
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            if code in UNSUPPORTED_CODES and ("IfNoneMatch" in kwargs or "IfMatch" in kwargs):
                self._fallback()
                return self._call(op, **kwargs)
            raise
        return True

    def update(self, change: Callable[[dict | None], Any]) -> tuple[dict | None, bool]:
        """Apply `change` to the stored lease, as a compare-and-swap on its ETag; returns (the lease it saw, whether
        it wrote or deleted). A change whose condition failed is decided again on what is stored now."""
        while True:
            held, etag = self._get()
            new = change(held)
            if new is KEEP or (new is DELETE and etag is None):
                return held, False
            if new is DELETE:
                if not self._call(self.client.delete_object, IfMatch=etag):
                    continue
                return held, True
            body = json.dumps(new, indent=1, sort_keys=True).encode()
            if etag is None:
                if not self._call(self.client.put_object, Body=body, IfNoneMatch="*"):
                    continue  # another run created it first: decide again on what it wrote
                if self.conditional is None:  # probe once: a second create must fail now that the object exists
                    if self._call(self.client.put_object, Body=body, IfNoneMatch="*"):
                        self._fallback()
                    elif self.conditional is None:
                        self.conditional = True
            elif not self._call(self.client.put_object, Body=body, IfMatch=etag):
                continue
            if self.conditional is False:  # write-then-verify: the last writer of racing runs wins
                time.sleep(self.settle)
                now, _ = self._get()
                if now is None or now.get("token") != new.get("token"):
                    return now, False
            return held, True

    def read(self) -> dict | None:
        return self._get()[0]


class Lease:
    """Context manager: acquire on enter (or raise LeaseHeldError), renew every `ttl / 3` in a daemon thread,
    release on exit. While held, pipeline.commit's markers are written only after `verify` (see held_for)."""

    def __init__(
        self,
        target: Location,
        run_id: str,
        ttl: float,
        settle: float = 2.0,
        owner: str | None = None,
        wait: float = 0.0,
        storage: StorageConfig | None = None,
        job: str | None = None,
        hint: str | None = None,
    ):
        """
        Args:
            target: the lease object, `<out>/_lease.json`.
            ttl: seconds a lease stays live without renewal (a killed holder on another host blocks this long).
            settle: seconds between write and read-back on a store that ignores conditional writes.
            wait: seconds to wait for another live run's lease to end before refusing (0: refuse at once).
            storage: how to reach an S3 target (endpoint, region, retries); defaults when None.
            job: the job's name, written into the lease for the messages of the runs it refuses.
            hint: what a refused user can do, appended to the refusal.
        """
        self.target, self.run_id, self.ttl, self.settle, self.wait = target, run_id, ttl, settle, wait
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.job, self.hint = job, hint
        self.token = uuid.uuid4().hex
        self.started_at = time.time()
        self.lost: str | None = None
        self._renewed = 0.0  # time.monotonic() of the last write or check that found the lease ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if isinstance(target.fs, pafs.LocalFileSystem):
            self.store: _LocalStore | _S3Store = _LocalStore(target)
        else:
            self.store = _S3Store(target, storage or StorageConfig().as_the_aws_tools_find_it(), settle)

    def record(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "owner": self.owner,
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "boot_id": _boot_id(),
            "pid_ns": _pid_namespace(),
            "token": self.token,
            "started_at": self.started_at,
            "renewed_at": time.time(),
            "expires_at": time.time() + self.ttl,
        }

    def acquire(self) -> None:
        """Raises:
        LeaseHeldError: another run's lease is live (after waiting up to `wait` seconds for it to end).
        LeaseStoreError: the lease could not be read or written (it was botocore's bare AccessDenied traceback)."""
        deadline = time.monotonic() + self.wait
        waited = False
        taken: list[dict] = []
        while True:

            def take(held: dict | None) -> Any:
                taken.clear()
                if held is None or held.get("token") == self.token:
                    return self.record()
                if is_stale(held, time.time()):
                    taken.append(held)
                    return self.record()
                return KEEP

            try:
                held, applied = self.store.update(take)
            except storage_errors() as err:
                raise LeaseStoreError(
                    f"cannot take the output's lease {self.target.uri}, the first write to the output: {err}. The "
                    "output location refuses this run's requests (credentials without write access there, a bucket "
                    "policy, object lock or a write-once store) or kept failing: give an output.uri the job may "
                    "write, read and delete in"
                ) from err
            if applied:
                break
            if held is None:
                continue  # the winner of a race on a store without conditions released it already
            left = deadline - time.monotonic()
            if left <= 0:
                raise LeaseHeldError(self.refusal(held))
            if not waited:
                log.warning("output lease held by %s; waiting up to %.0f s for it to end", describe(held), self.wait)
                waited = True
            time.sleep(max(0.05, min(POLL_SECONDS, left, held.get("expires_at", 0) - time.time())))
        if taken:
            log.warning("took over the stale lease of %s", describe(taken[0]))
        self._renewed = time.monotonic()
        _register(self)
        self._thread = threading.Thread(target=self._renew_loop, name="output-lease", daemon=True)
        self._thread.start()

    def refusal(self, held: dict[str, Any]) -> str:
        out = self.target.uri.rsplit("/", 1)[0]
        waited = f" (waited {self.wait:.0f} s)" if self.wait > 0 else ""
        return (
            f"output {out} is being written by another {describe(held)}. Two runs on one output are "
            f"refused{waited}; wait for it to finish, or if it is dead (killed on another host), for its lease "
            f"to expire at {_when(held.get('expires_at', 0))}, or delete {self.target.uri}"
            + (f"; {self.hint}" if self.hint else "")
        )

    def _renew(self) -> None:
        def renew(held: dict | None) -> Any:
            if held is None or held.get("token") != self.token:
                self.lost = f"lease {self.target.uri} now held by {describe(held) if held else 'nobody'}"
                return KEEP
            return self.record()

        self.store.update(renew)
        if self.lost:
            raise LeaseLostError(f"{self.lost}; stopping before the next commit")
        self._renewed = time.monotonic()

    def check(self) -> None:
        """Raise LeaseLostError unless the stored lease is still ours (read from storage, not cached)."""
        if not self.lost:
            now = self.store.read()
            if now is None or now.get("token") != self.token:
                self.lost = f"lease {self.target.uri} now held by {describe(now) if now else 'nobody'}"
        if self.lost:
            raise LeaseLostError(f"{self.lost}; stopping without writing more")

    def verify(self) -> None:
        """Before a commit point: raise LeaseLostError if the lease was lost; when the last renewal is older than
        half the TTL (a stalled process), renew now instead of trusting it."""
        if self.lost:
            raise LeaseLostError(f"{self.lost}; stopping before the next commit")
        if time.monotonic() - self._renewed > self.ttl / 2:
            self._renew()

    def _renew_loop(self) -> None:
        hiccups = storage_errors()
        while not self._stop.wait(self.ttl / 3):
            try:
                self._renew()
            except LeaseLostError:
                log.error("%s; this run stops at its next commit", self.lost)
                return
            except hiccups as err:  # a storage hiccup: the next renewal retries well before expiry
                log.warning("renewing lease %s failed: %s", self.target.uri, err)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        _unregister(self)
        if self.lost:
            return
        self.store.update(lambda held: DELETE if held is not None and held.get("token") == self.token else KEEP)
        if isinstance(self.store, _LocalStore):
            self.store.tidy()

    def __enter__(self) -> Lease:  # noqa: PYI034 (py3.10 has no typing.Self)
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a failed storage request raises: OSError (pyarrow, local disk), and botocore's errors once loaded."""
    import sys

    botocore = sys.modules.get("botocore.exceptions")
    return (OSError,) if botocore is None else (OSError, botocore.BotoCoreError, botocore.ClientError)


_HELD: dict[tuple[str, str], Lease] = {}
_HELD_LOCK = threading.Lock()


def _key(loc: Location) -> tuple[str, str]:
    return type(loc.fs).__name__, loc.path.rstrip("/")


def _register(lease: Lease) -> None:
    with _HELD_LOCK:
        _HELD[_key(Location(lease.target.fs, posixpath.dirname(lease.target.path), ""))] = lease


def _unregister(lease: Lease) -> None:
    with _HELD_LOCK:
        for k, v in list(_HELD.items()):
            if v is lease:
                del _HELD[k]


def held_for(out: Location) -> Lease | None:
    """The lease this process holds on `out` or the nearest location above it, if any."""
    kind, path = _key(out)
    with _HELD_LOCK:
        while True:
            if (kind, path) in _HELD:
                return _HELD[kind, path]
            parent = posixpath.dirname(path)
            if parent == path or not path:
                return None
            path = parent


def verify_held(out: Location) -> None:
    """Raise LeaseLostError when the lease this process holds over `out` was lost (pipeline.commit calls it before
    every marker it writes). No lease held: nothing to check (a caller outside a job)."""
    lease = held_for(out)
    if lease is not None:
        lease.verify()


@contextmanager
def holding(
    out: Location,
    storage: StorageConfig,
    job: str,
    ttl: float,
    wait: float = 0.0,
    hint: str | None = None,
) -> Iterator[Lease]:
    """Hold `out`'s lease while the block runs (a job's whole run).

    Raises:
        LeaseHeldError: another run holds it.
    """
    run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    lease = Lease(out.join(LEASE), run_id, ttl, settle=2.0, wait=wait, storage=storage, job=job, hint=hint)
    with lease:
        yield lease
