"""Validate a `ray.io` object against a KubeRay CustomResourceDefinition as the API server does on create.

The CRDs are KubeRay's own (../shared/kuberay-crds/<version>/, from the kuberay repository, Apache-2.0). The rules
follow Kubernetes' structural schemas (apiextensions.k8s.io/v1):
- a field the schema does not declare is an error, as with `kubectl apply` (strict field validation, the default
  since Kubernetes 1.27), unless the node says `x-kubernetes-preserve-unknown-fields: true`;
- `type`, `enum`, `required`, numeric and length bounds, `nullable`, `x-kubernetes-int-or-string`,
  `additionalProperties` (maps) and `items` (lists), recursively;
- `x-kubernetes-validations` CEL rules are evaluated with cel-python; transition rules (those naming `oldSelf`)
  only apply to updates and are skipped.
Not checked: `format` (int32 ranges, quantities), `pattern`s of embedded core types, and the object's metadata
beyond its shape (the API server validates ObjectMeta itself).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}
OBJECT_META = {"name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences"}


@cache
def load_crd(path: Path) -> dict:
    """One CRD file (about 1 MB of YAML): parsed with libyaml when PyYAML has it, once per test session."""
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def crd_for(crd_dir: Path, kind: str) -> dict:
    """The CRD of `kind` in one KubeRay version's folder (files named by plural, as in the kuberay repository)."""
    path = crd_dir / f"{kind.lower()}s.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{crd_dir.name} has no CRD for kind {kind!r} ({path.name} is missing)")
    crd = load_crd(path)
    if crd["spec"]["names"]["kind"] != kind:
        raise ValueError(f"{path} defines {crd['spec']['names']['kind']}, not {kind}")
    return crd


def validate(doc: dict, crd: dict) -> list[str]:
    """Every reason the API server would reject `doc` (an object of the CRD's kind); empty when it would accept it."""
    group, _, version = doc.get("apiVersion", "").partition("/")
    if group != crd["spec"]["group"]:
        return [f"apiVersion {doc.get('apiVersion')!r}: group is not {crd['spec']['group']}"]
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    if version not in served:
        return [f"apiVersion {doc['apiVersion']!r}: version not served (served: {sorted(served)})"]
    if doc.get("kind") != crd["spec"]["names"]["kind"]:
        return [f"kind {doc.get('kind')!r} is not {crd['spec']['names']['kind']}"]
    schema = served[version]["schema"]["openAPIV3Schema"]
    errors: list[str] = []
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        errors.append("metadata: name or generateName is required")
    else:
        errors += [f"metadata.{k}: unknown field" for k in sorted(set(meta) - OBJECT_META)]
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    root = {**schema, "properties": {k: v for k, v in schema.get("properties", {}).items() if k != "metadata"}}
    return errors + check(body, root, "")


def check(value: Any, schema: dict, path: str) -> list[str]:
    """Errors of `value` under one structural schema node; `path` is the JSON path printed in messages."""
    where = path or "(root)"
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null is not allowed"]
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            return [f"{where}: must be an integer or a string, got {type(value).__name__}"]
    elif "type" in schema:
        expected = TYPES[schema["type"]]
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            return [f"{where}: must be {schema['type']}, got {type(value).__name__} {value!r}"]
    errors = bounds(value, schema, where)
    if isinstance(value, dict):
        errors += check_object(value, schema, path)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += check(item, schema["items"], f"{path}[{i}]")
    return errors + cel_rules(value, schema, where)


def check_object(value: dict, schema: dict, path: str) -> list[str]:
    errors = [f"{path}.{k}: required field missing" for k in schema.get("required", []) if k not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        child = f"{path}.{key}" if path else key
        if key in properties:
            errors += check(item, properties[key], child)
        elif isinstance(extra, dict):
            errors += check(item, extra, child)
        elif not open_to(key, schema):
            errors.append(f"{child}: unknown field (not in the CRD schema)")
    return errors


def open_to(key: str, schema: dict) -> bool:
    """Whether an object node accepts an undeclared field `key` (it is then kept as is, not checked)."""
    if schema.get("additionalProperties") is True or schema.get("x-kubernetes-preserve-unknown-fields"):
        return True
    return bool(schema.get("x-kubernetes-embedded-resource")) and key in ("apiVersion", "kind", "metadata")


def bounds(value: Any, schema: dict, where: str) -> list[str]:
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} is above the maximum {schema['maximum']}")
    for kind, size in (("Items", len(value) if isinstance(value, list) else None),
                       ("Length", len(value) if isinstance(value, str) else None),
                       ("Properties", len(value) if isinstance(value, dict) else None)):  # fmt: skip
        if size is not None and size < schema.get(f"min{kind}", 0):
            errors.append(f"{where}: fewer than min{kind}={schema[f'min{kind}']}")
        if size is not None and size > schema.get(f"max{kind}", size):
            errors.append(f"{where}: more than max{kind}={schema[f'max{kind}']}")
    return errors


def cel_rules(value: Any, schema: dict, where: str) -> list[str]:
    """The node's `x-kubernetes-validations` (CEL) on create: `self` is the value, transition rules are skipped."""
    rules = [r for r in schema.get("x-kubernetes-validations", []) if "oldSelf" not in r["rule"]]
    if not rules:
        return []
    import celpy

    errors = []
    for rule in rules:
        if not bool(cel_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})):
            errors.append(f"{where}: {rule.get('message', rule['rule'])}")
    return errors


@cache
def cel_program(rule: str):
    """Compiled once per rule: building cel-python's parser costs far more than evaluating a rule."""
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))
