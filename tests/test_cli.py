"""The command line: help, `config show`, job names, submit's address handling (no cluster needed here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from conftest import REPO

from pipeline import cli
from pipeline.config import EmbedConfig, load_config


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_job_help_names_the_job_and_where_keys_are():
    out = run_module("-m", "jobs.mine_bitext", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m jobs.mine_bitext ")
    assert "rayembed config show CONFIG" in out.stdout


def test_rayembed_help_says_where_keys_are_documented(capsys):
    with pytest.raises(SystemExit):
        cli.main(["embed", "--help"])
    assert "rayembed config show CONFIG" in capsys.readouterr().out


def test_config_show_prints_defaults_and_descriptions(capsys):
    assert cli.main(["config", "show", "configs/quickstart.yaml", "--set", "model.prompt=query: "]) == 0
    text = capsys.readouterr().out
    assert '  prompt: "query: "  # default: null' in text
    assert "# How token states become one vector" in text  # descriptions
    assert "  num_tokenizers: 1" in text  # defaults not in the file
    # the output is itself a valid config with the same values
    shown = yaml.safe_load(text)
    cfg = load_config(EmbedConfig, "configs/quickstart.yaml", ["model.prompt=query: "])
    assert EmbedConfig.model_validate(shown) == cfg


@pytest.mark.parametrize(
    "path, job",
    [
        ("configs/mine_bitext.yaml", "mine_bitext"),
        ("configs/cluster.yaml", "cluster"),
        ("configs/reembed.yaml", "reembed"),
        ("configs/embed.yaml", "embed"),
    ],
)
def test_config_show_guesses_the_job(path, job, capsys):
    assert cli.main(["config", "show", path]) == 0
    assert f"jobs.{job}`" in capsys.readouterr().out.splitlines()[0]


def test_config_show_bad_key_exits_2(capsys):
    assert cli.main(["config", "show", "configs/quickstart.yaml", "--set", "model.poolng=mean"]) == 2
    assert "did you mean pooling?" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, other",
    [
        (["embed", "configs/reembed.yaml"], "a reembed"),
        (["cluster", "configs/embed.yaml"], "an embed"),
        (["mine-bitext", "configs/cluster.yaml"], "a cluster"),
        (["reembed", "configs/mine_bitext.yaml"], "a mine-bitext"),
        (["config", "show", "configs/reembed.yaml", "--job", "embed"], "a reembed"),
    ],
)
def test_another_jobs_config_says_which_job_it_is_for(argv, other, capsys):
    """`rayembed embed configs/reembed.yaml` listed the keys the embed job does not know ('reembed: Extra inputs are
    not permitted') and left the user to guess; a line now names the job whose config it is and its command."""
    *_, path = [a for a in argv if a.endswith(".yaml")]
    job = other.split()[1]
    assert cli.main([*argv, "--show-config"] if argv[0] != "config" else argv) == 2
    err = capsys.readouterr().err
    assert f"{path} is {other} config: run `rayembed {job} {path}`" in err


def test_a_config_of_the_right_job_with_an_error_gets_no_other_job_line(capsys):
    assert cli.main(["embed", "configs/quickstart.yaml", "--set", "model.poolng=mean", "--show-config"]) == 2
    assert "did you mean pooling?" in (err := capsys.readouterr().err) and "config: run" not in err


def test_a_config_directory_is_named_as_one(capsys):
    """`rayembed embed configs/` said 'config file configs does not exist'."""
    assert cli.main(["embed", "configs/", "--show-config"]) == 2
    assert (
        "config file configs is a directory; give one YAML file in it (cluster.yaml, embed.yaml"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("name", ["mine-bitext", "mine_bitext"])
def test_job_names_take_dashes(name):
    args = cli.parser().parse_args(["submit", "c.yaml", "--job", name, "--address", "http://x:1"])
    assert args.job == "mine_bitext"


@pytest.mark.parametrize("name", ["mine-bitext", "mine_bitext"])
def test_the_job_subcommand_takes_the_module_name_too(name, capsys):
    """`rayembed mine_bitext CONFIG`, the job as `python -m jobs.mine_bitext` names it, was argparse's "invalid
    choice: 'mine_bitext'"; `--job` took it."""
    assert cli.main([name, "configs/mine_bitext.yaml", "--show-config", "--set", "mining.k=7"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# effective configuration of `python -m jobs.mine_bitext`") and "  k: 7  # default" in out


def test_unknown_job_lists_the_names(capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["submit", "c.yaml", "--job", "mine"])
    assert "choose one of embed, mine-bitext, cluster, reembed" in capsys.readouterr().err


def test_submit_without_address_or_ray_address(monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    assert cli.main(["submit", "configs/quickstart.yaml"]) == 2
    assert "pass --address http://HEAD:8265 or set RAY_ADDRESS" in capsys.readouterr().err


def test_submit_unreachable_address_is_one_line(monkeypatch, capsys):
    from conftest import free_port

    address = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)  # the fallback `ray job submit` users expect
    monkeypatch.chdir(REPO)
    assert cli.main(["submit", "configs/quickstart.yaml", "--job", "embed", "--set", "output.uri=s3://b/q"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot submit to the Ray cluster at {address}")
    assert "Traceback" not in captured.err + captured.out


def test_job_show_config(capsys):
    from jobs.embed import main

    assert main(["--config", "configs/quickstart.yaml", "--show-config", "--set", "output.dimensions=256"]) == 0
    text = capsys.readouterr().out
    assert "  dimensions: 256  # default: null" in text and '  pooling: "auto"' in text


@pytest.mark.parametrize(
    "argv",
    [
        ["embed", "configs/quickstart.yaml", "--show-config"],  # rayembed's positional form
        ["embed", "--config", "configs/quickstart.yaml", "--show-config"],  # the form python -m jobs.embed taught
        ["config", "show", "--config", "configs/quickstart.yaml"],
    ],
)
def test_rayembed_takes_the_config_either_way(argv, capsys):
    assert cli.main([*argv, "--set", "output.dimensions=128"]) == 0
    assert "  dimensions: 128  # default: null" in capsys.readouterr().out


def test_job_module_takes_the_config_as_a_positional_too(capsys):
    from jobs.embed import main

    assert main(["configs/quickstart.yaml", "--show-config"]) == 0
    assert '  pooling: "auto"' in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["embed"], "a config file is required: CONFIG or --config CONFIG"),
        (["embed", "a.yaml", "--config", "b.yaml"], "two config files given: a.yaml and --config b.yaml"),
    ],
)
def test_config_file_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: rayembed embed") and message in err


def unreachable() -> str:
    from conftest import free_port

    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("variable", ["RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"])
def test_submit_address_flag_wins_over_the_environment_which_is_read_as_ray_reads_it(variable, monkeypatch, capsys):
    """Ray's JobSubmissionClient lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override its address argument: --address
    was ignored whenever the shell had one. Without --address, RAY_API_SERVER_ADDRESS is used (it was 'no address')."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    flag, env = unreachable(), unreachable()
    monkeypatch.setenv(variable, env)
    assert cli.main(["submit", "configs/embed.yaml", "--address", flag]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot submit to the Ray cluster at {flag}") and env not in err, err
    assert cli.main(["submit", "configs/embed.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot submit to the Ray cluster at {env}"), err


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        (
            "configs/quickstart.yaml",
            [],
            "output.uri 'out/quickstart' is a path relative to the job's working directory",
        ),
        (
            "configs/cluster.yaml",
            ["input.uri=out/embeddings"],
            "input.uri 'out/embeddings' is below out/, which is not",
        ),
        ("configs/mine_bitext.yaml", ["source.uri=../fra.txt"], "source.uri '../fra.txt' is outside"),
        ("configs/embed.yaml", ["input.uri=data/nowhere"], "input.uri 'data/nowhere' does not exist in"),
        (  # each location of a list: the check skipped lists
            "configs/embed.yaml",
            ["input.uri=[configs, data/nowhere]"],
            "input.uri[1] 'data/nowhere' does not exist in",
        ),
        (
            "configs/reembed.yaml",
            ["model.name_or_path=.models/e5"],
            "model.name_or_path '.models/e5' is below .models/",
        ),
        ("configs/embed.yaml", ["model.poolng=mean"], "did you mean pooling?"),
    ],
)
def test_submit_refuses_what_cannot_work_on_a_cluster_before_uploading(
    config, overrides, message, tmp_path, monkeypatch, capsys
):
    """A relative local output lands in the cluster's temporary copy of the working dir (spread over nodes, then
    deleted), and a relative input or model the upload does not carry is not there: exit 2 naming the key, before
    any upload (the address is unreachable: the old code answered 1, 'cannot submit', or submitted the job)."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / ".models" / "e5").mkdir(parents=True)  # a model directory here, below a folder never uploaded
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", unreachable())
    sets = [a for o in overrides for a in ("--set", o)]
    assert cli.main(["submit", config, *sets]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}") and message in err, err


def test_submit_takes_a_relative_input_that_is_uploaded_and_guesses_the_job(monkeypatch, capsys):
    """data/sample is uploaded with the working dir; with no --job the sections pick it (jobs.embed ran a cluster or
    reembed config before)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("RAY_ADDRESS", unreachable())
    args = ["submit", "configs/quickstart.yaml", "--set", "output.uri=s3://bucket/q"]
    assert cli.main(args) == 1  # past every local check: only the cluster is missing
    assert "cannot submit to the Ray cluster" in capsys.readouterr().err
    for config, job in (("configs/reembed.yaml", "reembed"), ("configs/cluster.yaml", "cluster")):
        assert cli.guess_job(str(REPO / config)) == job


@pytest.mark.parametrize(
    ("status", "code", "rc"),
    [("SUCCEEDED", 0, 0), ("FAILED", 2, 2), ("FAILED", 3, 3), ("FAILED", None, 1), ("STOPPED", -15, 1)],
)
def test_submit_exits_with_the_job_entrypoints_status(status, code, rc):
    """A scheduler tells jobs.reembed's 3 (lease held: another run does the work) and a config error's 2 from a
    failure; it got 1 for every failed job."""
    assert cli.job_exit_status(status, code) == rc


def test_a_ray_job_from_an_uploaded_working_dir_refuses_a_relative_output(monkeypatch, capsys):
    """`ray job submit --working-dir . -- python -m jobs.embed --config configs/quickstart.yaml`: the output would be
    written inside Ray's temporary copy of the working dir; the driver says so (exit 2) before Ray starts."""
    import json

    from jobs import embed

    monkeypatch.chdir(REPO)
    job_config = {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123456789abcdef.zip"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job_config))
    assert embed.main(["--config", "configs/quickstart.yaml"]) == 2
    err = capsys.readouterr().err
    assert "output.uri 'out/quickstart' is a path relative to the job's working directory" in err


def test_submit_takes_a_runtime_env_as_ray_job_submit_does(tmp_path, monkeypatch, capsys):
    """`--runtime-env-json` / `--runtime-env FILE` (ray job submit's flags) add env_vars, pip, excludes to the job's
    runtime_env; they were a usage error. The working dir stays the current directory, the one the config is
    checked against; a bad value is one error line, exit 2."""
    env = cli.job_runtime_env({"env_vars": {"HF_HUB_OFFLINE": "1"}, "excludes": ["data/big/"]})
    assert env["working_dir"] == "." and env["env_vars"] == {"HF_HUB_OFFLINE": "1"}
    assert env["excludes"] == [*cli.UPLOAD_EXCLUDES, "data/big/"]
    assert cli.read_runtime_env('{"env_vars": {"A": "1"}}', None) == {"env_vars": {"A": "1"}}
    (tmp_path / "env.yaml").write_text("env_vars:\n  A: '1'\n")
    assert cli.read_runtime_env(None, str(tmp_path / "env.yaml")) == {"env_vars": {"A": "1"}}
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("RAY_ADDRESS", unreachable())
    quick = ["submit", "configs/quickstart.yaml", "--set", "output.uri=s3://b/q"]
    for extra, message in (
        (["--runtime-env-json", "{env_vars"], "error: --runtime-env-json: "),
        (["--runtime-env-json", "[1]"], "error: the runtime env must be a mapping"),
        (["--runtime-env-json", '{"working_dir": "/x"}'], "error: the runtime env sets working_dir"),
        (["--runtime-env", str(tmp_path / "none.yaml")], f"error: --runtime-env {tmp_path / 'none.yaml'}: "),
    ):
        assert cli.main([*quick, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    # an input the user's own excludes keep out of the upload is named, as for ours
    args = [*quick, "--runtime-env-json", '{"excludes": ["data/"]}']
    assert cli.main(args) == 2
    assert "input.uri 'data/sample/sib200_sample.jsonl' is below data/" in capsys.readouterr().err
    assert (
        cli.main([*quick, "--runtime-env-json", '{"env_vars": {"A": "1"}}']) == 1
    )  # valid: only the cluster is missing


class HeadLostWhileFollowing(BaseHTTPRequestHandler):
    """The Jobs API as a head behind a proxy that loses it after the submit (a dropped `kubectl port-forward`):
    version and submit answer as Ray 2.60's dashboard does, the log stream's upgrade gets a 502."""

    def reply(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/api/version":
            return self.reply(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x", "session_name": "s"})
        if self.path.startswith("/api/packages/"):
            return self.reply(200)  # the working dir is already there: no upload
        return self.reply(502, {"error": "upstream connect error"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        return self.reply(200, {"job_id": "raysubmit_lost", "submission_id": "raysubmit_lost"})

    def log_message(self, *args):
        pass


def test_submit_that_loses_the_cluster_while_following_is_one_line(monkeypatch, capsys):
    """`rayembed submit` (waiting) through a port-forward that drops: the log stream's error was a traceback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), HeadLostWhileFollowing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        rc = cli.main(["submit", "configs/quickstart.yaml", "--set", "output.uri=s3://b/q", "--address", address])
    finally:
        server.shutdown()
    captured = capsys.readouterr()
    assert rc == 1 and "submitted raysubmit_lost" in captured.out
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith(f"error: lost the Ray cluster at {address} while following job raysubmit_lost: ")
    assert "ray job logs --follow raysubmit_lost" in lines[-1] and "WSServerHandshakeError" not in captured.err


def test_a_local_output_on_a_ray_cluster_is_a_warning_naming_the_key(monkeypatch):
    """A job connecting to a cluster (a submitted job's driver always has RAY_ADDRESS) with output.uri on local disk:
    each node's write tasks write to their own disk, silently. Now a warning names the key (not an error: a shared
    mount is valid); none for object storage or Ray in this process."""
    from pipeline.cluster_paths import local_outputs_on_a_cluster

    cfg = load_config(EmbedConfig, str(REPO / "configs" / "quickstart.yaml"), ["output.uri=/data/emb"])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert local_outputs_on_a_cluster(cfg, None) == []
    (warning,) = local_outputs_on_a_cluster(cfg, "10.0.0.1:6379")
    assert warning.startswith("output.uri '/data/emb' is a local path and the job runs on the Ray cluster at 10.0")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert len(local_outputs_on_a_cluster(cfg, None)) == 1
    on_s3 = load_config(EmbedConfig, str(REPO / "configs" / "embed.yaml"), [])
    assert local_outputs_on_a_cluster(on_s3, None) == []


def test_submit_takes_wait_as_well_as_no_wait(capsys):
    """`--wait` (the default, as other tools spell it) was 'unrecognized arguments', exit 2."""
    assert cli.parser().parse_args(["submit", "c.yaml", "--wait"]).no_wait is False
    assert cli.parser().parse_args(["submit", "c.yaml", "--no-wait"]).no_wait is True
    assert cli.parser().parse_args(["submit", "c.yaml"]).no_wait is False
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["submit", "c.yaml", "--wait", "--no-wait"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_submit_takes_ray_job_submits_entrypoint_resources(capsys):
    """`--entrypoint-num-cpus/-num-gpus/-memory/-resources`, as `ray job submit` takes them (the driver on a GPU
    node, or off a head that has num-cpus 0), were 'unrecognized arguments', exit 2; they reach the Jobs API's
    submit_job (test_ray_jobs_api::test_submit_embed_job submits with entrypoint_num_cpus, which Ray takes)."""
    args = cli.parser().parse_args(
        ["submit", "c.yaml", "--entrypoint-num-cpus", "1", "--entrypoint-num-gpus", "0.5"]
        + ["--entrypoint-memory", "2000000000", "--entrypoint-resources", '{"head": 1}']
    )
    assert cli.entrypoint_options(args) == {
        "entrypoint_num_cpus": 1.0,
        "entrypoint_num_gpus": 0.5,
        "entrypoint_memory": 2000000000,
        "entrypoint_resources": {"head": 1.0},
    }
    assert cli.entrypoint_options(cli.parser().parse_args(["submit", "c.yaml"])) == {}  # nothing reserved
    for bad in ('["head"]', '{"head": "one"}', "{head: 1"):
        with pytest.raises(SystemExit):
            cli.parser().parse_args(["submit", "c.yaml", "--entrypoint-resources", bad])
        assert "invalid resources_json value" in capsys.readouterr().err
