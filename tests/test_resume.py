"""Resume, not restart: SIGKILL the driver after its first committed units, run the same command again.

The rerun skips the committed units before reading them, embeds the rest, and the dataset equals a clean run's:
every id once, the same vectors, rejects counted across attempts. Local disk and the S3 server; on S3 an embedding
actor is also killed during the resumed run. A different model refuses to resume and says what differs.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SAMPLE
from faulty_actors import faulty, use
from robustness_helpers import (
    corpus_bytes,
    make_config,
    read_run,
    record_figure,
    vectors_by_id,
    wait_for_driver_teardown,
    write_corpus,
)

from jobs.embed import main as embed_main
from pipeline.config import StorageConfig
from pipeline.embed_job import plans_packed_units, run_embed
from pipeline.storage import list_inputs
from pipeline.units import plan_units, record_files

pytestmark = pytest.mark.slow
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()][:96]
FILES = {f"c{i}.jsonl": RECORDS[i * 16 : (i + 1) * 16] for i in range(6)}
FILES["c0.jsonl"] = [*FILES["c0.jsonl"], {"id": "empty", "text": " "}]  # a reject, likely in a committed unit
FILES["c5.jsonl"] = [*FILES["c5.jsonl"], {"id": RECORDS[0]["id"], "text": "a later copy"}]  # duplicate id
ROWS_IN, ROWS_TO_EMBED = len(RECORDS) + 2, len(RECORDS)
# unit_bytes 32 KiB: the files (2.6-11 KB) are over 2 KiB, so not packed (pipeline.units.PACK_SHARE), and under
# 32 KiB, so not split into byte ranges (pipeline.line_ranges): each is a unit and the kill lands between units
SECTIONS = {"batching": {"rows_per_block": 8}, "input": {"id_column": "id", "unit_bytes": 32768}}

DRIVER = """
import json, sys
sys.path.insert(0, {tests!r})
import faulty_actors, pipeline.embed_job as job
from pathlib import Path
from pipeline.config import EmbedConfig
from ray import cloudpickle
cloudpickle.register_pickle_by_value(faulty_actors)
job.EmbedActor = faulty_actors.faulty({{"slow": None}}, Path({state!r}), seconds=0.7)
job.run_embed(EmbedConfig.model_validate(json.loads(Path({cfg!r}).read_text())))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), FILES)


@pytest.fixture(scope="module")
def clean_out(ray_session, tiny_models, corpus, tmp_path_factory) -> Path:
    """The output of one uninterrupted run over `corpus` (gemma3, SECTIONS): read, or copied by a test that needs
    a finished run of that configuration to change (the fingerprint holds no output.uri), never changed."""
    out = tmp_path_factory.mktemp("clean") / "emb"
    summary = run_embed(make_config(tiny_models["gemma3"], corpus, out, "jsonl", **SECTIONS))
    assert (summary["rows_in"], summary["rows_embedded"], summary["rows_reused"]) == (ROWS_IN, ROWS_TO_EMBED, 0)
    return out


@pytest.fixture(scope="module")
def clean(clean_out) -> dict:
    """Vectors of one uninterrupted run, by id."""
    return vectors_by_id(read_run(str(clean_out))[0])


def kill_after_first_unit(cfg_json: str, units_dir: Path, tmp_path: Path) -> int:
    """Run a slowed-down driver on the session's Ray; SIGKILL it once a unit is committed. Returns units committed."""
    state = tmp_path / "slow"
    state.mkdir()
    (tmp_path / "cfg.json").write_text(cfg_json)
    script = DRIVER.format(tests=str(Path(__file__).parent), state=str(state), cfg=str(tmp_path / "cfg.json"))
    log = open(tmp_path / "driver.log", "wb")  # noqa: SIM115 - read back when the driver exits early
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline and not list(units_dir.glob("*.json")):
            time.sleep(0.1)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    wait_for_driver_teardown(driver.pid)
    return len(list(units_dir.glob("*.json")))


def check_resumed(summary: dict, uri: str, clean: dict, committed_rows: int, endpoint: str | None = None) -> None:
    good, rejects = read_run(uri, endpoint)
    ids = good.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == ROWS_TO_EMBED, "an id is missing or written twice"
    assert summary["rows_reused"] > 0 and summary["units_skipped"] > 0 and summary["files_skipped"] > 0
    assert summary["rows_embedded"] + summary["rows_reused"] == ROWS_TO_EMBED
    assert summary["rows_in"] == ROWS_IN and summary["rows_rejected"] == rejects.num_rows == 2
    assert summary["rows_read"] == ROWS_IN - committed_rows  # committed units were not read again
    assert min(rejects.column("reason").to_pylist()).startswith("duplicate id (first at c0.jsonl row 0)")
    got = vectors_by_id(good)
    cosine = min(float(np.dot(got[k], clean[k]) / np.linalg.norm(got[k]) / np.linalg.norm(clean[k])) for k in clean)
    assert sorted(got) == sorted(clean) and cosine >= 0.9999, cosine


def committed_rows(units_dir: Path) -> int:
    return sum(json.loads(p.read_text())["rows"] for p in units_dir.glob("*.json"))


def test_killed_driver_resumes_with_the_same_command(ray_session, tiny_models, corpus, clean, tmp_path):
    """Local corpus: kill, a changed model is refused naming the difference, the same command resumes.

    The kill is also the one of a driver whose output a reader may look at (it was test_faults'
    test_killed_driver_leaves_no_half_written_parquet, a driver process and a run of its own): every visible file
    is a whole Parquet file, and none is marked done.

    output.token_columns decides the output's columns (num_tokens, truncated), as keep_columns does, but was not
    part of the fingerprint: a rerun that switched it on resumed, reused the committed units written without those
    columns and wrote them only in the rest (or, every unit reused, in none), without a word. Now the rerun is
    refused naming the key and the same command resumes. A run recorded before the key was (off, the default)
    records no such field, so it still resumes. (The other direction, on -> off, was an overwrite run and a resume
    more here: test_fingerprint::test_output_token_columns_are_recorded_when_on_and_a_switch_either_way_is_named.)
    The killed run is also recorded as a version before change times recorded its listing: without
    `tokens_sha256` and with entries of [path, size, mtime]; the same command resumes it, nothing embedded twice.
    (That was test_a_resume_with_output_token_columns_switched_is_refused_naming_it, a copy of a clean run and a
    resume of its own.)"""
    out = tmp_path / "emb"
    gcs = ray_session.get_runtime_context().gcs_address

    def columns() -> set[tuple[str, ...]]:
        return {tuple(pq.read_schema(p).names) for p in out.glob("part-*.parquet")}

    cfg = make_config(tiny_models["gemma3"], corpus, out, "jsonl", compute={"ray_address": gcs}, **SECTIONS)
    assert kill_after_first_unit(cfg.model_dump_json(), out / "_run" / "units", tmp_path) >= 1
    assert not (out / "_SUCCESS").exists() and not (out / "_summary.json").exists()
    # every file a reader sees is a whole Parquet file (written to a hidden temp name, then renamed)
    hidden_parts = lambda p: any(part.startswith((".", "_")) for part in p.relative_to(out).parts)
    visible = [p for p in out.rglob("*") if p.is_file() and not hidden_parts(p)]
    assert visible
    for path in visible:
        assert pq.read_table(path).num_rows > 0  # raises on a truncated or half-written file
    hidden = [p.name for p in out.rglob(".*")]  # temp files of interrupted writes: ignored by Parquet readers
    record_figure("driver SIGKILL", visible_parquet=len(visible), hidden_temp_files=len(hidden))

    other = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name_or_path": str(tiny_models["qwen3"])})})
    with pytest.raises(FileExistsError, match=r"another configuration.*model\.name_or_path: .*qwen3.*model\.identity"):
        run_embed(other)

    record_file = out / "_run" / "fingerprint.json"
    record = json.loads(record_file.read_text())
    assert "output.token_columns" not in record["fingerprint"]
    listing = record["fingerprint"]["input.listing"]
    del listing["tokens_sha256"]  # the listing as a version before change times recorded it
    listing["entries"] = [e[:3] for e in listing["entries"]]
    record_file.write_text(json.dumps(record))
    on = make_config(
        tiny_models["gemma3"],
        corpus,
        out,
        "jsonl",
        compute={"ray_address": gcs},
        output={"token_columns": True},
        **SECTIONS,
    )
    with pytest.raises(FileExistsError, match=r"output\.token_columns: \(absent\) -> true"):
        run_embed(on)

    reused_rows = committed_rows(out / "_run" / "units")
    config_file = tmp_path / "embed.yaml"
    config_file.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    assert embed_main(["--config", str(config_file)]) == 0  # the same command, in this process
    summary = json.loads((out / "_summary.json").read_text())
    assert (out / "_SUCCESS").exists()
    check_resumed(summary, str(out), clean, reused_rows)
    assert columns() == {("id", "embedding")}
    with pytest.raises(FileExistsError, match="finished run"):  # a finished run is never resumed into
        run_embed(cfg)


def unfinish(out: Path) -> int:
    """As if the run had died before its last unit and its summary: that unit's marker and _SUCCESS go. Returns the
    rows of the units still committed."""
    markers = sorted((out / "_run" / "units").glob("*.json"))
    for done in (markers[-1], out / "_SUCCESS", out / "_summary.json"):
        done.unlink()
    return committed_rows(out / "_run" / "units")


def test_a_resume_refuses_an_input_rewritten_with_its_old_size_and_mtime(
    ray_session, tiny_models, corpus, clean_out, clean, tmp_path
):
    """`cp -p` of an edited copy, `rsync -t` of a same-length edit, `touch -r`: the listing pinned (path, size,
    mtime), so the resume took the rewritten file for unchanged, kept the old content's vectors for the committed
    units and embedded the new content for the rest. The inode change time moves with the write: the resume is
    refused naming the file, and --set output.overwrite=true embeds the new content.

    A `touch` or `chmod` moves the same token without a change of content: the run recorded each file's sha256
    (`_run/contents.json`), so the resume goes on (it was refused, and the user started over). The run is a copy of
    the module's clean one, its corpus a `cp -p` of the module's (every file's inode change time moved, their
    content and mtime not), so the resume also goes on after a copy of the whole corpus (one embedding run fewer
    than a run of its own).

    The copy is also a run an older rayembed left unfinished (it was
    test_a_run_an_older_rayembed_left_unfinished_resumes_under_its_unit_plan, a resume of its own): runs started
    before small files were packed into units recorded one unit per file and no `input.unit_packing` in their
    fingerprint. After the upgrade the same command was refused naming that field, which no configuration key sets;
    it now resumes such a run under the plan it started with. The clean run's files (2.6-11 KB, unit_bytes 32 KiB)
    are one unit each, as such a version planned them at any unit_bytes (a unit's key is its path alone): its
    fingerprint as that version wrote it for the default unit_bytes, at which a new run packs the six files into one
    unit."""
    copied = tmp_path / "in"
    shutil.copytree(corpus, copied)  # copy2: the same bytes and mtime, another inode change time
    out = tmp_path / "emb"
    shutil.copytree(clean_out, out)
    sections = {**SECTIONS, "input": {"id_column": "id"}}  # default unit_bytes: these small files would be packed
    cfg = make_config(tiny_models["gemma3"], copied, out, "jsonl", **sections)
    record_file = out / "_run" / "fingerprint.json"
    record = json.loads(record_file.read_text())
    recorded = record["fingerprint"]
    del recorded["input.unit_packing"]  # the older rayembed: one unit per file, no packing in the fingerprint
    recorded["input.unit_bytes"] = cfg.input.unit_bytes
    record_file.write_text(json.dumps(record))
    assert len(list((out / "_run" / "units").glob("*.json"))) == len(FILES)
    reused = unfinish(out)
    # a file a committed unit read: one no committed unit read is embedded as it is on resume, whatever its change
    # (input_contents.same_content's units_of)
    markers = (out / "_run" / "units").glob("*.json")
    target = copied / min(p for m in markers for p in record_files(json.loads(m.read_text())))
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touch
    (copied / "c1.jsonl").chmod(0o600)
    summary = run_embed(cfg)  # the same command, after the upgrade
    assert summary["units"] == len(FILES) and summary["units_skipped"] == len(FILES) - 1  # the older plan
    check_resumed(summary, str(out), clean, reused)  # committed units not read again
    after = json.loads(record_file.read_text())["fingerprint"]
    assert "input.unit_packing" not in after and after["input.unit_bytes"] == recorded["input.unit_bytes"]
    assert {k: v for k, v in after.items() if k != "input.listing"} == {
        k: v for k, v in recorded.items() if k != "input.listing"
    }  # the listing: as it is now (the touch), so that the next resume does not hash again

    # a new run (nothing recorded) packs the six small files into one unit: the plan run_embed makes for it
    root, listed = list_inputs(str(corpus), StorageConfig())
    assert plans_packed_units(None)
    assert len(plan_units(root, listed, "jsonl", cfg.input.unit_bytes, plans_packed_units(None))) == 1

    unfinish(out)
    stat = target.stat()  # as the resume recorded it (the listing as it is now: no hashing on the next resume)
    edited = [{**r, "text": r["text"][::-1]} for r in FILES[target.name]]  # same bytes reversed: same size
    target.write_bytes(corpus_bytes(edited))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    with pytest.raises(
        FileExistsError,
        match=rf"input\.listing: 6 files -> 6 files \(changed {re.escape(target.name)} \(rewritten with its old "
        r"size and modification time\)\)",
    ):
        run_embed(cfg)


def test_a_resume_on_s3_refuses_an_object_rewritten_with_its_old_size_in_the_same_second(
    ray_session, tiny_models, clean, tmp_path, s3_bucket, s3_server, monkeypatch
):
    """An S3 run stopped by an object rewritten while it read it; its rerun refuses an object rewritten in between
    with its old size, and the same command then resumes through a killed embedding actor. (It was three tests, one
    run of their own each: one killed a driver process, one finished a run and dropped a marker, each to leave an
    unfinished S3 run to resume, and test_an_object_rewritten_while_the_embed_job_reads_it_is_not_committed; the
    killed driver is test_killed_driver_resumes_with_the_same_command's, on local disk.)

    An object rewritten after the run's listing: one listing at the end of the run finds it, its unit is not
    committed (without that listing it was), the other units are, and the run fails naming the object.

    S3 gives LastModified to the second and pyarrow's listing gives no ETag, so the listing pinned (path, size,
    LastModified): an object rewritten with its old size in the second of the write it replaced passed for
    unchanged, and the resume kept the old content's vectors for the committed units and embedded the new content
    for the rest. The listing now pins each object's ETag (pipeline.s3_listing): the resume is refused naming the
    object, as for a local file. moto's clock is held at one second for the writes, as writes in one second of a
    real store.

    The same unfinished run then serves a run an older version left unfinished on S3: with the objects' bytes
    written back in that second (the listing as recorded), the record made as that version wrote it (no
    `etags_sha256`, entries of [path, size, mtime, null]) resumes after the upgrade, nothing embedded twice, while an
    actor killed on a row of the unit the resume embeds is restarted."""
    import pipeline.embed_job as job
    from pipeline.reembed.sources import InputChangedError

    client, bucket = s3_bucket
    second = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)  # moto's naive UTC

    def write_in_that_second(name: str, rows: list[dict]) -> None:
        with monkeypatch.context() as clock:
            clock.setattr("moto.s3.models.utcnow", lambda: second)
            client.put_object(Bucket=bucket, Key=f"corpus/{name}", Body=corpus_bytes(rows))

    for name, rows in FILES.items():
        write_in_that_second(name, rows)
    uri = f"s3://{bucket}/emb"
    cfg = make_config(tiny_models["gemma3"], f"s3://{bucket}/corpus", uri, "jsonl", s3_server, **SECTIONS)

    def committed() -> list[dict]:
        listing = client.list_objects_v2(Bucket=bucket, Prefix="emb/_run/units/").get("Contents", [])
        keys = [o["Key"] for o in listing if o["Key"].endswith(".json")]  # not the folder marker objects
        return [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]

    grown = "c3.jsonl"  # neither a reject nor a duplicate in it
    listing, calls = job.list_inputs, []

    def listed_then_rewritten(*args, **kwargs):
        listed = listing(*args, **kwargs)
        if not calls:  # after the run's own listing only
            rows = [*FILES[grown], {"id": "late", "text": "appended while the job ran"}]
            client.put_object(Bucket=bucket, Key=f"corpus/{grown}", Body=corpus_bytes(rows))
        calls.append(1)
        return listed

    with monkeypatch.context() as writer:
        writer.setattr(job, "list_inputs", listed_then_rewritten)
        with pytest.raises(
            InputChangedError, match=rf"corpus/{re.escape(grown)} changed while this run read it \(listed with \d+ b"
        ):
            run_embed(cfg)
    done = committed()
    assert sorted(d["path"] for d in done) == sorted(set(FILES) - {grown})  # without the listing: all committed
    assert not any(
        o["Key"] in ("emb/_SUCCESS", "emb/_summary.json")
        for o in client.list_objects_v2(Bucket=bucket, Prefix="emb/_").get("Contents", [])
    )
    write_in_that_second(grown, FILES[grown])  # put back as listed: the listing as recorded

    kept = done[0]["path"]  # a file a committed unit read
    before = client.head_object(Bucket=bucket, Key=f"corpus/{kept}")
    write_in_that_second(kept, [{**r, "text": r["text"][::-1]} for r in FILES[kept]])  # same size
    after = client.head_object(Bucket=bucket, Key=f"corpus/{kept}")
    assert (after["ContentLength"], after["LastModified"]) == (before["ContentLength"], before["LastModified"])
    assert after["ETag"] != before["ETag"]
    with pytest.raises(
        FileExistsError,
        match=rf"input\.listing: 6 files -> 6 files \(changed {re.escape(kept)} \(rewritten with its old size and "
        r"modification time\)\)",
    ):
        run_embed(cfg)

    write_in_that_second(kept, FILES[kept])  # its bytes as listed: its ETag as recorded
    assert client.head_object(Bucket=bucket, Key=f"corpus/{kept}")["ETag"] == before["ETag"]
    key = "emb/_run/fingerprint.json"
    record = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    listing_record = record["fingerprint"]["input.listing"]
    del listing_record["etags_sha256"]
    listing_record["entries"] = [e[:4] for e in listing_record["entries"]]
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())
    trigger = FILES[grown][3]["id"]  # a row of the unit the resumed run must embed
    faults = tmp_path / "faults"
    faults.mkdir()
    use(monkeypatch, faulty({"kill": trigger}, faults))
    summary = run_embed(cfg)
    assert (faults / "killed").exists() and len((faults / "inits").read_text().split()) >= 2
    check_resumed(summary, uri, clean, sum(d["rows"] for d in done), s3_server)
    assert client.head_object(Bucket=bucket, Key="emb/_SUCCESS")


def test_files_appended_to_or_touched_before_their_read_are_committed_as_their_listed_rows(
    ray_session, tiny_models, tmp_path, monkeypatch, caplog
):
    """Three files of one run, each changed between the run's listing and its read in a way that leaves its listed
    rows readable; each failed the run with InputChangedError. (They were three tests, a run each.)

    - c1.jsonl, an append-only JSONL growing between the listing and the driver's hash of it (a log written all the
      time, which the driver's recorder never finds at its listed size and token). Its read task reads its listed
      bytes only (pipeline.read_content.listed_prefix) and hashes them; with no hash of the listed bytes the run
      stopped naming the file. The check now hashes the file's first listed-size bytes: they are the bytes read, so
      the rows are the start of the file as it is now (its listed rows, for a file only appended to) and the unit is
      committed, its 'late' row left out.
    - c2.jsonl, a log synced into the corpus while the job runs: appended after the driver hashed its listed bytes
      (its ContentRecorder), before its read ('listed with N bytes, now M bytes'). Its read task reads the listed
      bytes only and hashes them; their hash is the listed one, so its rows are committed as the listed file and an
      INFO line says the appended bytes are left for the next run.
    - c3.jsonl, a `touch` (an rsync/cp of the same bytes) between the listing and the driver's hash of the file,
      which left no hash of its listed bytes ('no hash of its listed content'). The read task now reports the token
      and sha256 of the bytes it read (pipeline.read_content): the file still has them, so its rows are committed.

    A rewrite after the read, and a unit whose file changed again, are still changes (test_read_content)."""
    import pipeline.embed_job as job
    from pipeline.commit import committed_units
    from pipeline.config import StorageConfig
    from pipeline.storage import resolve

    (tmp_path / "in").mkdir()
    corpus = write_corpus(tmp_path / "in", {name: FILES[name] for name in ("c1.jsonl", "c2.jsonl", "c3.jsonl")})
    out = tmp_path / "emb"
    listing = job.list_inputs

    def append_late(name: str) -> None:
        with (corpus / name).open("ab") as f:
            f.write(corpus_bytes([{"id": f"late-{name}", "text": "a record appended while the job ran"}]))

    def listed_then_changed(*args, **kwargs):
        listed = listing(*args, **kwargs)
        append_late("c1.jsonl")  # the writer appends after the listing, before the recorder's hash
        st = (corpus / "c3.jsonl").stat()
        os.utime(corpus / "c3.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # before the recorder's hash
        return listed

    class AppendedOnceHashed(job.ContentRecorder):
        def __enter__(self):
            recorder = super().__enter__()
            assert recorder.hashes["input.listing"]["c2.jsonl"].result()  # the listed bytes hashed, then appended
            append_late("c2.jsonl")
            return recorder

    monkeypatch.setattr(job, "list_inputs", listed_then_changed)
    monkeypatch.setattr(job, "ContentRecorder", AppendedOnceHashed)
    with caplog.at_level("INFO", logger="pipeline.reembed.sources"):
        summary = run_embed(make_config(tiny_models["bert"], corpus, out, "jsonl", **SECTIONS))  # old: InputChanged
    assert summary["status"] == "ok" and summary["rows_in"] == 48  # no 'late' row among them
    assert "before this run hashed it: its rows are its first" in caplog.text  # c1
    assert "the appended bytes are left for the next run" in caplog.text  # c2
    records = committed_units(resolve(str(out), StorageConfig())).values()
    assert sorted(p for r in records for p in r.get("files") or [r["path"]]) == ["c1.jsonl", "c2.jsonl", "c3.jsonl"]
    ids = {i for f in out.rglob("*.parquet") for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
    assert not any(i.startswith("late") for i in ids) and len(ids) == 48
