"""Ray Data stages as objects: the UDF, its arguments and its resources decided in one place.

Every job builds its `map_batches` calls through `Stage`, so CPUs/GPUs, actor pools, retries and the actor
environment are chosen here and nowhere else (after ray.data.llm's StatefulStage and NeMo Curator's Resources).
Light on purpose: no torch or transformers at import time (the jobs pass the model classes in), so this module can
be used from anywhere without paying for them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.data import ActorPoolStrategy

from pipeline.config import ComputeConfig, EmbedConfig
from pipeline.transient_errors import retrying

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One `Dataset.map_batches` call: a function (tasks) or a class (an actor pool) and what it runs on.

    Args:
        fn: a function `(block) -> block | iterator of blocks` run in tasks, or a class whose `__init__` takes
            `constructor_kwargs` and whose `__call__(block) -> block` runs in a pool of actors.
        batch_size: rows per call; None: one whole block per call.
        num_cpus: logical CPUs reserved per task or actor.
        num_gpus: GPUs per actor (0 for tasks and CPU actors).
        kwargs: keyword arguments of every call.
        constructor_kwargs: keyword arguments of the actor class's `__init__` (actor stages only).
        pool: (min, max) actors; None: a task stage.
        env_vars: environment of the workers that run this stage, set before they import anything.
        resources: custom Ray resources per task or actor (Ray's `resources=`).
        accelerator_type: the accelerator an actor must run on (Ray's `accelerator_type=`), None: any.
        memory: bytes of Ray's `memory` resource reserved per actor; None: none.
    """

    fn: Callable[..., Any]
    batch_size: int | None
    num_cpus: float
    num_gpus: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    constructor_kwargs: dict[str, Any] | None = None
    pool: tuple[int, int] | None = None
    env_vars: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    accelerator_type: str | None = None
    memory: int | None = None

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        """Named `map_batches` parameters only: no `**ray_remote_args` (deprecated in Ray 2.60, removed in 2.64).

        Retries are not per stage: lost workers and actors are Ray Data's (see `configure_retries`).
        """
        actor = self.pool is not None
        # Ray's map_batches refuses batch_size=None with GPUs (a guard for users who forget a batch size); an actor
        # stage of whole blocks (pipeline.spreading's shares) takes map_batches_internal, the same call without that
        # guard (Ray's own map_groups uses it for GPUs).
        whole_gpu_blocks = self.batch_size is None and actor and self.num_gpus > 0
        return (ds.map_batches_internal if whole_gpu_blocks else ds.map_batches)(
            self.fn,
            batch_size=self.batch_size,
            batch_format="pyarrow",
            fn_kwargs=self.kwargs or None,
            fn_constructor_kwargs=self.constructor_kwargs if actor else None,
            compute=ActorPoolStrategy(min_size=self.pool[0], max_size=self.pool[1]) if actor else None,
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus if actor else None,
            runtime_env={"env_vars": self.env_vars} if self.env_vars else None,
            resources=self.resources or None,
            accelerator_type=self.accelerator_type,
            memory=self.memory if actor else None,
        )


def configure_retries(ctx: ray.data.DataContext, compute: ComputeConfig) -> None:
    """How the Ray Data stages of one job recover, set on the job's DataContext (Ray >= 2.60's retry API).

    - A lost worker, actor or node (spot preemption, OOM kill, `ray.kill`): Ray Data's own defaults, i.e. the actor
      is restarted and its in-flight tasks wait for it, with no count. A bounded `max_task_retries` is consumed by
      fast-failed attempts while the actor restarts on another node (`ActorUnavailableError`, Ray's actor
      fault-tolerance docs), which is how a lost node used to fail the whole job.
    - An exception raised inside a stage (a transient CUDA or driver error, a storage read or write that failed
      after the S3 client's own retries): retried in the same worker, at most `compute.max_task_retries` times with
      backoff (`retried_map_errors`/`max_map_retries`; a read resumes after the blocks already yielded). Errors
      that tell the user to fix something (a bad input file, a missing model) are not retried: `RETRIED_ERRORS`.
    - An actor that dies while loading its model: replaced at most `compute.max_restarts` times in a row
      (`max_consecutive_actor_init_deaths`), so a model that cannot load anywhere fails the job.
    - A block lost for good: `max_errored_blocks = 0`, the job fails instead of dropping rows.
    A crash loop (a process that dies on every attempt at one block) ends at Ray Data's no-progress timeout
    (`execution_no_progress_timeout_s`, 30 min by default).
    """
    ctx.max_errored_blocks = 0
    ctx.actor_task_retry_on_errors = False  # Ray Data actors retry tasks without limit: app errors are retried above
    ctx.retried_map_errors = list(RETRIED_ERRORS)
    ctx.max_map_retries = compute.max_task_retries
    ctx.max_consecutive_actor_init_deaths = compute.max_restarts


# Ray Data retries an exception when any pattern matches `module.ClassName: message` of it and of its cause (the
# UDF's own error under Ray's UserCodeException). Exceptions defined in this package (pipeline.errors.UserError and
# its kin: a bad input file, a missing model, a lost lease) describe conditions that a retry cannot fix, with one
# exception: TransientStorageError, which readers and writers raise for throttling, 5xx and dropped connections
# (pipeline.transient_errors). Everything else (torch, CUDA, OS errors) may be transient.
NOT_OUR_ERROR = r"(?s)^(?!.*\bpipeline\.[\w.]+: )"
TRANSIENT_STORAGE_ERROR = r"\bpipeline\.transient_errors\.TransientStorageError: "
RETRIED_ERRORS = (NOT_OUR_ERROR, TRANSIENT_STORAGE_ERROR)


def actor_env_vars() -> dict[str, str]:
    """Environment the tokenizer and model actors need before they import torch.

    OMP_WAIT_POLICY=PASSIVE: Ray's CPU reservations are logical, so an actor's torch threads share cores with other
    actors and tasks; OpenMP's default spin-waiting then burns whole cores at every barrier while a sibling thread is
    descheduled (~15x the CPU time of a forward pass on a loaded 2-core node, docs/performance.md). A value set in
    the driver's environment wins.
    """
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def io_task_args(compute: ComputeConfig) -> dict[str, Any]:
    """`ray.remote(...).options(**)` of a read task outside Ray Data (e.g. the duplicate-id pre-pass).

    Like Ray Data's tasks, one lost with its worker or node is re-run without a count (`max_retries=-1` counts only
    system failures; an exception the task raises is not retried).
    """
    return {"num_cpus": compute.cpus_per_io_task, "max_retries": -1}


def io_task(fn: Callable[..., Any], compute: ComputeConfig, **options: Any) -> Any:
    """`fn` as a Ray read task outside Ray Data (the duplicate-id and kept-column pre-passes): `io_task_args`, and a
    transient storage error retried inside the task at most `compute.max_task_retries` times with backoff
    (pipeline.transient_errors.retrying). `fn` recomputes its whole return on a retry, so no row is counted twice.

    `options`: more `.options()` arguments, e.g. `num_returns`.
    """
    return ray.remote(retrying(fn, compute.max_task_retries)).options(**io_task_args(compute), **options)


def io_stage(
    fn: Callable[..., Any], compute: ComputeConfig, kwargs: dict[str, Any], batch_size: int | None = None
) -> Stage:
    """A read or write task stage: mostly waiting on storage, so a fraction of a CPU, retried on a lost worker."""
    return Stage(fn, batch_size, num_cpus=compute.cpus_per_io_task, kwargs=kwargs)


@dataclass(frozen=True)
class ModelThreads:
    """How an embedding actor picks its torch intra-op threads once it knows its node.

    Args:
        pinned: compute.torch_threads; None: derive from the node.
        least: compute.cpus_per_actor (Ray's reservation), the fewest threads a derived count may give.
        actors_per_node: model actors expected on one node (the pool spread over the nodes that can hold it).
    """

    pinned: int | None
    least: float
    actors_per_node: int

    def resolve(self, node_cpus: int) -> int:
        """Threads for an actor on a node with `node_cpus` CPUs: its share of the node, at least `least`.

        Ray's CPU reservations are logical: the model actor reserving 1 CPU on a 2-core node would otherwise run torch
        on one core while the tokenizer and I/O stages, which need little, leave the other idle.
        """
        if self.pinned is not None:
            return self.pinned
        return max(1, int(self.least), node_cpus // max(self.actors_per_node, 1))


def node_cpus() -> int:
    """CPUs of the node this process runs on: Ray's CPU resource of the node, at most the cores this process may
    use (a Ray node started with more logical CPUs than cores must not oversubscribe them)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not ray.is_initialized():
        return usable
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("Alive"):
            return max(1, min(usable, int(node.get("Resources", {}).get("CPU", usable))))
    return usable


@dataclass(frozen=True)
class ClusterShape:
    """What the stage defaults depend on: the GPUs of each GPU node and the number of nodes with CPUs."""

    gpus_per_node: tuple[float, ...]
    cpu_nodes: int

    @classmethod
    def current(cls, requires: dict[str, float] | None = None) -> ClusterShape:
        """The connected Ray cluster's alive nodes (an autoscaling cluster: the nodes up now) that have the custom
        resources `requires` (ComputeConfig.actor_requirements)."""
        return cls.of([node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")], requires)

    @classmethod
    def of(cls, nodes: list[dict[str, float]], requires: dict[str, float] | None = None) -> ClusterShape:
        """The shape of `nodes` (Ray resource dicts), counting only those with every resource in `requires`."""
        fit = [r for r in nodes if has_resources(r, requires or {})]
        return cls(tuple(r["GPU"] for r in fit if r.get("GPU", 0) > 0), sum(1 for r in fit if r.get("CPU", 0) > 0))

    def default_model_actors(self, gpus_per_actor: float) -> int:
        """Model actors when the config fixes none: one per GPU of the cluster (per `gpus_per_actor` GPUs), or one
        per node for CPU actors (each then runs torch on its whole node)."""
        if gpus_per_actor > 0:
            return max(1, sum(int(g // gpus_per_actor) for g in self.gpus_per_node))
        return max(1, self.cpu_nodes)

    def actors_per_node(self, actors: int, gpus_per_actor: float) -> int:
        """Model actors one node holds when `actors` spread evenly over the nodes that can run them."""
        nodes = len(self.gpus_per_node) if gpus_per_actor > 0 else self.cpu_nodes
        return math.ceil(actors / max(nodes, 1))


def has_resources(node: dict[str, float], needs: dict[str, float]) -> bool:
    """Whether a node (a Ray resource dict) has at least each amount in `needs`."""
    return all(node.get(name, 0.0) >= amount for name, amount in needs.items())


@dataclass(frozen=True)
class Request:
    """One kind of actor or task of a job and what it asks of a node.

    Args:
        who: in words, e.g. "the embedding actors".
        needs: {Ray resource name: (the config key that sets it, amount)}; amounts of 0 are asked of no node.
        accelerator_type: compute.accelerator_type, for the words.
    """

    who: str
    needs: dict[str, tuple[str, float]]
    accelerator_type: str | None = None

    def resources(self) -> dict[str, float]:
        """The Ray resource dict a node must have."""
        return {name: amount for name, (_, amount) in self.needs.items()}

    def fits(self, nodes: list[dict[str, float]]) -> bool:
        return any(has_resources(node, self.resources()) for node in nodes)

    def asked(self) -> str:
        """`compute.cpus_per_actor: 1, compute.accelerator_type: A100, compute.memory_per_actor: 16 GiB`: the keys of
        what is asked."""
        return ", ".join(
            f"{key}: {self.accelerator_type}"
            if key == "compute.accelerator_type"
            else f"{key}: {gib(amount)}"
            if name == "memory"
            else f"{key}: {amount:g}"
            for name, (key, amount) in self.needs.items()
            if amount > 0
        )

    def asks_memory(self) -> bool:
        return self.needs.get("memory", ("", 0.0))[1] > 0


def gib(amount: float) -> str:
    """Bytes in GiB, for messages: `16 GiB`, `0.5 GiB`, `31.3 GiB`."""
    return f"{amount / 2**30:.3g} GiB"


def requests(compute: ComputeConfig) -> list[Request]:
    """What the actors and tasks of a job with `compute` ask of a node: the embedding actors, the tokenizer actors,
    the read and write tasks."""
    custom = {
        name: (
            "compute.accelerator_type" if name.startswith("accelerator_type:") else f"compute.resources.{name}",
            amount,
        )
        for name, amount in compute.actor_requirements().items()
    }
    embed = {
        "CPU": ("compute.cpus_per_actor", compute.cpus_per_actor),
        "GPU": ("compute.gpus_per_actor", compute.requested_gpus() or 0.0),
        "memory": ("compute.memory_per_actor", float(compute.memory_per_actor or 0)),
        **custom,
    }
    return [
        Request("the embedding actors", embed, compute.accelerator_type),
        Request("the tokenizer actors", {"CPU": ("compute.cpus_per_tokenizer", compute.cpus_per_tokenizer)}),
        Request("the read and write tasks", {"CPU": ("compute.cpus_per_io_task", compute.cpus_per_io_task)}),
    ]


def unmet(compute: ComputeConfig, nodes: list[dict[str, float]]) -> Request | None:
    """The first request of `compute` (`requests`) that fits on none of `nodes` (Ray resource dicts), else None."""
    return next((request for request in requests(compute) if not request.fits(nodes)), None)


GPU_HINT = " (or unset compute.gpus_per_actor: GPU actors where there are GPUs, else CPU ones)"


def unschedulable(compute: ComputeConfig, nodes: list[dict[str, float]]) -> str | None:
    """Why an actor or task of `compute` fits on none of `nodes` (Ray resource dicts) of a Ray started in this
    process, which cannot add nodes, else None.

    There such a request waited forever (Ray Data's "Cluster resources are not enough ... may hang forever"), e.g.
    `compute.gpus_per_actor: 0.5` on a CPU machine. A connected cluster: `cluster_refusal`.
    """
    request = unmet(compute, nodes)
    if request is None:
        return None
    have = "; ".join(node_words(node, request.asks_memory()) for node in nodes)
    return (
        f"{request.who} ask for {request.asked()}, more than this machine has ({have}); Ray started in this process "
        f"cannot add a node, so they would wait forever. Lower it{GPU_HINT if 'gpus' in request.asked() else ''}, or "
        "run on a cluster that has or adds such nodes (compute.ray_address or RAY_ADDRESS)"
    )


def cluster_refusal(
    compute: ComputeConfig, nodes: list[dict[str, float]], scaling: Any = None
) -> tuple[str | None, str]:
    """On a connected cluster: (why the job must stop now, or None; a line to log, or "") for a request of
    `compute` that no node up now (`nodes`, Ray resource dicts) meets, given what the cluster can add (`scaling`:
    a pipeline.cluster_scaling.Scaling; None: read from the connected cluster, only when a request is unmet).

    - fixed (no autoscaler, Ray's read-only provider): refused, naming the key and the nodes there are;
    - an autoscaler whose node types are known: refused naming them when none meets it, else waited for (logged);
    - an autoscaler with unseen node types, or nothing readable: waited for as before, logged with how long Ray
      Data waits for the actors and which key to change.
    An unmet request is otherwise left to Ray Data: it waits as long as `ray_data_wait` says, then fails in Ray's
    own words.
    """
    from pipeline import cluster_scaling

    notes = []
    for request in requests(compute):
        if request.fits(nodes):
            continue
        scaling = scaling or cluster_scaling.current()
        reason, note = refusal_of(request, nodes, scaling)
        if reason:
            return reason, ""
        notes.append(note)
    return None, "; ".join(notes)


def cluster_refusal_after_waiting(
    compute: ComputeConfig,
    alive_nodes: Callable[[], list[dict[str, float]]],
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    scaling: Any = None,
) -> tuple[str | None, str]:
    """`cluster_refusal` of the nodes `alive_nodes()` returns (Ray resource dicts of the live nodes), asked again
    every `poll_s` seconds for up to `compute.wait_for_nodes_s` while it refuses: a worker node that is being
    replaced (a KubeRay pod recreated, a node restarted) or still joining lets the job start when it is up, instead
    of the job being refused the moment it starts. The wait is logged once, with the reason and the key; a refusal
    after it says how long it waited. `scaling`: as cluster_refusal's (None: read from the cluster at each ask).
    """
    reason, note = cluster_refusal(compute, alive_nodes(), scaling)
    wait = compute.wait_for_nodes_s
    if reason is None or wait <= 0:
        return reason, note
    log.warning(
        "%s. Waiting up to %gs for such a node to join (a worker node being replaced or still starting; "
        "compute.wait_for_nodes_s)",
        reason,
        wait,
    )
    deadline = clock() + wait
    while reason is not None and (left := deadline - clock()) > 0:
        sleep(min(poll_s, left))
        reason, note = cluster_refusal(compute, alive_nodes(), scaling)
    if reason is None:
        log.info("a node that meets the request has joined: the job goes on")
        return None, note
    return f"{reason} (no such node joined in the {wait:g} s compute.wait_for_nodes_s waits)", note


def refusal_of(request: Request, nodes: list[dict[str, float]], scaling: Any) -> tuple[str | None, str]:
    """`cluster_refusal` of one request that no node of `nodes` meets."""
    from pipeline.cluster_scaling import FIXED, NODE_TYPES

    asked = request.asked()
    have = "; ".join(node_words(node, request.asks_memory()) for node in nodes) or "none"
    lower = f"Lower it{GPU_HINT if 'gpus' in asked else ''}"
    if scaling.kind == FIXED:
        return (
            f"{request.who} ask for {asked}, which no node of the cluster has ({have}), and the cluster cannot add "
            f"a node ({scaling.source}), so they would wait until Ray Data gives up. {lower}, or add such a node to "
            "the cluster (a worker group, `ray start --resources`) or an autoscaler that adds one"
        ), ""
    if scaling.kind == NODE_TYPES:
        types = {name: r for name, r in scaling.node_types.items() if has_resources(r, request.resources())}
        if not types:
            kinds = "; ".join(
                f"{name}: {node_words(r, request.asks_memory())}" for name, r in sorted(scaling.node_types.items())
            )
            return (
                f"{request.who} ask for {asked}, which no node of the cluster has ({have}) and no node type its "
                f"autoscaler can add has ({kinds}; {scaling.source}). {lower}, or add such a node type"
            ), ""
        return None, (
            f"{request.who} ask for {asked}, which no node of the cluster has now ({have}): waiting for the "
            f"autoscaler to add a node of type {', '.join(sorted(types))}"
        )
    how_long = ray_data_wait(ray.data.DataContext.get_current(), actors="actors" in request.who)
    return None, (
        f"{request.who} ask for {asked}, which no node of the cluster has now ({have}), and whether the cluster "
        f"can add one is not known ({scaling.source}): {how_long}. If no node of the cluster "
        f"can have it, stop the job and change {', '.join(key for key, a in request.needs.values() if a > 0)}"
    )


def ray_data_wait(ctx: ray.data.DataContext, actors: bool) -> str:
    """How long Ray Data waits for actors (`actors`) or tasks that no node can start, in words: an actor pool's
    `wait_for_min_actors_s` when above 0 (Ray 2.60's default is -1: the pool starts without waiting), else its
    no-progress timeout `execution_no_progress_timeout_s` (30 min by default; -1: no limit)."""
    if actors and ctx.wait_for_min_actors_s > 0:
        return f"Ray Data waits up to {ctx.wait_for_min_actors_s:g} s (DataContext.wait_for_min_actors_s)"
    limit = ctx.execution_no_progress_timeout_s
    if limit is None or limit <= 0:
        return "Ray Data waits without a limit (DataContext.execution_no_progress_timeout_s)"
    return f"Ray Data waits up to {limit:g} s without progress (DataContext.execution_no_progress_timeout_s)"


def node_words(node: dict[str, float], memory: bool = False) -> str:
    """`8 CPUs and 1 GPUs`, with `memory`: `8 CPUs, 1 GPUs and 31.3 GiB memory` (Ray's memory resource), then the
    node's custom resources and accelerator type, if any."""
    words = f"{node.get('CPU', 0.0):g} CPUs and {node.get('GPU', 0.0):g} GPUs"
    if memory:
        words = (
            f"{node.get('CPU', 0.0):g} CPUs, {node.get('GPU', 0.0):g} GPUs and {gib(node.get('memory', 0.0))} memory"
        )
    custom = [
        name.split(":", 1)[1] if name.startswith("accelerator_type:") else f"{name}: {amount:g}"
        for name, amount in sorted(node.items())
        if name not in ("CPU", "GPU", "memory", "object_store_memory") and not name.startswith("node:")
    ]
    return words + (f" ({', '.join(custom)})" if custom else "")


def resolve_gpus(
    requested: float | None, shape: ClusterShape | None = None, key: str = "compute.gpus_per_actor", warn: bool = True
) -> float:
    """GPUs per actor: what the config asks for, else one when the cluster has GPUs now and none when it has not.

    Only an explicit request lets an autoscaler act: a cluster whose GPU workers scale from zero reports no GPU
    until something asks for one, so `None` there means CPU actors; on a cluster (RAY_ADDRESS or more than one
    node) that case is logged as a warning naming `key`, unless `warn` is false.
    """
    if requested is not None:
        return requested
    has_gpus = bool(shape.gpus_per_node) if shape is not None else ray.cluster_resources().get("GPU", 0) > 0
    if has_gpus:
        return 1.0
    if warn and (os.environ.get("RAY_ADDRESS") or (ray.is_initialized() and len(ray.nodes()) > 1)):
        log.warning(
            "%s is unset and the cluster has no GPU now: these actors run on CPU. On a cluster whose GPU workers "
            "scale from zero, set %s: 1 so that the autoscaler adds GPU nodes (and compute.max_actors for "
            "more than one embedding actor).",
            key,
            key,
        )
    return 0.0


def model_pool(
    cfg: EmbedConfig,
    shape: ClusterShape | None = None,
    gpus: float | None = None,
    warn: bool = False,
    live: bool | None = None,
) -> tuple[int, int]:
    """(min, max) embedding actors of `cfg` on the cluster `shape` (the connected one when None): compute's
    num_actors / min_actors / max_actors, else one per GPU or per CPU node (ClusterShape.default_model_actors).

    On a Ray that cannot add nodes (started in this process, or a cluster without an autoscaler), a minimum above
    the actors its alive nodes hold at once (`pool_capacity`) is lowered to that many, and the pool fixed at it: Ray Data waits for a pool's
    minimum before a small corpus's blocks go out (pipeline.spreading: up to 30 minutes, with no word), and the
    actors that do not fit would never start. `warn`: log that (once per job: embed_stage). `live`: whether `shape`
    is the connected Ray's, whose nodes are then counted (default: when `shape` is None); a shape given to plan for
    another cluster is planned as given, whatever Ray this process is connected to.
    """
    live = shape is None if live is None else live
    shape = shape or ClusterShape.current(cfg.compute.actor_requirements())
    if gpus is None:  # embed_stage gives resolve_gpus's warning
        gpus = resolve_gpus(cfg.compute.requested_gpus(), shape, warn=False)
    low, high = cfg.compute.actor_pool_size(shape.default_model_actors(gpus))
    if low <= 1 or not live or not ray.is_initialized():
        return low, high
    from pipeline.driver_reservation import driver_reservation, without_reservation

    asked = actor_resources(cfg.compute, gpus)
    alive = [(node.get("NodeID", ""), node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]
    nodes = without_reservation(alive, driver_reservation())  # a Jobs API driver's --entrypoint-num-* are taken
    fit = pool_capacity(asked, nodes, beside_model_actors(cfg.compute))
    if fit >= low or fit == 0 or not cannot_add_nodes(cfg.compute):
        return low, high  # all fit; none fits (cluster_refusal's case); or an autoscaler may add nodes for them
    if warn:
        key = "compute.num_actors" if cfg.compute.num_actors is not None else "compute.min_actors"
        log.warning(
            "%s asks for %d embedding actors of %s each, but the nodes of this Ray hold %d of them at once (%s; "
            "beside the job's %d tokenizer actor(s) of %g CPU and a read/write task of %g CPU) and it cannot add "
            "nodes: the pool starts with %d (the actors that do not fit would never start, and Ray Data would wait "
            "for them). Lower %s to %d, or give the actors less (compute.cpus_per_actor, gpus_per_actor, "
            "memory_per_actor)",
            key,
            low,
            ", ".join(f"{amount:g} {name}" for name, amount in asked.items()),
            fit,
            "; ".join(node_words(node) for node in nodes),
            cfg.compute.num_tokenizers,
            cfg.compute.cpus_per_tokenizer,
            cfg.compute.cpus_per_io_task,
            fit,
            key,
            fit,
        )
    return fit, fit  # a small corpus is then cut into one block per actor that starts (pipeline.spreading)


def actor_resources(compute: ComputeConfig, gpus: float) -> dict[str, float]:
    """The Ray resources one embedding actor takes on its node (`gpus`: resolve_gpus's), amounts above 0 only."""
    asked = {
        "CPU": compute.cpus_per_actor,
        "GPU": gpus,
        "memory": float(compute.memory_per_actor or 0),
        **compute.actor_requirements(),
    }
    return {name: float(amount) for name, amount in asked.items() if amount and amount > 0}


def pool_capacity(
    asked: dict[str, float], nodes: list[dict[str, float]], beside: list[dict[str, float]] | None = None
) -> int:
    """How many actors that each take `asked` (Ray resources) `nodes` (Ray resource dicts) hold at once; a request
    of nothing fits without limit (a large number).

    `beside`: what else of the job runs at the same time (resource dicts: its tokenizer actors, a read/write task),
    each taken off the node where it costs the fewest of these actors (the whole node when one holds nothing else);
    one that fits on no node is left out (the start's refusal names it). None: nothing else running."""
    if not asked:
        return 1 << 30

    def holds(node: dict[str, float]) -> int:
        return min(int(node.get(name, 0.0) / amount + 1e-9) for name, amount in asked.items())

    free = [dict(node) for node in nodes]
    for other in beside or []:
        room = [
            (holds(node) - holds({k: v - other.get(k, 0.0) for k, v in node.items()}), i)
            for i, node in enumerate(free)
            if all(node.get(name, 0.0) + 1e-9 >= amount for name, amount in other.items())
        ]
        if room:
            node = free[min(room)[1]]
            for name, amount in other.items():
                node[name] = node.get(name, 0.0) - amount
    return sum(holds(node) for node in free)


def beside_model_actors(compute: ComputeConfig) -> list[dict[str, float]]:
    """What an embed job runs next to its embedding actors (pool_capacity's `beside`): its tokenizer actors
    (compute.num_tokenizers of compute.cpus_per_tokenizer CPUs) and one read/write task (cpus_per_io_task), which
    feeds them and takes their output. On a Ray that cannot grow, model actors that leave no room for these never
    all start, and Ray Data waits for them."""
    return [{"CPU": compute.cpus_per_tokenizer}] * compute.num_tokenizers + [{"CPU": compute.cpus_per_io_task}]


def cannot_add_nodes(compute: ComputeConfig) -> bool:
    """Whether the Ray this job runs on cannot add a node: started in this process, or a cluster whose
    autoscaler state says so (pipeline.cluster_scaling FIXED: Ray's read-only provider)."""
    from pipeline import cluster_scaling

    if compute.ray_address is None and not os.environ.get("RAY_ADDRESS"):
        return True
    return cluster_scaling.current().kind == cluster_scaling.FIXED


def tokenize_stage(
    cfg: EmbedConfig, prompt: str, actor_cls: type, tokenizer: Any = None, snapshot: Any = None
) -> Stage:
    """CPU actors: text -> token ids (`actor_cls`: pipeline.actors.TokenizeActor). `snapshot`: the driver's
    pipeline.tokenizer_snapshot.TokenizerSnapshot, which the actors rebuild the tokenizer from; else `tokenizer`:
    the driver's loaded tokenizer, shipped to the actors; neither: each loads its own."""
    compute = cfg.compute
    return Stage(
        actor_cls,
        batch_size=cfg.batching.rows_per_block,
        num_cpus=compute.cpus_per_tokenizer,
        constructor_kwargs={
            "model": cfg.model.for_workers(),
            "prompt": prompt,
            **({"snapshot": snapshot} if snapshot else {"tokenizer": tokenizer} if tokenizer else {}),
        },
        pool=(compute.num_tokenizers, compute.num_tokenizers),
        env_vars=actor_env_vars(),
    )


def embed_stage(
    cfg: EmbedConfig,
    actor_cls: type,
    precision: Any = None,
    shape: ClusterShape | None = None,
    padding: Any = None,
    pool_skip: int = 0,
    block_rows: int | None = None,
    whole_blocks: bool = False,
    model_files: Any = None,
) -> Stage:
    """GPU (or CPU) actors: token ids -> embeddings (`actor_cls`: pipeline.actors.EmbedActor), one model per actor.

    `precision`: a pipeline.quantization.OutputPrecision (stored dimensions/precision, calibrated for int8/uint8);
    None: the actor derives it from output.dtype. `padding`: the driver's pipeline.model_loading.TokenizerPadding
    (None: each actor loads the tokenizer for it). `pool_skip`: the prompt tokens left out of pooling
    (pipeline.model_loading.pooling_skip). Defaults from `shape` (the connected cluster when None): one actor
    per GPU, or one per node on CPU, each with its share of its node's cores as torch threads (`ModelThreads`).
    `block_rows`: rows each call sorts and batches (default batching.rows_per_block). `whole_blocks`: each call gets
    one whole block as it comes, none joined with another (pipeline.spreading's block per actor of a small corpus,
    which Ray Data would otherwise bundle up to `block_rows` rows for one actor); the actor embeds a block of more
    than batching.rows_per_block rows that many at a time. `model_files`: a pipeline.model_files.ModelFiles each
    actor checks once it has loaded the model (None: no check).
    """
    compute = cfg.compute
    live = shape is None  # the connected cluster's nodes bound the pool (model_pool); a given shape is planned as is
    shape = shape or ClusterShape.current(compute.actor_requirements())
    gpus = resolve_gpus(compute.requested_gpus(), shape)
    pool = model_pool(cfg, shape, gpus, warn=True, live=live)
    if gpus > 0 and not shape.gpus_per_node and compute.num_actors is None and compute.max_actors is None:
        log.warning(
            "compute.gpus_per_actor is %s and the cluster has no GPU now (GPU workers scaling from zero): the pool "
            "is fixed at %d embedding actor(s), its default of one per GPU counted at start, so the autoscaler "
            "adds only that many GPU nodes. Set compute.max_actors (e.g. the GPU worker group's maxReplicas) to "
            "let Ray Data grow the pool as GPU nodes come up, or compute.num_actors for a fixed size.",
            gpus,
            pool[1],
        )
    threads = ModelThreads(compute.torch_threads, compute.cpus_per_actor, shape.actors_per_node(pool[1], gpus))
    return Stage(
        actor_cls,
        batch_size=None if whole_blocks else block_rows or cfg.batching.rows_per_block,
        num_cpus=compute.cpus_per_actor,
        num_gpus=gpus,
        constructor_kwargs={
            "model": cfg.model.for_workers(),
            "batching": cfg.batching,
            "threads": threads,
            "out_dtype": cfg.output.dtype,
            **({"output": precision} if precision is not None else {}),
            **({"padding": padding} if padding is not None else {}),
            **({"pool_skip": pool_skip} if pool_skip else {}),
            **({"model_files": model_files} if model_files is not None else {}),
        },
        pool=pool,
        env_vars=actor_env_vars(),
        resources=compute.resources,
        accelerator_type=compute.accelerator_type,
        memory=compute.memory_per_actor,
    )
