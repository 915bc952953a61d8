"""Stored dimensions/precision end to end, and truncation visibility (summary counts, num_tokens/truncated)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE
from transformers import AutoTokenizer

from pipeline.actors import TokenizeActor
from pipeline.calibration import calibrate, sample_vectors
from pipeline.columns import COMPUTED, EMBED_SECONDS, TOKEN_COUNT, TRUNCATED, UNIT, UNIT_ROWS
from pipeline.config import EmbedConfig, ModelConfig
from pipeline.embed_job import file_metadata, run_embed, summarize
from pipeline.errors import UserError
from pipeline.quantization import OutputPrecision, dequantize
from pipeline.reading import REJECT, ROW, SOURCE, TEXT
from pipeline.storage import resolve
from pipeline.units import COUNTS
from pipeline.writing import embedding_metadata, output_table, write_block

RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()][:40]


def embed_config(model_dir, corpus, out, **output) -> EmbedConfig:
    return EmbedConfig.model_validate(
        {
            "input": {"uri": str(corpus), "format": "jsonl", "id_column": "id"},
            "output": {"uri": str(out), **output},
            "model": {"name_or_path": str(model_dir), "max_tokens": 24},
            "batching": {"max_tokens_per_batch": 1024, "rows_per_block": 64},
        }
    )


def block(texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            TEXT: texts,
            REJECT: pa.array([None] * n, pa.string()),
            SOURCE: ["f"] * n,
            ROW: pa.array(range(n), pa.int64()),
        }
    )


def test_tokenizer_stage_flags_truncated_rows(tiny_models):
    texts = ["short", " ".join(r["text"] for r in RECORDS[:3]), "x " * 23]
    model = ModelConfig(name_or_path=str(tiny_models["bert"]), max_tokens=24)
    out = TokenizeActor(model, "")(block(texts))
    full = AutoTokenizer.from_pretrained(tiny_models["bert"])(texts)["input_ids"]
    assert out.column(TRUNCATED).to_pylist() == [len(ids) > 24 for ids in full]
    assert out.column(TRUNCATED).to_pylist()[1] is True


def test_write_block_counts_truncated_and_chunked_rows(tmp_path):
    """Chunk counts survive blocks that split one row's chunks: rows_chunked counts chunk_index 1 rows."""
    cfg = EmbedConfig.model_validate(
        {
            "input": {"uri": "x", "format": "text"},
            "output": {"uri": str(tmp_path), "token_columns": True},
            "model": {"name_or_path": "m", "long_inputs": "chunk", "max_tokens": 256, "pooling": "mean"},
        }
    )
    # row a: 1 chunk; row b: 3 chunks; row c: 2 chunks (one of them in the next block)
    chunks = [("a", 0), ("b", 0), ("b", 1), ("b", 2), ("c", 0)], [("c", 1)]
    stats = []
    for part in chunks:
        n = len(part)
        t = pa.table(
            {
                "id": [i for i, _ in part],
                "chunk_index": pa.array([c for _, c in part], pa.int32()),
                "char_start": pa.array([0] * n, pa.int64()),
                "char_end": pa.array([1] * n, pa.int64()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * 4, np.float32)), 4),
                REJECT: pa.array([None] * n, pa.string()),
                SOURCE: ["f"] * n,
                ROW: pa.array([ord(i) for i, _ in part], pa.int64()),
                UNIT: ["f"] * n,
                UNIT_ROWS: pa.array([3] * n, pa.int64()),
                TRUNCATED: [False] * n,
                TOKEN_COUNT: pa.array([10] * n, pa.int64()),
                COMPUTED: pa.array([10] * n, pa.int64()),
                EMBED_SECONDS: [0.1] * n,
            }
        )
        stats.append(write_block(t, resolve(str(tmp_path), cfg.storage), cfg, embedding_metadata(cfg, "")))
    attempt = {name: sum(pa.concat_tables(stats).column(name).to_pylist()) for name in (*COUNTS, "embed_seconds")}
    summary = summarize(attempt, dict.fromkeys(COUNTS, 0), 1.0)
    assert summary["rows_in"] == 3
    assert (summary["rows_embedded"], summary["rows_chunked"], summary["chunks_produced"]) == (3, 2, 5)
    assert summary["rows_truncated"] == 0 and summary["output_rows"] == 6


@pytest.mark.slow
def test_dimensions_beyond_the_model_fail_before_ray(tiny_models, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps(RECORDS[0]) + "\n")
    import ray

    from pipeline.errors import UserError

    started = ray.is_initialized()  # the session's Ray, when an earlier test started it
    with pytest.raises(UserError, match=r"output.dimensions \(4096\) exceeds"):
        run_embed(embed_config(tiny_models["bert"], corpus, tmp_path / "emb", dimensions=4096))
    assert ray.is_initialized() == started, "the job started Ray before it refused output.dimensions"


@pytest.mark.slow
def test_int8_of_an_input_without_rows_writes_the_empty_output_as_float32_does(ray_session, tiny_models, tmp_path):
    """An empty corpus has no row to calibrate on and no row to quantize: an int8 run writes part-empty.parquet (int8
    column, no ranges) and its summary like a float32 run; it failed 'the calibration sample is empty'. A sample whose
    rows were all rejected still fails, saying so."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("")
    out = tmp_path / "emb"
    summary = run_embed(embed_config(tiny_models["bert"], corpus, out, dtype="int8", dimensions=16))
    table = pq.read_table(out / "part-empty.parquet")
    assert table.num_rows == 0 and table.schema.field("embedding").type == pa.list_(pa.int8(), 16)
    assert table.schema.metadata[b"rayembed.precision"] == b"int8" and (out / "_SUCCESS").exists()
    assert (summary["rows_in"], summary["precision"], summary["status"]) == (0, "int8", "ok")
    rejected = pa.table({"embedding": pa.array([None, None], pa.list_(pa.float32(), 16))})  # two rejects' rows
    with pytest.raises(UserError, match="every one of the 2 rows read for calibration .* was rejected"):
        calibrate(OutputPrecision("uint8", 16), ray_session.data.from_arrow(rejected))


def test_a_calibration_sample_without_rows_starts_no_model_pool(ray_session):
    """An int8 run on an input without a row to embed (all files empty, or every row rejected on reading) started
    the tokenizer and model pools twice: once to embed its empty calibration sample, once for the run
    (`--set output.dtype=int8` on a folder of two zero-byte .jsonl files: 'Loading weights' twice in the log, 32 s).
    The sample is now read first and embedded only when it has rows; with rows, each comes back with its vector."""
    embedded = []

    def embed(sample):
        embedded.append(sample.count())
        vectors = pa.array([[1.0, 0.0], [0.0, 1.0], None], pa.list_(pa.float32(), 2))
        return ray_session.data.from_arrow(pa.table({"embedding": vectors.slice(0, sample.count())}))

    empty = ray_session.data.from_arrow(block(["x"]).slice(0, 0))
    rows, vectors = sample_vectors(empty.limit, embed, 4)
    assert (rows, len(vectors), embedded) == (0, 0, [])
    three = ray_session.data.from_arrow(block(["a", "b", "c"]))
    rows, vectors = sample_vectors(three.limit, embed, 4)
    assert (rows, embedded) == (3, [3]) and vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.slow
def test_int8_calibrates_on_the_first_rows_that_are_not_rejects_with_dimensions_and_token_columns(
    ray_session, tiny_models, tmp_path
):
    """int8 at output.dimensions 16 with token_columns, end to end (one run: the calibration pass and the run each
    start a tokenizer and a model actor pool).

    The calibration sample was the first output.calibration_rows rows read, rejects included: 6 empty rows first
    and calibration_rows 4 failed the job ('every one of the 4 rows read for calibration ... was rejected'); fewer
    rejects left a smaller sample. Rows the model rejects (a token id outside its vocabulary) took places too. It is
    now the first 4 rows embedded: each dimension's min and max among their stored vectors are the ends of the int8
    range."""
    import shutil

    model = tmp_path / "bert"
    shutil.copytree(tiny_models["bert"], model)
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    added = {"content": "ZQXOOV", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    tokenizer["added_tokens"].append({"id": vocab, **added, "special": False})  # an id the model has no row for
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    empty = [{"id": f"empty-{i}", "text": " "} for i in range(6)]
    unknown = [{"id": f"oov-{i}", "text": f"ZQXOOV {i}"} for i in range(3)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in [*empty, *unknown, *RECORDS]))
    out = tmp_path / "emb"
    cfg = embed_config(model, corpus, out, dtype="int8", dimensions=16, token_columns=True, calibration_rows=4)
    summary = run_embed(cfg)
    assert (summary["rows_embedded"], summary["rows_rejected"]) == (len(RECORDS), 9)
    table = pq.read_table(out)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert table.schema.field("embedding").type == pa.list_(pa.int8(), 16)
    assert (meta["rayembed.precision"], meta["rayembed.dim"], meta["rayembed.pooling"]) == ("int8", "16", "mean")
    ranges = np.asarray(json.loads(meta["rayembed.quantization_ranges"]), np.float32)
    assert ranges.shape == (2, 16) and (ranges[0] < ranges[1]).all()
    stored = dict(zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()))
    sample = np.asarray([stored[r["id"]] for r in RECORDS[:4]], np.int8)  # (4, 16) int8 levels
    assert (sample.min(axis=0) == -128).all() and (sample.max(axis=0) >= 126).all()
    # the calibration sample's dequantized vectors are unit length up to the quantization step
    norms = np.linalg.norm(dequantize(sample, "int8", ranges), axis=1)
    assert np.abs(norms - 1).max() < 0.05
    # truncation is visible: the summary count equals the rows flagged, and num_tokens is capped at max_tokens
    truncated = table.column("truncated").to_pylist()
    assert summary["rows_truncated"] == sum(truncated) > 0
    assert max(table.column("num_tokens").to_pylist()) <= 24
    tok = AutoTokenizer.from_pretrained(tiny_models["bert"])
    by_id = {r["id"]: len(tok(r["text"])["input_ids"]) > 24 for r in RECORDS}
    assert dict(zip(table.column("id").to_pylist(), truncated)) == by_id
    assert (summary["precision"], summary["dimensions"], summary["pooling"]) == ("int8", 16, "mean")
    assert summary["chunks_produced"] == 0
    # an input whose every row is rejected on reading leaves no row to calibrate on: its rejects' null vectors need
    # no ranges (the model actors failed 'int8 needs calibration ranges' on such a block)
    rejects_only = OutputPrecision("int8", 16).to_arrow(np.zeros((3, 16), np.float32), np.array([True] * 3))
    assert rejects_only.null_count == 3 and rejects_only.type == pa.list_(pa.int8(), 16)


def test_a_run_storing_no_row_writes_the_empty_output_of_a_model_whose_files_name_its_width_otherwise(
    tiny_models, tmp_path
):
    """DistilBERT's config.json says `dim`, not hidden_size / d_model / n_embd: a run that stored no row wrote no
    part-empty.parquet (the model's dimension was unknown), so readers found no file. transformers' config class
    reads `dim` as hidden_size; the file has the columns and rayembed.* metadata of a run with rows."""
    from model_factory import build_model
    from tokenizers import Tokenizer

    from pipeline.embed_job import write_if_empty
    from pipeline.reading import ReadSpec

    tokenizer = Tokenizer.from_file(str(tiny_models["bert"] / "tokenizer.json"))
    model = build_model(tmp_path / "distilbert", "distilbert", tokenizer)
    assert "hidden_size" not in json.loads((model / "config.json").read_text())
    out = tmp_path / "emb"
    out.mkdir()
    cfg = embed_config(model, tmp_path / "c.jsonl", out)
    location = resolve(str(out), cfg.storage)
    summary = {"output_rows": 0, "output_files": 0}
    metadata = file_metadata(cfg, "", {"eos_token": "tokenizer"}, OutputPrecision("float32", None))
    spec = ReadSpec(location, "jsonl", "text", "id", ())
    write_if_empty(cfg, spec, summary, location, metadata, OutputPrecision("float32", None))
    table = pq.read_table(out / "part-empty.parquet")
    assert summary["output_files"] == 1 and table.num_rows == 0
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 64)
    good = pa.table({"id": ["a"], "embedding": pa.array([[0.0] * 64], pa.list_(pa.float32(), 64))})
    assert table.schema.metadata == output_table(good, [], False, metadata).schema.metadata  # as a file with rows


def test_binary_vectors_of_a_model_whose_dimension_is_not_a_multiple_of_8_record_the_models_dimension(tmp_path):
    """Packed bits of a 100-dimension model are 13 bytes: rayembed.dim said 104 (the width times 8), so a reader
    unpacking dim bits (quantization.dequantize) got 4 padding dimensions. Other outputs' metadata is unchanged (the
    resume fingerprint is made of it)."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 100}')
    good = pa.table({"id": ["a"], "embedding": pa.array([[1] * 13], pa.list_(pa.int8(), 13))})
    for dtype, dimensions, dim in (("binary", None, b"100"), ("ubinary", None, b"100"), ("binary", 40, b"40")):
        cfg = embed_config(model, tmp_path / "c.jsonl", tmp_path / "out", dtype=dtype, dimensions=dimensions)
        meta = file_metadata(cfg, "", None, OutputPrecision(dtype, dimensions))
        assert output_table(good, [], False, meta).schema.metadata[b"rayembed.dim"] == dim
    for dtype in ("float32", "int8"):
        cfg = embed_config(model, tmp_path / "c.jsonl", tmp_path / "out", dtype=dtype)
        assert "dim" not in file_metadata(cfg, "", None, None)
