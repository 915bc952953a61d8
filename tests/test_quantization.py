"""Matryoshka truncation and quantized output precisions, against sentence-transformers' own functions."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline.clustering.vectors import EmbeddingColumnError, embedding_matrix
from pipeline.quantization import OutputPrecision, PrecisionError, dequantize, quantize, truncate


def unit_rows(n=64, d=40, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_truncate_keeps_prefix_and_renormalizes():
    x = unit_rows()
    t = truncate(x, 16, normalize=True)
    assert t.shape == (64, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(t * np.linalg.norm(x[:, :16], axis=1, keepdims=True), x[:, :16], rtol=1e-5)
    np.testing.assert_array_equal(truncate(x, 16, normalize=False), x[:, :16])
    with pytest.raises(PrecisionError, match="exceeds"):
        truncate(x, 41, normalize=True)


def test_truncate_leaves_a_zero_row_zero():
    x = np.zeros((1, 8), np.float32)
    assert not np.isnan(truncate(x, 4, True)).any()


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary", "float32"])
def test_same_values_as_sentence_transformers(precision):
    st = pytest.importorskip("sentence_transformers.util.quantization")
    x, calibration = unit_rows(64, 40, 1), unit_rows(500, 40, 2)
    ranges = np.stack([calibration.min(0), calibration.max(0)])
    clipped = np.clip(x, ranges[0], ranges[1])  # inside the calibrated range, as sentence-transformers assumes
    expected = st.quantize_embeddings(clipped, precision=precision, ranges=ranges if "int8" in precision else None)
    ours = quantize(clipped, precision, ranges)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)


def test_scalar_values_outside_the_range_clip_instead_of_wrapping():
    ranges = np.array([[-0.1, -0.1], [0.1, 0.1]], np.float32)
    q = quantize(np.array([[-5.0, 5.0]], np.float32), "int8", ranges)
    assert q.tolist() == [[-128, 127]]


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_dequantize_scalar_is_within_half_a_step(precision):
    x = unit_rows(200, 32, 3)
    ranges = np.stack([x.min(0), x.max(0)])
    back = dequantize(quantize(x, precision, ranges), precision, ranges)
    step = (ranges[1] - ranges[0]) / 255
    assert (np.abs(back - x) <= step / 2 + 1e-6).all()


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_binary_packs_sign_bits(precision):
    x = np.array([[1, -1, 1, 1, -1, -1, -1, 1, 0.5, -0.5]], np.float32)  # 10 dims -> 2 bytes, padded
    q = quantize(x, precision)
    assert q.shape == (1, 2)
    packed = [0b10110001, 0b10000000]
    assert q.tolist() == [packed if precision == "ubinary" else [b - 128 for b in packed]]
    np.testing.assert_array_equal(dequantize(q, precision, dim=10), np.sign(x))


@pytest.mark.parametrize(
    "precision, value_type, width", [("float16", pa.float16(), 16), ("int8", pa.int8(), 16), ("ubinary", pa.uint8(), 2)]
)
def test_arrow_column_types(precision, value_type, width):
    x = unit_rows(5, 40)
    out = OutputPrecision(precision, dimensions=16)
    if out.needs_calibration:
        out = out.calibrated(truncate(unit_rows(100, 40, 9), 16, True))
    col = out.to_arrow(x, null=np.array([False, True, False, False, False]))
    assert col.type == pa.list_(value_type, width) and col.null_count == 1
    meta = out.metadata()
    assert meta["precision"] == precision and meta["dimensions"] == "16"
    if precision == "int8":
        lo, hi = json.loads(meta["quantization_ranges"])
        assert len(lo) == len(hi) == 16


def test_int8_without_ranges_is_a_clear_error():
    with pytest.raises(PrecisionError, match="needs calibration ranges"):
        OutputPrecision("int8").encode(unit_rows())


@pytest.mark.parametrize("precision", ["int8", "ubinary"])
def test_float_readers_refuse_quantized_vectors(precision):
    """The cluster and bitext jobs read vectors through embedding_matrix: a quantized column is refused clearly."""
    out = OutputPrecision(precision)
    x = unit_rows(4, 16)
    if out.needs_calibration:
        out = out.calibrated(x)
    table = pa.table({"embedding": out.to_arrow(x)}).replace_schema_metadata({"rayembed.precision": precision})
    with pytest.raises(EmbeddingColumnError, match=f"output.dtype {precision} .*embed with output.dtype float32"):
        embedding_matrix(table, "embedding")


@pytest.mark.parametrize("job", ["mine_bitext", "cluster"])
def test_jobs_that_need_floats_refuse_quantized_output_in_their_config(job):
    from pipeline.cli import config_class
    from pipeline.config import ConfigError, load_config

    override = "output.dtype=int8" if job == "mine_bitext" else "embed.output.dtype=binary"
    base = "configs/mine_bitext.yaml" if job == "mine_bitext" else "configs/cluster.yaml"
    extra = (
        []
        if job == "mine_bitext"
        else ["embed.input.uri=x", "embed.input.format=text", "embed.output.uri=out/embeddings"]
    )
    with pytest.raises(ConfigError, match="is quantized; .* needs float32 or float16"):
        load_config(config_class(job), base, [*extra, override])


def test_reembed_refuses_scalar_quantization():
    from pipeline.config import ConfigError, load_config
    from pipeline.reembed.config import ReembedConfig

    with pytest.raises(ConfigError, match="output.dtype int8 needs calibration ranges fixed across runs"):
        load_config(ReembedConfig, "configs/reembed.yaml", ["output.dtype=int8"])
    assert load_config(ReembedConfig, "configs/reembed.yaml", ["output.dtype=ubinary"]).output.dtype == "ubinary"
