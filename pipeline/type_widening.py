"""Whether every value of one Arrow type casts exactly into another: the check before a stored column is widened.

A re-embedded version stores one type per kept column. When a new file brings the same logical type in another
width, unit or precision (int32 stored, int64 arriving; float32 and float64; decimal(10, 2) and decimal(12, 2);
timestamp[s] and timestamp[ms]; a struct that gains a field), the version can take the wider type only if no
stored value changes on the way: `widens_losslessly` says so. It is pure (types only, no values), so the answer
holds for every value the narrower type can hold.

Not lossless, so refused by the caller: nanoseconds to microseconds (sub-microsecond digits go); a coarser time
unit to nanoseconds (nanoseconds end in 2262); int64/uint64 to float64 and int32 to float32 (integers above 2**53,
2**24 are rounded); a decimal losing scale or integer digits; naive and zoned timestamps; anything into JSON text.
"""

from __future__ import annotations

import pyarrow as pa

# Largest integer each float type holds exactly (its significand bits + 1).
FLOAT_EXACT_BITS = {16: 11, 32: 24, 64: 53}
# Decimal digits of each integer type's largest value (uint64: 18446744073709551615, 20 digits).
INTEGER_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}
TIME_UNITS = ("s", "ms", "us", "ns")


def widens_losslessly(before: pa.DataType, after: pa.DataType) -> bool:
    """Whether a checked cast of any `before` value to `after` gives back the same value (same type: True).

    Args:
        before: the type stored so far (e.g. a published version's kept column).
        after: the type it would become.
    """
    if before == after or pa.types.is_null(before):
        return True
    if pa.types.is_dictionary(before):
        return widens_losslessly(before.value_type, after)
    if pa.types.is_integer(before):
        return integer_fits(before, after)
    if pa.types.is_floating(before):
        return pa.types.is_floating(after) and after.bit_width >= before.bit_width
    if pa.types.is_decimal(before):
        return pa.types.is_decimal(after) and (
            after.scale >= before.scale and after.precision - after.scale >= before.precision - before.scale
        )
    if pa.types.is_timestamp(before) or pa.types.is_date(before):
        return time_fits(before, after)
    if pa.types.is_duration(before):
        return pa.types.is_duration(after) and unit_fits(before.unit, after.unit)
    if pa.types.is_time(before):
        return pa.types.is_time(after) and unit_fits(before.unit, after.unit)
    if is_string_like(before) or is_binary_like(before):
        kind = is_string_like if is_string_like(before) else is_binary_like
        return kind(after)
    return nested_fits(before, after)


UNIT_NAMES = {"s": "second", "ms": "millisecond", "us": "microsecond", "ns": "nanosecond"}


def what_changes(before: pa.DataType, after: pa.DataType) -> str:
    """Which `before` values a cast to `after` may change, in words, for a pair `widens_losslessly` refuses
    ('integers above 2**53 are rounded as double')."""
    if pa.types.is_dictionary(before):
        return what_changes(before.value_type, after)
    if pa.types.is_integer(before) and pa.types.is_floating(after):
        return f"integers above 2**{FLOAT_EXACT_BITS[after.bit_width]} are rounded as {after}"
    if pa.types.is_timestamp(before) and pa.types.is_timestamp(after):
        if (before.tz is None) != (after.tz is None):
            return "naive and zoned timestamps are different instants without a time zone to say which"
        if after.unit == "ns" and before.unit != "ns":
            return "times after 2262 do not fit in nanoseconds"
        if TIME_UNITS.index(after.unit) < TIME_UNITS.index(before.unit):
            return f"{UNIT_NAMES[before.unit]}s are kept to the {UNIT_NAMES[after.unit]}"
    if pa.types.is_floating(before) and pa.types.is_floating(after):
        return f"{before} values are rounded as {after}"
    return f"{before} values are converted to {after}, not all of them exactly"


def integer_fits(before: pa.DataType, after: pa.DataType) -> bool:
    """An integer type into an integer type of its range, a float with enough significand, or a decimal with enough
    integer digits."""
    signed, bits = pa.types.is_signed_integer(before), before.bit_width
    if pa.types.is_integer(after):
        if pa.types.is_signed_integer(after):
            return after.bit_width >= bits + (not signed)
        return not signed and after.bit_width >= bits
    if pa.types.is_floating(after):
        return FLOAT_EXACT_BITS[after.bit_width] >= bits - signed
    if pa.types.is_decimal(after):
        return after.precision - after.scale >= INTEGER_DIGITS[bits] + (before == pa.uint64())
    return False


def unit_fits(before: str, after: str) -> bool:
    """A time unit into one at least as fine, but nothing coarser into nanoseconds (they end in 2262)."""
    finer = TIME_UNITS.index(after) >= TIME_UNITS.index(before)
    return finer and (after != "ns" or before == "ns")


def time_fits(before: pa.DataType, after: pa.DataType) -> bool:
    """Timestamps (and dates, their midnight) into a timestamp of a unit at least as fine, zoned into zoned (the
    same instants in any zone), naive into naive; date32 into date64."""
    if pa.types.is_date(before):
        if pa.types.is_date(after):
            return after == pa.date64() or before == after
        return pa.types.is_timestamp(after) and after.tz is None and after.unit != "ns"
    if not pa.types.is_timestamp(after) or (before.tz is None) != (after.tz is None):
        return False
    return unit_fits(before.unit, after.unit)


def is_string_like(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_binary_like(t: pa.DataType) -> bool:
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_fixed_size_binary(t)
    )


LISTS = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)


def nested_fits(before: pa.DataType, after: pa.DataType) -> bool:
    """Lists into lists (a fixed size kept or dropped) and maps into maps, item by item; a struct into a struct that
    has each of its fields (by name) with a type that fits, more fields allowed (they are null)."""
    if any(f(before) for f in LISTS) and any(f(after) for f in LISTS):
        if pa.types.is_fixed_size_list(after) and not (
            pa.types.is_fixed_size_list(before) and before.list_size == after.list_size
        ):
            return False
        return widens_losslessly(before.value_type, after.value_type)
    if pa.types.is_map(before) and pa.types.is_map(after):
        return widens_losslessly(before.key_type, after.key_type) and widens_losslessly(
            before.item_type, after.item_type
        )
    if pa.types.is_struct(before) and pa.types.is_struct(after):
        fields = {after.field(i).name: after.field(i).type for i in range(after.num_fields)}
        return all(
            before.field(i).name in fields and widens_losslessly(before.field(i).type, fields[before.field(i).name])
            for i in range(before.num_fields)
        )
    return False
