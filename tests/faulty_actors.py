"""EmbedActor subclasses that inject one fault into a real run: the real model still embeds every row.

Faults fire on the block holding a chosen id, once per marker file in a shared directory, so that the restarted
actor or the retried task (a new process) does not fail again. `use(monkeypatch, cls)` swaps the class the job
builds its pool from and ships this module to Ray workers by value (tests/ is not on their import path).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import ray
import torch

from pipeline.actors import EmbedActor


def use(monkeypatch, cls: type) -> None:
    import sys

    from ray import cloudpickle  # Ray's vendored copy: registering with the PyPI one has no effect on Ray

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr("pipeline.embed_job.EmbedActor", cls)


def once(marker: Path) -> bool:
    """True the first time across all processes (O_EXCL create of the marker file)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def faulty(faults: dict[str, str | None], state_dir: Path, **params) -> type:
    """An EmbedActor class injecting each {kind: trigger id} fault: "kill" and "raise" on the block holding the id;
    "oom" (a device smaller than `capacity_tokens`) and "slow" (sleep `seconds` per block) on every block."""

    class Faulty(EmbedActor):
        def __init__(self, *args, **kwargs):
            with open(state_dir / "inits", "a") as f:  # one line per (re)started actor
                f.write(f"{os.getpid()}\n")
            super().__init__(*args, **kwargs)
            if "oom" in faults:
                self.encoder.model = DeviceMemoryLimit(self.encoder.model, params["capacity_tokens"], state_dir)

        def __call__(self, block: pa.Table) -> pa.Table:
            ids = set(block.column("id").to_pylist())
            if "slow" in faults:
                time.sleep(params["seconds"])
            if faults.get("kill") in ids and once(state_dir / "killed"):
                ray.kill(ray.get_runtime_context().current_actor, no_restart=False)
                time.sleep(60)  # the kill lands while this task is still running
            if faults.get("raise") in ids and once(state_dir / "raised"):
                raise RuntimeError(f"injected fault on the block holding {faults['raise']}")
            out = super().__call__(block)
            if "oom" in faults:
                # "pid budget" after each block: the last line of each pid is that actor's budget
                with open(state_dir / "budgets", "a") as f:
                    f.write(f"{os.getpid()} {self.encoder.max_tokens_per_batch}\n")
            return out

    Faulty.__name__ = Faulty.__qualname__ = "FaultyEmbedActor"
    return Faulty


def first_write_then_stall(state_dir: Path, seconds: float = 600.0):
    """A `write_block` whose first call (across all processes) writes at once and every later call first sleeps
    `seconds`: the run has output on disk and cannot finish while a test acts on it (no race with a fast run)."""
    from pipeline.writing import write_block

    def write_first_then_stall(block, out, cfg, metadata):
        if not once(state_dir / "first_write"):
            time.sleep(seconds)
        return write_block(block, out, cfg, metadata)

    return write_first_then_stall


class DeviceMemoryLimit(torch.nn.Module):
    """Wraps the real model; a forward pass over more than `capacity_tokens` padded tokens raises CUDA-style OOM.

    Stands in for a GPU too small for the configured batch budget on a CPU-only test machine.
    """

    def __init__(self, model: torch.nn.Module, capacity_tokens: int, state_dir: Path):
        super().__init__()
        self.model, self.capacity, self.state_dir = model, capacity_tokens, state_dir
        self.config = model.config

    def forward(self, input_ids, **kwargs):  # attention_mask only when the encoder passes one (not causal + right)
        if input_ids.numel() > self.capacity:
            with open(self.state_dir / "ooms", "a") as f:
                f.write(f"{os.getpid()} {input_ids.numel()}\n")
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {input_ids.numel()} > {self.capacity} tokens)")
        return self.model(input_ids=input_ids, **kwargs)
