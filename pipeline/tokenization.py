"""Text -> token ids, with the prompt prefix and the long-input policy (truncate or overlapping chunks).

Runs in its own CPU stage so the model actor never waits on the tokenizer. A row that breaks the tokenizer, or
whose tokens are only the prompt and special tokens, becomes a reject with its reason; the rest of its block goes on.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from pipeline.truncation import truncated_rows

if TYPE_CHECKING:  # imported on the driver too; transformers loads with the tokenizer itself
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

NO_CONTENT = "text produced no content tokens (only the prompt and special tokens)"
# The same, when the special tokens include the unknown token: emoji or symbols a vocabulary lacks, or one "word"
# longer than a WordPiece tokenizer takes (BERT's max_input_chars_per_word, 100: a URL, a hash, "aaaa…").
NO_CONTENT_UNKNOWN = (
    "text produced no content tokens (only the prompt, special tokens and the unknown token {unk!r}: the model's "
    "vocabulary has none of its words, e.g. emoji, unsupported symbols or one very long word)"
)
# Truncate mode cuts a long text to limit x CHARS_PER_TOKEN characters before tokenizing (a token averages ~4
# characters in the languages we embed), so a 10 MB row costs what a long row costs. The cut is then proven harmless:
# the tokenizer must still truncate, and its last kept token must end CUT_MARGIN_TOKENS longest-tokens before the
# cut; otherwise the cut grows x4 up to the whole text. Tokens are therefore identical to tokenizing the whole text.
# How chunk mode lays a text's windows, recorded in the embed job's run fingerprint (`rules.chunk_windows`,
# pipeline.fingerprint.embed_fingerprint) when model.long_inputs is chunk: windows laid by another version give other
# rows, so a run resumed across a change of it would mix both. Bump the number with any change of the windows.
CHUNK_RULE = (
    "3: a text whose prompted tokens fit max_tokens is one window; windows at token boundaries of the bare text, "
    "chunk_overlap_tokens apart, none cut by the tokenizer (such a window ends earlier), the first starting at "
    "character 0 and none after the previous one's end (characters that give no token belong to a window)"
)
CHARS_PER_TOKEN = 8
CUT_MARGIN_TOKENS = 8


@dataclass
class TokenizedRows:
    """One entry per output row; `parent` indexes the input text a row came from.

    `reason` is None for a row to embed, else why its text is rejected (then `token_ids` is empty).
    """

    parent: list[int] = field(default_factory=list)
    chunk_index: list[int] = field(default_factory=list)
    char_start: list[int] = field(default_factory=list)
    char_end: list[int] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)
    reason: list[str | None] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)  # cut at max_tokens (truncate mode; chunks never are)

    def add(
        self,
        parent: int,
        chunk: int,
        start: int,
        end: int,
        ids: list[int],
        reason: str | None = None,
        truncated: bool = False,
    ) -> None:
        self.parent.append(parent)
        self.chunk_index.append(chunk)
        self.char_start.append(start)
        self.char_end.append(end)
        self.token_ids.append(ids)
        self.reason.append(reason)
        self.truncated.append(truncated)


class Encoded(NamedTuple):
    """One tokenized text: its ids, whether any of them come from the text, whether it was cut at the limit."""

    ids: list[int]
    content: bool
    truncated: bool


@dataclass(frozen=True)
class EosConvention:
    """How a row ends: `appended` the tokenizer adds EOS itself; `declared` its config's add_eos_token (None: unset).

    Some tokenizers declare `add_eos_token: true` while their fast tokenizer file appends nothing (transformers 5
    ignores the flag): last-token pooling would then pool the text's last token instead of the EOS the model was
    trained to pool. `append` says rayembed appends it (after truncating to the limit minus one).
    """

    appended: bool
    declared: bool | None

    @property
    def append(self) -> bool:
        return bool(self.declared) and not self.appended

    def describe(self) -> str:
        """For the output metadata: 'tokenizer', 'rayembed' (declared, appended by us) or 'none'."""
        return "tokenizer" if self.appended else "rayembed" if self.append else "none"


def eos_convention(tokenizer: PreTrainedTokenizerBase, declared: bool | None) -> EosConvention:
    """Probe whether the tokenizer appends its EOS token, given what its config declares."""
    eos = tokenizer.eos_token_id
    ids = tokenizer("a")["input_ids"] if eos is not None else []
    return EosConvention(appended=bool(ids) and ids[-1] == eos, declared=declared if eos is not None else None)


def bos_convention(tokenizer: PreTrainedTokenizerBase, declared: bool | None) -> EosConvention:
    """The same for BOS at the front: `add_bos_token: true` (Llama, Mistral, Gemma configs) while the fast
    tokenizer file prepends nothing, which transformers 5 ignores as it ignores add_eos_token; `append` then means
    rayembed prepends it."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"] if bos is not None else []
    return EosConvention(appended=bool(ids) and ids[0] == bos, declared=declared if bos is not None else None)


def longest_token_chars(tokenizer: PreTrainedTokenizerBase) -> int:
    """Characters of the longest vocabulary entry: a bound on what one token covers (byte-level forms are longer)."""
    return max((len(t) for t in tokenizer.get_vocab()), default=1)


class TextTokenizer:
    """Tokenizes like sentence-transformers: `prompt + text`, the tokenizer's own special tokens, cut at max_tokens.

    Args:
        tokenizer: a Hugging Face tokenizer (fast ones give character offsets for chunking).
        prompt: prefix for every text ("" for none).
        max_tokens: longest row in tokens, prompt and special tokens included (the effective limit, see
            pipeline.model_limits).
        long_inputs: "truncate" keeps the first max_tokens; "chunk" emits overlapping windows covering the text.
        overlap: tokens shared by consecutive chunks.
        append_eos: append the EOS token to every row (EosConvention.append); rows are cut one token shorter.
        prepend_bos: put the BOS token first in every row (bos_convention(...).append); rows are cut one shorter.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt: str,
        max_tokens: int,
        long_inputs: str,
        overlap: int,
        append_eos: bool = False,
        prepend_bos: bool = False,
    ):
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.long_inputs = long_inputs
        self.overlap = overlap
        self.append_eos = append_eos and tokenizer.eos_token_id is not None
        self.prepend_bos = prepend_bos and tokenizer.bos_token_id is not None
        self.limit = max_tokens - int(self.append_eos) - int(self.prepend_bos)  # tokens the tokenizer may produce
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self.has_offsets = bool(getattr(tokenizer, "is_fast", False))
        prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
        # +2 leaves room for merges that differ where the prompt meets the chunk text
        self.chunk_body = self.limit - prompt_len - tokenizer.num_special_tokens_to_add() - 2
        if long_inputs == "chunk" and self.chunk_body <= overlap:
            raise ValueError(
                f"model.max_tokens ({max_tokens}) leaves {self.chunk_body} tokens per chunk after the prompt, not "
                f"more than chunk_overlap_tokens ({overlap}); raise max_tokens or lower the overlap"
            )
        specials = tokenizer.num_special_tokens_to_add() + int(self.append_eos) + int(self.prepend_bos)
        if prompt and prompt_len + specials >= max_tokens:
            # (chunk mode: the check above) sentence-transformers embeds every row cut to the prompt alone; here each
            # would be a reject (NO_CONTENT)
            raise ValueError(
                f"model.max_tokens ({max_tokens}) leaves no token for the text after the prompt's {prompt_len} tokens "
                f"and {specials} special token(s): every row would be the prompt alone; raise model.max_tokens or "
                "shorten the prompt"
            )
        self.cut_chars = self.limit * CHARS_PER_TOKEN
        self.cut_margin = max(256, CUT_MARGIN_TOKENS * longest_token_chars(tokenizer)) if self.has_offsets else 0
        self.chars_tokenized = 0  # characters handed to the tokenizer, for tests of the pre-cut

    def _call(self, texts: list[str]) -> dict:
        prompted = [self.prompt + t for t in texts] if self.prompt else texts
        self.chars_tokenized += sum(len(t) for t in prompted)
        return self.tokenizer(
            prompted,
            truncation=True,
            max_length=self.limit,
            add_special_tokens=True,
            return_offsets_mapping=self.has_offsets,
        )

    def _finish(self, ids: list[int]) -> list[int]:
        if self.prepend_bos and (not ids or ids[0] != self.tokenizer.bos_token_id):
            ids = [self.tokenizer.bos_token_id, *ids]
        if self.append_eos and (not ids or ids[-1] != self.tokenizer.eos_token_id):
            return [*ids, self.tokenizer.eos_token_id]
        return ids

    def _content(self, text: str, ids: list[int], offsets: list[tuple[int, int]] | None) -> bool:
        """Whether a row has a token from the text, not only the prompt and special tokens."""
        if offsets is not None:
            start = len(self.prompt)
            return any(e > start and i not in self.special_ids for i, (_, e) in zip(ids, offsets))
        body = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return any(i not in self.special_ids for i in body)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of `prompt + text` for each text, cut at max_tokens (raises on a text the tokenizer rejects)."""
        return [e.ids for e in self._encode_checked(texts)]

    def _encode_checked(self, texts: list[str]) -> list[Encoded]:
        """Ids, content and truncation per text; long texts in truncate mode go through the proven pre-cut."""
        out: list[Encoded | None] = [None] * len(texts)
        short = [i for i, t in enumerate(texts) if len(t) <= self.cut_chars or not self.cut_margin]
        if short:
            enc = self._call([texts[i] for i in short])
            lengths = np.asarray([len(ids) for ids in enc["input_ids"]], dtype=np.int64)
            # only rows that came out at the limit can have been cut; they are short, so a second look is cheap
            cut = truncated_rows(self.tokenizer, self.prompt, self.limit, [texts[i] for i in short], lengths)
            for k, i in enumerate(short):
                offsets = enc["offset_mapping"][k] if self.has_offsets else None
                ids = enc["input_ids"][k]
                out[i] = Encoded(self._finish(ids), self._content(texts[i], ids, offsets), bool(cut[k]))
        for i, text in enumerate(texts):
            if out[i] is None:
                out[i] = self._encode_long(text)
        return out  # type: ignore[return-value]

    def _encode_long(self, text: str) -> Encoded:
        """Truncate-mode tokens of a long text from a prefix of it, proven equal to tokenizing all of it."""
        cut = self.cut_chars
        while True:
            enc = self._call([text[:cut]])
            ids, offsets = enc["input_ids"][0], enc["offset_mapping"][0]
            if cut >= len(text):
                break
            last_end = max((e for _, e in offsets), default=0)
            if len(ids) >= self.limit and last_end + self.cut_margin <= len(self.prompt) + cut:
                break  # the tokenizer truncated well before the cut: the cut changed nothing it kept
            cut *= 4
        # the loop only stops before the whole text when the tokenizer cut well before the pre-cut: truncated. A whole
        # text that came out at the limit may fit it exactly (long tokens: a text of over CHARS_PER_TOKEN characters
        # per token), which was counted as truncated and, in chunk mode, cut into two windows
        if cut < len(text):
            truncated = True
        else:
            truncated = bool(truncated_rows(self.tokenizer, self.prompt, self.limit, [text], np.asarray([len(ids)]))[0])
        return Encoded(self._finish(ids), self._content(text, ids, offsets), truncated)

    def _no_content(self, ids: list[list[int]]) -> str:
        """The reject reason of a text without content tokens; names the unknown token when that is what it became."""
        unk = self.tokenizer.unk_token_id
        if unk is not None and any(unk in window for window in ids):
            return NO_CONTENT_UNKNOWN.format(unk=self.tokenizer.unk_token)
        return NO_CONTENT

    def _per_row(self, fn, texts: list[str]) -> list:
        """`fn(texts)` for the whole batch; if it raises, `fn([text])` per text, a failing text getting its message."""
        try:
            return fn(texts)
        except Exception:  # noqa: BLE001 - one row's error; each row is retried alone below to find it
            if len(texts) == 1:
                return [self._failure()]
        results = []
        for text in texts:
            try:
                results.extend(fn([text]))
            except Exception:  # noqa: BLE001 - becomes this row's reject reason, the block goes on
                results.append(self._failure())
        return results

    @staticmethod
    def _failure() -> str:
        err = sys.exc_info()[1]
        log.warning("tokenizer failed on one row (%s: %s); rejecting that row", type(err).__name__, err)
        return f"tokenizer failed: {type(err).__name__}: {err}"

    def _chunk(self, texts: list[str]) -> list[list[tuple[int, int, Encoded]]]:
        """Per text, its windows as (char start, char end, encoded window), each within max_tokens whole.

        A text whose prompted tokens fit max_tokens is one window, the row truncate mode (and sentence-transformers)
        embeds whole: the windows' margin under the limit (`chunk_body`) would otherwise cut a text of the last few
        lengths that fit into two overlapping windows. Windows are cut at token boundaries of the bare text, but a
        window's characters can give more tokens than that (a window starting inside a character that a byte-level
        BPE splits over several tokens, or CJK text that merges differently alone). No window may lose its end to
        the tokenizer's truncation (its char_end would name text its vector never saw): a text with such a window
        has its windows laid again one by one (_rechunk), the offending ones ending earlier.
        """
        bodies = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        near = [i for i, b in enumerate(bodies) if self.chunk_body < len(b) <= self.limit]  # over the windows' size
        whole = {i for i, e in zip(near, self._encode_checked([texts[i] for i in near])) if not e.truncated}
        spans = [
            [(0, len(t))] if i in whole else chunk_spans(b, self.chunk_body, self.overlap, len(t))
            for i, (b, t) in enumerate(zip(bodies, texts))
        ]
        encoded = iter(self._encode_checked([t[s:e] for t, sp in zip(texts, spans) for s, e in sp]))
        windows = [[(s, e, next(encoded)) for s, e in sp] for sp in spans]
        for i, text_windows in enumerate(windows):
            if any(w.truncated for *_, w in text_windows):
                windows[i] = self._rechunk(texts[i], bodies[i])
        return windows

    def _rechunk(self, text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int, Encoded]]:
        """`text`'s windows, laid one after another: each as long as `chunk_body` allows, its end taken back by the
        excess of its tokens over the limit until it fits, the next one starting `overlap` tokens before that end
        (at least one token after the previous start). Only for a text with a window the tokenizer would cut; raises
        ValueError (the row's reject reason) when a window cannot fit even at one token of text."""
        n, windows, start, prev_end = len(offsets), [], 0, 0
        while True:
            end = min(start + self.chunk_body, n)
            while True:
                s, e = window_start(offsets, start, prev_end), len(text) if end == n else offsets[end - 1][1]
                [window] = self._encode_checked([text[s:e]])
                if not window.truncated:
                    break
                if end == start + 1:  # one token of text, still too many: nothing shorter to try
                    raise ValueError(
                        f"its text at characters {s}-{e} gives more tokens than model.max_tokens ({self.max_tokens}) "
                        "alone, even cut to one token; raise model.max_tokens"
                    )
                full = len(self.tokenizer(self.prompt + text[s:e], add_special_tokens=True)["input_ids"])
                # back by the excess, but never past one token: a window of several tokens that share one character
                # (a byte-level emoji, BERT's Hangul jamo) can be over by more tokens than it has beyond its first,
                # and stepping past it made a row a reject whose one-token window fits
                end = max(start + 1, end - max(1, full - self.limit))
            windows.append((s, e, window))
            prev_end = e
            if end == n:
                return windows
            start = max(start + 1, end - self.overlap)

    def tokenize(self, texts: list[str]) -> TokenizedRows:
        """Rows to embed, one per text (truncate) or per window (chunk); rejected texts get one row with a reason."""
        rows = TokenizedRows()
        if not texts:
            return rows
        if self.long_inputs == "truncate":
            for i, (text, result) in enumerate(zip(texts, self._per_row(self._encode_checked, texts))):
                if isinstance(result, str):
                    rows.add(i, 0, 0, len(text), [], result)
                elif not result.content:
                    rows.add(i, 0, 0, len(text), [], self._no_content([result.ids]))
                else:
                    rows.add(i, 0, 0, len(text), result.ids, truncated=result.truncated)
            return rows
        for i, (text, windows) in enumerate(zip(texts, self._per_row(self._chunk, texts))):
            if isinstance(windows, str):
                rows.add(i, 0, 0, len(text), [], windows)
            elif not any(window.content for *_, window in windows):
                rows.add(i, 0, 0, len(text), [], self._no_content([window.ids for *_, window in windows]))
            else:  # a window without content of its own (only spaces) is still part of a text that has content
                for c, (s, e, window) in enumerate(windows):
                    rows.add(i, c, s, e, window.ids)
        return rows


def chunk_spans(offsets: list[tuple[int, int]], body: int, overlap: int, text_len: int) -> list[tuple[int, int]]:
    """Character spans of overlapping windows of `body` tokens, `overlap` tokens shared; the whole text if it fits.
    Together they cover the text (window_start)."""
    n = len(offsets)
    if n <= body:
        return [(0, text_len)]
    step = body - overlap
    spans = [(0, 0)]
    for start in range(0, n, step):
        end = min(start + body, n)
        spans.append((window_start(offsets, start, spans[-1][1]), text_len if end == n else offsets[end - 1][1]))
        if end == n:
            break
    return spans[1:]


def window_start(offsets: list[tuple[int, int]], start: int, prev_end: int) -> int:
    """The first character of a window whose first token is `start`: that token's start, or the previous window's
    end `prev_end` (0 for the first window) when it is earlier. Characters that give no token of their own (leading
    spaces, a ZWJ or a combining mark that the tokenizer's normalizer drops, BERT's stripped accents) then belong to a
    window: with chunk_overlap_tokens 0 they fell between two windows, and text before the first token before all,
    so the windows' char spans did not cover the text."""
    return min(offsets[start][0], prev_end)
