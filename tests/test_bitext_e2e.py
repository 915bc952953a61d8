"""The mining job end to end: embed both sides through the embed job, mine on shard actors, write to S3.

Corpus: the SIB-200 sample, one multilingual JSONL with a `lang` column; rows with the same numeric id suffix are
translations of each other, so the French and English rows are 16 known pairs. The real-model run's copy has two
more French rows that are not mined: one the embed step rejects, and a later row of a repeated id.
"""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE
from faulty_actors import faulty, use
from robustness_helpers import embedded_here

from pipeline.bitext.job import PAIRS_SCHEMA, run_mine
from pipeline.config import EmbedConfig, parse_config
from pipeline.mine_config import MineConfig

pytestmark = pytest.mark.slow
RECORDS = {r["id"]: r for r in map(json.loads, SAMPLE.read_text().splitlines())}
SIDES = {"source": "fra_Latn", "target": "eng_Latn"}
FIRST_FRA = next(i for i, r in RECORDS.items() if r["lang"] == "fra_Latn")
# "<unk>" (WikiText writes it for rare words) is the tokenizer's unknown token: the text has no content token, a reject
# of the embed step; a later row of a repeated id is a reject of the side too
NOT_MINED = [
    {"id": "fra_Latn-unk", "lang": "fra_Latn", "text": "<unk>"},
    {**RECORDS[FIRST_FRA], "text": "a later copy"},
]


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


def s3_table(client, bucket: str, prefix: str):
    """The part-*.parquet files directly under s3://bucket/prefix (not _rejects/) as one table."""
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    parts = [
        client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys if k[len(prefix) :].startswith("part-")
    ]
    return pa.concat_tables([pq.read_table(io.BytesIO(body)) for body in parts])


@pytest.fixture(scope="module")
def mined(ray_session, tiny_models, s3_server, tmp_path_factory):
    """A mining run from and to S3 (output.dimensions 16, output.token_columns) whose k-NN search died after both
    sides were embedded and committed, then the same command again. Returns (boto3 client, bucket, the config,
    the rerun's summary, each side's _SUCCESS body after the crash, the EmbedActor starts of the rerun's state dir).

    One run serves the S3, dimensions and resume checks: the crash was a local run of its own (two more embed runs),
    which also served as the full-width reference of the dimensions check (now: the same texts embedded in this
    process by the job's stage UDFs, `embedded_here`)."""
    import boto3

    from pipeline.bitext import job

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = f"bucket-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="corpus/sample.jsonl", Body=SAMPLE.read_bytes())
    raw = mine_config(tiny_models["bert"], f"s3://{bucket}/corpus", f"s3://{bucket}/mined", s3_server)
    raw["output"].update(dimensions=16, token_columns=True)

    def crash(*args, **kwargs):
        raise RuntimeError("node lost")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job, "search_all", crash)
        with pytest.raises(RuntimeError, match="node lost"):
            run_mine(parse_config(MineConfig, raw))
    markers = {
        side: client.get_object(Bucket=bucket, Key=f"mined/embeddings/{side}/_SUCCESS")["Body"].read() for side in SIDES
    }
    state = tmp_path_factory.mktemp("rerun")
    with pytest.MonkeyPatch.context() as patch:
        use(patch, faulty({}, state))  # no fault: records every EmbedActor that starts (state/inits)
        summary = run_mine(parse_config(MineConfig, raw))
    return client, bucket, raw, summary, markers, state


@pytest.fixture(scope="module")
def again(mined):
    """An uninterrupted mining of the crashed run's committed embeddings (embeddings_uri: nothing embedded), in
    another output: (its summary, its pairs)."""
    client, bucket, raw, *_ = mined
    reuse = {
        **raw,
        "output": {"uri": f"s3://{bucket}/mined-again"},
        "source": {**raw["source"], "embeddings_uri": f"s3://{bucket}/mined/embeddings/source"},
        "target": {**raw["target"], "embeddings_uri": f"s3://{bucket}/mined/embeddings/target"},
        # searched in the driver: the first run's shard actors are the Ray search under test, and the backends give
        # the same pairs (test_bitext_stream::test_ray_shard_actors_give_the_local_result)
        "mining": {**raw["mining"], "backend": "local"},
    }
    summary = run_mine(parse_config(MineConfig, reuse))
    body = client.get_object(Bucket=bucket, Key="mined-again/pairs/part-00000.parquet")["Body"].read()
    return summary, pq.read_table(io.BytesIO(body))


def test_mine_from_and_to_s3(tiny_models, mined, again):
    """Mining reads its inputs from and writes its outputs to S3, and a second run reuses the embeddings there.

    output.dimensions (Matryoshka truncation, accepted by the mining config) was dropped on the way to the embed
    step: both sides were stored and mined at the model's full width. The stored vectors are now the first N
    dimensions, re-normalized, as the embed job stores them, and the pairs are mined from those. token_columns
    (num_tokens, truncated: which sentences max_tokens cut) was dropped too. The full-width reference: the same
    texts, model and settings embedded in this process by the job's stage UDFs."""
    client, bucket, raw, summary, _, _ = mined
    for side, lang in SIDES.items():
        cut = s3_table(client, bucket, f"mined/embeddings/{side}/").sort_by("id")
        ids = sorted(i for i, r in RECORDS.items() if r["lang"] == lang)
        assert cut.column("id").to_pylist() == ids
        cfg = EmbedConfig.model_validate(
            {"input": {"uri": "in", "format": "parquet"}, "output": {"uri": "out"}, "model": raw["model"]}
        )
        whole = embedded_here(cfg, [RECORDS[i] for i in ids])
        assert cut.schema.field("embedding").type.list_size == 16 < len(whole[ids[0]])
        assert {"num_tokens", "truncated"} <= set(cut.column_names)
        v = np.stack([whole[i] for i in ids])[:, :16]
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
    reused, pairs = again
    assert reused["source"]["embeddings"] == {
        "reused": f"s3://{bucket}/mined/embeddings/source",
        "model": str(tiny_models["bert"]),
    }
    assert pairs.equals(table)  # same vectors, same pairs


def test_a_crash_in_the_knn_search_resumes_without_embedding_again(mined, again):
    """Both sides embedded and committed, then the k-NN search dies: the same command reuses the texts and both
    embed runs (their _SUCCESS untouched, fingerprints checked; no embedding actor started) and writes the pairs
    an uninterrupted mining of those embeddings writes."""
    client, bucket, _, summary, markers, state = mined
    assert summary["resumed"] is True
    assert summary["stages_reused"] == ["texts", "embeddings/source", "embeddings/target"]
    assert summary["source"]["embeddings"]["embedded_in_earlier_attempt"] is True  # its embed_seconds are not ours
    assert not (state / "inits").exists(), "the resumed run started an embedding actor"
    after = {s: client.get_object(Bucket=bucket, Key=f"mined/embeddings/{s}/_SUCCESS")["Body"].read() for s in SIDES}
    assert after == markers
    assert again[0]["resumed"] is False
    body = client.get_object(Bucket=bucket, Key="mined/pairs/part-00000.parquet")["Body"].read()
    cut = pq.read_table(io.BytesIO(body))
    assert cut.num_rows == summary["pairs_kept"] > 0 and cut.equals(again[1])


@pytest.mark.models
def test_real_model_finds_the_translations_and_leaves_out_the_rows_it_rejects(ray_session, real_model_dir, tmp_path):
    """multilingual-e5-small on 16 French and 16 English FLORES sentences: the mined pairs are the translations.
    The k-NN search runs in the driver (backend local): the shard actors are the S3 test's, and
    test_bitext_stream::test_ray_shard_actors_give_the_local_result holds both backends to the same pairs.

    A row the job's own embed step rejects ("<unk>", the tokenizer's unknown token alone) is a reject of its side, not
    mined, with its reason in embeddings/<side>/_rejects/; the run used to fail: '1 of 17 rows have no vector ...
    the embeddings must come from the embed job over this same input'. A repeated id is a reject too (it was mined
    with the first row's vector under its own text). (That was a run of its own, all-MiniLM on an emoji-only row.)"""
    corpus = tmp_path / "sample.jsonl"
    corpus.write_bytes(SAMPLE.read_bytes() + "".join(json.dumps(r) + "\n" for r in NOT_MINED).encode())
    raw = mine_config(real_model_dir("multilingual-e5-small"), str(corpus), str(tmp_path / "mined"), backend="local")
    summary = run_mine(parse_config(MineConfig, raw))
    src = summary["source"]
    assert (src["rows_read"], src["rows_rejected"], src["rows_mined"]) == (len(RECORDS) + 2, 2, 16)
    assert (src["duplicate_ids_rejected"], src["rows_rejected_by_embedding"]) == (1, 1)
    assert summary["target"]["rows_rejected"] == 0
    rejects = pq.read_table(src["embedding_rejects"])
    assert rejects.column("id").to_pylist() == ["fra_Latn-unk"]
    assert rejects.column("reason").to_pylist()[0].startswith("text produced no content tokens")
    table = pq.read_table(tmp_path / "mined" / "pairs" / "part-00000.parquet")
    check_pairs_against_corpus(table)  # texts by id from the sample: the later copy's text would differ
    correct = sum(
        s.split("-")[1] == t.split("-")[1] for s, t in zip(table["src_id"].to_pylist(), table["tgt_id"].to_pylist())
    )
    assert summary["pairs_kept"] == 16 and correct == 16
