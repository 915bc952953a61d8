"""The clustering job: embeddings dataset -> fit on a sample -> assign all rows -> per-cluster dedup -> outputs.

Outputs under output.uri:
    assignments/cluster-NNNNN.parquet  id, cluster_id, cosine_to_centroid, carried columns (sorted by id)
    centroids.parquet                   cluster_id, centroid, size, mean_cosine
    duplicates.parquet                  id, kept_id, cosine        (with clustering.dedup)
    kept_ids/cluster-NNNNN.parquet      id of every row that survives dedup (with clustering.dedup)
    summary.json, cluster_sizes.png, objective.png
    _run/                               the run's fingerprint and recorded fit, for a resume (clustering.resume)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline import commit
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering import centering, kmeans, report, resume
from pipeline.clustering.dedup import EPS_FLOOR
from pipeline.clustering.distributed import (
    OFF,
    AssignSpec,
    ClusterSpec,
    SampleSpec,
    as_vectors,
    assign_block,
    collect_init_rows,
    distributed_step,
    finish_cluster,
    sample_block,
)
from pipeline.clustering.input_check import check_input
from pipeline.clustering.parquet_read import read_embeddings
from pipeline.clustering.vectors import EmbeddingColumnError, InputColumnError, check_embedding_field
from pipeline.column_paths import Missing, arrow_path, flat_field, flat_table, projection
from pipeline.columns import CHUNK_INDEX
from pipeline.embed_job import init_ray, run_embed
from pipeline.embedding_files import file_matrix, naming_the_file, open_embeddings
from pipeline.input_contents import ContentRecorder, same_content
from pipeline.rules import check_rules
from pipeline.shared_output import run_lease
from pipeline.storage import Location, list_inputs, resolve, write_bytes, write_parquet_atomic

log = logging.getLogger(__name__)
# The embed step's refusals name its keys as the user wrote them: under the embed section.
EMBED_SECTION = commit.Naming(
    "embed.", "set embed.output.overwrite=true to replace it or choose another embed.output.uri (and input.uri)"
)


def read_columns(cfg: ClusterConfig) -> list[str]:
    """The columns the job reads, by their configured names (a dotted name may reach into a struct)."""
    columns = [cfg.input.id_column, cfg.input.embedding_column, *cfg.carried_columns()]
    center_by = cfg.clustering.center_by
    return list(dict.fromkeys(columns + ([center_by] if center_by else [])))


def column_paths_of(cfg: ClusterConfig, schema: pa.Schema, uri: str) -> dict[str, tuple[str, ...]]:
    """{configured column: its path in `schema`} (pipeline.column_paths: the exact name first, then struct fields).

    Raises:
        EmbeddingColumnError / InputColumnError: a configured column is missing (the message lists those that exist,
            and for a dotted name the fields where it stopped).
    """
    center = [("clustering.center_by", cfg.clustering.center_by)] if cfg.clustering.center_by else []
    roles = [("input.embedding_column", cfg.input.embedding_column), ("input.id_column", cfg.input.id_column)]
    text = cfg.input.text_column
    roles += [("input.text_column" if c == text else "output.keep_columns", c) for c in cfg.carried_columns()]
    roles += center
    paths = {}
    for role, name in roles:
        path = arrow_path(schema, name)
        if isinstance(path, Missing):
            inside = f"; {path.describe(name)}" if path.at else ""
            if role == "input.embedding_column":
                raise EmbeddingColumnError(
                    f"embedding column {name!r} not found in {uri}; columns are {schema.names}{inside} (set {role} "
                    "to the column of vectors, or point input.uri at an embeddings dataset: the embed job's output)"
                )
            fix = {  # a carried column is optional: it can be left out (the message said 'set carried column')
                "input.text_column": "set input.text_column to one of them, or to null to carry no text (dedup "
                "keep: longest needs it)",
                "output.keep_columns": f"list one of them in output.keep_columns, or remove {name!r} from it",
            }.get(role, f"set {role} to one of them")
            raise InputColumnError(
                f"{role} {name!r} not found in {uri}; columns are {schema.names}{inside}: {fix}, or add the column "
                "to the input"
            )
        paths[name] = path
    return {name: paths[name] for name in read_columns(cfg)}


def inspect_input(cfg: ClusterConfig, root: Location, files: list[str]) -> tuple[int, dict[str, tuple[str, ...]], str]:
    """Check columns on the first file before any Ray work; return the embedding dim, each read column's path and
    where the dim was read ("in <file URI>", named by a later file's width error next to that file).

    Raises:
        EmbeddingColumnError / InputColumnError: a configured column is missing (the message lists those that exist).
    """
    first = root.join(files[0])
    schema = open_embeddings(first).schema_arrow
    paths = column_paths_of(cfg, schema, first.uri)
    emb = cfg.input.embedding_column
    try:
        dim = check_embedding_field(pa.schema([flat_field(schema, emb, paths[emb])]), emb)
    except EmbeddingColumnError as err:  # the type: name the file and what to do
        raise EmbeddingColumnError(
            f"{first.uri}: {err}; set input.embedding_column to a column of float vectors (the embed job writes "
            "'embedding')"
        ) from None
    check_text_type(cfg, schema, paths, first.uri)
    if dim is not None:  # a fixed_size_list: its type gives the dim
        return dim, paths, f"in {first.uri}"
    dim, where = first_vector_dim(root, files, emb, paths[emb])  # variable-length lists: the first vector's
    return dim, paths, f"in {where}"


def check_text_type(cfg: ClusterConfig, schema: pa.Schema, paths: dict[str, tuple[str, ...]], uri: str) -> None:
    """With dedup keep: longest, input.text_column must hold text (its characters are counted): a list or struct
    column failed as a Ray Data UserCodeException in the assignment pass, after the whole fit.

    Raises:
        InputColumnError: naming the file, the column's type and what to do.
    """
    dedup_cfg, text = cfg.clustering.dedup, cfg.input.text_column
    if not (dedup_cfg and dedup_cfg.keep == "longest" and text):
        return
    typ = flat_field(schema, text, paths[text]).type
    if pa.types.is_nested(typ):
        raise InputColumnError(
            f"{uri}: input.text_column {text!r} has type {typ}, and dedup keep: longest counts the characters of a "
            "text: set input.text_column to a column of text, or choose another clustering.dedup.keep"
        )


def first_vector_dim(root: Location, files: list[str], column: str, path: tuple[str, ...]) -> tuple[int, str]:
    """The length of the input's first vector, in the first file and row group that has a row, and that file's URI.

    A 0-row file first in the listing (an empty part a Spark or pandas writer left) used to give dim 0, and every
    block then failed with "has dim 8, expected 0".

    Raises:
        EmbeddingColumnError: no file has a row (input.uri names an empty dataset).
        EmbeddingFileError: the first vector is null or empty, naming the file.
    """
    for name in files:
        file = root.join(name)
        reader = open_embeddings(file)
        for group in range(reader.num_row_groups):
            if reader.metadata.row_group(group).num_rows:
                with naming_the_file(file):
                    head = reader.read_row_group(group, columns=projection([path])).slice(0, 1)
                return file_matrix(file, flat_table(head, {column: path}), column).shape[1], file.uri
    raise EmbeddingColumnError(
        f"input.uri {root.uri}: the {len(files)} input files have no rows; point input.uri at an embeddings dataset"
    )


def with_chunk_index(cfg: ClusterConfig, first: Location) -> ClusterConfig:
    """`cfg` carrying chunk_index into the assignments when the input has it (an embed output of long_inputs: chunk,
    several rows per id): without it the rows of one id could not be told apart, nor joined back to their chunk."""
    names = open_embeddings(first).schema_arrow.names
    if CHUNK_INDEX not in names or CHUNK_INDEX in cfg.carried_columns() or cfg.input.id_column == CHUNK_INDEX:
        return cfg
    log.info("the input has several rows per id (%s): carrying it into the assignments", CHUNK_INDEX)
    output = cfg.output.model_copy(update={"keep_columns": [*cfg.output.keep_columns, CHUNK_INDEX]})
    return cfg.model_copy(update={"output": output})


def fit(
    cfg: ClusterConfig, ds: ray.data.Dataset, dim: int, rows: int, out: Location, cut_short: dict[str, Any] | None
) -> tuple[kmeans.FitResult, dict[str, Any]]:
    """Fit the centroids on the hashed sample; returns the fit and facts about the sample for the summary.

    `cut_short`: the last recorded iteration of an earlier attempt (pipeline.clustering.resume), continued instead of
    initializing; the iterations are recorded for a later resume as they go.
    """
    c = cfg.clustering
    spec = SampleSpec(cfg.input.id_column, cfg.input.embedding_column, dim, c.seed, c.sample_fraction)
    sample = ds.map_batches(sample_block, batch_size=None, batch_format="pyarrow", fn_kwargs={"spec": spec})
    sample = sample.materialize()
    n_fit = sample.count()
    kmeans.check_k(c.k, n_fit, rows, c.sample_fraction)
    renormalized = int(sum(b[OFF].sum() for b in sample.select_columns([OFF]).iter_batches(batch_format="numpy")))
    if renormalized:
        log.warning(
            "%d of %d sampled embeddings were not unit length; normalizing them (cosine k-means needs unit vectors)",
            renormalized,
            n_fit,
        )
    history = None
    if cut_short is not None:
        centroids, history, n_init = resume.load_iteration(out, cut_short)
        log.info("continuing the fit of k=%d on %d rows after iteration %d", c.k, n_fit, len(history) - 1)
    else:
        # The sample's keys are uniform on [0, sample_fraction): scale to get about init_sample_rows of them.
        threshold = c.sample_fraction * min(1.0, c.init_sample_rows / n_fit)
        init_rows = collect_init_rows(sample, threshold)
        if len(init_rows) < c.k:  # the hash drew fewer rows than expected: fall back to the whole sample
            init_rows = collect_init_rows(sample, c.sample_fraction)
        centroids, n_init = kmeans.init_centroids(init_rows, c.k, c.init, c.seed), len(init_rows)
        log.info("fitting k=%d on %d of %d rows (init %s on %d rows)", c.k, n_fit, rows, c.init, n_init)
    checkpoints = resume.IterationCheckpoints(out, n_init)
    step = distributed_step(sample, cfg.compute.cpus_per_actor)
    result = kmeans.lloyd(step, centroids, c.max_iter, c.tol, history, on_iteration=checkpoints)
    facts = {"fit_rows": n_fit, "init_rows": n_init, "renormalized_in_sample": renormalized}
    resume.save_fit(out, result, facts)
    checkpoints.discard()
    return result, facts


def fit_or_resume(
    cfg: ClusterConfig, ds: ray.data.Dataset, dim: int, rows: int, out: Location, stages: dict, reused: list[str]
) -> tuple[kmeans.FitResult, dict[str, Any], int]:
    """The fit an earlier attempt recorded, or a fit (continued from its last recorded iteration, if any).

    Appends what it reused to `reused` ("fit" or "fit_iterations"); returns the fit, the sample's facts and the
    number of iterations an earlier attempt ran.
    """
    if resume.FIT_STAGE in stages:
        reused.append(resume.FIT_STAGE)
        return *resume.load_fit(out, stages[resume.FIT_STAGE]), 0
    cut_short = stages.get(resume.ITERATION_STAGE)
    result, facts = fit(cfg, ds, dim, rows, out, cut_short)
    if cut_short is None:
        return result, facts, 0
    reused.append("fit_iterations")
    return result, facts, len(cut_short["history"]) - 1


def assign_and_write(
    cfg: ClusterConfig, ds: ray.data.Dataset, dim: int, centroids: np.ndarray, out: Location
) -> pa.Table:
    """Assign every row, then group by cluster: dedup and write per cluster. Returns the per-cluster stats."""
    carried = tuple(cfg.carried_columns())
    dedup_cfg = cfg.clustering.dedup
    spec = AssignSpec(
        cfg.input.id_column,
        cfg.input.embedding_column,
        dim,
        carried,
        cfg.input.text_column if dedup_cfg and dedup_cfg.keep == "longest" else None,
        with_vectors=dedup_cfg is not None,
    )
    ref = ray.put(centroids)
    assigned = ds.map_batches(
        assign_block, batch_size=None, batch_format="pyarrow", fn_kwargs={"centroids": ref, "spec": spec}
    )
    cluster_spec = ClusterSpec(out, carried, dedup_cfg, cfg.clustering.seed, run_lease(out))
    # The task-based sort shuffle, set on this dataset's own context copy: the default hash shuffle starts
    # aggregator actors that each hold a CPU, and on a small or busy cluster they wait for CPUs for minutes.
    assigned.context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    stats = assigned.groupby("cluster_id").map_groups(
        finish_cluster, batch_format="pyarrow", fn_kwargs={"spec": cluster_spec}
    )
    tables = list(stats.iter_batches(batch_size=None, batch_format="pyarrow"))
    table = pa.concat_tables(tables)
    return table.sort_by("cluster_id")


def write_centroids(centroids: np.ndarray, stats: pa.Table, out: Location) -> np.ndarray:
    k = len(centroids)
    sizes = np.zeros(k, dtype=np.int64)
    cos_sum = np.zeros(k, dtype=np.float64)
    ids = stats.column("cluster_id").to_numpy()
    sizes[ids] = stats.column("size").to_numpy()
    cos_sum[ids] = stats.column("cos_sum").to_numpy()
    mean_cos = cos_sum / np.maximum(sizes, 1)
    table = pa.table(
        {
            "cluster_id": pa.array(np.arange(k, dtype=np.int32)),
            "centroid": as_vectors(centroids),
            "size": pa.array(sizes),
            # an empty cluster (k above the data's distinct directions) has no mean: null, not NaN
            "mean_cosine": pa.array(mean_cos.astype(np.float32), mask=sizes == 0),
        }
    )
    write_parquet_atomic(table, out.join("centroids.parquet"))
    return sizes


def uncompared_rows(stats: pa.Table, max_rows: int) -> dict[str, int]:
    """The summary's count of rows the pieces of split clusters kept that were not compared with each other's
    (dedup.dedup_cluster: more than max_cluster_rows of them), with a warning when there are any."""
    per = stats.column("uncompared").to_numpy()
    rows, clusters = int(per.sum()), int((per > 0).sum())
    if rows:
        log.warning(
            "dedup: in %d clusters above clustering.dedup.max_cluster_rows (%d), the %d rows their pieces kept were "
            "more than max_cluster_rows and were not compared with each other: a near duplicate cut apart from its "
            "partner by the split may remain (exact copies are joined). Raise max_cluster_rows or k to compare them",
            clusters,
            max_rows,
            rows,
        )
    return {"rows_not_compared_across_pieces": rows, "clusters_not_compared_across_pieces": clusters}


def write_duplicates(stats: pa.Table, out: Location) -> int:
    table = pa.table(
        {
            "id": pc.list_flatten(stats.column("dup_id")),
            "kept_id": pc.list_flatten(stats.column("dup_kept_id")),
            "cosine": pc.list_flatten(stats.column("dup_cosine")),
        },
        schema=pa.schema([("id", pa.string()), ("kept_id", pa.string()), ("cosine", pa.float32())]),
    )
    write_parquet_atomic(table, out.join("duplicates.parquet"))
    return table.num_rows


def center_dataset(cfg: ClusterConfig, ds: ray.data.Dataset, dim: int) -> tuple[ray.data.Dataset, int]:
    """One pass for each group's mean vector, then the dataset with every row centred on its group's mean."""
    column, emb, ids = cfg.clustering.center_by, cfg.input.embedding_column, cfg.input.id_column
    sums = ds.map_batches(
        centering.group_sums, batch_size=None, batch_format="pyarrow", fn_args=(column, emb, dim, ids)
    ).iter_batches(batch_size=None, batch_format="pyarrow")
    means = centering.group_means(list(sums), dim)
    log.info("centring on %s: %d groups", column, len(means))
    centred = ds.map_batches(
        centering.center_block, batch_size=None, batch_format="pyarrow", fn_args=(column, emb, dim, means, ids)
    )
    return centred.materialize(), len(means)


@commit.holds_output("cluster")
def run_cluster(cfg: ClusterConfig) -> dict[str, Any]:
    """Run the configured clustering, or resume an unfinished run of the same configuration in `output.uri`.

    A resumed run reuses the embed step's finished output and the recorded fit, or continues the fit from its last
    recorded iteration (pipeline.clustering.resume), and redoes the assignment. Returns the summary that is also written to `<output>/summary.json`.

    Raises:
        OutputExistsError: the output holds a finished run, another configuration's run (the message names each
            differing field) or foreign files, and output.overwrite is false.
        DuplicateIdError: an id (with its chunk_index, where the input has one) is in more than one input row
            (pipeline.clustering.duplicates), found before any k-means work.
    """
    start = time.perf_counter()
    out = resolve(cfg.output.uri, cfg.storage)
    recorded = commit.check_available(out, cfg.output.overwrite, resumable=True)  # before the embed step
    rules = resume.applied_cluster_rules(cfg, recorded)  # those this config does not use as recorded
    check_rules(out, recorded, rules, "cluster")  # a run of another version's rules
    reused: list[str] = []
    if cfg.embed is not None:
        log.info("embedding %s first", cfg.embed.input.uri)
        if run_embed(cfg.embed, reuse_finished=True, naming=EMBED_SECTION).get("reused_finished_run"):
            reused.append("embed")
    # Input and output are checked before Ray starts, so a wrong URI or column fails in seconds.
    root, listed = list_inputs(cfg.input.uri, cfg.storage)
    files = [f.path for f in listed]
    cfg = with_chunk_index(cfg, root.join(files[0]))
    dim, paths, dim_from = inspect_input(cfg, root, files)
    fingerprint = resume.cluster_fingerprint(cfg, listed, rules)
    # an input file touched since the run began (token moved, size not) is hashed and compared with its content
    same = same_content({"input.listing": root}, out)
    resumed = commit.begin(out, "cluster", cfg.output.overwrite, fingerprint, same_content=same)
    with ContentRecorder(out, {"input.listing": (root, listed)}):  # what that compares: hashed while we cluster
        stages = commit.committed_units(out) if resumed else {}
        if resumed:
            dropped = commit.drop_except(out, keep=[])  # the assignment stage's partial files; _run/ stays
            log.info("resuming: stages recorded %s; %d partial files dropped", sorted(stages), dropped)
        init_ray(cfg.compute, cfg)
        id_column = cfg.input.id_column
        chunked = CHUNK_INDEX in cfg.carried_columns() and id_column != CHUNK_INDEX  # rows of one id, one per chunk
        # one read of every file before any k-means work: every vector readable, of the first one's width, none null
        # (an error naming the file), and no id in two rows (an error naming the repeats)
        schema, rows = check_input(
            root, files, cfg.input.embedding_column, paths, id_column, chunked, dim, cfg.compute, dim_from
        )
        center_by = cfg.clustering.center_by
        # files of several types: one schema for all
        ds = read_embeddings(root, files, list(dict.fromkeys(p[0] for p in paths.values())), schema)
        if any(len(p) > 1 for p in paths.values()):  # struct fields under their configured names (meta.id)
            ds = ds.map_batches(flat_table, batch_size=None, batch_format="pyarrow", fn_kwargs={"paths": paths})
        kmeans.check_k(cfg.clustering.k, rows)
        groups = 0
        if center_by:
            ds, groups = center_dataset(cfg, ds, dim)

        result, sample_facts, iterations_reused = fit_or_resume(cfg, ds, dim, rows, out, stages, reused)
        stats = assign_and_write(cfg, ds, dim, result.centroids, out)
        sizes = write_centroids(result.centroids, stats, out)
        total_cos = float(stats.column("cos_sum").to_numpy().sum())
        renormalized = int(stats.column("renormalized").to_numpy().sum())
        if renormalized:
            log.warning("%d of %d embeddings were not unit length and were normalized", renormalized, rows)
        iter_seconds = [h.seconds for h in result.history[1:]]
        summary: dict[str, Any] = {
            "input": cfg.input.uri,
            "output": cfg.output.uri,
            "rows": rows,
            "dim": dim,
            "k": cfg.clustering.k,
            "init": cfg.clustering.init,
            "seed": cfg.clustering.seed,
            **sample_facts,
            "iterations": len(result.history) - 1,
            "converged": result.converged,
            "fit_objective": round(result.objective, 7),
            "objective": round(total_cos / rows, 7),  # mean cosine to centroid over all rows
            "inertia": round(rows - total_cos, 4),
            "renormalized_rows": renormalized,
            "seconds_per_iteration": round(float(np.mean(iter_seconds)), 4) if iter_seconds else None,
            "center_by": center_by,
            "center_groups": groups,
            "history": report.fit_history(result),
            "sizes": sizes.tolist(),
            "resumed": resumed,
            "stages_reused": reused,
            "fit_iterations_reused": iterations_reused,
        }
        if cfg.clustering.dedup is not None:
            n_dup = write_duplicates(stats, out)
            summary["dedup"] = {
                "eps": cfg.clustering.dedup.eps,
                "eps_used": max(cfg.clustering.dedup.eps, EPS_FLOOR),  # below the floor eps counts as the floor
                "keep": cfg.clustering.dedup.keep,
                "duplicates": n_dup,
                "kept": rows - n_dup,
                **uncompared_rows(stats, cfg.clustering.dedup.max_cluster_rows),
            }
        write_bytes(report.sizes_png(sizes), out.join("cluster_sizes.png"))
        write_bytes(report.objective_png(result), out.join("objective.png"))
        summary["wall_seconds"] = round(time.perf_counter() - start, 3)
        commit.commit(out, "cluster", summary, "summary.json")  # summary.json, then the _SUCCESS marker
        return summary
