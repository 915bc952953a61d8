"""The embed job: list units -> read (tasks) -> tokenize (CPU actors) -> embed (GPU/CPU actors) -> write (tasks).

One streaming Ray Data pipeline: blocks flow through all stages with backpressure, so memory is bounded by the
blocks in flight, not by the corpus size. Units (pipeline.units) are committed one by one through pipeline.commit,
so a rerun of the same configuration skips what an earlier attempt finished (docs/resume.md).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import posixpath
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import ray
from pydantic import BaseModel

from pipeline import commit
from pipeline.actors import EmbedActor, TokenizeActor
from pipeline.calibration import calibrated_on, good_rows, output_precision, precision_summary, sample_vectors
from pipeline.columns import REJECTS_DIR, SUMMARY_FILE
from pipeline.config import ComputeConfig, EmbedConfig
from pipeline.driver_reservation import driver_reservation, without_reservation
from pipeline.duplicate_ids import read_units
from pipeline.duplicate_pass import find_duplicate_ids
from pipeline.errors import UserError
from pipeline.etags import same_object
from pipeline.file_formats import listing_formats
from pipeline.fingerprint import embed_fingerprint
from pipeline.input_contents import (
    ContentRecorder,
    changed_inputs,
    changed_inputs_message,
    changed_objects,
    is_local,
    same_content,
)
from pipeline.kept_columns import decide
from pipeline.model_defaults import model_dimension, model_prompt, with_model_defaults
from pipeline.model_files import held_to
from pipeline.model_loading import ModelLoadError, ModelSettings, check_model, pooling_skip
from pipeline.node_paths import check_nodes_see_paths
from pipeline.objects import get_json, list_tree, put_json
from pipeline.process_exit import Terminated, interrupt_on_sigterm
from pipeline.progress import RowProgress, expected_rows, quiet_ray_data_progress
from pipeline.quantization import OutputPrecision
from pipeline.ray_quiet import absorb_actor_argument_warning
from pipeline.reading import ReadSpec, count_span_rows, observed_kept_types_of
from pipeline.reembed.sources import InputChangedError
from pipeline.reject_guard import TooManyRejectsError, apply_guard
from pipeline.resolution_cache import resolve_remembered
from pipeline.shared_output import run_lease
from pipeline.spreading import SharedCorpus, cut_blocks, is_small
from pipeline.stages import (
    cluster_refusal_after_waiting,
    configure_retries,
    embed_stage,
    io_stage,
    io_task,
    io_task_args,
    model_pool,
    resolve_gpus,
    tokenize_stage,
    unschedulable,
)
from pipeline.storage import Location, list_inputs, resolve
from pipeline.units import COUNTS, Unit, UnitProgress, file_groups, plan_units, record_files, unit_items
from pipeline.writing import embedding_metadata, model_dim_entry, unit_of_file, write_block, write_empty_output

# Kept importable from here for the jobs built on this one (reembed, bitext, clustering).
__all__ = ["embed_stages", "init_ray", "init_ray_while", "io_task_args", "resolve_gpus", "run_embed"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class UnschedulableError(UserError, RuntimeError):
    """A compute request that no node can take and that the cluster cannot add a node for: a Ray started in this
    process (pipeline.stages.unschedulable), a cluster without an autoscaler or whose autoscaler's node types cannot
    meet it either (pipeline.stages.cluster_refusal)."""


class RayStartError(UserError, RuntimeError):
    """Ray cannot start in this process for want of a place to write (its token, its session files), or the cluster
    address given answers nothing."""


# `auto` is Ray's search: RAY_ADDRESS, the address file of the last cluster started on this machine, a running GCS.
AUTO_HINT = (
    "'auto' connects to the cluster Ray finds on this machine (the last one started here, or any running GCS), "
    "which may be another user's or a stopped one; give the head's address instead. "
)
# How long a cluster address may refuse connections before the job gives up (a head that is still starting).
RAY_CONNECT_SECONDS = 30.0


def check_address_form(address: str, key: str) -> None:
    """`auto`, `local` or `host:port` (IPv6 hosts in brackets), the forms `ray.init` takes without a scheme.

    Raises:
        RayStartError: any other text, naming `key` and the forms that work.
    """
    host, sep, port = address.rpartition(":")
    if address in ("auto", "local") or (sep and host.strip() == host and host and port.isdigit()):
        return
    bare = address.strip()
    example = f"{bare}:6379" if bare and ":" not in bare and bare.lower() not in ("auto", "local") else "HEAD:6379"
    raise RayStartError(
        f"{key} is {address!r}, which is not a Ray cluster address: give the head's GCS address as host:port "
        f"(e.g. {example} on a node of the cluster), 'auto' (lower case: the cluster Ray finds on this machine), "
        f"or unset {key} to start Ray in this process"
    )


def check_reachable(address: str, key: str, seconds: float | None = None) -> None:
    """Fail fast on a Ray address nothing listens at: `ray.init` itself retries such an address without end.

    `address` is `host:port`; "auto"/"local", addresses without a port and URLs (check_ray_address) are left alone.

    Raises:
        RayStartError: no TCP connection to the address within `seconds` (RAY_CONNECT_SECONDS); names `key`.
    """
    if "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    deadline = time.monotonic() + (RAY_CONNECT_SECONDS if seconds is None else seconds)
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise RayStartError(
                    f"cannot reach the Ray cluster at {address} ({key}): {err}. Check the address and that the head "
                    "is running, or unset compute.ray_address and RAY_ADDRESS to start Ray in this process"
                ) from err
            time.sleep(1.0)


def check_ray_address(address: str, key: str) -> None:
    """Refuse the addresses a job cannot run through, which users bring from other Ray tools:

    - the dashboard's http(s):// URL (RAY_ADDRESS=http://head:8265, as for `ray job submit`): `ray.init` raises a
      ValueError for it, which was a traceback;
    - a Ray Client address (ray://head:10001): Ray Data's streaming executor does not run through Ray Client (the
      job failed at its first stage with "'Worker' object has no attribute 'core_worker'", after loading the model).

    - any other `scheme://` address: `ray.init` takes it for a Ray Client protocol named by the scheme (`gcs://h:6379`
      raised "Module: gcs does not exist"), so it is refused as a Ray Client address;
    - anything else but `auto`, `local` and `host:port` (`localhost`, `127.0.0.1`, `AUTO`, ` auto`): `ray.init`
      raised "ValueError: Invalid address format", a traceback.

    Raises:
        RayStartError: names `key`, the address and the ways that work.
    """
    scheme = address.partition("://")[0] if "://" in address else ""
    if not scheme:
        check_address_form(address, key)
        return
    what = (
        "the dashboard's (Jobs API) address, which `rayembed submit` and `ray job submit` take"
        if scheme in ("http", "https")
        else "a Ray Client address, and Ray Data does not run through Ray Client"
    )
    head = address.split("://", 1)[1].rsplit(":", 1)[0] or "HEAD"
    raise RayStartError(
        f"{key} is {address}, {what}. Submit the job to the cluster instead (rayembed submit CONFIG --address "
        f"http://{head}:8265), or run it on a node of the cluster with the head's GCS address ({head}:6379), or "
        f"unset {key} to start Ray in this process"
    )


# Ray's raylet must register within a fixed 30 s (ray/_private/node.py raylet_start_wait_time_s), which a machine
# loaded by other work can miss
RAY_START_TIMEOUT = "timed out during startup"


def start_failure(err: BaseException, address: str | None, key: str) -> str:
    """One message for a `ray.init` that raised something other than an OSError: what failed, Ray's own first line,
    and what to do. `address`: the cluster connected to (named with `key`); None for Ray started in this process.

    The advice follows Ray's words: its start-up time limit (a loaded machine), a port in use or one Ray cannot
    parse (Ray's text names a port, or a RAY_*_PORT variable set here is no whole number: named), else the RAY_*
    variables set in this process (by name: a value may be a secret) and Ray's log folder.
    """
    text = " ".join(str(err).split()) or type(err).__name__
    first = text if len(text) <= 300 else text[:300] + "..."
    what = (
        f"cannot connect to the Ray cluster at {address} ({key})"
        if address is not None
        else "cannot start Ray in this process"
    )
    variables = sorted(v for v in os.environ if v.startswith("RAY_") and "TOKEN" not in v)
    # a RAY_*_PORT setting that is no whole number: Ray's error is then int()'s, which does not say "port"
    not_port_numbers = [v for v in variables if v.upper().endswith("_PORT") and not os.environ[v].strip().isdigit()]
    if RAY_START_TIMEOUT in text:
        todo = (
            "Ray gives its node a fixed 30 s to start, which a loaded machine (CPU, disk, memory) can miss: run the "
            "job again when the load is lower, or start Ray once (`ray start --head`) and run jobs on it with "
            "RAY_ADDRESS=auto"
        )
    elif "Address already in use" in text or re.search(r"\bports?\b", text, re.IGNORECASE) or not_port_numbers:
        todo = (
            "A port Ray was told to use is taken or is no port number: unset or change the port settings "
            "(RAY_GCS_SERVER_PORT and the like, or stop the other Ray on this machine: `ray stop`)"
        )
        if not_port_numbers:
            todo += f"; not a port number: {', '.join(not_port_numbers)}"
    else:
        todo = "Check the Ray settings of this process and Ray's logs"
    if variables:
        todo += f"; RAY_* variables set here: {', '.join(variables)}"
    if address is None:
        logs = os.path.join(os.environ.get("RAY_TMPDIR") or "/tmp", "ray", "session_latest", "logs")
        todo += f". Ray's own logs: {logs}; or give a running cluster with compute.ray_address or RAY_ADDRESS"
    return f"{what}: {type(err).__name__}: {first}. {todo}"


def init_ray(compute: ComputeConfig, paths: BaseModel | None = None) -> None:
    """Connect to `compute.ray_address`, else RAY_ADDRESS (set by `ray job submit`), else start Ray in-process.

    `paths`: the job's config, whose local input and output locations every other node of a multi-node cluster
    must see as this driver does (pipeline.node_paths; checked once per location and process).

    Raises:
        RayStartError: an in-process start failed on the file system (Ray's OSError, named in the message),
            the address is the dashboard's URL or a Ray Client one (check_ray_address), nothing answers at the cluster address
            (check_reachable), or Ray cannot connect to it (its
            ConnectionError: no cluster found for `auto`, a head that went away, a refused token), or any other
            failure of `ray.init` (start_failure: its 30 s start limit on a loaded machine, a port in use or
            unparsable, a RAY_* setting it cannot use).
        NodePathError: a local location of `paths` is missing on another node, or is a folder of that node's own.
    """
    if not ray.is_initialized():
        in_process = compute.ray_address is None and not os.environ.get("RAY_ADDRESS")
        options = {"include_dashboard": compute.dashboard} if in_process else {}
        key = "compute.ray_address" if compute.ray_address else "RAY_ADDRESS"
        address = compute.ray_address or os.environ.get("RAY_ADDRESS", "")
        if not in_process:
            check_ray_address(address, key)
            check_reachable(address, key)
        try:
            ray.init(address=compute.ray_address, log_to_driver=True, **options)
        except SystemExit as err:
            # Ray's own SIGTERM handler, in place while ray.init runs, exits with the signal's number: stop as for
            # a SIGTERM at any other moment (pipeline.process_exit.interrupt_on_sigterm), not with exit status 15
            if err.code == signal.SIGTERM:
                raise Terminated("SIGTERM while Ray was starting") from None
            raise
        except OSError as err:  # ConnectionError included
            if not in_process:
                raise RayStartError(
                    f"cannot connect to the Ray cluster at {address} ({key}): {type(err).__name__}: {err}. "
                    + AUTO_HINT * (address == "auto")
                    + "Check that the head is running and that this process has its authentication token "
                    "(RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN), or unset compute.ray_address and RAY_ADDRESS to start "
                    "Ray in this process"
                ) from err
            # Ray >= 2.60 with token authentication (its default) saves a new token to ~/.ray/auth_token here
            raise RayStartError(
                f"cannot start Ray in this process: {type(err).__name__}: {err}. Ray writes a new authentication "
                "token to ~/.ray/auth_token when none is given and its session files under RAY_TMPDIR (default "
                "/tmp/ray): make them writable, give a token with RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN), or set "
                "RAY_AUTH_MODE=disabled for a run on this machine alone"
            ) from err
        except Exception as err:  # ray.init's own failures, turned into one error saying what to do
            # Ray raises bare Exception (its raylet's fixed 30 s start limit), RuntimeError (its GCS did not start:
            # a port taken) and ValueError (a RAY_* setting it cannot use) from its start-up: no bug of ours
            ray.shutdown()  # the processes a failed start left behind
            raise RayStartError(start_failure(err, address if not in_process else None, key)) from err

        # A request no node meets: refused when no node can be added (pipeline.stages.cluster_refusal); the
        # driver's node counted without what a Jobs API job's driver holds (--entrypoint-num-gpus, ...)
        held = None if in_process else driver_reservation()

        def alive_nodes() -> list[dict[str, float]]:
            nodes = [(n.get("NodeID", ""), n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
            return without_reservation(nodes, held)

        if in_process:
            reason = unschedulable(compute, alive_nodes())
        else:
            reason, note = cluster_refusal_after_waiting(compute, alive_nodes)
            if note:
                log.warning(note)
        if reason and held is not None:
            reason += (
                f". The nodes are counted without what this job's driver holds on its node ({held.words()}), which "
                "its submission reserved (--entrypoint-num-cpus/-num-gpus/-memory/-resources of ray job submit or "
                "rayembed submit, a RayJob's entrypointNum*): the driver needs none of it (its actors do the work), "
                "so submit without them"
            )
        if reason:
            raise UnschedulableError(reason)
    absorb_actor_argument_warning()  # Ray's harmless E ... core_worker.cc line about actor arguments (ray_quiet)
    interrupt_on_sigterm()  # ray.init replaced it with a handler that aborts the process (pipeline.process_exit)
    configure_retries(ray.data.DataContext.get_current(), compute)
    if paths is not None:
        check_nodes_see_paths(paths)


def init_ray_while(compute: ComputeConfig, work: Callable[[], T], paths: BaseModel | None = None) -> T:
    """`init_ray` in this (main) thread while `work` runs in another; returns `work`'s result or raises its error.

    For the driver's model resolution (tokenizer and config loads, the weights' content hash: seconds each), which
    would otherwise wait for Ray's start-up or make it wait. Ray starts even when `work` then fails; the cheap
    checks that name a wrong model or input (check_model, the listing) run before this.

    The thread is a daemon: Ctrl-C (or Ray failing to start) ends the job at once instead of waiting for the hash
    of a large model directory to finish.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except Exception as err:  # noqa: BLE001 -- handed to the main thread, which raises it
            outcome["error"] = err

    thread = threading.Thread(target=run, name="driver-work", daemon=True)
    thread.start()
    init_ray(compute, paths)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def embed_stages(
    ds: ray.data.Dataset,
    cfg: EmbedConfig,
    prompt: str,
    precision: OutputPrecision | None = None,
    settings: ModelSettings | None = None,
    input_bytes: int | None = None,
) -> ray.data.Dataset:
    """Tokenize (CPU actors) and embed (GPU/CPU actors) the rows of `ds` (pipeline.columns internal columns).

    Shared by run_embed and the incremental re-embed job, which read and write differently around it.
    `precision`: stored dimensions/precision (job_precision); default output.dtype and output.dimensions, which
    for int8/uint8 fails in the actors for want of calibration ranges. `settings`: the driver's resolution of the
    model, whose tokenizer snapshot (or tokenizer) and padding the actors then take instead of loading the tokenizer;
    None: each loads its own.
    `input_bytes`: of the input files `ds` reads; given, its blocks are cut so that every embedding actor gets rows
    (pipeline.spreading); None: blocks as `ds` has them.
    """
    tokenizer, snapshot, padding = (
        (settings.shipped_tokenizer, settings.snapshot, settings.padding) if settings else (None, None, None)
    )
    # the workers load the model the run's fingerprint names: a hub commit pinned, a local directory's files checked
    model, files = held_to(cfg.model, settings.identity if settings else None)
    cfg = cfg.model_copy(update={"model": model})
    skip = pooling_skip(cfg.model, prompt, settings.tokenizer if settings else None)
    actors, rows_per_block = model_pool(cfg)[1], cfg.batching.rows_per_block
    small = is_small(input_bytes, actors)
    if small:  # read and tokenized beside the pool's start, then shared out (pipeline.spreading)
        tokenized = tokenize_stage(cfg, prompt, TokenizeActor, tokenizer, snapshot).apply(ds)
        ds = SharedCorpus(tokenized, actors).shares()
    else:
        ds = cut_blocks(ds, actors, rows_per_block) if input_bytes is not None else ds
        ds = tokenize_stage(cfg, prompt, TokenizeActor, tokenizer, snapshot).apply(ds)
    stage = embed_stage(
        cfg, EmbedActor, precision, padding=padding, pool_skip=skip, whole_blocks=small, model_files=files
    )
    return stage.apply(ds)


def read_dataset(
    cfg: EmbedConfig, spec: ReadSpec, units: list[Unit], duplicates: Location | None = None
) -> ray.data.Dataset:
    """One read task per unit (read_units), rows in pipeline.columns' internal columns plus the unit's key; each
    file's last row flagged for the driver's file count (pipeline.progress)."""
    ds = ray.data.from_items(unit_items(units), override_num_blocks=max(len(units), 1))
    return io_stage(read_units, cfg.compute, {"spec": spec, "duplicates": duplicates}, batch_size=1).apply(ds)


def job_precision(
    cfg: EmbedConfig,
    spec: ReadSpec,
    units: list[Unit],
    prompt: str,
    out: Location,
    precision: OutputPrecision,
    settings: ModelSettings | None = None,
) -> OutputPrecision:
    """Stored dimensions and precision, from `precision` (output.dtype and output.dimensions as
    calibration.output_precision checked them before Ray started). int8/uint8 need one set of per-dimension ranges
    for the whole dataset, so the first output.calibration_rows rows that are not rejects are embedded once before
    the run (pipeline.calibration).

    The first attempt records the result in `_run/precision.json`; a resumed attempt calibrates again on the same
    rows and refuses to go on if the ranges came out different (its vectors would not match the committed ones).
    """
    if precision.needs_calibration:
        good = io_stage(good_rows, cfg.compute, {}).apply(read_dataset(cfg, spec, units))  # rejects take no place
        unquantized = precision.unquantized()
        rows, vectors = sample_vectors(
            good.limit,
            lambda sample: embed_stages(sample, cfg, prompt, unquantized, settings),
            cfg.output.calibration_rows,
        )
        precision = calibrated_on(precision, rows, vectors)
    recorded_at = out.join(commit.RUN_DIR, "precision.json")
    recorded = get_json(recorded_at)
    if recorded is None:
        put_json(precision.metadata(), recorded_at)
    elif recorded != precision.metadata():
        raise commit.OutputExistsError(
            f"output {out.uri}: the calibration of this attempt differs from the one the committed units used "
            f"({recorded_at.uri}); set output.overwrite=true to start over"
        )
    return precision


def decide_kept_types(cfg: EmbedConfig, spec: ReadSpec, units: list[Unit]) -> ReadSpec:
    """`spec` with the job-wide type of each kept column (pipeline.kept_columns), from one Ray task per unit's files
    (pipeline.units.file_groups: a pack of small files is one task, not one per file).

    Parquet files cost a footer read; JSONL files one pass over their kept values. Fails before any model work when
    two files' types cannot be reconciled.
    """
    if not spec.keep_columns:
        return spec
    groups = file_groups(units)
    task = io_task(observed_kept_types_of, cfg.compute)
    observed = [obs for group in ray.get([task.remote(spec, rels) for rels in groups]) for obs in group]
    files = [rel for rels in groups for rel in rels]
    types = decide(list(spec.keep_columns), [(rel, fmt, obs) for rel, (fmt, obs) in zip(files, observed)])
    log.info("kept column types: %s", {c: "JSON text" if t.json_text else str(t.type) for c, t in types.items()})
    return dataclasses.replace(spec, kept_types=types)


def build_dataset(
    cfg: EmbedConfig,
    spec: ReadSpec,
    units: list[Unit],
    prompt: str,
    out: Location,
    duplicates: Location | None = None,
    precision: OutputPrecision | None = None,
    model_metadata: dict[str, str] | None = None,
    settings: ModelSettings | None = None,
    input_bytes: int | None = None,
) -> ray.data.Dataset:
    """read (tasks) -> tokenize -> embed -> write (tasks); yields the write stats (pipeline.writing.STATS_SCHEMA).

    `input_bytes`: of the files `units` read (None: unknown), for embed_stages.
    """
    ds = read_dataset(cfg, spec, units, duplicates)
    ds = embed_stages(ds, cfg, prompt, precision, settings, input_bytes)
    metadata = file_metadata(cfg, prompt, model_metadata, precision)
    # a node with a folder of its own at a local output's path (one that joined after init_ray's check) fails its
    # writes instead of keeping its part files (pipeline.shared_output)
    writes = {"out": out, "cfg": cfg, "metadata": metadata, "lease": run_lease(out)}
    return io_stage(write_block, cfg.compute, writes).apply(ds)


def file_metadata(
    cfg: EmbedConfig, prompt: str, model_metadata: dict[str, str] | None, precision: OutputPrecision | None
) -> dict[str, str]:
    """The `rayembed.*` entries of every output file (without the prefix, pipeline.writing.output_table adds it)."""
    metadata = {**embedding_metadata(cfg, prompt), **model_dim_entry(cfg), **(model_metadata or {})}
    return metadata | (precision.metadata() if precision is not None else {})


def write_if_empty(
    cfg: EmbedConfig, spec: ReadSpec, summary: dict, out: Location, metadata: dict[str, str], precision: OutputPrecision
) -> None:
    """A run that stored no row (empty files only, every row rejected) still leaves one Parquet file with the
    output's schema (pipeline.writing.EMPTY_FILE), counted in `output_files`."""
    dim = model_dimension(cfg.model)
    if summary["output_rows"] or dim is None:
        return
    kept = {c: t.type for c, t in spec.kept_types.items()}
    write_empty_output(out, cfg, kept, precision.arrow_type(dim), metadata)
    summary["output_files"] = 1


def summarize(attempt: dict[str, float], reused: dict[str, int], wall: float) -> dict[str, Any]:
    """The run's summary: row counts over the whole dataset (this attempt plus units committed before), token
    counts and speeds of this attempt only."""
    total = {name: attempt[name] + reused[name] for name in COUNTS}
    tokens, computed = attempt["tokens"], attempt["computed_tokens"]
    embed_seconds = attempt["embed_seconds"]
    embedded = total["rows_embedded"]
    return {
        "rows_in": total["rows"],
        "rows_read": attempt["rows"],
        "rows_embedded": attempt["rows_embedded"],
        "rows_reused": reused["rows_embedded"],
        "rows_rejected": total["rows_rejected"],
        "rows_truncated": total["rows_truncated"],
        "rows_chunked": total["rows_chunked"],
        # chunk rows of the rows that were split (0 in truncate mode): output_rows minus the rows kept whole
        "chunks_produced": total["output_rows"] - (embedded - total["rows_chunked"]),
        "output_rows": total["output_rows"],
        "output_files": total["output_files"],
        "tokens": tokens,
        "computed_tokens": computed,
        "padding_efficiency": round(tokens / computed, 4) if computed else 1.0,
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(tokens / wall, 1) if wall else 0.0,
        "embed_seconds": round(embed_seconds, 3),
        "embed_tokens_per_second": round(tokens / embed_seconds, 1) if embed_seconds else 0.0,
        "chunks_rejected": total["chunks_rejected"],
        "nonfinite_recomputed": total["nonfinite_recomputed"],
        "nonfinite_rejected": total["nonfinite_rejected"],
        "files_rejected": total["files_rejected"],
    }


def actor_summary(actor_vectors: dict[str, int]) -> dict[str, Any]:
    """`embed_actors`: how many embedding actors embedded rows in this attempt; `vectors_per_actor`: how many each,
    most first (a pool with idle actors shows fewer actors than compute.num_actors, or a lopsided list)."""
    return {"embed_actors": len(actor_vectors), "vectors_per_actor": sorted(actor_vectors.values(), reverse=True)}


def start_up_summary(progress: UnitProgress, started_at: float) -> dict[str, Any]:
    """Seconds after the job's start (`started_at`, time.time()) at which, in this attempt, each embedding actor that
    embedded rows began to start (`embed_actors_started_s`, earliest first: before its model's load) and the last
    row was tokenized (`tokenized_s`; None when no row was). Wall clocks of the nodes that ran them."""
    starts = sorted(round(t - started_at, 3) for t in progress.actor_started.values())
    last = progress.tokenized_at
    return {"embed_actors_started_s": starts, "tokenized_s": None if last is None else round(last - started_at, 3)}


def job_prompt(cfg: EmbedConfig) -> str:
    """The prompt every text gets, resolved once on the driver so that a bad prompt name fails before Ray starts."""
    try:
        return model_prompt(cfg.model, cfg.input.kind)[0]
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


def check_duplicates(cfg: EmbedConfig, spec: ReadSpec, units: list[Unit], files: list[str], out: Location):
    """The committed result of the duplicate-id pre-pass (run now unless an earlier attempt committed it), or None
    when ids are not checked: derived ids (file#row) are unique by construction; 'unchecked' trusts the user's."""
    if spec.id_column is None or cfg.input.duplicate_ids == "unchecked":
        return None
    duplicates = out.join(commit.RUN_DIR, "duplicates")
    if not commit.is_committed(duplicates):
        find_duplicate_ids(units, files, spec, cfg.input.duplicate_ids, duplicates, cfg.compute)
    return duplicates


def plans_packed_units(recorded: dict[str, Any] | None) -> bool:
    """Whether this run packs small files into units (pipeline.units): yes, unless `recorded` (the run that
    `output.uri` holds, `_run/fingerprint.json`; None for none or with output.overwrite) was started by an older
    rayembed with one unit per file, whose fingerprint has no `input.unit_packing`. That run then resumes (or,
    finished, is reused by a mining or clustering run) under its own plan, instead of being refused for a field that
    no configuration key sets."""
    return recorded is None or "input.unit_packing" in recorded.get("fingerprint", {})


def plans_line_ranges(recorded: dict[str, Any] | None) -> bool:
    """Whether this run splits big JSONL and text files into byte ranges (pipeline.line_ranges): yes, unless
    `recorded` (as plans_packed_units) was started by an older rayembed that kept each such file one unit, whose
    fingerprint has no `input.line_ranges`; that run resumes under its own plan."""
    return recorded is None or "input.line_ranges" in recorded.get("fingerprint", {})


LINE_ROWS = f"{commit.RUN_DIR}/line_rows.json"


def count_ranges(cfg: EmbedConfig, root: Location, out: Location, resumed: bool):
    """The embed job's RangeCounter (pipeline.units): rows of each byte range of the split JSONL and text files,
    one Ray task per range, recorded in `_run/line_rows.json` before any unit is committed. A resumed run takes the
    recorded counts instead of counting again, so its ranges start at the rows its committed units were read with."""

    def count(spans: list[tuple[str, str, int, int]]) -> list[int]:
        recorded = get_json(out.join(LINE_ROWS)) if resumed else None
        known = {(rel, start, end): rows for rel, start, end, rows in (recorded or {}).get("ranges", [])}
        todo = [s for s in spans if (s[0], s[2], s[3]) not in known]
        if todo:
            task = io_task(count_span_rows, cfg.compute)
            rows = ray.get([task.remote(root, rel, fmt, start, end) for rel, fmt, start, end in todo])
            known.update({(rel, start, end): n for (rel, _, start, end), n in zip(todo, rows)})
            ranges = [[rel, start, end, known[rel, start, end]] for rel, _, start, end in spans]
            put_json({"ranges": ranges}, out.join(LINE_ROWS))
            log.info("counted the rows of %d byte ranges of %d files", len(todo), len({s[0] for s in todo}))
        return [known[rel, start, end] for rel, _, start, end in spans]

    return count


@commit.holds_output("embed")
def run_embed(
    cfg: EmbedConfig, reuse_finished: bool = False, naming: commit.Naming = commit.TOP_LEVEL
) -> dict[str, Any]:
    """Embed the configured corpus, or resume an unfinished run of the same configuration in `output.uri`.

    Args:
        reuse_finished: a finished run of the same configuration in `output.uri` is returned as it is (its summary,
            with `"reused_finished_run": true`) instead of refused; the mining and clustering jobs' embed step, so
            that their resumed runs do not embed again.
        naming: the configuration keys its refusals name: those of the job that runs it as a nested step.

    Returns the summary that is also written to `<output>/_summary.json`, just before the `_SUCCESS` marker.

    Raises:
        OutputExistsError: the output holds a finished run (unless `reuse_finished` and of the same configuration),
            another configuration's run (the message names each differing field) or foreign files, and
            output.overwrite is false.
    """
    start, started_at = time.perf_counter(), time.time()
    root, listed = list_inputs(cfg.input.uri, cfg.storage)
    files = [f.path for f in listed]
    # each file's format (input.format, else its extension): an unknown extension fails here, before Ray starts
    formats = set(listing_formats(cfg.input.format, files).values())
    out = resolve(cfg.output.uri, cfg.storage)
    cfg, pooling = with_model_defaults(cfg)  # fails fast on an unreachable/misspelled model; resolves pooling auto
    prompt = job_prompt(cfg)
    check_model(cfg.model)
    precision = output_precision(cfg)  # output.dimensions within the model's: refused before Ray starts
    # a finished run or foreign files are refused now, not after Ray's start-up and the model's resolution
    finished = reuse_finished and not cfg.output.overwrite and commit.is_committed(out)
    if finished:
        recorded = get_json(out.join(commit.FINGERPRINT))
    else:
        recorded = commit.check_available(out, cfg.output.overwrite, resumable=True, naming=naming)
    settings, identity = init_ray_while(cfg.compute, lambda: resolve_remembered(cfg.model), cfg)
    settings = dataclasses.replace(settings, identity=identity)  # the workers are held to it (embed_stages)
    model, model_metadata = settings.model, settings.metadata
    cfg = cfg.model_copy(update={"model": model})
    metadata = file_metadata(cfg, prompt, model_metadata, None)  # precision's entries join once it is calibrated
    packed, split_lines = plans_packed_units(recorded), plans_line_ranges(recorded)
    fingerprint = embed_fingerprint(cfg, metadata, listed, identity, packed, split_lines)
    # a file touched since the run began (token moved, size not) is hashed and compared with its recorded content
    # a file no committed unit read (gone before its read, then put back: pipeline.units.unless_gone) is cleared too
    same = same_content({"input.listing": root}, out, units_of="input.listing")
    if finished:
        return {**commit.reuse_finished(out, "embed", fingerprint, naming, same), "reused_finished_run": True}
    resumed = commit.begin(out, "embed", cfg.output.overwrite, fingerprint, naming, same)
    # what a resume after a `touch` compares, and the check of a file touched while this run reads it: hashed while
    # we embed
    with ContentRecorder(out, {"input.listing": (root, listed)}) as recorder:
        spec = read_spec(cfg, root)
        count = count_ranges(cfg, root, out, resumed)
        units = plan_units(root, listed, cfg.input.format, cfg.input.unit_bytes, packed, split_lines, count)
        done = commit.committed_units(out) if resumed else {}
        if resumed:
            dropped = drop_uncommitted(out, set(done))
            log.info("resuming: %d of %d units committed; %d partial files dropped", len(done), len(units), dropped)
        todo = [u for u in units if u.key not in done]
        quiet_ray_data_progress()  # ours has a total (pipeline.progress)
        spec = decide_kept_types(cfg, spec, units)
        duplicates = check_duplicates(cfg, spec, units, files, out)
        log.info("embedding %d of %d units from %s into %s", len(todo), len(units), cfg.input.uri, cfg.output.uri)
        precision = job_precision(cfg, spec, units, prompt, out, precision, settings)
        progress = UnitProgress(todo)
        by_path = {f.path: f for f in listed}
        changed: dict[str, str] = {}
        same_bytes: dict[str, str] = {}  # files touched during the run whose content was found the listed one

        def mark(unit: Unit, counts: dict) -> None:
            # a unit whose file changed since the listing is not committed as the listed file: the run stops below
            # (a file whose token alone moved is hashed and compared with its content as listed)
            sha_of = functools.partial(recorder.sha_of, "input.listing")
            read = {p: progress.read.pop(p) for p in unit.paths if p in progress.read}
            ranges = unit.lines is not None  # a byte range of a split file (pipeline.line_ranges)
            if moved := changed_inputs(root, by_path, unit.paths, sha_of, same_bytes, read, ranges):
                log.warning("input changed while this run read it, unit not committed: %s", moved)
                changed.update(moved)
                return
            commit.mark_unit(out, unit.key, {**unit.record(), **counts})
            marked.append(unit)

        marked: list[Unit] = []
        if todo:
            todo_files = sorted({p for u in todo for p in u.paths})
            size = {f.path: f.size for f in listed}
            todo_bytes = sum(size.get(p, 0) for p in todo_files)
            ds = build_dataset(
                cfg, spec, todo, prompt, out, duplicates, precision, model_metadata, settings, todo_bytes
            )
            parts = sum(len(u.parts()) for u in todo)  # each flags its last row: files, and a split file's ranges
            shown = RowProgress(expected_rows(formats.pop() if len(formats) == 1 else "mixed", root, todo_files), parts)
            try:
                for stats in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    shown.update(sum(stats.column("rows").to_pylist()), sum(stats.column("files_done").to_pylist()))
                    for unit, counts in progress.add(stats):
                        mark(unit, counts)
                shown.all_files_done()  # files without a row (empty ones) flag no last row
            finally:
                shown.close()
        for unit, counts in progress.finish():
            mark(unit, counts)
        if marked and not is_local(root):
            # S3: one new listing for the objects this run committed; the units of a changed one are uncommitted
            moved = changed_objects(
                list_inputs(cfg.input.uri, cfg.storage)[1],
                by_path,
                {p for u in marked for p in u.paths},
                functools.partial(same_object, root),  # uploaded again with other part sizes: its bytes, read once
            )
            for unit in (u for u in marked if moved.keys() & set(u.paths)):
                commit.unmark_unit(out, unit.key)
            changed.update(moved)
        if changed:
            raise InputChangedError(changed_inputs_message(root, changed))
        reused = {name: sum(r.get(name, 0) for r in done.values()) for name in COUNTS}
        skipped_files = {p for r in done.values() for p in record_files(r)} - {p for u in todo for p in u.paths}
        summary = {
            "input_files": len(listed),
            "units": len(units),
            "units_skipped": len(done),
            "files_skipped": len(skipped_files),
            **summarize(progress.totals, reused, time.perf_counter() - start),
            **actor_summary(progress.actor_vectors),
            **start_up_summary(progress, started_at),
            "model": cfg.model.name_or_path,
            "prompt": prompt,
            "output": cfg.output.uri,
            "max_tokens": model.max_tokens,
            "pooling": pooling.pooling,
            "pooling_source": pooling.source,
            "model_resolution_cached": settings.tokenizer is None,  # pipeline.resolution_cache
            **precision_summary(precision),
        }
        if summary["rows_rejected"]:
            summary["rejects"] = out.join(REJECTS_DIR).uri
        apply_guard(summary, cfg.input.max_reject_fraction)
        if summary["status"] == "failed":
            # The summary says why, but no _SUCCESS: a failed run is not a finished dataset for its readers, and the
            # same command resumes it (every unit is committed, so nothing is embedded again): with a raised
            # input.max_reject_fraction it then finishes, where _SUCCESS made it refuse without output.overwrite.
            put_json(summary, out.join(SUMMARY_FILE))
            raise TooManyRejectsError(summary["failure"])
        write_if_empty(cfg, spec, summary, out, file_metadata(cfg, prompt, model_metadata, precision), precision)
        # Written last: the summary, then _SUCCESS (pipeline.commit).
        commit.commit(out, "embed", summary, SUMMARY_FILE)
        return summary
