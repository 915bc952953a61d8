"""Errors that mean "fix your input, config or model", not "there is a bug": jobs print them without a traceback."""

from __future__ import annotations

import logging
import os
import re
import sys


class UserError(Exception):
    """Mixed into every error whose message tells the user what to change."""


class LeaseHeldError(UserError, RuntimeError):
    """Another live run holds the output's lease (pipeline.lease); the message names it and says how to proceed.
    Jobs exit 3."""


def actor_start_failure(err: BaseException) -> str | None:
    """One line for an actor pool that could not start (a Ray ActorDiedError from the actor's constructor), else None.

    Such a failure is the user's to fix (weights that do not fit the model's config.json, a device that is not
    there) and the actor's own traceback reaches the job's stderr through Ray's log forwarding, once per attempt;
    the driver's traceback around it adds only Ray Data's internals, and Ray Data's logger prints it anyway. The
    line names the actor class and the error's last line, e.g. `the EmbedActor actors could not start:
    RuntimeError: You set ignore_mismatched_sizes to False, thus raising an error. ...`.
    """
    exceptions = getattr(sys.modules.get("ray"), "exceptions", None)  # never imports Ray for a job that did not
    if exceptions is None or not isinstance(err, exceptions.RayActorError) or not err.actor_init_failed:
        return None
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    actor = re.search(r"MapBatches\((\w+)\)", text)
    who = f"the {actor.group(1)} actors" if actor else "a Ray actor"
    cause = lines[-1] if lines else type(err).__name__
    return f"{who} could not start: {cause} (the actor's own traceback is in the log lines above or below)"


RAY_DATA_RETRY_SUFFIX = re.compile(r"\nFailed to [^\n]* after \d+/\d+ attempts")


def user_error_in(err: BaseException) -> UserError | None:
    """The user error that `err` is or wraps, else None.

    One raised in a Ray task reaches the driver as a RayTaskError of the same class (its `cause`); one that Ray Data
    wrapped in its UserCodeException in this process keeps it as `__cause__` (across processes that link is lost:
    udf_errors_as_themselves). Both chains are followed, at most 10 links.
    """
    exceptions = getattr(sys.modules.get("ray"), "exceptions", None)  # never imports Ray for a job that did not
    for _ in range(10):
        if isinstance(err, UserError) and not (exceptions and isinstance(err, exceptions.RayTaskError)):
            return err
        if exceptions is not None and isinstance(err, exceptions.RayTaskError) and err.cause is not None:
            err = err.cause
        elif err.__cause__ is not None:
            err = err.__cause__
        else:
            return err if isinstance(err, UserError) else None
    return None


RAISE_ORIGINAL = "RAY_DATA_RAISE_ORIGINAL_MAP_EXCEPTION"


def udf_errors_as_themselves() -> None:
    """Make Ray Data raise a map_batches UDF's own exception, not a UserCodeException `from` it.

    The wrapper crosses the process boundary without its `__cause__` (Python does not pickle it), so a user error
    raised in a UDF (a NaN vector in the clustering input, vectors of two dims) reached the driver as a plain
    RayTaskError(UserCodeException): a 70-line traceback and exit 1 instead of its one `error:` line. Raised as
    itself, it is a RayTaskError of its own class, which the jobs print as one line. Sets the environment variable
    Ray Data reads when `ray.data` is first imported, and the current DataContext when it already is (datasets take
    the driver's context to their tasks).
    """
    os.environ.setdefault(RAISE_ORIGINAL, "1")
    data = sys.modules.get("ray.data")
    if data is not None and os.environ[RAISE_ORIGINAL] not in ("0", "false", "False"):
        data.DataContext.get_current().raise_original_map_exception = True


def user_message(err: BaseException) -> str:
    """The message of a user error. One raised in a Ray task reaches the driver as a RayTaskError whose text starts
    with the task's remote traceback; the job prints the task's own exception's message instead (one line)."""
    err = user_error_in(err) or err
    # Ray Data appends its retry advice to a failed task's exception ("Failed to apply UDF transform after 1/4
    # attempts ... if you believe this to be transient"): a user error is not transient, the advice misleads
    return RAY_DATA_RETRY_SUFFIX.split(str(err))[0]


# Ray Data logs a failed task's exception before raising it, for errors it does not count as user code (ours, raised
# in read tasks): the executor with its traceback, and its exception handler as "Exception occurred in Ray Data or
# Ray Core internal code ... please open an issue" with the full stack. For a bad file that was ~180 lines, and
# wrong advice, ahead of the job's one `error:` line.
RAY_DATA_EXECUTOR_LOGGER = "ray.data._internal.execution.streaming_executor_state"
RAY_DATA_EXCEPTIONS_LOGGER = "ray.data.exceptions"


class _NoTracebackForUserErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        handled = record.exc_info[1] if record.exc_info else sys.exc_info()[1]  # logged inside its except block
        if handled is None or user_error_in(handled) is None:  # a user error, also one wrapped by a Ray Data UDF
            return True
        if record.name == RAY_DATA_EXCEPTIONS_LOGGER:
            return False  # "internal code ... open an issue" and the stack: neither fits bad input
        record.exc_info, record.exc_text = None, None  # the message line stays; the job prints the error
        return True


def quiet_user_error_tracebacks() -> None:
    """Keep Ray Data's tracebacks of a user error out of the log; the job prints its one line."""
    for name in (RAY_DATA_EXECUTOR_LOGGER, RAY_DATA_EXCEPTIONS_LOGGER):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForUserErrors) for f in logger.filters):
            logger.addFilter(_NoTracebackForUserErrors())
