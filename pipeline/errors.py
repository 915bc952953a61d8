"""Errors that mean "fix your input, config or model", not "there is a bug": jobs print them without a traceback."""

from __future__ import annotations

import re
import sys


class UserError(Exception):
    """Mixed into every error whose message tells the user what to change."""


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
