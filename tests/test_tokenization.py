from __future__ import annotations

import itertools

import pytest
from conftest import sample_texts

from pipeline.config import ModelConfig
from pipeline.model_loading import load_tokenizer
from pipeline.tokenization import TextTokenizer, chunk_spans


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_tokenizer(ModelConfig(name_or_path=str(tiny_models["qwen3"])))


def test_prompt_is_prefixed_and_specials_added(tokenizer):
    tok = TextTokenizer(tokenizer, "Query: ", 64, "truncate", 0)
    [ids] = tok.encode(["hello world"])
    assert ids == tokenizer("Query: hello world")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id  # Qwen-3 style: EOS appended, last-token pooled


def test_truncate_caps_a_32k_token_input(tokenizer):
    long_text = " ".join(sample_texts()) * 20  # far beyond 32k tokens
    rows = TextTokenizer(tokenizer, "", 32768, "truncate", 0).tokenize([long_text, "short"])
    assert len(rows.token_ids[0]) == 32768 and rows.parent == [0, 1]


def test_chunks_overlap_and_cover_the_text(tokenizer):
    text = " ".join(sample_texts()[:40])
    tok = TextTokenizer(tokenizer, "Q: ", 64, "chunk", 8)
    rows = tok.tokenize([text, "short text"])
    chunks = [i for i, p in enumerate(rows.parent) if p == 0]
    assert len(chunks) > 5 and rows.chunk_index[: len(chunks)] == list(range(len(chunks)))
    assert rows.char_start[0] == 0 and rows.char_end[chunks[-1]] == len(text)
    for a, b in itertools.pairwise(chunks):
        assert rows.char_start[b] < rows.char_end[a], "consecutive chunks must overlap"
    assert all(len(rows.token_ids[i]) <= 64 for i in chunks)
    assert rows.parent[-1] == 1 and rows.chunk_index[-1] == 0  # a short text is one chunk


def test_chunk_spans_exact():
    offsets = [(i, i + 1) for i in range(10)]
    assert chunk_spans(offsets, body=4, overlap=1, text_len=10) == [(0, 4), (3, 7), (6, 10)]
    assert chunk_spans(offsets, body=10, overlap=2, text_len=10) == [(0, 10)]


def test_chunk_budget_must_exceed_overlap(tokenizer):
    with pytest.raises(ValueError, match="raise max_tokens or lower the overlap"):
        TextTokenizer(tokenizer, "a long prompt " * 5, 20, "chunk", 8)
