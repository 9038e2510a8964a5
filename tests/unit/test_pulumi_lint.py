"""Linting a Pulumi program under Pulumi's mocks (no engine, CLI, cloud or cluster)."""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

from pytest_abtraffic._errors import PrerequisiteError, UsageError
from pytest_abtraffic._pulumi_lint import collect_resources, lint_pulumi_program, program_entry

DATA = Path(__file__).resolve().parents[1] / "data"
STARTING_POINT = DATA / "pulumi_starting_point"
HAVE_PULUMI = all(importlib.util.find_spec(m) is not None for m in ("pulumi", "pulumi_kubernetes"))
needs_pulumi = pytest.mark.skipif(
    not HAVE_PULUMI,
    reason="pulumi and pulumi-kubernetes are not installed (pip install pytest-abtraffic[pulumi])",
)

FIXED_PROGRAM = '''
import pulumi_kubernetes as k8s

NS = "ab"
k8s.core.v1.Namespace("ns", metadata={"name": NS, "annotations": {"linkerd.io/inject": "enabled"}})
for version in ("v1", "v2"):
    labels = {"app": "ai-model", "version": version}
    k8s.apps.v1.Deployment(
        f"ai-model-{version}",
        metadata={"name": f"ai-model-{version}", "namespace": NS, "labels": labels},
        spec={
            "replicas": 1,
            "selector": {"match_labels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"linkerd.io/inject": "enabled"}},
                "spec": {"containers": [{"name": "model", "image": f"my_model_{version}:1",
                                         "ports": [{"container_port": 8080, "name": "http"}]}]},
            },
        },
    )
    k8s.core.v1.Service(
        f"ai-model-service-{version}",
        metadata={"name": f"ai-model-service-{version}", "namespace": NS},
        spec={"selector": labels, "ports": [{"port": 80, "target_port": 8080}]},
    )
k8s.core.v1.Service(
    "ai-model-service",
    metadata={"name": "ai-model-service", "namespace": NS},
    spec={"selector": {"app": "ai-model"}, "ports": [{"port": 80, "target_port": "http"}]},
)
k8s.apiextensions.CustomResource(
    "route",
    api_version="gateway.networking.k8s.io/v1",
    kind="HTTPRoute",
    metadata={"name": "ai-model-route", "namespace": NS},
    spec={
        "parentRefs": [{"name": "ai-model-service", "kind": "Service", "group": "core", "port": 80}],
        "rules": [{"backendRefs": [{"name": "ai-model-service-v1", "port": 80, "weight": 90},
                                   {"name": "ai-model-service-v2", "port": 80, "weight": 10}]}],
    },
)
'''


@needs_pulumi
def test_starting_point_program() -> None:
    findings = lint_pulumi_program(STARTING_POINT)
    entry = str(STARTING_POINT / "__main__.py")
    assert all(f.path == entry for f in findings)
    summary = [(f.code, f.kind, re.sub(r"-[a-z0-9]{8}$", "-<suffix>", f.name)) for f in findings]
    # Object order is the program's: Deployment v1, Service v1, Deployment v2, Service v2, TrafficSplit.
    assert summary == [
        ("unmeshed-workload", "Deployment", "ai-model-v1"),
        ("pulumi-auto-named", "Service", "ai-model-service-v1-<suffix>"),
        ("unmeshed-workload", "Deployment", "ai-model-v2"),
        ("pulumi-auto-named", "Service", "ai-model-service-v2-<suffix>"),
        ("missing-apex-service", "TrafficSplit", "ai-model-split"),
        ("missing-backend-service", "TrafficSplit", "ai-model-split"),
        ("missing-backend-service", "TrafficSplit", "ai-model-split"),
    ]
    auto = findings[1]
    # Names both sides: the resource name the split uses and the name Pulumi will give the Service.
    assert "'ai-model-service-v1'" in auto.message
    assert f"'{auto.name}'" in auto.message
    assert "TrafficSplit/ai-model-split" in auto.message
    assert "metadata.name='ai-model-service-v1'" in auto.message


@needs_pulumi
def test_collected_resources_look_like_kubernetes_objects() -> None:
    resources = collect_resources(STARTING_POINT)
    assert [(r.type, r.name) for r in resources] == [
        ("kubernetes:apps/v1:Deployment", "ai-model-v1"),
        ("kubernetes:core/v1:Service", "ai-model-service-v1"),
        ("kubernetes:apps/v1:Deployment", "ai-model-v2"),
        ("kubernetes:core/v1:Service", "ai-model-service-v2"),
        ("kubernetes:split.smi-spec.io/v1alpha1:TrafficSplit", "ai-model-split"),
    ]
    assert [r.autonamed for r in resources] == [False, True, False, True, False]
    service = resources[1].inputs
    assert service["metadata"]["name"].startswith("ai-model-service-v1-")
    assert service["metadata"]["annotations"] == {"pulumi.com/autonamed": "true"}
    # Whole numbers come back as ints (Pulumi's wire format sends floats); quantities stay strings.
    assert service["spec"]["ports"] == [{"port": 80, "targetPort": 8080}]
    assert type(service["spec"]["ports"][0]["port"]) is int
    assert resources[4].inputs["spec"]["backends"][0] == {"service": "ai-model-service-v1", "weight": "500m"}
    # Deterministic suffixes: the same program gives the same names.
    again = collect_resources(STARTING_POINT / "__main__.py")
    assert [r.inputs["metadata"]["name"] for r in again] == [r.inputs["metadata"]["name"] for r in resources]


@needs_pulumi
def test_fixed_program_is_clean(tmp_path: Path) -> None:
    (tmp_path / "__main__.py").write_text(FIXED_PROGRAM)
    assert lint_pulumi_program(tmp_path) == []
    # Dropping one name brings back exactly the auto-naming problem (plus the dangling reference).
    (tmp_path / "__main__.py").write_text(FIXED_PROGRAM.replace(
        '"name": f"ai-model-service-{version}", ', ""))
    assert sorted({f.code for f in lint_pulumi_program(tmp_path)}) == [
        "missing-backend-service", "pulumi-auto-named"]


@needs_pulumi
def test_config_file_resources_are_expanded(tmp_path: Path) -> None:
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent(f"""
        import pulumi_kubernetes as k8s
        k8s.yaml.ConfigFile("start", file={str(DATA / "starting_point.yaml")!r})
    """))
    assert [f.code for f in lint_pulumi_program(program)] == [
        "unmeshed-workload", "unmeshed-workload", "missing-apex-service"]


@needs_pulumi
def test_failing_program_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "__main__.py").write_text("raise RuntimeError('boom from the program')\n")
    with pytest.raises(UsageError, match="boom from the program"):
        lint_pulumi_program(tmp_path)


def test_program_entry(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such Pulumi program"):
        program_entry(tmp_path / "missing")
    with pytest.raises(UsageError, match=r"no __main__\.py"):
        program_entry(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: p\nruntime: python\nmain: src/\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "__main__.py").write_text("")
    assert program_entry(tmp_path) == tmp_path / "src" / "__main__.py"
    assert program_entry(STARTING_POINT) == STARTING_POINT / "__main__.py"


def test_without_pulumi_installed_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "pulumi" else real(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(PrerequisiteError, match=r"pip install pytest-abtraffic\[pulumi\]"):
        lint_pulumi_program(STARTING_POINT)
