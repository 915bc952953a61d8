"""pipeline.stages: every stage's resources, retries and environment come from one place; light modules stay light."""

from __future__ import annotations

import os
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
from pipeline.stages import (
    ClusterShape,
    ModelThreads,
    Stage,
    actor_env_vars,
    configure_retries,
    embed_stage,
    io_stage,
    tokenize_stage,
    unschedulable,
)
from pipeline.transient_errors import TransientStorageError

ONE_CPU_NODE = ClusterShape(gpus_per_node=(), cpu_nodes=1)


def embed_config(**compute) -> EmbedConfig:
    return EmbedConfig.model_validate(
        {
            "input": {"uri": "/in", "format": "jsonl"},
            "output": {"uri": "/out"},
            "model": {"name_or_path": "m"},
            "batching": {"rows_per_block": 123},
            "compute": compute,
        }
    )


def test_model_stages_take_resources_from_the_compute_section():
    cfg = embed_config(num_actors=3, cpus_per_actor=2, num_tokenizers=2, cpus_per_tokenizer=0.75)
    tok, emb = tokenize_stage(cfg, "p: ", TokenizeActor), embed_stage(cfg, EmbedActor, shape=ONE_CPU_NODE)
    assert (tok.pool, tok.num_cpus, tok.batch_size) == ((2, 2), 0.75, 123)
    assert (emb.pool, emb.num_cpus, emb.num_gpus, emb.batch_size) == ((3, 3), 2, 0, 123)
    for stage in (tok, emb):
        assert stage.env_vars == actor_env_vars()
    assert tok.constructor_kwargs["prompt"] == "p: "
    assert (tok.fn, emb.fn) == (TokenizeActor, EmbedActor)


@pytest.mark.parametrize("kind", ["relative", "dot-relative", "absolute", "hub id"])
def test_the_model_actors_get_a_local_model_directory_as_an_absolute_path(tmp_path, monkeypatch, kind):
    """Workers run in another working directory (a cluster's, a runtime env's), where a relative path is no model."""
    (tmp_path / "models" / "e5").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    given, expected = {
        "relative": ("models/e5", str(tmp_path / "models" / "e5")),
        "dot-relative": ("./models/../models/e5", str(tmp_path / "models" / "e5")),
        "absolute": (str(tmp_path / "models" / "e5"), str(tmp_path / "models" / "e5")),
        "hub id": ("intfloat/multilingual-e5-small", "intfloat/multilingual-e5-small"),  # no such directory here
    }[kind]
    cfg = embed_config()
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name_or_path": given})})
    tok, emb = tokenize_stage(cfg, "", TokenizeActor), embed_stage(cfg, EmbedActor, shape=ONE_CPU_NODE)
    assert tok.constructor_kwargs["model"].name_or_path == expected
    assert emb.constructor_kwargs["model"].name_or_path == expected
    assert cfg.model.name_or_path == given  # what the records name stays the user's spelling


@pytest.mark.parametrize(
    ("shape", "compute", "pool", "gpus", "per_node"),
    [
        (ONE_CPU_NODE, {}, (1, 1), 0, 1),  # CPU: one actor, which gets the whole node
        (ClusterShape((), 3), {}, (3, 3), 0, 1),  # CPU: one per node
        (ClusterShape((8,), 1), {}, (8, 8), 1, 8),  # one actor per GPU on a multi-GPU node
        (ClusterShape((8, 4), 2), {"gpus_per_actor": 2}, (6, 6), 2, 3),
        (ClusterShape((8,), 1), {"num_actors": 2}, (2, 2), 1, 2),  # the user's choice wins
        (ClusterShape((8,), 1), {"min_actors": 1, "max_actors": 4}, (1, 4), 1, 4),
        (ClusterShape((2,), 1), {"min_actors": 3}, (3, 3), 1, 3),
    ],
)
def test_model_actor_pool_defaults_to_one_actor_per_gpu_or_per_node(shape, compute, pool, gpus, per_node):
    stage = embed_stage(embed_config(**compute), EmbedActor, shape=shape)
    assert (stage.pool, stage.num_gpus, stage.constructor_kwargs["threads"].actors_per_node) == (pool, gpus, per_node)


def test_gpus_declared_on_a_cluster_at_zero_gpus_say_how_to_grow_the_pool(caplog):
    """The advice for a cluster whose GPU workers scale from zero is `gpus_per_actor: 1`; alone it gave one embedding
    actor for the whole job (one per GPU, counted at start: none), silently. Now a warning names compute.max_actors;
    with max_actors (configs/embed.yaml, reembed.yaml) the pool autoscales and nothing is said."""
    at_zero = ClusterShape(gpus_per_node=(), cpu_nodes=1)
    with caplog.at_level("WARNING", logger="pipeline.stages"):
        stage = embed_stage(embed_config(gpus_per_actor=1), EmbedActor, shape=at_zero)
    assert stage.pool == (1, 1) and stage.num_gpus == 1
    assert "compute.max_actors" in caplog.text and "fixed at 1 embedding actor" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.stages"):
        stage = embed_stage(embed_config(gpus_per_actor=1, min_actors=1, max_actors=8), EmbedActor, shape=at_zero)
        embed_stage(embed_config(gpus_per_actor=1), EmbedActor, shape=ClusterShape((1, 1), 2))
    assert stage.pool == (1, 8) and caplog.text == ""


# A heterogeneous cluster as Ray reports it: two A100 nodes (8 GPUs each), one L4 node, one CPU node with a pool label.
MIXED = [
    {"CPU": 64.0, "GPU": 8.0, "accelerator_type:A100": 1.0},
    {"CPU": 64.0, "GPU": 8.0, "accelerator_type:A100": 1.0, "spot": 1.0},
    {"CPU": 16.0, "GPU": 1.0, "accelerator_type:L4": 1.0},
    {"CPU": 32.0, "cpu_pool": 4.0},
]


@pytest.mark.parametrize(
    ("compute", "pool", "gpus", "per_node"),
    [
        ({}, (17, 17), 1, 6),  # every GPU
        ({"accelerator_type": "A100"}, (16, 16), 1, 8),  # the A100s only; gpus_per_actor defaults to 1
        ({"accelerator_type": "L4"}, (1, 1), 1, 1),
        ({"accelerator_type": "A100", "resources": {"spot": 0.1}}, (8, 8), 1, 8),
        ({"accelerator_type": "A100", "gpus_per_actor": 2}, (8, 8), 2, 4),
        ({"resources": {"cpu_pool": 1}, "gpus_per_actor": 0}, (1, 1), 0, 1),  # CPU actors: one per matching node
        ({"accelerator_type": "A100", "num_actors": 3}, (3, 3), 1, 2),
    ],
)
def test_accelerator_type_and_custom_resources_place_the_actors_and_size_the_default_pool(
    compute, pool, gpus, per_node
):
    cfg = embed_config(**compute)
    shape = ClusterShape.of(MIXED, cfg.compute.actor_requirements())
    stage = embed_stage(cfg, EmbedActor, shape=shape)
    assert (stage.pool, stage.num_gpus, stage.constructor_kwargs["threads"].actors_per_node) == (pool, gpus, per_node)
    assert stage.accelerator_type == compute.get("accelerator_type")
    assert stage.resources == compute.get("resources", {})
    tokenizer = tokenize_stage(cfg, "", TokenizeActor)
    assert (tokenizer.resources, tokenizer.accelerator_type) == ({}, None)  # CPU stages run anywhere


def test_accelerator_type_and_resources_reach_ray_data(ray_session):
    """The stage hands both to map_batches by name, as Ray Data's own parameters (not **ray_remote_args)."""
    import ray

    stage = Stage(lambda b: b, batch_size=None, num_cpus=0.1, resources={"spot": 0.5}, accelerator_type="A100")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RayDeprecationWarning)
        ds = stage.apply(ray.data.range(3))
    args = ds._logical_plan.dag.ray_remote_args
    assert args["resources"] == {"spot": 0.5} and args["accelerator_type"] == "A100"


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"GPU": 1}, "'GPU' is not a custom resource: set compute.gpus_per_actor instead"),
        ({"CPU": 2}, "set compute.cpus_per_actor instead"),
        ({"accelerator_type:A100": 0.001}, "set compute.accelerator_type instead"),
        ({"spot": 0}, "'spot': the amount must be above 0, not 0"),
    ],
)
def test_builtin_resources_are_refused_as_custom_ones(resources, message):
    from pipeline.config import ComputeConfig

    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ComputeConfig(resources=resources)


@pytest.mark.parametrize(
    ("threads", "node_cpus", "expected"),
    [
        (ModelThreads(None, 1, 1), 2, 2),  # the one model actor of a 2-core node runs torch on both cores
        (ModelThreads(None, 1, 8), 64, 8),  # 8 GPU actors share a 64-core node
        (ModelThreads(None, 2, 8), 8, 2),  # never below the CPUs reserved for it
        (ModelThreads(None, 0.5, 4), 2, 1),
        (ModelThreads(3, 1, 1), 64, 3),  # compute.torch_threads pins it
    ],
)
def test_model_threads_are_the_actors_share_of_its_node(threads, node_cpus, expected):
    assert threads.resolve(node_cpus) == expected


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
    patterns = ctx.retried_map_errors

    def retried(error: Exception, cause: Exception | None = None) -> bool:  # as Ray Data decides for a UDF's error
        error.__cause__ = cause
        text = format_exception(error, include_cause=True)
        return any(matches_error(pattern, text) for pattern in patterns)

    wrapped = UserCodeException("UDF failed to process a data block.")
    assert retried(RuntimeError("CUDA error: an illegal memory access\nsecond line"))
    assert retried(wrapped, OSError("Connection reset by peer"))
    flaky = TransientStorageError("cannot read s3://b/c1.jsonl as jsonl: OSError: AWS Error SLOW_DOWN during GetObject")
    assert retried(flaky) and retried(wrapped, flaky)
    for ours in (InputFileError("cannot read c1.jsonl as jsonl"), ModelLoadError("no weights"), LeaseLostError("x")):
        assert not retried(ours), ours
        assert not retried(wrapped, ours), ours
    # a permanent error that merely mentions a transient one in its text is still not retried
    assert not retried(wrapped, InputFileError("c1.jsonl: column 'TransientStorageError: ' not found"))


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


@pytest.mark.slow
@pytest.mark.parametrize("pinned", [None, 1])
def test_the_model_actor_runs_torch_on_its_nodes_cores_unless_pinned(ray_session, tiny_models, pinned):
    import os

    class ReportThreads(EmbedActor):  # pickled by value; the real actor's constructor picks the threads
        def __call__(self, block: pa.Table) -> pa.Table:
            import torch

            return block.append_column("threads", pa.array([torch.get_num_threads()] * len(block)))

    cfg = embed_config(torch_threads=pinned)
    cfg.model.name_or_path = str(tiny_models["bert"])
    cfg.model.pooling = "mean"
    stage = embed_stage(cfg, ReportThreads)
    ds = stage.apply(ray_session.data.from_items([{"x": 1}]))
    node = int(ray_session.cluster_resources()["CPU"])  # one node in the test session
    expected = pinned or min(node, len(os.sched_getaffinity(0)))
    assert {row["threads"] for row in ds.take_all()} == {expected}


CPU_MACHINE = [{"CPU": 2.0, "memory": 8e9}]


@pytest.mark.parametrize(
    "compute, nodes, message",
    [
        (
            {"gpus_per_actor": 0.5},
            CPU_MACHINE,
            (
                "the embedding actors ask for compute.cpus_per_actor: 1, "
                "compute.gpus_per_actor: 0.5, more than this machine has (2 CPUs and 0 GPUs)"
            ),
        ),
        ({"cpus_per_actor": 4}, CPU_MACHINE, "the embedding actors ask for compute.cpus_per_actor: 4, more than"),
        ({"cpus_per_tokenizer": 3}, CPU_MACHINE, "the tokenizer actors ask for compute.cpus_per_tokenizer: 3"),
        ({"cpus_per_io_task": 2.5}, CPU_MACHINE, "the read and write tasks ask for compute.cpus_per_io_task: 2.5"),
        ({"gpus_per_actor": 2}, [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}], "(8 CPUs and 1 GPUs; 8 CPUs"),
        ({"gpus_per_actor": 1, "cpus_per_actor": 8}, [{"CPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}], "ask for"),  # one node
        ({"gpus_per_actor": 0.5}, [{"CPU": 2.0, "GPU": 1.0}], None),
        (
            {"accelerator_type": "A100"},
            CPU_MACHINE,
            "compute.gpus_per_actor: 1, compute.accelerator_type: A100, more than this machine has (2 CPUs and 0 GPUs)",
        ),
        (
            {"accelerator_type": "H100"},
            [{"CPU": 8.0, "GPU": 1.0, "accelerator_type:A100": 1.0}],
            "compute.accelerator_type: H100, more than this machine has (8 CPUs and 1 GPUs (A100))",
        ),
        ({"accelerator_type": "A100"}, [{"CPU": 8.0, "GPU": 1.0, "accelerator_type:A100": 1.0}], None),
        ({"resources": {"pool_a": 2}}, [{"CPU": 2.0, "pool_a": 1.0}], "compute.resources.pool_a: 2, more than this"),
        ({"resources": {"pool_a": 1}}, [{"CPU": 2.0, "pool_a": 1.0}], None),
        ({"gpus_per_actor": 0}, CPU_MACHINE, None),
        ({}, CPU_MACHINE, None),
    ],
)
def test_a_request_no_node_can_take_is_named(compute, nodes, message):
    from pipeline.config import ComputeConfig

    reason = unschedulable(ComputeConfig(**compute), nodes)
    if message is None:
        assert reason is None
    else:
        assert message in reason and "would wait forever" in reason


@pytest.mark.slow
def test_an_in_process_run_asking_for_a_gpu_it_has_not_fails_instead_of_waiting_forever(tiny_models, tmp_path):
    """`compute.gpus_per_actor: 0.5` on a CPU machine: the job hung on Ray Data's "may hang forever" warning."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(
        f"input: {{uri: {tmp_path / 'in.jsonl'}}}\noutput: {{uri: {tmp_path / 'out'}}}\n"
        f"model: {{name_or_path: {tiny_models['bert']}}}\ncompute: {{gpus_per_actor: 0.5}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "jobs.embed", "--config", str(config)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "error: the embedding actors ask for compute.cpus_per_actor: 1, compute.gpus_per_actor: 0.5" in done.stderr


GIB = 2**30


@pytest.mark.parametrize(
    ("memory", "nodes", "message"),
    [
        # Ray's memory resource of a node is what it may give out: 64 GiB asked of 20 and 40 GiB nodes
        (
            "64GiB",
            [{"CPU": 8.0, "memory": 20.0 * GIB}, {"CPU": 8.0, "GPU": 1.0, "memory": 40.0 * GIB}],
            (
                "compute.memory_per_actor: 64 GiB, more than this machine has (8 CPUs, 0 GPUs and 20 GiB memory; "
                "8 CPUs, 1 GPUs and 40 GiB memory)"
            ),
        ),
        ("16Gi", [{"CPU": 2.0, "memory": 8.0 * GIB}], "compute.memory_per_actor: 16 GiB, more than"),
        ("16Gi", [{"CPU": 2.0, "memory": 8.0 * GIB}, {"CPU": 2.0, "memory": 16.0 * GIB}], None),  # one node has it
        (1.5 * GIB, [{"CPU": 2.0}], "compute.memory_per_actor: 1.5 GiB"),  # a node that reports no memory
        (None, [{"CPU": 2.0}], None),  # nothing asked: no node needs any
    ],
)
def test_memory_per_actor_is_a_request_checked_against_the_nodes(memory, nodes, message):
    """compute.memory_per_actor is asked of a node as Ray's memory resource, like cpus_per_actor and gpus_per_actor:
    a request no node meets is refused at start, naming the key in GiB and what each node has."""
    from pipeline.cluster_scaling import FIXED, Scaling
    from pipeline.config import ComputeConfig
    from pipeline.stages import cluster_refusal, requests

    compute = ComputeConfig(memory_per_actor=memory)
    embed = requests(compute)[0].resources()
    assert embed["memory"] == (compute.memory_per_actor or 0)
    assert all("memory" not in r.resources() for r in requests(compute)[1:])  # tokenizers and I/O tasks: none
    reason = unschedulable(compute, nodes)
    refusal, _ = cluster_refusal(compute, nodes, Scaling(kind=FIXED, source="test"))
    if message is None:
        assert reason is None and refusal is None
    else:
        assert message in reason and "would wait forever" in reason
        assert "compute.memory_per_actor: " in refusal and "which no node of the cluster has" in refusal


class Same:
    def __call__(self, block):
        return block


def test_memory_per_actor_reaches_ray_data_for_the_model_actors_only(ray_session):
    """The embedding actors' stage hands the bytes to map_batches as Ray's memory= (by name, no **ray_remote_args);
    the tokenizer stage asks none."""
    import ray

    cfg = embed_config(memory_per_actor="2GiB", num_actors=1)
    stage = embed_stage(cfg, EmbedActor, shape=ClusterShape.of([{"CPU": 4.0}], {}))
    assert stage.memory == 2 * GIB
    with warnings.catch_warnings():
        warnings.simplefilter("error", RayDeprecationWarning)
        ds = Stage(Same, batch_size=None, num_cpus=0.1, pool=(1, 1), memory=stage.memory).apply(ray.data.range(3))
    assert ds._logical_plan.dag.ray_remote_args["memory"] == 2 * GIB
    assert tokenize_stage(cfg, "", TokenizeActor).memory is None
