"""End to end: corpus files (local or on the S3 server) -> jobs.embed on local Ray -> Parquet read back."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE

from jobs.embed import main as embed_main
from pipeline.config import EmbedConfig
from pipeline.embed_job import run_embed
from pipeline.storage import resolve

pytestmark = pytest.mark.slow
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def config(model_dir, input_uri, output_uri, fmt, endpoint=None, **sections) -> EmbedConfig:
    raw = {
        "input": {"uri": input_uri, "format": fmt, **sections.pop("input", {})},
        "output": {"uri": output_uri, **sections.pop("output", {})},
        "model": {"name_or_path": str(model_dir), "max_tokens": 96, **sections.pop("model", {})},
        "batching": {"max_tokens_per_batch": 2048, "rows_per_block": 128},
        "storage": {"endpoint_url": endpoint} if endpoint else {},
        **sections,
    }
    return EmbedConfig.model_validate(raw)


def read_dataset(uri: str, endpoint: str | None = None) -> pa.Table:
    from pipeline.config import StorageConfig

    loc = resolve(uri, StorageConfig(endpoint_url=endpoint))
    import pyarrow.dataset as pads

    return pads.dataset(loc.path, filesystem=loc.fs, format="parquet").to_table()


def test_parquet_corpus_on_s3(ray_session, tiny_models, s3_bucket, s3_server):
    """Parquet on S3: ids, kept columns, file metadata, the summary. `input.duplicate_ids: unchecked` skips the
    duplicate-id pre-pass: an id repeated in the second file is embedded twice, as the user's ids are trusted (it
    was test_unchecked_duplicate_ids_skip_the_prepass, a run of its own)."""
    client, bucket = s3_bucket
    repeat = {**RECORDS[0], "text": "a second copy of the first id"}
    table = pa.Table.from_pylist([*RECORDS, repeat])
    for i, part in enumerate((table.slice(0, 200), table.slice(200))):
        buf = io.BytesIO()
        pq.write_table(part, buf)
        client.put_object(Bucket=bucket, Key=f"corpus/part-{i}.parquet", Body=buf.getvalue())
    cfg = config(
        tiny_models["gemma3"],
        f"s3://{bucket}/corpus",
        f"s3://{bucket}/emb",
        "parquet",
        s3_server,
        input={"id_column": "id", "duplicate_ids": "unchecked"},
        output={"keep_columns": ["lang", "text"], "rows_per_file": 100},
    )
    summary = run_embed(cfg)
    assert summary["rows_in"] == summary["rows_embedded"] == summary["output_rows"] == len(RECORDS) + 1
    assert summary["rows_rejected"] == 0 and summary["output_files"] >= 4
    assert 0.85 < summary["padding_efficiency"] <= 1.0  # small blocks of 128 rows

    out = read_dataset(f"s3://{bucket}/emb", s3_server)
    # every row exactly once, the repeated id too
    assert sorted(out.column("id").to_pylist()) == sorted([*(r["id"] for r in RECORDS), repeat["id"]])
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 64)
    vectors = np.stack(out.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    langs = dict(zip(out.column("id").to_pylist(), out.column("lang").to_pylist()))
    assert all(langs[r["id"]] == r["lang"] for r in RECORDS)
    texts = {(i, t) for i, t in zip(out.column("id").to_pylist(), out.column("text").to_pylist())}
    assert texts == {(r["id"], r["text"]) for r in [*RECORDS, repeat]}  # the text column itself can be kept

    key = client.list_objects_v2(Bucket=bucket, Prefix="emb/part-")["Contents"][0]["Key"]
    meta = pq.read_schema(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read())).metadata
    assert meta[b"rayembed.model"] == str(tiny_models["gemma3"]).encode()
    assert meta[b"rayembed.dim"] == b"64" and meta[b"rayembed.pooling"] == b"last_token"
    assert meta[b"rayembed.normalized"] == b"true" and meta[b"rayembed.max_tokens"] == b"96"
    written = json.loads(client.get_object(Bucket=bucket, Key="emb/_summary.json")["Body"].read())
    assert written["rows_in"] == len(RECORDS) + 1


BAD_LINES = [
    b'{"id": "null", "text": null}',
    b'{"id": "empty", "text": ""}',
    b'{"id": "space", "text": "  \\t "}',
    b'{"id": "int", "text": 42}',
    b'{"id": "list", "text": ["a", "b"]}',
    b'{"id": "notjson", "text": "unterminated',
    b'{"id": "utf8", "text": "caf\xc3\x28"}',
    b'{"text": "no id here"}',
    b'["not", "an", "object"]',
]
REASONS = {
    "null text",
    "empty or whitespace-only text",
    "text is int, not a string",
    "text is list, not a string",
    "missing id",
    "JSON value is list, not an object",
}


def test_jsonl_on_s3_with_bad_rows_goes_to_rejects(ray_session, tiny_models, tmp_path, s3_bucket, s3_server):
    client, bucket = s3_bucket
    good = [json.dumps(r, ensure_ascii=False).encode() for r in RECORDS[:60]]
    client.put_object(Bucket=bucket, Key="jsonl/a.jsonl", Body=b"\n".join(good[:30] + BAD_LINES + good[30:]) + b"\n")
    out_dir = tmp_path / "emb"
    code = embed_main(
        [
            "--config",
            str(write_yaml(tmp_path, tiny_models["qwen3"], f"s3://{bucket}/jsonl", out_dir)),
            "--set",
            f"storage.endpoint_url={s3_server}",
            "--set",
            "model.prompt_name=query",
            "--set",
            "output.dtype=float16",
        ]
    )
    assert code == 0
    summary = json.loads((out_dir / "_summary.json").read_text())
    assert (summary["rows_in"], summary["rows_embedded"], summary["rows_rejected"]) == (69, 60, 9)
    assert summary["prompt"].startswith("Instruct: ")

    rejects = pq.read_table(out_dir / "_rejects").to_pylist()
    reasons = {r["reason"] for r in rejects}
    assert REASONS <= reasons
    assert any(r.startswith("line is not valid JSON") for r in reasons)
    assert any(r.startswith("invalid UTF-8 at byte") for r in reasons)
    assert {r["source"] for r in rejects} == {"a.jsonl"} and all(r["row"] >= 30 for r in rejects)

    import duckdb
    import polars as pl

    rows = duckdb.sql(f"select id, len(embedding) as d from read_parquet('{out_dir}/*.parquet')").fetchall()
    assert len(rows) == 60 and {d for _, d in rows} == {64}
    frame = pl.read_parquet(f"{out_dir}/*.parquet")
    assert frame.schema["embedding"] == pl.Array(pl.Float16, 64) or frame["embedding"].dtype.size == 64
    norms = np.linalg.norm(np.stack(pq.read_table(out_dir).column("embedding").to_numpy(zero_copy_only=False)), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)  # float16 storage
    pandas_frame = pq.read_table(out_dir).to_pandas()
    assert sorted(pandas_frame["id"]) == sorted(r["id"] for r in RECORDS[:60])


def write_yaml(tmp_path, model_dir, corpus, out_dir):
    path = tmp_path / "embed.yaml"
    path.write_text(
        f"input: {{uri: '{corpus}', format: jsonl, id_column: id}}\n"
        f"output: {{uri: '{out_dir}'}}\n"
        f"model: {{name_or_path: '{model_dir}', max_tokens: 96}}\n"
        "batching: {max_tokens_per_batch: 2048, rows_per_block: 64}\n"
    )
    return path


def test_text_files_in_chunk_mode(ray_session, tiny_models, tmp_path):
    """Chunk mode over a text file; the same corpus given as a list of one location (with a trailing slash) is the
    same run as that location written as a string (test_input_uri_as_a_list_of_locations)."""
    corpus = tmp_path / "texts"
    corpus.mkdir()
    long_line = " ".join(r["text"] for r in RECORDS[:30])
    (corpus / "b.txt").write_text("first line\n" + long_line + "\n\nlast line\n")
    model = {"pooling": "mean", "long_inputs": "chunk", "max_tokens": 64, "chunk_overlap_tokens": 8}
    cfg = config(tiny_models["bert"], str(corpus), str(tmp_path / "emb"), "text", model=model)
    summary = run_embed(cfg)
    assert (summary["rows_in"], summary["rows_embedded"], summary["rows_rejected"]) == (4, 3, 1)
    out = pq.read_table(tmp_path / "emb").to_pylist()
    chunks = sorted((r["chunk_index"], r["char_start"], r["char_end"]) for r in out if r["id"] == "b.txt#1")
    assert len(chunks) > 3 and chunks[0][1] == 0 and chunks[-1][2] == len(long_line)
    assert [c[0] for c in chunks] == list(range(len(chunks)))
    assert {r["id"] for r in out} == {"b.txt#0", "b.txt#1", "b.txt#3"}  # derived ids: file + row
    assert summary["output_rows"] == len(out)
    listed = config(tiny_models["bert"], [f"{corpus}/"], str(tmp_path / "emb"), "text", model=model)
    again = run_embed(listed, reuse_finished=True)
    assert again["reused_finished_run"] and again["rows_in"] == 4


def test_missing_text_column_lists_columns(ray_session, tiny_models, tmp_path):
    corpus = tmp_path / "p"
    corpus.mkdir()
    pq.write_table(pa.table({"id": ["a"], "body": ["hello"]}), corpus / "x.parquet")
    cfg = config(tiny_models["qwen3"], str(corpus), str(tmp_path / "emb"), "parquet")
    with pytest.raises(
        Exception, match=r"x.parquet: column\(s\) \['text'\] not found; the file has columns \['id', 'body'\]"
    ):
        run_embed(cfg)


@pytest.mark.parametrize(
    ("existing", "content", "message"),
    [
        ("part-old.parquet", b"x", "1 files .*part-old.parquet"),
        ("_SUCCESS", b'{"job": "embed", "summary": "_summary.json"}', "already holds a finished run"),
        ("_SUCCESS", b"", "holds a _SUCCESS that rayembed did not write"),  # Spark's / Hadoop's
    ],
)
def test_existing_output_is_refused_before_ray_starts(tiny_models, tmp_path, monkeypatch, existing, content, message):
    """Foreign files or a finished run are refused from the listing alone: no Ray start-up, no model resolution."""
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / existing).write_bytes(content)
    cfg = config(tiny_models["qwen3"], str(SAMPLE), str(tmp_path / "emb"), "jsonl")

    def started(*args, **kwargs):
        raise AssertionError("Ray started before the output was checked")

    monkeypatch.setattr("pipeline.embed_job.init_ray_while", started)
    with pytest.raises(FileExistsError, match=f"{message}.*output.overwrite=true"):
        run_embed(cfg)


def test_init_ray_while_returns_the_work_or_raises_its_error_and_never_waits_on_it(monkeypatch):
    """The driver's model resolution runs beside Ray's start-up: its value or its own error comes back; when Ray's
    start fails (or Ctrl-C arrives) the job does not wait for the work (a large model's hash) to finish."""
    import threading
    import time

    from pipeline import embed_job
    from pipeline.config import ComputeConfig

    started = []
    monkeypatch.setattr(embed_job, "init_ray", lambda compute, paths=None: started.append(threading.current_thread()))
    assert embed_job.init_ray_while(ComputeConfig(), lambda: 42) == 42
    assert started == [threading.main_thread()]  # Ray starts in the main thread (its signal handlers need it)

    broken = ValueError("tokenizer.json is cut")

    def fails():
        raise broken

    with pytest.raises(ValueError) as caught:
        embed_job.init_ray_while(ComputeConfig(), fails)
    assert caught.value is broken

    def ray_fails(compute, paths=None):
        raise RuntimeError("ray did not start")

    monkeypatch.setattr(embed_job, "init_ray", ray_fails)
    release = threading.Event()
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="ray did not start"):
        embed_job.init_ray_while(ComputeConfig(), lambda: release.wait(60))
    assert time.perf_counter() - start < 5
    release.set()


def test_a_cluster_address_nothing_answers_at_fails_fast_naming_the_key(monkeypatch):
    """ray.init retries an address nobody listens at without end (minutes of GCS warnings): one error instead."""
    import socket
    import time

    from pipeline import embed_job
    from pipeline.config import ComputeConfig

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again below: nothing listens there
    monkeypatch.setattr(embed_job, "RAY_CONNECT_SECONDS", 1.0)
    monkeypatch.setattr(embed_job.ray, "is_initialized", lambda: False)
    start = time.perf_counter()
    with pytest.raises(embed_job.RayStartError, match=rf"cannot reach the Ray cluster at 127\.0\.0\.1:{port} "):
        embed_job.init_ray(ComputeConfig(ray_address=f"127.0.0.1:{port}"))
    assert time.perf_counter() - start < 10
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(embed_job.RayStartError, match=r"\(RAY_ADDRESS\)"):
        embed_job.init_ray(ComputeConfig())
    with socket.socket() as listening:  # a head that answers: no error, Ray takes over
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        embed_job.check_reachable(f"127.0.0.1:{listening.getsockname()[1]}", "compute.ray_address", seconds=0)
    for left_to_ray in ("auto", "local", "http://127.0.0.1:8265"):
        embed_job.check_reachable(left_to_ray, "compute.ray_address", seconds=0)


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("http://127.0.0.1:8265", "the dashboard's"),
        ("https://ray.example.com", "the dashboard's"),
        ("ray://127.0.0.1:10001", "a Ray Client address, and Ray Data does not run through Ray Client"),
        # any other scheme is a Ray Client protocol to ray.init ('Module: gcs does not exist', a traceback)
        ("gcs://127.0.0.1:6379", "a Ray Client address"),
        ("anyscale://head", "a Ray Client address"),
    ],
)
def test_a_dashboard_or_ray_client_address_is_one_error_naming_the_key(address, what, monkeypatch):
    """RAY_ADDRESS=http://head:8265, as `ray job submit` takes it, then `python -m jobs.embed` here: Ray's ValueError
    ('Invalid Ray address') was a traceback. RAY_ADDRESS=ray://head:10001 (Ray Client) loaded the model and then
    failed in Ray Data's executor with a traceback ('Worker' object has no attribute 'core_worker', checked on a
    `ray start --head` with a client server). Each is one error saying which addresses work."""
    from pipeline import embed_job
    from pipeline.config import ComputeConfig

    monkeypatch.setattr(embed_job.ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(embed_job.RayStartError, match=rf"RAY_ADDRESS is {re.escape(address)}, {what}.*:6379") as err:
        embed_job.init_ray(ComputeConfig())
    assert isinstance(err.value, embed_job.UserError)
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(embed_job.RayStartError, match=rf"compute\.ray_address is {re.escape(address)}, "):
        embed_job.init_ray(ComputeConfig(ray_address=address))


@pytest.mark.parametrize(
    "address, example",
    [
        ("localhost", "localhost:6379"),
        ("127.0.0.1", "127.0.0.1:6379"),
        ("AUTO", "HEAD:6379"),
        (" auto", "HEAD:6379"),
        ("head:", "HEAD:6379"),
        (":6379", "HEAD:6379"),
    ],
)
def test_an_address_ray_cannot_parse_is_one_error_naming_the_key(address, example, monkeypatch):
    """A host without its port, or `auto` in capitals or with a space: Ray's 'ValueError: Invalid address format' was
    a traceback. Each is one error naming the key and the forms that work."""
    from pipeline import embed_job
    from pipeline.config import ComputeConfig

    monkeypatch.setattr(embed_job.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(embed_job.ray, "init", lambda **_: pytest.fail("ray.init reached"))
    pattern = rf"compute\.ray_address is {re.escape(repr(address))}, which is not a Ray cluster address.*{example}"
    with pytest.raises(embed_job.RayStartError, match=pattern) as err:
        embed_job.init_ray(ComputeConfig(ray_address=address))
    assert isinstance(err.value, embed_job.UserError)
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(embed_job.RayStartError, match=rf"RAY_ADDRESS is {re.escape(repr(address))}, "):
        embed_job.init_ray(ComputeConfig())


def test_a_cluster_ray_cannot_connect_to_is_one_error_naming_the_key(monkeypatch):
    """`compute.ray_address: auto` with no cluster Ray can find (or a head that went away, a refused token): Ray's
    ConnectionError was a traceback; it is one error naming the key, with what `auto` means."""
    from pipeline import embed_job
    from pipeline.config import ComputeConfig

    def no_cluster(**_):  # Ray's own words for `auto` when it finds no cluster (ray/_private/services.py)
        raise ConnectionError(
            "Could not find any running Ray instance. Please specify the one to connect to by setting `--address` "
            "flag or `RAY_ADDRESS` environment variable."
        )

    monkeypatch.setattr(embed_job.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(embed_job.ray, "init", no_cluster)
    with pytest.raises(
        embed_job.RayStartError,
        match=r"cannot connect to the Ray cluster at auto \(compute\.ray_address\): ConnectionError: Could not find any running Ray instance.*'auto' connects to the cluster Ray finds",
    ):
        embed_job.init_ray(ComputeConfig(ray_address="auto"))
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(embed_job.RayStartError, match=r"at auto \(RAY_ADDRESS\)") as raised:
        embed_job.init_ray(ComputeConfig())
    assert isinstance(raised.value, embed_job.UserError)  # printed as one `error:` line by the jobs


def test_many_small_files_on_s3_are_one_unit_and_one_output_file(ray_session, tiny_models, s3_bucket, s3_server):
    """40 JSONL objects of 1-3 rows under nested prefixes, with spaces, '#', '%' and '=' in their names: each was a
    unit of its own, so 40 read tasks, 40 markers and 40 output files of 1-3 rows. Packed, they are one of each; a
    repeated id names the file of its first copy, and a rerun that finds the unit committed skips all 40 files."""
    client, bucket = s3_bucket
    rows = 0
    for f in range(40):
        text = [RECORDS[(f * 3 + r) % len(RECORDS)]["text"] for r in range(1 + f % 3)]
        lines = [{"id": f"{f}-{r}", "text": t, "lang": f"l{f % 2}"} for r, t in enumerate(text)]
        if f == 39:
            lines.append({"id": "0-0", "text": "a later copy of an id"})
        key = f"corpus/d{f % 3}/x=1/f {f:02d}#%.jsonl"
        client.put_object(Bucket=bucket, Key=key, Body="".join(json.dumps(x) + "\n" for x in lines).encode())
        rows += len(lines)
    cfg = config(tiny_models["bert"], f"s3://{bucket}/corpus", f"s3://{bucket}/emb", "jsonl", s3_server)
    cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"id_column": "id"})})
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"keep_columns": ["lang"]})})
    summary = run_embed(cfg)
    assert (summary["rows_in"], summary["rows_embedded"], summary["rows_rejected"]) == (rows, rows - 1, 1)
    assert (summary["input_files"], summary["units"], summary["output_files"]) == (40, 1, 1)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="emb/")["Contents"]]
    assert len([k for k in keys if k.startswith("emb/part-")]) == 1
    assert len([k for k in keys if k.startswith("emb/_run/units/") and k.endswith(".json")]) == 1
    rejects = pq.read_table(f"{bucket}/emb/_rejects", filesystem=resolve(f"s3://{bucket}", cfg.storage).fs)
    assert rejects.column("reason").to_pylist() == ["duplicate id (first at d0/x=1/f 00#%.jsonl row 0)"]
    assert rejects.column("source").to_pylist() == ["d0/x=1/f 39#%.jsonl"]
    written = read_dataset(f"s3://{bucket}/emb", s3_server)
    ids = written.column("id").to_pylist()
    assert sorted(ids) == sorted(f"{f}-{r}" for f in range(40) for r in range(1 + f % 3))
    assert written.column("lang").to_pylist() == [f"l{int(i.split('-')[0]) % 2}" for i in ids]

    for name in ("_SUCCESS", "_summary.json"):  # a run killed after its last unit, before its summary
        client.delete_object(Bucket=bucket, Key=f"emb/{name}")
    again = run_embed(cfg)
    assert (again["units_skipped"], again["files_skipped"], again["rows_read"]) == (1, 40, 0)
    assert (again["rows_in"], again["rows_reused"], again["rows_rejected"]) == (rows, rows - 1, 1)


def test_nested_text_id_and_kept_columns_end_to_end(ray_session, tiny_models, tmp_path):
    """`input.text_column: meta.text`, `input.id_column: meta.id`, `output.keep_columns: [meta.lang]` on JSONL
    objects and Parquet structs: the job failed "column(s) ['meta.text'] not found; the file has columns ['meta']".
    A row whose struct is null is a reject saying so; rows in = embedded + rejected; the kept field is the flat
    output column `meta.lang`. One run over a JSONL and a Parquet file (input.format from each file's extension; it
    was a run per format)."""
    corpus = tmp_path / "nested"
    corpus.mkdir()
    files = {"a.jsonl": RECORDS[:20], "b.parquet": RECORDS[20:40]}
    for name, rows in files.items():
        records = [{"meta": {"id": r["id"], "text": r["text"], "lang": "de"}, "n": k} for k, r in enumerate(rows)]
        records[5]["meta"] = None
        if name.endswith(".jsonl"):
            (corpus / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        else:
            pq.write_table(pa.Table.from_pylist(records), corpus / name)
    cfg = config(
        tiny_models["bert"],
        str(corpus),
        str(tmp_path / "emb"),
        None,
        input={"text_column": "meta.text", "id_column": "meta.id"},
        output={"keep_columns": ["meta.lang"]},
        model={"pooling": "mean"},
    )
    summary = run_embed(cfg)
    assert (summary["rows_in"], summary["rows_embedded"], summary["rows_rejected"]) == (40, 38, 2)
    out = pq.read_table(tmp_path / "emb")
    want = [r["id"] for rows in files.values() for k, r in enumerate(rows) if k != 5]
    assert sorted(out.column("id").to_pylist()) == sorted(want)
    assert set(out.column("meta.lang").to_pylist()) == {"de"}
    rejects = pq.read_table(tmp_path / "emb" / "_rejects").to_pylist()
    assert sorted((r["source"], r["row"], r["reason"]) for r in rejects) == [
        (name, 5, "no text at 'meta.text': 'meta' is null") for name in files
    ]


def test_input_uri_as_a_list_of_locations(ray_session, tiny_models, tmp_path):
    """Two folders with the same file name, and a glob: one corpus, every row once, derived ids unique
    (`<path below the common folder>#<row>`). The same list in another order is the same run (reused, not
    re-embedded); a list of one location is the same run as that location written as a string
    (test_text_files_in_chunk_mode, on its finished run: it was a run of its own here)."""
    for folder, rows in (("2024/a", RECORDS[:5]), ("2024/b", RECORDS[5:9]), ("2025", RECORDS[9:12])):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    uris = [str(tmp_path / "2024/a"), str(tmp_path / "2024/b"), f"{tmp_path}/2025/*.jsonl"]
    out = str(tmp_path / "emb")
    summary = run_embed(config(tiny_models["gemma3"], uris, out, "jsonl"))
    assert (summary["rows_in"], summary["rows_embedded"], summary["input_files"]) == (12, 12, 3)
    table = read_dataset(out)
    assert sorted(table.column("id").to_pylist()) == sorted(
        [f"2024/a/part-0.jsonl#{i}" for i in range(5)]
        + [f"2024/b/part-0.jsonl#{i}" for i in range(4)]
        + [f"2025/part-0.jsonl#{i}" for i in range(3)]
    )
    again = run_embed(config(tiny_models["gemma3"], uris[::-1], out, "jsonl"), reuse_finished=True)
    assert again["reused_finished_run"]


def test_input_uri_list_over_two_s3_buckets_with_odd_keys(ray_session, tiny_models, s3_bucket, s3_server, tmp_path):
    """Prefixes of two buckets, keys with spaces, `#`, `?`, `+`, `%` and non-ASCII letters: every row read once;
    a derived id is the key below the store (`bucket/key#row`), as `_source` says."""
    import boto3

    client, bucket = s3_bucket
    other = bucket + "-b"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=other)
    names = ["a b.jsonl", "c#1.jsonl", "d?x=1.jsonl", "e+f%20.jsonl", "größe ü.jsonl"]
    for k, name in enumerate(names):
        body = "".join(json.dumps(r) + "\n" for r in RECORDS[3 * k : 3 * k + 3]).encode()
        client.put_object(Bucket=bucket if k % 2 else other, Key=f"corpus/{name}", Body=body)
    uris = [f"s3://{bucket}/corpus", f"s3://{other}/corpus/"]
    out = f"s3://{bucket}-out/emb"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=f"{bucket}-out")
    summary = run_embed(config(tiny_models["gemma3"], uris, out, "jsonl", endpoint=s3_server))
    assert (summary["rows_in"], summary["rows_embedded"]) == (15, 15)
    ids = read_dataset(out, s3_server).column("id").to_pylist()
    want = [f"{bucket if k % 2 else other}/corpus/{name}#{i}" for k, name in enumerate(names) for i in range(3)]
    assert sorted(ids) == sorted(want)


def test_a_delta_table_is_embedded_at_its_current_version(ray_session, tiny_models, tmp_path):
    """A Delta table whose fr partition was overwritten: the job embeds the current version's rows once each, the
    files the overwrite removed left out (they were embedded too, then refused), with the partition as a kept
    column and ids `<file>#<row>` (pipeline/delta_tables.py)."""
    deltalake = pytest.importorskip("deltalake")
    table = str(tmp_path / "t")
    texts = [r["text"] for r in RECORDS[:6]]
    first = pa.table({"text": texts[:4], "lang": ["fr", "fr", "de", "de"]})
    deltalake.write_deltalake(table, first, partition_by=["lang"])
    fr = pa.table({"text": texts[4:], "lang": ["fr", "fr"]})
    deltalake.write_deltalake(table, fr, mode="overwrite", predicate="lang = 'fr'")
    live = pa.table(deltalake.DeltaTable(table).get_add_actions()).column("path").to_pylist()
    out = str(tmp_path / "emb")
    summary = run_embed(config(tiny_models["qwen3"], table, out, "parquet", output={"keep_columns": ["lang"]}))
    assert (summary["rows_in"], summary["rows_embedded"], summary["input_files"]) == (4, 4, 2)
    got = read_dataset(out).sort_by("id")
    assert sorted(got.column("lang").to_pylist()) == ["de", "de", "fr", "fr"]
    assert got.column("id").to_pylist() == sorted(f"{p}#{i}" for p in live for i in range(2))
