"""pipeline.node_paths: which local locations of a config every node must see, and what a node reports about them
(the check across nodes: tests/test_multinode.py::test_a_local_path_that_another_node_does_not_share_is_refused_
naming_the_node)."""

from __future__ import annotations

import logging
import time

from conftest import REPO

from pipeline import node_paths
from pipeline.config import EmbedConfig, load_config
from pipeline.node_paths import (
    PROBE_PREFIX,
    NodePathError,
    Place,
    check_nodes_see_paths,
    local_places,
    look,
    nodes_that_run_tasks,
    wait_for_nodes,
)
from pipeline.storage import missing_folders


def test_local_locations_of_a_config_and_the_folder_above_a_glob(tmp_path):
    (tmp_path / "corpus").mkdir()
    sets = [
        f"input.uri=[{tmp_path}/corpus, file://{tmp_path}/more/*.jsonl]",
        f"output.uri=file://{tmp_path}/out",
    ]
    cfg = load_config(EmbedConfig, REPO / "configs" / "quickstart.yaml", sets)
    got = [(p.key, p.path) for p in local_places(cfg)]
    assert got == [
        ("input.uri[0]", f"{tmp_path}/corpus"),
        ("input.uri[1]", f"{tmp_path}/more"),  # the folder above the pattern: what a node must have
        ("output.uri", f"{tmp_path}/out"),
    ]
    on_s3 = load_config(EmbedConfig, REPO / "configs" / "quickstart.yaml", [*sets[:1], "output.uri=s3://b/emb"])
    assert [p.key for p in local_places(on_s3)] == ["input.uri[0]", "input.uri[1]"]  # s3:// is no node's own


def test_a_node_names_a_missing_input_and_an_output_folder_of_its_own(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / (PROBE_PREFIX + "abc")).write_text("abc")
    own = tmp_path / "own"
    own.mkdir()
    (own / (PROBE_PREFIX + "abc")).write_text("other")
    places = [
        Place("input.uri", "x", str(tmp_path)),
        Place("input.uri[1]", "y", str(tmp_path / "nowhere")),
        Place("output.uri", "z", str(shared), "abc"),
        Place("embed.output.uri", "w", str(tmp_path / "empty"), "abc"),
        Place("output.uri", "v", str(own), "abc"),
    ]
    got = look(places)
    assert got == {
        1: "the path does not exist there",
        3: "a file the driver had just written there is missing (FileNotFoundError): the node has a folder of its "
        "own at this path",
        4: "a file the driver had just written there holds other bytes on that node",
    }


def test_only_nodes_that_run_the_jobs_tasks_are_checked():
    """A node without CPUs (KubeRay's head at num-cpus 0, when the driver runs on a worker) runs no read or write task
    and no actor of ours, so it need not see the job's local paths: it was checked, and refused, all the same."""
    nodes = [
        {"NodeID": "driver", "Alive": True, "Resources": {"CPU": 4.0}},
        {"NodeID": "head", "Alive": True, "Resources": {"memory": 1e9}},  # num-cpus 0
        {"NodeID": "zero", "Alive": True, "Resources": {"CPU": 0.0, "GPU": 1.0}},
        {"NodeID": "gpu", "Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
        {"NodeID": "gone", "Alive": False, "Resources": {"CPU": 8.0}},
    ]
    assert [n["NodeID"] for n in nodes_that_run_tasks(nodes, "driver")] == ["gpu"]


def test_the_folders_a_probe_needs_are_the_missing_ones_deepest_first(tmp_path):
    assert missing_folders(str(tmp_path)) == []
    assert missing_folders(str(tmp_path / "a" / "b")) == [str(tmp_path / "a" / "b"), str(tmp_path / "a")]
    (tmp_path / "link").symlink_to(tmp_path / "gone")  # a dangling link is in the way, not missing
    assert missing_folders(str(tmp_path / "link")) == []


def test_the_check_leaves_no_output_folder_behind_whether_it_passes_or_refuses(ray_session, tmp_path, monkeypatch):
    """The probe's output folder was left behind, empty, when the check (or anything after it) refused the job.
    The driver's own node stands in for another node that shares its disk (as the nodes of ray.cluster_utils do;
    the check on real other nodes: tests/test_multinode.py)."""
    monkeypatch.setattr(node_paths, "nodes_that_run_tasks", lambda nodes, here: [n for n in nodes if n["Alive"]])
    monkeypatch.setattr(node_paths, "CHECKED", set())
    (tmp_path / "corpus").mkdir()
    (tmp_path / "kept").mkdir()
    config = REPO / "configs" / "quickstart.yaml"
    fine = load_config(EmbedConfig, config, [f"input.uri={tmp_path / 'corpus'}", f"output.uri={tmp_path / 'new/out'}"])
    check_nodes_see_paths(fine)
    assert not (tmp_path / "new").exists()
    refused = load_config(EmbedConfig, config, [f"input.uri={tmp_path / 'nowhere'}", f"output.uri={tmp_path / 'o2'}"])
    try:
        check_nodes_see_paths(refused)
        raise AssertionError("a missing input passed")
    except NodePathError as err:
        assert "input.uri" in str(err) and "the path does not exist there" in str(err)
    assert not (tmp_path / "o2").exists()
    kept = load_config(EmbedConfig, config, [f"input.uri={tmp_path / 'corpus'}", f"output.uri={tmp_path / 'kept'}"])
    check_nodes_see_paths(kept)
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())  # a folder it found stays


def test_a_node_slow_to_answer_is_named_while_the_driver_waits(ray_session, monkeypatch, caplog):
    """The check waited up to 60 s for a node's first task (a worker process starting, a runtime_env installed)
    without a line; now an INFO line names the node after NOTE_AFTER_S, and its answer is still taken."""
    ray = ray_session
    monkeypatch.setattr(node_paths, "NOTE_AFTER_S", 0.2)

    @ray.remote(num_cpus=0)
    def answer(delay: float) -> dict:
        time.sleep(delay)
        return {}

    refs = {
        answer.remote(0.0): {"NodeManagerAddress": "10.0.0.1", "NodeID": "quick"},
        answer.remote(1.5): {"NodeManagerAddress": "10.0.0.2", "NodeID": "slow"},
    }
    with caplog.at_level(logging.INFO, logger="pipeline.node_paths"):
        ready, waiting = wait_for_nodes(refs, 30.0, ["input.uri", "output.uri"])
    assert len(ready) == 2 and waiting == []
    (line,) = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert "1 node(s)" in line and "10.0.0.2 (node id slow)" in line and "10.0.0.1" not in line, line
    assert "(input.uri, output.uri)" in line, line
    caplog.clear()
    quick = {answer.remote(0.0): {"NodeManagerAddress": "10.0.0.1", "NodeID": "quick"}}
    with caplog.at_level(logging.INFO, logger="pipeline.node_paths"):
        assert len(wait_for_nodes(quick, 30.0, ["input.uri"])[0]) == 1
    assert not caplog.records  # nothing to say when every node answers at once
