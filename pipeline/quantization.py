"""Stored output precision: Matryoshka truncation (`output.dimensions`) and quantized dtypes (`output.dtype`).

Pure numpy + pyarrow (no torch, no Ray), so Parquet write tasks and readers can import it.

Semantics follow sentence-transformers (`SentenceTransformer.encode(truncate_dim=...)` and
`sentence_transformers.quantization.quantize_embeddings`):

- dimensions N: keep the first N dimensions, then L2-normalize again when the model normalizes (Matryoshka models
  are trained so that prefixes work; other models lose more).
- float32 / float16: the vector as floats.
- int8 / uint8 (scalar quantization): per dimension d, with calibration range [lo_d, hi_d] and step
  s_d = (hi_d - lo_d) / 255: uint8 q = clip(floor((x - lo_d) / s_d), 0, 255), int8 the same minus 128. The
  ranges come from a calibration sample of the corpus and are recorded in the file metadata
  (`rayembed.quantization_ranges`, [[lo_0..lo_D-1], [hi_0..hi_D-1]]) so consumers dequantize with
  x ~ lo_d + (q_uint8 + 0.5) * s_d (int8: q + 128). Values outside the sample's range are clipped to it.
- binary / ubinary: one sign bit per dimension (x > 0), packed 8 per byte, most significant bit first (numpy
  packbits). ubinary stores the bytes as uint8 (the form FAISS / usearch binary indexes take); binary stores
  byte - 128 as int8, exactly as sentence-transformers' "binary". Hamming distance is the same on both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

FLOATS = ("float32", "float16")
SCALAR = ("int8", "uint8")
BINARY = ("binary", "ubinary")
PRECISIONS = FLOATS + SCALAR + BINARY
VALUE_TYPES = {
    "float32": pa.float32(),
    "float16": pa.float16(),
    "int8": pa.int8(),
    "uint8": pa.uint8(),
    "binary": pa.int8(),
    "ubinary": pa.uint8(),
}


class PrecisionError(ValueError):
    """An output precision that cannot be produced or read as asked."""


def truncate(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """(N, D) -> (N, dimensions): the first dimensions, re-normalized when `normalize` (Matryoshka, truncate_dim).

    Raises:
        PrecisionError: dimensions exceeds D.
    """
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    if dimensions > vectors.shape[1]:
        raise PrecisionError(f"output.dimensions ({dimensions}) exceeds the model's dimension ({vectors.shape[1]})")
    out = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)  # an all-zero row (a reject's placeholder) stays zero
    return out


def calibration_ranges(vectors: np.ndarray) -> np.ndarray:
    """(2, D) float32 per-dimension [min, max] of a (N, D) sample, as quantize_embeddings computes them.

    Raises:
        PrecisionError: the sample is empty.
    """
    if len(vectors) == 0:
        raise PrecisionError("no rows to calibrate int8/uint8 ranges on: the calibration sample is empty")
    return np.stack([vectors.min(axis=0), vectors.max(axis=0)]).astype(np.float32)


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float -> stored values: (N, D) for floats and int8/uint8, (N, ceil(D / 8)) for binary/ubinary.

    Raises:
        PrecisionError: unknown precision, or int8/uint8 without (2, D) ranges.
    """
    if precision in FLOATS:
        return vectors.astype(np.float32 if precision == "float32" else np.float16)
    if precision in BINARY:
        packed = np.packbits(vectors > 0, axis=1)  # (N, ceil(D/8)) uint8
        return packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    if precision not in SCALAR:
        raise PrecisionError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if ranges is None or ranges.shape != (2, vectors.shape[1]):
        raise PrecisionError(f"{precision} needs (2, {vectors.shape[1]}) calibration ranges")
    starts, steps = ranges[0], (ranges[1] - ranges[0]) / 255
    steps = np.where(steps > 0, steps, 1.0)  # a constant dimension: every value maps to 0
    levels = np.clip(np.floor((vectors - starts) / steps), 0, 255)
    return levels.astype(np.uint8) if precision == "uint8" else (levels - 128).astype(np.int8)


def dequantize(stored: np.ndarray, precision: str, ranges: np.ndarray | None = None, dim: int | None = None):
    """Stored values -> (N, D) float32 approximations (bin centers; binary bits -> +-1).

    Args:
        stored: what quantize returned (or the column read back).
        precision: the stored precision (metadata rayembed.precision).
        ranges: (2, D) calibration ranges for int8/uint8 (metadata rayembed.quantization_ranges).
        dim: D for binary/ubinary (metadata rayembed.dim); packed rows may carry padding bits.
    """
    if precision in FLOATS:
        return stored.astype(np.float32)
    if precision in BINARY:
        raw = stored.astype(np.int16) + (128 if precision == "binary" else 0)
        bits = np.unpackbits(raw.astype(np.uint8), axis=1)[:, :dim]
        return bits.astype(np.float32) * 2 - 1
    levels = stored.astype(np.float32) + (128 if precision == "int8" else 0)
    starts, steps = ranges[0], (ranges[1] - ranges[0]) / 255
    return starts + (levels + 0.5) * steps


def stored_dim(list_size: int, precision: str, dim: int | None = None) -> int:
    """Embedding dimensions behind a stored list of `list_size` values (8 per byte for binary precisions)."""
    if precision in BINARY:
        return dim if dim is not None else list_size * 8
    return list_size


@dataclass(frozen=True)
class OutputPrecision:
    """How embedding vectors are stored: dimensions kept, precision and (int8/uint8) calibration ranges.

    Args:
        precision: output.dtype, one of PRECISIONS.
        dimensions: output.dimensions (None: the model's).
        normalize: re-normalize after truncation (model.normalize).
        ranges: (2, dimensions) calibration ranges, as nested lists, for int8/uint8.
    """

    precision: str = "float32"
    dimensions: int | None = None
    normalize: bool = True
    ranges: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def needs_calibration(self) -> bool:
        return self.precision in SCALAR and self.ranges is None

    def unquantized(self) -> OutputPrecision:
        """The same dimensions as float32: what a calibration sample is embedded with."""
        return OutputPrecision("float32", self.dimensions, self.normalize)

    def calibrated(self, sample: np.ndarray) -> OutputPrecision:
        lo, hi = calibration_ranges(sample)
        return OutputPrecision(
            self.precision, self.dimensions, self.normalize, (tuple(lo.tolist()), tuple(hi.tolist()))
        )

    def ranges_array(self) -> np.ndarray | None:
        return None if self.ranges is None else np.asarray(self.ranges, dtype=np.float32)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) float32 model vectors -> stored (N, width) values.

        Raises:
            PrecisionError: dimensions too large, or int8/uint8 without calibration ranges.
        """
        if self.needs_calibration:
            raise PrecisionError(
                f"output.dtype {self.precision} needs calibration ranges; this job cannot compute them (use float32, "
                "float16, binary or ubinary)"
            )
        return quantize(truncate(vectors, self.dimensions, self.normalize), self.precision, self.ranges_array())

    def arrow_type(self, dim: int) -> pa.DataType:
        """The stored column's type for model vectors of `dim` dimensions: fixed_size_list<value type>[width]."""
        kept = self.dimensions or dim
        return pa.list_(VALUE_TYPES[self.precision], -(-kept // 8) if self.precision in BINARY else kept)

    def to_arrow(self, vectors: np.ndarray, null: np.ndarray | None = None) -> pa.FixedSizeListArray:
        """(N, D) float32 -> fixed_size_list<value type>[width] column; rows where `null` is True are null.

        A block whose every row is null (rejects only) needs no ranges: int8/uint8 of a run whose every row was
        rejected on reading has none (pipeline.calibration: no row to calibrate on) and quantizes no value.
        """
        if null is not None and len(null) and bool(np.all(null)) and self.needs_calibration:
            width = self.arrow_type(vectors.shape[1]).list_size
            stored = np.zeros((len(vectors), width), dtype=VALUE_TYPES[self.precision].to_pandas_dtype())
        else:
            stored = self.encode(vectors)
        flat = pa.array(stored.reshape(-1), type=VALUE_TYPES[self.precision])
        mask = pa.array(null) if null is not None else None
        return pa.FixedSizeListArray.from_arrays(flat, stored.shape[1], mask=mask)

    def metadata(self) -> dict[str, str]:
        """File-metadata entries (without the rayembed. prefix) a reader needs to use the stored vectors."""
        meta = {"precision": self.precision, "dimensions": str(self.dimensions or "")}
        if self.precision in SCALAR and self.ranges is not None:
            meta["quantization_ranges"] = json.dumps([list(self.ranges[0]), list(self.ranges[1])])
            meta["quantization"] = (
                "x ~ lo + (q + 0.5) * (hi - lo) / 255 per dimension"
                + (" with q = int8 + 128" if self.precision == "int8" else "")
                + "; lo, hi = quantization_ranges"
            )
        if self.precision in BINARY:
            meta["quantization"] = "sign bits (x > 0) packed 8 per byte, most significant first" + (
                "; byte - 128 as int8" if self.precision == "binary" else ""
            )
        return meta


def refuse_non_float(column: str, value_type: pa.DataType, metadata: dict[bytes, bytes] | None, job: str) -> str:
    """The error message of a job that needs float vectors and found quantized ones."""
    precision = (metadata or {}).get(b"rayembed.precision", b"").decode() or str(value_type)
    if str(value_type) in ("int8", "uint8"):
        return (
            f"embedding column {column!r} holds {value_type} values: the embed job stored it with output.dtype "
            f"{precision} (quantized); {job} needs float vectors: embed with output.dtype float32 or float16 "
            "(output.dimensions may stay)"
        )
    if str(value_type) in ("uint16", "int16"):  # how bfloat16 is stored where Parquet has no such type
        return (
            f"embedding column {column!r} holds {value_type} values, expected float16/32/64. If they are bfloat16 bit "
            "patterns (numpy/ml_dtypes' bfloat16 or torch's tensor.view(torch.int16) written out), the job does not "
            "guess so: write them as float32, e.g. (x.astype(np.uint16).astype(np.uint32) << 16).view(np.float32), "
            "or float16"
        )
    return f"embedding column {column!r} holds {value_type}, expected float16/32/64"
