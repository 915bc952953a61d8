"""Re-embed building blocks without Ray: planner cases, fingerprint, change tokens, lease, progress, publish."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time

import pyarrow as pa
import pyarrow.parquet
import pytest
import yaml
from conftest import REPO

from pipeline.config import EmbedConfig, StorageConfig
from pipeline.objects import get_json, list_tree, put_json
from pipeline.reembed.duplicates import NO_DUPLICATES, file_digests
from pipeline.reembed.fingerprint import fingerprint_hash, fingerprint_recipe
from pipeline.reembed.job import load_staged, objects_changed
from pipeline.reembed.layout import VersionLayout
from pipeline.reembed.lease import Lease, LeaseHeldError, LeaseLostError
from pipeline.reembed.manifest import FileEntry, Manifest, current_manifest
from pipeline.reembed.moves import declared_size, decompressed_token, move_entries, reads_alike, same_format
from pipeline.reembed.planner import make_plan
from pipeline.reembed.publish import collect_garbage, publish
from pipeline.reembed.retype import rewrite_entry
from pipeline.reembed.sources import (
    SourceFile,
    changed_files_message,
    changed_since_listed,
    hash_as_listed,
    local_source,
    object_source,
    scan_sources,
)
from pipeline.reembed.staging import STATS_SCHEMA, Progress
from pipeline.storage import list_inputs, resolve, write_bytes


def entry(src: SourceFile, run="r1", rows=10) -> FileEntry:
    return FileEntry(
        src.path, src.size, src.token, src.key, run, rows, rows, 0, rows, [f"data/{src.key}/{run}/p.parquet"]
    )


def manifest(entries, generation=1, run="r1") -> Manifest:
    return Manifest("fp", {}, generation, run, "in", 0.0, entries)


def test_plan_classifies_every_case():
    a, b, c, d = (SourceFile(n, 5, "mtime_ns:1") for n in "abcd")
    b2 = SourceFile("b", 6, "mtime_ns:2")
    e = SourceFile("e", 1, "etag:x")
    previous = manifest([entry(a), entry(b), entry(c)])
    plan = make_plan([a, b2, d, e], previous, staged={e.key: entry(e, run="crashed", rows=3)})
    assert [x.path for x in plan.unchanged] == ["a"]
    assert [x.path for x in plan.changed] == ["b"] and [x.path for x in plan.replaced] == ["b"]
    assert [x.path for x in plan.new] == ["d", "e"]
    assert [x.path for x in plan.deleted] == ["c"]
    assert [x.run_id for x in plan.resumed] == ["crashed"]
    assert [x.path for x in plan.to_embed] == ["b", "d"]  # e is staged already
    assert not plan.is_noop and make_plan([a, b, c], previous, {}).is_noop


def test_a_local_token_of_an_older_version_matches_on_its_mtime_and_is_recorded_in_full():
    """Entries recorded before the ctime joined the local token (`mtime_ns:<m>`) stay unchanged when the mtime is
    the same (upgrading re-embeds nothing), keep their key (it names their output folder) and take the full token."""
    legacy = entry(SourceFile("a", 5, "mtime_ns:7"))
    now = SourceFile("a", 5, "mtime_ns:7;ctime_ns:9")
    plan = make_plan([now], manifest([legacy]), {})
    assert plan.is_noop and [e.token for e in plan.unchanged] == [now.token]
    assert plan.unchanged[0].key == legacy.key and plan.unchanged[0].files == legacy.files
    for moved in (SourceFile("a", 5, "mtime_ns:8;ctime_ns:9"), SourceFile("a", 6, "mtime_ns:7;ctime_ns:9")):
        assert [s.path for s in make_plan([moved], manifest([legacy]), {}).changed] == ["a"]
    full = entry(now)
    assert make_plan([now], manifest([full]), {}).is_noop
    rewritten = SourceFile("a", 5, "mtime_ns:7;ctime_ns:10")  # same size and mtime, written again
    assert [s.path for s in make_plan([rewritten], manifest([full]), {}).changed] == ["a"]


def test_a_file_whose_token_moved_without_its_content_is_unchanged():
    """`touch`, or a copy that does not keep times: the token moves, the content does not. With the content hash
    its entry records, the file is unchanged (its key and outputs kept, the new token recorded); the hash is read
    only for a file of the same size whose token moved; an entry without a hash is changed, as before."""
    recorded = dataclasses.replace(entry(SourceFile("a", 5, "mtime_ns:7;ctime_ns:9")), content="sha256:aa")
    touched = SourceFile("a", 5, "mtime_ns:8;ctime_ns:10")
    asked = []

    def content_of(rel, content="sha256:aa"):
        asked.append(rel)
        return content

    plan = make_plan([touched], manifest([recorded]), {}, content_of=content_of)
    assert plan.is_noop and plan.unchanged[0].key == recorded.key and plan.unchanged[0].token == touched.token
    assert plan.retokened == 1  # the run publishes the new token (job.run_reembed)
    edited = make_plan([touched], manifest([recorded]), {}, content_of=lambda rel: "sha256:bb")
    assert [s.path for s in edited.changed] == ["a"]
    assert [s.path for s in make_plan([touched], manifest([entry(touched)]), {}, content_of=content_of).new] == []
    without = dataclasses.replace(recorded, content=None)
    assert [s.path for s in make_plan([touched], manifest([without]), {}, content_of=content_of).changed] == ["a"]
    grown = SourceFile("a", 6, touched.token)
    assert [s.path for s in make_plan([grown], manifest([recorded]), {}, content_of=content_of).changed] == ["a"]
    assert asked == ["a"]  # asked once: not for a file of another size, nor for an entry without a hash


def test_a_renamed_moved_or_swapped_file_reuses_the_entry_of_its_content():
    """`mv a.jsonl b.jsonl`, a folder reorganized into partitions, two files swapped, an S3 object copied to a new key:
    the content the version embedded under another path is a move of that entry, not embedded again (it was: new
    file + deleted file). The hash is asked only for a file whose size equals an entry's; another format, other
    duplicate-id rejects, an unreadable entry, or content that differs are embedded as before."""
    a = dataclasses.replace(entry(SourceFile("a.jsonl", 5, "mtime_ns:1;ctime_ns:1")), content="sha256:aa")
    b = dataclasses.replace(entry(SourceFile("b.jsonl", 7, "mtime_ns:1;ctime_ns:1")), content="sha256:bb")
    hashes = {"2024/01/a.jsonl": "sha256:aa", "a.jsonl": "sha256:bb", "b.jsonl": "sha256:aa", "a.txt": "sha256:aa"}
    asked = []

    def content_of(rel):
        asked.append(rel)
        return hashes.get(rel, "sha256:other")

    def alike(old, new):
        return old.rsplit(".", 1)[-1] == new.rsplit(".", 1)[-1]

    moved = SourceFile("2024/01/a.jsonl", 5, "mtime_ns:2;ctime_ns:2")
    plan = make_plan([moved, SourceFile("b.jsonl", 7, b.token)], manifest([a, b]), {}, None, content_of, alike)
    assert [(s.path, e.path) for s, e in plan.moves] == [("2024/01/a.jsonl", "a.jsonl")]
    assert plan.to_embed == [] and plan.counts()["moved"] == 1 and plan.dropped == [] and asked == [moved.path]
    # swapped: each changed file holds the other's content (sizes too)
    swapped = [SourceFile("a.jsonl", 7, "mtime_ns:3;ctime_ns:3"), SourceFile("b.jsonl", 5, "mtime_ns:3;ctime_ns:3")]
    plan = make_plan(swapped, manifest([a, b]), {}, None, content_of, alike)
    assert [(s.path, e.path) for s, e in plan.moves] == [("a.jsonl", "b.jsonl"), ("b.jsonl", "a.jsonl")]
    assert plan.to_embed == [] and plan.dropped == []
    # not a move: another format, content that differs, other duplicate rejects, an unreadable entry, no `alike`
    for files, entries, digests, fn in [
        ([SourceFile("a.txt", 5, "mtime_ns:2;ctime_ns:2")], [a], None, alike),
        ([SourceFile("c.jsonl", 5, "mtime_ns:2;ctime_ns:2")], [a], None, alike),
        ([moved], [a], {moved.path: "0123456789abcdef"}, alike),
        ([moved], [dataclasses.replace(a, unreadable=True)], None, alike),
        ([moved], [a], None, None),
    ]:
        plan = make_plan(files, manifest(entries), {}, digests, content_of, fn)
        assert plan.moves == [] and plan.to_embed == files
    # S3: a copy to a new key keeps the ETag; a staged marker of the new key resumes rather than moves
    old, copied = SourceFile("x/a.jsonl", 5, "etag:abc"), SourceFile("y/a.jsonl", 5, "etag:abc")
    plan = make_plan([copied], manifest([entry(old)]), {}, None, None, alike)
    assert [(s.path, e.path) for s, e in plan.moves] == [("y/a.jsonl", "x/a.jsonl")]
    plan = make_plan([copied], manifest([entry(old)]), {copied.key: entry(copied, run="crashed")}, None, None, alike)
    assert plan.moves == [] and [e.run_id for e in plan.resumed] == ["crashed"]
    # an older kept manifest's entry: a file deleted and restored, an edit reverted; the replaced entry's rows drop
    edited = dataclasses.replace(entry(SourceFile("a.jsonl", 5, "mtime_ns:4;ctime_ns:4")), content="sha256:cc")
    reverted = SourceFile("a.jsonl", 5, "mtime_ns:5;ctime_ns:5")
    hashes["a.jsonl"] = "sha256:aa"
    plan = make_plan([reverted], manifest([edited]), {}, None, content_of, alike, earlier=[a])
    assert [(s.path, e.content) for s, e in plan.moves] == [("a.jsonl", "sha256:aa")]
    assert [e.content for e in plan.dropped] == ["sha256:cc"]
    # a move whose outputs are gone (an interrupted garbage collection) is embedded instead
    assert plan.with_moved([None]).moves == [] and plan.with_moved([None]).to_embed == [reverted]


def test_a_file_compressed_since_is_a_move_of_its_plain_entry(tmp_path):
    """`gzip a.jsonl` (or zstd, bz2): other bytes, so the byte hash and the ETag differ and it was embedded again;
    its decompressed bytes are the entry's content, so it is a move. Not: another format, a file compressed twice,
    content that differs, a plain file (no decompression to compare)."""
    import bz2
    import gzip

    text = b'{"id": "1", "text": "one"}\n{"id": "2", "text": "two"}\n'
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(text))
    (tmp_path / "b.jsonl.bz2").write_bytes(bz2.compress(text))
    (tmp_path / "twice.jsonl.gz").write_bytes(gzip.compress(gzip.compress(text)))
    (tmp_path / "plain.jsonl").write_bytes(text)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(text))
    (tmp_path / "other.jsonl.gz").write_bytes(gzip.compress(text + b"\n"))
    root = resolve(str(tmp_path), StorageConfig())
    sha = "sha256:" + hashlib.sha256(text).hexdigest()
    assert decompressed_token(root, "a.jsonl.gz") == decompressed_token(root, "b.jsonl.bz2") == sha
    assert decompressed_token(root, "twice.jsonl.gz") is None and decompressed_token(root, "plain.jsonl") is None
    recorded = dataclasses.replace(entry(SourceFile("a.jsonl", len(text), "mtime_ns:1;ctime_ns:1")), content=sha)
    names = ["a.jsonl.gz", "b.jsonl.bz2", "twice.jsonl.gz", "plain.jsonl", "a.txt.gz", "other.jsonl.gz"]
    files = [SourceFile(n, (tmp_path / n).stat().st_size, "mtime_ns:2;ctime_ns:2") for n in names]

    def alike(old, new):
        return reads_alike(None, old, new)

    plan = make_plan(
        files, manifest([recorded]), {}, None, lambda rel: None, alike, (),
        lambda rel: decompressed_token(root, rel), lambda old, new: same_format(None, old, new),
    )  # fmt: skip
    assert [(s.path, e.path) for s, e in plan.moves] == [("a.jsonl.gz", "a.jsonl"), ("b.jsonl.bz2", "a.jsonl")]
    assert [s.path for s in plan.to_embed] == ["a.txt.gz", "other.jsonl.gz", "plain.jsonl", "twice.jsonl.gz"]


def test_a_new_compressed_file_is_decompressed_at_plan_time_only_when_its_declared_size_is_an_entrys(tmp_path):
    """Every new or changed compressed local file was decompressed once at plan time to look for the entry it was
    compressed from (and a plain new file read for 8 MiB), on top of its read task's decompression: a new .gz file
    is the common case, and it matches nothing. A gzip file's ISIZE trailer and a zstd file's frame content size
    say what it decompresses to: a file whose declared size no entry has is not decompressed. Declaring none (bzip2,
    zstd from a pipe, bgzip's many members) still is; a file compressed from an entry is still paired."""
    import bz2
    import gzip

    text = b'{"id": "1", "text": "one"}\n'
    other = b'{"id": "9", "text": "a new file of another size"}\n'
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(text))  # compressed since: its entry's size
    (tmp_path / "new.jsonl.gz").write_bytes(gzip.compress(other))
    (tmp_path / "new.jsonl.zst").write_bytes(pa.compress(other, "zstd", asbytes=True))
    (tmp_path / "new.jsonl.bz2").write_bytes(bz2.compress(other))
    (tmp_path / "piped.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd\x00" + b"\x00" * 20)  # no content size
    bgzf = bytearray(gzip.compress(other))
    bgzf[3] |= 0x04  # FEXTRA, as bgzip's members have
    (tmp_path / "bgzf.jsonl.gz").write_bytes(bytes(bgzf))
    (tmp_path / "plain.jsonl").write_bytes(other)
    root = resolve(str(tmp_path), StorageConfig())
    assert declared_size(root, "a.jsonl.gz") == len(text)
    assert declared_size(root, "new.jsonl.gz") == declared_size(root, "new.jsonl.zst") == len(other)
    for name in ("new.jsonl.bz2", "piped.jsonl.zst", "bgzf.jsonl.gz", "plain.jsonl", "gone.jsonl.gz"):
        assert declared_size(root, name) is None, name
    sha = "sha256:" + hashlib.sha256(text).hexdigest()
    recorded = dataclasses.replace(entry(SourceFile("a.jsonl", len(text), "mtime_ns:1;ctime_ns:1")), content=sha)
    names = sorted(p.name for p in tmp_path.iterdir())
    files = [SourceFile(n, (tmp_path / n).stat().st_size, "mtime_ns:2;ctime_ns:2") for n in names]
    asked = []

    def decompressed_of(rel):
        asked.append(rel)
        return decompressed_token(root, rel)

    plan = make_plan(
        files, manifest([recorded]), {}, None, lambda rel: None, lambda o, n: reads_alike(None, o, n), (),
        decompressed_of, lambda o, n: same_format(None, o, n), declared_size=lambda rel: declared_size(root, rel),
    )  # fmt: skip
    assert [(s.path, e.path) for s, e in plan.moves] == [("a.jsonl.gz", "a.jsonl")]
    # old code: every one of them (the plain file's first 8 MiB read too)
    assert sorted(asked) == ["a.jsonl.gz", "bgzf.jsonl.gz", "new.jsonl.bz2", "piped.jsonl.zst", "plain.jsonl"]


def test_a_compressed_file_recompressed_with_the_same_content_is_a_move_of_its_entry(tmp_path):
    """A compressed file recompressed (in place with gzip -9 or another mtime in the gzip header, or into another
    compressor: b.jsonl.gz -> b.jsonl.bz2 / .zst) has other bytes but the decompressed bytes its entry records
    (FileEntry.decompressed): it was embedded again, since its decompressed hash was looked up only among entries'
    `content`. Now a move, whose entry records the new bytes' hash and the old decompressed one. A new compressed
    file is decompressed for this only while a compressed entry's file is gone or replaced; other content is new."""
    import bz2
    import gzip

    from pipeline.reembed.moves import recompressed_hashes

    texts = {n: f'{{"id": "{n}", "text": "{n * 3}"}}\n'.encode() for n in "abcd"}
    old_bytes = {n: gzip.compress(t, compresslevel=6, mtime=1) for n, t in texts.items()}
    new_bytes = {
        "a.jsonl.gz": gzip.compress(texts["a"], compresslevel=9, mtime=1),  # gzip -9 in place
        "b.jsonl.gz": gzip.compress(texts["b"], compresslevel=6, mtime=99),  # another mtime: the same size
        "c.jsonl.bz2": bz2.compress(texts["c"]),
        "d.jsonl.zst": pa.compress(texts["d"], "zstd", asbytes=True),
        "e.jsonl.gz": gzip.compress(b'{"id": "e", "text": "other"}\n'),  # new content
    }
    for name, data in new_bytes.items():
        (tmp_path / name).write_bytes(data)
    root = resolve(str(tmp_path), StorageConfig())

    def sha(data):
        return "sha256:" + hashlib.sha256(data).hexdigest()

    recorded = [
        dataclasses.replace(
            entry(SourceFile(f"{n}.jsonl.gz", len(old_bytes[n]), "mtime_ns:1;ctime_ns:1")),
            content=sha(old_bytes[n]),
            decompressed=sha(texts[n]),
        )
        for n in "abcd"
    ]
    files = [local_source(root, n) for n in sorted(new_bytes)]  # as listed: recompressed_hashes hashes them
    asked = []

    def decompressed_of(rel):
        asked.append(rel)
        return decompressed_token(root, rel)

    def plan_of(sources, entries):
        return make_plan(
            sources, manifest(entries), {}, None, lambda rel: None, lambda o, n: reads_alike(None, o, n), (),
            decompressed_of, lambda o, n: same_format(None, o, n), declared_size=lambda rel: declared_size(root, rel),
        )  # fmt: skip

    plan = plan_of(files, recorded)
    assert sorted((s.path, e.path) for s, e in plan.moves) == [
        ("a.jsonl.gz", "a.jsonl.gz"),
        ("b.jsonl.gz", "b.jsonl.gz"),
        ("c.jsonl.bz2", "c.jsonl.gz"),
        ("d.jsonl.zst", "d.jsonl.gz"),
    ]
    assert [s.path for s in plan.to_embed] == ["e.jsonl.gz"] and plan.dropped == []
    for src, old in plan.moves:
        moved = recompressed_hashes(root, src, old, dataclasses.replace(old, path=src.path, size=src.size))
        assert (moved.content, moved.decompressed) == (sha(new_bytes[src.path]), old.decompressed), src.path
    # every compressed entry's file still there (e only new): nothing decompressed at plan time
    asked.clear()
    plan = plan_of([SourceFile(e.path, e.size, e.token) for e in recorded] + files[-1:], recorded)
    assert [s.path for s in plan.to_embed] == ["e.jsonl.gz"] and asked == []


def test_a_move_renames_path_ids_and_reject_sources_and_keeps_the_vectors(tmp_path):
    """The moved entry's outputs are written under the new key and this run: ids `<file>#<row>` (no id column, or a
    text file) get the new path as a new file's would, ids from an id column stay, the rejects' `source` names the
    new path; vectors, other columns and metadata are the same."""
    root = resolve(str(tmp_path), StorageConfig())
    old = SourceFile("a.jsonl", 5, "mtime_ns:1")
    run_dir = VersionLayout.run_dir(old.key, "r1")
    vectors = pa.array([[0.5, 1.0], [2.0, 3.0]], pa.list_(pa.float32(), 2))
    table = pa.table({"id": ["a.jsonl#0", "a.jsonl#2"], "embedding": vectors, "lang": ["en", "fr"]})
    table = table.replace_schema_metadata({"rayembed.model": "m"})
    pyarrow.parquet.write_table(table, tmp_path / "out.parquet")
    (tmp_path / run_dir / "_rejects").mkdir(parents=True)
    os.replace(tmp_path / "out.parquet", tmp_path / run_dir / "part-0000.parquet")
    rejects = pa.table({"id": ["a.jsonl#1"], "source": ["a.jsonl"], "row": [1], "reason": ["empty text"]})
    pyarrow.parquet.write_table(rejects, tmp_path / run_dir / "_rejects" / "part.parquet")
    recorded = dataclasses.replace(
        entry(old),
        rows=3,
        embedded=2,
        rejected=1,
        output_rows=2,
        files=[f"{run_dir}/part-0000.parquet"],
        rejects=[f"{run_dir}/_rejects/part.parquet"],
        content="sha256:aa",
    )
    new = SourceFile("2024/b.jsonl", 5, "mtime_ns:2")
    for id_column, fmt, ids, reject_ids in [
        (None, None, ["2024/b.jsonl#0", "2024/b.jsonl#2"], ["2024/b.jsonl#1"]),
        ("id", "text", ["2024/b.jsonl#0", "2024/b.jsonl#2"], ["2024/b.jsonl#1"]),
        ("id", None, ["a.jsonl#0", "a.jsonl#2"], ["a.jsonl#1"]),  # ids of an id column are the rows' own
    ]:
        [moved] = move_entries(root, [(new, recorded)], "r2", id_column, fmt)
        assert (moved.path, moved.key, moved.token, moved.run_id) == (new.path, new.key, new.token, "r2")
        assert (moved.rows, moved.embedded, moved.rejected, moved.content) == (3, 2, 1, "sha256:aa")
        assert all(f.startswith(VersionLayout.run_dir(new.key, "r2") + "/") for f in moved.files + moved.rejects)
        out = pyarrow.parquet.read_table(tmp_path / moved.files[0])
        assert out.column("id").to_pylist() == ids and out.column("embedding").equals(table.column("embedding"))
        assert out.column("lang").to_pylist() == ["en", "fr"] and out.schema.metadata == table.schema.metadata
        out = pyarrow.parquet.read_table(tmp_path / moved.rejects[0])
        assert out.column("id").to_pylist() == reject_ids and out.column("source").to_pylist() == [new.path]
    # the same run then changes a kept column's type: the moved files are rewritten in place, rejects kept
    retyped = rewrite_entry(root, moved, "r2", {"lang": pa.large_string()})
    assert (retyped.files, retyped.rejects) == (moved.files, moved.rejects)
    assert pyarrow.parquet.read_schema(tmp_path / moved.files[0]).field("lang").type == pa.large_string()
    assert pyarrow.parquet.read_table(tmp_path / moved.rejects[0]).num_rows == 1
    assert reads_alike(None, "a.jsonl", "2024/b.ndjson") and not reads_alike(None, "a.jsonl", "a.jsonl.gz")
    assert not reads_alike(None, "a.jsonl", "a.txt") and not reads_alike(None, "a.jsonl", "a.dat")
    assert reads_alike("jsonl", "a.jsonl", "a.dat")


def test_a_file_changed_since_the_listing_says_how(tmp_path):
    """The re-embed job's check once a file's rows are read: appended, rewritten in place with its size, replaced,
    deleted; an untouched file is None."""
    root = resolve(str(tmp_path), StorageConfig())
    for name in "abcd":
        (tmp_path / f"{name}.jsonl").write_bytes(b'{"text": "x"}\n')
    listed = {name: local_source(root, f"{name}.jsonl") for name in "abcd"}
    time.sleep(0.01)
    with (tmp_path / "a.jsonl").open("ab") as f:
        f.write(b'{"text": "y"}\n')
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "z"}\n')
    (tmp_path / "c.jsonl").unlink()
    assert changed_since_listed(root, listed["a"]) == "listed with 14 bytes, now 28 bytes"
    assert "same size" in changed_since_listed(root, listed["b"])
    assert changed_since_listed(root, listed["c"]) == "listed with 14 bytes, now gone"
    assert changed_since_listed(root, listed["d"]) is None
    message = changed_files_message(root, {"a.jsonl": "listed with 14 bytes, now 28 bytes", "c.jsonl": "gone"})
    assert message.startswith(f"{root.join('a.jsonl').uri} changed while this run read it (listed with 14 bytes")
    assert "(and 1 more: c.jsonl)" in message and "Run the same command again" in message


def test_a_file_touched_during_the_run_is_not_a_change_when_its_content_is_the_listed_one(tmp_path, caplog):
    """A `touch` or an rsync/cp of the same bytes while the re-embed job reads a file moves its token (mtime) alone:
    the run failed with InputChangedError for nothing (a nightly corpus synced by another process). The file is now
    hashed at the check and compared with its sha256 taken while it was as listed (the entry's content); the same
    bytes go on with an INFO line, other bytes of the same size or no hash known are still a change saying which."""
    root = resolve(str(tmp_path), StorageConfig())
    for name in "abc":
        (tmp_path / f"{name}.jsonl").write_bytes(b'{"text": "x"}\n')
    listed = {name: local_source(root, f"{name}.jsonl") for name in "abc"}
    sha = {name: hash_as_listed(root, listed[name]) for name in "abc"}
    assert sha["a"] == "sha256:" + hashlib.sha256(b'{"text": "x"}\n').hexdigest()
    for name in "abc":  # a touch: the same bytes, a new mtime
        st = (tmp_path / f"{name}.jsonl").stat()
        os.utime(tmp_path / f"{name}.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "z"}\n')  # an edit of the same size
    with caplog.at_level("INFO", logger="pipeline.reembed.sources"):
        assert changed_since_listed(root, listed["a"], sha["a"]) is None  # old code: '... (same size)'
    assert "a.jsonl: its change token moved" in caplog.text and "content is the listed one" in caplog.text
    assert "other content" in changed_since_listed(root, listed["b"], sha["b"])
    assert "no hash of its listed content" in changed_since_listed(root, listed["c"])
    assert hash_as_listed(root, listed["a"]) is None  # its token is no longer the listed one: no hash of it known


def test_objects_that_changed_during_the_run_are_found_by_one_listing_and_unstaged(s3_bucket, s3_server, proxy):
    """On S3 the re-embed job checks its staged objects with one listing at the end (no HEAD per object): an object
    rewritten (same size, other ETag), grown or deleted since the listing is named and its marker deleted."""
    client, bucket = s3_bucket
    for name in "abcd":
        client.put_object(Bucket=bucket, Key=f"in/{name}.jsonl", Body=b'{"text": "x"}\n')
    storage = StorageConfig(endpoint_url=proxy.url)
    root, files = listed(f"s3://{bucket}/in", storage)
    sources = {s.path: s for s in scan_sources(root, files)}
    client.put_object(Bucket=bucket, Key="in/a.jsonl", Body=b'{"text": "y"}\n')
    client.put_object(Bucket=bucket, Key="in/b.jsonl", Body=b'{"text": "x"}\n{"text": "z"}\n')
    client.delete_object(Bucket=bucket, Key="in/c.jsonl")
    layout = VersionLayout(resolve(f"s3://{bucket}/out", storage), "fp")
    entries = [entry(s) for s in sources.values()]
    for e in entries:
        put_json(e.__dict__, layout.marker(e.key))
    cfg = EmbedConfig.model_validate(
        {"input": {"uri": f"s3://{bucket}/in"}, "output": {"uri": "/tmp/unused"}, "model": {"name_or_path": "m"}}
    )
    cfg = cfg.model_copy(update={"storage": storage})
    proxy.forwarded.clear()
    changed = objects_changed(cfg, root, sources, entries, layout)
    assert changed == {
        "a.jsonl": f"listed with change token {sources['a.jsonl'].token}, now "
        f"{scan_sources(*listed(f's3://{bucket}/in', storage))[0].token} (same size)",
        "b.jsonl": "listed with 14 bytes, now 28 bytes",
        "c.jsonl": "listed with 14 bytes, now gone",
    }
    assert sorted(load_staged(layout)) == [sources["d.jsonl"].key]
    # no request per object; only a.jsonl, whose ETag moved at its size, is read once to compare its bytes with its
    # listed ETag (pipeline.etags: an upload of the same bytes in other parts is the same object)
    read = {path for method, path in proxy.forwarded if method in ("HEAD", "GET") and path.endswith(".jsonl")}
    assert read == {f"/{bucket}/in/a.jsonl"}


def test_staged_marker_of_an_older_content_is_not_resumed():
    old, new = SourceFile("a", 5, "etag:1"), SourceFile("a", 5, "etag:2")
    plan = make_plan([new], None, staged={old.key: entry(old)})
    assert plan.resumed == [] and [s.path for s in plan.to_embed] == ["a"]


def cfg(**model) -> EmbedConfig:
    return EmbedConfig.model_validate(
        {"input": {"uri": "x", "format": "jsonl"}, "output": {"uri": "y"}, "model": {"name_or_path": "m", **model}}
    )


def test_fingerprint_changes_with_the_recipe(tiny_models, tmp_path):
    base = fingerprint_recipe(cfg(name_or_path=str(tiny_models["qwen3"])), "")
    assert base["model_identity"]["source"] == "local" and len(base["model_identity"]["sha256"]) == 64
    same = fingerprint_recipe(cfg(name_or_path=str(tiny_models["qwen3"])), "")
    assert fingerprint_hash(base) == fingerprint_hash(same)
    for change in ({"pooling": "mean"}, {"max_tokens": 64}, {"dtype": "float16"}):
        other = fingerprint_recipe(cfg(name_or_path=str(tiny_models["qwen3"]), **change), "")
        assert fingerprint_hash(other) != fingerprint_hash(base), change
    assert fingerprint_hash(
        fingerprint_recipe(cfg(name_or_path=str(tiny_models["qwen3"])), "query: ")
    ) != fingerprint_hash(base)
    # Same weights in another directory: same fingerprint; one byte of the weights changed: a new one.
    import shutil

    copy = shutil.copytree(tiny_models["qwen3"], tmp_path / "qwen3")
    assert fingerprint_hash(fingerprint_recipe(cfg(name_or_path=str(copy)), "")) == fingerprint_hash(base)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert fingerprint_hash(fingerprint_recipe(cfg(name_or_path=str(copy)), "")) != fingerprint_hash(base)


def listed(uri: str, storage: StorageConfig | None = None):
    """(root, files) as the re-embed job lists its input."""
    return list_inputs(uri, storage or StorageConfig())


def test_change_tokens_local_and_s3(tmp_path, s3_bucket, s3_server, proxy):
    (tmp_path / "a.txt").write_text("one")
    root, files = listed(str(tmp_path))
    before = scan_sources(root, files)[0]
    assert before.token.startswith("mtime_ns:") and ";ctime_ns:" in before.token
    mtime = os.stat(tmp_path / "a.txt").st_mtime_ns
    os.utime(tmp_path / "a.txt", ns=(1, mtime + 1_000_000))
    assert scan_sources(*listed(str(tmp_path)))[0].key != before.key
    # rewritten with the same size and its old mtime put back (cp -p of an edited copy, rsync -t): still changed
    (tmp_path / "b.txt").write_text("one")
    first = scan_sources(*listed(str(tmp_path / "b.txt")))[0]
    stamp = os.stat(tmp_path / "b.txt").st_mtime_ns
    time.sleep(0.01)
    (tmp_path / "b.txt").write_text("ONE")
    os.utime(tmp_path / "b.txt", ns=(stamp, stamp))
    again = scan_sources(*listed(str(tmp_path / "b.txt")))[0]
    assert os.stat(tmp_path / "b.txt").st_mtime_ns == stamp and again.size == first.size
    assert again.key != first.key

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="c/a.txt", Body=b"one")
    client.put_object(Bucket=bucket, Key="c/b.txt", Body=b"two")
    through_proxy = StorageConfig(endpoint_url=proxy.url)
    s3, files = listed(f"s3://{bucket}/c", through_proxy)
    first = scan_sources(s3, files)
    assert [s.path for s in first] == ["a.txt", "b.txt"] and first[0].token.startswith("etag:")
    # the tokens come with the listing: no request per file (a nightly run over thousands of files sent a HEAD each)
    assert not [path for method, path in proxy.forwarded if method == "HEAD" and path.endswith(".txt")]
    # and they are the tokens a HEAD request gives, which runs before this version recorded: nothing looks changed
    assert [object_source(s3, f.path) for f in files] == first
    client.put_object(Bucket=bucket, Key="c/a.txt", Body=b"ONE")  # same size, new content
    second = scan_sources(*listed(f"s3://{bucket}/c", through_proxy))
    assert second[0].key != first[0].key and second[1].key == first[1].key
    # a file listed without an ETag (a listing that gives none) still gets its token, by a HEAD request
    without = [dataclasses.replace(f, etag=None) for f in files]
    assert scan_sources(s3, without)[0].token == second[0].token


def test_lease_refuses_a_live_holder_and_takes_over_an_expired_one(tmp_path):
    target = resolve(str(tmp_path / "_lease.json"), StorageConfig())
    refused = pytest.raises(LeaseHeldError, match=r"being written by .*run run-a.*delete .*_lease.json")
    with Lease(target, "run-a", ttl=60, settle=0), refused:
        Lease(target, "run-b", ttl=60, settle=0).acquire()
    assert get_json(target) is None  # released
    put_json(
        {"owner": "gone", "run_id": "old", "host": "elsewhere", "pid": 1, "token": "t", "expires_at": time.time() - 1},
        target,
    )
    with Lease(target, "run-c", ttl=60, settle=0) as lease:
        assert get_json(target)["run_id"] == "run-c"
        put_json({**get_json(target), "token": "stolen"}, target)
        with pytest.raises(LeaseLostError):
            lease.check()


def test_a_retry_on_a_new_host_waits_out_the_lease_of_its_dead_attempt(tmp_path):
    """A RayJob retry runs on a new head pod: the dead attempt's lease (another host, so its pid cannot be checked)
    stays live until it expires, and the retry exited 3 at once, failing every retry within the TTL.
    reembed.lease_wait_seconds waits for it; a live holder is still refused after the wait."""
    from pipeline.reembed.config import ReembedConfig

    target = resolve(str(tmp_path / "_lease.json"), StorageConfig())
    dead = {"owner": "pod-a", "run_id": "attempt-1", "host": "rayembed-head-a", "pid": 1, "token": "t"}
    put_json({**dead, "expires_at": time.time() + 2.0}, target)
    with pytest.raises(LeaseHeldError, match=r"run attempt-1.*refused; wait"):
        Lease(target, "attempt-2", ttl=60, settle=0).acquire()
    with pytest.raises(LeaseHeldError, match=r"refused \(waited 0 s\)"):
        Lease(target, "attempt-2", ttl=60, settle=0, wait=0.3).acquire()
    start = time.monotonic()
    with Lease(target, "attempt-2", ttl=60, settle=0, wait=30):
        assert get_json(target)["run_id"] == "attempt-2"
        assert 0.5 < time.monotonic() - start < 10  # waited for the expiry, not the whole wait
    shipped = ReembedConfig.model_validate(
        {**yaml.safe_load((REPO / "configs" / "reembed.yaml").read_text()), "input": {"uri": "s3://b/c"}}
    )
    assert shipped.reembed.lease_wait_seconds > shipped.reembed.lease_ttl_seconds


def test_lease_race_has_one_winner(tmp_path):
    target = resolve(str(tmp_path / "_lease.json"), StorageConfig())
    barrier, results = threading.Barrier(4), []

    def contend(i):
        barrier.wait()
        lease = Lease(target, f"run-{i}", ttl=60, settle=0.5)
        try:
            lease.acquire()
            results.append(("won", i))
        except LeaseHeldError:
            results.append(("refused", i))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r for r, _ in results) == ["refused"] * 3 + ["won"]
    winner = next(i for r, i in results if r == "won")
    assert get_json(target)["run_id"] == f"run-{winner}"


def stats(source, rows, file_rows, files=()):
    return pa.Table.from_pylist(
        [
            {
                "source": source,
                "rows": rows,
                "embedded": rows,
                "rejected": 0,
                "unreadable": 0,
                "output_rows": rows,
                "file_rows": file_rows,
                "files": list(files),
                "rejects": [],
                "tokens": 1,
                "computed_tokens": 1,
            }
        ],
        schema=STATS_SCHEMA,
    )


def test_progress_completes_a_file_when_its_last_rows_arrive():
    a, b, empty = SourceFile("a", 1, "t"), SourceFile("b", 1, "t"), SourceFile("empty", 0, "t")
    progress = Progress([a, b, empty], "run")
    assert progress.add(stats("a", 5, 12, ["f1"])) == []  # the tagged last block may arrive first
    assert progress.add(stats("b", 3, -1)) == []
    done = progress.add(stats("a", 7, -1, ["f2"]))
    assert [(e.path, e.rows, e.files) for e in done] == [("a", 12, ["f1", "f2"])]
    with pytest.raises(RuntimeError, match="rows were lost"):
        progress.finish()  # b's last block never came
    progress.add(stats("b", 1, 4))
    assert [(e.path, e.rows) for e in progress.finish()] == [("empty", 0)]
    with pytest.raises(RuntimeError, match="duplicates"):
        Progress([a], "r").add(stats("a", 13, 12))


def test_publish_then_garbage_collect(tmp_path):
    out = resolve(str(tmp_path / "emb"), StorageConfig())
    layout = VersionLayout(out, "fp")
    src = SourceFile("a", 1, "t")
    first, second = entry(src, run="r1"), entry(src, run="r2")
    for e in (first, second):
        put_json({}, layout.root.join(e.files[0]))
    put_json({}, layout.root.join(f"data/{src.key}/crashed/p.parquet"))
    put_json(second.__dict__, layout.marker(src.key))
    write_bytes(b'{"partial', layout.staged.join(f".{src.key}.json.0123"))  # a killed local write's temp file
    assert load_staged(layout) == {src.key: second}
    with Lease(out.join("_lease.json"), "r", ttl=60, settle=0) as lease:
        with pytest.raises(FileNotFoundError, match="missing"):
            publish(layout, manifest([entry(SourceFile("zzz", 1, "t"))]), lease)
        assert current_manifest(out) is None  # nothing published
        publish(layout, manifest([first], 1, "r1"), lease)
        assert current_manifest(out).run_id == "r1"
        publish(layout, manifest([second], 2, "r2"), lease)
        assert current_manifest(out).run_id == "r2"
        assert collect_garbage(layout, keep=1, lease=lease) == {"data_files": 2, "markers": 1, "manifests": 1}
    assert list_tree(layout.data) == [second.files[0][len("data/") :]]


def test_output_dimensions_and_the_model_head_make_a_new_version(tiny_models, tmp_path):
    """output.dimensions (Matryoshka truncation) changes the stored vectors, as does a change to the model's
    sentence-transformers modules (a Dense module's weights, the Pooling config): each is a new version."""
    import shutil

    from test_st_head import IDENTITY, st_model

    model = st_model(tiny_models["bert"], tmp_path / "m", {"pooling_mode": "mean"}, dense=[(64, 32, IDENTITY, True)])
    base = fingerprint_hash(fingerprint_recipe(cfg(name_or_path=str(model)), ""))
    truncated = cfg(name_or_path=str(model)).model_copy(deep=True)
    truncated.output.dimensions = 16
    assert fingerprint_hash(fingerprint_recipe(truncated, "")) != base
    dense = shutil.copytree(model, tmp_path / "dense")
    weights = dense / "2_Dense" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert fingerprint_hash(fingerprint_recipe(cfg(name_or_path=str(dense)), "")) != base
    pooling = shutil.copytree(model, tmp_path / "pooling")
    (pooling / "1_Pooling" / "config.json").write_text(
        '{"embedding_dimension": 64, "pooling_mode": "mean", "include_prompt": false}'
    )
    assert fingerprint_hash(fingerprint_recipe(cfg(name_or_path=str(pooling)), "")) != base


def test_a_recipe_without_output_dimensions_keeps_its_version_name(tiny_models):
    """Versions recorded before the recipe held output.dimensions keep their name when every dimension is kept (the
    vectors are the same), so upgrading does not re-embed such a dataset."""
    recipe = fingerprint_recipe(cfg(name_or_path=str(tiny_models["qwen3"])), "")
    assert "dimensions" not in recipe and "token_columns" not in recipe


def test_output_token_columns_make_a_new_version(tiny_models):
    """Files with num_tokens/truncated have two more columns: another version, never mixed into one dataset."""
    plain = cfg(name_or_path=str(tiny_models["qwen3"]))
    tokens = plain.model_copy(update={"output": plain.output.model_copy(update={"token_columns": True})})
    recipe = fingerprint_recipe(tokens, "")
    assert recipe["token_columns"] is True
    assert fingerprint_hash(recipe) != fingerprint_hash(fingerprint_recipe(plain, ""))


def test_a_file_whose_duplicate_id_rejects_changed_is_embedded_again():
    """Same content, other first copies (a new file repeats its ids, or the file with the first copy was deleted):
    its rejects differ, so it is changed; a staged marker of the old digest is not resumed. Without the check
    (duplicates None) the digest is ignored; an entry written before the check (None) is changed once checked only when the file repeats ids."""
    a, b = SourceFile("a", 5, "mtime_ns:1"), SourceFile("b", 5, "mtime_ns:1")
    clean = dataclasses.replace(entry(a), duplicates=NO_DUPLICATES)
    previous = manifest([clean, dataclasses.replace(entry(b), duplicates=NO_DUPLICATES)])
    plan = make_plan([a, b], previous, {}, duplicates={"a": NO_DUPLICATES, "b": "00ff"})
    assert [x.path for x in plan.unchanged] == ["a"] and [x.path for x in plan.changed] == ["b"]
    assert [x.path for x in plan.replaced] == ["b"] and [x.path for x in plan.to_embed] == ["b"]
    staged_old = {b.key: dataclasses.replace(entry(b, run="crashed"), duplicates=NO_DUPLICATES)}
    assert make_plan([a, b], previous, staged_old, duplicates={"a": NO_DUPLICATES, "b": "00ff"}).resumed == []
    staged_new = {b.key: dataclasses.replace(entry(b, run="crashed"), duplicates="00ff")}
    assert [e.run_id for e in make_plan([a, b], previous, staged_new, {"a": NO_DUPLICATES, "b": "00ff"}).resumed] == [
        "crashed"
    ]
    assert make_plan([a, b], previous, {}, duplicates=None).is_noop
    unchecked = manifest([entry(a)])  # duplicates None: a manifest from before the check, re-embedded only with repeats
    assert [x.path for x in make_plan([a], unchecked, {}, {"a": NO_DUPLICATES}).unchanged] == ["a"]
    assert [x.path for x in make_plan([a], unchecked, {}, {"a": "00ff"}).changed] == ["a"]
    assert FileEntry.from_json({k: v for k, v in dataclasses.asdict(entry(a)).items() if k != "duplicates"}) == entry(a)


def test_duplicate_digests_are_per_file_and_free_of_row_order(tmp_path):
    """file_digests: one order-free digest per file of the pass's repeats, NO_DUPLICATES for a file without."""
    files = ["a.jsonl", "b.jsonl", "c.jsonl"]
    rows = [(1, 3, "duplicate id (first at a.jsonl row 0)"), (1, 5, "duplicate id (first at a.jsonl row 2)")]

    def write(folder, order):
        for i, (index, row, reason) in enumerate(order):
            part = folder / f"file_index={index}"
            part.mkdir(parents=True, exist_ok=True)
            pa.parquet.write_table(pa.table({"row": [row], "reason": [reason]}), part / f"{i}.parquet")
        (folder / "_SUCCESS").write_text("{}")

    write(tmp_path / "one", rows)
    write(tmp_path / "two", rows[::-1])
    one = file_digests(resolve(str(tmp_path / "one"), StorageConfig()), files)
    two = file_digests(resolve(str(tmp_path / "two"), StorageConfig()), files)
    assert one == two and one["a.jsonl"] == one["c.jsonl"] == NO_DUPLICATES and one["b.jsonl"] != NO_DUPLICATES
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "_SUCCESS").write_text("{}")
    assert set(file_digests(resolve(str(tmp_path / "none"), StorageConfig()), files).values()) == {NO_DUPLICATES}


def test_kept_types_survive_the_manifest():
    """The version's kept-column types are recorded in its manifest as JSON and read back equal."""
    import json

    from pipeline.kept_columns import JSON_TEXT, KeptType
    from pipeline.reembed import kept

    types = {"meta": JSON_TEXT, "year": KeptType(pa.int64()), "tags": KeptType(pa.list_(pa.string()))}
    assert kept.decode(json.loads(json.dumps(kept.encode(types)))) == types
    assert kept.decode(None) == {}


def test_a_content_token_hashes_the_bytes_of_a_compressed_file(tmp_path):
    """The sha256 a local entry records (and the token of a filesystem without times) is of the file's bytes: a
    `.gz` was opened through pyarrow's compression detection, hashed as its text, and a cut one failed the run
    (OSError: Truncated compressed stream) where the reader counts it as one reject row."""
    import gzip
    import hashlib

    from pipeline.reembed.sources import content_token

    whole = gzip.compress(b'{"id": "1", "text": "hello"}\n' * 50)
    (tmp_path / "a.jsonl.gz").write_bytes(whole)
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[:40])
    root = resolve(str(tmp_path), StorageConfig())
    assert content_token(root, "a.jsonl.gz") == f"sha256:{hashlib.sha256(whole).hexdigest()}"
    assert content_token(root, "cut.jsonl.gz") == f"sha256:{hashlib.sha256(whole[:40]).hexdigest()}"


def test_a_kept_type_refusal_gives_the_json_number_example_only_for_integers_stored_and_floats_arriving():
    """'e.g. 2, not 2.0' is what to do where int64 is stored and a file's JSON numbers have a point; said for a
    string column getting numbers (JSON text) it would point at the wrong fix."""
    import pyarrow as pa

    from pipeline.kept_columns import KeptType
    from pipeline.reembed.kept import example

    assert example(KeptType(pa.int64()), KeptType(pa.float64())) == " (e.g. 2, not 2.0)"
    assert example(KeptType(pa.string()), KeptType(pa.string(), json_text=True)) == ""
    assert example(KeptType(pa.timestamp("ns")), KeptType(pa.timestamp("us"))) == ""


@pytest.mark.parametrize(
    "key, ours", [("lease_seconds", "reembed.lease_ttl_seconds"), ("lease_wait_seconds", "reembed.lease_wait_seconds")]
)
def test_the_embed_jobs_lease_keys_in_a_reembed_config_point_at_its_own(key, ours):
    """output.lease_* are the embed job's; the re-embed job read reembed.lease_* and ignored them without a word
    (a RayJob retry meant to wait out a dead attempt's lease exited 3 instead)."""
    from pipeline.config import ConfigError, load_config
    from pipeline.reembed.config import ReembedConfig

    with pytest.raises(ConfigError, match=rf"output.{key} is the embed job's lease setting; .* set by {ours}"):
        load_config(ReembedConfig, "configs/reembed.yaml", [f"output.{key}=180"])
    shipped = load_config(ReembedConfig, "configs/reembed.yaml", [])
    assert shipped.reembed.lease_wait_seconds == 660
    # a config written out whole (every default, as --show-config prints it) is not refused
    assert ReembedConfig.model_validate(shipped.model_dump(mode="json", exclude_none=True)) == shipped
