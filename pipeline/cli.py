"""`rayembed`: run a job here (in-process or on RAY_ADDRESS), or submit it to a cluster through the Ray Jobs API."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from pathlib import Path

JOBS = ("embed", "mine_bitext", "cluster", "reembed")
# What a job never needs on the cluster: environments, built models, VCS data.
UPLOAD_EXCLUDES = [".venv/", ".models/", ".git/", "**/__pycache__/", ".pytest_cache/", "out/"]


def submit(job: str, config: str, address: str, overrides: list[str], wait: bool) -> int:
    """Submit `python -m jobs.<job>` with the current directory as the job's working directory."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    cfg = Path(config).resolve()
    try:
        rel = cfg.relative_to(Path.cwd())
    except ValueError:
        print(f"error: {config} must be inside the current directory, which is uploaded as the job's working dir")
        return 2
    args = ["python", "-m", f"jobs.{job}", "--config", str(rel), *[a for o in overrides for a in ("--set", o)]]
    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=shlex.join(args), runtime_env={"working_dir": ".", "excludes": UPLOAD_EXCLUDES}
    )
    print(f"submitted {job_id}: {shlex.join(args)}")
    if not wait:
        return 0
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        time.sleep(2)
    print(client.get_job_logs(job_id), end="")
    print(f"job {job_id} finished: {status}")
    return 0 if status == JobStatus.SUCCEEDED else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayembed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for job in JOBS:
        p = sub.add_parser(job.replace("_", "-"), help=f"run jobs.{job} here")
        p.add_argument("config")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p = sub.add_parser("submit", help="submit a job to a Ray cluster (Ray Jobs API)")
    p.add_argument("config")
    p.add_argument("--job", choices=JOBS, default="embed")
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--no-wait", action="store_true", help="return after submitting")
    args = parser.parse_args(argv)
    if args.command == "submit":
        return submit(args.job, args.config, args.address, args.set, wait=not args.no_wait)
    job = args.command.replace("-", "_")
    module = importlib.import_module(f"jobs.{job}")
    return module.main(["--config", args.config, *[a for o in args.set for a in ("--set", o)]])


if __name__ == "__main__":
    sys.exit(main())
