"""`rayembed`: run a job here (in-process or on RAY_ADDRESS), submit it to a cluster through the Ray Jobs API, or
print a job's effective configuration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.process_exit import exit_process, write_stdout

JOBS = ("embed", "mine_bitext", "cluster", "reembed")
# Config class of each job, imported only when needed (pydantic models, no Ray).
CONFIGS = {
    "embed": "pipeline.config:EmbedConfig",
    "mine_bitext": "pipeline.mine_config:MineConfig",
    "cluster": "pipeline.cluster_config:ClusterConfig",
    "reembed": "pipeline.reembed.config:ReembedConfig",
}
# What a job never needs on the cluster: environments, built models, VCS data.
UPLOAD_EXCLUDES = [".venv/", ".models/", ".git/", "**/__pycache__/", ".pytest_cache/", "out/"]
KEYS_HELP = """\
Every key of CONFIG, with its default and description: rayembed config show CONFIG
Reference: README.md (section 'The embed job') and docs/. String keys take the text
after the first '=' as is: --set "model.prompt=query: "."""
RAW = argparse.RawDescriptionHelpFormatter


def job_name(text: str) -> str:
    """`mine-bitext` and `mine_bitext` name the same job."""
    name = text.replace("-", "_")
    if name not in JOBS:
        known = ", ".join(j.replace("_", "-") for j in JOBS)
        raise argparse.ArgumentTypeError(f"unknown job {text!r}; choose one of {known}")
    return name


def config_class(job: str):
    module, _, name = CONFIGS[job].partition(":")
    return getattr(importlib.import_module(module), name)


def guess_job(path: str) -> str:
    """The job whose config sections match the file's top-level keys (embed when several do)."""
    from pipeline.config import load_yaml

    keys = set(load_yaml(path))
    for job in ("reembed", "cluster", "mine_bitext"):
        fields = config_class(job).model_fields
        distinct = set(fields) - set(config_class("embed").model_fields)
        if keys & distinct and keys <= set(fields):
            return job
    return "embed"


def other_job_hint(path: str, job: str, overrides: list[str]) -> str:
    """For a config that `job` refused: a line naming the job whose config it is (`configs/reembed.yaml` given to
    `rayembed embed`): the job its sections name (guess_job), when that job's config class takes it whole with the
    same overrides; else ""."""
    from pipeline.config import ConfigError, load_config

    try:
        other = guess_job(path)
        if other == job:
            return ""
        load_config(config_class(other), path, overrides)
    except ConfigError:
        return ""
    command = other.replace("_", "-")
    article = "an" if command[0] in "aeiou" else "a"
    return f"\n  {path} is {article} {command} config: run `rayembed {command} {path}` (python -m jobs.{other} --config {path})"


def load_job_config(config: str, job: str | None, overrides: list[str]) -> tuple[str, Any] | None:
    """(job, its loaded config) for the file `config` (`job` None: guess_job), or None once the config error is
    printed (one `error:` line; the caller exits 2)."""
    from pipeline.config import ConfigError, load_config

    try:
        job = job or guess_job(config)
        return job, load_config(config_class(job), config, overrides)
    except ConfigError as err:
        hint = other_job_hint(config, job, overrides) if job is not None else ""
        print(f"error: {err}{hint}", file=sys.stderr)
        return None


def show_config(config: str, job: str | None, overrides: list[str]) -> int:
    from pipeline.config_show import render_config

    loaded = load_job_config(config, job, overrides)
    if loaded is None:
        return 2
    job, cfg = loaded
    write_stdout(f"# effective configuration of `python -m jobs.{job}` from {config}\n" + render_config(cfg))
    return 0


# Where `ray job submit` and Ray's JobSubmissionClient look for the Jobs API address, first to last.
ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


def submit_address(address: str | None) -> str | None:
    """--address, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS (the variables `ray job submit` reads)."""
    return address or next((os.environ[v] for v in ADDRESS_VARS if os.environ.get(v)), None)


@contextlib.contextmanager
def address_only(address: str) -> Iterator[None]:
    """Hide RAY_API_SERVER_ADDRESS and RAY_ADDRESS while a JobSubmissionClient is made: Ray's client lets them
    override its `address` argument, so `--address` would lose to a variable left in the shell (or set by a Ray
    job). `address` may be http(s)://host:8265, host:port, `auto` or ray://host:10001 (Ray converts the last three)."""
    saved = {v: os.environ.pop(v) for v in ADDRESS_VARS if v in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def stream_logs(client, job_id: str) -> None:
    """Print the job's logs as they come (Ray's `tail_job_logs`), until the job ends."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            write_stdout(lines)  # a reader that stops early (`| head`) ends the copy, not the wait for the job

    asyncio.run(tail())


def job_runtime_env(extra: dict | None) -> dict:
    """The submitted job's runtime_env: the current directory as working_dir (without UPLOAD_EXCLUDES), plus the
    user's `--runtime-env-json` / `--runtime-env` fields (env_vars, pip, ...; their `excludes` are added to ours).

    Raises:
        ValueError: `extra` sets working_dir (the config is checked against the current directory, which is what
            gets uploaded: run from the directory to upload instead).
    """
    extra = dict(extra or {})
    if "working_dir" in extra:
        raise ValueError(
            "the runtime env sets working_dir: rayembed submit uploads the current directory (the config is checked "
            "against it); run it from the directory to upload"
        )
    excludes = [*UPLOAD_EXCLUDES, *extra.pop("excludes", [])]
    return {"working_dir": ".", **extra, "excludes": excludes}


def read_runtime_env(text: str | None, path: str | None) -> dict | None:
    """`--runtime-env-json TEXT` or `--runtime-env FILE` (YAML), as `ray job submit` takes them.

    Raises:
        ValueError: both given, unreadable or invalid JSON/YAML, or not a mapping (the message says which).
    """
    import json

    import yaml

    if text is not None and path is not None:
        raise ValueError("give --runtime-env-json or --runtime-env, not both")
    try:
        value = json.loads(text) if text is not None else yaml.safe_load(Path(path).read_text()) if path else None
    except (OSError, ValueError, yaml.YAMLError) as err:
        where = "--runtime-env-json" if text is not None else f"--runtime-env {path}"
        raise ValueError(f"{where}: {str(err).splitlines()[0]}") from err
    if value is not None and not isinstance(value, dict):
        raise ValueError(f'the runtime env must be a mapping such as {{"env_vars": {{...}}}}, not {value!r}')
    return value


def submit(
    job: str | None,
    config: str,
    address: str | None,
    overrides: list[str],
    wait: bool,
    python: str = "python",
    runtime_env: dict | None = None,
    entrypoint: dict | None = None,
) -> int:
    """Submit `<python> -m jobs.<job>` with the current directory as the job's working directory.

    `entrypoint`: what the job's driver reserves, as `ray job submit --entrypoint-num-cpus/-num-gpus/-memory/
    -resources` give it (`entrypoint_num_cpus`, `entrypoint_num_gpus`, `entrypoint_memory` bytes,
    `entrypoint_resources`: Ray's submit_job keywords); none: the driver reserves nothing and runs on the head.

    `job` None: guessed from the config's sections (guess_job). The config is loaded here first, so a config error,
    an output on a relative local path (it would land in the cluster's temporary copy of this directory) or a
    relative local input the upload does not carry is exit 2 before anything is uploaded
    (pipeline.cluster_paths). This machine's AWS configuration is not read (the job's driver reads its own node's);
    an AWS variable set here that the job would not get is named in a note (pipeline.s3_submit).

    `runtime_env`: more runtime_env fields for the job (job_runtime_env), e.g. {"env_vars": {"HF_HUB_OFFLINE": "1"}}.

    Returns 0 when the job succeeded (or was submitted, with wait=False); the job's own exit status when it failed
    with one (2 config error, 3 another run holds the output's lease, ...), else 1 (stopped, or the cluster cannot be
    reached, or the connection was lost while following the logs); 2 for a usage or config error here, 130 when
    Ctrl-C stopped the following of the logs (the job runs on). Every error is one line on stderr.
    """
    from pipeline.cluster_paths import cluster_path_errors

    address = submit_address(address)
    if not address:
        print(
            "error: no Ray address: pass --address http://HEAD:8265 or set RAY_ADDRESS (or RAY_API_SERVER_ADDRESS)",
            file=sys.stderr,
        )
        return 2
    root = Path.cwd()
    try:
        rel = Path(config).resolve().relative_to(root.resolve())
    except ValueError:
        print(
            f"error: {config} must be inside the current directory, which is uploaded as the job's working dir",
            file=sys.stderr,
        )
        return 2
    from pipeline.config import aws_configuration_read_elsewhere
    from pipeline.s3_submit import credentials_left_behind, credentials_note, left_behind, left_behind_note

    with aws_configuration_read_elsewhere():  # the job's driver reads its own node's AWS configuration
        loaded = load_job_config(config, job, overrides)
    if loaded is None:
        return 2
    job, cfg = loaded
    try:
        env = job_runtime_env(runtime_env)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problems = cluster_path_errors(cfg, root, env["excludes"])
    if problems:
        print(f"error: {config}: {problems[0]}", file=sys.stderr)
        return 2
    if found := left_behind(cfg, env.get("env_vars")):
        write_stdout(left_behind_note(found) + "\n")
    if names := credentials_left_behind(cfg, env.get("env_vars")):
        write_stdout(credentials_note(names) + "\n")
    from ray.exceptions import RayError
    from ray.job_submission import JobSubmissionClient

    args = [python, "-m", f"jobs.{job}", "--config", str(rel), *[a for o in overrides for a in ("--set", o)]]
    try:
        with address_only(address):
            client = JobSubmissionClient(address)
        job_id = client.submit_job(entrypoint=shlex.join(args), runtime_env=env, **(entrypoint or {}))
    except (ConnectionError, OSError, RuntimeError, ValueError, RayError) as err:  # RayError: e.g. a missing token
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: cannot submit to the Ray cluster at {address}: {reason}", file=sys.stderr)
        return 1
    write_stdout(f"submitted {job_id}: {shlex.join(args)}\n")
    if not wait:
        return 0
    import aiohttp  # Ray's Jobs client follows the logs over it

    try:
        stream_logs(client, job_id)
        info = client.get_job_info(job_id)
    except KeyboardInterrupt:  # Ctrl-C stops the following, not the job
        print(
            f"interrupted: stopped following job {job_id}, which keeps running on the cluster; "
            f"`ray job logs --follow {job_id}` follows it again, `ray job stop {job_id}` stops it",
            file=sys.stderr,
        )
        return 130
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, RuntimeError, ValueError, RayError) as err:
        # a dropped `kubectl port-forward`, a restarted head or proxy: the job itself may well run on
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(
            f"error: lost the Ray cluster at {address} while following job {job_id}: {reason}. The job may still be "
            f"running: `ray job status {job_id}` says, `ray job logs --follow {job_id}` follows it again",
            file=sys.stderr,
        )
        return 1
    write_stdout(f"job {job_id} finished: {info.status}\n")
    return job_exit_status(info.status, info.driver_exit_code)


def job_exit_status(status: str, driver_exit_code: int | None) -> int:
    """Our exit status for a finished job: 0 when it succeeded, the entrypoint's own non-zero status when it has one
    (so a scheduler tells `jobs.reembed`'s 3, lease held, from a failure), else 1."""
    if str(status) == "SUCCEEDED":
        return 0
    return driver_exit_code if driver_exit_code not in (None, 0) and 0 < driver_exit_code < 256 else 1


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")


def add_config(p: argparse.ArgumentParser, help: str = "YAML config file") -> None:
    """The config file as `CONFIG` or `--config CONFIG`: `rayembed embed` and `python -m jobs.embed` take either,
    so the form one learned from the other works (config_path reads it)."""
    p.add_argument("config", nargs="?", default=None, help=help)
    p.add_argument("--config", dest="config_flag", default=None, metavar="CONFIG", help="the same, as an option")


def config_path(p: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The config file given either way (add_config); a usage error (exit 2) when none, or two different ones."""
    given = {c for c in (args.config, args.config_flag) if c is not None}
    if not given:
        p.error("a config file is required: CONFIG or --config CONFIG")
    if len(given) > 1:
        p.error(f"two config files given: {args.config} and --config {args.config_flag}")
    return given.pop()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rayembed", description=__doc__, epilog=KEYS_HELP, formatter_class=RAW)
    sub = top.add_subparsers(dest="command", required=True)
    for job in JOBS:
        # `rayembed mine_bitext` as `python -m jobs.mine_bitext` and `--job mine_bitext` spell it: was "invalid choice"
        aliases = [job] if "_" in job else []
        p = sub.add_parser(
            job.replace("_", "-"), aliases=aliases, help=f"run jobs.{job} here", epilog=KEYS_HELP, formatter_class=RAW
        )
        add_config(p)
        add_set(p)
        p.set_defaults(parser=p)  # usage errors name the subcommand
        p.add_argument(
            "--show-config", action="store_true", help="print the effective configuration (defaults included) and exit"
        )
    jobs = "|".join(j.replace("_", "-") for j in JOBS)
    p = sub.add_parser(
        "submit", help="submit a job to a Ray cluster (Ray Jobs API)", epilog=KEYS_HELP, formatter_class=RAW
    )
    add_config(p, "YAML config file, inside the current directory (uploaded as the working dir)")
    p.set_defaults(parser=p)
    p.add_argument(
        "--job", type=job_name, default=None, metavar=jobs, help="the job to run (default: guessed from the sections)"
    )
    p.add_argument(
        "--address", default=None, help="Ray dashboard address, e.g. http://head:8265 (default: $RAY_ADDRESS)"
    )
    add_set(p)
    waiting = p.add_mutually_exclusive_group()
    waiting.add_argument(
        "--wait", dest="no_wait", action="store_false", help="stream the logs and exit with the job's status (default)"
    )
    waiting.add_argument(
        "--no-wait", dest="no_wait", action="store_true", help="return after submitting instead of streaming the logs"
    )
    p.set_defaults(no_wait=False)
    p.add_argument(
        "--runtime-env-json",
        default=None,
        metavar="JSON",
        help='more runtime_env fields, as for ray job submit, e.g. \'{"env_vars": {"HF_HUB_OFFLINE": "1"}}\'',
    )
    p.add_argument("--runtime-env", default=None, metavar="FILE", help="the same from a YAML file")
    add_entrypoint_resources(p)
    p = sub.add_parser("config", help="configuration tools")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    p = config_sub.add_parser(
        "show", help="print the effective configuration: every key with its value, default and description"
    )
    add_config(p)
    p.set_defaults(parser=p)
    p.add_argument("--job", type=job_name, default=None, metavar=jobs, help="default: guessed from the sections")
    add_set(p)
    return top


def add_entrypoint_resources(p: argparse.ArgumentParser) -> None:
    """`ray job submit`'s options for what the job's driver reserves; unset: nothing (it runs on the head)."""
    p.add_argument("--entrypoint-num-cpus", type=float, default=None, metavar="N", help="CPUs the driver reserves")
    p.add_argument("--entrypoint-num-gpus", type=float, default=None, metavar="N", help="GPUs the driver reserves")
    p.add_argument("--entrypoint-memory", type=int, default=None, metavar="BYTES", help="memory the driver reserves")
    p.add_argument(
        "--entrypoint-resources",
        type=resources_json,
        default=None,
        metavar="JSON",
        help="custom resources the driver reserves, e.g. '{\"head\": 1}'",
    )


def resources_json(text: str) -> dict[str, float]:
    """`--entrypoint-resources`: a JSON object of resource names to amounts (argparse reports the ValueError)."""
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
        raise ValueError(text)
    return {str(k): float(v) for k, v in value.items()}


def entrypoint_options(args: argparse.Namespace) -> dict:
    """Ray's submit_job keywords for the `--entrypoint-*` options given."""
    names = ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory", "entrypoint_resources")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = config_path(args.parser, args)
    if args.command == "submit":
        try:
            runtime_env = read_runtime_env(args.runtime_env_json, args.runtime_env)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return submit(
            args.job,
            config,
            args.address,
            args.set,
            not args.no_wait,
            runtime_env=runtime_env,
            entrypoint=entrypoint_options(args),
        )
    job = args.command.replace("-", "_")
    if args.command == "config" or args.show_config:
        return show_config(config, args.job if args.command == "config" else job, args.set)
    module = importlib.import_module(f"jobs.{job}")
    return module.main(["--config", config, *[a for o in args.set for a in ("--set", o)]])


def console_main() -> None:
    """The `rayembed` command (pyproject's console script): main(), then the job process's quick exit."""
    exit_process(main())


if __name__ == "__main__":
    console_main()
