"""Parsing a client proxy's metrics and cross-checking them with the app-level counts.

The samples follow linkerd2-proxy's label layout (``linkerd/app/outbound/src/metrics.rs``:
parent_*, route_*, backend_{group,kind,namespace,name,port,section_name}; statuses add
``http_status`` and ``error``) and the legacy endpoint family labelled by the destination
controller (``dst_service``, ``dst_namespace``, ...).
"""

from __future__ import annotations

import pytest

from pytest_abtraffic._backend import BackendCounters
from pytest_abtraffic._cluster._metrics import (
    MeshCounts,
    add_counters,
    backend_counters,
    compare_with_app,
    parse_prometheus,
)

NS = "abt-x"
SERVICES = {"v1": "ai-model-service-v1", "v2": "ai-model-service-v2"}


def _route_labels(backend: str, namespace: str = NS, kind: str = "Service") -> str:
    return (f'parent_group="core",parent_kind="Service",parent_namespace="{namespace}",parent_name="ai-model-service",'
            f'parent_port="80",parent_section_name="",route_group="gateway.networking.k8s.io",route_kind="HTTPRoute",'
            f'route_namespace="{namespace}",route_name="ai-model-route",backend_group="core",backend_kind="{kind}",'
            f'backend_namespace="{namespace}",backend_name="{backend}",backend_port="80",backend_section_name=""')


def _status(backend: str, status: str, error: str, value: int) -> str:
    labels = f'{_route_labels(backend)}, http_status="{status}",error="{error}"'
    return f"outbound_http_route_backend_response_statuses_total{{{labels}}} {value}"


ROUTE_TEXT = f"""\
# HELP outbound_http_route_backend_requests The total number of requests dispatched.
# TYPE outbound_http_route_backend_requests counter
outbound_http_route_backend_requests_total{{{_route_labels("ai-model-service-v1")}}} 4512
outbound_http_route_backend_requests_total{{{_route_labels("ai-model-service-v2")}}} 506
outbound_http_route_backend_requests_total{{{_route_labels("ai-model-service-v1", namespace="other")}}} 999
outbound_http_route_backend_requests_total{{{_route_labels("ai-model-service-v1", kind="default")}}} 7
# HELP outbound_http_route_backend_response_statuses Completed responses.
# TYPE outbound_http_route_backend_response_statuses counter
{_status("ai-model-service-v1", "200", "", 4500)}
{_status("ai-model-service-v1", "500", "", 12)}
{_status("ai-model-service-v2", "200", "", 498)}
{_status("ai-model-service-v2", "", "FAIL_FAST", 8)}
process_cpu_seconds_total 1.25 1700000000000
# EOF
"""


def _legacy(service: str, status: str, value: int, namespace: str = NS) -> str:
    base = (f'direction="outbound",authority="ai-model-service.{namespace}.svc.cluster.local:80",'
            'target_addr="10.244.0.12:8080",tls="true",server_id="default.abt-x.serviceaccount.identity.linkerd.'
            'cluster.local",dst_control_plane_ns="linkerd",dst_deployment="x",dst_namespace="' + namespace
            + f'",dst_pod="x-1",dst_service="{service}",dst_serviceaccount="default",dst_zone_locality="unknown"')
    request = f"request_total{{{base}}} {value}\n"
    response = (f'response_total{{{base},status_code="{status}",classification="success",'
                f'grpc_status="",error=""}} {value}\n')
    return request + response


LEGACY_TEXT = (
    "# TYPE request_total counter\n"
    + _legacy("ai-model-service-v1", "200", 301)
    + _legacy("ai-model-service-v2", "200", 99)
    + _legacy("ai-model-service-v2", "200", 50, namespace="elsewhere")
    + 'request_total{direction="inbound",authority="x",dst_service="ai-model-service-v1",dst_namespace="abt-x"} 5\n'
)


def test_parse_handles_labels_escapes_timestamps_and_eof() -> None:
    text = ('# HELP m a "metric"\nm_total{a="x\\"y",b="back\\\\slash",c="new\\nline"} 3 1700000000\n'
            'plain 2.5\nwith_exemplar_total{a="1"} 4 # {trace_id="abc"} 1.0\n# EOF\n')
    samples = parse_prometheus(text)
    assert [(s.name, s.value) for s in samples] == [("m_total", 3.0), ("plain", 2.5), ("with_exemplar_total", 4.0)]
    assert samples[0].labels == {"a": 'x"y', "b": "back\\slash", "c": "new\nline"}


@pytest.mark.parametrize("bad", ['m{a="1"', 'm{a=1} 2', "m", 'm{a="1"} x'])
def test_parse_rejects_malformed_lines(bad: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_prometheus("ok 1\n" + bad + "\n")


def test_route_backend_counts_per_variant() -> None:
    mesh = backend_counters(parse_prometheus(ROUTE_TEXT), namespace=NS, services=SERVICES)
    assert mesh.source == "route-backend"
    assert mesh.counters["v1"] == BackendCounters(requests=4512, responses_by_status={200: 4500, 500: 12},
                                                  proxy_errors={})
    assert mesh.counters["v2"].requests == 506
    assert mesh.counters["v2"].responses_by_status == {200: 498}
    assert mesh.counters["v2"].proxy_errors == {"FAIL_FAST": 8}


def test_legacy_endpoint_counts_for_the_service_profile_path() -> None:
    mesh = backend_counters(parse_prometheus(LEGACY_TEXT), namespace=NS, services=SERVICES)
    assert mesh.source == "legacy-endpoint"
    assert mesh.counters["v1"].requests == 301 and mesh.counters["v1"].responses_by_status == {200: 301}
    assert mesh.counters["v2"].requests == 99  # the other namespace's v2 and inbound traffic are not counted


def test_route_family_wins_when_both_are_present() -> None:
    mesh = backend_counters(parse_prometheus(ROUTE_TEXT + LEGACY_TEXT), namespace=NS, services=SERVICES)
    assert mesh.source == "route-backend" and mesh.counters["v1"].requests == 4512


def test_nothing_for_these_services() -> None:
    mesh = backend_counters(parse_prometheus(ROUTE_TEXT), namespace="unrelated", services=SERVICES)
    assert mesh.source == "none"
    assert all(c.requests == 0 for c in mesh.counters.values())
    check = compare_with_app({"v1": 10, "v2": 10}, mesh)
    assert not check.ok and "was the load pod meshed" in check.problems[0]


def test_cross_check_agrees_within_tolerance() -> None:
    mesh = backend_counters(parse_prometheus(ROUTE_TEXT), namespace=NS, services=SERVICES)
    check = compare_with_app({"v1": 4512, "v2": 497}, mesh)
    assert check.ok, check.format()
    assert [(r.variant, r.app, r.mesh, r.diff) for r in check.rows] == [("v1", 4512, 4512, 0), ("v2", 497, 498, 1)]
    assert any("FAIL_FAST=8" in n for n in check.notes)
    assert "agrees" in check.format()


def test_cross_check_reports_disagreement() -> None:
    mesh = backend_counters(parse_prometheus(ROUTE_TEXT), namespace=NS, services=SERVICES)
    check = compare_with_app({"v1": 4000, "v2": 498}, mesh)
    assert not check.ok
    assert check.problems == ("v1: the app saw 4000 responses from it, the client proxy 4512 (allowed difference 20)",)
    assert "DISAGREES" in check.format()
    assert check.as_dict()["rows"][0] == {"variant": "v1", "app": 4000, "mesh": 4512, "diff": 512}


def test_cross_check_without_status_counters_uses_requests() -> None:
    only_requests = "\n".join(line for line in ROUTE_TEXT.splitlines() if "response_statuses" not in line)
    mesh = backend_counters(parse_prometheus(only_requests), namespace=NS, services=SERVICES)
    check = compare_with_app({"v1": 4512, "v2": 506}, mesh, retries=True)
    assert check.ok
    assert any("Linkerd < 2.16" in n for n in check.notes)
    assert any("retry policy" in n for n in check.notes)


def test_add_counters() -> None:
    a = BackendCounters(3, {200: 3}, {})
    b = BackendCounters(2, {200: 1, 503: 1}, {"LOAD_SHED": 1})
    assert add_counters(a, b) == BackendCounters(5, {200: 4, 503: 1}, {"LOAD_SHED": 1})
    assert MeshCounts({}, "none").counters == {}
