"""Embedding blocks -> Parquet dataset files plus `_rejects/`, with the embedding recipe in the file metadata."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import __version__
from pipeline.columns import (
    CHUNK_COLUMNS,
    CHUNK_INDEX,
    COMPUTED,
    EMBED_ACTOR,
    EMBED_ACTOR_STARTED,
    EMBED_SECONDS,
    EMBEDDING,
    ID,
    METADATA_PREFIX,
    NUM_TOKENS,
    RECOMPUTED,
    REJECT,
    REJECT_COLUMNS,
    REJECTS_DIR,
    ROW,
    SOURCE,
    SUMMARY_FILE,
    TOKEN_COUNT,
    TOKENIZED_AT,
    TRUNCATED,
    TRUNCATED_OUT,
    UNIT,
    UNIT_ROWS,
    UNREADABLE,
)
from pipeline.config import EmbedConfig
from pipeline.progress import files_done
from pipeline.quantization import BINARY, stored_dim
from pipeline.read_content import read_values
from pipeline.shared_output import RunLease, check_output_is_the_drivers
from pipeline.storage import Location, write_parquet_atomic

__all__ = ["METADATA_PREFIX", "REJECTS_DIR", "SUMMARY_FILE", "embedding_metadata", "output_table", "write_block"]


def embedding_metadata(cfg: EmbedConfig, prompt: str) -> dict[str, str]:
    """What a reader needs to know to compare or reuse these vectors (dim is added per file from the column)."""
    m = cfg.model
    return {
        "model": m.name_or_path,
        "revision": m.revision or "",
        "pooling": m.pooling,
        "prompt": prompt,
        "normalized": json.dumps(m.normalize),
        "max_tokens": str(m.max_tokens),
        "long_inputs": m.long_inputs,
        "dtype": cfg.output.dtype,
        "precision": cfg.output.dtype,
        "dimensions": str(cfg.output.dimensions or ""),
        "input_kind": cfg.input.kind,
        "version": __version__,
    }


def model_dim_entry(cfg: EmbedConfig) -> dict[str, str]:
    """{"dim": the model's dimension} for output_table where the stored width cannot tell it: packed bits
    (binary/ubinary) without output.dimensions of a model whose dimension is not a multiple of 8 (its 100 dimensions
    are 13 bytes, which say 104). {} otherwise, so the metadata (and the resume fingerprint made of it) of every
    other output stays as it was."""
    if cfg.output.dtype not in BINARY or cfg.output.dimensions:
        return {}
    from pipeline.model_defaults import model_dimension  # reads the model's config files: the driver's call only

    dim = model_dimension(cfg.model)
    return {"dim": str(dim)} if dim and dim % 8 else {}


def block_file_name(block: pa.Table) -> str:
    """Deterministic per block content, so a retried task overwrites its own file and two blocks never collide."""
    first_rows = pc.min_max(block.column(ROW))
    key = f"{sorted(set(block.column(SOURCE).to_pylist()))}|{first_rows['min']}|{first_rows['max']}|{block.num_rows}"
    return f"part-{hashlib.sha1(key.encode()).hexdigest()[:20]}"


def unit_file_name(group: pa.Table, unit: str) -> str:
    """`part-<unit key>-<content hash>`: the unit's files can be found (and dropped) by name; the hash of the rows
    the group holds (their files, row numbers and chunk indices) is deterministic, so a retried write task
    overwrites its own files, and unique: two blocks of a pack whose files have the same row counts hold the same
    row numbers, and without the files in the hash the second block's file replaced the first's."""
    digest = hashlib.sha1(unit.encode())
    if SOURCE in group.column_names:
        digest.update("\0".join(group.column(SOURCE).to_pylist()).encode())
    for name in (ROW, CHUNK_INDEX):
        if name in group.column_names:
            digest.update(group.column(name).combine_chunks().to_numpy(zero_copy_only=False).tobytes())
    return f"part-{unit}-{digest.hexdigest()[:12]}"


def unit_of_file(name: str) -> str | None:
    """The unit key in an output file name written by write_block (None for any other name)."""
    parts = name.split("-")
    return parts[1] if len(parts) >= 3 and parts[0] == "part" and len(parts[1]) == 16 else None


def output_table(
    good: pa.Table, keep_columns: list[str], chunked: bool, metadata: dict[str, str], token_columns: bool = False
) -> pa.Table:
    """The output rows: id, chunk columns (chunk mode), embedding, [num_tokens, truncated], keep_columns."""
    columns = [ID, *(CHUNK_COLUMNS if chunked else ()), EMBEDDING, *keep_columns]
    table = good.select(columns)
    if token_columns:
        at = columns.index(EMBEDDING) + 1
        table = table.add_column(at, NUM_TOKENS, good.column(TOKEN_COUNT).cast(pa.int32()))
        table = table.add_column(at + 1, TRUNCATED_OUT, good.column(TRUNCATED))
    width = table.schema.field(EMBEDDING).type.list_size
    known = int(metadata.get("dimensions") or metadata.get("dim") or 0) or None  # model_dim_entry's for packed bits
    dim = stored_dim(width, metadata.get("precision", "float32"), known)
    meta = {f"{METADATA_PREFIX}{k}": v for k, v in {**metadata, "dim": str(dim)}.items()}
    return table.replace_schema_metadata(meta)


# A run with no row to store writes this one file: the output's columns, types and metadata and no row, so readers
# (DuckDB's read_parquet, Polars, Spark) get an empty table rather than "no files found". Its name has no unit key, so
# a resumed attempt drops it with the other partial files and writes it again at the end.
EMPTY_FILE = "part-empty.parquet"


def write_empty_output(
    out: Location, cfg: EmbedConfig, kept_types: dict[str, pa.DataType], embedding_type: pa.DataType, metadata: dict
) -> None:
    """Write EMPTY_FILE: zero rows with the columns and metadata the run's files would have had.

    Args:
        kept_types: the job-wide type of each kept column (string where none was decided).
        embedding_type: the stored embedding column's type (OutputPrecision.arrow_type).
    """
    chunked = cfg.model.long_inputs == "chunk"
    fields = [(ID, pa.string())]
    if chunked:
        fields += list(zip(CHUNK_COLUMNS, (pa.int32(), pa.int64(), pa.int64())))  # as the tokenizer stage adds them
    fields += [(EMBEDDING, embedding_type), (TOKEN_COUNT, pa.int64()), (TRUNCATED, pa.bool_())]
    fields += [(c, kept_types.get(c, pa.string())) for c in cfg.output.keep_columns]
    good = pa.schema(fields).empty_table()
    table = output_table(good, cfg.output.keep_columns, chunked, metadata, cfg.output.token_columns)
    write_parquet_atomic(table, out.join(EMPTY_FILE))


def write_block(
    block: pa.Table, out: Location, cfg: EmbedConfig, metadata: dict[str, str], lease: RunLease | None = None
) -> pa.Table:
    """Write one block's good rows and rejects, one set of files per unit; return one stats row per unit.

    `lease`: the run's lease in a local output (pipeline.shared_output.run_lease), checked on this node first.

    Raises:
        OutputNotSharedError: this node has a folder of its own at the local output's path.
    """
    check_output_is_the_drivers(lease)
    stats = []
    for unit in pc.unique(block.column(UNIT)).to_pylist():
        group = block.filter(pc.equal(block.column(UNIT), unit))
        stats.append(write_unit_group(group, unit, out, cfg, metadata))
    return pa.Table.from_pylist(stats, schema=STATS_SCHEMA)


STATS_SCHEMA = pa.schema(
    [
        (UNIT, pa.string()),
        (UNIT_ROWS, pa.int64()),
        ("rows", pa.int64()),
        ("rows_embedded", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("chunks_rejected", pa.int64()),
        ("nonfinite_recomputed", pa.int64()),
        ("nonfinite_rejected", pa.int64()),
        ("files_rejected", pa.int64()),  # corrupt files, a reject row each (pipeline.units.corrupt_as_reject)
        ("rows_truncated", pa.int64()),
        ("rows_chunked", pa.int64()),
        ("output_rows", pa.int64()),
        ("output_files", pa.int64()),
        ("tokens", pa.int64()),
        ("computed_tokens", pa.int64()),
        ("embed_seconds", pa.float64()),
        ("files_done", pa.int64()),
        # vectors written per embedding actor (pipeline.columns.EMBED_ACTOR): the summary's embed_actors
        ("actor_vectors", pa.map_(pa.string(), pa.int64())),
        # when each of those actors began to start, and the latest time a row was tokenized (time.time(), seconds;
        # pipeline.columns.EMBED_ACTOR_STARTED and TOKENIZED_AT; null or empty where the block has no such column)
        ("actor_started", pa.map_(pa.string(), pa.float64())),
        ("tokenized_at", pa.float64()),
        # what the read tasks read of whole local files (pipeline.read_content)
        ("read_as", pa.list_(pa.string())),
    ]
)


def write_unit_group(group: pa.Table, unit: str, out: Location, cfg: EmbedConfig, metadata: dict[str, str]) -> dict:
    is_reject = pc.invert(pc.is_null(group.column(REJECT)))
    good, rejects = group.filter(pc.invert(is_reject)), group.filter(is_reject)
    name = unit_file_name(group, unit)
    chunked = cfg.model.long_inputs == "chunk"
    table = output_table(good, cfg.output.keep_columns, chunked, metadata, cfg.output.token_columns)
    step = cfg.output.rows_per_file
    for part, start in enumerate(range(0, good.num_rows, step)):
        write_parquet_atomic(table.slice(start, step), out.join(f"{name}-{part:04d}.parquet"))
    if rejects.num_rows:
        reasons = rejects.select([ID, SOURCE, ROW, REJECT]).rename_columns(list(REJECT_COLUMNS))
        write_parquet_atomic(reasons, out.join(REJECTS_DIR, f"{name}.parquet"))
    first_chunks = pc.sum(pc.equal(good.column(CHUNK_INDEX), 0)).as_py() or 0
    later_chunks_rejected = pc.sum(pc.greater(rejects.column(CHUNK_INDEX), 0)).as_py() or 0
    rows_rejected = rejects.num_rows - later_chunks_rejected
    return {
        UNIT: unit,
        UNIT_ROWS: pc.max(group.column(UNIT_ROWS)).as_py(),
        "rows": first_chunks + rows_rejected,  # every input row has exactly one chunk 0 or is one reject
        "rows_embedded": first_chunks,
        # A chunk the model could not embed is a reject row of its own; its text counts once, by its first chunk.
        "rows_rejected": rows_rejected,
        "chunks_rejected": later_chunks_rejected,
        "nonfinite_recomputed": pc.sum(good.column(RECOMPUTED)).as_py() or 0 if RECOMPUTED in good.column_names else 0,
        "nonfinite_rejected": rejects_with_reason(rejects, "non-finite"),
        "files_rejected": rejects_with_reason(rejects, UNREADABLE),
        "rows_truncated": pc.sum(good.column(TRUNCATED)).as_py() or 0,
        "rows_chunked": pc.sum(pc.equal(good.column(CHUNK_INDEX), 1)).as_py() or 0,
        "output_rows": good.num_rows,
        "output_files": -(-good.num_rows // step),
        "tokens": pc.sum(good.column(TOKEN_COUNT)).as_py() or 0,
        "computed_tokens": pc.sum(good.column(COMPUTED)).as_py() or 0,
        "embed_seconds": pc.sum(good.column(EMBED_SECONDS)).as_py() or 0.0,
        "files_done": files_done(group),
        **actor_stats(good),
        "tokenized_at": pc.max(group.column(TOKENIZED_AT)).as_py() if TOKENIZED_AT in group.column_names else None,
        "read_as": read_values(group),
    }


def rejects_with_reason(rejects: pa.Table, prefix: str) -> int:
    """The reject rows whose reason starts with `prefix` (UNREADABLE: corrupt files, one row each)."""
    return pc.sum(pc.starts_with(rejects.column(REJECT), prefix)).as_py() or 0 if rejects.num_rows else 0


def actor_stats(good: pa.Table) -> dict[str, list[tuple[str, Any]]]:
    """`actor_vectors`: (embedding actor, vectors) and `actor_started`: (embedding actor, when it began to start) of
    the good rows of a block, from one group-by on the actor column; none when the block has no actor column."""
    if EMBED_ACTOR not in good.column_names or not good.num_rows:
        return {"actor_vectors": [], "actor_started": []}
    started = EMBED_ACTOR_STARTED in good.column_names
    aggregates = [([], "count_all")] + ([(EMBED_ACTOR_STARTED, "min")] if started else [])
    stats = good.group_by(EMBED_ACTOR).aggregate(aggregates)
    actors = stats.column(EMBED_ACTOR).to_pylist()
    return {
        "actor_vectors": list(zip(actors, stats.column("count_all").to_pylist())),
        "actor_started": list(zip(actors, stats.column(f"{EMBED_ACTOR_STARTED}_min").to_pylist())) if started else [],
    }
