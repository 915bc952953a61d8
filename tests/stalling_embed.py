"""`python -m stalling_embed <jobs.embed arguments>`: jobs.embed whose first embedding block (the first across every
actor process of the job) stalls once its actor has written the id of its Ray node to $STALLING_EMBED_STATE/stalled_on,
so that a test removes that node while the node's actor holds unfinished work (a spot node
reclaimed mid-task), whatever the machine's load. The block, retried on the restarted actor, is embedded as usual.

The job's runtime_env sets STALLING_EMBED_STATE (a directory every node can write: one machine here) and puts tests/
on PYTHONPATH: the embedding actors import this module.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import ray
from faulty_actors import once

from pipeline.actors import EmbedActor


class StallingEmbedActor(EmbedActor):
    state_dir = Path(os.environ.get("STALLING_EMBED_STATE", "."))

    def __call__(self, block: pa.Table) -> pa.Table:
        if once(self.state_dir / "stalled"):
            partial = self.state_dir / "stalled_on.partial"
            partial.write_text(ray.get_runtime_context().get_node_id())
            partial.rename(self.state_dir / "stalled_on")  # whole, or not there
            time.sleep(600)  # until the node is removed (SIGKILL); the test's deadline is shorter
        return super().__call__(block)


def main(argv: list[str]) -> int:
    import pipeline.embed_job
    from jobs.embed import main as embed_main

    pipeline.embed_job.EmbedActor = StallingEmbedActor
    return embed_main(argv)


if __name__ == "__main__":
    from pipeline.process_exit import exit_process

    exit_process(main(sys.argv[1:]))
