"""Rendering of an experiment into Kubernetes objects, YAML output and schema validation."""

from __future__ import annotations

import copy
import sys
from collections import Counter
from typing import Any

import pytest
import yaml

from pytest_abtraffic._errors import PrerequisiteError, SpecError
from pytest_abtraffic._manifests import dump_yaml, render_experiment, split_object, validate_objects
from pytest_abtraffic._spec import FailureAccrual, FailurePolicy, RetryPolicy, Variant, default_spec

SPLITS = [
    ("smi-v1alpha1", "gateway.networking.k8s.io"),
    ("smi-v1alpha2", "gateway.networking.k8s.io"),
    ("httproute", "gateway.networking.k8s.io"),
    ("httproute", "policy.linkerd.io"),
]
MANAGED = ("app.kubernetes.io/managed-by", "pytest-abtraffic")


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize(("api", "group"), SPLITS)
def test_default_experiment_renders_every_object_and_validates(api: str, group: str) -> None:
    spec = default_spec(split_api=api, route_group=group)
    objects = render_experiment(spec)
    split_kind = "HTTPRoute" if api == "httproute" else "TrafficSplit"
    assert Counter(o["kind"] for o in objects) == {"Namespace": 1, "Deployment": 2, "Service": 3, split_kind: 1}
    # Order the integrator relies on: Namespace, per variant Deployment + Service, apex, split.
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "abtraffic-ai-model"),
        ("Deployment", "ai-model-v1"), ("Service", "ai-model-service-v1"),
        ("Deployment", "ai-model-v2"), ("Service", "ai-model-service-v2"),
        ("Service", "ai-model-service"),
        (split_kind, objects[-1]["metadata"]["name"]),
    ]
    assert validate_objects(objects) == []
    for obj in objects:
        assert obj["metadata"]["labels"][MANAGED[0]] == MANAGED[1]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "abtraffic-ai-model"


def test_smi_v1alpha1_uses_quantity_weights() -> None:
    split = render_experiment(default_spec(split_api="smi-v1alpha1"))[-1]
    assert split["apiVersion"] == "split.smi-spec.io/v1alpha1"
    assert split["spec"] == {
        "service": "ai-model-service",
        "backends": [{"service": "ai-model-service-v1", "weight": "500m"},
                     {"service": "ai-model-service-v2", "weight": "500m"}],
    }


def test_smi_v1alpha1_uneven_weights() -> None:
    spec = default_spec(split_api="smi-v1alpha1").with_weights({"v1": 90, "v2": 10})
    split = split_object(spec, "ns")
    assert [b["weight"] for b in split["spec"]["backends"]] == ["900m", "100m"]
    assert validate_objects([split]) == []


def test_smi_v1alpha2_uses_integer_weights() -> None:
    split = render_experiment(default_spec(split_api="smi-v1alpha2"))[-1]
    assert split["apiVersion"] == "split.smi-spec.io/v1alpha2"
    assert [b["weight"] for b in split["spec"]["backends"]] == [50, 50]
    assert all(type(b["weight"]) is int for b in split["spec"]["backends"])


@pytest.mark.parametrize(("group", "api_version"), [
    ("gateway.networking.k8s.io", "gateway.networking.k8s.io/v1"),
    ("policy.linkerd.io", "policy.linkerd.io/v1beta3"),
])
def test_httproute_has_service_parent_and_weighted_backends_with_ports(group: str, api_version: str) -> None:
    spec = default_spec(split_api="httproute", route_group=group).with_weights({"v1": 90, "v2": 10})
    route = render_experiment(spec, namespace="exp")[-1]
    assert route["apiVersion"] == api_version
    assert route["kind"] == "HTTPRoute"
    assert route["metadata"]["namespace"] == "exp"
    assert route["spec"]["parentRefs"] == [{"name": "ai-model-service", "kind": "Service", "group": "core", "port": 80}]
    assert route["spec"]["rules"] == [{"backendRefs": [
        {"name": "ai-model-service-v1", "port": 80, "weight": 90},
        {"name": "ai-model-service-v2", "port": 80, "weight": 10},
    ]}]


def test_namespace_is_meshed() -> None:
    ns = render_experiment(default_spec(), namespace="my-exp")[0]
    assert ns["metadata"]["name"] == "my-exp"
    assert ns["metadata"]["annotations"] == {"linkerd.io/inject": "enabled"}


def test_deployment_shape() -> None:
    spec = default_spec()
    deployment = _named(render_experiment(spec), "Deployment", "ai-model-v2")
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "ai-model", "version": "v2"}}
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {"linkerd.io/inject": "enabled"}
    assert {"app": "ai-model", "version": "v2"}.items() <= template["metadata"]["labels"].items()
    (container,) = template["spec"]["containers"]
    variant = spec.variant("v2")
    assert container["image"] == variant.image
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"MODEL_VERSION": "v2", "MODEL_ADMIN_PORT": "9901", "ABTRAFFIC_FAULTS": "1"}
    assert "PYTHONPATH" not in env  # local_env is for the local backend only
    ready = container["readinessProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": "http"}
    assert 1 <= ready["periodSeconds"] <= 2
    assert ready["failureThreshold"] <= 3
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["securityContext"]["runAsNonRoot"] is True
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}


def test_deployment_follows_variant_settings() -> None:
    variants = (
        Variant(name="a", weight=1, image="img:a", port=9000, replicas=3, image_pull_policy="Never",
                env={"X": "1"}, local_env={"Y": "2"}, ready_path="/ready", live_path="/live"),
        Variant(name="b", weight=1, image="img:b:latest", port=9001),
    )
    spec = default_spec(variants=variants, model="m")
    objects = render_experiment(spec)
    a = _named(objects, "Deployment", "m-a")
    (container,) = a["spec"]["template"]["spec"]["containers"]
    assert a["spec"]["replicas"] == 3
    assert container["imagePullPolicy"] == "Never"
    assert container["env"] == [{"name": "X", "value": "1"}]  # no admin port -> no fault switches
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert "env" not in _named(objects, "Deployment", "m-b")["spec"]["template"]["spec"]["containers"][0]
    # Backend Services expose the apex port and map it to each variant's own container port.
    assert _named(objects, "Service", "m-service-a")["spec"]["ports"][0] == {
        "name": "http", "port": 80, "targetPort": 9000, "protocol": "TCP"}
    assert _named(objects, "Service", "m-service-b")["spec"]["ports"][0]["targetPort"] == 9001
    assert validate_objects(objects) == []


def test_services_and_apex() -> None:
    spec = default_spec(service_port=8000)
    objects = render_experiment(spec)
    backend = _named(objects, "Service", "ai-model-service-v1")
    assert backend["spec"]["selector"] == {"app": "ai-model", "version": "v1"}
    assert backend["spec"]["ports"][0]["port"] == 8000
    apex = _named(objects, "Service", "ai-model-service")
    assert apex["spec"]["type"] == "ClusterIP"
    assert "clusterIP" not in apex["spec"]  # never headless
    assert apex["spec"]["selector"] == {"app": "ai-model"}  # has endpoints for unmeshed callers
    assert [p["port"] for p in apex["spec"]["ports"]] == [8000]
    assert "annotations" not in apex["metadata"]


def test_failure_policy_annotations_go_on_the_apex_service_only() -> None:
    policy = FailurePolicy(failure_accrual=FailureAccrual(max_failures=3), retries=RetryPolicy(limit=2),
                           request_timeout_s=1.5)
    spec = default_spec(failure_policy=policy)
    objects = render_experiment(spec)
    apex = _named(objects, "Service", "ai-model-service")
    assert apex["metadata"]["annotations"] == policy.annotations()
    assert apex["metadata"]["annotations"]["balancer.linkerd.io/failure-accrual-consecutive-max-failures"] == "3"
    for obj in objects:
        if obj is not apex and obj["kind"] != "Namespace":
            assert "annotations" not in obj["metadata"]
    assert validate_objects(objects) == []


def test_bad_namespace_and_missing_image_are_spec_errors() -> None:
    with pytest.raises(SpecError) as excinfo:
        render_experiment(default_spec(), namespace="Not_Valid")
    assert excinfo.value.field == "namespace"
    spec = default_spec(variants=(Variant(name="v1", image="x"), Variant(name="v2")))
    with pytest.raises(SpecError) as excinfo:
        render_experiment(spec)
    assert excinfo.value.field == "variants[1].image"


def test_dump_yaml_round_trips_with_stable_order() -> None:
    objects = render_experiment(default_spec(split_api="smi-v1alpha1"))
    text = dump_yaml(objects)
    assert text.startswith("---\n")
    assert text.count("---\n") == len(objects)
    assert list(yaml.safe_load_all(text)) == objects
    assert dump_yaml(render_experiment(default_spec(split_api="smi-v1alpha1"))) == text
    first = text.split("---\n")[2]
    assert first.splitlines()[:2] == ["apiVersion: apps/v1", "kind: Deployment"]
    # Quantity strings stay strings ('500m'), integers stay integers.
    assert "weight: 500m" in text
    assert "containerPort: 8080" in text


def test_dump_yaml_accepts_any_mapping() -> None:
    from types import MappingProxyType

    text = dump_yaml([MappingProxyType({"kind": "X", "items": (1, 2)})])
    assert text == "---\nkind: X\nitems:\n- 1\n- 2\n"


# -- the validator has teeth ---------------------------------------------------------------------------


def _mutated(api: str, edit: Any, *, group: str = "gateway.networking.k8s.io", index: int = -1) -> list[str]:
    objects = copy.deepcopy(render_experiment(default_spec(split_api=api, route_group=group)))
    edit(objects[index])
    return validate_objects(objects)


def _set_weight(value: Any) -> Any:
    def edit(route: dict[str, Any]) -> None:
        route["spec"]["rules"][0]["backendRefs"][0]["weight"] = value
    return edit


@pytest.mark.parametrize("group", ["gateway.networking.k8s.io", "policy.linkerd.io"])
def test_httproute_quantity_weight_is_invalid(group: str) -> None:
    problems = _mutated("httproute", _set_weight("500m"), group=group)
    assert len(problems) == 1
    assert "HTTPRoute/ai-model-route" in problems[0]
    assert "spec.rules.0.backendRefs.0.weight" in problems[0]


def test_httproute_backendref_without_port_is_invalid() -> None:
    def edit(route: dict[str, Any]) -> None:
        del route["spec"]["rules"][0]["backendRefs"][1]["port"]
    problems = _mutated("httproute", edit)
    assert len(problems) == 1
    assert "port" in problems[0]


def test_httproute_backendref_to_non_service_needs_no_port() -> None:
    def edit(route: dict[str, Any]) -> None:
        ref = route["spec"]["rules"][0]["backendRefs"][1]
        del ref["port"]
        ref.update(group="example.com", kind="Backend")
    assert _mutated("httproute", edit) == []


def test_traffic_split_without_service_is_invalid() -> None:
    def edit(split: dict[str, Any]) -> None:
        del split["spec"]["service"]
    problems = _mutated("smi-v1alpha1", edit)
    assert len(problems) == 1
    assert "'service' is a required property" in problems[0]


def test_traffic_split_v1alpha2_rejects_quantities_v1alpha1_accepts_them() -> None:
    def quantity(split: dict[str, Any]) -> None:
        split["spec"]["backends"][0]["weight"] = "500m"
    assert _mutated("smi-v1alpha2", quantity) != []
    assert _mutated("smi-v1alpha1", quantity) == []

    def nonsense(split: dict[str, Any]) -> None:
        split["spec"]["backends"][0]["weight"] = "half"
    assert _mutated("smi-v1alpha1", nonsense) != []


def test_deployment_with_string_replicas_is_invalid() -> None:
    def edit(deployment: dict[str, Any]) -> None:
        deployment["spec"]["replicas"] = "2"
    problems = _mutated("httproute", edit, index=1)
    assert len(problems) == 1
    assert problems[0].startswith("Deployment/ai-model-v1: spec.replicas:")


def test_unknown_field_is_invalid_strict_like_kubectl() -> None:
    def edit(service: dict[str, Any]) -> None:
        service["spec"]["selectr"] = {"app": "x"}
    problems = _mutated("httproute", edit, index=2)
    assert len(problems) == 1
    assert "selectr" in problems[0]


def test_unknown_kind_is_reported() -> None:
    problems = validate_objects([{"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
                                  "metadata": {"name": "x"}, "spec": {}}])
    assert len(problems) == 1
    assert "no schema for TrafficSplit split.smi-spec.io/v1alpha4" in problems[0]
    assert validate_objects([{"kind": "Service"}]) == [
        "Service/<object 1 without a name>: apiVersion and kind must be non-empty strings"]


def test_missing_kubernetes_validate_is_a_prerequisite_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes_validate", None)
    monkeypatch.setitem(sys.modules, "kubernetes_validate.utils", None)
    with pytest.raises(PrerequisiteError, match=r"pip install pytest-abtraffic\[test\]"):
        validate_objects(render_experiment(default_spec()))
