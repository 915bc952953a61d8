"""A loaded fast tokenizer in the form the tokenizer actors rebuild it from: its `tokenizers` backend as JSON plus
its special tokens, checked against what the original tokenized.

Why: the tokenizer actors sit on the start-up path of every run (the model cannot start before its first block is
tokenized). `AutoTokenizer.from_pretrained` costs them, for multilingual-e5-small's 17 MB tokenizer.json, an import
of torch (transformers' AutoConfig imports it) and a rebuild of the backend by the model's own tokenizer class
(transformers 5 parses tokenizer.json in Python and builds the vocabulary again): about 4 s of CPU, against about
1 s to rebuild the finished backend with transformers' generic `TokenizersBackend` (measured in
docs/performance.md). The generic class wraps the same Rust tokenizer; whatever the model's class changed at load
(post-processor, normalizer, a lowercasing rayembed added) is in the backend JSON taken after the load.

Trust, but check: the snapshot carries what the original tokenizer produced on a probe (multilingual text, special
tokens written out, emoji, whitespace, truncation, offsets) and the ids of its special tokens. A rebuild that differs
on any of it is discarded (`load` returns None) and the actor loads the tokenizer the full way. The probe is a few
hundred tokens: a tokenizer class whose Python code changes the encoding (transformers 5: CodeLlama's fill-token
split, CPM's jieba, LUKE, LayoutLM, MarkupLM, UDOP, SeamlessM4T, DPR reader; `encodes_in_python`) can differ beyond
it, so such a class gets no snapshot; nor does a backend that cannot be serialized (RoFormer's jieba pre-tokenizer).

Light module: transformers is imported by `load` and `of` only; the driver (on a resolution-cache hit) and the
cache read it without.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# TokenizersBackend's argument for named special tokens beyond NAMED_SPECIALS: {"image_token": "<image>", ...}
MODEL_SPECIFIC = "model_specific_special_tokens"
SIDES = ("padding_side", "truncation_side")
# What the tokenizer actors call or read, down to the backend: a class that overrides any of it is not snapshotted
ENCODING = (
    "__call__",
    "_call_one",
    "encode",
    "encode_plus",
    "batch_encode_plus",
    "_encode_plus",
    "_batch_encode_plus",
    "tokenize",
    "_tokenize",
    "prepare_for_tokenization",
    "set_truncation_and_padding",
    "_convert_encoding",
    "num_special_tokens_to_add",
    "get_vocab",
    "__len__",
)
PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "  Leading and trailing spaces  ",
    "UPPER lower MiXeD ÀÉÎÕÜ ß Straße İstanbul",
    "naïve café résumé — “quotes” ‘single’ … ﬁ ① ｆｕｌｌ ｗｉｄｔｈ",
    "日本語のテキストと中文文本，한국어 텍스트",
    "العربية עברית हिन्दी বাংলা ภาษาไทย ქართული",
    "Здравствуй, мир! Ελληνικά",
    "emoji 😀🎉👍🏽 👨‍👩‍👧 flags 🇫🇷",
    "tabs\tand\nnew\r\nlines\u00a0nbsp\u200bzero width",
    "Instruct: Given a web search query, retrieve relevant passages\nQuery: how tall is Everest?",
    "http://example.com/a_b-c?d=e&f=g#h 1234567890 3.14159 $100",
    "",
    " ",
    "a",
)
TRUNCATE_AT = 12  # tokens: the probe's truncated calls cut most texts


def probe_texts(specials: dict[str, Any], extra: list[str]) -> list[str]:
    """PROBE_TEXTS plus each special token written out in text, alone and between words."""
    written = sorted({s for s in [*specials.values(), *extra] if isinstance(s, str) and s})
    return [*PROBE_TEXTS, *written, *(f"before {s} after{s}end" for s in written)]


def observe(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> dict[str, Any]:
    """What the tokenizer actors rely on, as plain JSON values: ids and offsets with and without special tokens,
    truncated and not, and the special token ids and counts."""
    out: dict[str, Any] = {}
    calls = {
        "special": {"add_special_tokens": True},
        "special_cut": {"add_special_tokens": True, "truncation": True, "max_length": TRUNCATE_AT},
        "plain": {"add_special_tokens": False},
    }
    for name, kwargs in calls.items():
        enc = tokenizer(texts, return_offsets_mapping=True, **kwargs)
        out[name] = [
            [list(ids), [list(o) for o in offsets]] for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"])
        ]
    out["ids"] = {name: getattr(tokenizer, f"{name}_id") for name in NAMED_SPECIALS}
    out["all_special_ids"] = sorted(int(i) for i in tokenizer.all_special_ids)
    out["num_special_tokens_to_add"] = int(tokenizer.num_special_tokens_to_add())
    out["vocab"] = len(tokenizer)
    return out


def encodes_in_python(cls: type, base: type) -> list[str]:
    """The methods of ENCODING that `cls` or a class between it and `base` (TokenizersBackend) defines: code the
    generic class would not run (CodeLlama's fill-token split, CPM's jieba segmentation, LUKE's entities), whose
    effect a probe can miss."""
    between = cls.__mro__[: cls.__mro__.index(base)] if base in cls.__mro__ else cls.__mro__
    return sorted({name for klass in between for name in ENCODING if name in vars(klass)})


def backend_json(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """`tokenizers.Tokenizer.to_str()` of a fast tokenizer's backend; None (logged) where it cannot be written out:
    a component written in Python (RoFormer's jieba pre-tokenizer), which pickling the tokenizer cannot carry
    either."""
    try:
        return tokenizer.backend_tokenizer.to_str()
    except Exception as err:  # noqa: BLE001 - the Rust tokenizers raise a plain Exception
        log.info("no tokenizer snapshot: its backend cannot be serialized (%s); the actors load it", err)
        return None


@dataclass(frozen=True)
class TokenizerSnapshot:
    """`backend`: `tokenizers.Tokenizer.to_str()` of the loaded tokenizer (MB: the vocabulary is in it).
    `init`: the special tokens and sides to construct the generic class with. `expected`: `observe` of the original
    on `probe_texts`."""

    backend: str
    init: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> TokenizerSnapshot | None:
        """The snapshot of a loaded tokenizer; None for a tokenizer without a `tokenizers` backend (a slow or
        custom one), which the actors then load as before."""
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        if not isinstance(tokenizer, TokenizersBackend):
            return None
        overridden = encodes_in_python(type(tokenizer), TokenizersBackend)
        if overridden:
            log.info(
                "no tokenizer snapshot: %s encodes in Python (%s)", type(tokenizer).__name__, ", ".join(overridden)
            )
            return None
        # every named special token: bos..mask and the model's own (a multimodal model's image_token, LUKE's
        # entity tokens: transformers 5 takes any `*_token` key of tokenizer_config as one)
        specials = {str(k): str(v) for k, v in tokenizer.special_tokens_map.items() if v is not None}
        extra = [str(t) for t in getattr(tokenizer, "extra_special_tokens", None) or []]
        init: dict[str, Any] = {k: v for k, v in specials.items() if k in NAMED_SPECIALS}
        init["extra_special_tokens"] = extra
        model_specific = {k: v for k, v in specials.items() if k not in NAMED_SPECIALS}
        if model_specific:
            init[MODEL_SPECIFIC] = model_specific
        init.update({side: getattr(tokenizer, side) for side in SIDES})
        init["model_max_length"] = int(tokenizer.model_max_length)
        init["split_special_tokens"] = bool(getattr(tokenizer, "split_special_tokens", False))
        backend = backend_json(tokenizer)
        if backend is None:
            return None
        try:
            expected = observe(tokenizer, probe_texts(specials, extra))
        except Exception as err:  # noqa: BLE001 - a tokenizer our probe breaks is simply not snapshotted
            log.debug("no tokenizer snapshot: the probe failed (%s: %s)", type(err).__name__, err)
            return None
        return cls(backend, init, expected)

    def load(self) -> PreTrainedTokenizerBase | None:
        """The tokenizer rebuilt as transformers' generic TokenizersBackend; None (logged) where it does not
        reproduce the original's probe: the caller then loads the tokenizer the full way."""
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        # From a file: TokenizersBackend deep-copies a `tokenizer_object` (as long again as parsing it).
        handle = None
        try:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as handle:
                handle.write(self.backend)
        except OSError as err:  # the temp folder gone, full or read-only: the full load needs none
            log.info("tokenizer snapshot not written to the temp folder (%s); loading the tokenizer in full", err)
            if handle is not None:  # a partial file (disk full)
                Path(handle.name).unlink(missing_ok=True)
            return None
        try:
            tokenizer = TokenizersBackend(tokenizer_file=handle.name, **self.init)
            specials = {name: self.init[name] for name in NAMED_SPECIALS if name in self.init}
            specials.update(self.init.get(MODEL_SPECIFIC, {}))
            seen = observe(tokenizer, probe_texts(specials, self.init.get("extra_special_tokens", [])))
        except Exception as err:  # noqa: BLE001 - any failure to rebuild means: load the full way
            log.info("tokenizer snapshot not usable (%s: %s); loading the tokenizer in full", type(err).__name__, err)
            return None
        finally:
            os.unlink(handle.name)
        differs = [key for key in self.expected if seen.get(key) != self.expected[key]]
        if differs:
            log.info("tokenizer snapshot differs from the original on %s; loading the tokenizer in full", differs)
            return None
        return tokenizer
