"""One type per kept column per job: the unification rule, JSON text for mixed JSON, errors for mixed Parquet."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import StorageConfig
from pipeline.kept_columns import JSON_TEXT, NO_RECORDS, KeptColumnTypeError, KeptType, decide, unify
from pipeline.reading import ReadSpec, observed_kept_types, read_file
from pipeline.storage import resolve


@pytest.mark.parametrize(
    "a, b, want",
    [
        (pa.int64(), pa.int32(), pa.int64()),
        (pa.int64(), pa.float64(), pa.float64()),
        (pa.null(), pa.string(), pa.string()),
        (pa.string(), pa.large_string(), pa.string()),
        (pa.dictionary(pa.int32(), pa.string()), pa.string(), pa.string()),
        (pa.string(), pa.string_view(), pa.string()),  # polars and DuckDB write string_view
        (pa.large_string(), pa.string_view(), pa.string()),
        (pa.large_binary(), pa.binary_view(), pa.binary()),
        (pa.list_(pa.string()), pa.large_list(pa.large_string()), pa.list_(pa.string())),
        (pa.int64(), pa.string(), None),
        (pa.bool_(), pa.int64(), None),
        (pa.uint64(), pa.uint32(), pa.uint64()),
        (pa.uint64(), pa.int64(), pa.decimal128(20, 0)),
        (pa.uint64(), pa.int8(), pa.decimal128(20, 0)),
        (pa.uint32(), pa.int64(), pa.int64()),
        (pa.timestamp("us"), pa.timestamp("ns"), pa.timestamp("us")),
        (pa.timestamp("s", "UTC"), pa.timestamp("ms", "UTC"), pa.timestamp("ms", "UTC")),
        (pa.timestamp("ms"), pa.timestamp("ns"), pa.timestamp("us")),
        (pa.timestamp("us"), pa.timestamp("us", "UTC"), None),
        (pa.duration("s"), pa.duration("ns"), pa.duration("us")),
        (pa.timestamp("us", "UTC"), pa.timestamp("us", "+00:00"), pa.timestamp("us", "UTC")),
        (pa.timestamp("ns", "Europe/Paris"), pa.timestamp("s", "UTC"), pa.timestamp("us", "UTC")),
        (pa.date32(), pa.timestamp("ns"), pa.timestamp("us")),
        (pa.date64(), pa.timestamp("ms"), pa.timestamp("ms")),
        (pa.date32(), pa.timestamp("us", "UTC"), None),
        (pa.list_(pa.uint64()), pa.list_(pa.int64()), pa.list_(pa.decimal128(20, 0))),
        (pa.list_(pa.timestamp("ns")), pa.large_list(pa.timestamp("us")), pa.list_(pa.timestamp("us"))),
        (
            pa.struct([("at", pa.timestamp("ns")), ("n", pa.int32())]),
            pa.struct([("at", pa.timestamp("us")), ("tag", pa.string())]),
            pa.struct([("at", pa.timestamp("us")), ("n", pa.int32()), ("tag", pa.string())]),
        ),
        (
            pa.map_(pa.string(), pa.uint64()),
            pa.map_(pa.string(), pa.int8()),
            pa.map_(pa.string(), pa.decimal128(20, 0)),
        ),
        (pa.decimal128(10, 2), pa.int64(), pa.decimal128(21, 2)),
        (pa.decimal128(5, 1), pa.int32(), pa.decimal128(11, 1)),
        (pa.decimal128(5, 1), pa.int8(), pa.decimal128(5, 1)),
        (pa.decimal128(10, 2), pa.uint64(), pa.decimal128(22, 2)),
        (pa.decimal128(38, 20), pa.int64(), pa.decimal256(39, 20)),
        (pa.decimal128(38, 2), pa.decimal128(38, 10), pa.decimal256(46, 10)),
        (pa.list_(pa.uint64(), 2), pa.list_(pa.int64(), 2), pa.list_(pa.decimal128(20, 0), 2)),
        (pa.list_(pa.float32(), 3), pa.list_(pa.float64()), pa.list_(pa.float64())),
        (pa.list_(pa.int64()), pa.list_(pa.string()), None),
        (pa.struct([("a", pa.int64())]), pa.struct([("a", pa.bool_())]), None),
    ],
)
def test_unify(a, b, want):
    assert unify(a, b) == want
    if pa.types.is_struct(want or pa.null()):  # fields in first-seen order
        assert {f.name: f.type for f in unify(b, a)} == {f.name: f.type for f in want}
    else:
        assert unify(b, a) == want


def job_types(tmp_path, files: dict[str, object], keep=("year",)):
    for name, content in files.items():
        if isinstance(content, pa.Table):
            pq.write_table(content, tmp_path / name)
        else:
            (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in content))
    spec = ReadSpec(resolve(str(tmp_path), StorageConfig()), None, "text", None, tuple(keep))
    names = sorted(files)
    observed = [(name, *observed_kept_types(spec, name)) for name in names]
    return spec, names, decide(list(keep), observed)


def read_column(spec, names, types, column="year"):
    spec = ReadSpec(spec.root, spec.format, spec.text_column, spec.id_column, spec.keep_columns, types)
    blocks = [b for n in names for b in read_file(spec, n)]
    assert len({b.schema for b in blocks}) == 1, "blocks of one job must share one schema"
    return pa.concat_tables(blocks).column(column)


def test_mixed_json_scalars_are_kept_losslessly_as_json_text(tmp_path):
    spec, names, types = job_types(
        tmp_path,
        {
            "a.jsonl": [{"text": "x", "year": 2021}, {"text": "y", "year": None}],
            "b.jsonl": [{"text": "z", "year": "2021"}, {"text": "w", "year": "unknown"}],
        },
    )
    assert types == {"year": JSON_TEXT}
    column = read_column(spec, names, types)
    assert column.type == pa.string()
    assert column.to_pylist() == ["2021", None, '"2021"', '"unknown"']
    assert [json.loads(v) if v else None for v in column.to_pylist()] == [2021, None, "2021", "unknown"]


def test_ints_and_floats_across_files_become_float64(tmp_path):
    files = {
        "a.jsonl": [{"text": "x", "year": 2021}],
        "b.jsonl": [{"text": "y", "year": 2021.5}],
        "c.jsonl": [{"text": "z"}],
    }
    spec, names, types = job_types(tmp_path, files)
    assert types == {"year": KeptType(pa.float64())}
    assert read_column(spec, names, types).to_pylist() == [2021.0, 2021.5, None]


def test_parquet_shards_from_different_tools_unify_to_string(tmp_path):
    files = {
        "a.parquet": pa.table({"text": ["x"], "year": pa.array(["2021"], pa.string())}),
        "b.parquet": pa.table({"text": ["y"], "year": pa.array(["2022"], pa.large_string())}),
        "c.parquet": pa.table({"text": ["z"], "year": pa.array(["2023"]).dictionary_encode()}),  # pandas categorical
        "d.jsonl": [{"text": "w", "year": "2024"}],
    }
    spec, names, types = job_types(tmp_path, files)
    assert types == {"year": KeptType(pa.string())}
    assert read_column(spec, names, types).to_pylist() == ["2021", "2022", "2023", "2024"]


def test_parquet_types_that_cannot_be_reconciled_fail_naming_file_column_and_types(tmp_path):
    files = {
        "a.parquet": pa.table({"text": ["x"], "year": pa.array([2021])}),
        "b.parquet": pa.table({"text": ["y"], "year": pa.array(["2021"])}),
    }
    with pytest.raises(
        KeptColumnTypeError,
        match=r"kept column 'year': b.parquet has type string but a.parquet has "
        r"type int64",
    ):
        job_types(tmp_path, files)


def test_a_block_that_does_not_fit_the_decided_type_names_file_and_column(tmp_path):
    from pipeline.reading import InputFileError

    (tmp_path / "a.jsonl").write_text('{"text": "x", "year": "later"}\n')
    spec = ReadSpec(
        resolve(str(tmp_path), StorageConfig()), "jsonl", "text", None, ("year",), {"year": KeptType(pa.int64())}
    )
    with pytest.raises(InputFileError, match=r"a.jsonl.*column 'year': values do not fit the job's type int64"):
        list(read_file(spec, "a.jsonl"))


def test_a_kept_column_some_files_lack_is_null_there_and_one_no_file_has_is_an_error(tmp_path):
    """Shards written before a column was added lack it: JSONL rows got null but a Parquet shard failed the job
    ("column(s) ['lang'] not found"). Now both are null; a column that no file has is a misspelling and fails."""
    files = {
        "a.parquet": pa.table({"text": ["x"], "lang": pa.array(["fr"]).dictionary_encode()}),
        "b.parquet": pa.table({"text": ["y"]}),
        "c.jsonl": [{"text": "z"}],
        "d.jsonl": [{"text": "w", "lang": "de"}],
    }
    spec, names, types = job_types(tmp_path, files, keep=("lang",))
    assert types == {"lang": KeptType(pa.string())}
    assert read_column(spec, names, types, "lang").to_pylist() == ["fr", None, None, "de"]
    with pytest.raises(KeptColumnTypeError, match=r"no input file has the column\(s\) \['lnag'\]"):
        job_types(tmp_path, files, keep=("lang", "lnag"))


def test_files_without_records_neither_have_nor_lack_a_kept_column(tmp_path):
    """An input of empty files (zero-byte JSONL and Parquet, JSONL of blank lines, an empty gzip) with
    output.keep_columns failed the embed and re-embed jobs: 'no input file has the column(s) [...]; check the
    spelling'. A file without a record or a schema cannot tell a misspelling: all-empty input decides nothing and
    writes nulls; one file with records and without the column still fails."""
    (tmp_path / "a.jsonl").write_bytes(b"")
    (tmp_path / "b.parquet").write_bytes(b"")
    (tmp_path / "c.jsonl").write_text("\n  \n\n")
    with gzip.open(tmp_path / "d.jsonl.gz", "wb"):
        pass
    names = ["a.jsonl", "b.parquet", "c.jsonl", "d.jsonl.gz"]
    spec = ReadSpec(resolve(str(tmp_path), StorageConfig()), None, "text", None, ("lang", "topic"))
    observed = [(name, *observed_kept_types(spec, name)) for name in names]
    assert [fmt for _, fmt, _ in observed] == [NO_RECORDS] * 4
    assert decide(["lang", "topic"], observed) == {"lang": KeptType(pa.string()), "topic": KeptType(pa.string())}
    (tmp_path / "e.jsonl").write_text(json.dumps({"text": "x", "lang": "fr"}) + "\n")
    with_records = observed + [("e.jsonl", *observed_kept_types(spec, "e.jsonl"))]
    with pytest.raises(KeptColumnTypeError, match=r"no input file has the column\(s\) \['topic'\]"):
        decide(["lang", "topic"], with_records)


def test_json_values_nested_deeper_than_parquet_readers_allow_are_kept_as_json_text(tmp_path):
    """A list nested ~50 levels deep made a typed column that pyarrow wrote but no reader could open again
    ("Parquet schema too deeply nested"): such values are kept as JSON text."""
    deep = [1, 2]
    for _ in range(60):
        deep = [deep]
    files = {"a.jsonl": [{"text": "x", "tree": deep}, {"text": "y", "tree": None}]}
    spec, names, types = job_types(tmp_path, files, keep=("tree",))
    assert types == {"tree": JSON_TEXT}
    column = read_column(spec, names, types, "tree")
    assert [json.loads(v) if v else v for v in column.to_pylist()] == [deep, None]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"tree": column}), sink)
    assert pq.read_table(pa.BufferReader(sink.getvalue())).num_rows == 2


def test_empty_json_objects_are_kept_as_json_text(tmp_path):
    """`"meta": {}` on every row of a file made a struct without fields, which Parquet cannot write: the write
    stage failed the job ("Cannot write struct type 'meta' with no child field")."""
    files = {
        "a.jsonl": [{"text": "x", "meta": {}}, {"text": "y", "meta": {"tags": [{}]}}],
        "b.jsonl": [{"text": "z", "meta": {"k": 1}}],
    }
    spec, names, types = job_types(tmp_path, files, keep=("meta",))
    assert types == {"meta": JSON_TEXT}
    column = read_column(spec, names, types, "meta")
    assert [json.loads(v) for v in column.to_pylist()] == [{}, {"tags": [{}]}, {"k": 1}]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"meta": column}), sink)


def test_a_json_text_column_meets_a_parquet_file_without_it(tmp_path):
    """Mixed JSON values (kept as JSON text) and a Parquet shard lacking the column, or holding only nulls, used to
    fail the job: "p.parquet has type null but mixed JSON values"."""
    files = {
        "a.jsonl": [{"text": "x", "meta": {}}, {"text": "y", "meta": 3}],
        "b.parquet": pa.table({"text": ["z"]}),
        "c.parquet": pa.table({"text": ["w"], "meta": pa.nulls(1)}),
    }
    spec, names, types = job_types(tmp_path, files, keep=("meta",))
    assert types == {"meta": JSON_TEXT}
    assert read_column(spec, names, types, "meta").to_pylist() == ["{}", "3", None, None]


def test_integers_and_timestamps_of_different_widths_and_units_are_read_without_loss(tmp_path, caplog):
    """uint64 ids above 2**63 next to int64 ones, and a pandas (ns) shard next to a us one holding 9999-12-31: the
    int64 / timestamp[ns] the columns used to unify to could not hold those values, and the read task failed.
    The job says which file holds which type and whether a value changes (it unified them without a word)."""
    import datetime

    big, sentinel = 2**64 - 1, datetime.datetime(9999, 12, 31)
    fine = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456)
    files = {
        "a.parquet": pa.table(
            {"text": ["x"], "n": pa.array([big], pa.uint64()), "t": pa.array([sentinel], "timestamp[us]")}
        ),
        "b.parquet": pa.table(
            {
                "text": ["y", "z"],
                "n": pa.array([-5, 7], pa.int64()),
                "t": pa.array([1714564800123456789, None], pa.timestamp("ns")),
            }
        ),
        "c.parquet": pa.table({"text": ["w"], "n": pa.array([3], pa.uint32()), "t": pa.array([fine], "timestamp[ms]")}),
    }
    with caplog.at_level("WARNING", logger="pipeline.kept_columns"):
        spec, names, types = job_types(tmp_path, files, keep=("n", "t"))
    assert types == {"n": KeptType(pa.decimal128(20, 0)), "t": KeptType(pa.timestamp("us"))}
    assert (
        "kept column 'n': the files hold uint64 (a.parquet), int64 (b.parquet), uint32 (c.parquet); written as "
        "decimal128(20, 0) (no value changes)" in caplog.text
    )
    assert "written as timestamp[us] (values of timestamp[ns] may change: nanoseconds are kept to the microsecond)" in (
        caplog.text
    )  # said alone: integers are not rounded here (both notes were said for any lossy type)
    assert [int(v) for v in read_column(spec, names, types, "n").to_pylist()] == [big, -5, 7, 3]
    assert read_column(spec, names, types, "t").to_pylist() == [
        sentinel,
        datetime.datetime(2024, 5, 1, 12, 0, 0, 123456),  # the ns value, kept to the microsecond
        None,
        datetime.datetime(2024, 5, 1, 12, 0, 0, 123000),
    ]


def test_nested_values_zones_and_dates_are_read_without_loss(tmp_path):
    """The widths and units above, inside lists and structs; zoned timestamps of two zones; dates next to naive
    timestamps; a decimal next to int64 (Arrow's decimal128(20, 1) for decimal(5, 1) and int64 held no 2**63 - 1).
    Each was narrowed (list<int64>, struct<timestamp[ns]>: the read task failed on 2**64-1 or
    9999-12-31) or refused as two types ('Parquet types are not reconciled')."""
    import datetime
    import decimal

    utc = datetime.timezone.utc
    big, sentinel = 2**64 - 1, datetime.datetime(9999, 12, 31)
    instant = datetime.datetime(2024, 5, 1, 10, 0, tzinfo=utc)
    files = {
        "a.parquet": pa.table(
            {
                "text": ["x"],
                "ids": pa.array([[big]], pa.list_(pa.uint64())),
                "meta": pa.array([{"until": sentinel}], pa.struct([("until", pa.timestamp("us"))])),
                "at": pa.array([instant], pa.timestamp("us", "UTC")),
                "day": pa.array([datetime.date(2024, 5, 1)], pa.date32()),
            }
        ),
        "b.parquet": pa.table(
            {
                "text": ["y"],
                "ids": pa.array([[-1, 2]], pa.list_(pa.int64())),
                "meta": pa.array([{"until": 1714564800123456789}], pa.struct([("until", pa.timestamp("ns"))])),
                "at": pa.array([instant], pa.timestamp("ms", "Europe/Paris")),
                "day": pa.array([datetime.datetime(2024, 5, 2, 8, 30)], pa.timestamp("ns")),
            }
        ),
    }
    files["a.parquet"] = files["a.parquet"].append_column(
        "price", pa.array([decimal.Decimal("12.5")], pa.decimal128(5, 1))
    )
    files["b.parquet"] = files["b.parquet"].append_column("price", pa.array([2**63 - 1], pa.int64()))
    keep = ("ids", "meta", "at", "day", "price")
    spec, names, types = job_types(tmp_path, files, keep=keep)
    assert types == {
        "ids": KeptType(pa.list_(pa.decimal128(20, 0))),
        "meta": KeptType(pa.struct([("until", pa.timestamp("us"))])),
        "at": KeptType(pa.timestamp("us", "UTC")),
        "day": KeptType(pa.timestamp("us")),
        "price": KeptType(pa.decimal128(20, 1)),
    }
    assert [str(v) for v in read_column(spec, names, types, "price").to_pylist()] == ["12.5", f"{2**63 - 1}.0"]
    assert [[int(v) for v in row] for row in read_column(spec, names, types, "ids").to_pylist()] == [[big], [-1, 2]]
    assert read_column(spec, names, types, "meta").to_pylist() == [
        {"until": sentinel},
        {"until": datetime.datetime(2024, 5, 1, 12, 0, 0, 123456)},
    ]
    assert read_column(spec, names, types, "at").to_pylist() == [instant, instant]
    assert read_column(spec, names, types, "day").to_pylist() == [
        datetime.datetime(2024, 5, 1),
        datetime.datetime(2024, 5, 2, 8, 30),
    ]


def test_json_integers_above_int64_next_to_negative_ones_are_kept_exactly(tmp_path):
    files = {"a.jsonl": [{"text": "x", "year": 2**64 - 1}], "b.jsonl": [{"text": "y", "year": -1}]}
    spec, names, types = job_types(tmp_path, files)
    values = read_column(spec, names, types).to_pylist()
    assert [json.loads(v) if types["year"].json_text else int(v) for v in values] == [2**64 - 1, -1]


def test_a_kept_column_named_by_hive_partition_directories_takes_their_value(tmp_path):
    """Spark/Hive/Ray Data layouts keep a column in the path (`lang=fr/part-0.parquet`), not in the files: it was
    'no input file has the column(s) ['lang']'. A file's own column wins; values are strings, %XX decoded."""
    from pipeline.reading import hive_partitions

    assert hive_partitions("lang=fr/year=2021/part-0.parquet") == {"lang": "fr", "year": "2021"}
    assert hive_partitions("topic=a%20b%2Fc/x.jsonl") == {"topic": "a b/c"}
    assert hive_partitions("lang=__HIVE_DEFAULT_PARTITION__/x.txt") == {"lang": None}
    assert hive_partitions("plain/x=1.jsonl") == {}  # the file name is not a partition
    for d in ("lang=fr", "lang=de", "lang=en", "lang=__HIVE_DEFAULT_PARTITION__", "other"):
        (tmp_path / d).mkdir()
    pq.write_table(pa.table({"text": ["bonjour", "salut"]}), tmp_path / "lang=fr" / "a.parquet")
    (tmp_path / "lang=de" / "b.jsonl").write_text('{"text": "hallo", "lang": "de-AT"}\n{"text": "guten tag"}\n')
    (tmp_path / "lang=en" / "c.txt").write_text("hello\n")
    (tmp_path / "lang=__HIVE_DEFAULT_PARTITION__" / "d.jsonl").write_text('{"text": "?"}\n')
    (tmp_path / "other" / "e.jsonl").write_text('{"text": "x"}\n')
    names = [
        "lang=fr/a.parquet",
        "lang=de/b.jsonl",
        "lang=en/c.txt",
        "lang=__HIVE_DEFAULT_PARTITION__/d.jsonl",
        "other/e.jsonl",
    ]
    spec = ReadSpec(resolve(str(tmp_path), StorageConfig()), None, "text", None, ("lang",))
    types = decide(["lang"], [(n, *observed_kept_types(spec, n)) for n in names])
    assert types == {"lang": KeptType(pa.string())}
    assert read_column(spec, names, types, "lang").to_pylist() == ["fr", "fr", "de-AT", "de", "en", None, None]
