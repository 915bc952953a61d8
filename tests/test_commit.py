"""The commit protocol (pipeline.commit) on a local directory and on the S3 server: start, refuse, resume, clear."""

from __future__ import annotations

import pytest

from pipeline import commit
from pipeline.config import StorageConfig
from pipeline.fingerprint import differences
from pipeline.objects import list_tree
from pipeline.storage import resolve

FP = {"metadata.model": "a", "model.identity": {"source": "local", "sha256": "1"}, "input.listing": {"files": 2}}


def test_fresh_run_records_its_fingerprint_and_commits_summary_then_marker(tmp_path):
    out = resolve(str(tmp_path / "o"), StorageConfig())
    assert commit.begin(out, "embed", overwrite=False, fingerprint=FP) is False
    assert not commit.is_committed(out)
    commit.mark_unit(out, "k1", {"rows": 3})
    assert commit.committed_units(out) == {"k1": {"rows": 3}}
    assert commit.begin(out, "embed", overwrite=False, fingerprint=FP) is True  # same fingerprint: resume
    commit.commit(out, "embed", {"rows_in": 3}, "_summary.json")
    assert commit.is_committed(out)
    with pytest.raises(commit.OutputExistsError, match="already holds a finished run .*output.overwrite=true"):
        commit.begin(out, "embed", overwrite=False, fingerprint=FP)


def test_another_configuration_is_refused_naming_each_difference(tmp_path):
    out = resolve(str(tmp_path / "o"), StorageConfig())
    commit.begin(out, "embed", overwrite=False, fingerprint=FP)
    commit.mark_unit(out, "k1", {"rows": 3})
    other = {**FP, "metadata.model": "b", "model.identity": {"source": "local", "sha256": "2"}}
    with pytest.raises(commit.OutputExistsError) as err:
        commit.begin(out, "embed", overwrite=False, fingerprint=other)
    assert 'model.name_or_path: "a" -> "b"' in str(err.value)
    assert "model.identity" in str(err.value) and "input.listing" not in str(err.value)
    assert commit.begin(out, "embed", overwrite=True, fingerprint=other) is False  # overwrite starts over
    assert list_tree(out) == ["_run/fingerprint.json"]


def test_foreign_files_are_refused_and_jobs_without_fingerprint_need_an_empty_location(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "part-old.parquet").write_bytes(b"x")
    out = resolve(str(tmp_path / "o"), StorageConfig())
    for fp in (FP, None):
        with pytest.raises(FileExistsError, match="1 files .*part-old.parquet.*output.overwrite=true"):
            commit.begin(out, "job", overwrite=False, fingerprint=fp)


def test_clear_deletes_markers_first_then_summaries(tmp_path):
    """An overwrite killed mid-delete never leaves a marker (top or nested) or a summary beside half-deleted data."""
    files = ["a/part-1.parquet", "summary.json", "embeddings/a/_SUCCESS", "embeddings/a/_summary.json", "_SUCCESS"]
    assert commit.deletion_order(files) == [
        "_SUCCESS",
        "embeddings/a/_SUCCESS",
        "embeddings/a/_summary.json",
        "summary.json",
        "a/part-1.parquet",
    ]
    for rel in files:
        (tmp_path / "o" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "o" / rel).write_text("{}")
    commit.clear(resolve(str(tmp_path / "o"), StorageConfig()))
    assert [p for p in (tmp_path / "o").rglob("*") if p.is_file()] == []


def test_protocol_on_s3(s3_bucket, s3_server):
    _, bucket = s3_bucket
    out = resolve(f"s3://{bucket}/o", StorageConfig(endpoint_url=s3_server))
    commit.begin(out, "embed", overwrite=False, fingerprint=FP)
    commit.mark_unit(out, "k1", {"rows": 1})
    assert commit.begin(out, "embed", overwrite=False, fingerprint=FP) is True
    assert set(commit.committed_units(out)) == {"k1"}
    commit.commit(out, "embed", {}, "_summary.json")
    commit.begin(out, "embed", overwrite=True, fingerprint=FP)
    assert list_tree(out) == ["_run/fingerprint.json"]


def test_differences_lists_absent_fields():
    assert differences({"a": 1}, {"a": 1, "b": [2]}) == ["b: (absent) -> [2]"]
    assert differences({"a": {"x": 1}}, {"a": {"x": 1}}) == []


def test_drop_except_keeps_the_run_record_and_the_recorded_stages_files(tmp_path):
    """What a resumed stage-wise job (mining, clustering) deletes: every file of an unrecorded stage, temp files too."""
    out = resolve(str(tmp_path / "o"), StorageConfig())
    commit.begin(out, "mine_bitext", overwrite=False, fingerprint=FP)
    commit.mark_unit(out, "texts", {"rows": 3})
    files = ["texts/a/part-0.parquet", "work/knn/b.parquet", "pairs/.part-0.parquet.tmp", "summary.json", "_SUCCESS"]
    for rel in files:
        (tmp_path / "o" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "o" / rel).write_text("{}")
    assert commit.drop_except(out, keep=["texts/"]) == 4
    assert list_tree(out, temp_files=True) == [
        "_run/fingerprint.json",
        "_run/units/texts.json",
        "texts/a/part-0.parquet",
    ]


def test_reuse_finished_returns_the_summary_of_the_same_configuration_only(tmp_path):
    out = resolve(str(tmp_path / "o"), StorageConfig())
    commit.begin(out, "embed", overwrite=False, fingerprint=FP)
    with pytest.raises(commit.OutputExistsError, match="holds no finished run"):
        commit.reuse_finished(out, "embed", FP)
    commit.commit(out, "embed", {"rows_in": 3}, "_summary.json")
    assert commit.reuse_finished(out, "embed", FP) == {"rows_in": 3}
    with pytest.raises(commit.OutputExistsError, match=r'finished embed of another configuration.*"a" -> "b"'):
        commit.reuse_finished(out, "embed", {**FP, "metadata.model": "b"})


def test_a_nested_steps_refusals_name_its_keys_and_what_the_user_can_do(tmp_path):
    out = resolve(str(tmp_path / "o"), StorageConfig())
    nested = commit.Naming("embed.", "set embed.output.overwrite=true")
    commit.begin(out, "embed", overwrite=False, fingerprint=FP, naming=nested)
    commit.mark_unit(out, "k1", {"rows": 3})
    other = {**FP, "metadata.model": "b"}
    with pytest.raises(
        commit.OutputExistsError,
        match=r'unfinished embed .*: embed\.model\.name_or_path: "a" -> "b"\. .*'
        r"or set embed\.output\.overwrite=true$",
    ):
        commit.begin(out, "embed", overwrite=False, fingerprint=other, naming=nested)
    commit.commit(out, "embed", {"rows_in": 3}, "_summary.json")
    with pytest.raises(
        commit.OutputExistsError,
        match=r'finished embed .*: embed\.model\.name_or_path: "a" -> "b"\. .*'
        r"or set embed\.output\.overwrite=true$",
    ):
        commit.reuse_finished(out, "embed", other, nested)
    with pytest.raises(
        commit.OutputExistsError, match=r"finished run \(_SUCCESS exists\); set embed\.output\.overwrite=true$"
    ):
        commit.check_available(out, overwrite=False, resumable=True, naming=nested)


def test_a_first_attempt_killed_while_recording_its_fingerprint_leaves_a_location_the_rerun_starts(tmp_path):
    """SIGKILL between the temp write and the rename of `_run/fingerprint.json` (a local put_json), the first thing
    a run writes: the rerun found one hidden file and no recorded run, and refused the location as holding foreign
    files ("set output.overwrite=true"). Now it starts the run and removes the temp file; a real foreign file, or
    any other temp file, is still refused."""
    run = tmp_path / "o" / "_run"
    run.mkdir(parents=True)
    (run / ".fingerprint.json.0123456789abcdef0123456789abcdef").write_bytes(b'{"job": "em')  # cut short
    out = resolve(str(tmp_path / "o"), StorageConfig())
    assert commit.begin(out, "embed", overwrite=False, fingerprint=FP) is False
    assert list_tree(out, temp_files=True) == ["_run/fingerprint.json"]
    assert commit.begin(out, "embed", overwrite=False, fingerprint=FP) is True  # and it resumes from there

    other = resolve(str(tmp_path / "p"), StorageConfig())
    (tmp_path / "p" / "_run").mkdir(parents=True)
    (tmp_path / "p" / "_run" / ".summary.json.0123").write_bytes(b"x")
    with pytest.raises(commit.OutputExistsError, match="1 files .*_run/.summary.json.0123"):
        commit.begin(other, "embed", overwrite=False, fingerprint=FP)


def test_an_unfinished_run_that_committed_nothing_gives_way_to_another_configuration(tmp_path, caplog):
    """A run that failed after it began but before committing a unit (output.dimensions above the model's, a
    misspelled output.keep_columns: checks made once the fingerprint was written) refused the corrected command:
    'holds an unfinished embed of another configuration ... Run again with the recorded configuration'. Nothing is
    lost by starting over; once a unit is committed, another configuration is refused as before."""
    out = resolve(str(tmp_path / "o"), StorageConfig())
    commit.begin(out, "embed", overwrite=False, fingerprint=FP)
    corrected = {**FP, "output.keep_columns": ["lang"]}
    with caplog.at_level("WARNING"):
        assert commit.begin(out, "embed", overwrite=False, fingerprint=corrected) is False
    assert 'committed nothing (output.keep_columns: (absent) -> ["lang"]); starting over' in caplog.text
    assert commit.begin(out, "embed", overwrite=False, fingerprint=corrected) is True  # its own fingerprint now
    commit.mark_unit(out, "k1", {"rows": 3})
    with pytest.raises(commit.OutputExistsError, match="cannot be resumed: output.keep_columns"):
        commit.begin(out, "embed", overwrite=False, fingerprint=FP)


SPARK_S3A_SUCCESS = (
    b'{"name": "org.apache.hadoop.fs.s3a.commit.files.SuccessData/1", "committer": "magic", "filenames": []}'
)


@pytest.mark.parametrize("marker", [b"", SPARK_S3A_SUCCESS, b"\x00\x01", b'{"job": "embed", "summ'])
def test_a_success_marker_rayembed_did_not_write_is_named_as_another_tools(tmp_path, marker):
    """A folder where Spark or Hadoop wrote (an empty `_SUCCESS`, or the S3A committers' JSON one) was 'already holds
    a finished run'; as a mining or clustering run's embed step it was reused and failed with a JSONDecodeError
    traceback ('Expecting value: line 1 column 1'). Now both refuse, naming the marker as another tool's."""
    out = resolve(str(tmp_path / "o"), StorageConfig())
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "_SUCCESS").write_bytes(marker)
    with pytest.raises(commit.OutputExistsError, match="holds a _SUCCESS that rayembed did not write .*overwrite=true"):
        commit.begin(out, "embed", overwrite=False, fingerprint=FP)
    with pytest.raises(commit.OutputExistsError, match="rayembed did not write .*not a finished embed"):
        commit.reuse_finished(out, "embed", FP)
    assert commit.begin(out, "embed", overwrite=True, fingerprint=FP) is False  # overwrite replaces it


def test_a_run_record_cut_short_is_named_not_a_traceback(tmp_path):
    """A `_run/fingerprint.json` or unit marker cut short (an interrupted copy of the output folder) raised a
    JSONDecodeError out of the job; now a UserError (one `error:` line) naming the file and its size."""
    from pipeline.errors import UserError

    out = resolve(str(tmp_path / "o"), StorageConfig())
    commit.begin(out, "embed", overwrite=False, fingerprint=FP)
    commit.mark_unit(out, "k1", {"rows": 3})
    unit = tmp_path / "o" / "_run" / "units" / "k1.json"
    unit.write_bytes(unit.read_bytes()[:5])
    with pytest.raises(UserError, match=r"k1\.json is not the JSON object rayembed writes there \(5 bytes"):
        commit.committed_units(out)  # what a resume skips
    record = tmp_path / "o" / "_run" / "fingerprint.json"
    record.write_bytes(b"")
    with pytest.raises(UserError, match=r"fingerprint\.json is not the JSON object .*\(empty\)"):
        commit.begin(out, "embed", overwrite=False, fingerprint=FP)
