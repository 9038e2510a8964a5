"""The convergence gate: never sample before the mesh serves the declared weights.

Two facts make the route status alone useless for this (linkerd-facts.md, "Checked against source"):
Linkerd's policy controller writes the HTTPRoute ``Accepted``/``ResolvedRefs`` conditions without
``observedGeneration`` (linkerd2 edge-25.4.4 ``policy-controller/k8s/status/src/index.rs``), so an old
status cannot be told from a new one; and what proxies are given is the policy controller's
outbound policy for the apex Service, which ``linkerd diagnostics policy svc/<apex> <port>`` prints
(``cli/cmd/policy.go``: it calls ``OutboundPolicies.Get`` for ``<apex>.<ns>.svc:<port>`` and prints
the protobuf message with ``encoding/json`` when ``-o json`` is given).

The gate, after the split is applied and after every weight change:

1. HTTPRoute: the status from ``linkerd.io/policy-controller`` says Accepted and ResolvedRefs (a
   condition whose ``observedGeneration`` is older than the route's generation fails; a missing one
   is "unknown", never "current"); then the policy output shows this route with the declared
   backends and weights ("programmed" weights).
2. SMI: linkerd-smi's ServiceProfile ``dstOverrides`` carry the declared weights.

How long it took is ``converged_after_s``. When the control plane settles on other weights than the
objects declare, the gate fails with ``ProgrammedWeightsError`` (both sets), not with a timeout.

The JSON shape (linkerd2-proxy-api v0.16.0, the version linkerd2 edge-25.4.4 pins in ``go.mod``:
``proto/outbound.proto``, ``proto/meta.proto``, ``go/outbound/outbound.pb.go``): message fields use
their json tags (``protocol``, ``routes``, ``rules``, ``backends``, ``backend``, ``weight``,
``metadata``); a oneof is a Go interface field without a tag, so it appears as ``"Kind"`` holding
one key named after the Go wrapper field (``Detect``, ``Http1``, ``RandomAvailable``,
``Resource``...). ``omitempty`` drops a weight of 0. The controller builds the Service's policy as
``Detect`` with the same HTTP routes under ``http1`` and ``http2`` (``policy-controller/grpc/src/
outbound.rs``), a route's backends as ``RandomAvailable`` of weighted backends whose metadata is the
backend Service (``outbound/http.rs`` ``convert_backend``, ``outbound.rs`` ``service_meta``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._errors import NotReadyError, ProgrammedWeightsError
from .._result import ServedWeights, same_split
from ._kube import POLICY_CONTROLLER, KubeApi, meta, name_of, parse_quantity, profile_name

if TYPE_CHECKING:
    from .._spec import ExperimentSpec

#: ``policy_query(namespace, service, port)`` -> the text of ``linkerd diagnostics policy -o json``.
PolicyQuery = Callable[[str, str, int], str]
CONVERGE_INTERVAL_S = 1.0
Convergence = ServedWeights  # the gate's outcome is what results and reports carry


def _one_of(node: Any) -> tuple[str, Any]:
    """A oneof as ``encoding/json`` prints it: ``{"Kind": {"Name": value}}``."""
    kind = node.get("Kind") if isinstance(node, Mapping) else None
    if isinstance(kind, Mapping) and len(kind) == 1:
        ((name, value),) = kind.items()
        return str(name), value
    return "", None


def _resource(metadata: Any) -> Mapping[str, Any]:
    name, value = _one_of(metadata)
    return value if name == "Resource" and isinstance(value, Mapping) else {}


def _http_routes(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    name, proto = _one_of(policy.get("protocol") or {})
    if not isinstance(proto, Mapping):
        return []
    if name == "Detect":
        routes = list((proto.get("http1") or {}).get("routes") or [])
        return routes + list((proto.get("http2") or {}).get("routes") or [])
    if name in ("Http1", "Http2"):
        return list(proto.get("routes") or [])
    return []


def programmed_route_weights(text: str, route: str, namespace: str) -> dict[str, int] | None:
    """Backend Service -> weight the policy controller serves for HTTPRoute ``route`` (its last rule,
    the kit's unconditional one), or None when the route is not in the policy (yet)."""
    try:
        policy = json.loads(text)
    except ValueError as exc:
        raise NotReadyError(f"cannot parse `linkerd diagnostics policy -o json` output ({exc}): "
                            f"{text[:200]!r}") from None
    found: dict[str, int] | None = None
    for http_route in _http_routes(policy if isinstance(policy, Mapping) else {}):
        res = _resource(http_route.get("metadata"))
        if res.get("kind") != "HTTPRoute" or res.get("name") != route or res.get("namespace") != namespace:
            continue
        rules = http_route.get("rules") or []
        if not rules:
            return {}
        name, dist = _one_of(rules[-1].get("backends") or {})
        weights: dict[str, int] = {}
        if name == "RandomAvailable" and isinstance(dist, Mapping):
            for weighted in dist.get("backends") or []:
                backend = ((weighted.get("backend") or {}).get("backend")) or {}
                svc = _resource(backend.get("metadata"))
                key = str(svc.get("name", "?"))
                weights[key] = weights.get(key, 0) + int(weighted.get("weight") or 0)  # omitempty: 0
        found = weights  # http1 and http2 carry the same routes: the last one read is as good
    return found


def _fmt(weights: Mapping[str, float] | None) -> str:
    if weights is None:
        return "unknown"
    return ", ".join(f"{k}={v:g}" for k, v in weights.items())


def route_status_current(api: KubeApi, namespace: str, route: Mapping[str, Any]) -> tuple[bool, str]:
    """Accepted and ResolvedRefs from the policy controller, and not provably stale."""
    name = name_of(route)
    live = api.get(str(route["apiVersion"]), "HTTPRoute", name, namespace)
    if live is None:
        return False, f"HTTPRoute {name} does not exist"
    generation = int(meta(live).get("generation") or 0)
    ours = [p for p in ((live.get("status") or {}).get("parents") or [])
            if p.get("controllerName") == POLICY_CONTROLLER]
    if not ours:
        return False, f"HTTPRoute {name}: no status from {POLICY_CONTROLLER} yet"
    problems = []
    unknown = False
    for parent in ours:
        conds = {c.get("type"): c for c in parent.get("conditions") or []}
        for wanted in ("Accepted", "ResolvedRefs"):
            cond = conds.get(wanted)
            if cond is None or cond.get("status") != "True":
                problems.append(f"{wanted}={None if cond is None else cond.get('status')}")
            elif cond.get("observedGeneration") is None:
                unknown = True  # Linkerd never writes it: the policy output decides
            elif int(cond["observedGeneration"]) < generation:
                problems.append(f"{wanted} is for generation {cond['observedGeneration']} < {generation}")
    if problems:
        return False, f"HTTPRoute {name}: " + "; ".join(problems)
    note = " (no observedGeneration: the status may be an old one)" if unknown else ""
    return True, f"HTTPRoute {name}: Accepted and ResolvedRefs{note}"


def cli_policy_query(runner: Callable[..., Any], *, kubeconfig: str | None, context: str | None,
                     linkerd_namespace: str = "linkerd", env: Mapping[str, str] | None = None) -> PolicyQuery:
    """``linkerd diagnostics policy -n NS svc/NAME PORT -o json`` with the backend's kubeconfig."""

    def query(namespace: str, service: str, port: int) -> str:
        argv = ["linkerd", "diagnostics", "policy", "-n", namespace, f"svc/{service}", str(port), "-o", "json",
                "--linkerd-namespace", linkerd_namespace]
        if kubeconfig:
            argv += ["--kubeconfig", kubeconfig]
        if context:
            argv += ["--context", context]
        return str(runner(argv, timeout=60.0, env=dict(env) if env is not None else None).stdout)

    return query


class ConvergenceGate:
    """Waits until the control plane serves ``spec``'s weights; see the module docstring."""

    def __init__(self, api: KubeApi, namespace: str, *, policy_query: PolicyQuery | None,
                 cluster_domain: str = "cluster.local", clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, interval_s: float = CONVERGE_INTERVAL_S) -> None:
        self.api = api
        self.namespace = namespace
        self.policy_query = policy_query
        self.cluster_domain = cluster_domain
        self.clock = clock
        self.sleep = sleep
        self.interval_s = interval_s

    def _declared(self, spec: ExperimentSpec) -> dict[str, float]:
        return {name: float(w) for name, w in spec.exact_weights().items()}

    def _programmed(self, spec: ExperimentSpec, split: Mapping[str, Any]) -> tuple[dict[str, float] | None, str]:
        """(programmed weights per variant or None, what is missing) for one poll."""
        by_service = {spec.service_name(v.name): v.name for v in spec.variants}
        if split.get("kind") == "HTTPRoute":
            ok, detail = route_status_current(self.api, self.namespace, split)
            if not ok:
                return None, detail
            if self.policy_query is None:
                raise NotReadyError("the convergence gate needs the linkerd CLI to read what the control plane "
                                    f"serves (`linkerd diagnostics policy -n {self.namespace} svc/{spec.apex_service} "
                                    f"{spec.service_port}`); install the linkerd CLI of the cluster's Linkerd version "
                                    "(https://linkerd.io/2/getting-started/) and put it on PATH")
            text = self.policy_query(self.namespace, spec.apex_service, spec.service_port)
            served = programmed_route_weights(text, name_of(split), self.namespace)
            if served is None:
                return None, f"{detail}; the policy for svc/{spec.apex_service} does not include the route yet"
            return {by_service.get(k, k): float(v) for k, v in served.items()}, detail
        profile = profile_name(spec.apex_service, self.namespace, self.cluster_domain)
        live = self.api.get("linkerd.io/v1alpha2", "ServiceProfile", profile, self.namespace)
        if live is None:
            return None, f"ServiceProfile {profile} not created yet by linkerd-smi"
        weights: dict[str, float] = {}
        for dst in (live.get("spec") or {}).get("dstOverrides") or []:
            host = str(dst.get("authority", "")).split(":")[0].split(".")[0]
            weights[by_service.get(host, host)] = float(parse_quantity(dst.get("weight", 0)))
        return weights, f"ServiceProfile {profile} dstOverrides"

    def wait(self, spec: ExperimentSpec, split: Mapping[str, Any], *, timeout_s: float) -> Convergence:
        declared = self._declared(spec)
        source = ("linkerd diagnostics policy" if split.get("kind") == "HTTPRoute"
                  else "ServiceProfile dstOverrides")
        start = self.clock()
        last: dict[str, float] | None = None
        detail = ""
        while True:
            programmed, detail = self._programmed(spec, split)
            if programmed is not None:
                last = programmed
                if same_split(programmed, declared):
                    return Convergence(declared, programmed, source, round(self.clock() - start, 3))
            if self.clock() - start >= timeout_s:
                break
            self.sleep(self.interval_s)
        if last is not None:
            raise ProgrammedWeightsError(
                f"the control plane serves other weights than the {split.get('kind')} declares, after waiting "
                f"{timeout_s:g}s (namespace {self.namespace}):\n  declared:   {_fmt(declared)}\n"
                f"  programmed: {_fmt(last)} (from {source})\nno traffic was measured: fix the split first "
                "(a weight dropped, a backend the controller cannot resolve, another controller rewriting it)",
                declared=declared, programmed=last)
        raise NotReadyError(f"the split in namespace {self.namespace} did not converge within {timeout_s:g}s: "
                            f"{detail}; declared {_fmt(declared)}")


__all__ = [
    "Convergence",
    "ConvergenceGate",
    "PolicyQuery",
    "cli_policy_query",
    "programmed_route_weights",
    "route_status_current",
    "same_split",
]
