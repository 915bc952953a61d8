"""Dotted column paths into structs / JSON objects: one rule for every reader (pipeline.column_paths)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.column_paths import (
    Missing,
    arrow_null_parents,
    arrow_path,
    arrow_values,
    flat_table,
    json_value,
    merge_misses,
    projection,
)

META = pa.struct([("text", pa.string()), ("lang", pa.string()), ("x.y", pa.int32())])
SCHEMA = pa.schema([("id", pa.int64()), ("meta", META), ("deep", pa.struct([("inner", META)]))])


def test_arrow_paths_resolve_top_level_names_struct_fields_and_dotted_field_names():
    assert arrow_path(SCHEMA, "id") == ("id",)
    assert arrow_path(SCHEMA, "meta.text") == ("meta", "text")
    assert arrow_path(SCHEMA, "deep.inner.lang") == ("deep", "inner", "lang")
    assert arrow_path(SCHEMA, "meta.x.y") == ("meta", "x.y")  # a field whose own name holds a dot
    assert arrow_path(SCHEMA, "meta") == ("meta",)  # a whole struct


def test_a_top_level_column_literally_named_with_a_dot_wins_over_the_struct_field():
    schema = SCHEMA.append(pa.field("meta.text", pa.string()))
    assert arrow_path(schema, "meta.text") == ("meta.text",)
    assert json_value({"meta.text": "flat", "meta": {"text": "nested"}}, "meta.text") == "flat"


def test_a_missing_path_says_where_it_stopped_and_what_exists_there():
    miss = arrow_path(SCHEMA, "meta.body")
    assert miss == Missing("meta", ("text", "lang", "x.y"))
    assert miss.describe("meta.body") == "'meta.body' stops at 'meta': 'meta' has fields ['lang', 'text', 'x.y']"
    assert arrow_path(SCHEMA, "deep.inner.nope").at == "deep.inner"
    not_struct = arrow_path(SCHEMA, "id.text")
    assert not_struct.describe("id.text") == "'id.text' stops at 'id', which is int64, not a struct"
    assert arrow_path(SCHEMA, "body") == Missing("", ("id", "meta", "deep"))


def test_json_values_and_per_record_reasons():
    assert json_value({"meta": {"text": "a"}}, "meta.text") == "a"
    assert json_value({"meta": {"text": None}}, "meta.text") is None  # a null leaf is a value (null text)
    assert json_value({"meta": None}, "meta.text").reason("meta.text") == "'meta' is null"
    assert json_value({"meta": {"lang": "de"}}, "meta.text").reason("meta.text") == "'meta' has no field 'text'"
    assert json_value({"meta": [1]}, "meta.text").reason("meta.text") == "'meta' is list, not an object"
    assert json_value({"a": {"b": {"c": 1}}}, "a.b.c") == 1


def test_misses_of_many_records_report_the_deepest_level_with_every_field_seen():
    a = json_value({"meta": {"lang": "de"}}, "meta.text")
    b = json_value({"meta": {"title": "t"}}, "meta.text")
    top = json_value({"other": 1}, "meta.text")
    merged = merge_misses(merge_misses(merge_misses(None, top), a), b)
    assert merged == Missing("meta", ("lang", "title"))


def test_arrow_values_are_null_under_a_null_struct_and_say_which_one():
    meta = pa.array([{"text": "a", "lang": "de", "x.y": 1}, None, {"text": None, "lang": "fr", "x.y": 2}], META)
    table = pa.table({"meta": meta})
    assert arrow_values(table, ("meta", "text")).to_pylist() == ["a", None, None]
    assert arrow_null_parents(table, ("meta", "text")) == [None, Missing("meta", None, "null"), None]


def test_projection_reads_only_the_struct_leaves_named(tmp_path):
    meta = pa.array([{"text": "a", "lang": "de", "x.y": 1}], META)
    pq.write_table(pa.table({"id": [1], "meta": meta}), tmp_path / "f.parquet")
    columns = projection([("meta", "text"), ("id",), ("meta", "lang")])
    assert columns == ["meta.text", "id", "meta.lang"]
    batch = next(pq.ParquetFile(tmp_path / "f.parquet").iter_batches(columns=columns))
    assert batch.schema.field("meta").type == pa.struct([("text", pa.string()), ("lang", pa.string())])
    assert projection([("meta", "text"), ("meta",)]) == ["meta"]  # the whole struct is read once


def test_negative_positions_in_a_table_of_many_chunks_and_in_json():
    """The clustering job reads paths with flat_table over whole tables (chunked columns; a chunk may be a slice):
    `v[-1]` is each row's last item there too, null for a null or short list; JSON the same (json_value)."""
    chunks = [pa.array([[1, 2], None]), pa.array([[0], [3, 4, 5], []]).slice(1)]
    table = pa.table({"v": pa.chunked_array(chunks)})
    assert arrow_path(table.schema, "v[-1]") == ("v", -1)
    assert flat_table(table, {"v[-1]": ("v", -1)}).column("v[-1]").to_pylist() == [2, None, 5, None]
    assert arrow_values(table, ("v", -3)).to_pylist() == [None, None, 3, None]
    assert arrow_null_parents(table, ("v", -3))[0] == Missing("v", None, "list", index=-3, items=2)
    assert json_value({"v": [1, 2]}, "v[-2]") == 1
    assert json_value({"v": [1, 2]}, "v[-3]").reason("v[-3]") == "'v' has 2 items, no item [-3]"


def test_spelling_hint_names_the_columns_that_spell_a_missing_one_another_way():
    from pipeline.column_paths import spelling_hint

    names = ["Text", "text_body", "ID", "caf\u00e9", "lang"]
    assert spelling_hint(["text"], names) == (
        "; did you mean 'Text' for 'text'? Names are matched exactly (case, spaces and '_' included): give the name "
        "as the file spells it"
    )
    assert spelling_hint(["Text Body", " id", "cafe\u0301", "meta"], names).startswith(
        "; did you mean 'text_body' for 'Text Body', 'ID' for ' id', 'caf\u00e9' for 'cafe\u0301'?"
    )
    assert spelling_hint(["body", "lang"], names) == ""
