"""``abtraffic lint --fix``: the mechanical mends of a split's objects.

Only what follows from the objects themselves, nothing that needs a decision:

- a Pulumi resource without ``metadata.name`` gets its resource name (what the split refers to), and the
  ``pulumi.com/autonamed`` marker the mocks added goes away;
- a missing apex Service is created: ClusterIP, selecting the labels every backend Service selects, with
  the backends' port(s) (Linkerd applies a split only to requests sent to the apex's cluster IP);
- the pod templates behind a split's Services get ``linkerd.io/inject: enabled`` (unless they say
  ``disabled``, an explicit choice that is left for the user).

Everything else is left as it was; the remaining findings are printed after the objects.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ._lint import INJECT, MESHED_VALUES, ROUTE_GROUPS, SMI_GROUP, WORKLOAD_KINDS

AUTONAMED = "pulumi.com/autonamed"
CORE_GROUPS = (None, "", "core")


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _name(obj: Mapping[str, Any]) -> str | None:
    value = _get(obj, "metadata", "name")
    return str(value) if value else None


def _same_ns(a: Mapping[str, Any], namespace: str | None) -> bool:
    own = _get(a, "metadata", "namespace")
    return own is None or namespace is None or own == namespace


def _find(objects: Sequence[dict[str, Any]], kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    return next((o for o in objects if o.get("kind") == kind and _name(o) == name and _same_ns(o, namespace)), None)


def _splits(objects: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str | None, int | None, list[str]]]:
    """(split object, apex name, namespace, parentRef port, backend Service names)."""
    out: list[tuple[dict[str, Any], str, str | None, int | None, list[str]]] = []
    for obj in objects:
        group = str(obj.get("apiVersion") or "").rpartition("/")[0]
        spec = obj.get("spec")
        namespace = _get(obj, "metadata", "namespace")
        if obj.get("kind") == "TrafficSplit" and group == SMI_GROUP:
            apex = _get(spec, "service")
            backends = [str(_get(b, "service")) for b in _list(_get(spec, "backends")) if _get(b, "service")]
            if isinstance(apex, str) and apex:
                out.append((obj, apex, namespace, None, backends))
        elif obj.get("kind") == "HTTPRoute" and group in ROUTE_GROUPS:
            backends = [str(_get(r, "name")) for rule in _list(_get(spec, "rules"))
                        for r in _list(_get(rule, "backendRefs"))
                        if _get(r, "name") and _get(r, "group") in CORE_GROUPS and _get(r, "kind") in (None, "Service")]
            for parent in _list(_get(spec, "parentRefs")):
                if _get(parent, "kind") == "Service" and _get(parent, "group") in CORE_GROUPS and _get(parent, "name"):
                    port = _get(parent, "port")
                    out.append((obj, str(parent["name"]), _get(parent, "namespace") or namespace,
                                port if isinstance(port, int) else None, backends))
    return out


def _name_autonamed(objects: list[dict[str, Any]], intended_names: Mapping[int, str]) -> None:
    for index, name in intended_names.items():
        meta = objects[index].setdefault("metadata", {})
        meta["name"] = name
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(AUTONAMED, None)
            if not annotations:
                meta.pop("annotations")


def _apex_service(name: str, namespace: str | None, backends: list[dict[str, Any]],
                  port: int | None) -> dict[str, Any] | None:
    selectors = [_get(b, "spec", "selector") for b in backends]
    if not selectors or not all(isinstance(s, Mapping) and s for s in selectors):
        return None
    common = {k: v for k, v in selectors[0].items() if all(s.get(k) == v for s in selectors[1:])}
    if not common:
        return None  # nothing every backend selects: choosing the apex's pods is not mechanical
    first_ports = [p for p in _list(_get(backends[0], "spec", "ports")) if isinstance(p, Mapping)]

    def exposes(backend: Mapping[str, Any], number: Any) -> bool:
        return any(isinstance(q, Mapping) and q.get("port") == number for q in _list(_get(backend, "spec", "ports")))

    shared = [p for p in first_ports if all(exposes(b, p.get("port")) for b in backends[1:])]
    if port is not None:
        shared = [p for p in shared if p.get("port") == port] or [{"port": port}]
    if not shared:
        return None
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(common)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {"type": "ClusterIP", "selector": dict(common), "ports": [copy.deepcopy(dict(p)) for p in shared]}}


def _inject(objects: list[dict[str, Any]], services: list[dict[str, Any]]) -> None:
    for service in services:
        selector = _get(service, "spec", "selector")
        if not isinstance(selector, Mapping) or not selector:
            continue
        namespace = _get(service, "metadata", "namespace")
        for obj in objects:
            if obj.get("kind") not in WORKLOAD_KINDS or not _same_ns(obj, namespace):
                continue
            if obj.get("kind") == "Pod":
                template: Any = obj
            elif obj.get("kind") == "CronJob":
                template = _get(obj, "spec", "jobTemplate", "spec", "template")
            else:
                template = _get(obj, "spec", "template")
            if not isinstance(template, dict):
                continue
            labels = _get(template, "metadata", "labels")
            if not isinstance(labels, Mapping) or not all(labels.get(k) == v for k, v in selector.items()):
                continue
            meta = template.setdefault("metadata", {})
            annotations = meta.setdefault("annotations", {}) if isinstance(meta, dict) else None
            if isinstance(annotations, dict) and annotations.get(INJECT) not in (*MESHED_VALUES, "disabled"):
                annotations[INJECT] = "enabled"


def mend_objects(objects: Sequence[Mapping[str, Any]],
                 intended_names: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """A mended copy of ``objects`` (the input is not changed). See the module docstring for the mends."""
    out = [copy.deepcopy(dict(o)) for o in objects]
    _name_autonamed(out, intended_names or {})
    for split, apex, namespace, port, backend_names in _splits(out):
        backends = [b for b in (_find(out, "Service", n, namespace) for n in backend_names) if b is not None]
        if _find(out, "Service", apex, namespace) is None and backends:
            created = _apex_service(apex, namespace, backends, port)
            if created is not None:
                # Next to the backends, before the split: the order a reader expects.
                out.insert(out.index(split), created)
        apex_obj = _find(out, "Service", apex, namespace)
        _inject(out, backends + ([apex_obj] if apex_obj is not None else []))
    return out


__all__ = ["mend_objects"]
