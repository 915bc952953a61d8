"""Which stored types may be widened without changing a value (pipeline.type_widening)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.type_widening import what_changes, widens_losslessly

WIDER = [
    (pa.int32(), pa.int64()),
    (pa.int8(), pa.int16()),
    (pa.uint32(), pa.int64()),
    (pa.uint32(), pa.uint64()),
    (pa.int32(), pa.float64()),
    (pa.uint32(), pa.float64()),
    (pa.float16(), pa.float32()),
    (pa.float32(), pa.float64()),
    (pa.int64(), pa.decimal128(19, 0)),
    (pa.uint64(), pa.decimal128(20, 0)),
    (pa.decimal128(10, 2), pa.decimal128(12, 2)),
    (pa.decimal128(10, 2), pa.decimal128(11, 3)),
    (pa.decimal128(10, 2), pa.decimal256(40, 2)),
    (pa.timestamp("s"), pa.timestamp("ms")),
    (pa.timestamp("ms"), pa.timestamp("us")),
    (pa.timestamp("us", "UTC"), pa.timestamp("us", "Europe/Paris")),
    (pa.timestamp("ns"), pa.timestamp("ns")),
    (pa.date32(), pa.date64()),
    (pa.date32(), pa.timestamp("us")),
    (pa.duration("s"), pa.duration("us")),
    (pa.time32("s"), pa.time64("us")),
    (pa.string(), pa.large_string()),
    (pa.large_string(), pa.string()),  # the same values, 64-bit offsets or not
    (pa.string_view(), pa.string()),
    (pa.dictionary(pa.int8(), pa.string()), pa.string()),
    (pa.list_(pa.int32()), pa.large_list(pa.int64())),
    (pa.list_(pa.float32(), 3), pa.list_(pa.float64())),
    (pa.struct([("a", pa.int32())]), pa.struct([("a", pa.int64()), ("b", pa.string())])),
    (pa.map_(pa.string(), pa.int16()), pa.map_(pa.string(), pa.int32())),
    (pa.null(), pa.int64()),
]

CHANGES_VALUES = [
    (pa.int64(), pa.int32()),  # overflow
    (pa.int64(), pa.uint64()),  # negatives
    (pa.uint64(), pa.int64()),  # 2**63 and up
    (pa.int64(), pa.float64()),  # integers above 2**53 are rounded
    (pa.int32(), pa.float32()),  # above 2**24
    (pa.float64(), pa.float32()),
    (pa.float64(), pa.decimal128(38, 10)),
    (pa.decimal128(10, 2), pa.decimal128(10, 1)),  # a digit of scale lost
    (pa.decimal128(10, 2), pa.decimal128(10, 3)),  # an integer digit lost
    (pa.int64(), pa.decimal128(18, 0)),
    (pa.timestamp("ns"), pa.timestamp("us")),  # sub-microsecond digits
    (pa.timestamp("us"), pa.timestamp("ns")),  # nanoseconds end in 2262
    (pa.timestamp("us"), pa.timestamp("us", "UTC")),  # which zone a naive value meant is a guess
    (pa.timestamp("us", "UTC"), pa.timestamp("us")),
    (pa.date64(), pa.date32()),
    (pa.duration("ns"), pa.duration("us")),
    (pa.int64(), pa.string()),
    (pa.string(), pa.binary()),
    (pa.list_(pa.int64()), pa.list_(pa.int64(), 2)),
    (pa.struct([("a", pa.int32()), ("b", pa.int8())]), pa.struct([("a", pa.int64())])),  # a field dropped
    (pa.list_(pa.timestamp("ns")), pa.list_(pa.timestamp("us"))),
]


@pytest.mark.parametrize("before, after", WIDER, ids=[f"{a}->{b}" for a, b in WIDER])
def test_a_wider_type_of_the_same_kind_holds_every_value(before, after):
    assert widens_losslessly(before, after)


@pytest.mark.parametrize("before, after", CHANGES_VALUES, ids=[f"{a}->{b}" for a, b in CHANGES_VALUES])
def test_a_cast_that_could_change_a_value_is_not_a_widening(before, after):
    assert not widens_losslessly(before, after)


@pytest.mark.parametrize(
    "before, after, said",
    [
        (pa.int64(), pa.float64(), "integers above 2**53 are rounded as double"),
        (pa.int32(), pa.float32(), "integers above 2**24 are rounded as float"),
        (pa.timestamp("ns"), pa.timestamp("us"), "nanoseconds are kept to the microsecond"),
        (pa.timestamp("ms"), pa.timestamp("ns"), "times after 2262 do not fit in nanoseconds"),
        (pa.timestamp("us"), pa.timestamp("us", "UTC"), "naive and zoned timestamps are different instants"),
    ],
)
def test_what_a_refused_cast_would_change_is_said_for_its_types(before, after, said):
    """The warning and the re-embed refusal said 'nanoseconds are kept to the microsecond, integers above 2**53
    rounded as float64' for any lossy pair: both notes for int64 -> double, or for ns -> us."""
    assert not widens_losslessly(before, after)
    assert what_changes(before, after).startswith(said)
