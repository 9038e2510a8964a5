"""An in-memory stand-in for the cluster engine's ``KubeApi`` (no cluster, no network).

It records every call, keeps objects in a dict and, with ``auto_ready``, plays the controllers the
kit waits for: Deployments become available and get pods, EndpointSlices list the ready pods a
Service selects, Linkerd's policy controller accepts HTTPRoutes, linkerd-smi's adaptor writes the
ServiceProfile of a TrafficSplit, and a load Job gets a meshed pod whose log is ``job_log``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

Obj = dict[str, Any]
WRITES = ("apply", "patch", "delete", "exec")


def _key(kind: str, name: str, namespace: str | None) -> tuple[str, str | None, str]:
    return kind, namespace, name


def _matches(labels: Mapping[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for part in selector.split(","):
        k, _, v = part.partition("=")
        if labels.get(k) != v:
            return False
    return True


def _merge_patch(target: Obj, patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch, as the API server applies ``application/merge-patch+json``."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeKube:
    def __init__(self, objects: list[Obj] | None = None, *, auto_ready: bool = True,
                 job_log: Callable[[str], str] | None = None, pods_meshed: bool = True) -> None:
        self.objects: dict[tuple[str, str | None, str], Obj] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.auto_ready = auto_ready
        self.job_log = job_log
        self.pods_meshed = pods_meshed
        self.exec_calls: list[tuple[str, list[str]]] = []
        self.closed = False
        # The policy controller's view (``policy_json``): weights served per route; ``policy_stale``
        # queries still get the previous weights; ``served_override`` is served instead of the route's.
        self.served: dict[tuple[str, str], dict[str, int]] = {}
        self.policy_stale = 0
        self.served_override: dict[str, int] | None = None
        self.policy_queries: list[tuple[str, str, int]] = []
        self.records_cut_at: int | None = None
        for obj in objects or []:
            self.put(obj)

    # -- helpers --------------------------------------------------------------------------------------
    def put(self, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        self.objects[_key(obj["kind"], meta["name"], meta.get("namespace"))] = obj
        return obj

    @property
    def writes(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] in WRITES]

    def kinds_written(self) -> list[str]:
        return [f"{c[0]} {c[2]}/{c[3]}" for c in self.writes]

    def _pods(self, namespace: str | None) -> list[Obj]:
        return [o for (k, ns, _), o in self.objects.items() if k == "Pod" and ns == namespace]

    def _make_pods(self, dep: Obj, count: int, start: int) -> None:
        meta = dep["metadata"]
        template = dep["spec"]["template"]
        containers = [{"name": c["name"]} for c in template["spec"]["containers"]]
        if self.pods_meshed:
            containers.append({"name": "linkerd-proxy"})
        for i in range(start, start + count):
            self.put({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": f"{meta['name']}-pod{i}", "namespace": meta["namespace"],
                                   "labels": dict(template["metadata"].get("labels") or {})},
                      "spec": {"containers": containers},
                      "status": {"phase": "Running", "containerStatuses": [
                          {"name": c["name"], "ready": True, "state": {"running": {}}} for c in containers]}})

    def _ready_deployment(self, dep: Obj) -> None:
        n = int(dep["spec"].get("replicas", 1))
        dep["metadata"]["generation"] = dep["metadata"].get("generation", 0) + 1
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
                         "availableReplicas": n, "readyReplicas": n}

    def _after_apply(self, obj: Obj) -> None:
        kind, meta = obj["kind"], obj["metadata"]
        ns = meta.get("namespace")
        if kind == "Deployment":
            self._ready_deployment(obj)
            self._make_pods(obj, int(obj["spec"].get("replicas", 1)), 0)
        elif kind == "HTTPRoute":
            meta["generation"] = meta.get("generation", 0) + 1
            # Like Linkerd's policy controller: conditions without observedGeneration (linkerd2 edge-25.4.4
            # policy-controller/k8s/status/src/index.rs, accepted() and resolved_refs()).
            obj["status"] = {"parents": [{"controllerName": "linkerd.io/policy-controller",
                                          "parentRef": obj["spec"]["parentRefs"][0],
                                          "conditions": [{"type": t, "status": "True", "reason": t}
                                                         for t in ("Accepted", "ResolvedRefs")]}]}
        elif kind == "TrafficSplit":
            apex = obj["spec"]["service"]
            self.put({"apiVersion": "linkerd.io/v1alpha2", "kind": "ServiceProfile",
                      "metadata": {"name": f"{apex}.{ns}.svc.cluster.local", "namespace": ns},
                      "spec": {"dstOverrides": [{"authority": f"{b['service']}.{ns}.svc.cluster.local",
                                                 "weight": b["weight"]} for b in obj["spec"]["backends"]]}})
        elif kind == "Job":
            labels = dict(obj["spec"]["template"]["metadata"].get("labels") or {})
            labels["job-name"] = meta["name"]
            containers = [{"name": c["name"]} for c in obj["spec"]["template"]["spec"]["containers"]]
            if self.pods_meshed:
                containers.append({"name": "linkerd-proxy"})
            for i in range(int(obj["spec"].get("parallelism") or 1)):  # a worker Job has several pods
                self.put({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": f"{meta['name']}-abcd{'e' if i == 0 else i}", "namespace": ns,
                                       "labels": labels},
                          "spec": {"containers": containers},
                          "status": {"phase": "Succeeded", "containerStatuses": [
                              {"name": c["name"], "state": {"terminated": {"exitCode": 0}}} for c in containers]}})
            obj["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}

    def policy_json(self, namespace: str, service: str, port: int) -> str:
        """``linkerd diagnostics policy -n NS svc/SERVICE PORT -o json`` as linkerd2 edge-25.4.4 prints it:
        ``encoding/json`` of ``outbound.OutboundPolicy`` (linkerd2-proxy-api v0.16.0 ``proto/outbound.proto``;
        oneofs as ``{"Kind": {"<Field>": ...}}``, weight 0 omitted), built like the policy controller does
        (``policy-controller/grpc/src/outbound.rs``, ``outbound/http.rs``)."""
        import json

        self.policy_queries.append((namespace, service, port))

        def resource(**fields: Any) -> dict[str, Any]:
            return {"Kind": {"Resource": {k: v for k, v in fields.items() if v not in (None, "", 0)}}}

        routes = []
        for (kind, ns, name), obj in sorted(self.objects.items(), key=lambda kv: str(kv[0])):
            if kind != "HTTPRoute" or ns != namespace:
                continue
            if not any(p.get("name") == service for p in obj["spec"].get("parentRefs") or []):
                continue
            current = {b["name"]: int(b.get("weight", 1)) for b in obj["spec"]["rules"][-1]["backendRefs"]}
            if self.policy_stale > 0:
                self.policy_stale -= 1
            else:
                self.served[(ns, name)] = current
            weights = self.served_override or self.served.get((ns, name))
            if weights is None:
                continue
            backends = [{"backend": {"backend": {
                "metadata": resource(group="core", kind="Service", name=svc, namespace=ns, port=port),
                "queue": {"capacity": 100, "failfast_timeout": {"seconds": 3}},
                "Kind": {"Balancer": {"discovery": {"Kind": {"Dst": {"path": f"{svc}.{ns}.svc.cluster.local:{port}"}}},
                                      "Load": {"PeakEwma": {"default_rtt": {"nanos": 30000000},
                                                            "decay": {"seconds": 10}}}}}}},
                **({"weight": w} if w else {})} for svc, w in weights.items()]
            routes.append({"metadata": resource(group=obj["apiVersion"].split("/")[0], kind="HTTPRoute", name=name,
                                                namespace=ns),
                           "rules": [{"matches": [{"path": {"Kind": {"Prefix": "/"}}}],
                                      "backends": {"Kind": {"RandomAvailable": {"backends": backends}}},
                                      "timeouts": {}}]})
        if not routes:
            routes = [{"metadata": {"Kind": {"Default": "http"}}, "rules": [{"backends": {"Kind": {"FirstAvailable": {
                "backends": [{"backend": {"metadata": resource(group="core", kind="Service", name=service,
                                                               namespace=namespace, port=port)}}]}}}}]}]
        policy = {"protocol": {"Kind": {"Detect": {"timeout": {"seconds": 10}, "opaque": {"routes": []},
                                                   "http1": {"routes": routes}, "http2": {"routes": routes}}}},
                  "metadata": resource(group="core", kind="Service", name=service, namespace=namespace, port=port)}
        return json.dumps(policy, indent=2)

    # -- KubeApi --------------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        self.calls.append(("get", kind, namespace, name))
        found = self.objects.get(_key(kind, name, namespace))
        return copy.deepcopy(found) if found is not None else None

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None, *,
                     label_selector: str | None = None) -> list[Obj]:
        self.calls.append(("list", kind, namespace, label_selector))
        if kind == "EndpointSlice":
            return self._slices(namespace, label_selector)
        out = [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
               if k == kind and (namespace is None or ns == namespace)
               and _matches(o["metadata"].get("labels") or {}, label_selector)]
        return out

    def _slices(self, namespace: str | None, selector: str | None) -> list[Obj]:
        service = (selector or "").partition("=")[2]
        svc = self.objects.get(_key("Service", service, namespace))
        if svc is None:
            return []
        sel = svc["spec"].get("selector") or {}
        endpoints = [{"addresses": [f"10.0.0.{i}"],
                      "conditions": {"ready": not p["metadata"].get("deletionTimestamp")}}
                     for i, p in enumerate(self._pods(namespace), 1)
                     if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())]
        return [{"metadata": {"name": f"{service}-x", "labels": {"kubernetes.io/service-name": service}},
                 "endpoints": endpoints}]

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        body = copy.deepcopy(dict(obj))
        meta = body["metadata"]
        self.calls.append(("apply", body["kind"], meta.get("namespace"), meta["name"]))
        old = self.objects.get(_key(body["kind"], meta["name"], meta.get("namespace")))
        if old is not None and "generation" in old["metadata"]:
            meta["generation"] = old["metadata"]["generation"]
        self.put(body)
        if self.auto_ready:
            self._after_apply(body)
        return copy.deepcopy(body)

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: Mapping[str, Any]) -> Obj:
        self.calls.append(("patch", kind, namespace, name, copy.deepcopy(dict(body))))
        obj = self.objects[_key(kind, name, namespace)]
        if kind == "Deployment" and "replicas" in (body.get("spec") or {}):
            before = int(obj["spec"].get("replicas", 1))
            after = int(body["spec"]["replicas"])
            obj["spec"]["replicas"] = after
            live = sorted((p for p in self._pods(namespace) if p["metadata"]["name"].startswith(f"{name}-pod")
                           and not p["metadata"].get("deletionTimestamp")), key=lambda p: p["metadata"]["name"])
            if after < before:
                for pod in live[after:]:
                    pod["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
            elif after > len(live) and self.auto_ready:
                self._make_pods(obj, after - len(live), 100 + len(self.calls))
            if self.auto_ready:
                self._ready_deployment(obj)
        _merge_patch(obj, copy.deepcopy(dict(body)))
        return copy.deepcopy(obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               grace_period_s: int | None = None) -> bool:
        self.calls.append(("delete", kind, namespace, name, grace_period_s))
        found = self.objects.pop(_key(kind, name, namespace), None)
        if kind == "Namespace" and found is not None:
            for key in [k for k in self.objects if k[1] == name]:
                del self.objects[key]
        return found is not None

    def pod_log(self, name: str, namespace: str, *, container: str | None = None, tail_lines: int | None = None,
                timestamps: bool = False) -> str:
        self.calls.append(("log", "Pod", namespace, name))
        return self.job_log(name) if self.job_log is not None else ""

    def follow_pod_log(self, name: str, namespace: str, *, container: str, on_line: Callable[[str], bool],
                       timeout_s: float) -> None:
        self.calls.append(("follow", "Pod", namespace, name))
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
        for line in self.pod_log(name, namespace, container=container).splitlines():
            if on_line(f"{stamp} {line}"):
                return

    def exec(self, name: str, namespace: str, *, container: str, argv: list[str], timeout_s: float) -> tuple[int, str]:
        self.calls.append(("exec", "Pod", namespace, name))
        self.exec_calls.append((name, list(argv)))
        return 0, "{}"

    def exec_stream(self, name: str, namespace: str, *, container: str, argv: list[str],
                    on_stdout: Callable[[str], None], timeout_s: float) -> tuple[int, str]:
        """The load pod's records file read by exec: built from the records block of ``job_log`` the way
        the in-cluster entry writes it (``_load/_recordsfile``), base64 in 4 KiB chunks like a websocket
        delivers it; ``records_cut_at`` truncates the stream there (a dropped connection)."""
        import base64
        import tempfile
        from pathlib import Path

        from pytest_abtraffic._load._logparse import _block_lines, _blocks
        from pytest_abtraffic._load._recordsfile import write_records_file

        self.calls.append(("exec-read", "Pod", namespace, name))
        self.exec_calls.append((name, list(argv)))
        blocks = _blocks(self.job_log(name) if self.job_log is not None else "")
        if not blocks:
            return 1, f"FileNotFoundError: {argv[-2]}"
        lines = [line + "\n" for line in _block_lines(*blocks[0]) if line.strip()]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "records.jsonl.gz"
            write_records_file(path, lines)
            data = base64.encodebytes(path.read_bytes()).decode("ascii")
        if self.records_cut_at is not None:
            data = data[: self.records_cut_at]
        for i in range(0, len(data), 4096):
            on_stdout(data[i:i + 4096])
        return 0, ""

    def proxy_get(self, name: str, namespace: str, *, port: int, path: str, timeout_s: float) -> str:
        self.calls.append(("proxy", "Pod", namespace, name))
        return "# HELP x\n"

    def close(self) -> None:
        self.closed = True


def linkerd_objects(*, smi: bool = False, gateway_v1: bool = True) -> list[Obj]:
    """What an installed Linkerd (and optionally linkerd-smi) looks like to the existing backend."""
    crd = "apiextensions.k8s.io/v1"
    objs: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "linkerd"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "linkerd-config", "namespace": "linkerd"}},
        {"apiVersion": crd, "kind": "CustomResourceDefinition", "metadata": {"name": "servers.policy.linkerd.io"}},
        {"apiVersion": crd, "kind": "CustomResourceDefinition", "metadata": {"name": "httproutes.policy.linkerd.io"}},
        {"apiVersion": crd, "kind": "CustomResourceDefinition",
         "metadata": {"name": "httproutes.gateway.networking.k8s.io"},
         "spec": {"versions": [{"name": "v1", "served": gateway_v1}, {"name": "v1beta1", "served": True}]}},
    ]
    if smi:
        objs += [
            {"apiVersion": crd, "kind": "CustomResourceDefinition",
             "metadata": {"name": "trafficsplits.split.smi-spec.io"}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "smi-adaptor",
                                                                        "namespace": "linkerd-smi"},
             "spec": {"replicas": 1}, "status": {"availableReplicas": 1}},
        ]
    return objs
