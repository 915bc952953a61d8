"""Helpers shared by the fault, bad-input and security suites: configs, reading a run back, the count identity.

The count identity is the point of those suites: every input row leaves the job either as embedded output or as
a reject row with its reason, so rows_in = rows embedded + rows rejected, and the files say the same as the summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from pipeline.config import EmbedConfig, StorageConfig
from pipeline.storage import resolve


def make_config(model_dir, input_uri, output_uri, fmt, endpoint=None, **sections) -> EmbedConfig:
    """A small, explicit job config: retries are spelled out rather than left to Ray's defaults."""
    raw = {
        "input": {"uri": str(input_uri), "format": fmt, **sections.pop("input", {})},
        "output": {"uri": str(output_uri), **sections.pop("output", {})},
        "model": {"name_or_path": str(model_dir), "max_tokens": 96, **sections.pop("model", {})},
        "batching": {"max_tokens_per_batch": 2048, "rows_per_block": 64, **sections.pop("batching", {})},
        "storage": {**({"endpoint_url": endpoint} if endpoint else {}), **sections.pop("storage", {})},
        "compute": {"max_restarts": 2, "max_task_retries": 2, **sections.pop("compute", {})},
        **sections,
    }
    return EmbedConfig.model_validate(raw)


def read_run(uri: str, endpoint: str | None = None) -> tuple[pa.Table, pa.Table]:
    """(embedded rows, reject rows) of a finished run; files starting with '_' or '.' are not dataset files."""
    loc = resolve(uri, StorageConfig(endpoint_url=endpoint))
    good = pads.dataset(loc.path, filesystem=loc.fs, format="parquet").to_table()
    rejects_path = f"{loc.path}/_rejects"
    if loc.fs.get_file_info(rejects_path).type == pafs.FileType.NotFound:
        return good, pa.table({"id": pa.array([], pa.string()), "reason": pa.array([], pa.string())})
    return good, pads.dataset(rejects_path, filesystem=loc.fs, format="parquet").to_table()


def check_counts(
    summary: dict, uri: str, rows_in: int, endpoint: str | None = None, case: str = ""
) -> tuple[pa.Table, pa.Table]:
    """Assert rows in = embedded + rejected, in the summary and in the files; every embedded id exactly once."""
    good, rejects = read_run(uri, endpoint)
    first = good.filter(pa.compute.equal(good.column("chunk_index"), 0)) if "chunk_index" in good.column_names else good
    ids = first.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an input row was embedded twice"
    assert summary["rows_in"] == rows_in, (summary, rows_in)
    assert summary["rows_embedded"] + summary["rows_rejected"] == rows_in
    assert (len(ids), rejects.num_rows) == (summary["rows_embedded"], summary["rows_rejected"])
    assert good.num_rows == summary["output_rows"]
    record_figure(case or uri, rows_in=rows_in, rows_out=len(ids), rows_rejected=rejects.num_rows)
    return good, rejects


def vectors_by_id(table: pa.Table) -> dict[str, np.ndarray]:
    return dict(zip(table.column("id").to_pylist(), table.column("embedding").to_numpy(zero_copy_only=False)))


def assert_same_vectors(got: pa.Table, want: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    """Same ids, each exactly once, with the same embedding (up to float noise from different batch padding)."""
    got_ids = got.column("id").to_pylist()
    assert sorted(got_ids) == sorted(want), "ids differ from the fault-free run"
    for key, vec in vectors_by_id(got).items():
        np.testing.assert_allclose(vec, want[key], atol=atol, err_msg=key)


def embedded_here(cfg: EmbedConfig, rows: list[dict]) -> dict[str, np.ndarray]:
    """{id: vector} of `rows` ({"id", "text"}) embedded in this process by the embed job's stage UDFs, built by the
    job's own stage builders (pipeline.stages.tokenize_stage, embed_stage) from `cfg` as run_embed resolves it (model
    defaults, the driver's model settings, prompt, padding, pooling skip), all rows in one block: the fault-free
    reference of a run, without a run (no Ray, no pool to start)."""
    from pipeline.actors import EmbedActor, TokenizeActor
    from pipeline.columns import EMBEDDING, REJECT, TEXT
    from pipeline.embed_job import job_prompt
    from pipeline.model_defaults import with_model_defaults
    from pipeline.model_loading import pooling_skip, resolve_model_settings
    from pipeline.stages import ClusterShape, embed_stage, tokenize_stage

    cfg, _ = with_model_defaults(cfg)
    prompt = job_prompt(cfg)
    settings = resolve_model_settings(cfg.model)
    cfg = cfg.model_copy(update={"model": settings.model})
    tokenizing = tokenize_stage(cfg, prompt, TokenizeActor, settings.shipped_tokenizer, settings.snapshot)
    skip = pooling_skip(cfg.model, prompt, settings.tokenizer)
    one_node = ClusterShape.of([{"CPU": 1.0}])
    embedding = embed_stage(cfg, EmbedActor, None, one_node, padding=settings.padding, pool_skip=skip)
    tokenize = tokenizing.fn(**tokenizing.constructor_kwargs)
    embed = embedding.fn(**embedding.constructor_kwargs)
    block = pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.string()),
            TEXT: pa.array([r["text"] for r in rows], pa.string()),
            REJECT: pa.nulls(len(rows), pa.string()),
        }
    )
    out = embed(tokenize(block))
    out = out if isinstance(out, pa.Table) else pa.concat_tables(list(out))  # a block cut in slices (EmbedActor)
    return dict(zip(out.column("id").to_pylist(), np.asarray(out.column(EMBEDDING).to_pylist(), np.float32)))


def record_figure(what: str, **figures) -> None:
    """Append figures (faults injected, retries seen, row counts) to $ROBUSTNESS_FIGURES, for the closing note."""
    path = os.environ.get("ROBUSTNESS_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"what": what, **figures}) + "\n")


def corpus_bytes(rows: list[dict]) -> bytes:
    """JSONL bytes of {id, text} records: the multi-file corpora of the fault and resume suites."""
    return b"".join(json.dumps({"id": r["id"], "text": r["text"]}).encode() + b"\n" for r in rows)


def write_corpus(root: Path, files: dict[str, list[dict]]) -> Path:
    """{file name: records} as JSONL files (corpus_bytes) under `root`; returns `root`."""
    for name, rows in files.items():
        (root / name).write_bytes(corpus_bytes(rows))
    return root


def put_corpus(client, bucket: str, files: dict[str, list[dict]], prefix: str = "corpus") -> None:
    """The same files as write_corpus, as S3 objects `<prefix>/<name>` of `bucket`."""
    for name, rows in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=corpus_bytes(rows))


def wait_for_driver_teardown(pid: int, timeout: float = 120) -> None:
    """Wait until the session's Ray has torn down the job of the SIGKILLed driver process `pid`: the GCS marks the
    job dead and none of its actors (the embedding pool, Ray Data's operator actors) is alive any more, so none of
    them writes while a test reads the output. Unlike a fixed sleep, it waits as long as a loaded machine needs, and
    no longer. Detached actors outlive their job by design (Ray Data's stats and autoscaling actors, started by the
    first Ray Data job of the session, which may be the killed driver's) and write no output: not waited for."""
    from ray._private import state  # the GCS job and actor tables (the state API needs the dashboard)

    deadline = time.monotonic() + timeout
    while True:
        jobs = {j["JobID"]: j["IsDead"] for j in state.jobs() if j["DriverPid"] == pid}
        if jobs and all(jobs.values()):
            alive = [
                a["ActorClassName"]
                for a in state.actors().values()
                if a["JobID"] in jobs and a["State"] != "DEAD" and not a["IsDetached"]
            ]
            if not alive:
                return
        assert time.monotonic() < deadline, f"Ray has not torn down the job of killed driver {pid}: {jobs}"
        time.sleep(0.1)


def embeddings_table(ids: list[str], dim: int, seed: int = 0, fixed: bool = True) -> pa.Table:
    """id + unit-length float32 vectors, as the embed job writes them (fixed) or as a user's writer may (a list)."""
    x = np.random.default_rng(seed).normal(size=(len(ids), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True) if len(ids) else 1
    flat = pa.array(x.reshape(-1), pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, dim) if fixed else pa.array(list(x), pa.list_(pa.float32()))
    return pa.table({"id": pa.array(ids, pa.string()), "embedding": column})


def parquet_bytes(table: pa.Table) -> bytes:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def odd_embedding_files(ids: list[str], dim: int) -> dict[str, bytes]:
    """An embeddings file holding `ids`, spoilt in each way a copy or another writer spoils one, by name."""
    whole = parquet_bytes(embeddings_table(ids, dim))
    nulls = pa.array([None] + [[0.5] * dim] * (len(ids) - 1), pa.list_(pa.float32()))
    # another tool's missing vector: an empty list (first, where it set the file's width that the next rows broke)
    empty = pa.array([[]] + [[0.5] * dim] * (len(ids) - 1), pa.list_(pa.float32()))
    return {
        "cut": whole[: len(whole) // 2],  # the footer gone: an interrupted copy
        "garbled": whole[:4] + b"\x00" * (len(whole) - 12) + whole[-8:],
        "not_parquet": json.dumps({"id": ids[0], "embedding": [0.0] * dim}).encode() + b"\n",
        "width": parquet_bytes(embeddings_table(ids, dim // 2)),  # another model's or output.dimensions' vectors
        "nulls": parquet_bytes(pa.table({"id": ids, "embedding": nulls})),
        "empty_vector": parquet_bytes(pa.table({"id": ids, "embedding": empty})),
        "npy": npy_bytes(np.full((len(ids), dim), 0.5, np.float32)),  # another tool's vectors as a NumPy array
        "bf16": parquet_bytes(pa.table({"id": ids, "embedding": bf16_as_uint16(len(ids), dim)})),
    }


def npy_bytes(x: np.ndarray) -> bytes:
    """The bytes np.save writes for `x`."""
    import io

    body = io.BytesIO()
    np.save(body, x)
    return body.getvalue()


def bf16_as_uint16(rows: int, dim: int) -> pa.Array:
    """bfloat16 vectors as their bit patterns in uint16 (how ml_dtypes' / torch's bfloat16 lands in Parquet)."""
    x = np.full((rows, dim), 0.5, np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)
    return pa.FixedSizeListArray.from_arrays(pa.array(bits.reshape(-1)), dim)


def without_root_powers() -> list[str]:
    """A command prefix under which this user's file permissions apply: as root, the same user without the
    capabilities that bypass them (setpriv); empty for any other user."""
    import shutil

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tried")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def run_without_root_powers(code: str) -> subprocess.CompletedProcess:
    """`python -c code` in the repository, under this user's file permissions (without_root_powers); its output as
    text. Raises CalledProcessError when it exits non-zero."""
    from conftest import REPO

    cmd = [*without_root_powers(), sys.executable, "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True, env=os.environ)
