"""What a run shows: progress with a known total, a short human summary, and no alarming Ray core error line."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, SAMPLE

from jobs.common import interrupted_line
from jobs.embed import main as embed_main
from pipeline.columns import FILE_DONE
from pipeline.config import EmbedConfig, StorageConfig
from pipeline.errors import actor_start_failure
from pipeline.progress import RowProgress, expected_rows, files_done, mark_file_end
from pipeline.run_summary import human_summary
from pipeline.storage import resolve

RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def test_parquet_row_total_from_footers(tmp_path):
    for i, n in enumerate((7, 5)):
        pq.write_table(pa.table({"text": ["x"] * n}), tmp_path / f"p{i}.parquet")
    root = resolve(str(tmp_path), StorageConfig())
    assert expected_rows("parquet", root, ["p0.parquet", "p1.parquet"]) == 12
    assert expected_rows("jsonl", root, ["a.jsonl"]) is None


def test_progress_lines_have_the_total():
    out = io.StringIO()
    progress = RowProgress(total=200, files=2, interval=0.0, stream=out)
    progress.update(50)
    progress.update(150)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("progress: 50 / 200 rows (25%)") and "ETA" in lines[0]
    assert lines[1].startswith("progress: 200 / 200 rows (100%)") and len(lines) == 2  # no repeated final line
    unknown = io.StringIO()  # JSONL/text: no row total, but the listing gives the files
    progress = RowProgress(total=None, files=4, interval=0.0, stream=unknown)
    progress.update(30, files=1)
    assert unknown.getvalue().startswith("progress: 1 / 4 files (25%), 30 rows") and "ETA" in unknown.getvalue()


def test_read_stage_flags_each_files_last_row_once():
    blocks = [pa.table({"x": [1, 2]}), pa.table({"x": [3]})]
    marked = list(mark_file_end(iter(blocks)))
    assert [b.column(FILE_DONE).to_pylist() for b in marked] == [[False, False], [True]]
    assert list(mark_file_end(iter([]))) == []
    # a chunked last row repeats the flag on every chunk: only its first chunk counts
    chunked = pa.table({FILE_DONE: [False, True, True, True], "chunk_index": [0, 0, 1, 2]})
    assert files_done(chunked) == 1 and files_done(pa.table({"x": [1]})) == 0


def test_human_summary_of_an_embed_run():
    text = human_summary(
        {
            "rows_in": 1000,
            "rows_embedded": 990,
            "rows_rejected": 10,
            "rows_truncated": 4,
            "rows_chunked": 0,
            "tokens": 12345,
            "wall_seconds": 10.0,
            "tokens_per_second": 1234.5,
            "padding_efficiency": 0.95,
            "model": "m",
            "pooling": "mean",
            "precision": "int8",
            "output": "s3://b/out",
            "rejects": "s3://b/out/_rejects",
        }
    )
    assert text.splitlines()[0] == "done: 1,000 rows in: 990 embedded, 10 rejected, 4 truncated at model.max_tokens"
    assert "1,234 tokens/s, padding efficiency 95.0%" in text
    assert "output: s3://b/out" in text and "rejects (with reasons): s3://b/out/_rejects" in text


def test_human_summary_of_a_reembed_run():
    """The re-embed summary has no rows_in/tokens_per_second: its rows and speed come from its own keys."""
    summary = {"output": "/o", "rows_embedded": 300, "rows_reused": 20, "rows_rejected": 1, "rows_dropped": 2}
    text = human_summary({**summary, "rows_total": 323, "tokens": 11399, "wall_seconds": 56.2})
    assert text.splitlines()[0] == "done: 300 rows embedded, 20 reused, 1 rejected, 2 dropped; 323 in this version"
    assert "11,399 tokens in 56.2 s (203 tokens/s)" in text
    # with the version's count identity (rows_in = rows_total + rows_rejected_total): still the re-embed line
    text = human_summary({**summary, "rows_total": 323, "rows_in": 330, "rows_rejected_total": 7})
    assert text.splitlines()[0] == (
        "done: 300 rows embedded, 20 reused, 1 rejected, 2 dropped; 323 in this version (330 rows in, 7 rejected)"
    )


def test_human_summary_of_a_resumed_run_names_what_was_reused():
    summary = {"rows": 450, "k": 4, "resumed": True, "stages_reused": ["embed", "fit"], "output": "/o"}
    assert "      reused, not redone: embed, fit" in human_summary(summary).splitlines()
    assert "reused" not in human_summary({**summary, "resumed": False, "stages_reused": []})


def embed_cli(config, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m jobs.embed --config CONFIG` as a user runs it, from the repository root; output captured."""
    cmd = [sys.executable, "-m", "jobs.embed", "--config", str(config)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_unwritable_home_is_one_error_line(tiny_models, tmp_path):
    """With token authentication on, an in-process Ray saves a new token to ~/.ray/auth_token as it starts: a HOME it
    cannot write (a read-only container, a missing home directory) is one `error:` line naming the ways out and exit
    1, not Ray's traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # HOME below a file: not writable, even for root
    config = tmp_path / "c.yaml"
    config.write_text(
        f"input: {{uri: {SAMPLE}, format: jsonl}}\noutput: {{uri: {tmp_path / 'emb'}}}\n"
        f"model: {{name_or_path: {tiny_models['bert']}, max_tokens: 32}}\n"
    )
    keep = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as ray_tmp:  # no shared /tmp/ray/ray_current_cluster
        env = {**keep, "HOME": str(blocker / "home"), "RAY_AUTH_MODE": "token", "RAY_TMPDIR": ray_tmp}
        run = embed_cli(config, env)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr[-3000:]
    assert "auth_token" in errors[0] and "RAY_AUTH_TOKEN_PATH" in errors[0] and "RAY_AUTH_MODE=disabled" in errors[0]


def as_in_a_terminal(cmd: list[str]) -> list[str]:
    """`cmd` started with SIGINT at its default action, as a terminal's foreground command gets it.

    The job keeps an inherited SIG_IGN, as every program does: a shell starts background commands (`cmd &` in a
    script, `nohup`) with SIGINT ignored so that a Ctrl-C meant for the foreground leaves them running. A test suite
    launched that way passes the SIG_IGN on to the job, which then rightly ignores the test's SIGINT. (A `preexec_fn`
    would do the same, but is unsafe in a process with threads.)
    """
    reset = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", reset, *cmd]


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_exit_130_and_the_same_command_resumes(ray_session, tiny_models, tmp_path):
    """SIGINT (twice) once the Dataset runs, in a job that started its own Ray: the shell's 130, one `interrupted:`
    line, no traceback; the rerun finishes, and its stderr is what a user sees of a whole `python -m jobs.embed` in
    its own process (that was a run of its own, test_embed_run_output: one Python + Ray start + job fewer). The
    rerun is the same command on a node of a cluster (RAY_ADDRESS: the session's Ray), not a second Ray start. The
    four small files are one unit (packed), interrupted before it committed, so the rerun embeds every row."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        pq.write_table(pa.Table.from_pylist(RECORDS[i * 40 : (i + 1) * 40]), corpus / f"{i}.parquet")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"input: {{uri: {corpus}, format: parquet, id_column: id}}\noutput: {{uri: {tmp_path / 'emb'}}}\n"
        f"model: {{name_or_path: {tiny_models['bert']}, max_tokens: 32}}\n"
        "batching: {max_tokens_per_batch: 256, rows_per_block: 8}\n"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "jobs.embed", "--config", str(config)]
    job = subprocess.Popen(
        as_in_a_terminal(cmd), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = []
    for line in job.stderr:  # Ray Data's line as the Dataset starts: Ray is up and the model actor starting
        seen.append(line)
        if "Starting execution of Dataset" in line:
            job.send_signal(signal.SIGINT)
            time.sleep(0.2)
            job.send_signal(signal.SIGINT)  # an impatient second Ctrl-C while the first is handled changes nothing
            break
    stderr = "".join(seen) + job.stderr.read()
    assert job.wait(timeout=120) == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert (
        f"interrupted: the embed job stopped; the same command resumes it from what it committed in {tmp_path / 'emb'}"
        in stderr
    )
    rerun = embed_cli(config, {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address})
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert (summary["rows_in"], summary["rows_embedded"]) == (160, 160)
    assert "core_worker.cc" not in rerun.stderr  # Ray's E ... line about actor constructor arguments is absorbed
    assert "0/?" not in rerun.stderr
    assert "progress: 160 / 160 rows (100%), 4 / 4 files" in rerun.stderr
    assert "done: 160 rows in: 160 embedded, 0 rejected" in rerun.stderr
    assert f"output: {tmp_path / 'emb'}" in rerun.stderr
    assert "pooling mean" in rerun.stderr  # model.pooling auto -> the encoder default, shown and recorded


@pytest.mark.slow
def test_a_model_that_does_not_load_in_the_actor_is_one_error_line(ray_session, tiny_models, tmp_path, capsys):
    """Weights that open but do not fit the config (a config.json edited by hand) pass the driver's checks and fail
    in the model actor's constructor: exit 1 and one `error:` line naming the actor and the loader's error, instead
    of an uncaught ActorDiedError. The job's entry point in this process, on the session's Ray: what it prints is
    jobs.common.run_job's (a `python -m jobs.embed` of its own, with a Ray start of its own, proved no more; the
    command-line runs are the Ctrl-C test's and those of test_bad_input_found_in_a_ray_task_is_one_error_line)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_models["bert"], model)
    config_json = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config_json, "intermediate_size": 100}))  # weights have 128
    config = tmp_path / "c.yaml"
    config.write_text(
        f"input: {{uri: {SAMPLE}, format: jsonl}}\noutput: {{uri: {tmp_path / 'emb'}}}\n"
        f"model: {{name_or_path: {model}, max_tokens: 32}}\ncompute: {{max_restarts: 0}}\n"
    )
    assert embed_main(["--config", str(config)]) == 1
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: the EmbedActor actors could not start: "), stderr[-3000:]
    assert "ignore_mismatched_sizes" in errors[0], errors


def test_only_an_actor_that_failed_to_start_is_an_actor_start_failure():
    assert actor_start_failure(ValueError("a bug")) is None
    assert actor_start_failure(RuntimeError("ray.exceptions.ActorDiedError: in the text only")) is None


def test_the_interrupted_line_says_what_the_same_command_does():
    def cfg(overwrite: bool):
        return EmbedConfig.model_validate(
            {"input": {"uri": "/in"}, "output": {"uri": "/out", "overwrite": overwrite}, "model": {"name_or_path": "m"}}
        )

    assert interrupted_line("embed", cfg(False), True).endswith(
        "the same command resumes it from what it committed in /out"
    )
    assert "output.overwrite is true, so the same command starts over" in interrupted_line("embed", cfg(True), True)
    assert "it does not resume" in interrupted_line("some_job", cfg(False), False)


@pytest.mark.parametrize(
    "job, config",
    [
        ("cluster", "input: {uri: /in}\noutput: {uri: /out}\nclustering: {k: 2}\n"),
        (
            "mine_bitext",
            "source: {uri: /a, lang: fra}\ntarget: {uri: /b, lang: eng}\noutput: {uri: /out}\n",
        ),
    ],
)
def test_ctrl_c_in_cluster_and_mining_says_the_same_command_resumes(job, config, tmp_path, monkeypatch, capsys):
    """Both jobs resume an unfinished run of the same configuration, so their interrupted line says so."""
    import importlib

    module = importlib.import_module(f"jobs.{job}")

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run", interrupted)  # what the entrypoint runs (it imports the job's code inside)
    path = tmp_path / "c.yaml"
    path.write_text(config)
    assert module.main(["--config", str(path)]) == 130
    assert capsys.readouterr().err.strip().endswith("the same command resumes it from what it committed in /out")


def test_the_last_progress_line_counts_files_without_rows():
    """Empty files flag no last row: a finished run's last line said `6 / 8 files (75%)`."""
    out = io.StringIO()
    progress = RowProgress(total=None, files=3, interval=0.0, stream=out)
    progress.update(40, files=2)
    progress.all_files_done()
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("progress: 2 / 3 files (67%), 40 rows")
    assert lines[-1].startswith("progress: 3 / 3 files (100%), 40 rows") and len(lines) == 2


@pytest.mark.slow
@pytest.mark.parametrize("case", ["id column missing in the read stage", "wrong text column in the pre-pass"])
def test_bad_input_found_in_a_ray_task_is_one_error_line(ray_session, tiny_models, tmp_path, case):
    """An InputFileError raised in a Ray task reached the user as `error: ray::digest_unit() ... <remote traceback>`,
    after Ray Data's own ~180-line traceback ("Exception occurred in Ray Data or Ray Core internal code ... please
    open an issue") and with its retry advice appended ("if you believe this to be transient"). `python -m
    jobs.embed` in a process of its own, as a user runs it on a node of a cluster: the session's Ray, at its address
    (compute.ray_address), instead of a Ray started for each case (the Ctrl-C test runs the job with a Ray of its
    own)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["one", "two"]}), corpus / "good.parquet")
    (corpus / "c.jsonl").write_text('{"id": "c", "text": "three"}\n')
    if case.startswith("id"):  # (a corrupt file is a reject now: tests/test_bad_input.py)
        pq.write_table(pa.table({"key": ["k"], "text": ["no id"]}), corpus / "noid.parquet")
        expected = "error: noid.parquet: column(s) ['id'] not found; the file has columns ['key', 'text']"
        checks = "unchecked"
    else:
        expected, checks = "error: c.jsonl: no record has the key 'body'", "keep_first"
    text_column = "text" if case.startswith("id") else "body"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"input: {{uri: {corpus}, id_column: id, text_column: {text_column}, duplicate_ids: {checks}}}\n"
        f"output: {{uri: {tmp_path / 'emb'}}}\nmodel: {{name_or_path: {tiny_models['bert']}, max_tokens: 32}}\n"
        f"compute: {{ray_address: '{ray_session.get_runtime_context().gcs_address}'}}\n"
    )
    if not case.startswith("id"):
        (corpus / "good.parquet").unlink()  # the JSONL file alone: its pre-pass task raises
    run = embed_cli(config)  # the session's token (RAY_AUTH_TOKEN_PATH, tests/conftest.py)
    assert run.returncode == 1, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(expected), run.stderr[-3000:]
    if case.startswith("id"):  # among good files, what to do about it
        assert errors[0].endswith("(set input.text_column / input.id_column / output.keep_columns)"), errors[0]
    for noise in ("Traceback", "open an issue", "Unhandled error", "if you believe this to be transient", "ray::"):
        assert noise not in run.stderr, (noise, run.stderr[-3000:])
