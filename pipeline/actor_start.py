"""A model actor that cannot start for a reason a restart cannot fix fails the job once, at once.

An exception raised in a Ray actor's constructor kills the actor, and Ray Data starts another one, up to
`compute.max_restarts` (its `max_consecutive_actor_init_deaths`) more times before the job fails: for a checkpoint
that lacks weights or a config.json that does not fit its weights that is every model load again (minutes for a
27B model), to the same error. Ray Data has no per-error switch for it, so the constructor keeps such an error and
the actor raises it on its first call instead: a task error of this package, which Ray Data does not retry
(pipeline.stages.RETRIED_ERRORS), so the dataset fails at once with the error's own message.

What is deterministic: this package's user errors (pipeline.errors.UserError: pipeline.model_loading refusing a
checkpoint) and the loaders' config and architecture errors (ValueError, TypeError, KeyError, ImportError, a
RuntimeError such as a size mismatch). What is not, and still kills the actor so that Ray Data restarts it: out of
memory while loading (torch.OutOfMemoryError, a CUDA error), an OSError (a file system or a download that failed),
and anything that kills the process (the OOM killer, a lost node), which never reaches Python.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from pipeline.errors import UserError

DETERMINISTIC = (UserError, ValueError, TypeError, KeyError, ImportError, NotImplementedError)
TRANSIENT_MARKERS = ("out of memory", "cuda", "cudnn", "nccl", "hip error")  # device errors: another actor may do


class ActorStartError(UserError, RuntimeError):
    """A model actor's constructor failed for a reason another attempt would meet again (its message names the actor
    class and the error); raised on the actor's first call."""


def is_deterministic(err: BaseException) -> bool:
    """Whether another actor loading the same model would fail the same way (see the module docstring)."""
    if isinstance(err, OSError):
        return isinstance(err, UserError)  # ours name a file the user must fix; the rest may be a hiccup
    text = f"{type(err).__name__} {err}".lower()
    if any(marker in text for marker in TRANSIENT_MARKERS):
        return False
    return isinstance(err, DETERMINISTIC) or type(err) is RuntimeError


def start_error(actor: str, err: BaseException) -> ActorStartError:
    """One line: `the EmbedActor actors could not start: ModelLoadError: cannot load model ...`."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return ActorStartError(f"the {actor} actors could not start: {type(err).__name__}: {' '.join(lines)}")


T = TypeVar("T")


def defer_start_errors(init: Callable[..., None]) -> Callable[..., None]:
    """Decorator of an actor's `__init__`: a deterministic error is kept (as `self.start_failure`) instead of
    raised; `raise_start_failure(self)` at the top of `__call__` raises it. Any other error is raised as before."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        self.start_failure = None
        try:
            init(self, *args, **kwargs)
        except Exception as err:
            if not is_deterministic(err):
                raise
            # Ray Data runs the class under a wrapper subclass of its own: name the first class that is not Ray's
            actor = next(c for c in type(self).__mro__ if not c.__module__.startswith("ray."))
            self.start_failure = start_error(actor.__name__, err)
            self.start_failure.__cause__ = err

    return wrapper


def raise_start_failure(actor: Any) -> None:
    """Raises:
    ActorStartError: the actor's constructor failed deterministically (defer_start_errors)."""
    failure = getattr(actor, "start_failure", None)
    if failure is not None:
        raise failure
