"""Keep a known-harmless Ray core error line out of every run's output.

Ray Data hands each pool actor its UDF as an ObjectRef (`ray.put` of the map transformer, held by the operator for
the whole execution) and our actors have `max_restarts > 0`. Ray >= 2.47's core worker then logs, once per process,
`E ... core_worker.cc: Actor ... has constructor arguments in the object store and max_restarts > 0 ...`
(ray-project/ray#53727: restarts fail only if such an argument went out of scope or was lost, which Ray Data's
operator prevents by holding it). The line is `RAY_LOG_ONCE_PER_PROCESS(ERROR)`: we trigger it once ourselves,
with a never-scheduled probe actor, while the C++ stderr is captured, then replay whatever else was captured.
"""

from __future__ import annotations

import os
import sys
import tempfile

import ray

KNOWN_LINE = "has constructor arguments in the object store and max_restarts > 0"
_done = False


@ray.remote(num_cpus=0, max_restarts=1, resources={"rayembed_never_scheduled": 1})
class _Probe:
    def __init__(self, arg: object):
        pass


def absorb_actor_argument_warning() -> None:
    """Emit Ray's once-per-process warning into a capture and drop it; the rest of the capture is replayed.

    Call after ray.init() on the driver; later actor creations then log nothing for it. No-op when repeated.
    """
    global _done
    if _done:
        return
    _done = True
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            probe = _Probe.remote(ray.put(b"x"))  # the line is logged synchronously by this submission
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        ray.kill(probe, no_restart=True)  # infeasible by construction, so it never starts a worker
        capture.seek(0)
        other = [line for line in capture.read().decode(errors="replace").splitlines() if KNOWN_LINE not in line]
    if other:
        print("\n".join(other), file=sys.stderr)
