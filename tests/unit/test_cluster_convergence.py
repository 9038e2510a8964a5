"""The convergence gate against the fake API and the policy output format.

Upstream sources: linkerd2 edge-25.4.4 ``cli/cmd/policy.go`` (``linkerd diagnostics policy
svc/<name> <port>`` calls ``OutboundPolicies.Get`` for ``<name>.<ns>.svc:<port>`` and prints it with
``encoding/json`` for ``-o json``), ``policy-controller/grpc/src/outbound.rs`` (``Detect`` with the
routes under ``http1``/``http2``; ``service_meta``), ``policy-controller/grpc/src/outbound/http.rs``
(``RandomAvailable`` weighted backends), ``policy-controller/k8s/status/src/index.rs`` (route
conditions without ``observedGeneration``); linkerd2-proxy-api v0.16.0 ``proto/outbound.proto``,
``proto/meta.proto`` and ``go/outbound/outbound.pb.go`` (json tags; oneofs as ``Kind``; ``weight``
``omitempty``); linkerd-smi v0.2.7 ``pkg/adaptor/controller.go`` (ServiceProfile ``dstOverrides``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from _fake_kube import FakeKube

from pytest_abtraffic._cluster import ClusterSettings, format_plan, plan
from pytest_abtraffic._cluster._converge import ConvergenceGate, programmed_route_weights, route_status_current
from pytest_abtraffic._errors import NotReadyError, ProgrammedWeightsError
from pytest_abtraffic._manifests import split_object
from pytest_abtraffic._spec import default_spec

NS = "abt-conv"

# What `linkerd diagnostics policy -n abt-conv svc/ai-model-service 80 -o json` prints for a 90/10 HTTPRoute
# with a third backend at weight 0 (omitted by omitempty), trimmed of queue/balancer details.
SAMPLE = {
    "protocol": {"Kind": {"Detect": {
        "timeout": {"seconds": 10},
        "opaque": {"routes": [{"metadata": {"Kind": {"Default": "opaq"}}}]},
        "http1": {"routes": [{
            "metadata": {"Kind": {"Resource": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                               "name": "ai-model-route", "namespace": NS}}},
            "rules": [{
                "matches": [{"path": {"Kind": {"Prefix": "/"}}}],
                "backends": {"Kind": {"RandomAvailable": {"backends": [
                    {"backend": {"backend": {"metadata": {"Kind": {"Resource": {
                        "group": "core", "kind": "Service", "name": "ai-model-v1", "namespace": NS, "port": 80}}},
                        "Kind": {"Balancer": {}}}}, "weight": 90},
                    {"backend": {"backend": {"metadata": {"Kind": {"Resource": {
                        "group": "core", "kind": "Service", "name": "ai-model-v2", "namespace": NS, "port": 80}}},
                        "Kind": {"Balancer": {}}}}, "weight": 10},
                    {"backend": {"backend": {"metadata": {"Kind": {"Resource": {
                        "group": "core", "kind": "Service", "name": "ai-model-v3", "namespace": NS, "port": 80}}},
                        "Kind": {"Balancer": {}}}}},
                ]}}},
            }],
        }]},
        "http2": {"routes": []},
    }}},
    "metadata": {"Kind": {"Resource": {"group": "core", "kind": "Service", "name": "ai-model-service",
                                       "namespace": NS, "port": 80}}},
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def deployed(fake: FakeKube, weights: dict[str, int] | None = None, split_api: str = "httproute") -> Any:
    spec = default_spec(split_api=split_api)
    if weights:
        spec = spec.with_weights(weights)
    obj = split_object(spec, NS)
    fake.apply(obj)
    return spec, obj


def gate(fake: FakeKube, clock: Clock) -> ConvergenceGate:
    return ConvergenceGate(fake, NS, policy_query=fake.policy_json, clock=clock, sleep=clock.sleep)


def test_policy_output_is_parsed_for_the_routes_backends_and_weights() -> None:
    text = json.dumps(SAMPLE, indent=2)
    assert programmed_route_weights(text, "ai-model-route", NS) == {"ai-model-v1": 90, "ai-model-v2": 10,
                                                                   "ai-model-v3": 0}
    assert programmed_route_weights(text, "other-route", NS) is None  # not served (yet)
    with pytest.raises(NotReadyError, match="cannot parse"):
        programmed_route_weights("Error: no such service", "ai-model-route", NS)


def test_missing_observed_generation_is_unknown_and_an_old_one_is_stale() -> None:
    fake = FakeKube()
    _, obj = deployed(fake)
    ok, detail = route_status_current(fake, NS, obj)
    assert ok and "may be an old one" in detail  # Linkerd never writes it: not proof of anything
    live = fake.objects[("HTTPRoute", NS, "ai-model-route")]
    live["metadata"]["generation"] = 3
    for cond in live["status"]["parents"][0]["conditions"]:
        cond["observedGeneration"] = 2
    ok, detail = route_status_current(fake, NS, obj)
    assert not ok and "generation 2 < 3" in detail


def test_gate_waits_for_the_new_weights_then_records_how_long_it_took() -> None:
    fake = FakeKube()
    clock = Clock()
    spec, obj = deployed(fake)
    first = gate(fake, clock).wait(spec, obj, timeout_s=60)
    assert first.programmed == {"v1": 50.0, "v2": 50.0} and first.converged_after_s == 0
    # A weight change: the status is "Accepted" at once (no observedGeneration), the policy lags 4 polls.
    new, obj = deployed(fake, {"v1": 90, "v2": 10})
    fake.policy_stale = 4
    result = gate(fake, clock).wait(new, obj, timeout_s=60)
    assert result.declared == {"v1": 90.0, "v2": 10.0} and result.programmed == {"v1": 90.0, "v2": 10.0}
    assert result.converged_after_s == 4.0  # waited while the old 50/50 was still served
    assert len(fake.policy_queries) == 1 + 5
    assert result.source == "linkerd diagnostics policy"


def test_gate_times_out_with_a_clear_message_when_the_route_is_never_served() -> None:
    fake = FakeKube()
    clock = Clock()
    spec, obj = deployed(fake)
    fake.policy_stale = 10**6  # the controller never picks the route up
    with pytest.raises(NotReadyError) as info:
        gate(fake, clock).wait(spec, obj, timeout_s=30)
    assert clock.now == 30
    text = str(info.value)
    assert "did not converge within 30s" in text and "does not include the route yet" in text and "v1=50" in text


def test_declared_is_not_programmed_fails_with_both_weights() -> None:
    fake = FakeKube()
    clock = Clock()
    spec, obj = deployed(fake, {"v1": 90, "v2": 10})
    # e.g. envoyproxy/gateway#4602 (99:1 served ~50/50), seldon-core#4067
    fake.served_override = {spec.service_name("v1"): 50, spec.service_name("v2"): 50}
    with pytest.raises(ProgrammedWeightsError) as info:
        gate(fake, clock).wait(spec, obj, timeout_s=20)
    assert isinstance(info.value, AssertionError)
    assert info.value.declared == {"v1": 90.0, "v2": 10.0} and info.value.programmed == {"v1": 50.0, "v2": 50.0}
    text = str(info.value)
    assert "declared:   v1=90, v2=10" in text and "programmed: v1=50, v2=50" in text


def test_gate_without_the_linkerd_cli_says_how_to_get_it() -> None:
    fake = FakeKube()
    spec, obj = deployed(fake)
    with pytest.raises(NotReadyError, match="install the linkerd CLI"):
        ConvergenceGate(fake, NS, policy_query=None).wait(spec, obj, timeout_s=1)


def test_smi_gate_reads_the_service_profile_dst_overrides() -> None:
    fake = FakeKube()
    clock = Clock()
    spec, obj = deployed(fake, {"v1": 9, "v2": 1}, split_api="smi-v1alpha1")
    result = gate(fake, clock).wait(spec, obj, timeout_s=10)
    assert result.source == "ServiceProfile dstOverrides" and result.programmed == {"v1": 0.9, "v2": 0.1}
    profile = fake.objects[("ServiceProfile", NS, f"ai-model-service.{NS}.svc.cluster.local")]
    profile["spec"]["dstOverrides"][0]["weight"] = "500m"
    profile["spec"]["dstOverrides"][1]["weight"] = "500m"
    with pytest.raises(ProgrammedWeightsError, match=r"programmed: v1=0\.5, v2=0\.5"):
        gate(fake, clock).wait(spec, obj, timeout_s=5)


@pytest.mark.parametrize("backend", ["kind", "existing"])
def test_plan_shows_the_gate_after_the_apply_and_after_each_weight_change(backend: str, tmp_path: Any) -> None:
    settings = ClusterSettings(context="dev", work_dir=str(tmp_path), model_image="registry.example/m:0.1.0")
    steps = plan(backend, default_spec(), settings)
    ids = [s.id for s in steps]
    workload, converge = ids.index("workload"), ids.index("converge")
    load = ids.index("load-job")
    assert workload < ids.index("split") < converge < load
    change = ids.index("weights")
    assert ids[change:change + 3] == ["weights", "weights-split", "converge"]
    text = format_plan(steps)
    assert text.count("convergence gate") == 2
    assert f"linkerd diagnostics policy -n {default_spec().default_namespace} svc/ai-model-service 80 -o json" in text


def test_set_weights_on_a_cluster_runs_the_gate_again(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from _fake_kube import linkerd_objects
    from test_cluster_backends import make
    from test_prereq import write_kubeconfig

    from pytest_abtraffic._cluster import _deployment

    fake = FakeKube(linkerd_objects())
    config = write_kubeconfig(tmp_path / "kubeconfig", ["dev"])
    backend = make(fake, config, tmp_path, allow_chaos=True)
    dep = backend.deploy(default_spec(), namespace=NS)
    assert dep.served_weights() is not None and dep.served_weights().programmed == {"v1": 50.0, "v2": 50.0}
    fake.served_override = {dep.spec.service_name("v1"): 50, dep.spec.service_name("v2"): 50}
    monkeypatch.setattr(_deployment, "CHAOS_TIMEOUT_S", 0.0)
    with pytest.raises(ProgrammedWeightsError):
        dep.set_weights({"v1": 80, "v2": 20})
    fake.served_override = None
    dep.set_weights({"v1": 80, "v2": 20})
    assert dep.served_weights().programmed == {"v1": 80.0, "v2": 20.0}
    assert dep.describe()["convergence"]["declared"] == {"v1": 80.0, "v2": 20.0}
    backend.close()


# -- the runner: declared != programmed fails before any load; results and reports carry all three ---------


class _ServedDeployment:
    backend_name = "fake"
    namespace = "fake-ns"

    def __init__(self, programmed: dict[str, float] | None) -> None:
        from pytest_abtraffic._result import ServedWeights

        self.spec = default_spec().with_weights({"v1": 90, "v2": 10})
        self.loads = 0
        self._served = ServedWeights({"v1": 90.0, "v2": 10.0}, programmed, "fake control plane", 2.5)

    def served_weights(self) -> Any:
        return self._served

    def run_load(self, plan: Any, observer: Any = None) -> Any:
        from pytest_abtraffic._load import LoadResult, RequestRecord

        self.loads += 1
        records = tuple(RequestRecord(i * 0.001, "v1" if i % 10 else "v2", 200, 1.0, f"c{i}", "")
                        for i in range(4000))
        return LoadResult(records=records, duration_s=4.0, stopped_early=False, stop_reason="budget")

    def mesh_counters(self) -> dict[str, Any]:
        return {}


def test_verify_split_fails_on_programmed_weights_before_sending_load() -> None:
    from pytest_abtraffic._runner import verify_split

    dep = _ServedDeployment({"v1": 50.0, "v2": 50.0})
    with pytest.raises(ProgrammedWeightsError) as info:
        verify_split(dep)  # type: ignore[arg-type]
    assert dep.loads == 0
    assert "declared:   v1=90, v2=10" in str(info.value) and "programmed: v1=50, v2=50" in str(info.value)


def test_result_and_reports_show_declared_programmed_and_observed(tmp_path: Any) -> None:
    from pytest_abtraffic._report import format_summary, render_html, write_json
    from pytest_abtraffic._report._json import validate_result_json
    from pytest_abtraffic._runner import verify_split

    dep = _ServedDeployment({"v1": 90.0, "v2": 10.0})
    result = verify_split(dep)  # type: ignore[arg-type]
    doc = result.to_dict()
    assert doc["weights"]["declared"] == {"v1": 90.0, "v2": 10.0}
    assert doc["weights"]["programmed"] == {"v1": 90.0, "v2": 10.0}
    assert doc["weights"]["converged_after_s"] == 2.5 and doc["weights"]["source"] == "fake control plane"
    assert doc["weights"]["observed"]["v2"] == pytest.approx(0.1, abs=0.01)
    assert validate_result_json(json.loads(write_json(result, tmp_path).read_text())) == []
    html = render_html(result)
    assert 'id="weights"' in html and "fake control plane" in html and "converged after 2.5 s" in html
    assert "weights: declared v1=90, v2=10; programmed v1=90, v2=10" in format_summary([result])


def test_the_policy_query_command_line() -> None:
    """linkerd2 edge-25.4.4 ``cli/cmd/policy.go`` (``policy [flags] resource port``, ``-n``, ``-o json``)
    and ``cli/cmd/root.go`` (persistent ``--linkerd-namespace``, ``--kubeconfig``, ``--context``)."""
    from pytest_abtraffic._cluster._converge import cli_policy_query
    from pytest_abtraffic._proc import Completed

    seen: list[list[str]] = []

    def runner(argv: list[str], **kw: Any) -> Completed:
        seen.append(argv)
        return Completed(tuple(argv), 0, json.dumps(SAMPLE), "")

    query = cli_policy_query(runner, kubeconfig="/tmp/kc", context="kind-x", linkerd_namespace="linkerd")
    text = query(NS, "ai-model-service", 80)
    assert seen == [["linkerd", "diagnostics", "policy", "-n", NS, "svc/ai-model-service", "80", "-o", "json",
                     "--linkerd-namespace", "linkerd", "--kubeconfig", "/tmp/kc", "--context", "kind-x"]]
    assert programmed_route_weights(text, "ai-model-route", NS) == {"ai-model-v1": 90, "ai-model-v2": 10,
                                                                   "ai-model-v3": 0}
