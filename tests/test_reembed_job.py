"""End to end on local Ray: incremental runs on the S3 server, model versions, killed actor, killed driver, races.

Every test compares what a reader gets through the published manifest (pipeline.reembed.open_current) with the
corpus: each id exactly once, and after a kill the same ids and vectors as an uninterrupted run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, SAMPLE

from pipeline.config import StorageConfig
from pipeline.lease import LEASE
from pipeline.model_loading import ModelLoadError
from pipeline.reembed import NoPublishedVersionError, job, list_versions, open_current, read_current
from pipeline.reembed.config import ReembedConfig
from pipeline.reembed.job import run_reembed
from pipeline.reembed.manifest import current_manifest
from pipeline.reembed.planner import Plan
from pipeline.reembed.sources import local_source
from pipeline.run_summary import human_summary
from pipeline.storage import resolve

pytestmark = pytest.mark.slow
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def config(model_dir, input_uri, output_uri, endpoint=None, **sections) -> ReembedConfig:
    raw = {
        "input": {"uri": input_uri, "format": "jsonl", "id_column": "id"},
        "output": {"uri": output_uri, "keep_columns": ["lang"]},
        "model": {"name_or_path": str(model_dir), "max_tokens": 96},
        "batching": {"max_tokens_per_batch": 2048, "rows_per_block": 16},
        "storage": {"endpoint_url": endpoint} if endpoint else {},
        "reembed": {"lease_settle_seconds": 0.2, "lease_ttl_seconds": 120},
        **sections,
    }
    return ReembedConfig.model_validate(raw)


def jsonl(records) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def split(records, n):
    size = len(records) // n
    return [records[i * size : (i + 1) * size] for i in range(n)]


def published(uri, endpoint=None, fingerprint=None) -> dict[str, np.ndarray]:
    """id -> vector of the published version; asserts every id appears once."""
    table = open_current(uri, StorageConfig(endpoint_url=endpoint), fingerprint).to_table()
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id appears twice"
    return dict(zip(ids, np.stack(table.column("embedding").to_numpy(zero_copy_only=False))))


def test_incremental_runs_on_s3(ray_session, tiny_models, s3_bucket, s3_server, proxy):
    """Nightly runs over an S3 prefix: the first embeds everything, an unchanged prefix nothing, an edited object
    only itself (the others' vectors reused), a deleted object leaves the version, an object copied to a new key
    and deleted at the old one is a move (no model work).

    The store's ETags are no MD5 of the bytes (SSE-KMS / SSE-C objects, stores with ETags of their own: the fault
    proxy rewrites every ETag, s3_fault_proxy.etag_salt), and they change at every upload of the same bytes (a
    nightly sync): the bytes cannot give the recorded ETag, so every run took every object for changed and
    embedded it again. The run that first finds them moved records their sha256 (read once to compare with the
    ETag anyway), and later uploads of the same bytes are found the same by it; an edit at the same size is still a
    change. (It was a test of three runs of its own, its first a second first version.)

    The deleted object and the moved one are one night (they were a run each)."""
    client, bucket = s3_bucket
    parts = split(RECORDS[:20], 4)

    def upload(night: str, bodies: dict[int, bytes]) -> None:
        for i, body in bodies.items():
            client.put_object(Bucket=bucket, Key=f"corpus/part-{i}.jsonl", Body=body)
        proxy.etag_salt = night

    bodies = {i: jsonl(part) for i, part in enumerate(parts)}
    upload("night-1", bodies)
    cfg = config(tiny_models["gemma3"], f"s3://{bucket}/corpus", f"s3://{bucket}/emb", proxy.url)
    emb = f"s3://{bucket}/emb"

    first = run_reembed(cfg)
    assert first["files"] == {
        "new": 4,
        "changed": 0,
        "unchanged": 0,
        "deleted": 0,
        "resumed": 0,
        "to_embed": 4,
        "rewritten": 0,
        "moved": 0,
        "retokened": 0,
        "total": 4,
    }
    assert (first["rows_embedded"], first["rows_reused"], first["generation"]) == (20, 0, 1)
    v1 = published(emb, s3_server)
    assert sorted(v1) == sorted(r["id"] for r in RECORDS[:20])

    second = run_reembed(cfg)
    assert (second["rows_embedded"], second["rows_reused"], second["published"]) == (0, 20, None)
    assert second["files"]["unchanged"] == 4

    upload("night-2", bodies)  # the same bytes, new ETags: no content recorded yet, embedded again, once
    synced = run_reembed(cfg)
    assert (synced["files"]["changed"], synced["rows_embedded"]) == (4, 20)
    v2 = published(emb, s3_server)

    first_row = parts[2][0]
    edited = [dict(first_row, text=first_row["text"].replace(" ", "_", 1)), *parts[2][1:]]
    assert len(jsonl(edited)) == len(bodies[2])  # the same size: only the content tells the edit
    upload("night-3", {**bodies, 2: jsonl(edited)})  # the others: the same bytes under new ETags
    third = run_reembed(cfg)
    assert (third["files"]["changed"], third["files"]["unchanged"]) == (1, 3)  # old code: 4, 0
    assert (third["rows_embedded"], third["rows_reused"], third["rows_dropped"]) == (5, 15, 5)
    v3 = published(emb, s3_server)
    assert sorted(v3) == sorted(v1)
    assert all(np.array_equal(v3[r["id"]], v2[r["id"]]) for r in parts[0])  # reused, not recomputed
    assert not np.allclose(v3[first_row["id"]], v2[first_row["id"]])

    for name, run in zip(("first", "no-change", "synced", "one-edited"), (first, second, synced, third)):
        print(f"REEMBED s3 {name}: files {run['files']} embedded {run['rows_embedded']} reused {run['rows_reused']}")
    # one night: an object deleted, and one copied to a new key (the same ETag) and deleted at the old one: a move,
    # no model work (old code: its rows embedded again)
    client.delete_object(Bucket=bucket, Key="corpus/part-3.jsonl")
    client.copy_object(Bucket=bucket, Key="corpus/2024/part-0.jsonl", CopySource=f"{bucket}/corpus/part-0.jsonl")
    client.delete_object(Bucket=bucket, Key="corpus/part-0.jsonl")
    fourth = run_reembed(cfg)
    files = fourth["files"]
    assert (files["deleted"], files["moved"], fourth["rows_embedded"]) == (2, 1, 0)  # the moved one counts deleted
    assert (fourth["rows_dropped"], fourth["rows_total"]) == (5, 15)  # the deleted object's rows alone
    v4 = published(emb, s3_server)
    assert sorted(v4) == sorted(r["id"] for p in parts[:3] for r in p)
    assert all(np.array_equal(v4[r["id"]], v2[r["id"]]) for r in parts[0])
    print(
        f"REEMBED s3 one-deleted-one-moved: files {fourth['files']} embedded {fourth['rows_embedded']} "
        f"total {fourth['rows_total']} dropped {fourth['rows_dropped']}"
    )
    summary = json.loads(client.get_object(Bucket=bucket, Key="emb/_summary.json")["Body"].read())
    assert summary["generation"] == 4 and summary["files"]["moved"] == 1


def local_corpus(root: Path, files: int, rows: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(split(RECORDS[: files * rows], files)):
        (root / f"part-{i:02d}.jsonl").write_bytes(jsonl(part))
    return root


def test_weights_cut_short_fail_before_anything_runs(tiny_models, tmp_path):
    """As for the embed job: the driver's check_model names the file before Ray or the lease are touched."""
    model = tmp_path / "model"
    shutil.copytree(tiny_models["bert"], model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    corpus = local_corpus(tmp_path / "corpus", 1, 4)
    with pytest.raises(ModelLoadError, match="model.safetensors do not load"):
        run_reembed(config(model, str(corpus), str(tmp_path / "emb")))
    assert not (tmp_path / "emb").exists()


FILES, ROWS = 6, 20


def assert_same_rows(got: dict, clean: dict) -> None:
    assert sorted(got) == sorted(clean)
    for key, vector in clean.items():
        np.testing.assert_allclose(got[key], vector, atol=1e-4)


def staged_markers(out: Path) -> list[Path]:
    return sorted(out.glob("_versions/*/_staged/*.json"))


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def busy_embed_actor_pid() -> int | None:
    """Pid of an embedding actor of this session's Ray (its processes descend from this one) running a batch.

    Ray titles an actor process `ray::<repr>.<method>` while it runs a method, so `.submit` means mid-batch.
    """
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if "MapBatches(EmbedActor)).submit" in " ".join(proc.cmdline()):
                return proc.pid
        except psutil.NoSuchProcess:
            continue
    return None


def subprocess_run(cfg_path: Path, gcs: str, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jobs.reembed", "--config", str(cfg_path), "--set", f"compute.ray_address={gcs}"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_config(tmp_path: Path, cfg: ReembedConfig) -> Path:
    import yaml

    path = tmp_path / "reembed.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    return path


def rerun_killing_an_embed_actor(cfg: ReembedConfig, out: Path) -> tuple[dict, int, int]:
    """run_reembed(cfg) in a thread; SIGKILLs one of its embedding actors while it runs a batch (a preempted or
    OOM-killed worker). Returns (summary, the killed pid, files staged at the kill)."""
    result: dict = {}

    def run():
        try:
            result.update(run_reembed(cfg))
        except Exception as err:  # noqa: BLE001 (a thread cannot raise into pytest; asserted below)
            result["error"] = err

    runner = threading.Thread(target=run)
    runner.start()
    pid = wait_for(busy_embed_actor_pid, 300, "the embedding actor to run a batch")
    os.kill(pid, signal.SIGKILL)
    staged = len(staged_markers(out))
    runner.join(timeout=600)
    assert "error" not in result, f"the run failed after its actor was killed: {result.get('error')!r}"
    return result, pid, staged


def lease_holder_pid(out: Path) -> int | None:
    """The pid in the output's lease, None while there is none (or it is being written)."""
    try:
        return json.loads((out / LEASE).read_text())["pid"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def test_killed_driver_then_rerun_through_a_killed_embed_actor(ray_session, tiny_models, tmp_path, capsys):
    """`python -m jobs.reembed` holds its output: a second run of the same config meanwhile (two cron jobs, a rerun
    while the first runs) exits 3 naming it and leaves its lease alone. The driver SIGKILLed after its first staged
    file: nothing is published; the same config resumes the staged files, and an embedding actor SIGKILLed
    mid-batch in that rerun loses and duplicates nothing: the published rows are an uninterrupted run's, every id
    once. (One driver process: the refusal was two more `python -m jobs.reembed` started at once, one of which ran
    the reference, then an in-process run, now the rows embedded by the stage UDFs in this process; two runs started
    at once on one output: test_lease.)"""
    from robustness_helpers import embedded_here, wait_for_driver_teardown

    from jobs import reembed as reembed_entry

    corpus = local_corpus(tmp_path / "corpus", FILES, ROWS)
    out = tmp_path / "emb"
    cfg = config(tiny_models["qwen3"], str(corpus), str(out))
    # the reference: the rows embedded in this process by the job's own stage UDFs (no run, no pool to start)
    rows = [json.loads(line) for f in sorted(corpus.iterdir()) for line in f.read_text().splitlines()]
    clean = embedded_here(cfg, rows)
    assert len(clean) == FILES * ROWS
    cfg_path = write_config(tmp_path, cfg)
    gcs = ray_session.get_runtime_context().gcs_address
    driver = subprocess_run(cfg_path, gcs, out)
    try:
        # the lease is taken before the listing; Ray Data and the model come after it: the refusal is seconds
        # before the driver could finish
        wait_for(lambda: lease_holder_pid(out) == driver.pid or driver.poll() is not None, 600, "the lease")
        assert reembed_entry.main(["--config", str(cfg_path), "--set", f"compute.ray_address={gcs}"]) == 3
        refused = capsys.readouterr().err
        assert f"error: output {out} is being written by another reembed run" in refused, refused[-2000:]
        assert f"pid {driver.pid}," in refused and lease_holder_pid(out) == driver.pid
        wait_for(lambda: staged_markers(out) or driver.poll() is not None, 600, "a first completed file")
    finally:
        driver.send_signal(signal.SIGKILL)
        _, err = driver.communicate()
    assert driver.returncode == -signal.SIGKILL, f"the driver ended before the kill: {err[-2000:]}"
    # its actors gone, so that the actor killed below is the rerun's (both descend from this process's Ray)
    wait_for_driver_teardown(driver.pid)
    staged = len(staged_markers(out))
    assert 0 < staged < FILES
    with pytest.raises(NoPublishedVersionError):
        read_current(str(out))  # a killed run publishes nothing

    # same host, dead pid: the lease is taken over at once
    rerun, pid, staged_at_actor_kill = rerun_killing_an_embed_actor(cfg, out)
    print(
        f"REEMBED driver-kill: {staged}/{FILES} files staged at kill; rerun {rerun['files']}, "
        f"rows embedded {rerun['rows_embedded']} reused {rerun['rows_reused']}; actor pid {pid} killed with "
        f"{staged_at_actor_kill}/{FILES} files staged"
    )
    assert staged_at_actor_kill < FILES, "the actor kill came after the last file was complete"
    assert rerun["files"]["resumed"] >= staged and rerun["files"]["total"] == FILES
    assert rerun["rows_reused"] == rerun["files"]["resumed"] * ROWS
    assert rerun["rows_embedded"] + rerun["rows_reused"] == FILES * ROWS  # the work was done once
    assert staged_markers(out) == []  # consumed by the publish
    assert_same_rows(published(str(out)), clean)


def rejects_of(out: str) -> dict[tuple[str, int], str]:
    """(source, row) -> reason over the published version's reject files."""
    current = json.loads((Path(out) / "_current.json").read_text())
    manifest = json.loads((Path(out) / current["manifest"]).read_text())
    root = Path(out) / "_versions" / manifest["fingerprint"]
    reasons = {}
    for e in manifest["entries"]:
        for rel in e["rejects"]:
            t = pq.read_table(root / rel)
            reasons |= dict(
                zip(zip(t.column("source").to_pylist(), t.column("row").to_pylist()), t.column("reason").to_pylist())
            )
    return reasons


def test_duplicate_ids_as_the_embed_job(ray_session, tiny_models, tmp_path):
    """input.duplicate_ids means what it means for jobs.embed. A repeated id (in one file, across files) was
    published twice. First copies move with the corpus: a new file that sorts first takes an id from an unchanged
    file (which is embedded again), deleting it gives the id back. (input.max_reject_fraction, which this test
    also ran: test_a_kept_column_without_values_so_far_...)

    Kept JSON values of mixed types across files (meta: a string in a.jsonl, an integer in b.jsonl) are kept as JSON
    text, as the embed job keeps them: the run failed (ArrowTypeError 'Unable to merge: Field meta has incompatible
    types: string vs int64', retried 4 times). It was a test of its own run. A new file that would change the type
    the published version stores fails naming it: test_a_version_without_rows_... ."""
    IDS = {"x1", "x2", "x3", "x4", "z1"}
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes(
        jsonl([{"id": "x1", "text": "one", "meta": "en"}, {"id": "x2", "text": "two"}, {"id": "x1", "text": "again"}])
        + jsonl([{"id": "n", "text": None}, {"id": "x3", "text": "three"}, {"id": "x4", "text": "four"}])
    )
    (corpus / "b.jsonl").write_bytes(jsonl([{"id": "x2", "text": "two again"}, {"id": "z1", "text": "zed", "meta": 5}]))
    out = str(tmp_path / "emb")
    cfg = config(tiny_models["bert"], str(corpus), out, output={"uri": out, "keep_columns": ["meta"]})

    first = run_reembed(cfg)
    assert set(published(out)) == IDS  # published() asserts each id once
    table = open_current(out).to_table()
    metas = dict(zip(table.column("id").to_pylist(), table.column("meta").to_pylist()))
    assert (metas["x1"], metas["z1"], metas["x2"]) == ('"en"', "5", None)
    assert (first["rows_in"], first["rows_total"], first["rows_rejected_total"]) == (8, 5, 3)
    assert rejects_of(out) == {
        ("a.jsonl", 2): "duplicate id (first at a.jsonl row 0)",
        ("a.jsonl", 3): "null text",
        ("b.jsonl", 0): "duplicate id (first at a.jsonl row 1)",
    }

    (corpus / "0.jsonl").write_bytes(jsonl([{"id": "z1", "text": "first zed"}]))
    second = run_reembed(cfg)
    assert (second["files"]["new"], second["files"]["changed"], second["files"]["unchanged"]) == (1, 1, 1)
    assert set(published(out)) == IDS
    assert rejects_of(out)[("b.jsonl", 1)] == "duplicate id (first at 0.jsonl row 0)"

    (corpus / "0.jsonl").unlink()
    third = run_reembed(cfg)
    assert (third["files"]["deleted"], third["files"]["changed"], third["rows_embedded"]) == (1, 1, 1)
    assert ("b.jsonl", 1) not in rejects_of(out) and set(published(out)) == IDS
    assert not (Path(out) / "_versions" / third["fingerprint"] / "_duplicates").exists()
    # the id digests of the listed files (a.jsonl, b.jsonl) are kept for the next night; the deleted file's are gone
    assert len(list((Path(out) / "_versions" / third["fingerprint"] / "_ids").iterdir())) == 2


def test_a_version_without_rows_has_the_schema_and_a_corrupt_file_is_one_reject_row_until_fixed(
    ray_session, tiny_models, tmp_path
):
    """A version that stores no row (an empty file, every row rejected) publishes a schema-only Parquet file, as the
    embed job writes part-empty.parquet: read_current listed no file (DuckDB's read_parquet fails on none) and
    open_current gave a table without columns. output.token_columns (num_tokens, truncated) was ignored.
    output.dimensions (here the model's saved truncate_dim, its default) truncates and re-normalizes the stored
    vectors as in the embed job; the re-embed job stored every dimension and recorded the truncated count.

    A corrupt input file (a Parquet file cut short by an interrupted copy, a cut .gz) failed the whole nightly run
    when its read task reached it, and every later night failed at the same file. As in the embed job, each is now
    one reject row naming the file and what to do, the other files are published, rows in = written + rejected;
    the pre-passes (duplicate ids, kept-column types) let it through; the unchanged corrupt file stays one reject,
    and once it is copied again (fixed) the next run embeds it. (That was test_a_corrupt_file_is_one_reject_row_...,
    two runs of their own: its corrupt files are here those of the version without rows.)"""
    model = tmp_path / "model"
    shutil.copytree(tiny_models["bert"], model)
    (model / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {}, "truncate_dim": 16}))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "empty.jsonl").write_bytes(b"")
    (corpus / "blank.jsonl").write_bytes(jsonl([{"id": "b1", "text": " ", "lang": "en"}, {"id": "b2", "text": ""}]))
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["p0", "p1"], "text": ["one", "two"]}), buf)
    whole = buf.getvalue()
    (corpus / "b-cut.parquet").write_bytes(whole[: len(whole) // 2])
    (corpus / "c-cut.jsonl.gz").write_bytes(
        gzip.compress(jsonl([{"id": f"z{i}", "text": "t" * 50} for i in range(200)]))[:300]
    )
    out = str(tmp_path / "emb")
    cfg = config(model, str(corpus), out)  # keeps lang: the kept-type pre-pass reads every file too
    cfg = cfg.model_copy(
        update={
            "input": cfg.input.model_copy(update={"format": None, "max_reject_fraction": 1.0}),
            "output": cfg.output.model_copy(update={"token_columns": True}),
        }
    )
    summary = run_reembed(cfg)
    assert (summary["rows_in"], summary["rows_total"], summary["rows_rejected_total"]) == (4, 0, 4)
    assert (summary["status"], summary["files_rejected"]) == ("ok", 2)
    files = read_current(out)
    assert len(files) == 1 and files[0].endswith("part-empty.parquet")
    table = open_current(out).to_table()
    assert table.num_rows == 0 and table.column_names == ["id", "embedding", "num_tokens", "truncated", "lang"]
    assert pq.read_schema(files[0]).metadata[b"rayembed.fingerprint"].decode() == summary["fingerprint"]
    assert open_current(out).schema.field("embedding").type.list_size == 16  # the schema-only file too
    reasons = {k: v for k, v in rejects_of(out).items() if "cut" in k[0]}
    assert sorted(reasons) == [("b-cut.parquet", 0), ("c-cut.jsonl.gz", 0)]
    for (name, _), reason in reasons.items():
        assert reason.startswith(f"unreadable file: cannot read {corpus}/{name} as "), reason
        assert reason.endswith("embed it on its own (input.uri: the file, another output.uri)"), reason
    again = run_reembed(cfg)  # nothing changed: the rejects stay, nothing is read again
    assert (again["files"]["unchanged"], again["rows_embedded"], again["rows_rejected_total"]) == (4, 0, 4)

    good = [{"id": f"g{i}", "text": f"hello there {i}", "lang": "en"} for i in range(3)]
    (corpus / "good.jsonl").write_bytes(jsonl(good))
    (corpus / "b-cut.parquet").write_bytes(whole)  # copied again from its source
    fixed = run_reembed(cfg)
    assert (fixed["files"]["changed"], fixed["rows_embedded"], fixed["files_rejected"]) == (1, 5, 0)
    table = open_current(out).to_table()
    assert sorted(table.column("id").to_pylist()) == ["g0", "g1", "g2", "p0", "p1"]
    assert min(table.column("num_tokens").to_pylist()) > 0
    vectors = np.stack(list(published(out).values()))
    assert vectors.shape == (5, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert [k for k in rejects_of(out) if "cut" in k[0]] == [("c-cut.jsonl.gz", 0)]
    assert (fixed["rows_in"], fixed["rows_total"], fixed["rows_rejected_total"], fixed["files_rejected_total"]) == (
        8,
        5,
        3,
        1,
    )
    assert "(8 rows in, 3 rejected, of them 1 unreadable files, one row each)" in human_summary(fixed)

    # the refusal of a type change (mixed JSON values kept: test_duplicate_ids_...): the version stores lang as
    # strings, a new file whose lang values are integers would make it JSON text; refused naming it, nothing published
    from pipeline.kept_columns import KeptColumnTypeError

    before = (Path(out) / "_current.json").read_text()
    (corpus / "c.jsonl").write_bytes(jsonl([{"id": "3", "text": "again", "lang": 7}]))
    with pytest.raises(KeptColumnTypeError, match=r"kept column 'lang': c.jsonl needs JSON text .* stores type string"):
        run_reembed(cfg)
    assert (Path(out) / "_current.json").read_text() == before


def test_a_kept_column_without_values_so_far_takes_the_type_of_its_first_values(
    ray_session, tiny_models, tmp_path, caplog
):
    """A kept field the corpus has not filled yet (null or absent in every file) constrains nothing: the night a
    file brings its first values, their type becomes the column's, the version's other files are written again
    with it (their vectors reused: no model work, bit-identical) and the version reads as one table. It was
    recorded as `string`, and every later run with such a file failed: "kept column 'license': c.jsonl needs JSON
    text (values of mixed types), but the published version stores type string". Once the column has values, a
    file of another type is still refused.

    The night the first values arrive, the run is stopped by the reject guard (input.max_reject_fraction over the
    version's rows, reused files' rejects counted, as for jobs.embed: a corpus rejected past it was published with
    exit 0): nothing is published, the summary says failed, and the same command with a raised fraction publishes
    the staged files without embedding again (that was test_duplicate_ids_...'s, two runs of its own). That rerun
    has nothing left to embed: the staged file's types are decided again, and the version's other files are written
    again with them. The resumed run used to publish the staged int64 file next to files whose column is a string
    of nulls: a version that does not read as one table. Another file that run staged (d.jsonl) is moved before the
    rerun: moves were paired with published entries only, so the rerun embedded it again. The staged entries are
    now paired too, their outputs reused. (The resume was test_first_kept_values_in_a_resumed_file_..., a first
    version and two runs of its own.)

    The same logical type in another width or unit across nights (p.parquet, then q.parquet the night the first
    values arrive): a version published with an int32 column (its only file's type) refused every later file holding
    int64, float32 next to float64, decimal(10, 2) next to decimal(12, 2), timestamp[ms] next to [us] ("needs type
    int64, but the published version stores type int32"). A type every stored value casts to exactly is taken, with a
    warning, and the version's other files are written again with it, so that it reads as one table. A type that
    could change stored values (int64 as float64 rounds above 2**53) is refused naming the file, the column, both
    types and why, and nothing is published. (That was test_a_kept_column_arriving_wider_..., two runs of its own.)"""
    from pipeline.kept_columns import KeptColumnTypeError
    from pipeline.reject_guard import TooManyRejectsError

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{"id": "a1", "text": "hello", "license": None}, {"id": "a2", "text": "x"}, {"id": "a3", "text": " "}]
    (corpus / "a.jsonl").write_bytes(jsonl(rows))  # a3: a reject row, its file is copied with the outputs
    (corpus / "b.jsonl").write_bytes(jsonl([{"id": "b1", "text": "world", "license": None}]))
    out = str(tmp_path / "emb")

    def parquet(name, ids, n, t):
        table = pa.table({"id": ids, "text": [f"text {i}" for i in ids], "n": n, "t": t})
        pq.write_table(table, corpus / name)

    parquet("p.parquet", ["p1", "p2"], pa.array([1, -(2**31)], pa.int32()), pa.array([1, 2], pa.timestamp("ms")))

    def cfg(max_reject_fraction: float) -> ReembedConfig:
        strict = {"uri": str(corpus), "format": None, "id_column": "id", "max_reject_fraction": max_reject_fraction}
        keep = {"uri": out, "keep_columns": ["license", "n", "t"]}
        return config(tiny_models["bert"], str(corpus), out, output=keep, input=strict)

    run_reembed(cfg(0.5))
    schema = open_current(out).schema
    assert schema.field("license").type == pa.string()  # as the embed job writes it
    assert (schema.field("n").type, schema.field("t").type) == (pa.int32(), pa.timestamp("ms"))
    before = published(out)

    (corpus / "c.jsonl").write_bytes(jsonl([{"id": "c1", "text": "again", "license": 7}, {"id": "c2", "text": " "}]))
    (corpus / "d.jsonl").write_bytes(jsonl([{"id": "d1", "text": "staged, then moved"}]))
    parquet("q.parquet", ["q1"], pa.array([2**40], pa.int64()), pa.array([3500], pa.timestamp("us")))
    current = (Path(out) / "_current.json").read_text()
    with pytest.raises(TooManyRejectsError, match=r"2 of 10 rows rejected \(20.0%\)"):  # a3 (reused) and c2
        run_reembed(cfg(0.15))
    assert (Path(out) / "_current.json").read_text() == current  # nothing published
    assert json.loads((Path(out) / "_summary.json").read_text())["status"] == "failed"
    (corpus / "2026").mkdir()
    os.rename(corpus / "d.jsonl", corpus / "2026" / "d.jsonl")
    with caplog.at_level("WARNING", logger="pipeline.reembed.job"):
        second = run_reembed(cfg(0.5))
    files = second["files"]
    assert (files["resumed"], files["moved"], files["rewritten"]) == (2, 1, 3)
    assert (second["rows_embedded"], second["status"]) == (0, "ok")  # old code: 1 (d.jsonl embedded again)
    assert "'n' widened from int32 to int64 (no value changes)" in caplog.text
    assert "'t' widened from timestamp[ms] to timestamp[us]" in caplog.text
    after = published(out)
    assert all(np.array_equal(after[i], before[i]) for i in ("a1", "a2", "b1", "p1", "p2"))
    table = open_current(out).to_table().sort_by("id")
    assert table.schema.field("license").type == pa.int64()
    by_id = dict(zip(table.column("id").to_pylist(), table.column("license").to_pylist()))
    assert by_id == {"a1": None, "a2": None, "b1": None, "c1": 7, "d1": None, "p1": None, "p2": None, "q1": None}
    n = dict(zip(table.column("id").to_pylist(), table.column("n").to_pylist()))
    assert (n["p1"], n["p2"], n["q1"], n["a1"]) == (1, -(2**31), 2**40, None)
    t = dict(zip(table.column("id").to_pylist(), table.column("t").cast(pa.int64()).to_pylist()))
    assert (t["p1"], t["p2"], t["q1"]) == (1000, 2000, 3500)
    files = read_current(out)
    types = {(s.field("license").type, s.field("n").type, s.field("t").type) for s in map(pq.read_schema, files)}
    assert types == {(pa.int64(), pa.int64(), pa.timestamp("us"))}

    (corpus / "e.jsonl").write_bytes(jsonl([{"id": "e1", "text": "more", "license": None}]))
    third = run_reembed(cfg(0.5))  # nulls fit the stored types: nothing else is written again
    assert (third["files"]["rewritten"], third["rows_embedded"], third["rows_rejected_total"]) == (0, 1, 2)
    # the first run's folders are collected (reembed.keep_manifests 2); the reject files live on in their copies
    manifest = current_manifest(resolve(out, StorageConfig()))
    named = [Path(out, "_versions", manifest.fingerprint, f) for e in manifest.entries for f in e.files + e.rejects]
    assert sum("_rejects" in str(f) for f in named) == 2 and all(f.exists() for f in named)
    (corpus / "f.jsonl").write_bytes(jsonl([{"id": "f1", "text": "text", "license": "MIT"}]))
    with pytest.raises(
        KeptColumnTypeError, match=r"kept column 'license': f.jsonl needs JSON text .* stores type int64"
    ):
        run_reembed(cfg(0.5))
    (corpus / "f.jsonl").unlink()
    parquet("g.parquet", ["g1"], pa.array([0.5], pa.float64()), pa.array([1], pa.timestamp("ms")))
    before = (Path(out) / "_current.json").read_text()
    with pytest.raises(
        KeptColumnTypeError,
        match=r"kept column 'n': g.parquet needs type double, but the published version stores type int64 .*"
        r"int64 -> double could change stored values \(integers above 2\*\*53 are rounded as double;.*"
        r"write the file's 'n' as type int64 where its values have that type \(e.g. 2, not 2.0\), else drop 'n'",
    ):
        run_reembed(cfg(0.5))
    assert (Path(out) / "_current.json").read_text() == before


def test_a_list_of_locations_is_one_corpus_kept_up_to_date_and_a_model_change_makes_a_new_version(
    ray_session, tiny_models, tmp_path
):
    """input.uri as a list: two folders with the same file name are two files of the version (paths below the
    common folder); the same list again reuses both; a file added to one folder is the only one embedded.

    Then another model over the same corpus (one corpus, it was a test of three runs of its own): a new version,
    every row embedded by it, the old version untouched; rolling the config back to the old model re-embeds
    nothing, the old version becomes current again."""
    for k, folder in enumerate(("a", "b")):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "part-0.jsonl").write_bytes(jsonl(RECORDS[10 * k : 10 * k + 10]))
    uris = [str(tmp_path / "in" / "a"), str(tmp_path / "in" / "b")]
    out = str(tmp_path / "emb")
    cfg = config(tiny_models["gemma3"], uris, out)
    first = run_reembed(cfg)
    assert (first["files"]["new"], first["rows_embedded"]) == (2, 20)
    second = run_reembed(cfg)
    assert (second["files"]["unchanged"], second["rows_embedded"]) == (2, 0)
    (tmp_path / "in" / "b" / "part-1.jsonl").write_bytes(jsonl(RECORDS[20:25]))
    old = run_reembed(cfg)
    assert (old["files"]["new"], old["files"]["unchanged"], old["rows_embedded"]) == (1, 2, 5)
    assert sorted(published(out)) == sorted(r["id"] for r in RECORDS[:25])

    old_files = read_current(out)
    new = run_reembed(config(tiny_models["qwen3"], uris, out))
    assert new["fingerprint"] != old["fingerprint"] and new["previous_fingerprint"] == old["fingerprint"]
    assert (new["files"]["new"], new["rows_embedded"]) == (3, 25)
    assert list_versions(out) == sorted([old["fingerprint"], new["fingerprint"]])
    current, before = published(out), published(out, fingerprint=old["fingerprint"])
    assert sorted(current) == sorted(before) and len(current) == 25
    assert read_current(out, fingerprint=old["fingerprint"]) == old_files  # the old version is untouched
    assert not np.allclose(current[RECORDS[0]["id"]], before[RECORDS[0]["id"]])
    # Rolling the config back to the old model re-embeds nothing: the old version becomes current again.
    back = run_reembed(cfg)
    print(
        f"REEMBED model-change: {old['fingerprint']} -> {new['fingerprint']} embedded {new['rows_embedded']}; "
        f"back to the old model embedded {back['rows_embedded']}"
    )
    assert (back["rows_embedded"], back["fingerprint"], back["published"]) == (0, old["fingerprint"], old["published"])
    assert read_current(out) == old_files


def test_renamed_moved_and_swapped_files_reuse_their_vectors_without_the_model(ray_session, tiny_models, tmp_path):
    """`mv` of a file into a date partition and two files swapped: the same content under new paths. Each was
    embedded again through the model (new + deleted); now its published vectors are reused (files.moved), ids
    derived from the path (no id column) name the new path as a new file's would, and the old paths leave the
    version."""
    corpus = local_corpus(tmp_path / "corpus", 3, 4)
    out = str(tmp_path / "emb")
    cfg = config(tiny_models["bert"], str(corpus), out)
    cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"id_column": None})})
    run_reembed(cfg)
    before = published(out)
    (corpus / "2024" / "01").mkdir(parents=True)
    os.rename(corpus / "part-00.jsonl", corpus / "2024" / "01" / "part-00.jsonl")
    os.rename(corpus / "part-01.jsonl", corpus / "swap")
    os.rename(corpus / "part-02.jsonl", corpus / "part-01.jsonl")
    os.rename(corpus / "swap", corpus / "part-02.jsonl")
    again = run_reembed(cfg)
    assert (again["rows_embedded"], again["rows_dropped"]) == (0, 0)  # old code: 12 embedded again, 12 dropped
    assert (again["files"]["moved"], again["files"]["to_embed"]) == (3, 0)
    assert (again["rows_total"], again["rows_in"]) == (12, 12)
    after = published(out)
    renamed = {"part-00.jsonl": "2024/01/part-00.jsonl", "part-01.jsonl": "part-02.jsonl"}
    renamed["part-02.jsonl"] = "part-01.jsonl"
    expected = {f"{renamed[k.split('#')[0]]}#{k.split('#')[1]}": v for k, v in before.items()}
    assert sorted(after) == sorted(expected)
    for key, vector in expected.items():
        np.testing.assert_array_equal(after[key], vector)
    for e in current_manifest(resolve(out, StorageConfig())).entries:  # each entry owns its files (for the GC)
        assert all(f.startswith(f"data/{e.key}/{e.run_id}/") for f in e.files + e.rejects)
    assert run_reembed(cfg)["published"] is None  # the next night: nothing to do
    # deleted one night, restored the next (a new copy of the same bytes): the older manifest's vectors, no model
    saved = (corpus / "part-02.jsonl").read_bytes()
    (corpus / "part-02.jsonl").unlink()
    assert run_reembed(cfg)["files"]["deleted"] == 1
    (corpus / "part-02.jsonl").write_bytes(saved)
    restored = run_reembed(cfg)
    assert (restored["files"]["moved"], restored["rows_embedded"], restored["rows_total"]) == (1, 0, 12)
    again_published = published(out)
    assert sorted(again_published) == sorted(after)
    for key, vector in again_published.items():
        np.testing.assert_array_equal(vector, after[key])


def test_files_that_grow_or_are_touched_while_the_run_reads_them_are_published_as_listed(
    ray_session, tiny_models, tmp_path, monkeypatch, caplog
):
    """Three races of one nightly run with the corpus's writers, one file each (one run and its next night: they
    were three tests of two runs each):

    part-00, grown before its listed bytes were hashed: an append-only JSONL growing between the listing and the
    driver's hash of it (a log written all the time: the driver's hash, taken while the file has its listed size and
    token, never succeeds). Its read task reads its listed bytes only (pipeline.read_content.listed_prefix) and
    hashes them; with no hash of the listed bytes the run failed naming it, every night. The driver now hashes the
    file's first listed-size bytes at its check: they are the bytes read, so the rows are the start of the file as
    it is now, staged and published (the 4 listed rows, not the appended one). Rewritten rather than appended to:
    still a change (test_read_content).

    part-01, grown after its listed bytes were hashed (content_tokens), before its read: the run failed with
    InputChangedError ('listed with N bytes, now M bytes'). Its read task now reads the listed bytes only and hashes
    them; their hash is the listed one, so the file is published as listed, and an INFO line says the appended
    bytes are left for the next run.

    part-02, touched (an rsync/cp of the same bytes) between the listing and the driver's hash of it: no hash of its
    listed bytes, the run failed with InputChangedError ('no hash of its listed content'). The read task now reports
    the token and sha256 of the bytes it read (pipeline.read_content): the file still holds them, so it is published
    with that content, and the next run finds it unchanged (its content compared) instead of embedding it again.

    The next run embeds the two grown files again, whole, and reuses part-02 and part-03."""
    corpus = local_corpus(tmp_path / "corpus", 4, 4)
    out = str(tmp_path / "emb")
    cfg = config(tiny_models["bert"], str(corpus), out)
    grown_before, grown_after, touched = (corpus / f"part-0{i}.jsonl" for i in range(3))
    late = jsonl([{"id": "late", "text": "a record appended while the job ran", "lang": "en"}])
    listed, hashing = job.scan_sources, job.content_tokens

    def listed_then_appended_and_touched(root, files):
        sources = listed(root, files)
        with grown_before.open("ab") as f:  # the writer appends after the listing, before the read
            f.write(late)
        st = touched.stat()
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # before the driver's hash of it
        return sources

    def hashed_then_appended(root, sources, pool):
        contents = hashing(root, sources, pool)
        assert contents[grown_after.name].result()  # the listed bytes hashed, then the writer appends
        with grown_after.open("ab") as f:
            f.write(late.replace(b'"late"', b'"late2"'))
        return contents

    monkeypatch.setattr(job, "scan_sources", listed_then_appended_and_touched)
    monkeypatch.setattr(job, "content_tokens", hashed_then_appended)
    with caplog.at_level("INFO", logger="pipeline.reembed.sources"):
        summary = run_reembed(cfg)  # old code: InputChangedError (each of the three files)
    assert summary["published"] and summary["rows_embedded"] == 16  # neither 'late' row is among them
    assert "before this run hashed it: its rows are its first" in caplog.text  # part-00
    assert "while this run read it: its rows are of its listed" in caplog.text  # part-01
    assert "the appended bytes are left for the next run" in caplog.text
    entries = {e.path: e for e in current_manifest(resolve(out, StorageConfig())).entries}
    grown_entry = entries["part-00.jsonl"]
    assert grown_entry.content == "sha256:" + hashlib.sha256(grown_before.read_bytes()[: grown_entry.size]).hexdigest()
    monkeypatch.setattr(job, "scan_sources", listed)
    monkeypatch.setattr(job, "content_tokens", hashing)
    again = run_reembed(cfg)
    # the grown files, whole (5 rows each); the touched one and part-03 unchanged
    assert again["rows_embedded"] == 10 and again["files"]["unchanged"] == 2
    assert (again["files"]["changed"], again["rows_total"]) == (2, 18)


def test_what_nightly_tools_do_to_a_corpus_reuses_every_vector_it_can_and_embeds_the_rest(
    ray_session, tiny_models, tmp_path
):
    """One night of what other tools do to a corpus, all at once (one e2e run after the first, folded together to
    keep the cost of one): logrotate's create (renamed to .1, a new empty file), rotate + compress into a folder,
    copytruncate (copied to a dated name, the original truncated), an atomic rename-over with the same bytes, a file
    deleted and recreated with other rows of the same size, two files swapped by name, and an rsync --inplace edit
    of the same size. Every move reuses its vectors, the rename-over is no change (its new token published), and
    only the edited files go through the model; no row is lost.

    And, the same night (it was a test of four runs of its own): `cp -p` of an edited copy or `rsync -t` of an edit
    that keeps the size (part-08): the mtime is put back, so a token of size + mtime took the file for unchanged and
    its old vectors stayed published. The ctime moves with the write. A file touched (part-09), or written again with
    the same bytes (part-10), is not embedded again (it was: every file of a corpus copied nightly without its times
    was embedded again every night): its recorded sha256 is the same, and its new token is published (old code: the
    old tokens kept, so such files were read again every later night to compare their content).

    And two ways a moved file was embedded again, the nights after (they were a test of three runs of its own):
    entries an older rayembed published without a content hash: a local move of one could not be paired (its file
    is gone when the move is seen, so nothing can hash it then), and it was embedded again. The first run that finds
    such entries with their files as recorded hashes them and publishes them with their content, once; the move the
    night after is paired, its vectors reused. `gunzip a.jsonl.gz` (part-11; or zstd -d, bunzip2): other bytes, so
    it was embedded again (the other way, a file compressed since, was paired by its decompressed bytes). A
    compressed file's entry now records the sha256 of its decompressed bytes too (FileEntry.decompressed), so the
    plain file holding them is a move, its vectors reused."""
    corpus = local_corpus(tmp_path / "corpus", 12, 4)
    plain = (corpus / "part-11.jsonl").read_bytes()
    (corpus / "part-11.jsonl.gz").write_bytes(gzip.compress(plain))
    (corpus / "part-11.jsonl").unlink()
    out = str(tmp_path / "emb")
    cfg = config(tiny_models["bert"], str(corpus), out)
    first = run_reembed(cfg)
    [gz] = [e for e in current_manifest(resolve(out, StorageConfig())).entries if e.path.endswith(".gz")]
    assert gz.decompressed == "sha256:" + hashlib.sha256(plain).hexdigest()  # hashed by its read task
    before = published(out)
    part = {i: corpus / f"part-{i:02d}.jsonl" for i in range(11)}
    records8 = [json.loads(line) for line in part[8].read_text().splitlines()]
    edited8 = [{**r, "text": r["text"][::-1]} for r in records8]  # same bytes, reversed: same size
    stamp = part[8].stat().st_mtime_ns
    part[8].write_bytes(jsonl(edited8))
    os.utime(part[8], ns=(stamp, stamp))
    assert part[8].stat().st_mtime_ns == stamp and len(jsonl(edited8)) == len(jsonl(records8))
    os.utime(part[9], ns=(stamp + 10**9, stamp + 10**9))  # touch
    part[10].write_bytes(part[10].read_bytes())  # a copy with new times of the same bytes
    os.rename(part[0], corpus / "part-00.jsonl.1")  # logrotate (create): renamed, a new empty file
    part[0].write_bytes(b"")
    (corpus / "rotated").mkdir()  # rotated and compressed into a folder
    (corpus / "rotated" / "part-01.jsonl.gz").write_bytes(gzip.compress(part[1].read_bytes()))
    part[1].unlink()
    shutil.copyfile(part[7], corpus / "part-07.jsonl-20261201")  # copytruncate (dateext)
    with part[7].open("r+b") as f:
        f.truncate(0)
    (corpus / ".part-02.jsonl.tmp").write_bytes(part[2].read_bytes())  # atomic rename-over, the same bytes
    os.replace(corpus / ".part-02.jsonl.tmp", part[2])
    records = [json.loads(line) for line in part[3].read_text().splitlines()]
    part[3].unlink()  # deleted and recreated: other rows of the same size
    part[3].write_bytes(jsonl([{**r, "text": r["text"][::-1]} for r in records]))
    os.rename(part[4], corpus / "swap")  # two files swapped
    os.rename(part[5], part[4])
    os.rename(corpus / "swap", part[5])
    rows6 = [json.loads(line) for line in part[6].read_text().splitlines()]
    rows6[0]["text"] = rows6[0]["text"][::-1]  # the same bytes reordered: the same size
    with part[6].open("r+b") as f:  # rsync --inplace: an edit of the same size, in place
        f.write(jsonl(rows6))
    again = run_reembed(cfg)
    assert again["files"]["moved"] == 5 and again["files"]["retokened"] == 3  # part-02, part-09, part-10
    assert again["rows_embedded"] == 12  # part-03, part-06 and part-08 alone (old code: 8, part-08 kept its vectors)
    assert again["rows_total"] == first["rows_total"] == 48 and again["rows_in"] == 48
    after = published(out)
    assert sorted(after) == sorted(before)  # the ids (an id column): every row once
    edited = {r["id"] for r in records + rows6 + records8}
    for key, vector in after.items():
        if key not in edited:
            np.testing.assert_array_equal(vector, before[key])
    changed_id = records8[0]["id"]
    assert not np.allclose(after[changed_id], before[changed_id])  # the edited text's vector, not the old one
    corpus_root = resolve(str(corpus), StorageConfig())
    names = {part[i].name for i in (2, 8, 9, 10)}  # new tokens published: the next night compares nothing
    retokened = [e for e in current_manifest(resolve(out, StorageConfig())).entries if e.path in names]
    assert len(retokened) == 4
    assert all(e.token == local_source(corpus_root, e.path).token for e in retokened)
    # the compressed move records the hashes of its own bytes and of its decompressed ones (old code: the plain
    # file's, so the next run hashed it again and published a manifest for that alone)
    [rotated] = [e for e in current_manifest(resolve(out, StorageConfig())).entries if e.path.startswith("rotated/")]
    gz = (corpus / "rotated" / "part-01.jsonl.gz").read_bytes()
    assert rotated.content == "sha256:" + hashlib.sha256(gz).hexdigest()
    assert rotated.decompressed == "sha256:" + hashlib.sha256(gzip.decompress(gz)).hexdigest()
    assert run_reembed(cfg)["published"] is None  # the next night: nothing to do

    for path in Path(out).glob("_versions/*/_manifests/*.json"):  # as an older version wrote them
        raw = json.loads(path.read_text())
        raw["entries"] = [{k: v for k, v in e.items() if k != "content"} for e in raw["entries"]]
        path.write_text(json.dumps(raw))
    hashed = run_reembed(cfg)
    assert hashed["published"] and hashed["rows_embedded"] == 0  # old code: None (nothing recorded)
    entries = current_manifest(resolve(out, StorageConfig())).entries
    assert all(e.content for e in entries)
    assert job.with_recorded_contents(corpus_root, Plan(unchanged=entries))[1] == 0  # once
    (corpus / "2026").mkdir()
    os.rename(part[4], corpus / "2026" / "part-04.jsonl")
    (corpus / "part-11.jsonl").write_bytes(plain)  # gunzip
    (corpus / "part-11.jsonl.gz").unlink()
    moved = run_reembed(cfg)
    assert (moved["files"]["moved"], moved["rows_embedded"]) == (2, 0)  # old code: (0, 8), (1, 4) for each alone
    paths = {e.path for e in current_manifest(resolve(out, StorageConfig())).entries}
    assert {"part-11.jsonl", "2026/part-04.jsonl"} <= paths and not {"part-11.jsonl.gz", "part-04.jsonl"} & paths
