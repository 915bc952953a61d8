"""Fingerprint comparison (pipeline.fingerprint): a refused resume names the input files that changed."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil

import pytest

from pipeline import commit, fingerprint, input_contents
from pipeline.config import StorageConfig
from pipeline.fingerprint import differences, listing_digest
from pipeline.storage import list_inputs, resolve


def listing(folder) -> dict:
    return listing_digest(list_inputs(str(folder), StorageConfig())[1])


def corpus(tmp_path, names):
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text('{"text": "a"}\n')
    return folder


def test_a_changed_listing_names_the_files_added_removed_resized_and_rewritten(tmp_path):
    folder = corpus(tmp_path, ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl"])
    before = listing(folder)
    (folder / "e.jsonl").write_text('{"text": "new"}\n')  # added
    (folder / "b.jsonl").unlink()  # removed
    (folder / "c.jsonl").write_text('{"text": "longer"}\n')  # resized
    stat = (folder / "d.jsonl").stat()
    os.utime(folder / "d.jsonl", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten, same size
    [diff] = differences({"input.listing": before}, {"input.listing": listing(folder)})
    assert diff == (
        "input.listing: 4 files -> 4 files (added e.jsonl; removed b.jsonl; "
        "changed c.jsonl (size 14 -> 19 bytes), d.jsonl (modified))"
    )


def test_an_unchanged_listing_is_equal_whether_or_not_its_entries_were_recorded(tmp_path):
    folder = corpus(tmp_path, ["a.jsonl", "b.jsonl"])
    now = listing(folder)
    recorded_before_entries = {k: v for k, v in now.items() if k != "entries"}  # a run recorded by an older version
    assert differences({"input.listing": recorded_before_entries}, {"input.listing": now}) == []
    assert differences({"input.listing": now}, {"input.listing": listing(folder)}) == []


def rewrite_keeping_size_and_mtime(path, text: str) -> None:
    """What `cp -p` of an edited copy, `rsync -t` of a same-length edit or `touch -r` leave: new bytes, old mtime."""
    stat = path.stat()
    assert len(text.encode()) == stat.st_size
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_mtime_ns == stat.st_mtime_ns


def test_a_file_rewritten_with_its_old_size_and_mtime_is_a_changed_listing_named_as_such(tmp_path):
    """The listing pinned (path, size, mtime) only: such a rewrite compared equal, so a resume kept the old
    content's vectors for committed units and embedded the new content for the rest. The inode change time moves."""
    folder = corpus(tmp_path, ["a.jsonl", "b.jsonl"])
    before = listing(folder)
    rewrite_keeping_size_and_mtime(folder / "b.jsonl", '{"text": "b"}\n')
    [diff] = differences({"input.listing": before}, {"input.listing": listing(folder)})
    assert (
        diff
        == "input.listing: 2 files -> 2 files (changed b.jsonl (rewritten with its old size and modification time))"
    )


def test_an_older_versions_listing_record_still_matches_an_unchanged_corpus(tmp_path):
    """A run an older version left unfinished recorded neither `tokens_sha256` nor the ctime in its entries: it
    resumes when nothing changed, and a change it could see (a new mtime) is still named."""
    folder = corpus(tmp_path, ["a.jsonl", "b.jsonl"])
    now = listing(folder)
    older = {"files": now["files"], "sha256": now["sha256"], "entries": [e[:3] for e in now["entries"]]}
    assert differences({"input.listing": older}, {"input.listing": now}) == []
    assert (
        differences({"input.listing": {k: v for k, v in older.items() if k != "entries"}}, {"input.listing": now}) == []
    )
    stat = (folder / "a.jsonl").stat()
    os.utime(folder / "a.jsonl", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    [diff] = differences({"input.listing": older}, {"input.listing": listing(folder)})
    assert diff == "input.listing: 2 files -> 2 files (changed a.jsonl (modified))"


def test_a_rewrite_too_long_to_name_file_by_file_is_refused_by_the_token_digest(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "LISTING_ENTRIES_MAX", 1)
    folder = corpus(tmp_path, ["a.jsonl", "b.jsonl"])
    before = listing(folder)
    rewrite_keeping_size_and_mtime(folder / "a.jsonl", '{"text": "z"}\n')
    after = listing(folder)
    [diff] = differences({"input.listing": before}, {"input.listing": after})
    assert diff == (
        f"input.listing: 2 files -> 2 files (listing tokens_sha256 {before['tokens_sha256']} -> "
        f"{after['tokens_sha256']})"
    )


def test_many_changes_are_counted_beyond_the_first_few_named(tmp_path):
    folder = corpus(tmp_path, ["a.jsonl"])
    before = listing(folder)
    corpus(tmp_path, [f"new-{i:02d}.jsonl" for i in range(8)])
    [diff] = differences({"input.listing": before}, {"input.listing": listing(folder)})
    assert diff.endswith("(added new-00.jsonl, new-01.jsonl, new-02.jsonl, new-03.jsonl, new-04.jsonl and 3 more)")


def test_a_listing_too_long_to_record_file_by_file_is_refused_by_its_counts_and_digests(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "LISTING_ENTRIES_MAX", 2)
    folder = corpus(tmp_path, ["a.jsonl", "b.jsonl", "c.jsonl"])
    before = listing(folder)
    assert "entries" not in before
    (folder / "c.jsonl").unlink()
    after = listing(folder)
    [diff] = differences({"input.listing": before}, {"input.listing": after})
    assert diff == f"input.listing: 3 files -> 2 files (listing sha256 {before['sha256']} -> {after['sha256']})"


def test_the_refusal_of_a_resume_names_the_changed_file(tmp_path):
    folder = corpus(tmp_path, ["part-0.jsonl", "part-1.jsonl"])
    out = resolve(str(tmp_path / "out"), StorageConfig())
    fp = {"metadata.model": "m", "input.listing": listing(folder)}
    commit.begin(out, "embed", overwrite=False, fingerprint=fp)
    commit.mark_unit(out, "k1", {"rows": 1})  # an attempt that committed something: resumable, so refused
    (folder / "part-1.jsonl").write_text('{"text": "edited after the crash"}\n')
    with pytest.raises(commit.OutputExistsError, match=r"input\.listing: 2 files -> 2 files \(changed part-1\.jsonl"):
        commit.begin(out, "embed", overwrite=False, fingerprint={**fp, "input.listing": listing(folder)})


def test_s3_listings_pin_the_servers_last_modified_and_take_no_change_time(s3_bucket, s3_server):
    """The S3 listing gives size, LastModified and ETag (pipeline.s3_listing), no change time. LastModified is set
    by the server on every write and cannot be set back by a client: a same-size rewrite made in a later second is
    a changed listing. The mtime is the one pyarrow's listing gave, which older versions recorded."""
    import time

    import pyarrow.fs as pafs

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b'{"text": "a"}\n')
    storage = StorageConfig(endpoint_url=s3_server)
    root, listed = list_inputs(f"s3://{bucket}/corpus", storage)
    before = listing_digest(listed)
    etag = client.head_object(Bucket=bucket, Key="corpus/a.jsonl")["ETag"].strip('"')
    assert before["entries"][0][3:] == [None, etag]
    [by_pyarrow] = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True))
    assert listed[0].mtime_ns == by_pyarrow.mtime_ns and listed[0].mtime_ns % 10**9 == 0
    time.sleep(1.05)  # S3 (and moto) give LastModified to the second
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b'{"text": "b"}\n')
    after = listing_digest(list_inputs(f"s3://{bucket}/corpus", storage)[1])
    [diff] = differences({"input.listing": before}, {"input.listing": after})
    assert diff == "input.listing: 1 files -> 1 files (changed a.jsonl (modified))"


def test_a_refusal_names_the_configuration_keys_not_the_metadata_fields():
    """A rerun with another prompt or output.dtype was refused naming `metadata.prompt`, `metadata.dtype` and
    `metadata.precision` (the same change twice): names no configuration key has."""
    recorded = {"metadata.prompt": "", "metadata.dtype": "float32", "metadata.precision": "float32", "x.y": 1}
    current = {"metadata.prompt": "query: ", "metadata.dtype": "int8", "metadata.precision": "int8", "x.y": 2}
    assert differences(recorded, current) == [
        'output.dtype: "float32" -> "int8"',
        'model.prompt (as resolved from model.prompt, prompt_name, task and input.kind): "" -> "query: "',
        "x.y: 1 -> 2",
    ]


def test_a_listing_recorded_before_etags_compares_on_what_it_has(s3_bucket, s3_server):
    """An unfinished run an older version recorded (no `etags_sha256`, entries of four fields) resumes when nothing
    changed; a listing recorded with ETags names an object rewritten in the same second (same size and mtime)."""
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b'{"text": "a"}\n')
    storage = StorageConfig(endpoint_url=s3_server)
    now = listing_digest(list_inputs(f"s3://{bucket}/corpus", storage)[1])
    older = {k: v for k, v in now.items() if k != "etags_sha256"}
    older["entries"] = [e[:4] for e in now["entries"]]
    assert differences({"input.listing": older}, {"input.listing": now}) == []
    rewritten = {**now, "etags_sha256": "0" * 16, "entries": [[*now["entries"][0][:4], "other"]]}
    assert differences({"input.listing": now}, {"input.listing": rewritten}) == [
        "input.listing: 1 files -> 1 files (changed a.jsonl (rewritten with its old size and modification time))"
    ]


def test_a_file_touched_while_the_embed_job_reads_it_is_committed_when_its_content_is_the_listed_one(
    tmp_path, monkeypatch
):
    """The embed job's check before it commits a unit (input_contents.changed_inputs): a file whose token alone
    moved while the run read it (a `touch`, an rsync of the same bytes) failed the run with InputChangedError. It is
    now hashed and compared with the sha256 the run's recorder took while it was as listed (ContentRecorder.sha_of);
    an edit of the same size, a grown file, or a file without such a hash is still a change saying which."""
    folder = corpus(tmp_path, ["part-0.jsonl", "part-1.jsonl", "part-2.jsonl"])
    root, listed = list_inputs(str(folder), StorageConfig())
    by_path = {f.path: f for f in listed}
    out = resolve(str(tmp_path / "out"), StorageConfig())
    with input_contents.ContentRecorder(out, {"input.listing": (root, listed)}) as recorder:
        sha_of = functools.partial(recorder.sha_of, "input.listing")
        # the run's hashes are taken first (a file touched before its hash has none of the listed bytes: below)
        assert all(sha_of(f) for f in listed)
        for f in listed:
            st = (folder / f.path).stat()
            os.utime(folder / f.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touch
        (folder / "part-1.jsonl").write_text('{"text": "b"}\n')  # same size, other bytes
        paths = tuple(by_path)
        changed = input_contents.changed_inputs(root, by_path, paths, sha_of)
        assert list(changed) == ["part-1.jsonl"] and "other content" in changed["part-1.jsonl"]  # old: all 3
        (folder / "part-2.jsonl").write_bytes((folder / "part-2.jsonl").read_bytes() + b"\n")
        assert "now " in input_contents.changed_inputs(root, by_path, ("part-2.jsonl",), sha_of)["part-2.jsonl"]
        no_hash = input_contents.changed_inputs(root, by_path, ("part-0.jsonl",))
        assert "no hash of its listed content" in no_hash["part-0.jsonl"]
        # the later units of a split file touched once: its content is compared once, not again for each unit
        confirmed: dict[str, str] = {}
        assert input_contents.changed_inputs(root, by_path, ("part-0.jsonl",), sha_of, confirmed) == {}
        hashed = []
        monkeypatch.setattr(input_contents, "changed_now", lambda *a: hashed.append(a))
        assert input_contents.changed_inputs(root, by_path, ("part-0.jsonl",), sha_of, confirmed) == {}
        assert hashed == []


def test_a_resume_goes_on_after_a_touch_chmod_or_copy_of_an_input_and_names_an_edit(tmp_path):
    """`touch`, `chmod` and a copy that sets new times (`cp`, `rsync` without -t) move a local file's change token
    (mtime, ctime) without changing its content: the resume was refused and the user had to start over. The run
    records each file's sha256 (input_contents.ContentRecorder); a resume hashes the files whose token moved at an
    unchanged size and goes on when their content is the one recorded. An edit of the same size is still refused,
    naming that file alone; without a record (a run killed before its files were hashed) as before."""
    folder = corpus(tmp_path, ["part-0.jsonl", "part-1.jsonl", "part-2.jsonl"])
    root, listed = list_inputs(str(folder), StorageConfig())
    out = resolve(str(tmp_path / "out"), StorageConfig())
    fp = {"metadata.model": "m", "input.listing": listing_digest(listed)}
    commit.begin(out, "embed", overwrite=False, fingerprint=fp)
    with input_contents.ContentRecorder(out, {"input.listing": (root, listed)}):
        commit.mark_unit(out, "k1", {"rows": 1})
    stat = (folder / "part-0.jsonl").stat()
    os.utime(folder / "part-0.jsonl", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touch
    os.chmod(folder / "part-1.jsonl", 0o600)  # chmod
    shutil.copyfile(folder / "part-2.jsonl", tmp_path / "copy")
    os.replace(tmp_path / "copy", folder / "part-2.jsonl")  # cp elsewhere and back, rsync without -t
    moved = {"metadata.model": "m", "input.listing": listing(folder)}
    with pytest.raises(commit.OutputExistsError, match=r"changed part-0\.jsonl \(modified\), part-1\.jsonl"):
        commit.begin(out, "embed", overwrite=False, fingerprint=moved)  # the token alone decides
    same = input_contents.same_content({"input.listing": root}, out)
    assert commit.begin(out, "embed", overwrite=False, fingerprint=moved, same_content=same)
    # the resume recorded the listing as it is now: the next resume reads nothing (old code: refused without a
    # hash, i.e. every later resume hashed those files again), and a second touch is checked against the new tokens
    assert commit.begin(out, "embed", overwrite=False, fingerprint=moved)
    os.utime(folder / "part-0.jsonl", ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    again = {"metadata.model": "m", "input.listing": listing(folder)}
    assert commit.begin(out, "embed", overwrite=False, fingerprint=again, same_content=same)

    (folder / "part-1.jsonl").write_text('{"text": "b"}\n')  # an edit of the same size
    edited = {"metadata.model": "m", "input.listing": listing(folder)}
    with pytest.raises(commit.OutputExistsError, match=r"3 files -> 3 files \(changed part-1\.jsonl \(modified\)\)"):
        commit.begin(out, "embed", overwrite=False, fingerprint=edited, same_content=same)
    (tmp_path / "out" / "_run" / "contents.json").unlink()  # killed before the files were hashed: nothing to compare
    os.utime(folder / "part-0.jsonl", ns=(stat.st_atime_ns, stat.st_mtime_ns + 3 * 10**9))
    third = {"metadata.model": "m", "input.listing": listing(folder)}
    with pytest.raises(commit.OutputExistsError, match=r"changed part-0\.jsonl \(modified\), part-1\.jsonl"):
        commit.begin(out, "embed", overwrite=False, fingerprint=third, same_content=same)


def test_a_recorded_hash_is_of_the_file_as_listed(tmp_path):
    """A file changed between the listing and its hash is left out of the record (never a hash of content the run
    did not list); an interrupted recorder: test_an_interrupted_recorder_records_the_files_hashed_by_then."""
    folder = corpus(tmp_path, ["a.jsonl", "b.jsonl"])
    root, listed = list_inputs(str(folder), StorageConfig())
    out = resolve(str(tmp_path / "out"), StorageConfig())
    (folder / "b.jsonl").write_text('{"text": "b"}\n')
    with input_contents.ContentRecorder(out, {"input.listing": (root, listed)}):
        pass
    recorded = json.loads((tmp_path / "out" / "_run" / "contents.json").read_text())["input.listing"]
    assert sorted(recorded) == ["a.jsonl"]
    assert recorded["a.jsonl"]["sha256"] == "sha256:" + hashlib.sha256(b'{"text": "a"}\n').hexdigest()


def test_an_interrupted_recorder_records_the_files_hashed_by_then(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM while the files are hashed: the old recorder wrote nothing, so a resume after a touch of a
    file hashed long before the interrupt was refused. The files hashed by then are recorded; the rest are hashed
    by the resume's recorder."""
    folder = corpus(tmp_path, ["a.jsonl", "b.jsonl"])
    root, listed = list_inputs(str(folder), StorageConfig())
    out = resolve(str(tmp_path / "out"), StorageConfig())
    recorder = input_contents.ContentRecorder(out, {"input.listing": (root, listed[:1])})
    hashed = input_contents.content_token

    def hash_then_interrupt(*args, **kwargs):
        sha = hashed(*args, **kwargs)
        recorder.stop.set()  # the interrupt arrives once a.jsonl is hashed
        return sha

    monkeypatch.setattr(input_contents, "content_token", hash_then_interrupt)
    with pytest.raises(KeyboardInterrupt), recorder:
        recorder.thread.join()
        raise KeyboardInterrupt
    recorded = json.loads((tmp_path / "out" / "_run" / "contents.json").read_text())["input.listing"]
    assert sorted(recorded) == ["a.jsonl"]
    monkeypatch.setattr(input_contents, "content_token", hashed)
    with input_contents.ContentRecorder(out, {"input.listing": (root, listed)}):  # the resume's: b.jsonl only
        pass
    recorded = json.loads((tmp_path / "out" / "_run" / "contents.json").read_text())["input.listing"]
    assert sorted(recorded) == ["a.jsonl", "b.jsonl"]


def test_an_s3_object_uploaded_again_with_the_same_bytes_is_the_same_listing(s3_bucket, s3_server):
    """A new upload of the same bytes (`aws s3 cp`/`sync` again) moves LastModified but not the ETag, which names
    the content: the listing is the same, no object read. Other bytes of the same size are still named."""
    import time

    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="again/a.jsonl", Body=b'{"text": "a"}\n')
    storage = StorageConfig(endpoint_url=s3_server)
    before = listing_digest(list_inputs(f"s3://{bucket}/again", storage)[1])
    time.sleep(1.05)  # S3 (and moto) give LastModified to the second
    client.put_object(Bucket=bucket, Key="again/a.jsonl", Body=b'{"text": "a"}\n')
    again = listing_digest(list_inputs(f"s3://{bucket}/again", storage)[1])
    assert again["sha256"] != before["sha256"]
    assert differences({"input.listing": before}, {"input.listing": again}) == []
    client.put_object(Bucket=bucket, Key="again/a.jsonl", Body=b'{"text": "b"}\n')
    edited = listing_digest(list_inputs(f"s3://{bucket}/again", storage)[1])
    assert differences({"input.listing": before}, {"input.listing": edited}) == [
        "input.listing: 1 files -> 1 files (changed a.jsonl (modified))"
    ]


def test_the_embed_jobs_objects_changed_during_the_run_are_found_by_one_listing(s3_bucket, s3_server, proxy):
    """The embed job checks the S3 objects it committed with one listing at its end (no request per object): an
    object rewritten (other ETag), grown or deleted is named; an upload of the same bytes is the same object."""
    from pipeline.storage import ListedFile

    client, bucket = s3_bucket
    for name in "abcd":
        client.put_object(Bucket=bucket, Key=f"in/{name}.jsonl", Body=b'{"text": "x"}\n')
    storage = StorageConfig(endpoint_url=proxy.url)
    _, files = list_inputs(f"s3://{bucket}/in", storage)
    client.put_object(Bucket=bucket, Key="in/a.jsonl", Body=b'{"text": "y"}\n')
    client.put_object(Bucket=bucket, Key="in/b.jsonl", Body=b'{"text": "x"}\n{"text": "z"}\n')
    client.delete_object(Bucket=bucket, Key="in/c.jsonl")
    client.put_object(Bucket=bucket, Key="in/d.jsonl", Body=b'{"text": "x"}\n')  # the same bytes again
    proxy.forwarded.clear()
    _, now = list_inputs(f"s3://{bucket}/in", storage)
    by_path: dict[str, ListedFile] = {f.path: f for f in files}
    changed = input_contents.changed_objects(now, by_path, set(by_path))
    assert changed == {
        "a.jsonl": f"listed with ETag {by_path['a.jsonl'].etag}, now {now[0].etag} (same size)",
        "b.jsonl": "listed with 14 bytes, now 28 bytes",
        "c.jsonl": "listed with 14 bytes, now gone",
    }
    assert not [path for method, path in proxy.forwarded if method == "HEAD" and path.endswith(".jsonl")]


def test_a_resume_goes_on_after_a_file_gone_before_its_read_is_put_back(tmp_path):
    """The embed job stops naming a file renamed away after its listing, before its read (pipeline.units.
    unless_gone), once the other units are committed; its message says to put the file back and run the same
    command. Put back (`mv` back: a new ctime, and no hash recorded, the file being gone when the run hashed its
    files), the resume was refused ('rewritten with its old size and modification time'): the committed units were
    lost to output.overwrite. A file no committed unit read is now cleared (nothing of it is in the output); one a
    committed unit read and that changed is still refused."""
    folder = corpus(tmp_path, ["a.jsonl", "b.jsonl", "c.jsonl"])
    root, listed = list_inputs(str(folder), StorageConfig())
    out = resolve(str(tmp_path / "out"), StorageConfig())
    fp = {"metadata.model": "m", "input.listing": listing_digest(listed)}
    commit.begin(out, "embed", overwrite=False, fingerprint=fp)
    os.rename(folder / "b.jsonl", tmp_path / "b.jsonl.1")  # logrotate during the run
    with input_contents.ContentRecorder(out, {"input.listing": (root, listed)}):
        commit.mark_unit(out, "ka", {"path": "a.jsonl", "rows": 1})
        commit.mark_unit(out, "kc", {"path": "c.jsonl", "rows": 1})
    os.rename(tmp_path / "b.jsonl.1", folder / "b.jsonl")  # put back
    back = {"metadata.model": "m", "input.listing": listing(folder)}
    old = input_contents.same_content({"input.listing": root}, out)  # as the embed job asked before
    with pytest.raises(commit.OutputExistsError, match=r"changed b\.jsonl \(rewritten with its old size"):
        commit.begin(out, "embed", overwrite=False, fingerprint=back, same_content=old)
    same = input_contents.same_content({"input.listing": root}, out, units_of="input.listing")
    assert commit.begin(out, "embed", overwrite=False, fingerprint=back, same_content=same)
    (folder / "a.jsonl").write_text('{"text": "z"}\n')  # a committed file edited at its size: refused
    edited = {"metadata.model": "m", "input.listing": listing(folder)}
    with pytest.raises(commit.OutputExistsError, match=r"changed a\.jsonl \(modified\)"):
        commit.begin(out, "embed", overwrite=False, fingerprint=edited, same_content=same)


def test_trusting_the_code_a_model_ships_is_part_of_both_jobs_fingerprints(tiny_models, tmp_path, monkeypatch):
    """model.trust_remote_code switches a model that ships code between transformers' class and its own
    (test_security::remote_code_runs_only_when_trusted_and_then_warns; the driver's warning on an untrusted one says to
    set it): other vectors. It was in neither fingerprint, so the embed job resumed a run with it flipped and the
    re-embed job added the other code's vectors to the same version, mixing the two. Now both record it where the
    model ships code; on a model that ships none the key changes nothing, and is not recorded."""
    from pipeline.config import EmbedConfig
    from pipeline.reembed.fingerprint import fingerprint_hash, fingerprint_recipe

    monkeypatch.setenv("RAYEMBED_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = shutil.copytree(tiny_models["bert"], tmp_path / "model")

    def both(trusted: bool) -> tuple[dict, str]:
        cfg = EmbedConfig.model_validate(
            {
                "input": {"uri": str(tmp_path / "corpus"), "format": "jsonl"},
                "output": {"uri": str(tmp_path / "out")},
                "model": {"name_or_path": str(model_dir), "pooling": "mean", "trust_remote_code": trusted},
            }
        )
        identity = fingerprint.model_identity(cfg.model)
        return fingerprint.embed_fingerprint(cfg, {}, [], identity), fingerprint_hash(fingerprint_recipe(cfg, ""))

    (off, off_version), (on, on_version) = both(False), both(True)
    assert differences(off, on) == [] and off_version == on_version  # ships no code: the key changes nothing
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "own.OwnModel"}}))
    (off, off_version), (on, on_version) = both(False), both(True)
    assert differences(off, on) == ["model.trust_remote_code: (absent) -> true"] and off_version != on_version


def test_a_chunk_mode_run_records_how_its_windows_are_laid(tmp_path):
    """Chunk mode's windows changed (a text that fits max_tokens is one window; no window cut by the tokenizer), and
    the run fingerprint recorded no rule of them: a run started by the older version and resumed by this one would
    hold windows of both. Chunk mode records `rules.chunk_windows`, so such a resume is named and refused; truncate
    mode records nothing new, so its runs keep resuming across versions."""
    from pipeline.config import EmbedConfig
    from pipeline.tokenization import CHUNK_RULE

    def recorded(long_inputs: str) -> dict:
        cfg = EmbedConfig.model_validate(
            {
                "input": {"uri": str(tmp_path / "corpus"), "format": "jsonl"},
                "output": {"uri": str(tmp_path / "out")},
                "model": {"name_or_path": "m", "long_inputs": long_inputs},
            }
        )
        return fingerprint.embed_fingerprint(cfg, {}, [], {"source": "hub", "commit": "c"})

    chunk, truncate = recorded("chunk"), recorded("truncate")
    assert chunk["rules.chunk_windows"] == CHUNK_RULE and "rules.chunk_windows" not in truncate
    older = {k: v for k, v in chunk.items() if k != "rules.chunk_windows"}  # a run the older version started
    assert differences(older, chunk) == [f"rules.chunk_windows: (absent) -> {json.dumps(CHUNK_RULE)}"]


def test_output_token_columns_are_recorded_when_on_and_a_switch_either_way_is_named(tmp_path):
    """output.token_columns decides the output's columns (num_tokens, truncated), as keep_columns does: a resume that
    switched it reused units written with the other columns. Recorded when on, so a run recorded before the key was
    (off, the default, no field) still resumes; a switch either way is a difference naming the key (the off -> on
    refusal of a killed run's resume, end to end: test_resume::test_killed_driver_resumes_with_the_same_command)."""
    from pipeline.config import EmbedConfig

    def recorded(token_columns: bool) -> dict:
        cfg = EmbedConfig.model_validate(
            {
                "input": {"uri": str(tmp_path / "corpus"), "format": "jsonl"},
                "output": {"uri": str(tmp_path / "out"), "token_columns": token_columns},
                "model": {"name_or_path": "m"},
            }
        )
        return fingerprint.embed_fingerprint(cfg, {}, [], {"source": "hub", "commit": "c"})

    off, on = recorded(False), recorded(True)
    assert "output.token_columns" not in off and on["output.token_columns"] is True
    assert differences(off, on) == ["output.token_columns: (absent) -> true"]
    assert differences(on, off) == ["output.token_columns: true -> (absent)"]
