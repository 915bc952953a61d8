"""Storage errors that a later attempt may not meet, and one bounded retry for the code outside Ray Data's stages.

The S3 client retries each request (storage.max_attempts, AWS standard retry), but not every failure reaches it as
a retryable request: a 503 or 500 answering a ranged GetObject (Parquet footers, the head of a file) overflows the
caller's fixed-size buffer and surfaces as `AWS Error INTERNAL_FAILURE ...: Failed to flush response stream`, and a
connection reset mid-body ends a streaming read. Such errors are classified once, here, where they are raised:

- readers (pipeline.reading.naming_errors) and writers (pipeline.storage) raise `TransientStorageError` naming the
  object; every other failure keeps its own clear error (InputFileError, StorageWriteError) and is not retried;
- Ray Data stages retry a `TransientStorageError` through the DataContext (pipeline.stages.configure_retries),
  skipping the blocks an earlier attempt already yielded;
- plain Ray tasks and driver-side calls retry it with `retrying` (a plain task recomputes its whole return, so a
  retry cannot duplicate rows).

The transient kinds follow Ray Data's own `DataContext.retried_io_errors` and the AWS SDK's retryable errors:
throttling, 5xx, dropped/refused/timed-out connections (a body cut short is a dropped connection). Pure Python.
"""

from __future__ import annotations

import errno
import functools
import logging
import random
import re
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pipeline.errors import UserError
from pipeline.s3_tls import is_tls_failure

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Retries on top of the S3 client's own attempts per request, for calls that have no compute config at hand (driver
# reads of footers and small JSON objects); Ray tasks use compute.max_task_retries.
DEFAULT_RETRIES = 2
BACKOFF_S = 1.0  # first backoff cap; doubles per attempt (full jitter: a uniform draw below the cap)
MAX_BACKOFF_S = 30.0

# pyarrow's S3 errors are plain OSErrors: "AWS Error <CODE> during <Operation> operation: <message>".
TRANSIENT_MESSAGE = re.compile(
    r"AWS Error (INTERNAL_FAILURE|NETWORK_CONNECTION|SLOW_DOWN|SERVICE_UNAVAILABLE|THROTTLING|REQUEST_TIMEOUT)\b"
    r"|HTTP status (429|500|502|503|504)\b"
    r"|connection (reset|refused|aborted)|timed out|broken pipe",
    re.IGNORECASE,
)
TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE}
# Answers about the object itself: retrying cannot change them.
PERMANENT_OSERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


class TransientStorageError(UserError, OSError):
    """A read or write of a storage object failed in a way a later attempt may not (throttling, 5xx, a dropped
    connection); the message names the object and the underlying error. Raised once the retries are spent too."""


def is_transient(err: BaseException) -> bool:
    """True when `err` (or the error it was raised from) is a transient storage failure worth another attempt.

    Our own errors are already classified: `TransientStorageError` is, every other pipeline error (a bad input file,
    a refused write) is not. Missing objects and denied access are not, whatever the transport said before, nor a
    TLS failure (pipeline.s3_tls: pyarrow reports it as a NETWORK_CONNECTION error).
    """
    if isinstance(err, TransientStorageError):
        return True
    if isinstance(err, (UserError, *PERMANENT_OSERRORS)) or is_tls_failure(err):
        return False  # a TLS failure (an unknown CA, plain HTTP on https://) meets every attempt the same
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    if isinstance(err, OSError):
        return err.errno in TRANSIENT_ERRNOS or bool(TRANSIENT_MESSAGE.search(str(err)))
    return err.__cause__ is not None and is_transient(err.__cause__)


def retrying(fn: Callable[P, R], retries: int = DEFAULT_RETRIES) -> Callable[P, R]:
    """`fn`, called again up to `retries` times while it raises a transient storage error (`is_transient`).

    Backoff between attempts: full jitter, a uniform draw below min(BACKOFF_S * 2**attempt, MAX_BACKOFF_S) seconds
    (AWS's "Exponential Backoff and Jitter"). Any other error, and the last transient one, propagate unchanged: the
    caller sees the error that names the object. `fn` must be safe to call again from the start (idempotent writes,
    reads whose whole result is its return value).
    """

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if attempt >= retries or not is_transient(err):
                    raise
                delay = random.uniform(0, min(BACKOFF_S * 2**attempt, MAX_BACKOFF_S))
                attempt += 1
                log.warning(
                    "%s: attempt %d of %d failed, retrying in %.1f s: %s", fn.__name__, attempt, retries + 1, delay, err
                )
                time.sleep(delay)

    return call
