"""The embed job: list files -> read (tasks) -> tokenize (CPU actors) -> embed (GPU/CPU actors) -> write (tasks).

One streaming Ray Data pipeline: blocks flow through all stages with backpressure, so memory is bounded by the
blocks in flight, not by the corpus size.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import ray

from pipeline.actors import EmbedActor, TokenizeActor
from pipeline.calibration import calibrate, output_precision, precision_summary
from pipeline.columns import REJECTS_DIR, SUMMARY_FILE
from pipeline.config import ComputeConfig, EmbedConfig
from pipeline.duplicate_ids import find_duplicates, id_digests, read_files
from pipeline.file_formats import file_format
from pipeline.kept_columns import decide
from pipeline.model_defaults import model_prompt, with_model_defaults
from pipeline.model_loading import ModelLoadError, check_model, resolve_model_settings
from pipeline.progress import collect_stats, expected_rows, mark_file_end, quiet_ray_data_progress
from pipeline.quantization import OutputPrecision
from pipeline.ray_quiet import absorb_actor_argument_warning
from pipeline.reading import ReadSpec, observed_kept_types
from pipeline.reject_guard import TooManyRejectsError, apply_guard
from pipeline.stages import configure_retries, embed_stage, io_stage, io_task_args, resolve_gpus, tokenize_stage
from pipeline.storage import Location, list_files, resolve, write_bytes
from pipeline.writing import embedding_metadata, write_block

# Kept importable from here for the jobs built on this one (reembed, bitext, clustering).
__all__ = ["embed_stages", "init_ray", "io_task_args", "resolve_gpus", "run_embed"]

log = logging.getLogger(__name__)


def init_ray(compute: ComputeConfig) -> None:
    """Connect to `compute.ray_address`, else RAY_ADDRESS (set by `ray job submit`), else start Ray in-process."""
    if not ray.is_initialized():
        in_process = compute.ray_address is None and not os.environ.get("RAY_ADDRESS")
        options = {"include_dashboard": compute.dashboard} if in_process else {}
        ray.init(address=compute.ray_address, log_to_driver=True, **options)
    absorb_actor_argument_warning()  # Ray's harmless E ... core_worker.cc line about actor arguments (ray_quiet)
    configure_retries(ray.data.DataContext.get_current(), compute)


def scan_duplicates(cfg: EmbedConfig, spec: ReadSpec, files: list[str]) -> dict[str, dict[int, str]]:
    """Pre-pass for input.duplicate_ids (see pipeline.duplicate_ids): one Ray task per file returns id digests."""
    if spec.id_column is None or cfg.input.duplicate_ids == "unchecked":
        return {}  # derived ids (file#row) are unique by construction; 'unchecked' trusts the user's ids
    task = ray.remote(id_digests).options(**io_task_args(cfg.compute))
    digests = ray.get([task.remote(spec, rel) for rel in files])
    return find_duplicates(files, digests, cfg.input.duplicate_ids)


def prepare_output(out: Location, overwrite: bool) -> None:
    """Refuse to mix two datasets in one location unless asked to replace the old one."""
    selector = pafs.FileSelector(out.path, recursive=True, allow_not_found=True)
    existing = [f for f in out.fs.get_file_info(selector) if f.type == pafs.FileType.File]
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(
            f"output {out.uri} already holds {len(existing)} files; set output.overwrite=true to replace them "
            "or choose another output.uri"
        )
    summary = out.join(SUMMARY_FILE).path
    # The summary is the commit marker: it goes first, so a crash mid-delete never leaves a marked, half-old dataset.
    for f in sorted(existing, key=lambda f: f.path != summary):
        out.fs.delete_file(f.path)


def embed_stages(
    ds: ray.data.Dataset, cfg: EmbedConfig, prompt: str, precision: OutputPrecision | None = None
) -> ray.data.Dataset:
    """Tokenize (CPU actors) and embed (GPU/CPU actors) the rows of `ds` (pipeline.columns internal columns).

    Shared by run_embed and the incremental re-embed job, which read and write differently around it.
    `precision`: stored dimensions/precision (job_precision); default output.dtype and output.dimensions, which
    for int8/uint8 fails in the actors for want of calibration ranges.
    """
    ds = tokenize_stage(cfg, prompt, TokenizeActor).apply(ds)
    return embed_stage(cfg, EmbedActor, precision).apply(ds)


def read_dataset(
    cfg: EmbedConfig, spec: ReadSpec, files: list[str], duplicates: dict[str, dict[int, str]] | None = None
) -> ray.data.Dataset:
    """One read task per file (read_files), rows in pipeline.reading's columns."""
    duplicates = duplicates or {}
    items = [{"file": f, "duplicates": json.dumps(duplicates.get(f, {}))} for f in files]
    ds = ray.data.from_items(items, override_num_blocks=len(files))
    return io_stage(read_marked_files, cfg.compute, {"spec": spec}, batch_size=1).apply(ds)


def read_marked_files(batch: pa.Table, spec: ReadSpec):
    """read_files for one file, its last row flagged for the driver's file count (pipeline.progress)."""
    yield from mark_file_end(read_files(batch, spec))


def job_precision(cfg: EmbedConfig, spec: ReadSpec, files: list[str], prompt: str) -> OutputPrecision:
    """Stored dimensions and precision. int8/uint8 need one set of per-dimension ranges for the whole dataset, so
    the first output.calibration_rows rows are embedded once before the run (pipeline.calibration)."""
    precision = output_precision(cfg)
    if precision.needs_calibration:
        sample = read_dataset(cfg, spec, files).limit(cfg.output.calibration_rows)
        precision = calibrate(precision, embed_stages(sample, cfg, prompt, precision.unquantized()))
    return precision


def decide_kept_types(cfg: EmbedConfig, spec: ReadSpec, files: list[str]) -> ReadSpec:
    """`spec` with the job-wide type of each kept column (pipeline.kept_columns), from one Ray task per file.

    Parquet files cost a footer read; JSONL files one pass over their kept values. Fails before any model work when
    two files' types cannot be reconciled.
    """
    if not spec.keep_columns:
        return spec
    task = ray.remote(observed_kept_types).options(**io_task_args(cfg.compute))
    observed = ray.get([task.remote(spec, rel) for rel in files])
    types = decide(list(spec.keep_columns), [(rel, fmt, obs) for rel, (fmt, obs) in zip(files, observed)])
    log.info("kept column types: %s", {c: "JSON text" if t.json_text else str(t.type) for c, t in types.items()})
    return dataclasses.replace(spec, kept_types=types)


def build_dataset(
    cfg: EmbedConfig,
    spec: ReadSpec,
    files: list[str],
    prompt: str,
    out: Location,
    duplicates: dict[str, dict[int, str]] | None = None,
    precision: OutputPrecision | None = None,
    model_metadata: dict[str, str] | None = None,
) -> ray.data.Dataset:
    ds = read_dataset(cfg, spec, files, duplicates)
    ds = embed_stages(ds, cfg, prompt, precision)
    metadata = {**embedding_metadata(cfg, prompt), **(model_metadata or {})}
    if precision is not None:
        metadata.update(precision.metadata())
    return io_stage(write_block, cfg.compute, {"out": out, "cfg": cfg, "metadata": metadata}).apply(ds)


def summarize(stats: list[pa.Table], wall: float, files: int) -> dict[str, Any]:
    totals = pa.concat_tables(stats).to_pydict() if stats else {}
    total = {k: sum(v) for k, v in totals.items()}
    tokens, computed = total.get("tokens", 0), total.get("computed_tokens", 0)
    embedded, rejected = total.get("rows_embedded", 0), total.get("rows_rejected", 0)
    return {
        "input_files": files,
        "rows_in": embedded + rejected,
        "rows_embedded": embedded,
        "rows_rejected": rejected,
        "rows_truncated": total.get("rows_truncated", 0),
        "rows_chunked": total.get("rows_chunked", 0),
        # chunk rows of the rows that were split (0 in truncate mode): output_rows minus the rows kept whole
        "chunks_produced": total.get("output_rows", 0) - (embedded - total.get("rows_chunked", 0)),
        "output_rows": total.get("output_rows", 0),
        "output_files": total.get("files", 0),
        "tokens": tokens,
        "computed_tokens": computed,
        "padding_efficiency": round(tokens / computed, 4) if computed else 1.0,
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(tokens / wall, 1) if wall else 0.0,
        "embed_seconds": round(total.get("embed_seconds", 0.0), 3),
        "embed_tokens_per_second": round(tokens / total["embed_seconds"], 1) if total.get("embed_seconds") else 0.0,
        "chunks_rejected": total.get("chunks_rejected", 0),
        "nonfinite_recomputed": total.get("nonfinite_recomputed", 0),
        "nonfinite_rejected": total.get("nonfinite_rejected", 0),
    }


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


def run_embed(cfg: EmbedConfig) -> dict[str, Any]:
    """Embed the configured corpus; returns the summary that is also written to `<output>/_summary.json`."""
    start = time.perf_counter()
    root, files = list_files(cfg.input.uri, cfg.storage)
    # each file's format (input.format, else its extension): an unknown extension fails here, before Ray starts
    formats = {file_format(cfg.input.format, rel) for rel in files}
    out = resolve(cfg.output.uri, cfg.storage)
    cfg, pooling = with_model_defaults(cfg)  # fails fast on an unreachable/misspelled model; resolves pooling auto
    prompt = job_prompt(cfg)
    check_model(cfg.model)
    model, model_metadata = resolve_model_settings(cfg.model)
    cfg = cfg.model_copy(update={"model": model})
    prepare_output(out, cfg.output.overwrite)
    spec = read_spec(cfg, root)
    init_ray(cfg.compute)
    quiet_ray_data_progress()  # ours has a total (pipeline.progress)
    spec = decide_kept_types(cfg, spec, files)
    duplicates = scan_duplicates(cfg, spec, files)
    log.info("embedding %d files from %s into %s", len(files), cfg.input.uri, cfg.output.uri)
    precision = job_precision(cfg, spec, files, prompt)
    ds = build_dataset(cfg, spec, files, prompt, out, duplicates, precision, model_metadata)
    total = expected_rows(formats.pop() if len(formats) == 1 else "mixed", root, files)
    stats = collect_stats(ds.iter_batches(batch_size=None, batch_format="pyarrow"), total, len(files))
    summary = summarize(stats, time.perf_counter() - start, len(files))
    summary.update(model=cfg.model.name_or_path, prompt=prompt, output=cfg.output.uri, max_tokens=model.max_tokens)
    summary.update(pooling=pooling.pooling, pooling_source=pooling.source, **precision_summary(precision))
    if summary["rows_rejected"]:
        summary["rejects"] = out.join(REJECTS_DIR).uri
    apply_guard(summary, cfg.input.max_reject_fraction)
    # Written last: readers treat a dataset without _summary.json as incomplete (docs/robustness.md); a summary
    # with "status": "failed" is complete but failed the reject-rate guard.
    write_bytes(json.dumps(summary, indent=2).encode(), out.join(SUMMARY_FILE))
    if summary["status"] == "failed":
        raise TooManyRejectsError(summary["failure"])
    return summary
