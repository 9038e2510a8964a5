"""Experiments derived from the user's own objects: names, weights, images, ports; bad input; the
objects a cluster backend applies (exactly the user's, namespace rewritten); ``lint --fix``."""

from __future__ import annotations

import copy
import io
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from _fake_kube import FakeKube, linkerd_objects
from test_cluster_backends import job_log
from test_prereq import Factory, write_kubeconfig

from pytest_abtraffic import spec_from_manifests
from pytest_abtraffic._cluster import ClusterSettings
from pytest_abtraffic._cluster._existing import ExistingClusterBackend
from pytest_abtraffic._errors import SpecError, UsageError
from pytest_abtraffic._from_manifests import (
    ManifestExperiment,
    ManifestLintError,
    SourceObject,
    check_local_commands,
    cluster_objects,
    derive_experiment,
    manifest_settings_from_mapping,
    read_manifests,
)
from pytest_abtraffic._lint import lint_objects
from pytest_abtraffic._load import LoadPlan
from pytest_abtraffic._mend import mend_objects

DATA = Path(__file__).resolve().parents[1] / "data"
MENDED = DATA / "mended_starting_point" / "ai-model.yaml"
STARTING_POINT = DATA / "starting_point.yaml"
COMMANDS = {"my_model_v1:latest": ["{python}", "srv.py", "--port", "{port}"],
            "my_model_v2:latest": ["{python}", "srv.py", "--port", "{port}"]}


def _objects(path: Path = MENDED) -> list[dict[str, Any]]:
    return [dict(d) for d in yaml.safe_load_all(path.read_text()) if d]


def _sources(objects: list[dict[str, Any]], source: str = "test.yaml") -> list[SourceObject]:
    return [SourceObject(source, o) for o in objects]


def _route_objects(version_labels: bool = True) -> list[dict[str, Any]]:
    """The mended objects with an HTTPRoute (90/10) instead of the TrafficSplit."""
    objects = [o for o in _objects() if o["kind"] != "TrafficSplit"]
    if not version_labels:
        for obj in objects:
            if obj["kind"] == "Deployment":
                obj["spec"]["template"]["metadata"]["labels"].pop("version")
                obj["spec"]["template"]["metadata"]["labels"]["track"] = obj["metadata"]["name"]
                obj["spec"]["selector"]["matchLabels"] = dict(obj["spec"]["template"]["metadata"]["labels"])
            if obj["kind"] == "Service" and obj["metadata"]["name"] != "ai-model-service":
                track = "ai-model-" + obj["metadata"]["name"].rsplit("-", 1)[1]
                obj["spec"]["selector"] = {"app": "ai-model", "track": track}
    objects.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": "ai-model-route"},
                    "spec": {"parentRefs": [{"name": "ai-model-service", "kind": "Service", "group": "core",
                                             "port": 80}],
                             "rules": [{"backendRefs": [
                                 {"name": "ai-model-service-v1", "port": 80, "weight": 90},
                                 {"name": "ai-model-service-v2", "port": 80, "weight": 10}]}]}})
    return objects


def test_the_mended_starting_point_gives_its_own_experiment() -> None:
    spec = spec_from_manifests(MENDED, local_commands=COMMANDS)
    assert isinstance(spec, ManifestExperiment)
    assert spec.split_api == "smi-v1alpha1" and spec.split_kind == "TrafficSplit"
    assert spec.split_name == "ai-model-split"
    assert spec.apex_service == "ai-model-service" and spec.service_port == 80
    assert spec.variant_names == ("v1", "v2")
    assert [v.weight for v in spec.variants] == ["700m", "300m"]
    assert spec.shares() == pytest.approx({"v1": 0.7, "v2": 0.3})
    assert [spec.service_name(v) for v in ("v1", "v2")] == ["ai-model-service-v1", "ai-model-service-v2"]
    assert [spec.deployment_name(v) for v in ("v1", "v2")] == ["ai-model-v1", "ai-model-v2"]
    assert [v.image for v in spec.variants] == ["my_model_v1:latest", "my_model_v2:latest"]
    assert [v.port for v in spec.variants] == [8080, 8080]
    assert [v.replicas for v in spec.variants] == [1, 2]
    assert [v.ready_path for v in spec.variants] == ["/readyz", "/readyz"]
    assert spec.variants[0].command == tuple(COMMANDS["my_model_v1:latest"])
    assert spec.model == "ai-model"


def test_httproute_weights_and_variant_named_by_service_without_version_label() -> None:
    spec = derive_experiment(_sources(_route_objects(version_labels=False)))
    assert spec.split_api == "httproute" and spec.route_group == "gateway.networking.k8s.io"
    assert spec.variant_names == ("ai-model-service-v1", "ai-model-service-v2")
    assert spec.shares() == pytest.approx({"ai-model-service-v1": 0.9, "ai-model-service-v2": 0.1})
    # The load plan carries the spec's version header: the value servers send is the variant name.
    assert LoadPlan.from_spec(spec).version_header == "x-model-version"


def test_traffic_split_v1alpha2_whole_number_weights() -> None:
    objects = _objects()
    split = objects[-1]
    split["apiVersion"] = "split.smi-spec.io/v1alpha2"
    split["spec"]["backends"][0]["weight"] = 3
    split["spec"]["backends"][1]["weight"] = 1
    spec = derive_experiment(_sources(objects))
    assert spec.split_api == "smi-v1alpha2" and spec.shares() == pytest.approx({"v1": 0.75, "v2": 0.25})


def test_spec_file_supplies_what_objects_cannot_say() -> None:
    settings = manifest_settings_from_mapping({
        "version_header": "x-served-by", "load": {"path": "/v1/predict", "users": 4},
        "scenarios": [{"action": "kill", "variant": "v2", "at": "2s", "duration": "4s"}], "local_commands": COMMANDS})
    spec = derive_experiment(_sources(_objects()), settings.base, local_commands=settings.local_commands)
    assert spec.version_header == "x-served-by" and spec.load.path == "/v1/predict" and spec.load.users == 4
    assert spec.scenarios and spec.variants[1].command is not None


@pytest.mark.parametrize(("data", "field", "text"), [
    ({"variants": []}, "variants", "comes from the objects"),
    ({"split": {"api": "httproute"}}, "split", "comes from the objects"),
    ({"local_commands": {"img": "python srv.py"}}, "local_commands.img", "not a shell string"),
    ({"local_commands": {"img": []}}, "local_commands.img", "non-empty list"),
])
def test_bad_spec_files_for_manifests(data: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(SpecError) as err:
        manifest_settings_from_mapping(data)
    assert err.value.field == field and text in str(err.value)


def test_scenario_naming_a_variant_the_objects_do_not_have_is_refused() -> None:
    step = {"action": "kill", "variant": "v3", "at": "2s", "duration": "4s"}
    settings = manifest_settings_from_mapping({"scenarios": [step]})
    with pytest.raises(SpecError, match="v3"):
        derive_experiment(_sources(_objects()), settings.base)


def test_every_image_without_a_local_command_is_named_with_the_key_to_add() -> None:
    spec = derive_experiment(_sources(_objects()), local_commands={"ai-model-v1": ["{python}", "x.py"]})
    assert spec.variants[0].command is not None  # keyed by Deployment name
    with pytest.raises(SpecError) as err:
        check_local_commands(spec)
    message = str(err.value)
    assert err.value.field == "local_commands" and "my_model_v2:latest" in message
    assert "my_model_v1:latest" not in message.split("local_commands:")[0]
    none = derive_experiment(_sources(_objects()))
    with pytest.raises(SpecError) as err:
        check_local_commands(none)
    assert "my_model_v1:latest" in str(err.value) and "my_model_v2:latest" in str(err.value)
    assert "local_commands:" in str(err.value)


# -- bad input --------------------------------------------------------------------------------------


def test_no_split_among_the_objects() -> None:
    objects = [o for o in _objects() if o["kind"] != "TrafficSplit"]
    with pytest.raises(SpecError) as err:
        derive_experiment(_sources(objects))
    assert "no TrafficSplit" in str(err.value) and "found: Deployment/ai-model-v1" in str(err.value)


def test_two_splits_for_one_apex() -> None:
    objects = _objects()
    second = copy.deepcopy(objects[-1])
    second["metadata"]["name"] = "another-split"
    with pytest.raises(SpecError) as err:
        derive_experiment(_sources([*objects, second]))
    assert "TrafficSplit/ai-model-split" in str(err.value) and "TrafficSplit/another-split" in str(err.value)
    # SMI and HTTPRoute for the same apex: lint finds it first (mixed-split-apis) ...
    route = _route_objects()[-1]
    codes = [f.code for f in lint_objects([("m.yaml", o) for o in [*objects, route]])]
    assert "mixed-split-apis" in codes
    # ... and the derivation refuses it too when called without lint.
    with pytest.raises(SpecError, match="HTTPRoute/ai-model-route"):
        derive_experiment(_sources([*objects, route]))


def test_backend_without_a_deployment_behind_its_selector() -> None:
    objects = [o for o in _objects() if o["metadata"]["name"] != "ai-model-v2"]
    with pytest.raises(SpecError) as err:
        derive_experiment(_sources(objects))
    assert err.value.field == "Service/ai-model-service-v2" and "no Deployment" in str(err.value)
    assert "app=ai-model,version=v2" in str(err.value)


def test_lint_gates_spec_from_manifests() -> None:
    with pytest.raises(ManifestLintError) as err:
        spec_from_manifests(STARTING_POINT)
    assert len(err.value.findings) == 3
    assert {f.code for f in err.value.findings} == {"missing-apex-service", "unmeshed-workload"}


def test_not_kubernetes_yaml_names_the_file(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("replicaCount: 2\nimage: {repository: x}\n")
    with pytest.raises(UsageError) as err:
        read_manifests([values])
    assert str(values) in str(err.value) and "document 1 is not a Kubernetes object" in str(err.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Service\n  metadata: [\n")
    with pytest.raises(UsageError, match=r"broken.yaml: not valid YAML at line"):
        read_manifests([broken])
    with pytest.raises(UsageError, match="no such file"):
        read_manifests([tmp_path / "missing.yaml"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no \.yaml"):
        read_manifests([tmp_path / "empty"])


def test_helm_template_style_stdin() -> None:
    parts = [f"---\n# Source: ai-model/templates/{o['kind'].lower()}.yaml\n{yaml.safe_dump(o)}" for o in _objects()]
    text = "---\n# Source: ai-model/templates/NOTES.txt\n" + "".join(parts) + "---\n"
    objects = read_manifests(["-"], stdin=io.StringIO(text))
    assert [o.source for o in objects] == ["<stdin>"] * 6
    assert spec_from_manifests("-", stdin=io.StringIO(text)).shares() == pytest.approx({"v1": 0.7, "v2": 0.3})


def test_directory_and_kind_list(tmp_path: Path) -> None:
    (tmp_path / "k8s").mkdir()
    objects = _objects()
    (tmp_path / "k8s" / "a.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                                             "items": objects[:4]}))
    (tmp_path / "k8s" / "b.yml").write_text(yaml.safe_dump_all(objects[4:]))
    spec = spec_from_manifests(tmp_path / "k8s")
    assert spec.variant_names == ("v1", "v2") and len(spec.objects) == 6


# -- the objects a cluster gets ---------------------------------------------------------------------


def test_cluster_objects_are_the_users_with_only_the_namespace_rewritten() -> None:
    objects = _objects()
    for obj in objects:
        obj["metadata"]["namespace"] = "staging"
    route_objects = _route_objects()
    route = route_objects[-1]
    route["metadata"]["namespace"] = "staging"
    route["spec"]["parentRefs"][0]["namespace"] = "staging"
    spec = derive_experiment(_sources([*objects[:-1], route]))
    out = cluster_objects(spec, "abt-kit")
    assert out[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "abt-kit"}}
    assert len(out) == 1 + len(spec.objects)
    for given, applied in zip(spec.objects, out[1:], strict=True):
        expected = copy.deepcopy(dict(given.obj))
        expected["metadata"]["namespace"] = "abt-kit"
        if expected["kind"] == "HTTPRoute":
            expected["spec"]["parentRefs"][0]["namespace"] = "abt-kit"
        assert applied == expected
    assert spec.objects[0].obj["metadata"]["namespace"] == "staging"  # the input is not changed


def test_cluster_objects_refuse_cluster_scoped_kinds_and_several_namespaces() -> None:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}}
    spec = derive_experiment(_sources([*_objects(), role]))
    with pytest.raises(SpecError, match="ClusterRole/r: ClusterRole is cluster-scoped"):
        cluster_objects(spec, "abt-kit")
    objects = _objects()
    objects[0]["metadata"]["namespace"] = "a"
    objects[1]["metadata"]["namespace"] = "b"
    with pytest.raises(SpecError, match="several namespaces"):
        cluster_objects(derive_experiment(_sources(objects)), "abt-kit")


def test_existing_backend_applies_exactly_the_users_objects(tmp_path: Path) -> None:
    """Apart from the kit's namespace and the load Job's own objects, every write is one of the user's
    objects as given (namespace rewritten); the split is waited for under its own name."""
    spec = spec_from_manifests(MENDED)
    fake = FakeKube(linkerd_objects(smi=True), job_log=lambda pod: job_log({"v1": 70, "v2": 30}))
    config = write_kubeconfig(tmp_path / "kubeconfig", ["dev"])
    settings = ClusterSettings(kubeconfig=str(config), context="dev", report_dir=str(tmp_path / "r"),
                               ready_timeout_s=5.0)
    backend = ExistingClusterBackend(settings, spec, api_factory=Factory(fake))
    deployment = backend.deploy(spec, namespace="abt-unit")
    try:
        expected = {(o["kind"], o["metadata"]["name"]): o for o in cluster_objects(spec, "abt-unit")[1:]}
        applied = [c for c in fake.calls if c[0] == "apply"]
        assert applied[0][1:] == ("Namespace", None, "abt-unit")
        user_writes = [(c[1], c[3]) for c in applied[1:]]
        assert user_writes == list(expected)
        for key, obj in expected.items():
            stored = copy.deepcopy(fake.objects[(key[0], "abt-unit", key[1])])
            stored.pop("status", None)  # written by the fake's controllers
            stored["metadata"].pop("generation", None)
            assert stored == obj
        assert deployment.target_url() == "http://ai-model-service.abt-unit.svc.cluster.local:80"
        result = deployment.run_load(LoadPlan.from_spec(spec, max_requests=100))
        assert {r.version for r in result.records} == {"v1", "v2"}
        load_writes = [c for c in fake.calls if c[0] == "apply"][len(applied):]
        assert {c[1] for c in load_writes} <= {"ServiceAccount", "ConfigMap", "Job"}
        assert all(c[2] == "abt-unit" for c in fake.writes if c[1] != "Namespace")
    finally:
        backend.close()


# -- lint --fix ------------------------------------------------------------------------------------


def test_mend_turns_the_starting_point_into_objects_without_findings() -> None:
    objects = _objects(STARTING_POINT)
    assert len(lint_objects([("s.yaml", o) for o in objects])) == 3
    mended = mend_objects(objects)
    assert lint_objects([("m.yaml", o) for o in mended]) == []
    apex = next(o for o in mended if o["kind"] == "Service" and o["metadata"]["name"] == "ai-model-service")
    assert apex["spec"] == {"type": "ClusterIP", "selector": {"app": "ai-model"},
                            "ports": [{"port": 80, "targetPort": 8080}]}
    assert [o["kind"] for o in mended][-2:] == ["Service", "TrafficSplit"]
    for dep in (o for o in mended if o["kind"] == "Deployment"):
        assert dep["spec"]["template"]["metadata"]["annotations"] == {"linkerd.io/inject": "enabled"}
    assert objects == _objects(STARTING_POINT)  # the input is not changed
    # Mended: nothing else differs from the original objects.
    originals = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    for obj in mended:
        original = originals.get((obj["kind"], obj["metadata"]["name"]))
        if original is None:
            continue
        stripped = copy.deepcopy(obj)
        stripped.get("spec", {}).get("template", {}).get("metadata", {}).pop("annotations", None)
        assert stripped == original


def test_mend_leaves_an_explicit_inject_disabled_and_sets_pulumi_names() -> None:
    objects = _objects(STARTING_POINT)
    objects[0]["spec"]["template"]["metadata"]["annotations"] = {"linkerd.io/inject": "disabled"}
    service = objects[2]
    service["metadata"] = {"name": "ai-model-service-v1-abc12345", "annotations": {"pulumi.com/autonamed": "true"}}
    mended = mend_objects(objects, {2: "ai-model-service-v1"})
    assert mended[2]["metadata"] == {"name": "ai-model-service-v1"}
    assert mended[0]["spec"]["template"]["metadata"]["annotations"] == {"linkerd.io/inject": "disabled"}
    codes = [f.code for f in lint_objects([("m.yaml", o) for o in mended])]
    assert codes == ["unmeshed-workload"]


def test_mend_does_not_guess_an_apex_selector() -> None:
    objects = _objects(STARTING_POINT)
    objects[3]["spec"]["selector"] = {"tier": "canary"}  # nothing shared with the v1 backend
    mended = mend_objects(objects)
    assert not any(o["kind"] == "Service" and o["metadata"]["name"] == "ai-model-service" for o in mended)


def test_spec_settings_text_example_is_valid() -> None:
    text = (DATA / "mended_starting_point" / "spec.yaml").read_text()
    settings = manifest_settings_from_mapping(yaml.safe_load(textwrap.dedent(text)))
    assert set(settings.local_commands) == {"my_model_v1:latest", "my_model_v2:latest"}


def test_objects_applied_to_a_cluster_pass_the_kubernetes_and_crd_schemas() -> None:
    from pytest_abtraffic._manifests import validate_objects

    assert validate_objects(cluster_objects(spec_from_manifests(MENDED), "abt-kit")) == []
    mended = mend_objects(_objects(STARTING_POINT))
    assert validate_objects(mended) == []  # what `lint --fix` prints is valid Kubernetes
