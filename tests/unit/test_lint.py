"""The manifest linter: one bad and one fixed input per check, file handling and ordering."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_abtraffic._errors import UsageError
from pytest_abtraffic._lint import CODES, Finding, lint_objects, lint_paths
from pytest_abtraffic._manifests import dump_yaml, render_experiment, split_object
from pytest_abtraffic._spec import FailureAccrual, FailurePolicy, default_spec

DATA = Path(__file__).resolve().parents[1] / "data"
STARTING_POINT = DATA / "starting_point.yaml"
Objects = list[dict[str, Any]]


def rendered(api: str = "httproute", **changes: Any) -> Objects:
    return copy.deepcopy(render_experiment(default_spec(split_api=api, **changes)))


def lint(objects: Objects, path: str = "exp.yaml") -> list[Finding]:
    return lint_objects([(path, o) for o in objects])


def codes(objects: Objects) -> list[str]:
    return [f.code for f in lint(objects)]


def obj(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"].get("name") == name]
    return found


def split(objects: Objects) -> dict[str, Any]:
    return objects[-1]


def backend_refs(objects: Objects) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = split(objects)["spec"]["rules"][0]["backendRefs"]
    return refs


@pytest.mark.parametrize("group", ["gateway.networking.k8s.io", "policy.linkerd.io"])
@pytest.mark.parametrize("api", ["smi-v1alpha1", "smi-v1alpha2", "httproute"])
def test_kit_output_is_clean(api: str, group: str) -> None:
    assert lint(rendered(api, route_group=group)) == []


def test_starting_point_yaml() -> None:
    findings = lint_paths([STARTING_POINT])
    assert [(f.code, f.kind, f.name) for f in findings] == [
        ("unmeshed-workload", "Deployment", "ai-model-v1"),
        ("unmeshed-workload", "Deployment", "ai-model-v2"),
        ("missing-apex-service", "TrafficSplit", "ai-model-split"),
    ]
    assert all(f.path == str(STARTING_POINT) for f in findings)
    assert "'ai-model-service'" in findings[2].message


def test_finding_str() -> None:
    finding = Finding("a.yaml", "Service", "s", "broken", "selector-matches-no-pods")
    assert str(finding) == "a.yaml: Service/s: broken"


# -- one bad and one fixed input per check ---------------------------------------------------------------
# Each case: (code, split API, mutation of the kit's rendered output). The fixed input is the unmutated
# rendering (and for some checks an explicit repair), which must not report the code.


def _drop(kind: str, name: str) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        objects.remove(obj(objects, kind, name))
    return edit


def _apex_headless(objects: Objects) -> None:
    obj(objects, "Service", "ai-model-service")["spec"]["clusterIP"] = "None"


def _apex_external_name(objects: Objects) -> None:
    apex = obj(objects, "Service", "ai-model-service")
    apex["spec"] = {"type": "ExternalName", "externalName": "example.com"}


def _parent_port(objects: Objects) -> None:
    split(objects)["spec"]["parentRefs"][0]["port"] = 8081


def _parent_kindless(objects: Objects) -> None:
    del split(objects)["spec"]["parentRefs"][0]["kind"]


def _smi_backend_renamed(objects: Objects) -> None:
    split(objects)["spec"]["backends"][1]["service"] = "ai-model-service-v3"


def _route_backend_renamed(objects: Objects) -> None:
    backend_refs(objects)[1]["name"] = "ai-model-service-v3"


def _smi_backend_port(objects: Objects) -> None:
    obj(objects, "Service", "ai-model-service-v2")["spec"]["ports"][0]["port"] = 8080


def _route_backend_port(objects: Objects) -> None:
    backend_refs(objects)[0]["port"] = 8080


def _no_port(objects: Objects) -> None:
    del backend_refs(objects)[0]["port"]


def _selector_v3(objects: Objects) -> None:
    obj(objects, "Service", "ai-model-service-v2")["spec"]["selector"]["version"] = "v3"


def _named_target(objects: Objects) -> None:
    obj(objects, "Service", "ai-model-service")["spec"]["ports"][0]["targetPort"] = "web"


def _numeric_target(objects: Objects) -> None:
    obj(objects, "Service", "ai-model-service-v1")["spec"]["ports"][0]["targetPort"] = 9090


def _unmesh(objects: Objects) -> None:
    del obj(objects, "Namespace", "abtraffic-ai-model")["metadata"]["annotations"]
    del obj(objects, "Deployment", "ai-model-v1")["spec"]["template"]["metadata"]["annotations"]


def _opt_out(objects: Objects) -> None:
    template = obj(objects, "Deployment", "ai-model-v2")["spec"]["template"]
    template["metadata"]["annotations"]["linkerd.io/inject"] = "disabled"


def _smi_weights(*weights: Any) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        for backend, weight in zip(split(objects)["spec"]["backends"], weights, strict=True):
            backend["weight"] = weight
    return edit


def _route_weights(*weights: Any) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        for ref, weight in zip(backend_refs(objects), weights, strict=True):
            ref["weight"] = weight
    return edit


def _add_httproute(objects: Objects) -> None:
    objects.append(split_object(default_spec(split_api="httproute"), "abtraffic-ai-model"))


def _unnamed_backend(objects: Objects) -> None:
    del obj(objects, "Service", "ai-model-service-v1")["metadata"]["name"]


def _shadowed_header_rule(objects: Objects) -> None:
    # Two header rules with the same match (header names compare case-insensitively): the second never matches.
    rules = split(objects)["spec"]["rules"]
    v2 = {"name": "ai-model-service-v2", "port": 80}
    rules.insert(0, {"matches": [{"headers": [{"name": "X-Cohort", "value": "beta"}]}], "backendRefs": [dict(v2)]})
    rules.insert(0, {"matches": [{"headers": [{"type": "Exact", "name": "x-cohort", "value": "beta"}]}],
                     "backendRefs": [dict(v2)]})


def _split_version(version: str) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        split(objects)["apiVersion"] = f"split.smi-spec.io/{version}"
    return edit


CASES: list[tuple[str, str, Callable[[Objects], None]]] = [
    ("missing-apex-service", "smi-v1alpha1", _drop("Service", "ai-model-service")),
    ("missing-apex-service", "httproute", _drop("Service", "ai-model-service")),
    ("headless-apex", "smi-v1alpha2", _apex_headless),
    ("headless-apex", "httproute", _apex_external_name),
    ("apex-port-mismatch", "httproute", _parent_port),
    ("parentref-not-service", "httproute", _parent_kindless),
    ("missing-backend-service", "smi-v1alpha1", _smi_backend_renamed),
    ("missing-backend-service", "httproute", _route_backend_renamed),
    ("backend-port-mismatch", "smi-v1alpha1", _smi_backend_port),
    ("backend-port-mismatch", "httproute", _route_backend_port),
    ("backendref-without-port", "httproute", _no_port),
    ("selector-matches-no-pods", "httproute", _selector_v3),
    ("target-port-not-exposed", "httproute", _named_target),
    ("target-port-not-exposed", "smi-v1alpha1", _numeric_target),
    ("unmeshed-workload", "smi-v1alpha1", _unmesh),
    ("unmeshed-workload", "httproute", _opt_out),
    ("weight-format", "smi-v1alpha2", _smi_weights("500m", "500m")),
    ("weight-format", "smi-v1alpha1", _smi_weights("fifty", "500m")),
    ("weight-format", "smi-v1alpha1", _smi_weights(None, "500m")),
    ("weight-format", "httproute", _route_weights("500m", 50)),
    ("weight-format", "httproute", _route_weights(50.5, 50)),
    ("weight-format", "httproute", _route_weights(True, 50)),
    ("weight-format", "httproute", _route_weights(2_000_000, 50)),
    ("negative-weight", "httproute", _route_weights(-1, 50)),
    ("negative-weight", "smi-v1alpha1", _smi_weights("-500m", "500m")),
    ("all-weights-zero", "httproute", _route_weights(0, 0)),
    ("all-weights-zero", "smi-v1alpha1", _smi_weights("0m", 0)),
    ("all-weights-zero", "smi-v1alpha2", _smi_weights(0, 0)),
    ("mixed-split-apis", "smi-v1alpha1", _add_httproute),
    ("unnamed-resource", "smi-v1alpha1", _unnamed_backend),
    ("unsupported-split-version", "smi-v1alpha2", _split_version("v1alpha3")),
    ("unsupported-split-version", "smi-v1alpha2", _split_version("v1alpha4")),
    ("unreachable-route-rule", "httproute", _shadowed_header_rule),
]


@pytest.mark.parametrize(("code", "api", "edit"), CASES, ids=[f"{c}-{a}-{e.__name__}" for c, a, e in CASES])
def test_check_reports_bad_input_and_not_the_fixed_one(code: str, api: str, edit: Callable[[Objects], None]) -> None:
    fixed = rendered(api)
    assert code not in codes(fixed)
    bad = copy.deepcopy(fixed)
    edit(bad)
    found = [f for f in lint(bad) if f.code == code]
    assert found, lint(bad)
    assert all(f.path == "exp.yaml" and f.message for f in found)


def test_every_code_has_a_case() -> None:
    covered = {code for code, _, _ in CASES} | {"policy-ignored-with-smi", "pulumi-auto-named"}
    assert covered == set(CODES)


def test_policy_annotations_with_smi_are_flagged_and_fine_with_httproute() -> None:
    policy = FailurePolicy(failure_accrual=FailureAccrual())
    # The kit refuses to render this combination (test_spec), so graft the policy onto SMI output,
    # as a hand-written manifest would have it.
    objects = rendered("smi-v1alpha1")
    obj(objects, "Service", "ai-model-service")["metadata"].setdefault("annotations", {}).update(policy.annotations())
    findings = lint(objects)
    assert [(f.code, f.kind, f.name) for f in findings] == [
        ("policy-ignored-with-smi", "Service", "ai-model-service")]
    assert "balancer.linkerd.io/failure-accrual" in findings[0].message
    assert lint(rendered("httproute", failure_policy=policy)) == []


# -- details of individual checks ----------------------------------------------------------------------


def test_missing_apex_names_the_service_and_the_field() -> None:
    objects = rendered("httproute")
    _drop("Service", "ai-model-service")(objects)
    (finding,) = lint(objects)
    assert (finding.code, finding.kind, finding.name) == ("missing-apex-service", "HTTPRoute", "ai-model-route")
    assert "'ai-model-service'" in finding.message
    assert "spec.parentRefs[0].name" in finding.message


def test_unmeshed_is_fixed_by_namespace_annotation_alone() -> None:
    objects = rendered("httproute")
    for name in ("ai-model-v1", "ai-model-v2"):
        del obj(objects, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
    assert lint(objects) == []  # the Namespace carries linkerd.io/inject: enabled
    del obj(objects, "Namespace", "abtraffic-ai-model")["metadata"]["annotations"]
    assert [(f.code, f.name) for f in lint(objects)] == [
        ("unmeshed-workload", "ai-model-v1"), ("unmeshed-workload", "ai-model-v2")]


def test_workloads_not_behind_a_split_are_not_required_to_be_meshed() -> None:
    objects = rendered("httproute")
    objects.pop()  # no split object at all
    del obj(objects, "Namespace", "abtraffic-ai-model")["metadata"]["annotations"]
    for name in ("ai-model-v1", "ai-model-v2"):
        del obj(objects, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
    assert lint(objects) == []


def test_mixed_apis_in_different_namespaces_are_fine() -> None:
    objects = rendered("smi-v1alpha1")
    objects.append(split_object(default_spec(split_api="httproute"), "elsewhere"))
    assert "mixed-split-apis" not in codes(objects)


def test_unnamed_resource_mentions_the_dangling_reference() -> None:
    objects = rendered("smi-v1alpha1")
    _unnamed_backend(objects)
    unnamed = [f for f in lint(objects) if f.code == "unnamed-resource"]
    assert [(f.kind, f.name) for f in unnamed] == [("Service", "<no name>")]
    assert "'ai-model-service-v1'" in unnamed[0].message
    assert "TrafficSplit/ai-model-split" in unnamed[0].message


def test_numeric_target_port_is_not_flagged_when_no_ports_are_declared() -> None:
    objects = rendered("httproute")
    for name in ("ai-model-v1", "ai-model-v2"):
        del obj(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["ports"]
    # Named targetPort on the apex cannot resolve any more; numeric ones on the backends still work.
    assert {(f.code, f.name) for f in lint(objects)} == {("target-port-not-exposed", "ai-model-service")}


def test_objects_without_namespace_match_any_namespace() -> None:
    findings = lint_paths([STARTING_POINT])
    assert "missing-backend-service" not in {f.code for f in findings}


def test_namespaces_separate_objects() -> None:
    objects = rendered("smi-v1alpha1")
    obj(objects, "Service", "ai-model-service-v2")["metadata"]["namespace"] = "other"
    found = {(f.code, f.name) for f in lint(objects)}
    assert ("missing-backend-service", "ai-model-split") in found
    assert ("selector-matches-no-pods", "ai-model-service-v2") in found


def test_other_pod_owners_are_understood() -> None:
    objects = rendered("httproute")
    deployment = obj(objects, "Deployment", "ai-model-v2")
    template = deployment["spec"]["template"]
    objects[objects.index(deployment)] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {**template["metadata"], "name": "ai-model-v2-pod", "namespace": "abtraffic-ai-model"},
        "spec": template["spec"],
    }
    assert lint(objects) == []


# -- files ----------------------------------------------------------------------------------------------


def test_lint_paths_walks_directories_and_sorts_by_path(tmp_path: Path) -> None:
    objects = rendered("smi-v1alpha1")
    _drop("Service", "ai-model-service")(objects)
    del obj(objects, "Deployment", "ai-model-v1")["spec"]["template"]["metadata"]["annotations"]
    obj(objects, "Namespace", "abtraffic-ai-model")["metadata"]["annotations"] = {}
    (tmp_path / "sub").mkdir()
    (tmp_path / "b-workloads.yml").write_text(dump_yaml(objects[:-1]))
    (tmp_path / "sub" / "a-split.yaml").write_text(dump_yaml(objects[-1:]))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    (tmp_path / "values.yaml").write_text("replicas: 3\n")  # not a Kubernetes object: skipped
    findings = lint_paths([tmp_path])
    assert [(Path(f.path).name, f.code, f.name) for f in findings] == [
        ("b-workloads.yml", "unmeshed-workload", "ai-model-v1"),  # v2 keeps its template annotation
        ("a-split.yaml", "missing-apex-service", "ai-model-split"),
    ]
    # Sorted by path: the workloads file sorts before sub/ because "b-..." < "sub".
    assert [f.path for f in findings] == sorted(f.path for f in findings)


def test_lint_paths_expands_lists(tmp_path: Path) -> None:
    file = tmp_path / "list.yaml"
    import yaml

    file.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": rendered("httproute")}))
    assert lint_paths([file]) == []


def test_malformed_yaml_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: [x\n")
    with pytest.raises(UsageError, match=r"broken\.yaml: not valid YAML at line \d+"):
        lint_paths([STARTING_POINT, bad])


def test_unreadable_or_missing_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.yaml: no such file"):
        lint_paths([tmp_path / "nope.yaml"])
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00kind")
    with pytest.raises(UsageError, match=r"bin\.yaml: cannot read"):
        lint_paths([binary])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no Kubernetes objects found"):
        lint_paths([tmp_path / "empty"])
    with pytest.raises(UsageError):
        lint_paths([])
