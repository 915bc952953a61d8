"""The start order of `pytest -n 2` (tests/xdist_schedule.py) names files that exist, and only reorders."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from xdist_schedule import LONG_FIRST, OWN_CLUSTERS, order_long_files_first

TESTS = Path(__file__).parent


def test_every_listed_file_exists_so_a_rename_does_not_leave_a_long_file_last():
    assert [name for name in LONG_FIRST if not (TESTS / name).is_file()] == []
    first = LONG_FIRST.index(OWN_CLUSTERS[0])
    assert LONG_FIRST[first : first + len(OWN_CLUSTERS)] == OWN_CLUSTERS  # one unit, so listed together


def test_ordering_keeps_every_item_and_each_files_own_order():
    names = ["test_a.py", "test_ray_jobs_api.py", "test_b.py", "test_embed_job.py", "test_multinode.py"]
    items = [SimpleNamespace(path=TESTS / name, n=i) for i, name in enumerate(names) for _ in range(2)]
    before = list(items)
    order_long_files_first(items)
    assert sorted(map(id, items)) == sorted(map(id, before))
    assert [item.path.name for item in items[::2]] == [
        "test_multinode.py",
        "test_ray_jobs_api.py",
        "test_embed_job.py",
        "test_a.py",
        "test_b.py",
    ]
    assert [item.n for item in items if item.path.name == "test_a.py"] == [0, 0]  # stable


def test_a_bare_ray_init_in_a_test_finds_only_this_pytest_processes_clusters():
    """Two xdist workers (and other users of the machine) each have their own RAY_TMPDIR, so the address file a
    `ray.cluster_utils.Cluster` or `ray start` writes is not the one a job subprocess in the other worker reads."""
    import os

    from conftest import RAY_TMPDIR
    from ray._private.utils import get_ray_address_file

    assert os.environ["RAY_TMPDIR"] == RAY_TMPDIR and Path(RAY_TMPDIR).is_dir()
    assert Path(get_ray_address_file(None)).is_relative_to(RAY_TMPDIR)
    assert not Path(get_ray_address_file(None)).is_relative_to("/tmp/ray")
