"""pipeline.stages: every stage's resources, retries and environment come from one place; light modules stay light."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest
from conftest import REPO

from pipeline.actors import EmbedActor, TokenizeActor
from pipeline.config import EmbedConfig
from pipeline.stages import Stage, actor_env_vars, embed_stage, io_stage, tokenize_stage


def embed_config(**compute) -> EmbedConfig:
    return EmbedConfig.model_validate(
        {
            "input": {"uri": "/in", "format": "jsonl"},
            "output": {"uri": "/out"},
            "model": {"name_or_path": "m"},
            "batching": {"rows_per_block": 123},
            "compute": {"gpus_per_actor": 0, **compute},
        }
    )


def test_model_stages_take_resources_and_retries_from_the_compute_section():
    cfg = embed_config(
        num_actors=3, cpus_per_actor=2, num_tokenizers=2, cpus_per_tokenizer=0.75, max_restarts=5, max_task_retries=7
    )
    tok, emb = tokenize_stage(cfg, "p: ", TokenizeActor), embed_stage(cfg, EmbedActor)
    assert (tok.pool, tok.num_cpus, tok.batch_size) == ((2, 2), 0.75, 123)
    assert (emb.pool, emb.num_cpus, emb.num_gpus, emb.batch_size) == ((3, 3), 2, 0, 123)
    for stage in (tok, emb):
        assert stage.retry_args == {"max_restarts": 5, "max_task_retries": 7}
        assert stage.env_vars == actor_env_vars()
    assert tok.constructor_kwargs["prompt"] == "p: "
    assert (tok.fn, emb.fn) == (TokenizeActor, EmbedActor)


def test_io_stages_are_tasks_with_a_fraction_of_a_cpu_and_bounded_retries():
    cfg = embed_config(cpus_per_io_task=0.2, max_task_retries=4)
    stage = io_stage(len, cfg.compute, {"x": 1}, batch_size=1)
    assert (stage.pool, stage.num_cpus, stage.retry_args, stage.kwargs) == (None, 0.2, {"max_retries": 4}, {"x": 1})


def test_write_side_modules_import_neither_torch_nor_transformers_nor_ray():
    """A Parquet write or read task unpickles its function by module: these modules must stay light."""
    light = [
        "pipeline.columns",
        "pipeline.writing",
        "pipeline.duplicate_ids",
        "pipeline.reading",
        "pipeline.reembed.staging",
    ]
    code = f"import sys; import {', '.join(light)}; print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("driver_value", [None, "ACTIVE"])
def test_actors_start_with_passive_openmp_unless_the_driver_says_otherwise(ray_session, monkeypatch, driver_value):
    class ReportEnvironment:  # defined here so that Ray pickles it by value: workers cannot import test modules
        def __init__(self):
            import os

            self.policy = os.environ.get("OMP_WAIT_POLICY")

        def __call__(self, block: pa.Table) -> pa.Table:
            return block.append_column("policy", pa.array([self.policy] * len(block)))

    if driver_value:
        monkeypatch.setenv("OMP_WAIT_POLICY", driver_value)
    else:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    stage = Stage(ReportEnvironment, batch_size=None, num_cpus=0.5, pool=(1, 1), env_vars=actor_env_vars())
    ds = stage.apply(ray_session.data.range(4))
    assert {row["policy"] for row in ds.take_all()} == {driver_value or "PASSIVE"}
