"""End-to-end: the clustering job on local Ray, reading from and writing to the S3 server fixture."""

from __future__ import annotations

import itertools
import json
import os

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from robustness_helpers import embeddings_table, odd_embedding_files

from jobs.cluster import main
from pipeline.cluster_config import ClusterConfig
from pipeline.clustering import kmeans
from pipeline.clustering.input_check import check_input
from pipeline.clustering.job import run_cluster
from pipeline.commit import OutputExistsError
from pipeline.config import ConfigError, StorageConfig, parse_config
from pipeline.embedding_files import EmbeddingFileError
from pipeline.errors import UserError, user_message
from pipeline.storage import make_filesystem, resolve

pytestmark = pytest.mark.slow

K, DIM = 4, 24


def write_embeddings(fs: pafs.FileSystem, root: str, seed: int = 0) -> dict[str, int]:
    """Three files of 4 well-separated topics, with planted exact/near duplicates; returns id -> topic."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, DIM))
    topic_of: dict[str, int] = {}
    for f in range(3):
        topics = rng.integers(K, size=150)
        x = centres[topics] + 0.3 * rng.normal(size=(150, DIM))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x[1] = x[0] + 1e-4 * rng.normal(size=DIM)  # near duplicate of row 0
        topics[1] = topics[0]
        ids = [f"doc-{f}#{i}" for i in range(150)]
        text = [("long " * 5 if i == 1 else "") + f"text {i}" for i in range(150)]
        table = pa.table(
            {
                "id": ids,
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).ravel()), DIM),
                "text": text,
                "topic": topics,
            }
        )
        pq.write_table(table, f"{root}/part-{f:05d}.parquet", filesystem=fs)
        topic_of.update(zip(ids, topics.tolist()))
    # files the job must ignore, as the embed job writes them
    with fs.open_output_stream(f"{root}/_summary.json") as out:
        out.write(b"{}")
    return topic_of


def config(endpoint: str, bucket: str, out: str, **clustering) -> ClusterConfig:
    raw = {
        "input": {"uri": f"s3://{bucket}/emb", "text_column": "text"},
        "output": {"uri": f"s3://{bucket}/{out}", "keep_columns": ["topic"]},
        "storage": {"endpoint_url": endpoint},
        "clustering": {"k": K, "seed": 3, "sample_fraction": 0.7, "max_iter": 30, **clustering},
    }
    return parse_config(ClusterConfig, raw)


@pytest.fixture(scope="module")
def bucket(s3_server):
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="clustering-test")
    fs, _ = make_filesystem("s3://clustering-test", StorageConfig(endpoint_url=s3_server))
    topic_of = write_embeddings(fs, "clustering-test/emb")
    return fs, "clustering-test", topic_of


def read_dir(fs: pafs.FileSystem, path: str) -> pa.Table:
    return pads.dataset(path, filesystem=fs, format="parquet").to_table()


DEDUP = {"eps": 0.001, "keep": "longest"}


@pytest.fixture(scope="module")
def run1(ray_session, s3_server, bucket) -> dict:
    """One finished run with dedup, checked by one test and the reference of a resumed one."""
    return run_cluster(config(s3_server, bucket[1], "run1", dedup=DEDUP))


def test_cluster_job_on_s3_with_dedup(run1, bucket):
    fs, name, topic_of = bucket
    summary = run1

    assert summary["rows"] == 450 and summary["k"] == K
    assert summary["converged"]
    assert 250 < summary["fit_rows"] < 400  # ~70 % hashed sample
    objs = [h["objective"] for h in summary["history"]]
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(objs))

    assignments = read_dir(fs, f"{name}/run1/assignments")
    assert assignments.column_names == ["id", "cluster_id", "cosine_to_centroid", "text", "topic"]
    assert sorted(assignments.column("id").to_pylist()) == sorted(topic_of)  # every row once
    # well separated topics: each cluster is exactly one topic
    for cid in range(K):
        rows = assignments.filter(pa.compute.equal(assignments.column("cluster_id"), cid))
        assert len(set(rows.column("topic").to_pylist())) == 1
    files = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{name}/run1/assignments")))
    assert files == [f"cluster-{c:05d}.parquet" for c in range(K)]

    centroids = pq.read_table(f"{name}/run1/centroids.parquet", filesystem=fs)
    assert centroids.column("size").to_pylist() == summary["sizes"]
    assert sum(summary["sizes"]) == 450
    c = np.stack(centroids.column("centroid").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)

    dups = pq.read_table(f"{name}/run1/duplicates.parquet", filesystem=fs).sort_by("id").to_pylist()
    # row 1 of every file is the planted near duplicate and has the longer text, so it is the one kept
    assert [(d["id"], d["kept_id"]) for d in dups] == [(f"doc-{f}#0", f"doc-{f}#1") for f in range(3)]
    assert all(d["cosine"] > 0.999 for d in dups)
    kept = read_dir(fs, f"{name}/run1/kept_ids").column("id").to_pylist()
    assert len(kept) == 447 and not {d["id"] for d in dups} & set(kept)
    assert summary["dedup"] == {
        "eps": 0.001,
        "eps_used": 0.001,
        "keep": "longest",
        "duplicates": 3,
        "kept": 447,
        "rows_not_compared_across_pieces": 0,
        "clusters_not_compared_across_pieces": 0,
    }

    stored = json.loads(fs.open_input_stream(f"{name}/run1/summary.json").read())
    assert stored["history"] == summary["history"]
    for png in ("cluster_sizes.png", "objective.png"):
        assert fs.open_input_stream(f"{name}/run1/{png}").read()[:4] == b"\x89PNG"


def test_same_seed_same_centroids_and_matches_local_fit(ray_session, s3_server, bucket):
    fs, name, _ = bucket
    a = run_cluster(config(s3_server, name, "seed-a", sample_fraction=1.0, init="random"))
    b = run_cluster(config(s3_server, name, "seed-b", sample_fraction=1.0, init="random"))
    ca = pq.read_table(f"{name}/seed-a/centroids.parquet", filesystem=fs)
    cb = pq.read_table(f"{name}/seed-b/centroids.parquet", filesystem=fs)
    assert ca.equals(cb)
    assert a["history"][-1]["objective"] == b["history"][-1]["objective"]
    # the distributed fit equals the single-process fit from the same init rows (sorted by the same hash)
    table = read_dir(fs, f"{name}/emb")
    from pipeline.clustering.ordering import stable_uniform

    order = np.argsort(stable_uniform(table.column("id").to_pylist(), 3), kind="stable")
    x = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)[order]
    local = kmeans.fit_blocks([x], K, max_iter=30, tol=1e-6, seed=3, init="random")
    np.testing.assert_allclose(
        np.stack(ca.column("centroid").to_numpy(zero_copy_only=False)), local.centroids, atol=1e-5
    )


def test_a_crashed_run_resumes_from_its_fit_to_the_same_assignments(run1, s3_server, bucket, monkeypatch):
    """Cut short mid-fit, then again after the assignment files were written: each rerun of the same command goes on
    from what the last attempt recorded (an iteration of the fit, then the fitted centroids) and the run ends as an
    uninterrupted one; another configuration is refused naming the field."""
    from pipeline.clustering import job, resume

    fs, name, _ = bucket
    dedup, expected = DEDUP, run1  # the uninterrupted run of the same configuration
    assert expected["iterations"] >= 2 and expected["resumed"] is False and expected["stages_reused"] == []

    monkeypatch.setattr(resume, "CHECKPOINT_SECONDS", 0.0)  # record every iteration
    real_update, updates = kmeans.update, []

    def update(*args):
        updates.append(len(updates) + 1)
        if updates == [1, 2]:  # the first attempt's second update: its iteration 1 is recorded
            raise RuntimeError("node lost")
        return real_update(*args)

    def crash(*args, **kwargs):
        raise RuntimeError("node lost")

    monkeypatch.setattr(kmeans, "update", update)
    monkeypatch.setattr(job, "write_centroids", crash)
    with pytest.raises(RuntimeError, match="node lost"):
        run_cluster(config(s3_server, name, "resume-b", dedup=dedup))
    assert fs.get_file_info(f"{name}/resume-b/_run/units/fit-iteration.json").type == pafs.FileType.File
    with pytest.raises(RuntimeError, match="node lost"):  # continues the fit from iteration 1, dies after assigning
        run_cluster(config(s3_server, name, "resume-b", dedup=dedup))
    assert len(updates) == 2 + expected["iterations"] - 1  # the second attempt ran iterations 2.. only
    assert fs.get_file_info(f"{name}/resume-b/_SUCCESS").type == pafs.FileType.NotFound
    assert read_dir(fs, f"{name}/resume-b/assignments").num_rows == 450  # what the crashed attempt left
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match=r"of another configuration.*clustering\.k: 4 -> 5"):
        run_cluster(config(s3_server, name, "resume-b", k=5, dedup=dedup))
    fits = []
    monkeypatch.setattr(job, "fit", lambda *args: fits.append(args))  # a fit would fail: None is no FitResult
    summary = run_cluster(config(s3_server, name, "resume-b", dedup=dedup))
    assert fits == [] and summary["resumed"] is True and summary["stages_reused"] == ["fit"]
    for key in ("rows", "sizes", "objective", "iterations", "fit_rows", "init_rows", "dedup"):
        assert summary[key] == expected[key], key
    timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in s["history"]] for s in (summary, expected)]
    assert timeless[0] == timeless[1]
    for part in ("assignments", "kept_ids"):
        a, b = (read_dir(fs, f"{name}/{run}/{part}").sort_by("id") for run in ("run1", "resume-b"))
        assert a.equals(b), part
    for single in ("centroids.parquet", "duplicates.parquet"):
        a, b = (pq.read_table(f"{name}/{run}/{single}", filesystem=fs) for run in ("run1", "resume-b"))
        assert a.equals(b), single
    fit_files = [i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{name}/resume-b/_run/fit"))]
    assert fit_files == ["centroids.npy"]  # the iterations' matrices are deleted once the fit is recorded


def test_refuses_to_overwrite_and_bad_columns(run1, s3_server, bucket):
    _, name, _ = bucket
    with pytest.raises(FileExistsError, match="output.overwrite=true"):
        run_cluster(config(s3_server, name, "run1"))
    cfg = config(s3_server, name, "bad-col")
    cfg.input.embedding_column = "vector"
    with pytest.raises(
        ValueError, match=r"'vector' not found in .*; columns are \['id', 'embedding', 'text', 'topic'\]"
    ):
        run_cluster(cfg)
    with pytest.raises(ValueError, match="k=500 clusters but only 450 rows"):
        run_cluster(config(s3_server, name, "big-k", k=500))


def test_non_normalized_vectors_are_normalized_with_a_warning(ray_session, tmp_path, caplog):
    rng = np.random.default_rng(1)
    x = (5 * rng.normal(size=(60, 8))).astype(np.float32)  # norms around 14
    (tmp_path / "emb").mkdir()
    pq.write_table(
        pa.table({"id": [str(i) for i in range(60)], "embedding": pa.array(list(x), pa.list_(pa.float32()))}),
        tmp_path / "emb" / "part-0.parquet",
    )
    raw = {
        "input": {"uri": str(tmp_path / "emb")},
        "output": {"uri": str(tmp_path / "out")},
        "clustering": {"k": 3},
    }
    with caplog.at_level("WARNING"):
        summary = run_cluster(parse_config(ClusterConfig, raw))
    assert summary["renormalized_rows"] == 60
    assert "60 of 60 sampled embeddings were not unit length" in caplog.text
    cos = read_dir(pafs.LocalFileSystem(), str(tmp_path / "out" / "assignments")).column("cosine_to_centroid")
    assert max(cos.to_pylist()) <= 1.0 + 1e-6


def test_config_errors_name_the_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("input: {uri: x}\noutput: {uri: y}\nclustering: {k: 3, dedup: {eps: 0.1, keep: longest}}\n")
    assert main(["--config", str(path)]) == 2
    assert "needs input.text_column" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="clustering.kk: Extra inputs are not permitted"):
        parse_config(ClusterConfig, {"input": {"uri": "x"}, "output": {"uri": "y"}, "clustering": {"k": 2, "kk": 3}})


def test_embed_first_then_cluster(ray_session, tiny_models, tmp_path):
    """With an `embed:` section the job embeds the raw corpus with the embed job, then clusters what it wrote."""
    from conftest import SAMPLE

    emb = str(tmp_path / "emb")
    raw = {
        "embed": {
            "input": {"uri": str(SAMPLE), "format": "jsonl", "id_column": "id"},
            "output": {"uri": emb, "keep_columns": ["lang"]},
            "model": {"name_or_path": str(tiny_models["bert"]), "max_tokens": 64, "pooling": "mean"},
        },
        "input": {"uri": emb},
        "output": {"uri": str(tmp_path / "clusters"), "keep_columns": ["lang"]},
        "clustering": {"k": 5, "dedup": {"eps": 0.01, "keep": "random"}},
    }
    summary = run_cluster(parse_config(ClusterConfig, raw))
    n = sum(1 for _ in SAMPLE.open())
    assert summary["rows"] == n and sum(summary["sizes"]) == n
    assert summary["renormalized_rows"] == 0  # the embed job writes unit vectors
    assignments = read_dir(pafs.LocalFileSystem(), str(tmp_path / "clusters" / "assignments"))
    assert assignments.num_rows == n
    assert assignments.column_names == ["id", "cluster_id", "cosine_to_centroid", "lang"]
    kept = read_dir(pafs.LocalFileSystem(), str(tmp_path / "clusters" / "kept_ids")).num_rows
    assert kept + summary["dedup"]["duplicates"] == n

    # An unfinished state (a crash before the marker): the same command reuses the finished embed step (checked
    # against its fingerprint, not embedded again) and the recorded fit.
    marker = (tmp_path / "emb" / "_SUCCESS").stat().st_mtime_ns
    (tmp_path / "clusters" / "_SUCCESS").unlink()
    (tmp_path / "clusters" / "summary.json").unlink()
    again = run_cluster(parse_config(ClusterConfig, raw))
    assert again["resumed"] is True and again["stages_reused"] == ["embed", "fit"]
    assert (tmp_path / "emb" / "_SUCCESS").stat().st_mtime_ns == marker
    assert again["sizes"] == summary["sizes"] and again["dedup"] == summary["dedup"]
    assert (
        read_dir(pafs.LocalFileSystem(), str(tmp_path / "clusters" / "assignments"))
        .sort_by("id")
        .equals(assignments.sort_by("id"))
    )

    # The embed step's refusal names the keys as the user wrote them, under the embed section.
    changed = {
        **raw,
        "embed": {**raw["embed"], "model": {**raw["embed"]["model"], "max_tokens": 32}},
        "output": {**raw["output"], "uri": str(tmp_path / "clusters2")},
    }
    with pytest.raises(OutputExistsError, match="finished embed of another configuration") as err:
        run_cluster(parse_config(ClusterConfig, changed))
    message = str(err.value)
    assert "; embed." in message or ": embed." in message, message
    assert "set embed.output.overwrite=true" in message and "set output.overwrite" not in message


def test_an_embed_section_that_does_not_write_a_column_the_clustering_reads_is_refused_before_embedding():
    raw = {
        "embed": {"input": {"uri": "raw", "format": "jsonl"}, "output": {"uri": "emb", "keep_columns": ["lang"]}},
        "input": {"uri": "emb", "text_column": "text"},
        "output": {"uri": "clusters", "keep_columns": ["lang"]},
        "clustering": {"k": 5},
    }
    with pytest.raises(
        ConfigError, match=r"input.text_column 'text' is not a column the embed step writes.*add 'text'"
    ):
        parse_config(ClusterConfig, raw)
    for key, value in (
        ("output", {"uri": "clusters", "keep_columns": ["topic"]}),
        ("clustering", {"k": 5, "center_by": "topic"}),
    ):
        with pytest.raises(ConfigError, match="'topic' is not a column the embed step writes"):
            parse_config(ClusterConfig, {**raw, "input": {"uri": "emb"}, key: value})
    kept = {**raw, "embed": {**raw["embed"], "output": {"uri": "emb", "keep_columns": ["lang", "text"]}}}
    assert parse_config(ClusterConfig, kept).carried_columns() == ["text", "lang"]


def test_a_column_missing_from_the_input_is_a_user_error_naming_the_file(tmp_path):
    from pipeline.clustering.job import inspect_input
    from pipeline.errors import UserError
    from pipeline.storage import resolve

    pq.write_table(pa.table({"id": ["a"], "embedding": [[1.0, 0.0]]}), tmp_path / "part-0.parquet")
    cfg = parse_config(
        ClusterConfig,
        {"input": {"uri": str(tmp_path), "text_column": "text"}, "output": {"uri": "o"}, "clustering": {"k": 1}},
    )
    with pytest.raises(
        UserError,
        match=r"input.text_column 'text' not found in .*part-0.parquet; columns are \['id', 'embedding'\]: set "
        r"input.text_column to one of them, or to null",
    ):
        inspect_input(cfg, resolve(str(tmp_path), StorageConfig()), ["part-0.parquet"])
    cfg = parse_config(
        ClusterConfig,
        {"input": {"uri": str(tmp_path)}, "output": {"uri": "o", "keep_columns": ["url"]}, "clustering": {"k": 1}},
    )
    with pytest.raises(UserError, match=r"output.keep_columns 'url' not found .*remove 'url' from it"):
        inspect_input(cfg, resolve(str(tmp_path), StorageConfig()), ["part-0.parquet"])


def test_nested_id_embedding_text_and_group_columns(ray_session, tmp_path):
    """A Parquet input with `doc: struct<id, text, lang, vec>`: id, embedding, text, kept and center_by columns as
    dotted paths. The job failed "embedding column 'doc.vec' not found; columns are ['doc']". A second file with
    integer ids and float64 vectors in the struct is read as the top-level columns are (ids as strings)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    docs = [
        {"id": f"d{i}", "text": f"text {i}", "lang": "de" if i % 2 else "fr", "vec": x[i].tolist()} for i in range(40)
    ]
    (tmp_path / "in").mkdir()
    own = pa.struct(
        [("id", pa.string()), ("text", pa.string()), ("lang", pa.string()), ("vec", pa.list_(pa.float32()))]
    )
    pq.write_table(pa.table({"doc": pa.array(docs[:30], own)}), tmp_path / "in" / "part-0.parquet")
    # another writer's file: integer ids and float64 vectors inside the struct, as in top-level columns read as
    # strings and float32 (it was refused: "column 'doc' has type struct<id: string, ...> ... struct<id: int64, ...>")
    other = [{**d, "id": 1000 + i} for i, d in enumerate(docs[30:])]
    struct = pa.struct(
        [("id", pa.int64()), ("text", pa.string()), ("lang", pa.string()), ("vec", pa.list_(pa.float64()))]
    )
    pq.write_table(pa.table({"doc": pa.array(other, struct)}), tmp_path / "in" / "part-1.parquet")
    docs = docs[:30] + [{**d, "id": str(d["id"])} for d in other]
    raw = {
        "input": {
            "uri": str(tmp_path / "in"),
            "id_column": "doc.id",
            "embedding_column": "doc.vec",
            "text_column": "doc.text",
        },
        "output": {"uri": str(tmp_path / "out"), "keep_columns": ["doc.lang"]},
        "clustering": {"k": 3, "center_by": "doc.lang"},
    }
    summary = run_cluster(parse_config(ClusterConfig, raw))
    assert (summary["rows"], summary["dim"], summary["center_groups"]) == (40, 8, 2)
    got = read_dir(pafs.LocalFileSystem(), str(tmp_path / "out" / "assignments"))
    rows = {r["id"]: (r["doc.text"], r["doc.lang"]) for r in got.to_pylist()}
    assert rows == {d["id"]: (d["text"], d["lang"]) for d in docs}


def test_a_missing_nested_column_names_where_it_stopped(tmp_path):
    from pipeline.clustering.job import inspect_input
    from pipeline.errors import UserError
    from pipeline.storage import resolve

    doc = pa.array([{"id": "a", "vec": [1.0, 0.0]}])
    pq.write_table(pa.table({"doc": doc}), tmp_path / "part-0.parquet")
    raw = {"input": {"uri": str(tmp_path), "id_column": "doc.id"}, "output": {"uri": "o"}, "clustering": {"k": 1}}
    root = resolve(str(tmp_path), StorageConfig())
    with pytest.raises(
        UserError,
        match=r"embedding column 'embedding' not found in .*part-0.parquet; columns are \['doc'\] \(set "
        r"input.embedding_column to the column of vectors, or point input.uri at an embeddings dataset",
    ):
        inspect_input(parse_config(ClusterConfig, raw), root, ["part-0.parquet"])
    raw["input"]["embedding_column"] = "doc.vector"
    with pytest.raises(UserError, match=r"'doc.vector' stops at 'doc': 'doc' has fields \['id', 'vec'\]"):
        inspect_input(parse_config(ClusterConfig, raw), root, ["part-0.parquet"])
    raw["input"]["embedding_column"] = "doc.vec"
    assert inspect_input(parse_config(ClusterConfig, raw), root, ["part-0.parquet"]) == (
        2,
        {"doc.id": ("doc", "id"), "doc.vec": ("doc", "vec")},
        f"in {tmp_path}/part-0.parquet",
    )


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_first_input_file_without_rows_does_not_set_the_dim(ray_session, tmp_path):
    """A 0-row part file first in the listing (Spark and pandas writers leave them) gave dim 0, and every block then
    failed with "embedding column 'embedding' has dim 8, expected 0".
    Files of two writers: integer ids (pandas, another tool) beside string ids, float16 fixed-size lists beside
    float64 large lists, failed in Ray Data's schema merge ('Unable to merge: Field id has incompatible types: string
    vs int64'); they are read as one schema now (input_check.read_schema), the ids as strings."""
    (tmp_path / "emb").mkdir()
    empty = pa.table({"id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))})
    pq.write_table(empty, tmp_path / "emb" / "part-0.parquet")
    rows = pa.table({"id": [f"b{i}" for i in range(30)], "embedding": pa.array(list(unit_rows(30, 8, 4)))})
    pq.write_table(rows, tmp_path / "emb" / "part-1.parquet")
    x = unit_rows(10, 8, 5)
    half = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1).astype(np.float16)), 8)
    pq.write_table(pa.table({"id": np.arange(10), "embedding": half}), tmp_path / "emb" / "part-2.parquet")
    wide = pa.array(list(x.astype(np.float64)), pa.large_list(pa.float64()))
    pq.write_table(pa.table({"id": np.arange(10, 20) * 1.0, "embedding": wide}), tmp_path / "emb" / "part-3.parquet")
    raw = {"input": {"uri": str(tmp_path / "emb")}, "output": {"uri": str(tmp_path / "out")}, "clustering": {"k": 3}}
    summary = run_cluster(parse_config(ClusterConfig, raw))
    assert (summary["rows"], summary["dim"], sum(summary["sizes"])) == (50, 8, 50)
    ids = pq.read_table(tmp_path / "out" / "assignments").column("id")
    assert ids.type == pa.string() and {"0", "19", "b0"} <= set(ids.to_pylist())  # 19.0 is '19', as ids are


def test_files_of_two_models_of_one_width_are_refused_naming_both(ray_session, tmp_path):
    """Two embed runs in one input folder, of two models that are both 8 wide here (e5-small and MiniLM are both 384
    wide): clustered together without a word, their cosines meaningless. Refused now, before any k-means, naming
    both files and what differs; the same model loaded from another folder passes the input check."""
    (tmp_path / "emb").mkdir()
    for f, model in enumerate([".models/e5", ".models/minilm"]):
        rows = pa.table({"id": [f"f{f}-{i}" for i in range(20)], "embedding": pa.array(list(unit_rows(20, 8, f)))})
        meta = {"rayembed.model": model, "rayembed.pooling": "mean", "rayembed.prompt": ""}
        pq.write_table(rows.replace_schema_metadata(meta), tmp_path / "emb" / f"part-{f}.parquet")
    raw = {"input": {"uri": str(tmp_path / "emb")}, "output": {"uri": str(tmp_path / "out")}, "clustering": {"k": 3}}
    with pytest.raises(
        EmbeddingFileError, match=r"mixes embeddings of different recipes \(model: '.models/e5' vs"
    ) as e:
        run_cluster(parse_config(ClusterConfig, raw))
    assert "part-0.parquet has model .models/e5" in str(e.value) and "part-1.parquet has model .models/minilm" in str(
        e.value
    )
    table = pq.read_table(tmp_path / "emb" / "part-1.parquet")
    meta = {"rayembed.model": "/abs/.models/e5/", "rayembed.pooling": "mean", "rayembed.prompt": ""}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "emb" / "part-1.parquet")
    root = resolve(str(tmp_path / "emb"), StorageConfig())
    paths = {"embedding": ("embedding",), "id": ("id",)}
    files = ["part-0.parquet", "part-1.parquet"]
    check_input(root, files, "embedding", paths, "id", False, 8, parse_config(ClusterConfig, raw).compute)  # no error


def bad_vector_input(tmp_path, bad: str):
    """An embeddings folder whose bad vector only a Ray Data task finds (`bad`: nan, other_dim) and its config file;
    returns (config file, the error line the job ends with)."""
    (tmp_path / "emb").mkdir()
    x = unit_rows(40, 8, 5)
    if bad == "nan":
        x[17, 3] = np.nan
    pq.write_table(
        pa.table({"id": [f"a{i}" for i in range(40)], "embedding": pa.array(list(x))}), tmp_path / "emb" / "a.parquet"
    )
    if bad == "other_dim":
        y = unit_rows(20, 16, 6)
        pq.write_table(
            pa.table({"id": [f"b{i}" for i in range(20)], "embedding": pa.array(list(y))}),
            tmp_path / "emb" / "b.parquet",
        )
    config_file = tmp_path / "cluster.yaml"
    config_file.write_text(
        f"input: {{uri: {tmp_path / 'emb'}}}\noutput: {{uri: {tmp_path / 'out'}}}\nclustering: {{k: 2}}\n"
    )
    expected = {
        "nan": f"error: {tmp_path / 'emb' / 'a.parquet'}: embedding of a17 is zero or not finite",
        "other_dim": f"error: {tmp_path / 'emb' / 'b.parquet'}: embedding column 'embedding': the vector of 'b0' has "
        f"16 values, the input's first (in {tmp_path / 'emb' / 'a.parquet'}) has 8",
    }[bad]
    return config_file, expected


def test_a_bad_vector_found_in_a_ray_task_is_one_error_line_naming_its_id(tmp_path):
    """`python -m jobs.cluster` as a user runs it. A NaN vector, or a second file of another model's dim, is found
    inside a Ray Data map_batches task; Ray wrapped our error in its UserCodeException and dropped the cause on the
    way to the driver, so the job ended in a 70-line traceback (exit 1) whose message said "row 30 has 16 values,
    row 0 has 8" for the dims: neither a row of the input nor what to do. Here the second file of another dim;
    the NaN vector (the same way out of a task, another check) in-process below: each was a process of its own,
    a Python and Ray start."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    config_file, expected = bad_vector_input(tmp_path, "other_dim")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cluster", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[-1].startswith(expected), lines[-5:]


def test_a_nan_vector_found_in_a_ray_task_is_one_error_line_naming_its_id(ray_session, tmp_path, capsys):
    """The NaN vector of the test above, through jobs.cluster's main on the session Ray: exit 1, one error line."""
    config_file, expected = bad_vector_input(tmp_path, "nan")
    assert main(["--config", str(config_file)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1].startswith(expected), lines[-5:]
    assert not (tmp_path / "out" / "centroids.parquet").exists()


@pytest.mark.parametrize("odd", ["cut", "not_parquet", "npy", "width", "nulls", "empty_vector"])
def test_an_odd_embeddings_file_fails_naming_it_before_any_k_means(ray_session, tmp_path, odd):
    """A cut or non-Parquet embeddings file crashed the job with pyarrow's traceback (ArrowInvalid, nothing said
    what to do); vectors of another width or a null vector failed inside a Ray Data block with the row's id but not
    its file. Now each is one `error:` naming the file and what to do, before any k-means work; an empty file
    among them is fine. A file of another format (JSON, another tool's NumPy .npy) is named as such, with how to
    write it as Parquet: it was called 'cut short or corrupt (an interrupted copy or upload?)'."""
    emb = tmp_path / "emb"
    emb.mkdir()
    pq.write_table(embeddings_table([f"a{i}" for i in range(20)], 8), emb / "part-0.parquet")
    (emb / "part-1.parquet").write_bytes(odd_embedding_files([f"x{i}" for i in range(5)], 8)[odd])
    pq.write_table(embeddings_table([], 8, fixed=False), emb / "part-2.parquet")
    raw = {"input": {"uri": str(emb)}, "output": {"uri": str(tmp_path / "out")}, "clustering": {"k": 2}}
    with pytest.raises(EmbeddingFileError) as err:
        run_cluster(parse_config(ClusterConfig, raw))
    message = user_message(err.value)
    assert isinstance(err.value, UserError) and str(emb / "part-1.parquet") in message, message
    says = {
        "cut": "does not skip it",
        "not_parquet": "looks like JSON text",
        "npy": "looks like a NumPy .npy array",
        "width": f"has 4 values, the input's first (in {emb / 'part-0.parquet'}) has 8",  # both files: found which
        "empty_vector": "1 empty vectors (no values; the first: 'x0')",  # it was 'has 0 values ... other models'
    }
    assert says.get(odd, "x0") in message, message
    assert not (tmp_path / "out" / "centroids.parquet").exists()


def test_an_empty_clusters_mean_cosine_is_null_not_nan(tmp_path):
    """k above the data's distinct directions leaves a cluster empty: centroids.parquet wrote mean_cosine NaN."""
    from pipeline.clustering.job import write_centroids
    from pipeline.storage import Location

    centroids = np.eye(3, 4, dtype=np.float32)
    stats = pa.table({"cluster_id": [0, 1], "size": [4, 2], "cos_sum": [3.6, 2.0]})  # cluster 2 got no row
    out = Location(pafs.LocalFileSystem(), str(tmp_path), str(tmp_path))
    assert write_centroids(centroids, stats, out).tolist() == [4, 2, 0]
    table = pq.read_table(tmp_path / "centroids.parquet")
    assert table.column("mean_cosine").to_pylist() == [pytest.approx(0.9), 1.0, None]


def test_a_resume_goes_on_after_a_touch_of_the_input_and_refuses_an_edit(ray_session, tmp_path):
    """A `touch` of an embeddings file (or a chmod, a copy with new times) between a crash and its rerun moves its
    change token: the resume was refused and the fit lost. The run records each local input file's sha256
    (pipeline.input_contents), so the rerun resumes from the recorded fit; an edit of the same size is refused
    naming the file."""
    (tmp_path / "emb").mkdir()
    part = tmp_path / "emb" / "part-0.parquet"
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(30)], "embedding": pa.array(list(unit_rows(30, 8, 5)))}), part
    )
    raw = {"input": {"uri": str(tmp_path / "emb")}, "output": {"uri": str(tmp_path / "out")}, "clustering": {"k": 3}}
    cfg = parse_config(ClusterConfig, raw)
    first = run_cluster(cfg)

    def unfinish() -> None:  # as if killed after its fit, before its summary
        for done in ("_SUCCESS", "summary.json"):
            (tmp_path / "out" / done).unlink()

    unfinish()
    stat = part.stat()
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touch
    again = run_cluster(cfg)
    assert (again["resumed"], again["stages_reused"], again["sizes"]) == (True, ["fit"], first["sizes"])
    unfinish()
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0xFF  # a vector's byte: the footer the job reads before the check is intact
    part.write_bytes(bytes(data))
    with pytest.raises(OutputExistsError, match=r"input\.listing: 1 files -> 1 files \(changed part-0\.parquet"):
        run_cluster(cfg)


def test_a_resume_across_a_change_of_a_rule_the_run_does_not_use_goes_on(tmp_path):
    """04db3b8 bumped rules.dedup 3 -> 4: an unfinished run without clustering.dedup recorded before it was refused
    'rules.dedup: 3: ... -> 4: ...' (start over), though dedup decides nothing of its results; so a center rule
    without center_by. Such rules are taken as recorded (rules.applied): the check passes and the fingerprint
    commit.begin compares is the recorded one. With dedup on, the change still refuses."""
    from pipeline import commit
    from pipeline.clustering import resume
    from pipeline.fingerprint import differences
    from pipeline.rules import check_rules
    from pipeline.storage import list_inputs, resolve

    (tmp_path / "emb").mkdir()
    part = tmp_path / "emb" / "part-0.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(6)], "embedding": pa.array(list(unit_rows(6, 4, 5)))}), part)
    raw = {"input": {"uri": str(tmp_path / "emb")}, "output": {"uri": str(tmp_path / "out")}, "clustering": {"k": 2}}
    cfg = parse_config(ClusterConfig, raw)
    out = resolve(cfg.output.uri, cfg.storage)
    listed = list_inputs(cfg.input.uri, cfg.storage)[1]
    older = resume.cluster_fingerprint(cfg, listed) | {"rules.dedup": "3: an older dedup", "rules.center": "0: old"}
    commit.begin(out, "cluster", False, older)  # an older version's run that recorded its fit
    commit.mark_unit(out, resume.FIT_STAGE, {"sizes": [3, 3]})
    recorded = commit.check_available(out, False, resumable=True)
    rules = resume.applied_cluster_rules(cfg, recorded)
    check_rules(out, recorded, rules, "cluster")
    assert differences(older, resume.cluster_fingerprint(cfg, listed, rules)) == []
    assert commit.begin(out, "cluster", False, resume.cluster_fingerprint(cfg, listed, rules))  # resumed

    deduped = parse_config(ClusterConfig, {**raw, "clustering": {"k": 2, "dedup": {"eps": 0.05}}})
    with pytest.raises(OutputExistsError, match=r"rules\.dedup: 3: an older dedup -> 4: "):
        check_rules(out, recorded, resume.applied_cluster_rules(deduped, recorded), "cluster")


def test_a_resume_across_a_change_of_the_codes_rules_is_refused_naming_the_rule(tmp_path, monkeypatch):
    """Rules of the code that decide the clusters changed without a configuration key changing (6b1fcb7 divides
    float16-stored rows by their norm, d83483b floors dedup's eps, 6498eba/dc78bdf stop k-means at the fixed point):
    a run whose fit was recorded by the older code was resumed by the newer, which assigned the rows to the old fit
    under the new rules. The run now records the code's rules (resume.cluster_rules), and a resume under other
    rules is refused naming each one, before any Ray or embedding work: here a run recorded before rules were, and
    one whose dedup floor differs. A run that recorded no stage starts over (commit.begin)."""
    from pipeline import commit
    from pipeline.clustering import dedup, resume
    from pipeline.storage import list_inputs, resolve

    (tmp_path / "emb").mkdir()
    part = tmp_path / "emb" / "part-0.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(6)], "embedding": pa.array(list(unit_rows(6, 4, 5)))}), part)
    clustering = {"k": 2, "dedup": {"eps": 0.05}}  # dedup's rule is compared when dedup is on
    raw = {"input": {"uri": str(tmp_path / "emb")}, "output": {"uri": str(tmp_path / "out")}, "clustering": clustering}
    cfg = parse_config(ClusterConfig, raw)
    out = resolve(cfg.output.uri, cfg.storage)
    fingerprint = resume.cluster_fingerprint(cfg, list_inputs(cfg.input.uri, cfg.storage)[1])
    assert fingerprint["rules.dedup"] == (
        "4: duplicates at cosine >= 1 - max(eps, 1e-05) within a cluster, joined transitively; the rows kept by the "
        "pieces of a split cluster compared again up to max_cluster_rows of them; exact copies always joined"
    )
    older = {k: v for k, v in fingerprint.items() if not k.startswith("rules.")}
    commit.begin(out, "cluster", False, older)  # an older version's run that recorded its fit
    commit.mark_unit(out, resume.FIT_STAGE, {"sizes": [3, 3]})
    with pytest.raises(OutputExistsError) as refused:
        run_cluster(cfg)
    message = str(refused.value)
    assert "rules.vectors: (absent) -> 2: a row further than 1e-06 from unit length" in message, message
    assert "rules.kmeans: (absent) -> 3: " in message and "set output.overwrite=true to start over" in message

    (tmp_path / "out" / "_run" / "fingerprint.json").unlink()
    for leftover in (tmp_path / "out").rglob("*.json"):
        leftover.unlink()
    commit.begin(out, "cluster", False, fingerprint)  # this version's run, then a later version's floor
    commit.mark_unit(out, resume.FIT_STAGE, {"sizes": [3, 3]})
    monkeypatch.setattr(dedup, "EPS_FLOOR", 1e-4)
    with pytest.raises(OutputExistsError, match=r"rules\.dedup: 4: .*max\(eps, 1e-05\).* -> 4: .*max\(eps, 0\.0001\)"):
        run_cluster(cfg)
