"""Kubernetes manifests for an experiment: one namespace, one Deployment + Service per variant, the apex
Service and the split object (SMI TrafficSplit or HTTPRoute), plus a schema check of the result.

Why the objects look the way they do (see linkerd-facts.md):

- Linkerd splits traffic in a meshed client's proxy, and only for requests sent to the **apex** Service's
  cluster IP. linkerd-smi and HTTPRoute both need that apex to exist as a ClusterIP Service (a headless
  apex does not work). It selects every variant's pods (``app: <model>``) so it also has endpoints for
  unmeshed callers, which then get plain per-connection Kubernetes balancing.
- linkerd-smi keys the split on the apex port, so every backend Service exposes that same port
  (``spec.service_port``) and maps it to the variant's container port.
- The Namespace and every pod template carry ``linkerd.io/inject: enabled``.
- Readiness probes are tight (1 s period, 2 failures) so Endpoints follow a variant going unready
  quickly: the fallback scenarios measure how fast traffic moves.
- ``imagePullPolicy`` comes from the variant and defaults to ``IfNotPresent``, which works for images
  loaded with ``kind load docker-image``. Note that Kubernetes defaults a ``:latest`` image to
  ``Always`` when the policy is left out, which fails for images that only exist inside kind.
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ._errors import PrerequisiteError, SpecError
from ._resources import manifests_dir
from ._spec import ExperimentSpec, Variant

MANAGED_BY = {"app.kubernetes.io/managed-by": "pytest-abtraffic"}
INJECT_ANNOTATION = "linkerd.io/inject"
CONTAINER_NAME = "model"
PORT_NAME = "http"
#: Kubernetes version whose schemas ``validate_objects`` checks core kinds against.
KUBERNETES_VERSION = "1.31"
# The reference image's numeric USER (fixtures/Dockerfile). Set explicitly because runAsNonRoot alone
# refuses to start images whose USER is root or a name.
RUN_AS_USER = 10001

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_INSTALL_HINT = "pip install pytest-abtraffic[test]"


# ---------------------------------------------------------------------------------------------------
# Rendering


def _labels(spec: ExperimentSpec, variant: str | None = None) -> dict[str, str]:
    out = {"app": spec.model}
    if variant is not None:
        out["version"] = variant
    out.update(MANAGED_BY)
    return out


def _selector(spec: ExperimentSpec, variant: str | None = None) -> dict[str, str]:
    out = {"app": spec.model}
    if variant is not None:
        out["version"] = variant
    return out


def _metadata(name: str, namespace: str, labels: Mapping[str, str],
              annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _namespace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(MANAGED_BY), "annotations": {INJECT_ANNOTATION: "enabled"}},
    }


def _env(variant: Variant) -> list[dict[str, str]]:
    env = dict(variant.env)
    if variant.admin_port is not None:
        # The reference server opens its fault admin API (bound to the pod's loopback, reached by
        # port-forward) only with both of these; local_env is for the local backend only.
        env.setdefault("MODEL_ADMIN_PORT", str(variant.admin_port))
        env.setdefault("ABTRAFFIC_FAULTS", "1")
    return [{"name": key, "value": value} for key, value in env.items()]


def _deployment(spec: ExperimentSpec, variant: Variant, index: int, namespace: str) -> dict[str, Any]:
    if not variant.image:
        raise SpecError(f"variants[{index}].image",
                        f"variant {variant.name!r} has no image, which a Kubernetes Deployment needs")
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": variant.image,
        "imagePullPolicy": variant.image_pull_policy,
        "ports": [{"name": PORT_NAME, "containerPort": variant.port, "protocol": "TCP"}],
    }
    env = _env(variant)
    if env:
        container["env"] = env
    container.update({
        "readinessProbe": {
            "httpGet": {"path": variant.ready_path, "port": PORT_NAME},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": variant.live_path, "port": PORT_NAME},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        # Container level, not pod level: Linkerd's injected init container sets its own context.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec.deployment_name(variant.name), namespace, _labels(spec, variant.name)),
        "spec": {
            "replicas": variant.replicas,
            "selector": {"matchLabels": _selector(spec, variant.name)},
            "template": {
                "metadata": {
                    "labels": _labels(spec, variant.name),
                    "annotations": {INJECT_ANNOTATION: "enabled"},
                },
                "spec": {
                    # Service links would inject *_PORT variables, which can collide with MODEL_PORT.
                    "enableServiceLinks": False,
                    "containers": [container],
                },
            },
        },
    }


def _service(name: str, namespace: str, labels: Mapping[str, str], selector: Mapping[str, str], port: int,
             target_port: int | str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, labels, annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": PORT_NAME, "port": port, "targetPort": target_port, "protocol": "TCP"}],
        },
    }


def _check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
        raise SpecError("namespace", f"{namespace!r} is not a valid namespace name (DNS-1123 label)")
    return namespace


def split_object(spec: ExperimentSpec, namespace: str) -> dict[str, Any]:
    """The TrafficSplit (SMI) or HTTPRoute that declares the experiment's weights."""
    _check_namespace(namespace)
    weights = spec.rendered_weights()
    labels = _labels(spec)
    if spec.split_api in ("smi-v1alpha1", "smi-v1alpha2"):
        version = spec.split_api.removeprefix("smi-")
        return {
            "apiVersion": f"split.smi-spec.io/{version}",
            "kind": "TrafficSplit",
            "metadata": _metadata(f"{spec.model}-split", namespace, labels),
            "spec": {
                "service": spec.apex_service,
                "backends": [{"service": spec.service_name(v.name), "weight": weights[v.name]}
                             for v in spec.variants],
            },
        }
    return {
        "apiVersion": spec.route_api_version,
        "kind": "HTTPRoute",
        "metadata": _metadata(f"{spec.model}-route", namespace, labels),
        "spec": {
            # A Service parent in the Service's own namespace: a producer route for every meshed client.
            "parentRefs": [{"name": spec.apex_service, "kind": "Service", "group": "core",
                            "port": spec.service_port}],
            # Header (cohort) rules first, each to one backend; the weighted rule has no matches, so
            # it takes whatever no other rule matches (Gateway API match precedence, see _routes).
            "rules": [*({"matches": [m.to_manifest() for m in rule.matches],
                         "backendRefs": [{"name": spec.service_name(rule.backend), "port": spec.service_port}]}
                        for rule in spec.routes), {
                "backendRefs": [{"name": spec.service_name(v.name), "port": spec.service_port,
                                 "weight": weights[v.name]} for v in spec.variants],
            }],
        },
    }


def render_experiment(spec: ExperimentSpec, *, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every object of the experiment: Namespace, per variant Deployment + Service, apex Service, split."""
    ns = _check_namespace(namespace if namespace is not None else spec.default_namespace)
    objects: list[dict[str, Any]] = [_namespace(ns)]
    for index, variant in enumerate(spec.variants):
        objects.append(_deployment(spec, variant, index, ns))
        objects.append(_service(spec.service_name(variant.name), ns, _labels(spec, variant.name),
                                _selector(spec, variant.name), spec.service_port, variant.port))
    # Named targetPort: variants may listen on different container ports behind one apex.
    objects.append(_service(spec.apex_service, ns, _labels(spec), _selector(spec), spec.service_port, PORT_NAME,
                            spec.failure_policy.annotations()))
    objects.append(split_object(spec, ns))
    return objects


# ---------------------------------------------------------------------------------------------------
# YAML


def _plain(value: Any) -> Any:
    """Plain dicts/lists so the safe dumper accepts any Mapping/Sequence the caller passes."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def dump_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML, keys in the objects' own order, each document starting with ``---``."""
    docs = [yaml.safe_dump(_plain(obj), sort_keys=False, default_flow_style=False, width=1000,
                           allow_unicode=True) for obj in objects]
    return "".join(f"---\n{doc}" for doc in docs)


# ---------------------------------------------------------------------------------------------------
# Validation


def _crd_dir() -> Path:
    return manifests_dir() / "crds"


@functools.lru_cache(maxsize=1)
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON Schema, read from ``manifests/crds/*.schema.{yaml,json}``."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(_crd_dir().iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json") or ".schema." not in path.name:
            continue
        schema = yaml.safe_load(path.read_text(encoding="utf-8"))
        props = schema["properties"]
        out[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return out


def _import_validation() -> tuple[Any, Any]:
    try:
        jsonschema = importlib.import_module("jsonschema")
        kv_utils = importlib.import_module("kubernetes_validate.utils")
    except ImportError as exc:
        raise PrerequisiteError(
            f"validating manifests needs the kubernetes-validate and jsonschema packages ({exc}); "
            f"install them with `{_INSTALL_HINT}`"
        ) from None
    return jsonschema, kv_utils


@functools.lru_cache(maxsize=64)
def _crd_validator(api_version: str, kind: str) -> Any:
    jsonschema, _ = _import_validation()
    schema = _crd_schemas().get((api_version, kind))
    if schema is None:
        return None
    return jsonschema.Draft202012Validator(schema)


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


@functools.lru_cache(maxsize=1)
def _core_registry() -> tuple[str, Any]:
    """kubernetes-validate's strict schema directory for KUBERNETES_VERSION and a registry of its
    shared definitions, loaded once (the definitions file is large)."""
    _, kv_utils = _import_validation()
    referencing = importlib.import_module("referencing")

    wanted = _version_key(KUBERNETES_VERSION)
    versions = [v for v in kv_utils.all_versions() if _version_key(kv_utils.major_minor(v)) <= wanted]
    if not versions:
        raise PrerequisiteError(f"kubernetes-validate ships no schemas for Kubernetes {KUBERNETES_VERSION}; "
                                f"install a version that does with `{_INSTALL_HINT}`")
    schema_dir = f"kubernetes-json-schema/v{versions[-1]}-local-strict"
    definitions = kv_utils.schema_contents(f"{schema_dir}/_definitions.json", KUBERNETES_VERSION)
    return schema_dir, referencing.Resource.from_contents(definitions) @ referencing.Registry()


@functools.lru_cache(maxsize=64)
def _core_validator(api_version: str, kind: str) -> Any:
    jsonschema, _ = _import_validation()
    schema_dir, registry = _core_registry()
    # kubernetes-validate names files <kind>-<group prefix>-<version>.json (apps/v1 -> apps-v1, v1 -> v1).
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    resource = importlib.resources.files("kubernetes_validate").joinpath(
        f"{schema_dir}/{kind.lower()}-{group_version}.json")
    if not resource.is_file():
        return None
    schema = json.loads(resource.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _object_label(obj: Mapping[str, Any], index: int) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return f"{obj.get('kind', '?')}/{name if name else f'<object {index + 1} without a name>'}"


def validate_objects(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Schema problems of ``objects`` (empty list: all valid).

    Core kinds are checked with kubernetes-validate's strict schemas for Kubernetes
    ``KUBERNETES_VERSION`` (unknown fields are errors, as with ``kubectl apply --validate=strict``);
    TrafficSplit and HTTPRoute with the schemas in ``manifests/crds``.
    """
    _import_validation()
    problems: list[str] = []
    for index, raw in enumerate(objects):
        obj = _plain(raw)
        if not isinstance(obj, dict):
            problems.append(f"object {index + 1}: not a mapping")
            continue
        label = _object_label(obj, index)
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
            problems.append(f"{label}: apiVersion and kind must be non-empty strings")
            continue
        validator = _crd_validator(api_version, kind)
        if validator is None:
            validator = _core_validator(api_version, kind)
        if validator is None:
            problems.append(f"{label}: no schema for {kind} {api_version} (Kubernetes {KUBERNETES_VERSION} or "
                            f"{_crd_dir()})")
            continue
        errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
        for error in errors:
            where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
            problems.append(f"{label}: {where}: {error.message}")
    return problems


__all__ = [
    "KUBERNETES_VERSION",
    "MANAGED_BY",
    "dump_yaml",
    "render_experiment",
    "split_object",
    "validate_objects",
]
