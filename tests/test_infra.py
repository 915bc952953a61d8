"""infra/: what a user applies runs as shipped.

- Kubernetes kinds pass kubernetes-validate's schemas; every `ray.io` object (the CronJob's RayJob template too)
  validates against KubeRay's real CRDs, for every KubeRay version its file claims (`# KubeRay: v1.6.2 v1.7.0`), with
  structural-schema semantics (tests/kuberay_crds.py); skipped with a reason when ../shared is absent.
- What is applied is separated from examples; RayJobs clean up after themselves; Ray token auth is on.
- Every entrypoint names a job module and a config that validates, reads and writes object storage (a pod's disk
  is gone after the job) and declares its GPUs (GPU workers scale from zero).
- The CronJob reports a failed RayJob as a failure; the image builds without BuildKit from pinned versions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import ray
import tomllib
import yaml
from conftest import REPO
from kuberay_crds import crd_for, validate
from pydantic import BaseModel

from pipeline.config import load_config

INFRA = REPO / "infra"
APPLIED = INFRA / "k8s"
MANIFESTS = sorted(APPLIED.rglob("*.yaml"))
CRDS = REPO.parent / "shared" / "kuberay-crds"
K8S_VERSION = "1.31"
RAY_KINDS = {"RayCluster", "RayJob", "RayCronJob"}
SECRET, CONFIGMAP, CONFIG_DIR = "rayembed-credentials", "rayembed-configs", "/etc/rayembed"
JOBS = {"embed", "mine_bitext", "cluster", "reembed"}
GPU_JOBS = {"jobs.embed", "jobs.mine_bitext", "jobs.reembed"}  # the jobs with embedding (and k-NN) actors
CLAIM = re.compile(r"^# KubeRay: ((?:v\d+\.\d+\.\d+ ?)+)", flags=re.MULTILINE)


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def name(path: Path) -> str:
    return str(path.relative_to(APPLIED))


ALL = [(name(p), d) for p in MANIFESTS for d in docs(p)]


def ray_objects() -> list[tuple[str, dict]]:
    """Every ray.io object a user's `kubectl` sends, including the RayJob the CronJob creates from its ConfigMap."""
    found = [(n, d) for n, d in ALL if d["apiVersion"].startswith("ray.io/")]
    found += [(n, yaml.safe_load(d["data"]["rayjob.yaml"])) for n, d in ALL if "rayjob.yaml" in d.get("data", {})]
    return found


def rayjob_specs() -> list[tuple[str, dict]]:
    """Every RayJob spec, wherever it sits: RayJob objects, the CronJob's template, RayCronJob's jobTemplate."""
    specs = []
    for n, doc in ray_objects():
        if doc["kind"] == "RayJob":
            specs.append((n, doc["spec"]))
        elif doc["kind"] == "RayCronJob":
            specs.append((n, doc["spec"]["jobTemplate"]))
    return specs


def cluster_specs() -> list[tuple[str, dict]]:
    clusters = [(n, d["spec"]) for n, d in ALL if d["kind"] == "RayCluster"]
    return clusters + [(n, s["rayClusterSpec"]) for n, s in rayjob_specs()]


def claimed_versions(path: Path) -> list[str]:
    match = CLAIM.search(path.read_text())
    return match[1].split() if match else []


def test_every_manifest_parses_and_names_its_object():
    assert {name(p) for p in MANIFESTS} >= {
        "cluster/raycluster.yaml",
        "schedule-cronjob/cronjob-reembed.yaml",
        "schedule-raycronjob/raycronjob-reembed.yaml",
    }
    for n, doc in ALL:
        assert doc.get("apiVersion") and doc.get("kind"), n
        assert doc["metadata"].get("name") or doc["metadata"].get("generateName"), n


def test_what_is_applied_is_separate_from_examples():
    """`kubectl apply -f infra/k8s/` must neither overwrite the real Secret nor start every job and both schedulers."""
    assert not list(APPLIED.glob("*.yaml")), "infra/k8s/ itself holds no manifests; each folder is one unit to apply"
    assert all(d["kind"] != "Secret" for _, d in ALL), "a Secret under infra/k8s would replace the real one"
    assert (INFRA / "examples" / "secret.example.yaml").is_file()
    schedulers = {p.parent.name for p in MANIFESTS for d in docs(p) if d["kind"] in ("CronJob", "RayCronJob")}
    assert schedulers == {"schedule-cronjob", "schedule-raycronjob"}  # one scheduler per folder, never both at once


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in ALL if d["kind"] not in RAY_KINDS], ids=lambda x: str(x)[:40])
def test_kubernetes_kinds_match_the_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def pod_templates(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def test_ray_pod_templates_match_the_pod_schema():
    for _, cluster in cluster_specs():
        for template in pod_templates(cluster):
            kubernetes_validate.validate(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template},
                K8S_VERSION,
                strict=True,
            )


def crd_cases() -> list[tuple[str, int, str]]:
    cases = []
    for path in MANIFESTS:
        objects = [d for n, d in ray_objects() if n == name(path)]
        cases += [(name(path), i, version) for i in range(len(objects)) for version in claimed_versions(path)]
    return cases


def test_every_file_with_ray_objects_claims_kuberay_versions():
    for path in MANIFESTS:
        if any(n == name(path) for n, _ in ray_objects()):
            assert claimed_versions(path), f"{name(path)}: no '# KubeRay: v1.x.y ...' line saying what it runs on"


@pytest.mark.parametrize("file,index,version", crd_cases(), ids=lambda x: str(x))
def test_ray_objects_validate_against_the_kuberay_crds_they_claim(file, index, version):
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} is absent (KubeRay CRDs come with ../shared)")
    if not (CRDS / version).is_dir():
        pytest.fail(f"{file} claims KubeRay {version}, but there are CRDs only for {sorted(os.listdir(CRDS))}")
    doc = [d for n, d in ray_objects() if n == file][index]
    assert validate(doc, crd_for(CRDS / version, doc["kind"])) == [], f"{file} ({doc['kind']}) on KubeRay {version}"


def test_the_crd_check_rejects_what_the_api_server_rejects():
    """The validator can fail: an unknown field, a 1.7-only field on 1.6, a broken CEL rule, a bad enum."""
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} is absent (KubeRay CRDs come with ../shared)")
    (cron,) = [d for _, d in ALL if d["kind"] == "RayCronJob"]
    zoned = {**cron, "spec": {**cron["spec"], "timeZone": "Etc/UTC"}}
    assert validate(zoned, crd_for(CRDS / "v1.7.0", "RayCronJob")) == []
    assert validate(zoned, crd_for(CRDS / "v1.6.2", "RayCronJob")) == [
        "spec.timeZone: unknown field (not in the CRD schema)"
    ]
    (job,) = [d for _, d in ALL if d["kind"] == "RayJob" and d["metadata"]["name"] == "rayembed-embed"]
    crd = crd_for(CRDS / "v1.6.2", "RayJob")
    broken = yaml.safe_load(yaml.safe_dump(job))
    broken["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteSelf"}}  # onFailure missing: a CEL rule
    broken["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "password"
    broken["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParam"] = {}
    errors = validate(broken, crd)
    assert any("requires either BOTH onSuccess and onFailure" in e for e in errors), errors
    assert any(e.startswith("spec.rayClusterSpec.authOptions.mode: 'password' is not one of") for e in errors)
    assert "spec.rayClusterSpec.headGroupSpec.rayStartParam: unknown field (not in the CRD schema)" in errors


def test_rayjobs_clean_up_after_themselves_as_the_operator_requires():
    """deletionStrategy rules (KubeRay >= 1.5, gate on by default from 1.6), checked against the operator's own
    validation (ray-operator/controllers/ray/utils/validation.go, v1.6.2): no shutdownAfterJobFinishes with rules,
    TTLs ordered DeleteWorkers <= DeleteCluster <= DeleteSelf per condition, no DeleteWorkers with autoscaling."""
    order = {"DeleteWorkers": 0, "DeleteCluster": 1, "DeleteSelf": 2}
    for n, spec in rayjob_specs():
        rules = spec["deletionStrategy"]["deletionRules"]
        assert not spec.get("shutdownAfterJobFinishes") and not spec.get("ttlSecondsAfterFinished"), n
        by_condition: dict[str, dict[str, int]] = {}
        for rule in rules:
            (key,) = {"jobStatus", "jobDeploymentStatus"} & set(rule["condition"])
            ttls = by_condition.setdefault(f"{key}={rule['condition'][key]}", {})
            assert rule["policy"] not in ttls, (n, rule)  # (condition, policy) pairs are unique
            ttls[rule["policy"]] = rule["condition"].get("ttlSeconds", 0)
            assert rule["policy"] != "DeleteWorkers", n  # refused with autoscaling
        for condition, ttls in by_condition.items():
            ordered = [ttls[p] for p in sorted(ttls, key=order.get)]
            assert ordered == sorted(ordered), (n, condition, ttls)
        # every terminal outcome removes the cluster and, later, the RayJob itself
        for condition in ("jobStatus=SUCCEEDED", "jobStatus=FAILED", "jobDeploymentStatus=Failed"):
            assert {"DeleteCluster", "DeleteSelf"} <= set(by_condition[condition]), (n, condition)


def test_clusters_autoscale_with_a_gpu_group_token_auth_credentials_and_configs():
    assert cluster_specs()
    for n, cluster in cluster_specs():
        assert cluster["rayVersion"] == ray.__version__, f"{n}: rayVersion must match the tested Ray"
        assert cluster["authOptions"] == {"mode": "token"}, f"{n}: port 8265 runs code; token auth must be on"
        assert cluster["enableInTreeAutoscaling"] is True, n
        groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
        for g in groups.values():
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (n, g["groupName"])
        gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
        assert gpu["requests"]["nvidia.com/gpu"] == gpu["limits"]["nvidia.com/gpu"] == "1", n
        assert groups["gpu"]["minReplicas"] == 0 < groups["gpu"]["maxReplicas"], f"{n}: GPU group scales from 0"
        for template in pod_templates(cluster):
            for c in template["spec"]["containers"]:
                assert {"secretRef": {"name": SECRET}} in c["envFrom"], f"{n}: {c['name']} lacks the credentials"
                assert "AWS_SECRET_ACCESS_KEY" not in str(c.get("env", "")), f"{n}: secret inlined"
        head = cluster["headGroupSpec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in head["volumes"]}
        assert volumes[mounts[CONFIG_DIR]]["configMap"]["name"] == CONFIGMAP, n


def config_model(module) -> type[BaseModel]:
    models = {v for v in vars(module).values() if isinstance(v, type) and issubclass(v, BaseModel)}
    assert len(models) == 1, f"{module.__name__}: expected one config model, found {models}"
    return models.pop()


ENTRYPOINT = re.compile(r"^python -m (jobs\.\w+) --config (\S+)$")


def entrypoints() -> list[tuple[str, str, str]]:
    found = []
    for n, spec in rayjob_specs():
        match = ENTRYPOINT.match(" ".join(shlex.split(spec["entrypoint"])))
        assert match, f"{n}: entrypoint {spec['entrypoint']!r} is not 'python -m jobs.<name> --config FILE'"
        found.append((n, match[1], match[2]))
    return found


def test_every_job_has_a_rayjob():
    assert {module.split(".")[1] for _, module, _ in entrypoints()} == JOBS


def manifest_config(module: str, config: str) -> BaseModel:
    """The config the job reads: the ConfigMap is built from configs/, mounted at CONFIG_DIR."""
    assert config.startswith(CONFIG_DIR + "/"), f"configs are mounted at {CONFIG_DIR}, not {config}"
    return load_config(config_model(importlib.import_module(module)), REPO / "configs" / config[len(CONFIG_DIR) + 1 :])


@pytest.mark.parametrize("name,module,config", entrypoints(), ids=lambda x: str(x))
def test_entrypoint_module_and_config_exist_and_validate(name, module, config):
    assert callable(importlib.import_module(module).main), f"{module} has no main()"
    manifest_config(module, config)


def uris(value, path: str = "") -> list[tuple[str, str]]:
    """(key path, value) of every `uri` / `*_uri` string in a dumped config."""
    if isinstance(value, dict):
        found = [
            (f"{path}{k}", v) for k, v in value.items() if (k == "uri" or k.endswith("_uri")) and isinstance(v, str)
        ]
        return found + [u for k, v in value.items() for u in uris(v, f"{path}{k}.")]
    return []


@pytest.mark.parametrize("name,module,config", entrypoints(), ids=lambda x: str(x))
def test_manifest_configs_read_and_write_object_storage(name, module, config):
    """A pod's local disk is empty at start and deleted after the job: inputs and outputs live on object storage."""
    found = uris(manifest_config(module, config).model_dump())
    assert {k for k, _ in found} >= {"output.uri"}, found
    for key, uri in found:
        scheme = uri.partition("://")[0] if "://" in uri else ""
        assert scheme and scheme != "file", f"{config}: {key} = {uri!r} is a path on the pod's disk; use s3://..."


@pytest.mark.parametrize("name,module,config", entrypoints(), ids=lambda x: str(x))
def test_manifest_configs_declare_gpus_when_their_cluster_scales_gpus_from_zero(name, module, config):
    """A GPU group at 0 replicas reports no GPU: only an explicit request lets the autoscaler add a GPU node."""
    if module not in GPU_JOBS:
        pytest.skip(f"{module} runs no GPU actors (k-means and dedup are CPU tasks)")
    cfg = manifest_config(module, config)
    compute = cfg.compute
    assert compute.gpus_per_actor and compute.gpus_per_actor > 0, f"{config}: set compute.gpus_per_actor: 1"
    mining = getattr(cfg, "mining", None)
    if mining is not None:
        assert mining.gpus_per_shard and mining.gpus_per_shard > 0, f"{config}: set mining.gpus_per_shard: 1"


def test_every_rayjob_retries_and_its_retry_resumes():
    """Every job resumes after a crash, so a RayJob retries (a new cluster, the same entrypoint) instead of failing on
    the first lost head pod, and its config keeps what the killed attempt committed (no output.overwrite)."""
    specs = dict(rayjob_specs())
    for name, module, config in entrypoints():
        assert specs[name].get("backoffLimit", 0) >= 1, f"{name}: backoffLimit 0 turns a lost head pod into a failure"
        output = getattr(manifest_config(module, config), "output", None)
        assert not getattr(output, "overwrite", False), f"{config}: output.overwrite makes a retry start over"


def lease_times(cfg: BaseModel) -> tuple[float, float]:
    """(lifetime, wait) of the output lease the job takes: the re-embed job's own section, else the output's."""
    settings = getattr(cfg, "reembed", None)
    if settings is not None:
        return settings.lease_ttl_seconds, settings.lease_wait_seconds
    return cfg.output.lease_seconds, cfg.output.lease_wait_seconds


def test_every_rayjob_retry_outwaits_its_dead_attempts_lease():
    """A RayJob retry runs on a new cluster: its driver is on another host than the dead attempt's, so it cannot see
    that attempt's process is gone and finds its lease live for up to the lease's lifetime. The embed, cluster and
    mine_bitext configs waited 0 s (lease 120 s): a retry whose cluster came up within two minutes of the loss exited
    3 at once, and backoffLimit counted it, instead of resuming (the wait itself:
    test_lease::a_wait_outlasts_a_dead_holder_on_another_host)."""
    specs = dict(rayjob_specs())
    for name, module, config in entrypoints():
        if specs[name].get("backoffLimit", 0) < 1:
            continue
        lifetime, wait = lease_times(manifest_config(module, config))
        assert wait > lifetime, f"{config}: a retry waits {wait:g} s for a dead attempt's lease of {lifetime:g} s"


def test_scheduled_variants_run_the_same_rayjob_as_the_manifest():
    (reembed,) = [d["spec"] for _, d in ALL if d["kind"] == "RayJob" and d["metadata"]["name"] == "rayembed-reembed"]
    scheduled = [s for n, s in rayjob_specs() if n.startswith("schedule-")]
    assert len(scheduled) == 2 and all(s == reembed for s in scheduled)
    cron = next(d for _, d in ALL if d["kind"] == "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    role = next(d for _, d in ALL if d["kind"] == "Role")
    assert {"create", "get"} <= set(role["rules"][0]["verbs"]) and role["rules"][0]["resources"] == ["rayjobs"]


def cron_container() -> dict:
    cron = next(d for _, d in ALL if d["kind"] == "CronJob")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def test_cronjob_image_exists_upstream_and_is_pinned():
    image = cron_container()["image"]
    assert not image.startswith("bitnami/"), "bitnami/kubectl's versioned tags were withdrawn in 2025"
    repo, _, tag = image.rpartition(":")
    assert repo == "registry.k8s.io/kubectl" and re.fullmatch(r"v1\.\d+\.\d+", tag), image


FAKE_KUBECTL = """#!/bin/bash
# kubectl stand-in: `create` prints the new RayJob's name; each `get ... jobDeploymentStatus` pops the next state.
case "$*" in
  create*) echo rayembed-reembed-abc12 ;;
  *jobDeploymentStatus*) states=$(cat "$STATE"); echo "${states%% *}"; rest=${states#* }; echo "$rest" > "$STATE" ;;
  *jobStatus*) echo "$JOB_STATUS" ;;
  *) echo "kubectl $*" ;;
esac
"""


@pytest.mark.parametrize(
    "states,job_status,rc",
    [
        ("Initializing Running Running Complete", "SUCCEEDED", 0),
        ("Running Failed", "FAILED", 1),  # reported when it happens, not at a 24 h timeout
        ("Running Complete", "FAILED", 1),
        ("ValidationFailed", "", 1),
    ],
)
def test_cronjob_script_fails_when_the_rayjob_fails(tmp_path, states, job_status, rc):
    """The CronJob's own script, run by bash against a stand-in kubectl that plays a RayJob's status sequence."""
    kubectl = tmp_path / "bin" / "kubectl"
    kubectl.parent.mkdir()
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "state").write_text(states + " end")
    container = cron_container()
    env = {"PATH": f"{kubectl.parent}:{os.environ['PATH']}", "STATE": str(tmp_path / "state"),
           "JOB_STATUS": job_status, "POLL_SECONDS": "0"}  # fmt: skip
    run = subprocess.run(
        [*container["command"], container["args"][0]], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == rc, run.stdout + run.stderr
    assert "created RayJob rayembed-reembed-abc12" in run.stdout


def test_dockerfile_builds_without_buildkit_from_the_tested_versions():
    text = (INFRA / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    assert args["RAY_VERSION"] == ray.__version__ and args["VARIANT"] == "cpu"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON\}-\$\{VARIANT\}$", text, flags=re.MULTILINE)
    assert "--build-arg VARIANT=cu" in text  # the CUDA build is documented
    # BuildKit-only syntax would fail under the legacy builder, kaniko or buildah
    for feature in ("# syntax=", "RUN --mount", "COPY --link", "<<EOF", "--chmod"):
        assert feature not in text, feature
    # /app belongs to `ray` before pip writes into it (legacy builders create WORKDIR as root)
    assert re.search(r"USER root\nRUN mkdir -p /app && chown ray:users /app\nUSER ray\nWORKDIR /app", text)
    for src in re.findall(r"^COPY (?:--chown=\S+ )?(\S+?)/? ", text, flags=re.MULTILINE):
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
    assert "-c /tmp/ray-constraints.txt -c infra/constraints.txt" in text  # Ray's pins and ours
    assert "/home/ray/requirements_compiled.txt" in text


def test_image_pins_equal_the_tested_versions():
    pins = dict(re.findall(r"^([\w-]+)==(\S+)$", (INFRA / "constraints.txt").read_text(), flags=re.MULTILINE))
    assert {"torch", "transformers", "tokenizers"} <= set(pins)
    for package, version in pins.items():
        installed = importlib.metadata.version(package).split("+")[0]  # torch's +cpu / +cu128 is the index's
        assert installed == version, f"infra/constraints.txt pins {package}=={version}; tests ran {installed}"


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".models", "out", "tests"} <= ignored


def test_pyproject_bounds_ray_to_the_tested_minor():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("ray[")]
    lower, upper = re.fullmatch(r"ray\[data\]>=([\d.]+),<([\d.]+)", spec).groups()
    tested = tuple(int(x) for x in ray.__version__.split(".")[:2])
    assert tuple(int(x) for x in lower.split(".")[:2]) <= tested < tuple(int(x) for x in upper.split(".")[:2])


def test_readme_walks_from_install_to_schedule():
    text = (INFRA / "README.md").read_text()
    for needle in (
        SECRET, CONFIGMAP, CONFIG_DIR, "envFrom", "kubectl create configmap", "ray job submit",
        "RayCronJob=true", "v1.6.2", "v1.7.0", "authOptions", "deletionStrategy", "DOCKER_BUILDKIT=0",
        "What was validated here",
    ):  # fmt: skip
        assert needle in text, needle


def test_operator_values_turn_on_the_raycronjob_gate():
    values = yaml.safe_load((INFRA / "kuberay-operator-values.yaml").read_text())
    assert {"name": "RayCronJob", "enabled": True} in values["featureGates"]
