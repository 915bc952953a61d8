"""Text -> token ids, with the prompt prefix and the long-input policy (truncate or overlapping chunks).

Runs in its own CPU stage so the model actor never waits on the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase


@dataclass
class TokenizedRows:
    """One entry per output row; `parent` indexes the input text a row came from."""

    parent: list[int] = field(default_factory=list)
    chunk_index: list[int] = field(default_factory=list)
    char_start: list[int] = field(default_factory=list)
    char_end: list[int] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)

    def add(self, parent: int, chunk: int, start: int, end: int, ids: list[int]) -> None:
        self.parent.append(parent)
        self.chunk_index.append(chunk)
        self.char_start.append(start)
        self.char_end.append(end)
        self.token_ids.append(ids)


class TextTokenizer:
    """Tokenizes like sentence-transformers: `prompt + text`, the tokenizer's own special tokens, cut at max_tokens.

    Args:
        tokenizer: a Hugging Face tokenizer (fast ones give character offsets for chunking).
        prompt: prefix for every text ("" for none).
        max_tokens: longest row in tokens, prompt and special tokens included.
        long_inputs: "truncate" keeps the first max_tokens; "chunk" emits overlapping windows covering the text.
        overlap: tokens shared by consecutive chunks.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, prompt: str, max_tokens: int, long_inputs: str, overlap: int
    ):
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.long_inputs = long_inputs
        self.overlap = overlap
        prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
        # +2 leaves room for merges that differ where the prompt meets the chunk text
        self.chunk_body = max_tokens - prompt_len - tokenizer.num_special_tokens_to_add() - 2
        if long_inputs == "chunk" and self.chunk_body <= overlap:
            raise ValueError(
                f"model.max_tokens ({max_tokens}) leaves {self.chunk_body} tokens per chunk after the prompt, not "
                f"more than chunk_overlap_tokens ({overlap}); raise max_tokens or lower the overlap"
            )

    def encode(self, texts: list[str]) -> list[list[int]]:
        prompted = [self.prompt + t for t in texts] if self.prompt else texts
        return self.tokenizer(prompted, truncation=True, max_length=self.max_tokens, add_special_tokens=True)[
            "input_ids"
        ]

    def tokenize(self, texts: list[str]) -> TokenizedRows:
        rows = TokenizedRows()
        if not texts:  # a block whose rows are all rejects; HF fast tokenizers raise IndexError on an empty batch
            return rows
        if self.long_inputs == "truncate":
            for i, (text, ids) in enumerate(zip(texts, self.encode(texts))):
                rows.add(i, 0, 0, len(text), ids)
            return rows
        bodies = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for i, text in enumerate(texts):
            spans = chunk_spans(bodies["offset_mapping"][i], self.chunk_body, self.overlap, len(text))
            chunk_ids = self.encode([text[s:e] for s, e in spans])
            for c, ((s, e), ids) in enumerate(zip(spans, chunk_ids)):
                rows.add(i, c, s, e, ids)
        return rows


def chunk_spans(offsets: list[tuple[int, int]], body: int, overlap: int, text_len: int) -> list[tuple[int, int]]:
    """Character spans of overlapping windows of `body` tokens, `overlap` tokens shared; the whole text if it fits."""
    n = len(offsets)
    if n <= body:
        return [(0, text_len)]
    step = body - overlap
    spans = []
    for start in range(0, n, step):
        end = min(start + body, n)
        spans.append((offsets[start][0], text_len if end == n else offsets[end - 1][1]))
        if end == n:
            break
    return spans
