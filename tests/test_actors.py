"""The stage UDFs called directly (no Ray): blocks whose rows are all rejects pass through every stage, and rows
the tokenizer or the model reject leave their block as rejects with reasons while the rest is embedded."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.actors import TOKENS, EmbedActor, TokenizeActor
from pipeline.columns import TOKEN_COUNT, TRUNCATED, UNIT, UNIT_ROWS
from pipeline.config import BatchingConfig, EmbedConfig, ModelConfig
from pipeline.reading import REJECT, ROW, SOURCE, TEXT
from pipeline.storage import resolve
from pipeline.writing import write_block


def read_block(texts: list, reasons: list) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": pa.array([f"f#{i}" for i in range(n)], pa.string()),
            TEXT: pa.array(texts, pa.string()),
            REJECT: pa.array(reasons, pa.string()),
            SOURCE: pa.array(["f"] * n, pa.string()),
            ROW: pa.array(range(n), pa.int64()),
            UNIT: pa.array(["0123456789abcdef"] * n, pa.string()),  # the read stage's unit columns (pipeline.units)
            UNIT_ROWS: pa.array([n] * n, pa.int64()),
        }
    )


@pytest.fixture(scope="module")
def stages(tiny_models):
    model = ModelConfig(name_or_path=str(tiny_models["bert"]), pooling="mean", max_tokens=64)
    return TokenizeActor(model, ""), EmbedActor(model, BatchingConfig(), 1, "float32")


@pytest.mark.parametrize("rows", [0, 3])
def test_a_block_without_good_rows_passes_every_stage(stages, tmp_path, rows):
    tokenize, embed = stages
    block = read_block([None] * rows, ["invalid UTF-8 at byte 0"] * rows)
    tokenized = tokenize(block)
    assert tokenized.num_rows == rows and tokenized.column(TOKENS).to_pylist() == [[]] * rows
    embedded = embed(tokenized)
    assert embedded.num_rows == rows and embedded.column("embedding").null_count == rows
    cfg = EmbedConfig.model_validate({"input": {"uri": "x", "format": "jsonl"}, "output": {"uri": str(tmp_path)}})
    stats = write_block(embedded, resolve(str(tmp_path), cfg.storage), cfg, {}).to_pylist()  # one row per unit
    counts = [(s["rows_embedded"], s["rows_rejected"], s["output_rows"]) for s in stats]
    assert counts == ([(0, rows, 0)] if rows else [])


def test_a_row_the_model_rejects_leaves_the_rest_of_its_block_embedded(stages):
    tokenize, embed = stages
    tokenized = tokenize(read_block(["first text", "second text", "third", None], [None, None, None, "null text"]))
    tokens = tokenized.column(TOKENS).to_pylist()
    tokens[1] = [5, 10**6, 7]  # an id outside the vocabulary: on a GPU a device-side assert, here a reject
    tokenized = tokenized.set_column(
        tokenized.schema.get_field_index(TOKENS), TOKENS, pa.array(tokens, pa.list_(pa.int32()))
    )
    out = embed(tokenized)
    vocab = embed.encoder.vocab_size
    assert out.column(REJECT).to_pylist() == [
        None,
        f"token id 1000000 is outside the model's vocabulary ({vocab} ids)",
        None,
        "null text",
    ]
    assert out.column("embedding").is_null().to_pylist() == [False, True, False, True]
    assert out.column(TOKEN_COUNT).to_pylist()[1] == 0  # a reject costs no tokens in the summary
    alone = embed(tokenize(read_block(["third"], [None])))
    np.testing.assert_allclose(out.column("embedding")[2].as_py(), alone.column("embedding")[0].as_py(), atol=1e-5)


def test_non_finite_rows_are_counted_for_the_summary(tmp_path):
    """Recomputed-in-float32 rows and non-finite rejects reach _summary.json through the write stage's stats."""
    from pipeline.columns import COMPUTED, EMBED_SECONDS, RECOMPUTED, TOKEN_COUNT, TRUNCATED
    from pipeline.embed_job import summarize
    from pipeline.units import COUNTS

    n = 4
    reasons = [None, None, "non-finite embedding (NaN or inf) in torch.float16 and again in float32", "null text"]
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array([0.6, 0.8] * n, pa.float32()), 2, mask=pa.array([False, False, True, True])
    )
    block = read_block(["a", "b", None, None], reasons).drop_columns([TEXT])
    for name, values in {
        "chunk_index": pa.array([0] * n, pa.int32()),
        "char_start": pa.array([0] * n, pa.int64()),
        "char_end": pa.array([1] * n, pa.int64()),
        TRUNCATED: pa.array([False] * n),
        "embedding": vectors,
        TOKEN_COUNT: pa.array([3, 3, 0, 0]),
        COMPUTED: pa.array([3, 3, 0, 0]),
        RECOMPUTED: pa.array([False, True, False, False]),
        EMBED_SECONDS: pa.array([0.1, 0.1, 0.0, 0.0]),
    }.items():
        block = block.append_column(name, values)
    cfg = EmbedConfig.model_validate({"input": {"uri": "x", "format": "jsonl"}, "output": {"uri": str(tmp_path)}})
    stats = write_block(block, resolve(str(tmp_path), cfg.storage), cfg, {})
    attempt = {name: sum(stats.column(name).to_pylist()) for name in (*COUNTS, "embed_seconds")}
    summary = summarize(attempt, dict.fromkeys(COUNTS, 0), 1.0)
    assert (summary["rows_embedded"], summary["rows_rejected"]) == (2, 2)
    assert (summary["nonfinite_recomputed"], summary["nonfinite_rejected"]) == (1, 1)


@pytest.mark.parametrize("arch", ["gemma3", "qwen3", "bert"])
def test_actors_given_the_drivers_tokenizer_match_actors_that_load_it(tiny_models, arch):
    """The driver hands its tokenizer (pickled, as Ray ships constructor arguments) and padding to the actors, which
    then skip loading it: same tokens (prompt, EOS convention, truncation) and same vectors as actors that load it."""
    import pickle

    from pipeline.model_loading import resolve_model_settings

    config = ModelConfig(name_or_path=str(tiny_models[arch]), max_tokens=16)
    settings = resolve_model_settings(config)
    shipped = pickle.loads(pickle.dumps(settings.shipped_tokenizer))
    block = read_block(["short text", "a much longer text " * 20, "x"], [None, None, None])
    own = TokenizeActor(settings.model, "query: ")(block)
    given = TokenizeActor(settings.model, "query: ", tokenizer=shipped)(block)
    assert given.column(TOKENS).to_pylist() == own.column(TOKENS).to_pylist()
    assert given.column(TRUNCATED).to_pylist() == own.column(TRUNCATED).to_pylist() == [False, True, False]
    loading = EmbedActor(settings.model, BatchingConfig(), 1, "float32")
    handed = EmbedActor(settings.model, BatchingConfig(), 1, "float32", padding=settings.padding)
    assert handed.encoder.pad_token_id == loading.encoder.pad_token_id
    assert handed.encoder.left == loading.encoder.left
    assert handed(given).column("embedding").to_pylist() == loading(own).column("embedding").to_pylist()
