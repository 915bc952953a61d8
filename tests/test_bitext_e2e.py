"""The mining job end to end: embed both sides through the embed job, mine on shard actors, write to S3.

Corpus: the SIB-200 sample, one multilingual JSONL with a `lang` column; rows with the same numeric id suffix are
translations of each other, so the French and English rows are 16 known pairs.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE

from pipeline.bitext.job import PAIRS_SCHEMA, run_mine
from pipeline.config import parse_config
from pipeline.mine_config import MineConfig

pytestmark = pytest.mark.slow
RECORDS = {r["id"]: r for r in map(json.loads, SAMPLE.read_text().splitlines())}


def mine_config(model_dir, corpus_uri: str, output_uri: str, endpoint: str | None = None, **mining) -> dict:
    side = {"uri": corpus_uri, "format": "jsonl", "id_column": "id", "lang_column": "lang"}
    return {
        "source": {**side, "lang": "fra_Latn"},
        "target": {**side, "lang": "eng_Latn"},
        "output": {"uri": output_uri},
        "model": {"name_or_path": str(model_dir), "pooling": "mean", "prompt": "query: ", "max_tokens": 128},
        "storage": {"endpoint_url": endpoint} if endpoint else {},
        "compute": {"num_actors": 1, "cpus_per_actor": 1},
        "mining": {"num_shards": 2, "cpus_per_shard": 0.5, "block_size": 5, **mining},
    }


def check_pairs_against_corpus(table) -> None:
    """Every output row's ids, texts and languages must be those of the corpus rows: the joins lost nothing."""
    assert table.schema.equals(PAIRS_SCHEMA)
    for row in table.to_pylist():
        src, tgt = RECORDS[row["src_id"]], RECORDS[row["tgt_id"]]
        assert (src["text"], src["lang"]) == (row["src_text"], row["src_lang"]) == (src["text"], "fra_Latn")
        assert (tgt["text"], tgt["lang"]) == (row["tgt_text"], row["tgt_lang"]) == (tgt["text"], "eng_Latn")
    assert len(set(table.column("src_id").to_pylist())) == len(set(table.column("tgt_id").to_pylist())) == len(table)


@pytest.fixture(scope="module")
def crashed(ray_session, tiny_models, tmp_path_factory):
    """A local mining run at the model's full width whose k-NN search died after both sides were embedded and
    committed, then the same command again: (output dir, config, the rerun's summary, each side's _SUCCESS mtime
    after the crash). Its embeddings are also the full-width reference of the output.dimensions test."""
    from pipeline.bitext import job

    out = tmp_path_factory.mktemp("crash") / "cut"
    raw = mine_config(tiny_models["bert"], str(SAMPLE), str(out), backend="local")

    def crash(*args, **kwargs):
        raise RuntimeError("node lost")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job, "search_all", crash)
        with pytest.raises(RuntimeError, match="node lost"):
            run_mine(parse_config(MineConfig, raw))
    markers = {side: (out / "embeddings" / side / "_SUCCESS").stat().st_mtime_ns for side in ("source", "target")}
    return out, raw, run_mine(parse_config(MineConfig, raw)), markers


def s3_table(client, bucket: str, prefix: str):
    """The part-*.parquet files directly under s3://bucket/prefix (not _rejects/) as one table."""
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    parts = [
        client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys if k[len(prefix) :].startswith("part-")
    ]
    return pa.concat_tables([pq.read_table(io.BytesIO(body)) for body in parts])


def test_mine_from_and_to_s3(ray_session, tiny_models, s3_bucket, s3_server, crashed):
    """Mining reads its inputs from and writes its outputs to S3, and a second run reuses the embeddings there.

    output.dimensions (Matryoshka truncation, accepted by the mining config) was dropped on the way to the embed
    step: both sides were stored and mined at the model's full width. The stored vectors are now the first N
    dimensions, re-normalized, as the embed job stores them, and the pairs are mined from those. token_columns
    (num_tokens, truncated: which sentences max_tokens cut) was dropped too. The full-width reference is the
    `crashed` run's embeddings: the same texts, model and settings, without output.dimensions."""
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/sample.jsonl", Body=SAMPLE.read_bytes())
    raw = mine_config(tiny_models["bert"], f"s3://{bucket}/corpus", f"s3://{bucket}/mined", s3_server)
    raw["output"].update(dimensions=16, token_columns=True)
    summary = run_mine(parse_config(MineConfig, raw))
    for side in ("source", "target"):
        cut = s3_table(client, bucket, f"mined/embeddings/{side}/").sort_by("id")
        whole = pq.read_table(crashed[0] / "embeddings" / side).sort_by("id")
        assert cut.column("id").equals(whole.column("id"))
        assert cut.schema.field("embedding").type.list_size == 16 < whole.schema.field("embedding").type.list_size
        assert {"num_tokens", "truncated"} <= set(cut.column_names) and "num_tokens" not in whole.column_names
        v = np.asarray(whole.column("embedding").to_pylist(), np.float32)[:, :16]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        np.testing.assert_allclose(np.asarray(cut.column("embedding").to_pylist()), v, atol=1e-5)
    assert summary["dim"] == 16 and summary["pairs_kept"] > 0

    assert summary["source"]["rows_read"] == summary["target"]["rows_read"] == len(RECORDS)
    assert summary["source"]["rows_mined"] == summary["target"]["rows_mined"] == 16
    assert summary["shards"]["forward"] == 2
    body = client.get_object(Bucket=bucket, Key="mined/pairs/part-00000.parquet")["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert table.num_rows == summary["pairs_kept"] > 0
    check_pairs_against_corpus(table)
    written = json.loads(client.get_object(Bucket=bucket, Key="mined/summary.json")["Body"].read())
    assert written["pairs_selected"] == summary["pairs_selected"]
    png = client.get_object(Bucket=bucket, Key="mined/score_histogram.png")["Body"].read()
    assert png[:4] == b"\x89PNG"
    # the embedded inputs are exactly the mined rows, so a second run can reuse them without embedding again
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="mined/embeddings/")["Contents"]}
    assert any(k.startswith("mined/embeddings/source/part-") for k in keys)
    reuse = {
        **raw,
        "output": {"uri": f"s3://{bucket}/mined-again"},
        "source": {**raw["source"], "embeddings_uri": f"s3://{bucket}/mined/embeddings/source"},
        "target": {**raw["target"], "embeddings_uri": f"s3://{bucket}/mined/embeddings/target"},
        # searched in the driver: the first run's shard actors are the Ray search under test, and the backends give
        # the same pairs (test_bitext_stream::test_ray_shard_actors_give_the_local_result)
        "mining": {**raw["mining"], "backend": "local"},
    }
    again = run_mine(parse_config(MineConfig, reuse))
    assert again["source"]["embeddings"] == {
        "reused": reuse["source"]["embeddings_uri"],
        "model": str(tiny_models["bert"]),
    }
    body = client.get_object(Bucket=bucket, Key="mined-again/pairs/part-00000.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).equals(table)  # same vectors, same pairs


def test_a_crash_in_the_knn_search_resumes_without_embedding_again(crashed, tmp_path):
    """Both sides embedded and committed, then the k-NN search dies: the same command reuses the texts and both
    embed runs (their _SUCCESS untouched, fingerprints checked) and writes the pairs an uninterrupted mining of
    those embeddings writes."""
    out, raw, summary, markers = crashed
    assert summary["resumed"] is True
    assert summary["stages_reused"] == ["texts", "embeddings/source", "embeddings/target"]
    assert summary["source"]["embeddings"]["embedded_in_earlier_attempt"] is True  # its embed_seconds are not ours
    assert {side: (out / "embeddings" / side / "_SUCCESS").stat().st_mtime_ns for side in markers} == markers
    whole = {
        **raw,
        "output": {"uri": str(tmp_path / "whole")},
        **{side: {**raw[side], "embeddings_uri": str(out / "embeddings" / side)} for side in ("source", "target")},
    }
    assert run_mine(parse_config(MineConfig, whole))["resumed"] is False
    cut = pq.read_table(out / "pairs" / "part-00000.parquet")
    assert cut.num_rows == summary["pairs_kept"] > 0 and cut.equals(
        pq.read_table(tmp_path / "whole" / "pairs" / "part-00000.parquet")
    )


@pytest.mark.models
def test_real_model_finds_the_translations(ray_session, real_model_dir, tmp_path):
    """multilingual-e5-small on 16 French and 16 English FLORES sentences: the mined pairs are the translations.
    The k-NN search runs in the driver (backend local): the shard actors are the S3 test's, and
    test_bitext_stream::test_ray_shard_actors_give_the_local_result holds both backends to the same pairs."""
    raw = mine_config(real_model_dir("multilingual-e5-small"), str(SAMPLE), str(tmp_path / "mined"), backend="local")
    summary = run_mine(parse_config(MineConfig, raw))
    table = pq.read_table(tmp_path / "mined" / "pairs" / "part-00000.parquet")
    check_pairs_against_corpus(table)
    correct = sum(
        s.split("-")[1] == t.split("-")[1] for s, t in zip(table["src_id"].to_pylist(), table["tgt_id"].to_pylist())
    )
    assert summary["pairs_kept"] == 16 and correct == 16


def test_rows_the_embed_step_rejects_are_rejects_of_the_side(ray_session, real_model_dir, tmp_path):
    """A row the job's own embed step rejects (emoji only: all-MiniLM's [UNK] alone) is a reject of its side, not
    mined, with its reason in embeddings/<side>/_rejects/; the run used to fail: '1 of 3 rows have no vector ...
    the embeddings must come from the embed job over this same input'. A repeated id is a reject too (it was
    mined with the first row's vector under its own text)."""
    lines = [("s1", "the cat sleeps"), ("s2", "\U0001f600\U0001f600"), ("s3", "the dog runs"), ("s1", "a bird sings")]
    (tmp_path / "src.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in lines))
    (tmp_path / "tgt.jsonl").write_text(
        "".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(["le chat dort", "le chien court"]))
    )
    side = {"format": "jsonl", "id_column": "id"}
    raw = {
        "source": {**side, "uri": str(tmp_path / "src.jsonl"), "lang": "eng"},
        "target": {**side, "uri": str(tmp_path / "tgt.jsonl"), "lang": "fra"},
        "output": {"uri": str(tmp_path / "mined")},
        "model": {"name_or_path": str(real_model_dir("all-minilm-l6-v2")), "max_tokens": 32},
        "compute": {"num_actors": 1, "cpus_per_actor": 1},
        "mining": {"backend": "local", "k": 2},
    }
    src = run_mine(parse_config(MineConfig, raw))["source"]
    assert (src["rows_read"], src["rows_rejected"], src["rows_mined"]) == (4, 2, 2)
    assert (src["duplicate_ids_rejected"], src["rows_rejected_by_embedding"]) == (1, 1)
    reasons = pq.read_table(src["embedding_rejects"]).column("reason").to_pylist()
    assert len(reasons) == 1 and reasons[0].startswith("text produced no content tokens")
    pairs = pq.read_table(tmp_path / "mined" / "pairs").to_pylist()
    assert {(p["src_id"], p["src_text"]) for p in pairs} <= {("s1", "the cat sleeps"), ("s3", "the dog runs")}
