"""Faults on local Ray and the S3 server: killed and failing actors, storage errors, memory pressure.

Every run that should survive a fault is compared with one fault-free run of the same corpus: same ids, each
exactly once, same vectors. Runs that should fail must name what failed and leave nothing marked complete
(`_SUCCESS` is written last, after `_summary.json`, and is the commit marker readers check). A killed driver, whose
output holds whole Parquet files only and is resumed by the same command: tests/test_resume.py.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE
from faulty_actors import faulty, use
from robustness_helpers import (
    assert_same_vectors,
    check_counts,
    embedded_here,
    make_config,
    put_corpus,
    record_figure,
    write_corpus,
)
from s3_fault_proxy import FaultRule

from pipeline.embed_job import run_embed

pytestmark = pytest.mark.slow
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()][:120]
FILES = {f"c{i}.jsonl": RECORDS[i * 40 : (i + 1) * 40] for i in range(3)}
TRIGGER_A, TRIGGER_B = RECORDS[50]["id"], RECORDS[100]["id"]
# unit_bytes 32 KiB: one unit per file (the files, 7-22 KB, are over 2 KiB, not packed, pipeline.units, and under
# 32 KiB, not split into byte ranges), so the writes of each file are their own part files, as the fault budgets
# here count them
SMALL_BLOCKS = {"batching": {"rows_per_block": 16}, "input": {"id_column": "id", "unit_bytes": 32768}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), FILES)


@pytest.fixture(scope="module")
def baseline(tiny_models, corpus) -> dict:
    """Fault-free vectors by id: the corpus embedded in this process by the job's stage UDFs (a fault-free run of
    its own cost a pool start-up for the same reference; the runs' counts are checked by check_counts)."""
    cfg = make_config(tiny_models["gemma3"], corpus, "unused", "jsonl", **SMALL_BLOCKS)
    return embedded_here(cfg, RECORDS)


def worker_logs(ray_session, pids: list[str]) -> str:
    """The stderr logs of the session's worker processes `pids` (Ray names them worker-<worker id>-<job id>-<pid>.err):
    this test's actors only, not a line an earlier test's worker logged."""
    logs = Path(ray_session._private.worker._global_node.get_session_dir_path()) / "logs"
    return "".join(p.read_text(errors="replace") for pid in set(pids) for p in logs.glob(f"worker-*-{pid}.err"))


def test_killed_raising_and_out_of_memory_embed_actors_lose_nothing(
    ray_session, tiny_models, corpus, baseline, tmp_path, monkeypatch
):
    """ray.kill on the pool actor mid-job (restart + task retry), then an exception on another block (task retry),
    on a device too small for the batch budget: a forward pass over more than 600 padded tokens raises CUDA-style
    OOM, and the encoder splits the batch and lowers its budget (each actor, the restarted one too). One run for the
    three faults: each was a run of its own, with the same corpus and the same fault-free reference."""
    state = tmp_path / "state"
    state.mkdir()
    use(monkeypatch, faulty({"kill": TRIGGER_A, "raise": TRIGGER_B, "oom": None}, state, capacity_tokens=600))
    out = tmp_path / "emb"
    cfg = make_config(tiny_models["gemma3"], corpus, out, "jsonl", **SMALL_BLOCKS)
    assert (cfg.compute.max_restarts, cfg.compute.max_task_retries) == (2, 2)  # explicit, not Ray's defaults
    summary = run_embed(cfg)
    assert (state / "killed").exists() and (state / "raised").exists()
    restarts = len((state / "inits").read_text().split()) - 1
    assert restarts >= 1, "the killed actor was not restarted"
    good, rejects = check_counts(summary, str(out), len(RECORDS), case="actor killed + actor raised + device OOM")
    assert rejects.num_rows == 0
    assert_same_vectors(good, baseline)
    record_figure("actor faults", faults_injected=2, actor_restarts=restarts, task_retries=2)
    oom_pids = [line.split()[0] for line in (state / "ooms").read_text().splitlines()]
    final_budget = dict(line.split() for line in (state / "budgets").read_text().splitlines())  # last line per pid
    assert oom_pids, "no batch went over the device's capacity"
    # configured 2048: every actor that ran out of memory halved its budget at least once (an actor whose blocks all
    # fit, such as one restarted late, keeps 2048; which actor writes last is up to the scheduler)
    assert all(int(final_budget[pid]) <= 2048 // 2 for pid in oom_pids), (oom_pids, final_budget)
    ooms, final = len(oom_pids), min(int(final_budget[pid]) for pid in oom_pids)
    assert "out of memory on a batch of" in worker_logs(ray_session, oom_pids)  # the warning, not a crash
    record_figure("device OOM", faults_injected=ooms, budget_tokens=f"2048 -> {final}")


@pytest.mark.parametrize("policy", ["truncate", "chunk"])
def test_enormous_row_finishes(ray_session, tiny_models, tmp_path, policy):
    """One 1 MB text among normal rows: truncate keeps max_tokens; chunk covers all of it in overlapping windows.

    The size is what the chunk case guards: its ~7,900 windows of 64 tokens each copying the text would be ~8 GB,
    past Arrow's 2 GiB string array (the TokenizeActor drops the text before fanning out; asserted below). Short
    windows reach that with less text: 2.5 MB in 512-token windows proved the same at twice the tokens."""
    texts = [r["text"] for r in RECORDS]
    huge = ""
    while len(huge.encode()) < 1_000_000:
        huge += " ".join(texts) + "\n"
    corpus = tmp_path / "big.jsonl"
    rows = [{"id": "small-0", "text": texts[0]}, {"id": "huge", "text": huge}, {"id": "small-1", "text": texts[1]}]
    corpus.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    out = tmp_path / "emb"
    model = {"long_inputs": policy, "max_tokens": 64, "chunk_overlap_tokens": 16}
    cfg = make_config(
        tiny_models["qwen3"],
        corpus,
        out,
        "jsonl",
        model=model,
        input={"id_column": "id"},
        batching={"max_tokens_per_batch": 8192, "max_batch_size": 64},
    )
    summary = run_embed(cfg)
    good, _ = check_counts(summary, str(out), 3, case=f"1 MB row, {policy}")
    if policy == "truncate":
        assert sorted(good.column("id").to_pylist()) == ["huge", "small-0", "small-1"]
        assert summary["tokens"] <= 3 * 64  # the 1 MB row costs max_tokens, not ~350k tokens
    else:
        spans = sorted((r["char_start"], r["char_end"]) for r in good.to_pylist() if r["id"] == "huge")
        assert len(spans) > 100 and spans[0][0] == 0 and spans[-1][1] == len(huge)
        assert len(spans) * len(huge.encode()) > 2 * 2**31  # the windows' copies of the text: twice Arrow's limit
        assert all(b[0] <= a[1] for a, b in itertools.pairwise(spans))  # windows overlap or touch: no text skipped
    record_figure(f"1 MB row ({policy})", output_rows=good.num_rows)


@pytest.fixture
def s3_corpus(s3_bucket):
    client, bucket = s3_bucket
    put_corpus(client, bucket, FILES)
    return client, bucket


def keys(client, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_storage_faults_are_retried_with_identical_output(
    ray_session, tiny_models, s3_corpus, s3_server, proxy, baseline
):
    """503 SlowDown, 500, connection resets and bodies cut short on reads, 503/500/resets on writes.

    A 503 or 500 answering a ranged GetObject is not retried by the S3 client ("Failed to flush response stream"),
    nor is a body cut short: the pre-pass tasks and the read stage retry those reads (pipeline.transient_errors).
    """
    _, bucket = s3_corpus
    proxy.rules = [
        FaultRule(("GET",), rf"^/{bucket}/corpus/", count=4, kinds=(503, 500, "reset", "truncate")),
        FaultRule(("PUT", "POST"), rf"^/{bucket}/emb/part-", count=4, kinds=(503, 500, "reset")),
    ]
    out = f"s3://{bucket}/emb"
    cfg = make_config(tiny_models["gemma3"], f"s3://{bucket}/corpus", out, "jsonl", proxy.url, **SMALL_BLOCKS)
    assert cfg.storage.max_attempts == 6
    summary = run_embed(cfg)
    good, _ = check_counts(summary, out, len(RECORDS), endpoint=s3_server, case="S3 faults within budget")
    assert_same_vectors(good, baseline)
    assert [r.injected for r in proxy.rules] == [4, 4]
    assert proxy.retries_seen() >= 8  # every faulted object was asked for again, and got through
    record_figure(
        "S3 faults within budget",
        faults_injected=8,
        retries_seen=proxy.retries_seen(),
        kinds="503, 500, reset, truncated body",
    )


def test_write_faults_past_the_budget_fail_naming_the_object(ray_session, tiny_models, s3_corpus, s3_server, proxy):
    client, bucket = s3_corpus
    proxy.rules = [FaultRule(("PUT", "POST"), rf"^/{bucket}/emb/part-", count=10**6, after=6)]
    cfg = make_config(
        tiny_models["gemma3"],
        f"s3://{bucket}/corpus",
        f"s3://{bucket}/emb",
        "jsonl",
        proxy.url,
        storage={"max_attempts": 2},
        **SMALL_BLOCKS,
    )
    with pytest.raises(Exception, match=rf"cannot write s3://{bucket}/emb/part-[\w-]+-0000\.parquet: .*SLOW_DOWN"):
        run_embed(cfg)
    written = keys(client, bucket, "emb/")
    assert "emb/_summary.json" not in written  # never marked complete
    for key in written:  # what did land is whole: S3 objects appear only when their upload completes
        if key.endswith(".parquet"):
            assert pq.read_table(pa_buffer(client, bucket, key)).num_rows > 0
    landed = sum(k.endswith(".parquet") for k in written)
    record_figure("S3 write faults past budget", faults_injected=proxy.rules[0].injected, whole_files_landed=landed)


def test_read_faults_past_the_budget_fail_naming_the_object(ray_session, tiny_models, s3_corpus, proxy, tmp_path):
    _, bucket = s3_corpus
    proxy.rules = [FaultRule(("GET",), rf"^/{bucket}/corpus/c1.jsonl", count=10**6, kinds=(500,))]
    out = tmp_path / "emb"
    cfg = make_config(
        tiny_models["gemma3"],
        f"s3://{bucket}/corpus",
        out,
        "jsonl",
        proxy.url,
        storage={"max_attempts": 2},
        **SMALL_BLOCKS,
    )
    with pytest.raises(Exception, match=rf"cannot read s3://{bucket}/corpus/c1.jsonl as jsonl: .*INTERNAL_FAILURE"):
        run_embed(cfg)
    assert not (out / "_summary.json").exists()
    record_figure("S3 read faults past budget", faults_injected=proxy.rules[0].injected)


def pa_buffer(client, bucket: str, key: str):
    import pyarrow as pa

    return pa.BufferReader(client.get_object(Bucket=bucket, Key=key)["Body"].read())
