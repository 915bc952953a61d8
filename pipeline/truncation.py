"""Which rows lost tokens at model.max_tokens: counted in `_summary.json` (rows_truncated) and, with
output.token_columns, written as the `truncated` column next to `num_tokens`.

Light module (numpy only): the tokenizer is passed in, so write tasks can import the column name.
"""

from __future__ import annotations

import numpy as np

from pipeline.columns import TRUNCATED

__all__ = ["TRUNCATED", "truncated_rows"]


def truncated_rows(tokenizer, prompt: str, max_tokens: int, texts: list[str], lengths: np.ndarray) -> np.ndarray:
    """(N,) bool: rows whose `prompt + text` has more than `max_tokens` tokens (special tokens included).

    Only rows that came out exactly `max_tokens` long can have been cut; those are tokenized again without
    truncation (a fast tokenizer reads the whole text either way, so this at most doubles the cost of those rows).

    Args:
        tokenizer: the Hugging Face tokenizer the rows were tokenized with.
        prompt: the prefix every text got.
        max_tokens: the truncation length.
        texts: the texts, row-aligned with `lengths`.
        lengths: (N,) token counts after truncation.
    """
    out = np.zeros(len(texts), dtype=bool)
    candidates = np.flatnonzero(np.asarray(lengths) >= max_tokens)
    if len(candidates) == 0:
        return out
    full = tokenizer([prompt + texts[i] for i in candidates], add_special_tokens=True, truncation=False)["input_ids"]
    out[candidates] = [len(ids) > max_tokens for ids in full]
    return out
