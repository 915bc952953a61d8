"""The embed job: list files -> read (tasks) -> tokenize (CPU actors) -> embed (GPU/CPU actors) -> write (tasks).

One streaming Ray Data pipeline: blocks flow through all stages with backpressure, so memory is bounded by the
blocks in flight, not by the corpus size.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
import warnings
from typing import Any

import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy
from ray.util.annotations import RayDeprecationWarning

from pipeline import commit
from pipeline.actors import EmbedActor, TokenizeActor
from pipeline.config import ComputeConfig, EmbedConfig
from pipeline.duplicate_ids import file_duplicates, reject_rows
from pipeline.duplicate_pass import find_duplicate_ids
from pipeline.fingerprint import embed_fingerprint, model_identity
from pipeline.model_loading import ModelLoadError, check_model, load_prompts
from pipeline.objects import list_tree
from pipeline.prompts import resolve_prompt
from pipeline.reading import ReadSpec
from pipeline.storage import Location, list_inputs, resolve
from pipeline.units import COUNTS, Unit, UnitProgress, plan_units, read_unit, unit_items, units_of
from pipeline.writing import REJECTS_DIR, SUMMARY_FILE, embedding_metadata, unit_of_file, write_block

log = logging.getLogger(__name__)


def init_ray(compute: ComputeConfig) -> None:
    """Connect to `compute.ray_address`, else RAY_ADDRESS (set by `ray job submit`), else start Ray in-process."""
    if not ray.is_initialized():
        ray.init(address=compute.ray_address, log_to_driver=True)
    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = 0  # a lost block fails the job instead of silently dropping rows
    # An exception raised in an actor task (a transient CUDA or storage error) is retried like a lost actor, at most
    # compute.max_task_retries times; without this Ray Data fails the job on the first one.
    ctx.actor_task_retry_on_errors = True


def resolve_gpus(requested: float | None) -> float:
    """GPUs per actor: what the config asks for, else one when the cluster has GPUs and none when it has not."""
    if requested is not None:
        return requested
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def read_units(batch: pa.Table, spec: ReadSpec, duplicates: Location | None):
    """Ray Data generator UDF: one input row per unit, many output blocks per unit (pipeline.units columns).

    `duplicates`: the committed pre-pass of input.duplicate_ids, whose repeats of this unit's file become rejects.
    """
    for unit in units_of(batch):
        reasons = file_duplicates(duplicates, unit.file_index) if duplicates is not None else {}
        for block in read_unit(spec, unit):
            yield reject_rows(block, reasons) if reasons else block


def io_task_args(compute: ComputeConfig) -> dict[str, Any]:
    """Ray remote args of the read and write tasks: mostly waiting on storage, retried on a lost worker."""
    return {"num_cpus": compute.cpus_per_io_task, "max_retries": compute.max_task_retries}


def actor_remote_args(compute: ComputeConfig) -> dict[str, Any]:
    """Ray remote args shared by the tokenizer and model actors: explicit retries, and an environment that must be
    set before the actor imports torch.

    Retries are explicit rather than Ray's defaults (infinite actor restarts): a crash loop fails the job.
    OMP_WAIT_POLICY=PASSIVE: Ray's CPU reservations are logical, so an actor's torch threads share cores with other
    actors and tasks; OpenMP's default spin-waiting then burns whole cores at every barrier while a sibling thread is
    descheduled (~15x the CPU time of a forward pass on a loaded 2-core node, docs/performance.md). A value set in
    the driver's environment wins.
    """
    return {
        "max_restarts": compute.max_restarts,
        "max_task_retries": compute.max_task_retries,
        "runtime_env": {"env_vars": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}},
    }


def embed_stages(ds: ray.data.Dataset, cfg: EmbedConfig, prompt: str) -> ray.data.Dataset:
    """Tokenize (CPU actors) and embed (GPU/CPU actors) the rows of `ds` (pipeline.reading columns).

    Shared by run_embed and the incremental re-embed job, which reads and writes differently around it.
    """
    compute = cfg.compute
    # Ray 2.60 only takes actor retries through the deprecated **ray_remote_args, hence the filter.
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=RayDeprecationWarning)
    ds = ds.map_batches(
        TokenizeActor,
        batch_size=cfg.batching.rows_per_block,
        batch_format="pyarrow",
        fn_constructor_kwargs={"model": cfg.model, "prompt": prompt},
        compute=ActorPoolStrategy(size=compute.num_tokenizers),
        num_cpus=compute.cpus_per_tokenizer,
        **actor_remote_args(compute),
    )
    min_actors, max_actors = compute.actor_pool_size()
    ds = ds.map_batches(
        EmbedActor,
        batch_size=cfg.batching.rows_per_block,
        batch_format="pyarrow",
        fn_constructor_kwargs={
            "model": cfg.model,
            "batching": cfg.batching,
            "cpus": compute.cpus_per_actor,
            "out_dtype": cfg.output.dtype,
        },
        compute=ActorPoolStrategy(min_size=min_actors, max_size=max_actors),
        num_gpus=resolve_gpus(compute.gpus_per_actor),
        num_cpus=compute.cpus_per_actor,
        **actor_remote_args(compute),
    )
    return ds


def build_dataset(
    cfg: EmbedConfig,
    spec: ReadSpec,
    units: list[Unit],
    prompt: str,
    out: Location,
    duplicates: Location | None = None,
) -> ray.data.Dataset:
    """read (tasks) -> tokenize -> embed -> write (tasks); yields the write stats (pipeline.writing.STATS_SCHEMA)."""
    io = io_task_args(cfg.compute)
    ds = ray.data.from_items(unit_items(units), override_num_blocks=max(len(units), 1))
    fn_kwargs = {"spec": spec, "duplicates": duplicates}
    ds = ds.map_batches(read_units, batch_size=1, batch_format="pyarrow", fn_kwargs=fn_kwargs, **io)
    ds = embed_stages(ds, cfg, prompt)
    metadata = embedding_metadata(cfg, prompt)
    return ds.map_batches(
        write_block,
        batch_size=None,
        batch_format="pyarrow",
        fn_kwargs={"out": out, "cfg": cfg, "metadata": metadata},
        **io,
    )


def summarize(attempt: dict[str, float], reused: dict[str, int], wall: float) -> dict[str, Any]:
    """The run's summary: row counts over the whole dataset (this attempt plus units committed before), token
    counts and speeds of this attempt only."""
    tokens, computed = attempt["tokens"], attempt["computed_tokens"]
    embed_seconds = attempt["embed_seconds"]
    rejected = attempt["rows_rejected"] + reused["rows_rejected"]
    return {
        "rows_in": attempt["rows"] + reused["rows"],
        "rows_read": attempt["rows"],
        "rows_embedded": attempt["rows_embedded"],
        "rows_reused": reused["rows_embedded"],
        "rows_rejected": rejected,
        "output_rows": attempt["output_rows"] + reused["output_rows"],
        "output_files": attempt["output_files"] + reused["output_files"],
        "tokens": tokens,
        "computed_tokens": computed,
        "padding_efficiency": round(tokens / computed, 4) if computed else 1.0,
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(tokens / wall, 1) if wall else 0.0,
        "embed_seconds": round(embed_seconds, 3),
        "embed_tokens_per_second": round(tokens / embed_seconds, 1) if embed_seconds else 0.0,
    }


def job_prompt(cfg: EmbedConfig) -> str:
    """The prompt every text gets, resolved once on the driver so that a bad prompt name fails before Ray starts."""
    try:
        return resolve_prompt(cfg.model, cfg.input.kind, load_prompts(cfg.model))
    except OSError as err:
        raise ModelLoadError(f"cannot read the configuration of model {cfg.model.name_or_path}: {err}") from err


def read_spec(cfg: EmbedConfig, root: Location) -> ReadSpec:
    return ReadSpec(
        root=root,
        format=cfg.input.format,
        text_column=cfg.input.text_column,
        id_column=cfg.input.id_column,
        keep_columns=tuple(cfg.output.keep_columns),
    )


def drop_uncommitted(out: Location, committed: set[str]) -> int:
    """Delete output files of units no attempt committed (a killed attempt's partial units) and temp files of
    interrupted writes; returns how many. Only names this job writes are touched."""

    def stale(rel: str) -> bool:
        folder, name = posixpath.split(rel)
        if folder not in ("", REJECTS_DIR):
            return False
        return name.startswith(".") or (name.startswith("part-") and unit_of_file(name) not in committed)

    files = [rel for rel in list_tree(out, temp_files=True) if stale(rel)]
    for rel in files:
        out.fs.delete_file(out.join(rel).path)
    return len(files)


def run_embed(cfg: EmbedConfig) -> dict[str, Any]:
    """Embed the configured corpus, or resume an unfinished run of the same configuration in `output.uri`.

    Returns the summary that is also written to `<output>/_summary.json`, just before the `_SUCCESS` marker.

    Raises:
        OutputExistsError: the output holds a finished run, another configuration's run (the message names each
            differing field) or foreign files, and output.overwrite is false.
    """
    start = time.perf_counter()
    root, listed = list_inputs(cfg.input.uri, cfg.storage)
    out = resolve(cfg.output.uri, cfg.storage)
    prompt = job_prompt(cfg)
    check_model(cfg.model)
    fingerprint = embed_fingerprint(cfg, embedding_metadata(cfg, prompt), listed, model_identity(cfg.model))
    resumed = commit.begin(out, "embed", cfg.output.overwrite, fingerprint)
    spec = read_spec(cfg, root)
    units = plan_units(root, listed, cfg.input.format, cfg.input.unit_bytes)
    done = commit.committed_units(out) if resumed else {}
    if resumed:
        dropped = drop_uncommitted(out, set(done))
        log.info("resuming: %d of %d units committed; %d partial files dropped", len(done), len(units), dropped)
    todo = [u for u in units if u.key not in done]
    init_ray(cfg.compute)
    duplicates = None
    if spec.id_column is not None and cfg.input.duplicate_ids != "unchecked":
        # Derived ids (file#row) are unique by construction; 'unchecked' trusts the user's ids.
        duplicates = out.join(commit.RUN_DIR, "duplicates")
        if not commit.is_committed(duplicates):
            files = [f.path for f in listed]
            io = io_task_args(cfg.compute)
            find_duplicate_ids(units, files, spec, cfg.input.duplicate_ids, duplicates, io)
    log.info("embedding %d of %d units from %s into %s", len(todo), len(units), cfg.input.uri, cfg.output.uri)
    progress = UnitProgress(todo)
    if todo:
        ds = build_dataset(cfg, spec, todo, prompt, out, duplicates)
        for stats in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for unit, counts in progress.add(stats):
                commit.mark_unit(out, unit.key, {**unit.record(), **counts})
    for unit, counts in progress.finish():
        commit.mark_unit(out, unit.key, {**unit.record(), **counts})
    reused = {name: sum(r.get(name, 0) for r in done.values()) for name in COUNTS}
    summary = summarize(progress.totals, reused, time.perf_counter() - start)
    skipped_files = {r["path"] for r in done.values()} - {u.path for u in todo}
    summary = {
        "input_files": len(listed),
        "units": len(units),
        "units_skipped": len(done),
        "files_skipped": len(skipped_files),
        **summary,
        "model": cfg.model.name_or_path,
        "prompt": prompt,
        "output": cfg.output.uri,
    }
    if summary["rows_rejected"]:
        summary["rejects"] = out.join(REJECTS_DIR).uri
    commit.commit(out, "embed", summary, SUMMARY_FILE)
    return summary
