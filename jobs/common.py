"""Shared command-line handling for the job entrypoints."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from pipeline.cli import add_config, config_path, other_job_hint
from pipeline.cluster_paths import in_uploaded_working_dir, local_outputs_on_a_cluster, relative_outputs
from pipeline.config import ConfigError, load_config
from pipeline.config_show import render_config
from pipeline.errors import (
    LeaseHeldError,
    UserError,
    actor_start_failure,
    quiet_user_error_tracebacks,
    udf_errors_as_themselves,
    user_error_in,
    user_message,
)
from pipeline.process_exit import interrupt_on_sigterm, interrupt_status, sigint_ignored, write_stdout
from pipeline.run_summary import human_summary
from pipeline.s3_tls import tls_failure

LEASE_HELD = 3  # exit status when another run holds the output's lease

KEYS_HELP = """\
Every key of CONFIG, with its default and description: rayembed config show CONFIG
(or --show-config); reference: README.md (section 'The embed job') and docs/.
Override any key with --set section.key=value; string keys take the text after
the first '=' as is: --set "model.prompt=query: "."""


def job_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The parser of `python -m jobs.<name>`; its usage line names the job, not `<name>.py`."""
    parser = argparse.ArgumentParser(
        prog=f"python -m jobs.{name}",
        description=description,
        epilog=KEYS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(parser)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    parser.add_argument(
        "--show-config", action="store_true", help="print the effective configuration (defaults included) and exit"
    )
    return parser


def interrupted_line(name: str, cfg: Any, resumable: bool) -> str:
    """What an interrupted run leaves and what the same command then does, in one line."""
    output = cfg.output.uri
    if not resumable:
        return (
            f"interrupted: the {name} job stopped; it does not resume, and {output} holds no finished run (no "
            "_SUCCESS): run it again with --set output.overwrite=true"
        )
    if getattr(cfg.output, "overwrite", False):
        return (
            f"interrupted: the {name} job stopped; output.overwrite is true, so the same command starts over; with "
            f"--set output.overwrite=false it resumes from what it committed in {output}"
        )
    return f"interrupted: the {name} job stopped; the same command resumes it from what it committed in {output}"


def ca_bundle(cfg: Any) -> str | None:
    """The CA bundle the job's S3 clients used (storage.ca_bundle, as filled on the driver), for a TLS failure's
    message."""
    return getattr(getattr(cfg, "storage", None), "ca_bundle", None)


def run_job(
    description: str,
    config_model: type[BaseModel],
    run: Callable[[Any], dict],
    argv: list[str] | None,
    name: str | None = None,
    resumable: bool = False,
) -> int:
    """Parse `--config FILE --set a.b=c`, run, print the summary as JSON (stdout) and in words (stderr).

    Config errors exit 2 (an output on a relative local path too, in a Ray job run from an uploaded working_dir:
    pipeline.cluster_paths) and input/model errors exit 1 (an actor pool that cannot start too), each with its message
    and no traceback; another run holding the output's lease (pipeline.lease) exits 3. An interrupt (Ctrl-C, SIGINT) exits 130, the shell's status for it, with one line instead of a
    traceback that says what a rerun does (interrupted_line; `resumable`: the job resumes an unfinished run of the
    same configuration); a second Ctrl-C while that line is printed changes nothing. SIGTERM does the same and exits
    143 (pipeline.process_exit.interrupt_on_sigterm).
    """
    name = name or run.__module__.rsplit(".", 1)[-1].removesuffix("_job")
    parser = job_parser(name, description)
    args = parser.parse_args(argv)
    args.config = config_path(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config_model, args.config, args.set)
    except ConfigError as err:
        print(f"error: {err}{other_job_hint(args.config, name, args.set)}", file=sys.stderr)
        return 2
    if args.show_config:
        write_stdout(render_config(cfg))  # a reader that stops early (`| head`) is no error
        return 0
    lost = relative_outputs(cfg) if in_uploaded_working_dir() else []
    if lost:  # a Ray job run from an uploaded working_dir: its output would land in the cluster's temporary copy
        print(f"error: {args.config}: {lost[0]}", file=sys.stderr)
        return 2
    compute = getattr(cfg, "compute", None)
    for warning in local_outputs_on_a_cluster(cfg, getattr(compute, "ray_address", None)):
        logging.getLogger("jobs").warning(warning)
    quiet_user_error_tracebacks()
    udf_errors_as_themselves()
    interrupt_on_sigterm()  # SIGTERM (a pod evicted, `ray job stop`, `kill`) is handled as Ctrl-C, exit 143
    try:
        summary = run(cfg)
    except LeaseHeldError as err:  # another run is writing the output: a scheduler may count 3 as "skipped"
        print(f"error: {err}", file=sys.stderr)
        return LEASE_HELD
    except (UserError, FileNotFoundError, FileExistsError) as err:
        # the other tasks of the step that failed (one per file) often raise the same error: said once is enough
        os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
        print(f"error: {tls_failure(err, ca_bundle(cfg)) or user_message(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        # an S3 request that failed its TLS handshake, from either client, on the driver or in a task: what to set
        if (tls := tls_failure(err, ca_bundle(cfg))) is not None:
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
            print(f"error: {tls}", file=sys.stderr)
            return 1
        if user_error_in(err) is not None:  # raised in a Ray Data UDF: wrapped in Ray Data's UserCodeException
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
            print(f"error: {user_message(err)}", file=sys.stderr)
            return 1
        failure = actor_start_failure(err)  # a model the actors cannot load: one line, not Ray Data's traceback
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Terminated)
        with sigint_ignored():
            print(interrupted_line(name, cfg, resumable), file=sys.stderr)
        return interrupt_status(err)
    # The run is done and committed: a reader of stdout that stops early (`| head -1`) cuts only this copy of the
    # summary, which is also in the output's _summary.json; the human summary still goes to stderr.
    write_stdout(json.dumps(summary, indent=2) + "\n")
    print(human_summary(summary), file=sys.stderr)
    return 0
