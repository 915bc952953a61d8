"""Column names and file names the stages agree on: the contract between reading, the model stages and writing.

Deliberately free of heavy imports (no torch, transformers, Ray): a Parquet write task imports this, not the model
code. Internal columns carry the `__rayembed_` prefix so that they never collide with a kept input column: plain
underscored names did (an Elasticsearch export's `_source`, a `_row` column), and a kept `_row` then replaced the row
numbers that duplicate-id rejects are matched by, so repeats were embedded.
"""

from __future__ import annotations

import typing
from typing import Literal

# Internal columns, from the read stage on (pipeline.reading): the text, the reject reason (null: a good row), the
# file a row came from (relative to the input root) and its row number in that file.
TEXT, REJECT, SOURCE, ROW = (
    "__rayembed_text",
    "__rayembed_reject",
    "__rayembed_source",
    "__rayembed_row",
)
# Added by the tokenizer stage: token ids (list<int32>), removed again by the model stage.
TOKENS = "__rayembed_tokens"
# Added by the model stage, read by the write stage for the job summary: real tokens, padded tokens computed and
# the row's share of the forward-pass seconds of its block.
TOKEN_COUNT, COMPUTED, EMBED_SECONDS = (
    "__rayembed_num_tokens",
    "__rayembed_computed_tokens",
    "__rayembed_embed_seconds",
)
# Added by the model stage, read by the write stage for the job summary: which embedding actor embedded the row
# (its Ray actor id), so the summary says how many actors of the pool received rows.
EMBED_ACTOR = "__rayembed_embed_actor"
# Wall-clock times (time.time(), seconds) for the job summary's start-up timings: when the tokenizer call that made
# the row returned (tokenizer stage), and when the embedding actor that embedded it began to start (model stage).
TOKENIZED_AT, EMBED_ACTOR_STARTED = "__rayembed_tokenized_at", "__rayembed_embed_actor_started"
# Added by the read stage (pipeline.units): the key of the row's unit, and on a unit's last block the rows it holds
# (-1 on the others); the write stage names files after the unit and the driver commits a unit once all rows are in.
UNIT, UNIT_ROWS = "__rayembed_unit", "__rayembed_unit_rows"
# Added by the model stage: the row's first vector was not finite and was recomputed in float32 (summary count).
RECOMPUTED = "__rayembed_recomputed_fp32"
# Added by the tokenizer stage: true when the row's text was cut at model.max_tokens (pipeline.truncation).
TRUNCATED = "__rayembed_truncated"
# Added by the embed job's read stage: true on the last row of each input file, so the driver counts files done
# (pipeline.progress).
FILE_DONE = "__rayembed_file_done"
# Added by the read stages of both jobs to a whole local file's last row: the size, change token and sha256 it had
# while read (pipeline.read_content), so the driver can tell a touch of the file during the run from an edit.
READ_AS = "__rayembed_read_as"

# Output columns (public interface: add, don't rename).
ID = "id"
EMBEDDING = "embedding"
CHUNK_COLUMNS = ("chunk_index", "char_start", "char_end")
CHUNK_INDEX = CHUNK_COLUMNS[0]
# With output.token_columns: tokens the model read per row, and whether the row was cut at model.max_tokens.
NUM_TOKENS, TRUNCATED_OUT = "num_tokens", "truncated"
OUTPUT_COLUMNS = frozenset(
    {ID, EMBEDDING, *CHUNK_COLUMNS, NUM_TOKENS, TRUNCATED_OUT}
)  # a kept input column may not take one of these names
# Columns of the `_rejects/` files.
REJECT_COLUMNS = ("id", "source", "row", "reason")

# Files of an embeddings dataset and the prefix of the Parquet schema metadata keys (rayembed.model, ...).
REJECTS_DIR = "_rejects"
SUMMARY_FILE = "_summary.json"
METADATA_PREFIX = "rayembed."
# The reject reason of a corrupt input file starts with this (pipeline.units.corrupt_as_reject): one reject row
# stands for the whole file, and the write stage counts them for the summary's files_rejected.
UNREADABLE = "unreadable file"


# Pooling names: sentence-transformers' modes (pipeline.pooling), last_token spelled as here since the start. Kept
# here, not in pipeline.config, so the pooling code (and the GPU bench, whose machine has no pydantic) need no config.
PoolingName = Literal["last_token", "mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean"]
POOLINGS: tuple[str, ...] = typing.get_args(PoolingName)
