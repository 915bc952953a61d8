"""jobs.embed on a real multi-node Ray (ray.cluster_utils.Cluster: head + three worker nodes, each a raylet with its
own processes), submitted through the Jobs API like `ray job submit` / a KubeRay RayJob: the accelerator type and
custom resources choose the nodes and size the pool, and a worker node lost while its embedding actor is running (a
preempted spot node) leaves the job to finish with every id exactly once.

One cluster serves the module (a cluster start is a head and three raylets, each with its agents, on a 2-core
machine); the node-loss test removes a node, so it runs last.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, SAMPLE
from ray_clusters import TERMINAL, job_env, local_cluster, node_with_a_folder_of_its_own, submit

pytestmark = pytest.mark.slow
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
# Two GPU kinds (logical GPUs on this CPU machine, typed as Ray types them: the node resource
# `accelerator_type:<type>`) and one untyped GPU node. `spot: 1` on each is a node pool label, as infra/k8s's GPU
# group: the node-loss job asks for it, so its two actors run on two nodes, the third node standing in for the
# replacement KubeRay or the autoscaler brings up. `pool_b` labels the L4 node alone.
A100 = {"num_cpus": 3, "num_gpus": 2, "resources": {"accelerator_type:A100": 1, "spot": 1}}
L4 = {"num_cpus": 2, "num_gpus": 1, "resources": {"accelerator_type:L4": 1, "pool_b": 1, "spot": 1}}
GPU_NODE = {"num_cpus": 2, "num_gpus": 1, "resources": {"spot": 1}}


@pytest.fixture(scope="module")
def cluster():
    """(cluster, dashboard URL) of the module's cluster: A100, L4 and GPU_NODE worker nodes."""
    with local_cluster([A100, L4, GPU_NODE]) as started:
        yield started


def write_corpus(root: Path, files: int, copies: int) -> list[str]:
    """`copies` x the sample with unique ids, in `files` JSONL files; returns every id."""
    rows = [{"id": f"{c}-{r['id']}", "text": r["text"]} for c in range(copies) for r in RECORDS]
    root.mkdir()
    per = -(-len(rows) // files)
    for f in range(files):
        chunk = rows[f * per : (f + 1) * per]
        (root / f"part-{f:02d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
    return [r["id"] for r in rows]


def embed_entrypoint(model: Path, corpus: Path, out: Path) -> str:
    overrides = {
        "input.uri": corpus,
        "input.id_column": "id",
        "input.duplicate_ids": "unchecked",  # unique ids: no duplicate-id pre-pass (a Ray Data shuffle), not tested here
        # files of 7-22 KB: over 2 KiB (unit_bytes / 16), not packed, and under 32 KiB, not split into byte ranges:
        # one unit per file
        "input.unit_bytes": 32768,
        "output.uri": out,
        "output.keep_columns": "[]",
        "model.name_or_path": model,
        "model.max_tokens": 64,
        "batching.rows_per_block": 20,
        "compute.num_actors": 2,
        "compute.gpus_per_actor": 1,  # declared, as the cluster configs do
        "compute.resources": "{spot: 1}",  # one actor per node of the pool: two nodes, the third one spare
        "compute.cpus_per_actor": 1,
        "compute.cpus_per_tokenizer": 0.5,
    }
    sets = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in overrides.items())
    return f"{sys.executable} -m jobs.embed --config {REPO / 'configs' / 'quickstart.yaml'} {sets}"


@pytest.mark.timeout(900)
def test_accelerator_type_and_custom_resources_choose_the_nodes_and_the_pool(cluster, tiny_models, tmp_path):
    """On a cluster with two GPU kinds and an untyped GPU node, `compute.accelerator_type: A100` puts every
    embedding actor on the A100 node and sizes the default pool by its GPUs (2), not the cluster's (4);
    `compute.resources` picks the node that has them. The two jobs run at the same time: their embedding actors
    ask for what only one node each has (the A100 GPUs; pool_b), and each job's actors are told apart by its job id.
    An accelerator type no node has is refused when the job starts: test_a_refused_path_is_checked_again...'s driver
    (a job of its own here cost a driver process and its supervisor for a refusal before any actor)."""
    from ray.job_submission import JobSubmissionClient

    ids = write_corpus(tmp_path / "corpus", files=4, copies=1)
    _cluster, address = cluster
    client = JobSubmissionClient(address)

    def start(out: Path, **compute) -> str:
        """Submits an embed job of the corpus to `out` with these compute keys; returns its submission id."""
        sets = {
            "input.uri": tmp_path / "corpus",
            "input.id_column": "id",
            "input.duplicate_ids": "unchecked",  # unique ids: no pre-pass, whose tasks the placement is not about
            "output.uri": out,
            "output.keep_columns": "[]",
            "model.name_or_path": tiny_models["bert"],
            "model.pooling": "mean",
            "model.max_tokens": 64,
            "compute.num_actors": "null",  # the quickstart's 1: the default pool is under test
            **{f"compute.{k}": v for k, v in compute.items()},
        }
        command = f"{sys.executable} -m jobs.embed --config {REPO / 'configs' / 'quickstart.yaml'} " + " ".join(
            f"--set {shlex.quote(f'{k}={v}')}" for k, v in sets.items()
        )
        return submit(address, command, runtime_env=job_env())

    def actors_of(jobs: dict[str, str]) -> dict[str, dict[str, str]]:
        """Waits for the jobs ({name: submission id}) to succeed; {name: {embedding actor id: node id}} of each,
        listed once at the end: the state API keeps a dead actor with the node it ran on."""
        deadline = time.time() + 600
        while running := [name for name, job in jobs.items() if str(client.get_job_status(job)) not in TERMINAL]:
            assert time.time() < deadline, {name: client.get_job_logs(jobs[name])[-3000:] for name in running}
            time.sleep(0.5)
        for job in jobs.values():
            assert str(client.get_job_status(job)) == "SUCCEEDED", client.get_job_logs(job)[-4000:]
        return {name: embed_actors_seen(address, client.get_job_info(job).job_id) for name, job in jobs.items()}

    node_of = node_kinds(address)
    assert sorted(node_of.values()) == ["a100", "l4"]
    jobs = {
        "a100": start(tmp_path / "a100", accelerator_type="A100"),
        "pool_b": start(tmp_path / "pool_b", resources="{pool_b: 1}", gpus_per_actor=0),
    }
    actors = actors_of(jobs)
    for name in jobs:
        assert json.loads((tmp_path / name / "_summary.json").read_text())["rows_embedded"] == len(ids), name
    a100, pool_b = actors["a100"], actors["pool_b"]
    assert len(a100) == 2 and {node_of.get(n) for n in a100.values()} == {"a100"}  # one per A100 GPU
    assert len(pool_b) == 1 and {node_of.get(n) for n in pool_b.values()} == {"l4"}  # one CPU actor, on pool_b's node


@pytest.mark.timeout(600)
def test_gpu_actors_that_only_the_gpu_the_driver_holds_could_take_are_refused(cluster, tiny_models, tmp_path):
    """`ray job submit --entrypoint-num-gpus 1` (here pinned to the L4 node, whose one GPU the driver then holds)
    of a job whose GPU actors ask for an L4: the node's totals still showed a GPU, so the job waited with no word
    (Ray Data: 30 minutes without progress; the old code here: this test's timeout). Now the nodes are counted
    without what the driver holds, and this cluster cannot add a node: refused after compute.wait_for_nodes_s,
    naming what the driver holds and where it came from."""
    from ray.job_submission import JobSubmissionClient

    write_corpus(tmp_path / "corpus", files=2, copies=1)
    _own, address = cluster
    client = JobSubmissionClient(address)
    command = embed_entrypoint(tiny_models["bert"], tmp_path / "corpus", tmp_path / "emb")
    command = command.replace("compute.resources={spot: 1}", "compute.accelerator_type=L4").replace(
        "compute.num_actors=2", "compute.num_actors=1"
    )
    job = submit(
        address,
        f"{command} --set compute.wait_for_nodes_s=2",
        runtime_env=job_env(),
        entrypoint_num_gpus=1,
        entrypoint_resources={"accelerator_type:L4": 1},
    )
    deadline = time.time() + 300
    while (status := str(client.get_job_status(job))) not in TERMINAL:
        assert time.time() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    assert status == "FAILED", logs[-3000:]
    [error] = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert "compute.accelerator_type: L4, which no node of the cluster has" in error, error
    assert "without what this job's driver holds on its node (1 GPU, 1 accelerator_type:L4)" in error, error
    assert "--entrypoint-num-cpus/-num-gpus/-memory/-resources" in error, error


CHECK_TWICE = """
import json, logging, sys
import ray
from pipeline.config import EmbedConfig, load_config
from pipeline.embed_job import init_ray
from pipeline.node_paths import check_nodes_see_paths

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
said = []
# connect as the job does, for a config whose embedding actors ask for an accelerator type no node has
h100 = [f"compute.ray_address={sys.argv[1]}", "compute.accelerator_type=H100", "compute.wait_for_nodes_s=2"]
try:
    init_ray(load_config(EmbedConfig, sys.argv[3], h100).compute)
    said.append("passed")
except Exception as err:
    said.append(f"{type(err).__name__}: {err}")
if not ray.is_initialized():
    ray.init(address=sys.argv[1], log_to_driver=False)
for sets in json.loads(sys.argv[2]):
    cfg = load_config(EmbedConfig, sys.argv[3], sets)
    try:
        check_nodes_see_paths(cfg)
        said.append("passed")
    except Exception as err:
        said.append(f"{type(err).__name__}: {err}")
print(json.dumps(said))
"""


@pytest.mark.timeout(300)
def test_a_refused_path_is_checked_again_and_an_output_that_is_a_file_is_named(cluster, tmp_path):
    """A driver process connected to the module's cluster (a notebook, a script running two jobs): a local path
    that the check refused is checked again at the next job (it passed the second time: the first check had marked
    it done before it found the node without it), and an output path that is a file is one error naming the key
    (was a bare FileExistsError from the probe's folder). A missing input stands in for a node without it: the
    nodes of this cluster share this machine's disk, so it is missing on every node.

    The same driver first connects as a job whose `compute.accelerator_type: H100` no node has: this cluster has no
    autoscaler (Ray's read-only provider), so it is refused when the job starts (it waited until Ray Data gave up,
    30 min without progress, or for ever), after waiting compute.wait_for_nodes_s (2 s here) for such a node to join
    (a worker being replaced), before any actor: init_ray raises, and jobs.embed ends with its message as the
    `error:` line (test_gpu_actors_that_only_the_gpu_the_driver_holds... runs such a refusal as a Jobs API job)."""
    import subprocess

    own, _ = cluster
    (tmp_path / "corpus").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    missing = [f"input.uri={tmp_path / 'nowhere'}", f"output.uri={tmp_path / 'out'}"]
    runs = [missing, missing, [f"input.uri={tmp_path / 'corpus'}", f"output.uri={tmp_path / 'afile'}"]]
    args = [own.address, json.dumps(runs), str(REPO / "configs" / "quickstart.yaml")]
    done = subprocess.run(
        [sys.executable, "-c", CHECK_TWICE, *args], check=False, capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    h100, first, second, a_file = json.loads(done.stdout.splitlines()[-1])
    assert h100.startswith("UnschedulableError: the embedding actors ask for "), h100
    assert "compute.accelerator_type: H100, which no node of the cluster has (" in h100, h100
    assert "3 CPUs and 2 GPUs (A100, spot: 1)" in h100 and "the cluster cannot add a node" in h100, h100
    assert "joined in the 2 s" in h100 and "Waiting up to 2s for such a node to join" in done.stderr, done.stderr
    assert first.startswith(f"NodePathError: input.uri '{tmp_path / 'nowhere'}' is a local path"), first
    assert second == first
    assert a_file.startswith(f"NodePathError: output.uri '{tmp_path / 'afile'}': cannot write into it"), a_file
    assert "FileExistsError" in a_file and "give a folder this user can create and write (not a file)" in a_file
    assert not list(tmp_path.glob("out/.rayembed-node-check-*"))


@pytest.mark.timeout(600)
def test_a_local_path_that_another_node_does_not_share_is_refused_naming_the_node(cluster, tiny_models, tmp_path):
    """A fourth worker node whose `private/` is a folder of its own (an empty tmpfs in its mount namespace: `/tmp`
    on another machine, a disk only the head has). A job whose input and output are there fails before reading,
    naming both keys and that node; it read the input on the nodes that had it and wrote each node's part of the
    output to that node's own folder, then committed what its driver's node held: 320 rows in, 3 of 4 files
    written here, `_SUCCESS`, exit 0 (`/tmp` per node). The module's other jobs (paths every node shares) run the
    same check and go on."""
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_nodes

    own, address = cluster
    client = JobSubmissionClient(address)
    private = tmp_path / "private"
    with node_with_a_folder_of_its_own(own.address, private) as node:
        write_corpus(private / "corpus", files=4, copies=1)  # here only: the node's own private/ stays empty
        deadline = time.time() + 120
        while len([n for n in list_nodes(address=address) if n.state == "ALIVE"]) < 5:  # head, 3 workers, it
            assert node.poll() is None and time.time() < deadline, "the node with a folder of its own did not join"
            time.sleep(0.5)
        mine = (
            {n.node_id for n in list_nodes(address=address) if n.state == "ALIVE"}
            - {n.node_id for n in own.worker_nodes}
            - {own.head_node.node_id}
        )
        command = embed_entrypoint(tiny_models["bert"], private / "corpus", private / "emb")
        job = submit(address, command.replace("compute.gpus_per_actor=1", "compute.gpus_per_actor=0"),
                     runtime_env=job_env())  # fmt: skip
        while (status := str(client.get_job_status(job))) not in TERMINAL:
            assert time.time() < deadline + 300, client.get_job_logs(job)[-3000:]
            time.sleep(0.5)
    logs = client.get_job_logs(job)
    assert status == "FAILED", logs[-3000:]
    error = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in logs, logs[-3000:]
    (node_id,) = mine
    assert f"input.uri '{private / 'corpus'}' is a local path that this driver's node" in error[0], error
    assert f"output.uri '{private / 'emb'}' is a local path that is not one shared place" in error[0], error
    assert f"(node id {node_id[:12]}): the path does not exist there)" in error[0], error
    assert f"(node id {node_id[:12]}): a file the driver had just written there is missing" in error[0], error
    assert "--set output.uri=s3://bucket/prefix" in error[0] and "--set input.uri=s3://" in error[0], error
    assert not (private / "emb" / "_SUCCESS").exists()
    assert not list(private.glob("emb/.rayembed-node-check-*"))  # the probe is removed (the folder too, here)


@pytest.mark.timeout(900)
def test_embed_job_across_nodes_survives_losing_a_worker_node_mid_job(cluster, tiny_models, tmp_path):
    """Last in the module: it removes a node of the module's cluster.

    The job (tests/stalling_embed.py: jobs.embed whose first embedding block stalls once its actor has written its
    node id) loses that node while the block is unfinished: a small corpus is one block per actor (pipeline.spreading),
    so a node removed once output was written, as this test did, could be one whose actor had finished its work."""
    from ray.job_submission import JobSubmissionClient

    ids = write_corpus(tmp_path / "corpus", files=8, copies=1)
    out, state = tmp_path / "emb", tmp_path / "state"
    state.mkdir()
    # Three `spot` nodes for two actors: the third stands in for the replacement KubeRay or the autoscaler brings up
    # (started ahead here, so that the test does not hinge on a node starting while the job loads the machine).
    own, address = cluster
    client = JobSubmissionClient(address)
    workers = {node.node_id: node for node in own.worker_nodes}
    env = job_env()
    env["env_vars"] |= {
        "PYTHONPATH": f"{env['env_vars']['PYTHONPATH']}:{REPO / 'tests'}",
        "STALLING_EMBED_STATE": str(state),
    }
    command = embed_entrypoint(tiny_models["gemma3"], tmp_path / "corpus", out).replace(
        "-m jobs.embed", "-m stalling_embed"
    )
    job = submit(address, command, runtime_env=env)
    lost, deadline = None, time.time() + 600  # minutes on a loaded 2-core machine
    while (status := str(client.get_job_status(job))) not in TERMINAL:
        assert time.time() < deadline, client.get_job_logs(job)[-3000:]
        if lost is None and (state / "stalled_on").exists():
            lost = (state / "stalled_on").read_text()
            # both actors are up (the pool waits for all of them before the first block): one on each of two nodes
            when_lost = embed_actors_seen(address, client.get_job_info(job).job_id)
            # SIGKILL to the node's raylet, workers and object store, as when a spot VM is reclaimed: the
            # GCS learns of it only by missed health checks, while calls to the actor fail to connect.
            own.remove_node(workers[lost], allow_graceful=False)
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    assert lost is not None, f"the job ended ({status}) before a block stalled:\n{logs[-2000:]}"
    assert status == "SUCCEEDED", logs[-4000:]
    # Two embedding actors on two worker nodes when one was lost; the lost one's actor was restarted elsewhere (on the
    # spare node, or on the other actor's once that one was done) and embedded the stalled block again.
    assert len(set(when_lost.values())) == 2 and lost in when_lost.values(), (lost, when_lost)
    now = embed_actors_seen(address, client.get_job_info(job).job_id)
    assert now.keys() == when_lost.keys() and lost not in now.values(), (lost, now)
    got = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert sorted(got) == sorted(ids)  # every id exactly once: nothing lost with the node, nothing written twice
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_in"] == summary["rows_embedded"] == len(ids)


def node_kinds(address: str) -> dict[str, str]:
    """{node id: its accelerator type, lower case} of the cluster's typed nodes (`cluster.worker_nodes` is a set:
    its order says nothing about which node is which)."""
    from ray.util.state import list_nodes

    return {
        n.node_id: name.split(":", 1)[1].lower()
        for n in list_nodes(address=address, raise_on_missing_output=False)
        for name in n.resources_total
        if name.startswith("accelerator_type:")
    }


def embed_actors_seen(address: str, job_id: str | None) -> dict[str, str]:
    """{actor id: node id} of the Ray job `job_id`'s embedding actors the state API lists now (alive, or dead with
    a node); none while the job has no Ray job id (its driver has not started). The module's earlier jobs ran on the
    same cluster: their actors are left out."""
    from ray.util.state import list_actors

    if job_id is None:
        return {}
    return {
        a.actor_id: a.node_id
        for a in list_actors(address=address, filters=[("job_id", "=", job_id)], raise_on_missing_output=False)
        if "EmbedActor" in a.class_name and a.node_id
    }
