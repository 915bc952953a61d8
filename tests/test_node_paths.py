"""pipeline.node_paths: which local locations of a config every node must see, and what a node reports about them
(the check across nodes: tests/test_multinode.py::test_a_local_path_that_another_node_does_not_share_is_refused_
naming_the_node)."""

from __future__ import annotations

from conftest import REPO

from pipeline.config import EmbedConfig, load_config
from pipeline.node_paths import PROBE_PREFIX, Place, local_places, look, nodes_that_run_tasks


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
