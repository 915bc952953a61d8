"""The Ray edge: spherical k-means and dedup over a Ray dataset's blocks.

Each Lloyd iteration broadcasts the centroids once (`ray.put`), runs one Ray task per block of the materialized fit
sample for its partial sums (kmeans.partial_sums) and reduces them on the driver in a fixed order (by the block's
smallest sample key), so a seed gives the same centroids whatever the block layout or task timing. The tasks take the
sample's block refs directly: a Ray Data pass per iteration (a streaming executor planned and started each time) cost
more than the sums themselves on all but large samples, up to max_iter times per run. The final pass assigns
every row, groups rows by cluster, dedups each cluster and writes one assignments file per cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.clustering import dedup, kmeans
from pipeline.clustering.ordering import natural_order, stable_uniform
from pipeline.clustering.vectors import InputColumnError, embedding_matrix, normalize_rows
from pipeline.shared_output import RunLease, check_output_is_the_drivers
from pipeline.storage import Location, write_parquet_atomic

log = logging.getLogger(__name__)

# Column names private to the pipeline between stages; never written to the outputs.
EMB, KEY, OFF, TEXT_LEN = "_embedding", "_key", "_renormalized", "_text_len"


def as_vectors(x: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])


def string_ids(block: pa.Table, id_column: str) -> list[str]:
    col = block.column(id_column)
    if col.null_count:
        raise InputColumnError(
            f"id column {id_column!r} (input.id_column) has {col.null_count} null ids; every row needs an id: drop "
            "those rows or fill their ids"
        )
    return col.cast(pa.string()).to_pylist()


def resolve_ref(value):
    """fn_kwargs may arrive as the ObjectRef we put or already resolved, depending on how Ray ships them."""
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


@dataclass(frozen=True)
class SampleSpec:
    id_column: str
    embedding_column: str
    dim: int
    seed: int
    fraction: float


def sample_block(block: pa.Table, spec: SampleSpec) -> pa.Table:
    """Keep the rows whose id hashes below `fraction`, as unit vectors with their hash as a stable sort key."""
    ids = string_ids(block, spec.id_column)
    u = stable_uniform(ids, spec.seed)
    keep = np.flatnonzero(u < spec.fraction)
    chosen, chosen_ids = block.take(pa.array(keep, pa.int64())), [ids[i] for i in keep]
    x, off = normalize_rows(embedding_matrix(chosen, spec.embedding_column, spec.dim, chosen_ids), chosen_ids)
    return pa.table({KEY: pa.array(u[keep]), EMB: as_vectors(x), OFF: pa.array(off)})


def block_partial_sums(block: pa.Table, centroids: np.ndarray) -> tuple[float, kmeans.PartialSums] | None:
    """Map step of one Lloyd iteration (a Ray task per block): (the block's smallest key, its partial sums), or
    None for an empty block."""
    if block.num_rows == 0:
        return None
    x = embedding_matrix(block, EMB, centroids.shape[1])
    return float(np.min(block.column(KEY).to_numpy())), kmeans.partial_sums(x, centroids)


def distributed_step(sample: ray.data.Dataset, cpus: float):
    """Centroids -> reduced PartialSums over all blocks of the materialized `sample`: one Ray task of `cpus` CPUs
    per block, on the blocks where they are stored."""
    blocks = sample.to_arrow_refs()  # the materialized blocks themselves: nothing is read or copied again
    task = ray.remote(num_cpus=cpus)(block_partial_sums)

    def step(centroids: np.ndarray) -> kmeans.PartialSums:
        ref = ray.put(centroids)
        parts = [part for part in ray.get([task.remote(block, ref) for block in blocks]) if part is not None]
        parts.sort(key=lambda part: part[0])
        return kmeans.merge([sums for _, sums in parts])

    return step


def keys_below(block: pa.Table, threshold: float) -> pa.Table:
    return block.filter(pc.less(block.column(KEY), threshold))


def collect_init_rows(sample: ray.data.Dataset, threshold: float) -> np.ndarray:
    """Fit-sample rows whose key is below `threshold`, sorted by key: the driver-side k-means++ input.

    Keys are uniform over [0, sample_fraction), so the threshold sets the expected row count without a sort.
    """
    small = sample.map_batches(keys_below, batch_size=None, batch_format="pyarrow", fn_kwargs={"threshold": threshold})
    tables = list(small.iter_batches(batch_size=None, batch_format="pyarrow"))
    table = pa.concat_tables(tables) if tables else pa.table({KEY: pa.array([], pa.float64())})
    order = np.argsort(table.column(KEY).to_numpy(), kind="stable")
    return embedding_matrix(table.take(pa.array(order, pa.int64())), EMB)


@dataclass(frozen=True)
class AssignSpec:
    id_column: str
    embedding_column: str
    dim: int
    carried: tuple[str, ...]
    text_column: str | None
    with_vectors: bool  # dedup needs the vectors after the group-by


def assign_block(block: pa.Table, centroids, spec: AssignSpec) -> pa.Table:
    """Final pass over all rows: nearest centroid and its cosine, plus what the per-cluster stage needs."""
    c = resolve_ref(centroids)
    ids = string_ids(block, spec.id_column)
    x, off = normalize_rows(embedding_matrix(block, spec.embedding_column, spec.dim, ids), ids)
    labels, cos = kmeans.assign(x, c)
    cols = {
        "id": pa.array(ids, pa.string()),
        "cluster_id": pa.array(labels.astype(np.int32)),
        "cosine_to_centroid": cos,
    }
    for name in spec.carried:
        cols[name] = block.column(name)
    cols[OFF] = pa.array(off)
    if spec.with_vectors:
        cols[EMB] = as_vectors(x)
    if spec.text_column:
        cols[TEXT_LEN] = text_lengths(block.column(spec.text_column), spec.text_column, ids)
    return pa.table(cols)


BINARY_KINDS = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary, pa.types.is_binary_view)


def text_lengths(texts: pa.ChunkedArray, text_column: str, ids: list[str]) -> pa.Array:
    """Characters of each row's text (0 for a null): what dedup keep: longest compares. Bytes that are not UTF-8
    (a latin-1 text in a binary column) count the characters of their decoding with U+FFFD for each invalid byte
    sequence, as Python's `errors="replace"` gives it: such a row stopped the job in the assignment pass, after the
    whole fit, for a tie-break between near copies.

    Args:
        texts: the block's input.text_column (strings, bytes, numbers: a number is counted as its digits).
        text_column, ids: to name the row whose value cannot be counted.

    Raises:
        InputColumnError: a value that is no text at all (lists, structs), naming the row's id (the first file's check,
            pipeline.clustering.job.check_text_type, refuses such a column before the fit).
    """
    try:
        return pc.utf8_length(texts.cast(pa.string())).fill_null(0)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        if any(is_kind(texts.type) for is_kind in BINARY_KINDS):
            values = texts.to_pylist()
            return pa.array([0 if v is None else len(v.decode("utf-8", "replace")) for v in values], pa.int32())
        raise InputColumnError(
            f"input.text_column {text_column!r} of {ids[0] if ids else '?'!r} ({texts.type}) is not text ({err}); "
            "dedup keep: longest counts the characters of a text: set input.text_column to a column of text, or "
            "choose another clustering.dedup.keep"
        ) from None


@dataclass(frozen=True)
class ClusterSpec:
    out: Location
    carried: tuple[str, ...]
    dedup: object | None  # pipeline.cluster_config.DedupConfig; kept untyped so workers need not import pydantic models
    seed: int
    lease: RunLease | None = None  # the run's lease in a local output, checked on each node (pipeline.shared_output)


def cluster_file(cluster_id: int) -> str:
    return f"cluster-{cluster_id:05d}.parquet"


def finish_cluster(group: pa.Table, spec: ClusterSpec) -> pa.Table:
    """Per cluster: sort rows by id, dedup, write assignments (and kept ids); return one stats row.

    Raises:
        OutputNotSharedError: this node has a folder of its own at the local output's path (pipeline.shared_output).
    """
    check_output_is_the_drivers(spec.lease)
    ids = group.column("id").to_pylist()
    order = natural_order(ids)
    group = group.take(pa.array(order))
    ids = [ids[i] for i in order]
    cid = int(group.column("cluster_id")[0].as_py())
    dup_ids: list[str] = []
    dup_kept: list[str] = []
    dup_cos: list[float] = []
    uncompared = 0
    if spec.dedup is not None:
        d = spec.dedup
        lengths = group.column(TEXT_LEN).to_numpy() if TEXT_LEN in group.column_names else None
        res = dedup.dedup_cluster(
            embedding_matrix(group, EMB),
            ids,
            d.eps,
            d.keep,
            spec.seed,
            lengths,
            max_rows=d.max_cluster_rows,
            block_rows=d.block_rows,
        )
        is_dup = res.kept != np.arange(len(ids))
        dup_rows = np.flatnonzero(is_dup)
        dup_ids = [ids[i] for i in dup_rows]
        dup_kept = [ids[res.kept[i]] for i in dup_rows]
        dup_cos = res.cosine[dup_rows].tolist()
        uncompared = res.uncompared
        kept_ids = pa.table({"id": pa.array([ids[i] for i in np.flatnonzero(~is_dup)], pa.string())})
        write_parquet_atomic(kept_ids, spec.out.join("kept_ids", cluster_file(cid)))
    out_cols = ["id", "cluster_id", "cosine_to_centroid", *spec.carried]
    write_parquet_atomic(group.select(out_cols), spec.out.join("assignments", cluster_file(cid)))
    cos = group.column("cosine_to_centroid").to_numpy()
    return pa.table(
        {
            "cluster_id": [cid],
            "size": [group.num_rows],
            "cos_sum": [float(cos.astype(np.float64).sum())],
            "renormalized": [int(np.sum(group.column(OFF).to_numpy(zero_copy_only=False)))],
            "dup_id": pa.array([dup_ids], pa.list_(pa.string())),
            "dup_kept_id": pa.array([dup_kept], pa.list_(pa.string())),
            "dup_cosine": pa.array([dup_cos], pa.list_(pa.float32())),
            "uncompared": [uncompared],  # rows kept by the pieces of a split cluster, not compared across pieces
        }
    )
