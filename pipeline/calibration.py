"""The embed job's output precision on the driver: dimensions checked against the model, int8/uint8 calibrated.

int8/uint8 need one set of per-dimension ranges for the whole dataset (per-block ranges would make vectors from
different files incomparable), so a sample of the corpus is embedded first, as float32 at the output dimensions,
and its per-dimension [min, max] become the ranges (sentence-transformers' calibration_embeddings). The sample is the
first output.calibration_rows rows read that are not rejects (good_rows): rows rejected on reading (empty text,
invalid Unicode, a corrupt file) took the sample's places and left it smaller, or empty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from pipeline.columns import REJECT
from pipeline.config import EmbedConfig
from pipeline.errors import UserError
from pipeline.model_defaults import model_dimension
from pipeline.quantization import OutputPrecision, PrecisionError

log = logging.getLogger(__name__)


def output_precision(cfg: EmbedConfig) -> OutputPrecision:
    """output.dtype and output.dimensions, checked against the model's output dimension before Ray starts.

    Raises:
        UserError: output.dimensions exceeds the model's dimension.
    """
    out = cfg.output
    if out.dimensions is not None:
        hidden = model_dimension(cfg.model)
        if hidden is not None and out.dimensions > hidden:
            raise UserError(
                f"output.dimensions ({out.dimensions}) exceeds the dimension of model {cfg.model.name_or_path} "
                f"({hidden}); use at most {hidden}"
            )
    return OutputPrecision(out.dtype, out.dimensions, cfg.model.normalize)


def good_rows(block: pa.Table) -> pa.Table:
    """The rows of a read block that are not rejects (null reject reason): what the calibration sample is taken
    from, before output.calibration_rows cuts it, so that rejects do not take its places."""
    return block.filter(block.column(REJECT).is_null())


def vectors_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(N, D) float32 from a fixed_size_list<float> column, null rows (rejects) dropped."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = arr.filter(arr.is_valid())
    width = arr.type.list_size
    return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)


# Passes over the input a calibration makes at most while the tokenizer or the model rejects rows of its sample.
SAMPLE_PASSES = 3


def sample_vectors(
    read: Callable[[int], ray.data.Dataset], embed: Callable[[ray.data.Dataset], ray.data.Dataset], wanted: int
) -> tuple[int, np.ndarray]:
    """(rows embedded, (N, D) vectors) of the first `wanted` rows the tokenizer and the model keep.

    `read(n)`: the first n rows that are not rejects on reading (good_rows); `embed(ds)`: those rows embedded. The
    rows are read first, without a model: where there is none (an empty input, or one whose every row is rejected on
    reading), `embed` is never called, so no tokenizer or model pool starts for a sample it would not embed.
    Rows the tokenizer or the model rejects (no token left, a token id outside the vocabulary, ...) come back
    without a vector; while some did and the input has more rows, the sample is embedded again with as many more
    rows (at most SAMPLE_PASSES passes: a rare path, the first rows embedded again each time, so that the sample
    stays the input's first rows).
    """
    take = wanted
    rows, vectors = 0, np.zeros((0, 0), np.float32)
    for _ in range(SAMPLE_PASSES):
        sample = read(take).materialize()  # at most `take` rows (output.calibration_rows): held for embed
        if sample.count() == 0:
            break
        blocks = list(embed(sample).iter_batches(batch_size=None, batch_format="pyarrow"))
        rows = sum(b.num_rows for b in blocks)
        vectors = np.concatenate([vectors_of(b.column("embedding")) for b in blocks]) if blocks else np.zeros((0, 0))
        if len(vectors) >= wanted or rows < take:
            break
        take += wanted - len(vectors)
    return rows, vectors[:wanted]


def calibrate(precision: OutputPrecision, sample: ray.data.Dataset) -> OutputPrecision:
    """`precision` with ranges from the embedding column of `sample` (embedded with precision.unquantized());
    calibrated_on its rows and vectors."""
    blocks = list(sample.iter_batches(batch_size=None, batch_format="pyarrow"))
    rows = sum(b.num_rows for b in blocks)
    vectors = np.concatenate([vectors_of(b.column("embedding")) for b in blocks]) if blocks else np.zeros((0, 0))
    return calibrated_on(precision, rows, vectors)


def calibrated_on(precision: OutputPrecision, rows: int, vectors: np.ndarray) -> OutputPrecision:
    """`precision` with ranges from `vectors`, the (N, D) vectors of `rows` rows embedded for calibration.

    A sample without any row (an input that holds no row, or only rows rejected on reading: good_rows) leaves
    `precision` uncalibrated: no row is ever quantized, and the job writes its empty output (int8/uint8 column, no
    ranges) and its rejects, as float32 does.

    Raises:
        UserError: the sample has rows but every one was rejected by the tokenizer or the model (no vector to
            calibrate on).
    """
    if rows == 0:
        log.info("output.dtype %s: the input holds no row to embed; no ranges to calibrate", precision.precision)
        return precision
    if len(vectors) == 0:
        raise UserError(
            f"output.dtype {precision.precision}: every one of the {rows} rows read for calibration (the first "
            "output.calibration_rows rows that are not rejects) was rejected by the tokenizer or the model, so no "
            "vector is left to calibrate the int8/uint8 ranges on; fix or remove those rows, or raise "
            "output.calibration_rows if later rows are good"
        )
    try:
        calibrated = precision.calibrated(vectors)
    except PrecisionError as err:
        raise UserError(f"output.dtype {precision.precision}: {err}") from None
    log.info("output.dtype %s: ranges calibrated on %d rows", precision.precision, len(vectors))
    return calibrated


def precision_summary(precision: OutputPrecision) -> dict[str, Any]:
    """Summary entries: what was stored (the ranges are in the file metadata)."""
    return {"precision": precision.precision, "dimensions": precision.dimensions}
