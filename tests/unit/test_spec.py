"""The experiment spec: defaults, weight forms per split API, and every bad input naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_abtraffic._errors import SpecError
from pytest_abtraffic._spec import (
    ExperimentSpec,
    Variant,
    default_spec,
    load_spec,
    parse_weight_option,
    spec_from_mapping,
)


def two(weight1: object = 50, weight2: object = 50, **variant_changes: object) -> dict[str, object]:
    return {
        "variants": [
            {"name": "v1", "weight": weight1, "reference": True, **variant_changes},
            {"name": "v2", "weight": weight2, "reference": True},
        ]
    }


def test_default_spec_is_the_common_starting_point() -> None:
    spec = default_spec()
    assert spec.model == "ai-model"
    assert spec.variant_names == ("v1", "v2")
    assert spec.shares() == {"v1": 0.5, "v2": 0.5}
    assert spec.apex_service == "ai-model-service"
    assert spec.service_name("v1") == "ai-model-service-v1"
    assert spec.deployment_name("v2") == "ai-model-v2"
    assert spec.version_header == "x-model-version"
    assert all(v.command and v.image for v in spec.variants)


@pytest.mark.parametrize(
    ("api", "expected"),
    [("smi-v1alpha1", {"v1": "500m", "v2": "500m"}), ("smi-v1alpha2", {"v1": 50, "v2": 50}),
     ("httproute", {"v1": 50, "v2": 50})],
)
def test_rendered_weights_follow_the_split_api(api: str, expected: dict[str, object]) -> None:
    assert default_spec(split_api=api).rendered_weights() == expected


def test_v1alpha1_accepts_quantities_and_keeps_inexact_integer_weights() -> None:
    spec = spec_from_mapping({"split": {"api": "smi-v1alpha1"}, **two("900m", "100m")})
    assert spec.shares() == pytest.approx({"v1": 0.9, "v2": 0.1})
    assert spec.rendered_weights() == {"v1": "900m", "v2": "100m"}
    thirds = spec_from_mapping({"split": {"api": "smi-v1alpha1"}, **two(1, 2)})
    assert thirds.rendered_weights() == {"v1": "1", "v2": "2"}
    assert spec_from_mapping({"split": {"api": "smi-v1alpha1"}, **two("1500m", "0.5")}).shares() == pytest.approx(
        {"v1": 0.75, "v2": 0.25})


def test_load_spec_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "model: fraud-model\nsplit: {api: httproute, route_group: policy.linkerd.io}\n"
        "variants:\n"
        "  - {name: stable, weight: 90, image: reg/fraud:1, command: [python, -m, srv, --port, '{port}']}\n"
        "  - {name: canary, weight: 10, image: reg/fraud:2, command: [python, -m, srv, --port, '{port}']}\n"
        "failure_policy: {failure_accrual: {max_failures: 5}, retries: {on: 5xx, limit: 2}, timeouts: {request: 2s}}\n"
    )
    spec = load_spec(path)
    assert spec.apex_service == "fraud-model-service"
    assert spec.shares() == pytest.approx({"stable": 0.9, "canary": 0.1})
    annotations = spec.failure_policy.annotations()
    assert annotations["balancer.linkerd.io/failure-accrual"] == "consecutive"
    assert annotations["balancer.linkerd.io/failure-accrual-consecutive-max-failures"] == "5"
    assert annotations["retry.linkerd.io/http"] == "5xx"
    assert annotations["retry.linkerd.io/limit"] == "2"
    assert annotations["timeout.linkerd.io/request"] == "2s"


BAD_MAPPINGS: list[tuple[str, dict[str, object], str, str]] = [
    ("negative weight", two(-1, 50), "variants[0].weight", "negative"),
    ("zero-sum weights", two(0, 0), "variants", "all weights are zero"),
    ("non-numeric weight", two("heavy", 50), "variants[0].weight", "not a number"),
    ("boolean weight", two(True, 50), "variants[0].weight", "must be a number"),
    ("quantity in v1alpha2", {"split": {"api": "smi-v1alpha2"}, **two("500m", "500m")}, "variants[0].weight",
     "accepts whole numbers only"),
    ("quantity in httproute", {"split": {"api": "httproute"}, **two("500m", "500m")}, "variants[0].weight",
     "accepts whole numbers only"),
    ("fraction in httproute", two(0.5, 0.5), "variants[0].weight", "not a whole number"),
    ("duplicate names", {"variants": [{"name": "v1", "weight": 1, "reference": True},
                                      {"name": "v1", "weight": 1, "reference": True}]},
     "variants[1].name", "duplicate"),
    ("invalid DNS-1123 variant name", {"variants": [{"name": "V_1", "weight": 1}, {"name": "v2", "weight": 1}]},
     "variants[0].name", "DNS-1123"),
    ("invalid model name", {"model": "AI Model", **two()}, "model", "DNS-1123"),
    ("invalid namespace", {"namespace": "-bad", **two()}, "namespace", "DNS-1123"),
    ("port out of range", two(port=70000), "variants[0].port", "out of range"),
    ("port zero", two(port=0), "variants[0].port", "out of range"),
    ("service port not int", {"service_port": "eighty", **two()}, "service_port", "integer"),
    ("unknown split API", {"split": {"api": "smi-v1alpha4"}}, "split.api", "unknown split API"),
    ("unknown route group", {"split": {"api": "httproute", "route_group": "example.com"}}, "split.route_group",
     "unknown HTTPRoute group"),
    ("unknown top-level key", {"modle": "x"}, "modle", "unknown key"),
    ("unknown variant key", two(wieght=3), "variants[0].wieght", "unknown key"),
    ("one variant only", {"variants": [{"name": "v1", "weight": 1}]}, "variants", "at least 2"),
    ("missing weight", {"variants": [{"name": "v1"}, {"name": "v2", "weight": 1}]}, "variants[0].weight",
     "required"),
    ("shell string command", two(command="python -m srv"), "variants[0].command", "not a shell string"),
    ("negative replicas", two(replicas=-1), "variants[0].replicas", "0..100"),
    ("bad retry condition", {"failure_policy": {"retries": {"on": "6xx"}}}, "failure_policy.retries.on",
     "retry condition"),
    ("bad timeout", {"failure_policy": {"timeouts": {"request": "soon"}}}, "failure_policy.timeouts.request",
     "duration"),
    ("bad accrual", {"failure_policy": {"failure_accrual": {"max_failures": 0}}},
     "failure_policy.failure_accrual.max_failures", ">= 1"),
    ("SMI with retries", {"split": {"api": "smi-v1alpha2"}, "failure_policy": {"retries": {"on": "5xx"}}},
     "failure_policy", "ServiceProfile"),
    ("SMI with failure accrual", {"split": {"api": "smi-v1alpha1"}, "failure_policy": {"failure_accrual": {}}},
     "failure_policy", "failure_accrual cannot be used with split.api smi-v1alpha1"),
    ("bad header", {"version_header": "x model"}, "version_header", "header name"),
    ("bad load users", {"load": {"users": 0}}, "load.users", "1..10000"),
    ("bad load unit", {"load": {"unit": "bytes"}}, "load.unit", "requests"),
    ("not a mapping", ["a"], "spec", "mapping"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("case", "data", "field", "needle"), BAD_MAPPINGS, ids=[c[0] for c in BAD_MAPPINGS])
def test_bad_input_names_the_field(case: str, data: dict[str, object], field: str, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_mapping(data)
    assert info.value.field == field, str(info.value)
    assert needle in str(info.value)
    assert str(info.value).startswith(f"{field}:")


def test_backend_requirements() -> None:
    no_image = default_spec().replace(variants=(Variant("v1", 1, command=("srv",)), Variant("v2", 1, command=("s",))))
    with pytest.raises(SpecError, match=r"variants\[0\].image: .*no image.*kind"):
        no_image.check_backend("kind")
    no_image.check_backend("local")
    no_command = default_spec().replace(variants=(Variant("v1", 1, image="a:1"), Variant("v2", 1, image="b:1")))
    with pytest.raises(SpecError, match=r"variants\[0\].command: .*no start command"):
        no_command.check_backend("local")
    with pytest.raises(SpecError, match="unknown backend"):
        default_spec().check_backend("minikube")


def test_spec_files_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: [\n  {name: v1\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_spec(empty) == default_spec()


def test_weight_options() -> None:
    assert parse_weight_option("v1=90, v2=10") == {"v1": "90", "v2": "10"}
    for bad in ("v1", "v1=90,v1=10", "=3", "v1="):
        with pytest.raises(SpecError, match="--weights"):
            parse_weight_option(bad)
    with pytest.raises(SpecError, match="unknown variant"):
        default_spec().with_weights({"v1": 1, "v3": 1})
    with pytest.raises(SpecError, match="no weight given"):
        default_spec().with_weights({"v1": 1})


def test_spec_is_frozen() -> None:
    spec = default_spec()
    with pytest.raises(AttributeError):
        spec.model = "x"  # type: ignore[misc]
    assert isinstance(spec, ExperimentSpec)


def test_smi_keeps_the_fail_fast_timeout_and_rejects_a_policy_set_later() -> None:
    """fail_fast_timeout is the policy controller's queue timeout, not a Service annotation, so it
    stays valid with SMI; switching a spec with a policy to SMI is refused like loading one."""
    smi = spec_from_mapping({"split": {"api": "smi-v1alpha2"}, "failure_policy": {"fail_fast_timeout": "1s"}})
    assert smi.failure_policy.fail_fast_timeout_s == 1.0
    with_retries = spec_from_mapping({"failure_policy": {"retries": {"on": "5xx", "limit": 2}}})
    with pytest.raises(SpecError, match=r"^failure_policy: retries cannot be used with split.api smi-v1alpha2"):
        with_retries.replace(split_api="smi-v1alpha2")
