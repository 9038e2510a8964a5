"""``Kube`` (the official client underneath) sends the requests the Kubernetes API expects.

A small fake API server on 127.0.0.1 answers discovery and records every request: server-side
apply as ``PATCH`` with ``application/apply-patch+yaml``, ``fieldManager`` and ``force``; merge
patches; deletes with a grace period; pod logs; the pod proxy path of the proxy's admin port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from pytest_abtraffic._cluster._kube import Kube

GROUPS = {
    "apps": ("v1", [("deployments", "Deployment", True)]),
    "batch": ("v1", [("jobs", "Job", True)]),
    "gateway.networking.k8s.io": ("v1", [("httproutes", "HTTPRoute", True)]),
}
CORE = [("namespaces", "Namespace", False), ("pods", "Pod", True), ("pods/log", "Pod", True),
        ("pods/proxy", "Pod", True), ("configmaps", "ConfigMap", True)]


def _resources(items: list[tuple[str, str, bool]]) -> dict[str, Any]:
    return {"kind": "APIResourceList", "resources": [
        {"name": n, "kind": k, "namespaced": ns, "singularName": "", "verbs": ["get", "list", "patch", "delete"]}
        for n, k, ns in items]}


class FakeApi(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    objects: dict[str, dict[str, Any]] = {}

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> tuple[str, dict[str, list[str]], Any]:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        FakeApi.requests.append({"method": self.command, "path": unquote(parts.path), "query": parse_qs(parts.query),
                                 "content_type": self.headers.get("Content-Type"), "body": body,
                                 "auth": self.headers.get("Authorization")})
        return unquote(parts.path), parse_qs(parts.query), body

    def do_GET(self) -> None:
        path, _, _ = self._record()
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.2"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            return self._send(200, {"kind": "APIGroupList", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, (v, _) in GROUPS.items()]})
        if path == "/api/v1":
            return self._send(200, _resources(CORE))
        for group, (version, items) in GROUPS.items():
            if path == f"/apis/{group}/{version}":
                return self._send(200, _resources(items))
        if path.endswith("/log"):
            return self._send(200, "line one\nline two\n", "text/plain")
        if "/proxy/" in path:
            return self._send(200, "metric_total 1\n", "text/plain")
        if path in FakeApi.objects:
            return self._send(200, FakeApi.objects[path])
        if path.endswith("/pods"):
            return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                    "items": [{"metadata": {"name": "p1"}}]})
        return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                "code": 404, "message": f"{path} not found"})

    def do_PATCH(self) -> None:
        path, _, body = self._record()
        # The API answers with the whole object (a merge patch body alone has no kind).
        stored = {"apiVersion": "apps/v1", "kind": "Deployment", **FakeApi.objects.get(path, {}), **body}
        FakeApi.objects[path] = stored
        self._send(200, stored)

    def do_DELETE(self) -> None:
        path, _, _ = self._record()
        if path.endswith("/gone"):
            return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                    "code": 404})
        return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[str]:
    FakeApi.requests = []
    FakeApi.objects = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def kube(api_server: str, tmp_path: Path) -> Iterator[Kube]:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster: {{server: '{api_server}'}}\n"
        "users:\n- name: u\n  user: {token: secret-token}\n"
        "contexts:\n- name: ctx\n  context: {cluster: c, user: u}\n- name: other\n  context: {cluster: c, user: u}\n"
        "current-context: other\n")
    before = config.read_text()
    client = Kube.from_kubeconfig(str(config), "ctx", cache_dir=tmp_path)
    try:
        yield client
    finally:
        client.close()
        assert config.read_text() == before  # read, never written


def last(method: str) -> dict[str, Any]:
    return [r for r in FakeApi.requests if r["method"] == method][-1]


def test_server_side_apply(kube: Kube) -> None:
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ai-model-v1", "namespace": "abt"},
           "spec": {"replicas": 2}}
    out = kube.apply(obj)
    req = last("PATCH")
    assert req["path"] == "/apis/apps/v1/namespaces/abt/deployments/ai-model-v1"
    assert req["content_type"] == "application/apply-patch+yaml"
    assert req["query"] == {"fieldManager": ["pytest-abtraffic"], "force": ["True"]} or \
        req["query"] == {"fieldManager": ["pytest-abtraffic"], "force": ["true"]}
    assert req["body"] == obj and out["spec"]["replicas"] == 2


def test_cluster_scoped_and_custom_resources(kube: Kube) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "abt"}})
    assert last("PATCH")["path"] == "/api/v1/namespaces/abt"
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "r", "namespace": "abt"}, "spec": {}}
    kube.apply(route)
    assert last("PATCH")["path"] == "/apis/gateway.networking.k8s.io/v1/namespaces/abt/httproutes/r"
    assert kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "r", "abt") == route


def test_get_missing_is_none_and_list(kube: Kube) -> None:
    assert kube.get("apps/v1", "Deployment", "nope", "abt") is None
    pods = kube.list_objects("v1", "Pod", "abt", label_selector="job-name=j")
    assert [p["metadata"]["name"] for p in pods] == ["p1"]
    req = last("GET")
    assert req["path"] == "/api/v1/namespaces/abt/pods" and req["query"]["labelSelector"] == ["job-name=j"]


def test_merge_patch(kube: Kube) -> None:
    kube.patch("apps/v1", "Deployment", "ai-model-v2", "abt", {"spec": {"replicas": 0}})
    req = last("PATCH")
    assert req["content_type"] == "application/merge-patch+json"
    assert req["body"] == {"spec": {"replicas": 0}}
    assert req["query"]["fieldManager"] == ["pytest-abtraffic"]


def test_delete_with_grace_period(kube: Kube) -> None:
    assert kube.delete("v1", "Pod", "p1", "abt", grace_period_s=0) is True
    req = last("DELETE")
    assert req["path"] == "/api/v1/namespaces/abt/pods/p1"
    assert req["body"] == {"propagationPolicy": "Background", "gracePeriodSeconds": 0}
    assert kube.delete("v1", "Pod", "gone", "abt") is False


def test_logs_and_proxy_admin_port(kube: Kube) -> None:
    assert kube.pod_log("p1", "abt", container="load") == "line one\nline two\n"
    assert last("GET")["path"] == "/api/v1/namespaces/abt/pods/p1/log"
    assert last("GET")["query"]["container"] == ["load"]
    lines: list[str] = []
    kube.follow_pod_log("p1", "abt", container="load", on_line=lambda line: bool(lines.append(line)), timeout_s=5)
    assert lines == ["line one", "line two"]
    assert last("GET")["query"]["follow"] == ["true"] and last("GET")["query"]["timestamps"] == ["true"]
    assert kube.proxy_get("p1", "abt", port=4191, path="/metrics", timeout_s=5) == "metric_total 1\n"
    assert last("GET")["path"] == "/api/v1/namespaces/abt/pods/p1:4191/proxy/metrics"


def test_uses_the_named_context_token(kube: Kube) -> None:
    kube.get("apps/v1", "Deployment", "x", "abt")
    assert last("GET")["auth"] == "Bearer secret-token"
