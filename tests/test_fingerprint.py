"""Fingerprint comparison (pipeline.fingerprint): a refused resume names the input files that changed."""

from __future__ import annotations

import os

import pytest

from pipeline import commit, fingerprint
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
