"""Session fixtures: one local Ray, one S3 server on loopback, tiny real-architecture models built once."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "sib200_sample.jsonl"
MODELS_DIR = REPO / ".models"

# Fake credentials for the moto server, set before Ray starts so every worker inherits them.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing-key-id",
    AWS_SECRET_ACCESS_KEY="testing-secret-key",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
    HF_HUB_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
)
# Ray 2.60 turns token auth on whenever ~/.ray/auth_token exists; pin mode and token so that a fresh machine and a
# used one behave the same, for the in-process Ray and for the `ray start --head` of the Jobs API test alike.
_token = Path(os.environ.get("PYTEST_RAY_TOKEN_DIR", "/tmp")) / f"rayembed-test-token-{os.getpid()}"
_token.write_text(uuid.uuid4().hex)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(_token))
# Ray's sessions and its address file `ray_current_cluster` under a temp dir of this pytest process (one per xdist
# worker): a bare ray.init(), as in a job run without compute.ray_address, joins the cluster that file names, which
# would be one that a test in the other worker (ray.cluster_utils.Cluster writes the file) or another user of the
# machine (`ray start`) has just started and soon stops. Short: Ray's Unix socket paths under it have a length limit.
RAY_TMPDIR = tempfile.mkdtemp(prefix="rt", dir="/tmp")
os.environ["RAY_TMPDIR"] = RAY_TMPDIR

sys.path.insert(0, str(Path(__file__).parent))
from model_factory import build_model, train_tokenizer


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`pytest -n 2`: whole files per worker, long ones first, the own-cluster files one after another
    (tests/xdist_schedule.py). Another `--dist` than the default is left to pytest-xdist."""
    if config.getvalue("dist") not in ("load", "loadfile"):
        return None
    from xdist_schedule import make_scheduler

    return make_scheduler(config, log)


def pytest_unconfigure(config):
    shutil.rmtree(RAY_TMPDIR, ignore_errors=True)  # the session Ray has stopped (session fixture teardown)


def pytest_collection_modifyitems(config, items):
    """In a pytest-xdist worker, long files first: the scheduler hands out files in this order. A run without
    `-n` keeps pytest's order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from xdist_schedule import order_long_files_first

        order_long_files_first(items)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_texts() -> list[str]:
    return [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """gemma3 (harrier-270m's family), qwen3 (harrier-0.6b's), bert and xlmr (e5-base's), random weights, one
    trained tokenizer."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_tokenizer(sample_texts())
    return {arch: build_model(root / arch, arch, tokenizer) for arch in ("gemma3", "qwen3", "bert", "xlmr")}


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if ray.is_initialized():
        # a Ray an earlier test of this xdist worker started in-process and left up (a job that failed after its
        # init_ray, Ray Data's auto-init): not the session's settings, and ray.init below would refuse to run
        ray.shutdown()
    # address="local": a new Ray even when /tmp/ray/ray_current_cluster names another (ray start, cluster_utils)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server() -> str:
    """Endpoint URL of a moto S3 server on loopback (a real S3 API over HTTP)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket; returns (boto3 client, bucket name)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    name = f"bucket-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return client, name


@pytest.fixture
def proxy(s3_server):
    """A fault proxy (tests/s3_fault_proxy.py) in front of the S3 server, with no rules until a test adds them."""
    from s3_fault_proxy import FaultProxy

    p = FaultProxy(s3_server).start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def real_model_dir():
    """Models built by ../shared/tools/get-models.sh into .models/ (skips when they are absent)."""

    def get(name: str) -> Path:
        path = MODELS_DIR / name
        if not (path / "model.safetensors").is_file():
            pytest.skip(f"{path} missing: run ../shared/tools/get-models.sh .models")
        return path

    return get
