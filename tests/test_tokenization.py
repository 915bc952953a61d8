from __future__ import annotations

import itertools

import pytest
from conftest import sample_texts

from pipeline.config import ModelConfig
from pipeline.model_loading import declared_add_eos, load_tokenizer
from pipeline.tokenization import NO_CONTENT, NO_CONTENT_UNKNOWN, TextTokenizer, chunk_spans, eos_convention


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


def test_a_prompt_that_fills_the_token_limit_is_refused(tokenizer):
    """max_tokens no longer than the prompt and the special tokens: every row was cut to the prompt alone and
    rejected one by one ('only the prompt and special tokens'), a whole corpus of rejects; sentence-transformers
    embeds those prompt-only rows. One token more leaves room for the text."""
    prompt = "Instruct: Given a web search query, retrieve relevant passages\nQuery: "
    room = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + tokenizer.num_special_tokens_to_add()
    with pytest.raises(ValueError, match=rf"model.max_tokens \({room}\) leaves no token for the text after the prompt"):
        TextTokenizer(tokenizer, prompt, room, "truncate", 0)
    [ids] = TextTokenizer(tokenizer, prompt, room + 1, "truncate", 0).encode(["hello world"])
    assert len(ids) == room + 1


def test_chunk_budget_must_exceed_overlap(tokenizer):
    with pytest.raises(ValueError, match="raise max_tokens or lower the overlap"):
        TextTokenizer(tokenizer, "a long prompt " * 5, 20, "chunk", 8)


# --- issue 15: content tokens, per-row tokenizer failures, EOS conventions, the character pre-cut -----------------


def test_rows_with_only_prompt_and_special_tokens_are_rejected(tiny_models):
    """Whatever the tokenizer does with an invisible text (drop it, or map it to nothing), no row embeds the prompt
    alone: this WordPiece-like normalizer strips zero-width characters, the byte-level BPE keeps them as bytes."""
    from tokenizers import normalizers

    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_models["bert"])))
    tokenizer.backend_tokenizer.normalizer = normalizers.Replace("\u200b", "")
    tok = TextTokenizer(tokenizer, "Query: ", 64, "truncate", 0)
    rows = tok.tokenize(["\u200b\u200b", "real text", ""])
    assert rows.reason == [NO_CONTENT, None, NO_CONTENT]
    assert rows.token_ids[0] == [] and rows.token_ids[1] == tokenizer("Query: real text")["input_ids"]
    chunked = TextTokenizer(tokenizer, "Query: ", 64, "chunk", 4).tokenize(["\u200b", "real text"])
    assert chunked.reason == [NO_CONTENT, None]


def test_a_row_that_breaks_the_tokenizer_is_a_reject_and_the_rest_tokenize(tokenizer, monkeypatch):
    tok = TextTokenizer(tokenizer, "", 64, "truncate", 0)
    real = tok.tokenizer

    def fragile(texts, **kwargs):
        if any("poison" in t for t in texts):
            raise ValueError("unsupported input")
        return real(texts, **kwargs)

    monkeypatch.setattr(tok, "tokenizer", fragile)
    rows = tok.tokenize(["one", "a poison row", "three"])
    assert rows.reason == [None, "tokenizer failed: ValueError: unsupported input", None]
    assert rows.token_ids[0] == real("one")["input_ids"] and rows.token_ids[1] == []
    assert tok.tokenize([]).parent == []  # a block with no good rows at all passes through


def with_declared_eos(model_dir, tmp_path):
    import json
    import shutil

    target = tmp_path / "declared-eos"
    shutil.copytree(model_dir, target)
    config = json.loads((target / "tokenizer_config.json").read_text())
    (target / "tokenizer_config.json").write_text(json.dumps({**config, "add_eos_token": True}))
    return target


def test_declared_add_eos_token_is_honoured_after_truncation(tiny_models, tmp_path):
    cfg = ModelConfig(name_or_path=str(with_declared_eos(tiny_models["gemma3"], tmp_path)))
    tokenizer = load_tokenizer(cfg)
    convention = eos_convention(tokenizer, declared_add_eos(cfg))
    assert (convention.appended, convention.declared, convention.append) == (False, True, True)
    assert convention.describe() == "rayembed"
    tok = TextTokenizer(tokenizer, "", 16, "truncate", 0, append_eos=convention.append)
    short, long = tok.tokenize(["hello world", " ".join(sample_texts()[:5])]).token_ids
    assert short == tokenizer("hello world")["input_ids"] + [tokenizer.eos_token_id]
    assert len(long) == 16 and long[-1] == tokenizer.eos_token_id
    assert long[:-1] == tokenizer(" ".join(sample_texts()[:5]), truncation=True, max_length=15)["input_ids"]
    # a tokenizer that appends EOS itself (Qwen-3 style) is left alone; one that declares nothing too
    qwen = load_tokenizer(ModelConfig(name_or_path=str(tiny_models["qwen3"])))
    assert eos_convention(qwen, None).describe() == "tokenizer"
    gemma = ModelConfig(name_or_path=str(tiny_models["gemma3"]))
    assert eos_convention(load_tokenizer(gemma), declared_add_eos(gemma)).describe() == "none"


@pytest.mark.parametrize("arch", ["qwen3", "bert", "gemma3"])
def test_the_character_pre_cut_gives_the_tokens_of_the_whole_text(tiny_models, arch):
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_models[arch])))
    words = " ".join(sample_texts()[:100])
    long = (words + " ") * (200_000 // len(words) + 1)  # ~200 KB: the reference tokenizes all of it
    sparse = "word " + " " * 50_000 + words  # whitespace costs no tokens here: the first cut is too short
    tok = TextTokenizer(tokenizer, "Query: ", 256, "truncate", 0)
    for text in (long, sparse):
        [ids] = tok.tokenize([text]).token_ids
        assert ids == tokenizer("Query: " + text, truncation=True, max_length=256)["input_ids"]
    huge = long * 50  # ~10 MB: tokenizing it whole takes minutes on a loaded core; the pre-cut reads a few KB
    tok.chars_tokenized = 0
    [ids] = tok.tokenize([huge]).token_ids
    assert tok.chars_tokenized <= 256 * 8 + len("Query: ")
    assert ids == tokenizer("Query: " + long, truncation=True, max_length=256)["input_ids"]


def test_the_pre_cut_on_real_tokenizers(real_model_dir):
    text = ("Ceci est une phrase. " * 50 + "日本語の文も入ります。" * 30) * 60  # ~80 KB, mixed scripts
    for name in ("multilingual-e5-small", "smollm2-135m", "all-minilm-l6-v2"):
        tokenizer = load_tokenizer(ModelConfig(name_or_path=str(real_model_dir(name))))
        [ids] = TextTokenizer(tokenizer, "query: ", 512, "truncate", 0).tokenize([text]).token_ids
        assert ids == tokenizer("query: " + text, truncation=True, max_length=512)["input_ids"], name


def test_rows_that_become_only_the_unknown_token_say_so(real_model_dir):
    """all-MiniLM's WordPiece maps emoji, and any word over 100 characters, to [UNK]: such a row used to be rejected
    as "only the prompt and special tokens", which reads like a bug for a row of visible text."""
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(real_model_dir("all-minilm-l6-v2"))))
    for mode in ("truncate", "chunk"):
        rows = TextTokenizer(tokenizer, "", 128, mode, 8).tokenize(["😀😀😀", "a" * 20_000, "hello 😀"])
        unknown = NO_CONTENT_UNKNOWN.format(unk="[UNK]")
        assert rows.reason[:2] == [unknown, unknown] and rows.reason[-1] is None, mode
        assert "[UNK]" in unknown and "emoji" in unknown


def test_declared_add_bos_token_is_honoured_like_add_eos_token(tiny_models, tmp_path):
    """Qwen-3's tokenizer file prepends nothing; a config declaring add_bos_token (Llama/Mistral/Gemma style) is
    ignored by transformers 5 just as add_eos_token is: rayembed puts BOS first, within max_tokens."""
    import json
    import shutil

    from pipeline.model_loading import declared_add_bos, resolve_model_settings
    from pipeline.tokenization import bos_convention

    target = tmp_path / "declared-bos"
    shutil.copytree(tiny_models["qwen3"], target)
    config = json.loads((target / "tokenizer_config.json").read_text())
    (target / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    cfg = ModelConfig(name_or_path=str(target))
    tokenizer = load_tokenizer(cfg)
    convention = bos_convention(tokenizer, declared_add_bos(cfg))
    assert (convention.appended, convention.declared, convention.describe()) == (False, True, "rayembed")
    tok = TextTokenizer(tokenizer, "", 16, "truncate", 0, prepend_bos=convention.append)
    short, long = tok.tokenize(["hello world", " ".join(sample_texts()[:5])]).token_ids
    assert short == [tokenizer.bos_token_id, *tokenizer("hello world")["input_ids"]]
    assert len(long) == 16 and long[0] == tokenizer.bos_token_id and long[-1] == tokenizer.eos_token_id
    assert resolve_model_settings(cfg).metadata["bos_token"] == "rayembed"
    # undeclared: left as the tokenizer makes it
    plain = ModelConfig(name_or_path=str(tiny_models["qwen3"]))
    assert bos_convention(load_tokenizer(plain), declared_add_bos(plain)).describe() == "none"


@pytest.mark.parametrize("prompt", ["", "Instruct: find\nQuery: "])
def test_a_text_that_fits_max_tokens_is_one_chunk_as_truncate_mode_embeds_it(tokenizer, prompt):
    """Chunk windows stay a few tokens under max_tokens (merges where the prompt meets the window), so a text of the
    last lengths that fit (max_tokens - 2 .. max_tokens with its prompt and EOS) was cut into two overlapping windows,
    neither of them the vector truncate mode and sentence-transformers give it. Now it is one window with the same
    tokens; one token more is two windows."""
    body = tokenizer(" ".join(sample_texts()), add_special_tokens=False)["input_ids"]
    max_tokens = 48

    def text_of(n: int) -> str:
        for k in range(n - 20, n + 5):
            text = tokenizer.decode(body[:k])
            if len(tokenizer(prompt + text)["input_ids"]) == n:
                return text
        raise AssertionError(f"no prefix of {n} tokens")

    for n, windows in [(max_tokens - 2, 1), (max_tokens - 1, 1), (max_tokens, 1), (max_tokens + 1, 2)]:
        text = text_of(n)
        chunked = TextTokenizer(tokenizer, prompt, max_tokens, "chunk", 8).tokenize([text, "short"])
        whole = TextTokenizer(tokenizer, prompt, max_tokens, "truncate", 0).tokenize([text, "short"])
        assert chunked.parent == [0] * windows + [1], n
        if windows == 1:
            assert chunked.token_ids == whole.token_ids and not any(whole.truncated), n
            assert (chunked.char_start[0], chunked.char_end[0]) == (0, len(text))
        else:
            assert whole.truncated[0] and all(len(ids) <= max_tokens for ids in chunked.token_ids)


def test_a_text_of_long_tokens_that_fits_max_tokens_exactly_is_not_truncated(tokenizer):
    """A text of more than 8 characters per token goes through the character pre-cut's path; when it came out at
    exactly max_tokens it was counted as truncated (rows_truncated, the truncated column) although nothing was cut,
    and chunk mode cut it into two windows. One token more is truncated, as before."""
    longest = max((t for t in tokenizer.get_vocab() if t.startswith("Ġ") and t[1:].isalpha()), key=len)
    max_tokens = 16
    texts = {len(tokenizer(t)["input_ids"]): t for t in (longest.replace("Ġ", " ") * n for n in range(8, 20))}
    fits, over = texts[max_tokens], texts[max_tokens + 1]
    assert len(fits) > max_tokens * 8  # the pre-cut's path (CHARS_PER_TOKEN)
    rows = TextTokenizer(tokenizer, "", max_tokens, "truncate", 0).tokenize([fits, over])
    assert rows.truncated == [False, True]
    assert rows.token_ids[0] == tokenizer(fits)["input_ids"]
    chunked = TextTokenizer(tokenizer, "", max_tokens, "chunk", 4).tokenize([fits, over])
    assert chunked.parent == [0, 1, 1] and chunked.token_ids[0] == rows.token_ids[0]


@pytest.mark.parametrize("prompt", ["", "Instruct: find\nQuery: "])
@pytest.mark.parametrize(
    "text",
    ["👩‍👩‍👧‍👦🏳️‍🌈" * 50, "漢字仮名交じり文" * 100, "naïve café 😀 " * 60],
    ids=["emoji ZWJ sequences", "CJK without spaces", "accents and emoji"],
)
def test_no_chunk_window_is_cut_by_the_tokenizer(tokenizer, prompt, text):
    """Windows are cut at the bare text's token boundaries, but a window's characters tokenized alone (with the
    prompt) can give more tokens: a window starting inside an emoji that byte-level BPE splits over several tokens
    takes the whole emoji, CJK merges differently. Such windows (65 to 68 tokens on max_tokens 64) were cut by the
    tokenizer without a word (chunks are never counted as truncated) and their char_end named text their vector
    never saw. Now every window fits whole, and the windows still cover the text and overlap."""
    max_tokens = 64
    rows = TextTokenizer(tokenizer, prompt, max_tokens, "chunk", 8).tokenize([text])
    assert len(rows.parent) > 3 and rows.char_start[0] == 0 and rows.char_end[-1] == len(text)
    for (s, e), ids in zip(zip(rows.char_start, rows.char_end), rows.token_ids):
        assert len(tokenizer(prompt + text[s:e])["input_ids"]) <= max_tokens, (s, e)
        assert ids == tokenizer(prompt + text[s:e])["input_ids"]
    for end, start in zip(rows.char_end, rows.char_start[1:]):
        assert start < end, "consecutive windows overlap"


@pytest.mark.parametrize("prompt", ["", "Instruct: find\nQuery: "])
def test_only_the_windows_that_need_it_are_shortened(tokenizer, prompt):
    """A text with emoji at its end: its plain-text windows keep the full window size; only the windows whose own
    characters give too many tokens end earlier. (Shortening every window of such a text by the worst excess made
    more windows everywhere: 522 windows against 238 now for 30 ZWJ sequences on max_tokens 16, overlap 7.)"""
    plain = "The quick brown fox jumps over the lazy dog. " * 40
    text = plain + "👩‍👩‍👧‍👦🏳️‍🌈" * 20
    tok = TextTokenizer(tokenizer, prompt, 64, "chunk", 8)
    rows = tok.tokenize([text])
    assert rows.char_end[-1] == len(text) and any(e > len(plain) for e in rows.char_end)
    for s, e, ids in zip(rows.char_start, rows.char_end, rows.token_ids):
        assert len(ids) <= 64
        if e <= len(plain):
            assert len(tokenizer(text[s:e], add_special_tokens=False)["input_ids"]) == tok.chunk_body, (s, e)


@pytest.mark.parametrize(("max_tokens", "overlap"), [(6, 0), (7, 1), (8, 0)])
def test_a_window_over_the_limit_by_more_than_its_length_ends_at_one_token_not_rejected(tokenizer, max_tokens, overlap):
    """Tokens that share characters (a byte-level emoji or CJK character split over several tokens) can put a short
    window over the limit by more tokens than it has beyond its first: its end was taken back past its start and
    the row became a reject ('even cut to one token; raise model.max_tokens') although a one-token window fits.
    The end now stops at one token. A character that alone gives more tokens than the limit is still a reject."""
    text = "Hello 世界 👋🏽 naïve café " * 5
    rows = TextTokenizer(tokenizer, "", max_tokens, "chunk", overlap).tokenize([text])
    assert rows.reason == [None] * len(rows.parent) and rows.char_end[-1] == len(text)
    for s, e, ids in zip(rows.char_start, rows.char_end, rows.token_ids):
        assert len(ids) <= max_tokens and ids == tokenizer(text[s:e])["input_ids"], (s, e)
    [reason] = TextTokenizer(tokenizer, "", 4, "chunk", 0).tokenize(["ab 👋🏽 cd"]).reason
    assert "even cut to one token; raise model.max_tokens" in reason


def with_normalizer(tokenizer, *steps):
    """`tokenizer` with a normalizer that drops characters (as BERT's strip_accents, or NFKC tokenizers' ZWJ)."""
    from tokenizers import Tokenizer, normalizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.normalizer = normalizers.Sequence(list(steps))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=tokenizer.eos_token)


@pytest.mark.parametrize("prompt", ["", "Q: "])
@pytest.mark.parametrize("overlap", [0, 3])
def test_chunk_windows_cover_characters_that_give_no_token(tokenizer, prompt, overlap):
    """Characters the tokenizer's normalizer drops (combining accents under strip_accents, a ZWJ, leading ones) have
    no token of their own; with chunk_overlap_tokens 0 a window started at its first token's character, so those
    between two windows, and those before the first token, were in no window's char span. Every character of the
    text is now in a window, and each window's tokens are still its own characters' tokens."""
    from tokenizers import normalizers

    dropping = with_normalizer(
        tokenizer, normalizers.NFD(), normalizers.StripAccents(), normalizers.Replace("\u200d", "")
    )
    text = "\u0301\u200d lead " + "e\u0301a\u0300 o\u0302\u200dx " * 30
    rows = TextTokenizer(dropping, prompt, 12, "chunk", overlap).tokenize([text])
    assert len(rows.parent) > 3 and rows.reason == [None] * len(rows.parent)
    covered = set()
    for s, e, ids in zip(rows.char_start, rows.char_end, rows.token_ids):
        assert len(ids) <= 12 and ids == dropping(prompt + text[s:e])["input_ids"], (s, e)
        covered.update(range(s, e))
    assert covered == set(range(len(text)))
