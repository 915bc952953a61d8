"""infra/: the manifests parse, Kubernetes kinds pass kubernetes-validate's schemas, KubeRay kinds have the
structure we rely on (GPU worker group, autoscaling, credentials, configs), and every entrypoint names a job
module that exists and a config file that validates against that job's config model.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import ray
import yaml
from conftest import REPO
from pydantic import BaseModel

from pipeline.config import load_config

INFRA = REPO / "infra"
MANIFESTS = sorted((INFRA / "k8s").glob("*.yaml"))
K8S_VERSION = "1.31"
RAY_KINDS = {"RayCluster", "RayJob", "RayCronJob"}
SECRET, CONFIGMAP, CONFIG_DIR = "rayembed-credentials", "rayembed-configs", "/etc/rayembed"
JOBS = {"embed", "mine_bitext", "cluster", "reembed"}


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


ALL = [(p.name, d) for p in MANIFESTS for d in docs(p)]


def rayjob_specs() -> list[tuple[str, dict]]:
    """Every RayJob spec, wherever it sits: RayJob objects, the CronJob's template, RayCronJob's jobTemplate."""
    specs = []
    for name, doc in ALL:
        if doc["kind"] == "RayJob":
            specs.append((name, doc["spec"]))
        elif doc["kind"] == "RayCronJob":
            specs.append((name, doc["spec"]["jobTemplate"]))
        elif doc["kind"] == "ConfigMap" and "rayjob.yaml" in doc.get("data", {}):
            specs.append((name, yaml.safe_load(doc["data"]["rayjob.yaml"])["spec"]))
    return specs


def cluster_specs() -> list[tuple[str, dict]]:
    clusters = [(n, d["spec"]) for n, d in ALL if d["kind"] == "RayCluster"]
    return clusters + [(n, s["rayClusterSpec"]) for n, s in rayjob_specs()]


def test_every_manifest_parses_and_names_its_object():
    assert {p.name for p in MANIFESTS} >= {"raycluster.yaml", "cronjob-reembed.yaml", "raycronjob-reembed.yaml"}
    for name, doc in ALL:
        assert doc.get("apiVersion") and doc.get("kind"), name
        assert doc["metadata"].get("name") or doc["metadata"].get("generateName"), name


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in ALL if d["kind"] not in RAY_KINDS], ids=lambda x: str(x)[:40])
def test_kubernetes_kinds_match_the_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def pod_templates(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def test_ray_pod_templates_match_the_pod_schema():
    for name, cluster in cluster_specs():
        for template in pod_templates(cluster):
            kubernetes_validate.validate(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template},
                K8S_VERSION,
                strict=True,
            )


def test_clusters_autoscale_with_a_gpu_group_and_get_credentials_and_configs():
    assert cluster_specs()
    for name, cluster in cluster_specs():
        assert cluster["rayVersion"] == ray.__version__, f"{name}: rayVersion must match the tested Ray"
        assert cluster["enableInTreeAutoscaling"] is True, name
        groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
        for g in groups.values():
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (name, g["groupName"])
        gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
        assert gpu["requests"]["nvidia.com/gpu"] == gpu["limits"]["nvidia.com/gpu"] == "1", name
        assert groups["gpu"]["maxReplicas"] > groups["gpu"]["minReplicas"], f"{name}: GPU group cannot scale"
        for template in pod_templates(cluster):
            for c in template["spec"]["containers"]:
                assert {"secretRef": {"name": SECRET}} in c["envFrom"], f"{name}: {c['name']} lacks the credentials"
                assert "AWS_SECRET_ACCESS_KEY" not in str(c.get("env", "")), f"{name}: secret inlined"
        head = cluster["headGroupSpec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in head["volumes"]}
        assert volumes[mounts[CONFIG_DIR]]["configMap"]["name"] == CONFIGMAP, name


def config_model(module) -> type[BaseModel]:
    models = {v for v in vars(module).values() if isinstance(v, type) and issubclass(v, BaseModel)}
    assert len(models) == 1, f"{module.__name__}: expected one config model, found {models}"
    return models.pop()


ENTRYPOINT = re.compile(r"^python -m (jobs\.\w+) --config (\S+)$")


def entrypoints() -> list[tuple[str, str, str]]:
    found = []
    for name, spec in rayjob_specs():
        match = ENTRYPOINT.match(" ".join(shlex.split(spec["entrypoint"])))
        assert match, f"{name}: entrypoint {spec['entrypoint']!r} is not 'python -m jobs.<name> --config FILE'"
        found.append((name, match[1], match[2]))
    return found


def test_every_job_has_a_rayjob():
    assert {module.split(".")[1] for _, module, _ in entrypoints()} == JOBS


@pytest.mark.parametrize("name,module,config", entrypoints(), ids=lambda x: str(x))
def test_entrypoint_module_and_config_exist_and_validate(name, module, config):
    job = importlib.import_module(module)
    assert callable(job.main), f"{module} has no main()"
    assert config.startswith(CONFIG_DIR + "/"), f"{name}: configs are mounted at {CONFIG_DIR}"
    local = REPO / "configs" / config[len(CONFIG_DIR) + 1 :]
    if not local.is_file():
        pytest.skip(f"{local.relative_to(REPO)} is not in the repository yet (owned by another job's issue)")
    load_config(config_model(job), local)  # the ConfigMap is built from configs/, so this is what the job reads


def test_scheduled_variants_run_the_same_rayjob_as_the_manifest():
    (reembed,) = [d["spec"] for _, d in ALL if d["kind"] == "RayJob" and d["metadata"]["name"] == "rayembed-reembed"]
    scheduled = [s for n, s in rayjob_specs() if n in ("cronjob-reembed.yaml", "raycronjob-reembed.yaml")]
    assert len(scheduled) == 2 and all(s == reembed for s in scheduled)
    cron = next(d for n, d in ALL if d["kind"] == "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    role = next(d for n, d in ALL if d["kind"] == "Role")
    assert {"create", "get", "watch"} <= set(role["rules"][0]["verbs"]) and role["rules"][0]["resources"] == ["rayjobs"]


def test_dockerfile_builds_cpu_and_cuda_from_the_tested_ray():
    text = (INFRA / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    assert args["RAY_VERSION"] == ray.__version__ and args["VARIANT"] == "cpu"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON\}-\$\{VARIANT\}$", text, flags=re.MULTILINE)
    assert "--build-arg VARIANT=cu" in text  # the CUDA build is documented
    for src in re.findall(r"^COPY (\S+?)/? ", text, flags=re.MULTILINE):
        if not src.endswith("*"):
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"


def test_readme_explains_configs_and_credentials():
    text = (INFRA / "README.md").read_text()
    for needle in (SECRET, CONFIGMAP, CONFIG_DIR, "envFrom", "kubectl create configmap", "ray job submit"):
        assert needle in text, needle
