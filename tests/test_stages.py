"""pipeline.stages: every stage's resources, retries and environment come from one place; light modules stay light."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pyarrow as pa
import pytest
from conftest import REPO
from ray._common.retry import format_exception, matches_error
from ray.data import DataContext
from ray.exceptions import UserCodeException
from ray.util.annotations import RayDeprecationWarning

from pipeline.actors import EmbedActor, TokenizeActor
from pipeline.config import EmbedConfig
from pipeline.model_loading import ModelLoadError
from pipeline.reading import InputFileError
from pipeline.reembed.lease import LeaseLostError
from pipeline.stages import Stage, actor_env_vars, configure_retries, embed_stage, io_stage, tokenize_stage


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


def test_model_stages_take_resources_from_the_compute_section():
    cfg = embed_config(num_actors=3, cpus_per_actor=2, num_tokenizers=2, cpus_per_tokenizer=0.75)
    tok, emb = tokenize_stage(cfg, "p: ", TokenizeActor), embed_stage(cfg, EmbedActor)
    assert (tok.pool, tok.num_cpus, tok.batch_size) == ((2, 2), 0.75, 123)
    assert (emb.pool, emb.num_cpus, emb.num_gpus, emb.batch_size) == ((3, 3), 2, 0, 123)
    for stage in (tok, emb):
        assert stage.env_vars == actor_env_vars()
    assert tok.constructor_kwargs["prompt"] == "p: "
    assert (tok.fn, emb.fn) == (TokenizeActor, EmbedActor)


def test_io_stages_are_tasks_with_a_fraction_of_a_cpu():
    cfg = embed_config(cpus_per_io_task=0.2)
    stage = io_stage(len, cfg.compute, {"x": 1}, batch_size=1)
    assert (stage.pool, stage.num_cpus, stage.kwargs) == (None, 0.2, {"x": 1})


def test_retries_are_bounded_through_the_data_context_not_remote_args():
    """Lost actors/nodes: Ray Data's unbounded restarts; exceptions: compute.max_task_retries; user errors: never."""
    ctx = DataContext()
    configure_retries(ctx, embed_config(max_restarts=5, max_task_retries=7).compute)
    assert (ctx.max_map_retries, ctx.max_consecutive_actor_init_deaths, ctx.max_errored_blocks) == (7, 5, 0)
    assert ctx.actor_task_retry_on_errors is False  # Ray Data actors resubmit tasks without limit
    (pattern,) = ctx.retried_map_errors

    def formatted(error: Exception, cause: Exception | None = None) -> str:  # as Ray Data formats a UDF's error
        error.__cause__ = cause
        return format_exception(error, include_cause=True)

    wrapped = UserCodeException("UDF failed to process a data block.")
    assert matches_error(pattern, formatted(RuntimeError("CUDA error: an illegal memory access\nsecond line")))
    assert matches_error(pattern, formatted(wrapped, OSError("Connection reset by peer")))
    for ours in (InputFileError("cannot read c1.jsonl as jsonl"), ModelLoadError("no weights"), LeaseLostError("x")):
        assert not matches_error(pattern, formatted(ours)), ours
        assert not matches_error(pattern, formatted(wrapped, ours)), ours


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
    with warnings.catch_warnings():
        warnings.simplefilter("error", RayDeprecationWarning)  # only named map_batches parameters
        ds = stage.apply(ray_session.data.range(4))
    assert {row["policy"] for row in ds.take_all()} == {driver_value or "PASSIVE"}
