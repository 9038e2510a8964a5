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
            obj["status"] = {"parents": [{"controllerName": "linkerd.io/policy-controller",
                                          "parentRef": obj["spec"]["parentRefs"][0],
                                          "conditions": [{"type": t, "status": "True", "reason": t,
                                                          "observedGeneration": meta["generation"]}
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
            self.put({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": f"{meta['name']}-abcde", "namespace": ns, "labels": labels},
                      "spec": {"containers": containers},
                      "status": {"phase": "Succeeded", "containerStatuses": [
                          {"name": c["name"], "state": {"terminated": {"exitCode": 0}}} for c in containers]}})
            obj["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}

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
