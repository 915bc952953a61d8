"""How `pytest -n 2` (pytest-xdist, the README's test command) shares the test files between its two workers.

Whole files go to one worker, as `--dist loadfile`, so a module's fixtures (a `ray start --head`, a clean reference
run) are built once. Two changes to loadfile:
- the files that start Ray clusters of their own (several raylets and a head each) form one unit, so that two such
  clusters never run at once on a 2-core machine;
- units start longest first (LONG_FIRST, measured with `--durations`), so the minute-long end-to-end files do not
  start last while the other worker sits idle (xdist's default puts the files with the most tests first, which puts
  these one-test files at the end). A stale list costs minutes, never a result.

Only the order and grouping change: every collected test runs, once.
"""

from __future__ import annotations

from pathlib import Path

# One unit, run in this order on one worker: each test here starts a multi-node Ray of its own.
OWN_CLUSTERS = ("test_multinode.py", "test_ray_jobs_api.py")
# The long files, longest first by their summed test time in a full `pytest -n 2 --junitxml` run (`python
# tests/file_times.py .ci/junit.xml` after .ci/run; 2026-12-02 at 96d77d1, corrected for the trims after it),
# OWN_CLUSTERS counted as one; the rest follow in collection order.
LONG_FIRST = (
    "test_reembed_job.py",
    *OWN_CLUSTERS,
    "test_resume.py",
    "test_embed_job.py",
    "test_faults.py",
    "test_line_ranges_resume.py",
    "test_bad_input.py",
    "test_output_precision.py",
    "test_bitext_e2e.py",
    "test_clustering_job.py",  # ~2.5x shorter since the k-means iterations became Ray tasks (a3d83b8)
    "test_resolution_cache.py",
    "test_run_output.py",
    "test_bench_smoke.py",
    "test_lease.py",
    "test_process_exit.py",
    "test_duplicate_pass.py",
    "test_bitext_shard_memory.py",
    "test_compiling.py",
    "test_spreading.py",
    "test_stages.py",
    "test_clustering_duplicates.py",
    "test_actor_start.py",
    "test_bitext_mining_actor.py",
    "test_bitext_stream.py",
    "test_shared_output.py",
    "test_encoder.py",
)


def rank(path: Path) -> int:
    """Position of a test file in the start order: LONG_FIRST's index, every other file after them."""
    return LONG_FIRST.index(path.name) if path.name in LONG_FIRST else len(LONG_FIRST)


def order_long_files_first(items: list) -> None:
    """Sorts collected items (in place, stable) so that each file's tests keep their order, longest files first."""
    items.sort(key=lambda item: rank(item.path))


def make_scheduler(config, log):
    """A `--dist loadfile` scheduler whose units are files, OWN_CLUSTERS being one unit, in collection order."""
    from xdist.scheduler import LoadFileScheduling

    class LongFilesFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "own Ray clusters" if Path(path).name in OWN_CLUSTERS else path

    config.option.loadscopereorder = (
        False  # as --no-loadscope-reorder: the workers' collection order, not most-tests-first
    )
    return LongFilesFirst(config, log)
