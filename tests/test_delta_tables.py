"""Delta Lake tables as input (pipeline/delta_tables.py): real tables written by deltalake (delta-rs), local and on
the session's S3 server; the listing holds the files of the table's current version alone."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import uuid
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import StorageConfig
from pipeline.delta_tables import DeltaTableError
from pipeline.storage import list_files, list_inputs

deltalake = pytest.importorskip("deltalake")
LOCAL = StorageConfig()


def rows(*texts, lang=None):
    table = pa.table({"text": list(texts)})
    return table.append_column("lang", pa.array([lang] * len(texts))) if lang else table


def parquet_files(table) -> list[str]:
    """Every Parquet file in a table's folder, the log's checkpoints left out, relative to it."""
    found = []
    for folder, _, names in os.walk(table):
        rel = os.path.relpath(folder, table)
        if rel.split(os.sep)[0] != "_delta_log":
            found += [os.path.normpath(os.path.join(rel, n)) for n in names if n.endswith(".parquet")]
    return sorted(found)


def current(table) -> list[str]:
    """The files of the table's current version, as deltalake names them (relative, decoded)."""
    return sorted(pa.table(deltalake.DeltaTable(str(table)).get_add_actions()).column("path").to_pylist())


def commit(table, version, *actions) -> None:
    """A commit written as the protocol lays it out (JSON lines), for what delta-rs does not write."""
    text = "".join(json.dumps(a) + "\n" for a in actions)
    (table / "_delta_log" / f"{version:020d}.json").write_text(text)


def test_a_delta_tables_folder_is_read_at_its_current_version(tmp_path, caplog):
    """An overwrite, delete or compaction leaves the files it removed in the folder until VACUUM. The listing read
    them all (the rows embedded twice or after their delete), then (8dcf272) refused the folder; now it holds the
    files of the current version alone, with one INFO line saying how many it left out. As the input itself, from
    a folder above it, or through a pattern. Files that stay in the table keep their paths (ids `<file>#<row>`)."""
    t = tmp_path / "tables" / "t"
    write = deltalake.write_deltalake
    write(str(t), rows("a", "b", lang="fr"), partition_by=["lang"])
    write(str(t), rows("c", lang="de"), mode="append")
    first = list_files(str(t), LOCAL)[1]
    assert first == current(t) and len(first) == 2  # append-only: every file, as before
    write(str(t), rows("d", lang="de"), mode="append")
    assert set(first) < set(list_files(str(t), LOCAL)[1])  # an append keeps the other files' paths

    write(str(t), rows("e", "f", lang="fr"), mode="overwrite", partition_by=["lang"])
    deltalake.DeltaTable(str(t)).delete("text = 'f'")  # rewrites the file without the row
    write(str(t), rows("g", lang="en"), mode="append")
    write(str(t), rows("h", lang="en"), mode="append")
    deltalake.DeltaTable(str(t)).optimize.compact()  # lang=en's two files become one
    live = current(t)
    assert len(live) == 2 and len(parquet_files(t)) == 8
    caplog.set_level(logging.INFO, logger="pipeline.delta_tables")
    assert list_files(str(t), LOCAL)[1] == live  # old code: DeltaTableError (8dcf272), all 8 files before it
    assert "at version 7: reading the 2 file(s) of its current version; left out 6 file(s)" in caplog.text
    assert list_files(str(tmp_path / "tables"), LOCAL)[1] == [f"t/{p}" for p in live]
    (tmp_path / "tables" / "other.parquet").write_bytes((t / live[0]).read_bytes())  # a file beside the table
    assert list_files(str(tmp_path / "tables"), LOCAL)[1] == ["other.parquet", *(f"t/{p}" for p in live)]
    assert list_files(f"{t}/lang=en/*.parquet", LOCAL)[1] == [p.removeprefix("lang=en/") for p in live[:1]]
    assert list_files(f"{t}/**/*.parquet", LOCAL)[1] == live

    shutil.rmtree(t / "lang=en")  # a file of the current version gone: its rows would be lost
    with pytest.raises(DeltaTableError, match=r"holds 1 file\(s\) that are not in its folder \(e.g. 'lang=en/"):
        list_files(str(t), LOCAL)


def test_a_delta_table_whose_old_commits_were_cleaned_up_after_a_checkpoint_is_read(tmp_path):
    """Writers delete commits older than a checkpoint (log retention). The hand-written replay read classic
    checkpoints (`n.checkpoint.parquet`) only: after a v2 checkpoint (`n.checkpoint.<uuid>.json`, Databricks'
    default for new tables) it saw the later commits' adds alone, took the checkpoint's live files for removed ones
    and refused a legitimate table. deltalake reads both kinds."""
    classic = tmp_path / "classic"
    deltalake.write_deltalake(str(classic), rows("a"))
    deltalake.write_deltalake(str(classic), rows("b"), mode="append")
    deltalake.DeltaTable(str(classic)).create_checkpoint()
    (classic / "_delta_log" / f"{0:020d}.json").unlink()  # log cleanup: the commits before the checkpoint's
    deltalake.write_deltalake(str(classic), rows("c"), mode="append")
    assert list_files(str(classic), LOCAL)[1] == current(classic) and len(current(classic)) == 3

    v2 = tmp_path / "v2"
    deltalake.write_deltalake(str(v2), rows("a"))
    deltalake.write_deltalake(str(v2), rows("b"), mode="append")
    log = v2 / "_delta_log"
    actions = [json.loads(line) for v in (0, 1) for line in (log / f"{v:020d}.json").read_text().splitlines()]
    features = ["v2Checkpoint"]
    protocol = {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": features, "writerFeatures": features}
    checkpoint = [{"checkpointMetadata": {"version": 1}}, {"protocol": protocol}]
    checkpoint += [a for a in actions if "metaData" in a or "add" in a]
    (log / f"{1:020d}.checkpoint.{uuid.uuid4()}.json").write_text("".join(json.dumps(a) + "\n" for a in checkpoint))
    (log / "_last_checkpoint").write_text(json.dumps({"version": 1, "size": len(checkpoint)}))
    for version in (0, 1):
        (log / f"{version:020d}.json").unlink()
    pq.write_table(rows("c"), v2 / "c.parquet")  # delta-rs writes no v2-checkpoint table: a commit as Spark's
    add = {"path": "c.parquet", "partitionValues": {}, "size": (v2 / "c.parquet").stat().st_size}
    commit(v2, 2, {"add": {**add, "modificationTime": 1, "dataChange": True}})
    assert len(current(v2)) == 3
    assert list_files(str(v2), LOCAL)[1] == current(v2)  # old code: 'holds 2 Parquet file(s) ... no longer lists'


def deletion_vector(table, deleted: list[int]) -> dict:
    """A deletion vector file for rows `deleted` (< 65536) as Delta's protocol lays it out (a version byte, then
    the size, a RoaringTreemap of one array container behind its magic number, and a CRC-32), and its descriptor:
    delta-rs reads deletion vectors but writes none."""
    array = struct.pack("<IIHHI", 12346, 1, 0, len(deleted) - 1, 16) + b"".join(struct.pack("<H", r) for r in deleted)
    bitmap = struct.pack("<IQI", 1681511377, 1, 0) + array
    path = table / "deletion_vector.bin"
    path.write_bytes(b"\x01" + struct.pack(">I", len(bitmap)) + bitmap + struct.pack(">I", zlib.crc32(bitmap)))
    where = {"pathOrInlineDv": path.as_uri(), "offset": 1, "sizeInBytes": len(bitmap)}
    return {"storageType": "p", **where, "cardinality": len(deleted)}


def test_what_parquet_files_cannot_give_is_refused_saying_how_to_read_the_table(tmp_path):
    """Rows deleted in place (deletion vectors), column mapping (the files' column names are not the table's), a
    protocol delta-rs cannot read, and partition values a file's path does not carry: read as Parquet files, rows
    would be embedded after their delete, a column not found or a kept column null. Each is refused naming the
    table, why, and how to write its current version out. The old replay read all but deletion vectors."""
    vectors = tmp_path / "vectors"
    deltalake.write_deltalake(str(vectors), rows("a", "b", "c"), configuration={"delta.enableDeletionVectors": "true"})
    [path] = current(vectors)
    size = (vectors / path).stat().st_size
    stats = json.dumps({"numRecords": 3})
    add = {"path": path, "partitionValues": {}, "size": size, "modificationTime": 1, "dataChange": True}
    commit(
        vectors,
        1,
        {"remove": {"path": path, "deletionTimestamp": 2, "dataChange": True}},
        {"add": {**add, "stats": stats, "deletionVector": deletion_vector(vectors, [1])}},
    )
    assert pa.table(deltalake.DeltaTable(str(vectors)).scan()).column("text").to_pylist() == ["a", "c"]
    with pytest.raises(DeltaTableError, match=r"1 of its files have rows deleted in place \(deletion vectors"):
        list_files(str(vectors), LOCAL)

    mapped = tmp_path / "mapped"
    deltalake.write_deltalake(str(mapped), rows("a"), configuration={"delta.columnMapping.mode": "name"})
    with pytest.raises(DeltaTableError, match=r"uses column mapping \(delta.columnMapping.mode = name\)"):
        list_files(str(mapped), LOCAL)  # old code: listed, its column named col-<uuid>

    unknown = tmp_path / "unknown"
    deltalake.write_deltalake(str(unknown), rows("a"))
    features = ["someFutureFeature"]
    protocol = {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": features, "writerFeatures": features}
    commit(unknown, 1, {"protocol": protocol})
    with pytest.raises(DeltaTableError, match=r"cannot read it \(.*someFutureFeature.*\)\. Upgrade deltalake"):
        list_files(str(unknown), LOCAL)  # old code: listed

    outside = tmp_path / "outside"  # a partition value the log keeps and the path does not name
    deltalake.write_deltalake(str(outside), rows("a", lang="fr"), partition_by=["lang"])
    pq.write_table(rows("b"), outside / "b.parquet")
    add = {"path": "b.parquet", "partitionValues": {"lang": "de"}, "size": (outside / "b.parquet").stat().st_size}
    commit(outside, 1, {"add": {**add, "modificationTime": 1, "dataChange": True}})
    with pytest.raises(DeltaTableError, match=r"'b.parquet' holds rows of partition lang = 'de'.* 'lang=...' folder"):
        list_files(str(outside), LOCAL)  # old code: listed, lang null for its rows
    for table in (vectors, mapped, unknown, outside):
        with pytest.raises(DeltaTableError, match=r"Write its current version out as Parquet \(deltalake: "):
            list_files(str(table), LOCAL)


def test_partition_folders_of_a_delta_table_give_its_kept_columns(tmp_path):
    """A partitioned table's files lack the partition column; its value is in the `key=value/` folder, which the
    reader turns into a kept column the file lacks (a null partition: `__HIVE_DEFAULT_PARTITION__`, null; the log keeps
    the folder's name %XX-encoded once more)."""
    from pipeline.kept_columns import decide
    from pipeline.reading import ReadSpec, observed_kept_types, read_file
    from pipeline.storage import resolve

    t = tmp_path / "t"
    table = pa.table({"text": ["a", "b", "c"], "lang": ["fr", None, "pt BR/x"], "year": [2021, 2021, 2022]})
    deltalake.write_deltalake(str(t), table, partition_by=["lang", "year"])
    names = list_files(str(t), LOCAL)[1]
    spec = ReadSpec(resolve(str(t), LOCAL), None, "text", None, ("lang", "year"))
    types = decide(["lang", "year"], [(n, *observed_kept_types(spec, n)) for n in names])
    spec = ReadSpec(spec.root, None, "text", None, ("lang", "year"), types)
    read = pa.concat_tables(b for n in names for b in read_file(spec, n)).select(["__rayembed_text", "lang", "year"])
    assert sorted(read.to_pylist(), key=str) == sorted(
        [
            {"__rayembed_text": "a", "lang": "fr", "year": "2021"},
            {"__rayembed_text": "b", "lang": None, "year": "2021"},
            {"__rayembed_text": "c", "lang": "pt BR/x", "year": "2022"},  # the log: lang=pt%2520BR%252Fx/
        ],
        key=str,
    )


def test_a_reembed_after_a_compaction_embeds_the_new_file_and_drops_the_removed_ones(tmp_path):
    """The re-embed job plans from the listing: after a compaction the compacted file is new and the files it
    replaced are deleted (their vectors dropped), the others unchanged. The listing read every file before, so the
    removed ones stayed published next to the new one."""
    from pipeline.reembed.manifest import FileEntry, Manifest
    from pipeline.reembed.planner import make_plan
    from pipeline.reembed.sources import scan_sources

    def sources():
        root, listed = list_inputs(str(t), LOCAL)
        return scan_sources(root, listed)

    t = tmp_path / "t"
    deltalake.write_deltalake(str(t), rows("a", lang="fr"), partition_by=["lang"])
    for text in ("b", "c"):
        deltalake.write_deltalake(str(t), rows(text, lang="de"), mode="append")
    before = sources()
    entries = [
        FileEntry(s.path, s.size, s.token, s.key, "r1", 1, 1, 0, 1, [f"data/{s.key}/r1/p.parquet"]) for s in before
    ]
    deltalake.DeltaTable(str(t)).optimize.compact()
    plan = make_plan(sources(), Manifest("fp", {}, 1, "r1", "in", 0.0, entries), {})
    assert [s.path for s in plan.unchanged] == [p for p in current(t) if p.startswith("lang=fr/")]
    assert [s.path for s in plan.new] == [p for p in current(t) if p.startswith("lang=de/")]
    assert sorted(s.path for s in plan.deleted) == sorted(s.path for s in before if s.path.startswith("lang=de/"))


def test_a_delta_table_on_s3_is_read_at_its_current_version(s3_bucket, s3_server):
    """On S3 too (the storage config's endpoint and region, the environment's credentials): the overwritten files
    still under the prefix are left out (old code: refused the table)."""
    client, bucket = s3_bucket
    uri = f"s3://{bucket}/t"
    options = {"AWS_ENDPOINT_URL": s3_server, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    options["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"  # writing only: moto, no lock
    deltalake.write_deltalake(uri, rows("a"), storage_options=options)
    deltalake.write_deltalake(uri, rows("b"), mode="overwrite", storage_options=options)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="t/")["Contents"]]
    assert sum(k.endswith(".parquet") for k in keys) == 2
    live = pa.table(deltalake.DeltaTable(uri, storage_options=options).get_add_actions()).column("path").to_pylist()
    assert list_files(uri, StorageConfig(endpoint_url=s3_server))[1] == live and len(live) == 1
