"""One commit protocol for every job's output location: start, resume, overwrite, mark units, commit.

    <out>/_SUCCESS                the commit marker, written last: {"job", "summary", "committed_at", ...}
    <out>/_run/fingerprint.json   the configuration of the run writing here (resumable jobs)
    <out>/_run/units/<key>.json   one unit (input file or row-group range) or stage whose outputs are all on storage
    <out>/_lease.json             the run writing here now (pipeline.lease), while it runs

A location is complete exactly when `_SUCCESS` exists (the Hadoop/Spark name; like the S3A committers it holds
JSON). Each job keeps its own summary file (`_summary.json`, `summary.json`), written just before the marker.
Starting over deletes the marker first, so a crash mid-delete never leaves a marked, half-old dataset.
A job runs holding its output's lease (holds_output), so a second run on the same output is refused before it
touches anything, and every marker is written only while the lease is still this run's.
Pure storage: no Ray. Used by jobs.embed, jobs.reembed, jobs.mine_bitext and jobs.cluster.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow.fs as pafs

from pipeline.errors import UserError
from pipeline.fingerprint import SameContent, differences
from pipeline.lease import holding, is_lease_file, verify_held
from pipeline.objects import NotOurJsonError, delete_files, get_json, list_tree, put_json
from pipeline.storage import Location, resolve

log = logging.getLogger(__name__)

MARKER = "_SUCCESS"
RUN_DIR = "_run"
FINGERPRINT = f"{RUN_DIR}/fingerprint.json"
UNITS_DIR = f"{RUN_DIR}/units"
SUMMARY_NAMES = ("_summary.json", "summary.json")  # deleted right after the markers when starting over
READ_THREADS = 16  # unit markers read in parallel (one GET each on object stores)


class OutputExistsError(UserError, FileExistsError):
    """The output location holds a finished run, another configuration's run, or files of unknown origin."""


def is_committed(out: Location) -> bool:
    return out.fs.get_file_info(out.join(MARKER).path).type == pafs.FileType.File


HINT = "set output.overwrite=true to replace it or choose another output.uri"


@dataclass(frozen=True)
class Naming:
    """How a refusal names the configuration: the keys a user set. A nested step is configured under another key
    (the `embed:` section of a clustering run: prefix "embed.") or by the job itself (a mining run's embeddings,
    which `output.overwrite` of the mining run replaces), so its refusals name those keys instead."""

    prefix: str = ""  # before each differing field of a fingerprint, e.g. "embed."
    hint: str = HINT  # what the user can do about it

    def fields(self, diffs: list[str]) -> str:
        return "; ".join(self.prefix + d for d in diffs)


TOP_LEVEL = Naming()


def check_available(
    out: Location, overwrite: bool, resumable: bool, naming: Naming = TOP_LEVEL
) -> dict[str, Any] | None:
    """The refusals of `begin` that need no fingerprint: a marker HEAD, a small GET and a listing, so a job makes
    them before it starts Ray or resolves its model. Returns the recorded run (`_run/fingerprint.json`) when
    `resumable` and one exists, else None; nothing is checked with `overwrite`.

    Raises:
        OutputExistsError: without overwrite, `out` holds a finished run, or files that no resumable run recorded.
    """
    if overwrite:
        return None
    if is_committed(out):
        if not is_our_marker(read_marker(out)):
            raise OutputExistsError(
                f"output {out.uri} holds a {MARKER} that rayembed did not write (not its JSON marker: Spark and "
                f"Hadoop write an empty one), so it holds another tool's output; {naming.hint}"
            )
        raise OutputExistsError(f"output {out.uri} already holds a finished run ({MARKER} exists); {naming.hint}")
    recorded = get_json(out.join(FINGERPRINT)) if resumable else None
    if recorded is None:
        existing = [
            rel for rel in list_tree(out, temp_files=True) if not is_fingerprint_temp(rel) and not is_lease_file(rel)
        ]
        if existing:
            raise OutputExistsError(
                f"output {out.uri} already holds {len(existing)} files (e.g. {existing[0]}) that no unfinished "
                f"run recorded; {naming.hint}"
            )
    return recorded


def read_marker(out: Location) -> Any:
    """`out`'s `_SUCCESS` as parsed JSON; None when there is none, "" when it is not JSON (another tool's)."""
    try:
        return get_json(out.join(MARKER))
    except NotOurJsonError:
        return ""


def is_our_marker(marker: Any) -> bool:
    """Whether a read `_SUCCESS` (read_marker) is the JSON object `commit` writes (it names the job and its summary)."""
    return isinstance(marker, dict) and "job" in marker and "summary" in marker


def is_fingerprint_temp(rel: str) -> bool:
    """The temp file of a local `_run/fingerprint.json` write (pipeline.objects.put_json: `.<name>.<uuid>`, then a
    rename). The fingerprint is a run's first write, so an attempt killed inside that write leaves this file alone;
    it is that attempt's, not a foreign file, and the next attempt starts afresh instead of refusing the location."""
    folder, name = posixpath.split(rel)
    return folder == RUN_DIR and name.startswith(f".{posixpath.basename(FINGERPRINT)}.")


def begin(
    out: Location,
    job: str,
    overwrite: bool,
    fingerprint: dict[str, Any] | None = None,
    naming: Naming = TOP_LEVEL,
    same_content: SameContent | None = None,
) -> bool:
    """Claim `out` for a run; returns True when an unfinished run of the same fingerprint is resumed.

    Args:
        job: the job's name, for messages.
        overwrite: delete whatever `out` holds (marker first) and start over.
        fingerprint: the run's fingerprint (pipeline.fingerprint); None for jobs that do not resume, which then
            need an empty location.
        naming: the configuration keys the refusals name (a nested step's differ from the top level's).
        same_content: clears input files whose change token moved without a change of content
            (pipeline.input_contents), so such a run resumes; None: a moved token is a changed file.

    Raises:
        OutputExistsError: without overwrite, `out` holds a finished run, a run of another fingerprint (the
            message names each differing field) or files no resumable run recorded (check_available).
    """
    if overwrite:
        clear(out)
    recorded = check_available(out, overwrite, resumable=fingerprint is not None, naming=naming)
    if recorded is not None:
        diffs = differences(recorded["fingerprint"], fingerprint, same_content)
        if diffs and not committed_units(out):
            # an attempt that failed before committing anything (a key its checks refused after it began, such as
            # output.dimensions above the model's or a misspelled keep column) has nothing to resume: the
            # corrected configuration starts over instead of being told to rerun the one that failed
            log.warning(
                "output %s holds an unfinished %s of another configuration that committed nothing (%s); starting over",
                out.uri,
                recorded.get("job", "run"),
                naming.fields(diffs),
            )
            clear(out)
            recorded, diffs = None, []
    if recorded is not None:
        if diffs:
            raise OutputExistsError(
                f"output {out.uri} holds an unfinished {recorded.get('job', 'run')} of another configuration, "
                f"so it cannot be resumed: {naming.fields(diffs)}. Run again with the recorded configuration to "
                f"resume, or {naming.hint}"
            )
        if recorded["fingerprint"] != fingerprint:
            # only tokens moved without a change of content (same_content): the listing as it is now is recorded,
            # so that the next resume finds it unchanged instead of hashing those files again
            put_json({**recorded, "fingerprint": fingerprint}, out.join(FINGERPRINT))
        log.info("resuming the unfinished run in %s", out.uri)
        return True
    leftovers = [f"{RUN_DIR}/{rel}" for rel in list_tree(out.join(RUN_DIR), temp_files=True)]
    delete_files(out, [rel for rel in leftovers if is_fingerprint_temp(rel)])  # a killed first attempt's
    if fingerprint is not None:
        put_json({"job": job, "started_at": time.time(), "fingerprint": fingerprint}, out.join(FINGERPRINT))
    return False


def reuse_finished(
    out: Location,
    job: str,
    fingerprint: dict[str, Any],
    naming: Naming = TOP_LEVEL,
    same_content: SameContent | None = None,
) -> dict[str, Any]:
    """The summary of the finished run in `out`, when it was recorded with this fingerprint: a nested step (the
    embedding of a mining or clustering run) that finished in an earlier attempt is not run again. `same_content`:
    as for `begin`.

    Raises:
        OutputExistsError: `out` holds no finished run, one of another fingerprint (each differing field named), or
            one whose summary is missing.
    """
    marker = read_marker(out)  # one read: whether it is there, whose it is, and the summary it names
    if marker is None:
        raise OutputExistsError(f"output {out.uri} holds no finished run ({MARKER} is missing)")
    if not is_our_marker(marker):
        raise OutputExistsError(
            f"output {out.uri} holds a {MARKER} that rayembed did not write (not its JSON marker: Spark and Hadoop "
            f"write an empty one), so it holds another tool's output, not a finished {job}; {naming.hint}"
        )
    recorded = get_json(out.join(FINGERPRINT))
    diffs = differences(recorded["fingerprint"], fingerprint, same_content) if recorded else ["no fingerprint recorded"]
    if diffs:
        raise OutputExistsError(
            f"output {out.uri} holds a finished {job} of another configuration, so it cannot be reused: "
            f"{naming.fields(diffs)}. Run again with the recorded configuration to reuse it, or {naming.hint}"
        )
    summary = get_json(out.join(marker["summary"]))
    if summary is None:
        raise OutputExistsError(
            f"output {out.uri} is marked finished but its {marker['summary']} is missing; {naming.hint}"
        )
    log.info("reusing the finished %s in %s", job, out.uri)
    return summary


def drop_except(out: Location, keep: list[str]) -> int:
    """Delete every file under `out` (temp files included) but `_run/` and the paths under the `keep` prefixes, in
    deletion_order: a resumed run redoes the stages its earlier attempts did not record. Returns the files deleted.
    """
    prefixes = (f"{RUN_DIR}/", *keep)
    doomed = [rel for rel in list_tree(out, temp_files=True) if not rel.startswith(prefixes) and not is_lease_file(rel)]
    delete_files(out, deletion_order(doomed))
    return len(doomed)


def clear(out: Location) -> None:
    """Delete everything under `out` in deletion_order, so a crash mid-way leaves no marker beside old data; the
    lease of the run that clears it stays (pipeline.lease)."""
    doomed = [rel for rel in list_tree(out, temp_files=True) if not is_lease_file(rel)]
    verify_held(out)
    delete_files(out, deletion_order(doomed))  # in order; a file already gone is skipped


def deletion_order(files: list[str]) -> list[str]:
    """The top marker, then nested markers (e.g. a mining run's embeddings), then summaries, then the rest."""

    def rank(rel: str) -> tuple[bool, bool, bool, str]:
        name = posixpath.basename(rel)
        return rel != MARKER, name != MARKER, name not in SUMMARY_NAMES, rel

    return sorted(files, key=rank)


def mark_unit(out: Location, key: str, record: dict[str, Any]) -> None:
    """Record that every output of unit `key` is on storage (an atomic small object).

    Raises:
        LeaseLostError: this process held `out`'s lease and another run took it over (pipeline.lease).
    """
    verify_held(out)
    put_json(record, out.join(UNITS_DIR, f"{key}.json"))


def unmark_unit(out: Location, key: str) -> None:
    """Undo mark_unit: the unit is not committed (its outputs are dropped by the next attempt)."""
    verify_held(out)
    delete_files(out, [f"{UNITS_DIR}/{key}.json"])


def committed_units(out: Location) -> dict[str, dict[str, Any]]:
    """The unit records of earlier attempts, by unit key."""
    units = out.join(UNITS_DIR)
    names = [n for n in list_tree(units) if n.endswith(".json")]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        records = list(pool.map(lambda n: get_json(units.join(n)), names))
    return {n[: -len(".json")]: r for n, r in zip(names, records) if r is not None}


def commit(out: Location, job: str, summary: dict[str, Any], summary_name: str, **extra: Any) -> None:
    """Write the job's summary, then the marker: from here on `out` is a finished run.

    Raises:
        LeaseLostError: this process held `out`'s lease and another run took it over (pipeline.lease).
    """
    verify_held(out)
    put_json(summary, out.join(summary_name))
    put_json({"job": job, "summary": summary_name, "committed_at": time.time(), **extra}, out.join(MARKER))


F = TypeVar("F", bound=Callable[..., Any])


def holds_output(job: str) -> Callable[[F], F]:
    """Decorator of a job's `run(cfg, ...)`: the run holds the lease of `cfg.output.uri` from its start to its end
    (pipeline.lease; `output.lease_seconds`, `output.lease_wait_seconds`), so a second run on the same output fails
    before it reads, deletes or writes anything there. An output that holds a finished run is not leased without
    `output.overwrite`: the run refuses it, or reuses it as a nested step, and writes nothing.

    Raises:
        LeaseHeldError: another live run holds the output's lease.
    """

    def wrap(run: F) -> F:
        @functools.wraps(run)
        def run_holding(cfg: Any, *args: Any, **kwargs: Any) -> Any:
            out = resolve(cfg.output.uri, cfg.storage)
            if not cfg.output.overwrite and is_committed(out):
                return run(cfg, *args, **kwargs)
            with holding(out, cfg.storage, job, cfg.output.lease_seconds, cfg.output.lease_wait_seconds):
                return run(cfg, *args, **kwargs)

        return run_holding  # type: ignore[return-value]

    return wrap
