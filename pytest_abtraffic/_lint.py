"""Static checks of A/B split manifests: the wiring mistakes that make a Linkerd split silently not apply.

Every check has a stable ``code`` (see ``CODES``). The checks see only the objects they are given: a
Service whose pods are defined elsewhere is reported as selecting nothing, so lint a whole application
at once. Names are resolved within a namespace; an object without ``metadata.namespace`` is taken to live
in whatever namespace the files are applied to, so it matches objects of any namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from ._errors import UsageError

#: Every finding code with a one-line description (stable: tools may filter on them).
CODES: dict[str, str] = {
    "missing-apex-service": "a TrafficSplit spec.service / HTTPRoute Service parentRef names a Service not defined",
    "headless-apex": "the apex Service has no cluster IP (headless or ExternalName), so no split applies",
    "apex-port-mismatch": "an HTTPRoute parentRef port is not a port of the apex Service",
    "parentref-not-service": "an HTTPRoute parentRef names a Service but is not of kind Service",
    "missing-backend-service": "a split backend names a Service not defined",
    "backend-port-mismatch": "a backend Service does not expose the apex port (SMI) / the backendRef port (HTTPRoute)",
    "backendref-without-port": "an HTTPRoute backendRef to a Service has no port (Linkerd treats it as invalid)",
    "selector-matches-no-pods": "a Service selector matches no pod template",
    "target-port-not-exposed": "a Service targetPort is not a port of the selected containers",
    "unmeshed-workload": "a workload behind a split's Services is not injected with the Linkerd proxy",
    "weight-format": "a weight is in the wrong form for the API version",
    "negative-weight": "a weight is negative",
    "all-weights-zero": "every weight of a split (or route rule) is zero",
    "mixed-split-apis": "a TrafficSplit and an HTTPRoute both target the same apex Service",
    "policy-ignored-with-smi": "failure-policy annotations on an apex Service that a TrafficSplit targets",
    "unnamed-resource": "an object has no metadata.name",
    "unsupported-split-version": "a TrafficSplit apiVersion that linkerd-smi does not serve",
    "unreachable-route-rule": "an HTTPRoute rule every match of which an earlier rule has too, so it never matches",
    # Reported by lint_pulumi_program only:
    "pulumi-auto-named": "a split refers by resource name to a Service/Deployment that Pulumi auto-names",
}

SMI_GROUP = "split.smi-spec.io"
SMI_SERVED = ("v1alpha1", "v1alpha2")
ROUTE_GROUPS = ("gateway.networking.k8s.io", "policy.linkerd.io")
CORE_GROUPS = (None, "", "core")
INJECT = "linkerd.io/inject"
MESHED_VALUES = ("enabled", "ingress")
# Annotations linkerd-smi's ServiceProfile overrides (it disables circuit breaking, annotation retries
# and annotation timeouts on the Service).
POLICY_ANNOTATION_PREFIXES = ("balancer.linkerd.io/failure-accrual", "retry.linkerd.io/", "timeout.linkerd.io/")
MAX_ROUTE_WEIGHT = 1_000_000

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
_QUANTITY = re.compile(
    r"^(?P<sign>[+-])?(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_SI = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal("1e3"),
       "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18")}
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
NO_NAME = "<no name>"


@dataclass(frozen=True)
class Finding:
    """One problem, attached to the object it is about."""

    path: str
    kind: str
    name: str
    message: str
    code: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}/{self.name}: {self.message}"


# ---------------------------------------------------------------------------------------------------
# A read-only view of the objects


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str | bytes) else []


@dataclass
class Obj:
    index: int
    path: str
    raw: Mapping[str, Any]
    api_version: str
    kind: str
    name: str | None
    namespace: str | None

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name or NO_NAME}"

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


@dataclass
class PodTemplate:
    owner: Obj
    labels: dict[str, str]
    annotations: dict[str, str]
    containers: list[Mapping[str, Any]]


@dataclass(frozen=True)
class Reference:
    """A by-name reference from a split to a Service (used by the Pulumi auto-naming check)."""

    source: Obj
    target_kind: str
    target_name: str
    target_namespace: str | None
    field: str


def _same_namespace(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a == b


def _ns_text(namespace: str | None) -> str:
    return f" in namespace {namespace!r}" if namespace else ""


@dataclass
class Model:
    objects: list[Obj]
    findings: list[tuple[int, int, Finding]] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    # Object index -> the name the author meant (a Pulumi resource name when Pulumi auto-names the object).
    intended_names: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def build(cls, items: Sequence[tuple[str, Mapping[str, Any]]],
              intended_names: Mapping[int, str] | None = None) -> Model:
        objects: list[Obj] = []
        for index, (path, raw) in enumerate(items):
            if not isinstance(raw, Mapping):
                continue
            meta = raw.get("metadata")
            name = _get(meta, "name")
            ns = _get(meta, "namespace")
            objects.append(Obj(
                index=index,
                path=str(path),
                raw=raw,
                api_version=str(raw.get("apiVersion") or ""),
                kind=str(raw.get("kind") or ""),
                name=str(name) if isinstance(name, str | int) and str(name) else None,
                namespace=str(ns) if isinstance(ns, str) and ns else None,
            ))
        return cls(objects, intended_names=dict(intended_names or {}))

    def add(self, obj: Obj, code: str, message: str) -> None:
        assert code in CODES, code
        self.findings.append((obj.index, len(self.findings),
                              Finding(obj.path, obj.kind or "?", obj.name or NO_NAME, message, code)))

    def find(self, kind: str, name: str, namespace: str | None) -> Obj | None:
        for obj in self.objects:
            if obj.kind == kind and obj.name == name and _same_namespace(obj.namespace, namespace):
                return obj
        return None

    def find_intended(self, kind: str, name: str, namespace: str | None) -> Obj | None:
        """Like ``find``, falling back to objects whose author meant them to have ``name``: the checks
        downstream of a missing-name finding still look at the object it was meant to be."""
        found = self.find(kind, name, namespace)
        if found is not None:
            return found
        for obj in self.objects:
            if (obj.kind == kind and self.intended_names.get(obj.index) == name
                    and _same_namespace(obj.namespace, namespace)):
                return obj
        return None

    def of_kind(self, *kinds: str) -> Iterator[Obj]:
        return (o for o in self.objects if o.kind in kinds)

    # -- pod templates and Services -------------------------------------------------------------

    def pod_templates(self) -> Iterator[PodTemplate]:
        for obj in self.of_kind(*WORKLOAD_KINDS):
            if obj.kind == "Pod":
                template: Any = obj.raw
            elif obj.kind == "CronJob":
                template = _get(obj.raw, "spec", "jobTemplate", "spec", "template")
            else:
                template = _get(obj.raw, "spec", "template")
            if not isinstance(template, Mapping):
                continue
            yield PodTemplate(
                owner=obj,
                labels=_str_map(_get(template, "metadata", "labels")),
                annotations=_str_map(_get(template, "metadata", "annotations")),
                containers=[c for c in _list(_get(template, "spec", "containers")) if isinstance(c, Mapping)],
            )

    def selected(self, service: Obj) -> list[PodTemplate]:
        selector = _str_map(_get(service.raw, "spec", "selector"))
        if not selector:
            return []
        return [t for t in self.pod_templates()
                if _same_namespace(t.owner.namespace, service.namespace)
                and all(t.labels.get(k) == v for k, v in selector.items())]

    def namespace_meshed(self, namespace: str | None) -> bool:
        if namespace is None:
            return False
        ns = self.find("Namespace", namespace, None)
        return ns is not None and _str_map(_get(ns.raw, "metadata", "annotations")).get(INJECT) in MESHED_VALUES


def service_ports(service: Obj) -> list[Mapping[str, Any]]:
    return [p for p in _list(_get(service.raw, "spec", "ports")) if isinstance(p, Mapping)]


def _port_numbers(service: Obj) -> list[int]:
    return [p["port"] for p in service_ports(service) if isinstance(p.get("port"), int)]


def _is_headless(service: Obj) -> str | None:
    spec = _get(service.raw, "spec")
    if _get(spec, "type") == "ExternalName":
        return "is an ExternalName Service"
    if str(_get(spec, "clusterIP") or "").lower() == "none":
        return "is headless (clusterIP: None)"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _quantity(value: str) -> Decimal | None:
    match = _QUANTITY.match(value.strip())
    if match is None:
        return None
    try:
        number = Decimal(match["num"])
    except InvalidOperation:
        return None
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        number *= Decimal(1024) ** _BINARY[suffix]
    elif suffix in _SI:
        number *= _SI[suffix]
    else:
        number = number.scaleb(int(suffix[1:]))
    return -number if match["sign"] == "-" else number


# ---------------------------------------------------------------------------------------------------
# Checks


@dataclass
class _Split:
    """A TrafficSplit or one HTTPRoute Service parent: which apex it targets."""

    obj: Obj
    apex: str
    namespace: str | None


def _check_weights(model: Model, obj: Obj, weights: list[tuple[str, Any]], *, style: str) -> None:
    """``style``: "quantity" (TrafficSplit v1alpha1), "int" (later TrafficSplits), "route" (HTTPRoute)."""
    values: list[Decimal] = []
    complete = True
    for where, weight in weights:
        value: Decimal | None = None
        if weight is None:
            if style == "route":
                value = Decimal(1)  # Gateway API default
            else:
                model.add(obj, "weight-format", f"{where} has no weight; a TrafficSplit backend needs one")
        elif _is_int(weight):
            value = Decimal(weight)
            if style == "route" and weight > MAX_ROUTE_WEIGHT:
                model.add(obj, "weight-format", f"{where} weight {weight} is above the maximum {MAX_ROUTE_WEIGHT}")
        elif style == "quantity" and isinstance(weight, str) and _quantity(weight) is not None:
            value = _quantity(weight)
        elif style == "quantity":
            model.add(obj, "weight-format", f"{where} weight {weight!r} is not an integer or a Kubernetes quantity "
                      "like '500m' (what split.smi-spec.io/v1alpha1 takes)")
        elif isinstance(weight, str) and _quantity(weight) is not None:
            hint = ("; Kubernetes quantities like '500m' are split.smi-spec.io/v1alpha1 only"
                    if style == "int" else "; backendRefs weights are int32 (e.g. 50), never quantity strings")
            model.add(obj, "weight-format", f"{where} weight {weight!r} is a string, but {obj.api_version} takes "
                      f"whole numbers{hint}")
        else:
            model.add(obj, "weight-format", f"{where} weight {weight!r} is not a whole number, which "
                      f"{obj.api_version} requires")
        if value is None:
            complete = False
            continue
        if value < 0:
            model.add(obj, "negative-weight", f"{where} weight {weight!r} is negative; weights must be >= 0")
            complete = False
            continue
        values.append(value)
    if complete and values and all(v == 0 for v in values):
        model.add(obj, "all-weights-zero", "every weight is zero, so the split has nowhere to send traffic "
                  "(requests fail instead of reaching any backend)")


def _check_apex(model: Model, obj: Obj, apex: Any, namespace: str | None, field_name: str,
                port: Any = None) -> Obj | None:
    if not isinstance(apex, str) or not apex:
        model.add(obj, "missing-apex-service", f"{field_name} is missing: the split must name its apex Service")
        return None
    model.references.append(Reference(obj, "Service", apex, namespace, field_name))
    service = model.find("Service", apex, namespace)
    if service is None:
        model.add(obj, "missing-apex-service",
                  f"apex Service {apex!r} ({field_name}) is not defined{_ns_text(namespace)}: Linkerd applies a "
                  "split only to requests sent to the apex Service's cluster IP, so create a ClusterIP Service "
                  f"{apex!r} exposing the backends' port")
        service = model.find_intended("Service", apex, namespace)
        if service is None:
            return None
    why = _is_headless(service)
    if why is not None:
        model.add(obj, "headless-apex", f"apex Service {apex!r} {why}; a split applies only to traffic sent "
                  "to the apex Service's cluster IP, so it must be a ClusterIP Service")
    if port is not None and _is_int(port) and port not in _port_numbers(service):
        model.add(obj, "apex-port-mismatch", f"parentRef port {port} is not a port of apex Service {apex!r} "
                  f"(it exposes {_port_numbers(service) or 'no ports'})")
    return service


def _check_backend(model: Model, obj: Obj, backend: Any, namespace: str | None, field_name: str) -> Obj | None:
    if not isinstance(backend, str) or not backend:
        model.add(obj, "missing-backend-service", f"{field_name} is missing: each backend must name a Service")
        return None
    model.references.append(Reference(obj, "Service", backend, namespace, field_name))
    service = model.find("Service", backend, namespace)
    if service is None:
        model.add(obj, "missing-backend-service",
                  f"backend Service {backend!r} ({field_name}) is not defined{_ns_text(namespace)}; Linkerd keeps "
                  "its weight and answers its share of requests with 500s")
        return model.find_intended("Service", backend, namespace)
    return service


def _check_traffic_split(model: Model, obj: Obj, splits: list[_Split]) -> None:
    version = obj.version
    if version not in SMI_SERVED:
        model.add(obj, "unsupported-split-version",
                  f"{obj.api_version} is not served by linkerd-smi, which serves only "
                  f"{', '.join(f'{SMI_GROUP}/{v}' for v in SMI_SERVED)}; header matches (v1alpha3+) need an "
                  "HTTPRoute instead")
    spec = _get(obj.raw, "spec")
    apex_name = _get(spec, "service")
    apex = _check_apex(model, obj, apex_name, obj.namespace, "spec.service")
    if isinstance(apex_name, str) and apex_name:
        splits.append(_Split(obj, apex_name, obj.namespace))
    backends = _list(_get(spec, "backends"))
    weights: list[tuple[str, Any]] = []
    for i, backend in enumerate(backends):
        where = f"spec.backends[{i}]"
        name = _get(backend, "service")
        service = _check_backend(model, obj, name, obj.namespace, f"{where}.service")
        weights.append((f"{where} ({name})" if isinstance(name, str) else where, _get(backend, "weight")))
        if service is not None and apex is not None:
            missing = [p for p in _port_numbers(apex) if p not in _port_numbers(service)]
            if missing:
                model.add(obj, "backend-port-mismatch",
                          f"backend Service {name!r} does not expose apex port(s) {missing} "
                          f"(it exposes {_port_numbers(service) or 'no ports'}); linkerd-smi routes by the apex "
                          "port, so every backend must expose it")
    _check_weights(model, obj, weights, style="quantity" if version == "v1alpha1" else "int")


def _is_service_ref(ref: Any) -> bool:
    return _get(ref, "group") in CORE_GROUPS and _get(ref, "kind") in (None, "Service")


def _check_route(model: Model, obj: Obj, splits: list[_Split]) -> None:
    spec = _get(obj.raw, "spec")
    for i, parent in enumerate(_list(_get(spec, "parentRefs"))):
        where = f"spec.parentRefs[{i}]"
        namespace = _get(parent, "namespace") or obj.namespace
        name = _get(parent, "name")
        kind = _get(parent, "kind")
        if kind == "Service" and _get(parent, "group") in CORE_GROUPS:
            _check_apex(model, obj, name, namespace, f"{where}.name", _get(parent, "port"))
            if isinstance(name, str) and name:
                splits.append(_Split(obj, name, namespace))
        elif isinstance(name, str) and model.find("Service", name, namespace) is not None:
            what = "has no kind, which means a Gateway" if kind is None else f"has kind {kind!r}"
            model.add(obj, "parentref-not-service",
                      f"{where} names Service {name!r} but {what}; Linkerd applies mesh routes only to parents "
                      "with kind: Service (group: core)")
    for r, rule in enumerate(_list(_get(spec, "rules"))):
        weights: list[tuple[str, Any]] = []
        for b, ref in enumerate(_list(_get(rule, "backendRefs"))):
            if not _is_service_ref(ref):
                continue
            where = f"spec.rules[{r}].backendRefs[{b}]"
            name = _get(ref, "name")
            namespace = _get(ref, "namespace") or obj.namespace
            service = _check_backend(model, obj, name, namespace, f"{where}.name")
            weights.append((f"{where} ({name})" if isinstance(name, str) else where, _get(ref, "weight")))
            port = _get(ref, "port")
            if port is None:
                model.add(obj, "backendref-without-port",
                          f"{where} ({name}) has no port; Linkerd treats a Service backendRef without a port as "
                          "an invalid backend")
            elif service is not None and _is_int(port) and port not in _port_numbers(service):
                model.add(obj, "backend-port-mismatch",
                          f"{where} port {port} is not a port of backend Service {name!r} "
                          f"(it exposes {_port_numbers(service) or 'no ports'})")
        _check_weights(model, obj, weights, style="route")
    _check_shadowed_rules(model, obj, _list(_get(spec, "rules")))


def _match_key(match: Any) -> tuple[Any, ...]:
    """A match in normal form: equal keys mean equal conditions and equal Gateway API precedence."""
    path = _get(match, "path")
    headers = sorted((str(_get(h, "name") or "").lower(), str(_get(h, "type") or "Exact"), str(_get(h, "value")))
                     for h in _list(_get(match, "headers")))
    params = sorted((str(_get(q, "name")), str(_get(q, "type") or "Exact"), str(_get(q, "value")))
                    for q in _list(_get(match, "queryParams")))
    return (str(_get(path, "type") or "PathPrefix"), str(_get(path, "value") or "/"), tuple(headers),
            _get(match, "method"), tuple(params))


def _check_shadowed_rules(model: Model, obj: Obj, rules: list[Any]) -> None:
    # Gateway API: on equal precedence the first rule in list order wins, so a rule whose every match
    # an earlier rule of the same route already has can never match a request (a rule without
    # matches is the default PathPrefix /).
    seen: dict[tuple[Any, ...], int] = {}
    for r, rule in enumerate(rules):
        keys = [_match_key(m) for m in (_list(_get(rule, "matches")) or [{}])]
        earlier = [seen[k] for k in keys if k in seen]
        if len(earlier) == len(keys):
            model.add(obj, "unreachable-route-rule",
                      f"spec.rules[{r}] can never match: each of its matches is also in spec.rules"
                      f"{sorted(set(earlier))}, which comes first and wins the tie (Gateway API match precedence)")
        for k in keys:
            seen.setdefault(k, r)


def _check_mixed(model: Model, splits: list[_Split]) -> None:
    smi = [s for s in splits if s.obj.kind == "TrafficSplit"]
    seen: set[tuple[int, str]] = set()
    for route in (s for s in splits if s.obj.kind == "HTTPRoute"):
        for ts in smi:
            key = (route.obj.index, ts.obj.label)
            if ts.apex == route.apex and _same_namespace(ts.namespace, route.namespace) and key not in seen:
                seen.add(key)
                model.add(route.obj, "mixed-split-apis",
                          f"{ts.obj.label} ({ts.obj.path}) also splits apex Service {route.apex!r}; linkerd-smi "
                          "turns it into a ServiceProfile, which takes precedence over HTTPRoutes: declare the "
                          "split one way only")


def _check_policy_with_smi(model: Model, splits: list[_Split]) -> None:
    flagged: set[int] = set()
    for split in splits:
        if split.obj.kind != "TrafficSplit":
            continue
        apex = model.find("Service", split.apex, split.namespace)
        if apex is None or apex.index in flagged:
            continue
        keys = sorted(k for k in _str_map(_get(apex.raw, "metadata", "annotations"))
                      if k.startswith(POLICY_ANNOTATION_PREFIXES))
        if keys:
            flagged.add(apex.index)
            model.add(apex, "policy-ignored-with-smi",
                      f"annotations {', '.join(keys)} have no effect: {split.obj.label} makes linkerd-smi create a "
                      "ServiceProfile, which disables circuit breaking and annotation retries/timeouts; use an "
                      "HTTPRoute for the split")


def _check_services(model: Model) -> None:
    for service in model.of_kind("Service"):
        if _get(service.raw, "spec", "type") == "ExternalName":
            continue
        selector = _str_map(_get(service.raw, "spec", "selector"))
        if not selector:
            continue  # endpoints managed by hand
        templates = model.selected(service)
        if not templates:
            text = ",".join(f"{k}={v}" for k, v in selector.items())
            model.add(service, "selector-matches-no-pods",
                      f"selector {text} matches no pod template{_ns_text(service.namespace)} in these files, so the "
                      "Service has no endpoints")
            continue
        for i, port in enumerate(service_ports(service)):
            target = port.get("targetPort", port.get("port"))
            if target is None:
                continue
            for template in templates:
                declared = [p for c in template.containers for p in _list(c.get("ports")) if isinstance(p, Mapping)]
                if isinstance(target, str) and not target.isdigit():
                    if not any(p.get("name") == target for p in declared):
                        model.add(service, "target-port-not-exposed",
                                  f"spec.ports[{i}].targetPort {target!r} is not the name of a container port of "
                                  f"{template.owner.label}, so it gets no endpoints there")
                else:
                    number = int(target)
                    # A numeric targetPort works even if undeclared; flag only a clear mismatch.
                    if declared and not any(p.get("containerPort") == number for p in declared):
                        ports = sorted({int(p["containerPort"]) for p in declared if _is_int(p.get("containerPort"))})
                        model.add(service, "target-port-not-exposed",
                                  f"spec.ports[{i}].targetPort {number} is not a container port of "
                                  f"{template.owner.label} (it declares {ports})")


def _check_meshed(model: Model, splits: list[_Split]) -> None:
    split_services: dict[int, tuple[Obj, Obj]] = {}
    for split in splits:
        # Backends first, so a finding names the variant's own Service rather than the apex.
        if split.obj.kind == "TrafficSplit":
            candidates = [_get(b, "service") for b in _list(_get(split.obj.raw, "spec", "backends"))]
        else:
            candidates = [_get(ref, "name") for rule in _list(_get(split.obj.raw, "spec", "rules"))
                          for ref in _list(_get(rule, "backendRefs")) if _is_service_ref(ref)]
        candidates.append(split.apex)
        for name in candidates:
            service = model.find_intended("Service", name, split.namespace) if isinstance(name, str) else None
            if service is not None:
                split_services.setdefault(service.index, (service, split.obj))
    reported: set[int] = set()
    for service, split_obj in split_services.values():
        for template in model.selected(service):
            owner = template.owner
            if owner.index in reported:
                continue
            value = template.annotations.get(INJECT)
            if value in MESHED_VALUES or (value != "disabled" and model.namespace_meshed(owner.namespace)):
                continue
            reported.add(owner.index)
            where = f"Namespace/{owner.namespace}" if owner.namespace else "its namespace"
            why = ("the pod template sets linkerd.io/inject: disabled" if value == "disabled"
                   else f"neither the pod template nor {where} in these files has linkerd.io/inject: enabled")
            model.add(owner, "unmeshed-workload",
                      f"pods behind Service {service.name!r} ({split_obj.label}) are not meshed: {why}. Linkerd "
                      "splits traffic in meshed proxies: inject the backends and every client of the apex Service, "
                      "the load generator included")


def _check_unnamed(model: Model) -> None:
    unresolved: dict[str, list[Reference]] = {}
    for ref in model.references:
        if model.find(ref.target_kind, ref.target_name, ref.target_namespace) is None:
            unresolved.setdefault(ref.target_kind, []).append(ref)
    for obj in model.objects:
        if obj.name is not None or _get(obj.raw, "metadata", "generateName"):
            continue
        refs = unresolved.get(obj.kind, [])
        detail = ""
        if refs:
            names = ", ".join(sorted({f"{r.target_name!r} ({r.source.label})" for r in refs}))
            detail = f"; other objects refer to {obj.kind}s by names that are not defined: {names}"
        model.add(obj, "unnamed-resource",
                  f"has no metadata.name: kubectl rejects it and Pulumi gives it a random-suffixed name{detail}. "
                  "Set metadata.name")


def analyse(objects: Sequence[tuple[str, Mapping[str, Any]]],
            intended_names: Mapping[int, str] | None = None) -> Model:
    """Run every check; the model keeps the findings (with their object order) and the name references."""
    model = Model.build(objects, intended_names)
    splits: list[_Split] = []
    for obj in model.objects:
        if obj.kind == "TrafficSplit" and obj.group == SMI_GROUP:
            _check_traffic_split(model, obj, splits)
        elif obj.kind == "HTTPRoute" and obj.group in ROUTE_GROUPS:
            _check_route(model, obj, splits)
    _check_mixed(model, splits)
    _check_policy_with_smi(model, splits)
    _check_services(model)
    _check_meshed(model, splits)
    _check_unnamed(model)
    return model


def sorted_findings(entries: Sequence[tuple[int, int, Finding]]) -> list[Finding]:
    """By source path, then by the order of the objects, then by the order the checks found them."""
    return [f for _, _, f in sorted(entries, key=lambda e: (e[2].path, e[0], e[1]))]


def lint_objects(objects: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Finding]:
    """Findings for ``(source path, object)`` pairs, sorted by path then object order."""
    return sorted_findings(analyse(objects).findings)


# ---------------------------------------------------------------------------------------------------
# Files


def _yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if path.exists():
        return [path]
    raise UsageError(f"{path}: no such file or directory")


def load_objects(path: Path) -> list[Mapping[str, Any]]:
    """Kubernetes objects of one YAML file (``kind: List`` expanded, other documents skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UsageError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, Mapping) or not doc.get("kind"):
            continue  # empty documents, values files and the like are not objects
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(item for item in doc["items"] if isinstance(item, Mapping) and item.get("kind"))
        else:
            out.append(doc)
    return out


def lint_paths(paths: Sequence[str | Path]) -> list[Finding]:
    """Lint YAML files and directories (searched recursively for ``*.yaml`` / ``*.yml``) together.

    Raises UsageError for a missing, unreadable or malformed file, or when no Kubernetes object is found.
    """
    if not paths:
        raise UsageError("no files to lint: give YAML files or directories")
    items: list[tuple[str, Mapping[str, Any]]] = []
    for given in paths:
        for file in _yaml_files(Path(given)):
            items.extend((str(file), obj) for obj in load_objects(file))
    if not items:
        raise UsageError(f"no Kubernetes objects found in {', '.join(str(p) for p in paths)}")
    return lint_objects(items)


__all__ = ["CODES", "Finding", "lint_objects", "lint_paths"]
