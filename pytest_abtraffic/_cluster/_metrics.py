"""Mesh-level counts from a client proxy's Prometheus metrics, and the cross-check with the app.

The load pod's own Linkerd proxy is where the split happens, so its outbound counters say how many
requests it sent to each backend Service:

- ``outbound_http_route_backend_requests_total`` and (2.16+)
  ``outbound_http_route_backend_response_statuses_total{http_status,error}``, labelled
  ``backend_{group,kind,namespace,name,port,section_name}`` (linkerd2-proxy
  ``linkerd/app/outbound/src/metrics.rs``). The proxy emits them on the policy (HTTPRoute) path.
- ``request_total`` / ``response_total{direction="outbound",dst_service,dst_namespace,status_code}``:
  the older per-endpoint family, labelled from the destination controller (``dst_service`` is the
  Service the endpoint was resolved for). It also covers the ServiceProfile path linkerd-smi uses,
  where the route-backend family is not emitted.

The cross-check compares, per variant, the responses the load generator saw carrying that
variant's version with the responses the proxy received from that variant's Service. Retries
(a retry policy on the apex) make the mesh count attempts; the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._backend import BackendCounters

ROUTE_REQUESTS = "outbound_http_route_backend_requests_total"
ROUTE_STATUSES = "outbound_http_route_backend_response_statuses_total"
LEGACY_REQUESTS = "request_total"
LEGACY_RESPONSES = "response_total"
DEFAULT_ABS_TOLERANCE = 2
DEFAULT_REL_TOLERANCE = 0.005


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def _parse_labels(text: str, line_no: int) -> tuple[dict[str, str], int]:
    """Labels from ``text[0] == '{'``; returns them and the index after ``}``."""
    labels: dict[str, str] = {}
    i = 1
    n = len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        if i < n and text[i] == "}":
            return labels, i + 1
        start = i
        while i < n and text[i] not in "=}":
            i += 1
        key = text[start:i].strip()
        if i >= n or text[i] != "=" or i + 1 >= n or text[i + 1] != '"':
            raise ValueError(f"line {line_no}: malformed label set")
        i += 2
        chars: list[str] = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                nxt = text[i + 1]
                chars.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                i += 2
                continue
            chars.append(text[i])
            i += 1
        if i >= n:
            raise ValueError(f"line {line_no}: unterminated label value")
        labels[key] = "".join(chars)
        i += 1
    raise ValueError(f"line {line_no}: unterminated label set")


def parse_prometheus(text: str) -> list[Sample]:
    """Samples of a Prometheus / OpenMetrics text exposition. Comments, ``# EOF``, exemplars and
    timestamps are ignored; malformed lines raise ValueError naming the line."""
    samples: list[Sample] = []
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
            labels, end = _parse_labels(line[brace:], line_no)
            rest = line[brace + end:]
        else:
            if space == -1:
                raise ValueError(f"line {line_no}: no value in {raw!r}")
            name, labels, rest = line[:space], {}, line[space:]
        fields = rest.split("#", 1)[0].split()
        if not fields:
            raise ValueError(f"line {line_no}: no value in {raw!r}")
        try:
            value = float(fields[0])
        except ValueError:
            raise ValueError(f"line {line_no}: value {fields[0]!r} is not a number") from None
        samples.append(Sample(name, labels, value))
    return samples


def _count(value: float) -> int:
    return round(value) if math.isfinite(value) else 0


@dataclass(frozen=True)
class MeshCounts:
    """Per-variant counters and which metric family they came from."""

    counters: Mapping[str, BackendCounters]
    source: str  # "route-backend", "legacy-endpoint" or "none"


def backend_counters(samples: Iterable[Sample], *, namespace: str, services: Mapping[str, str]) -> MeshCounts:
    """Counts per variant; ``services`` maps variant -> its backend Service name."""
    samples = list(samples)
    by_service = {svc: variant for variant, svc in services.items()}
    requests: dict[str, float] = dict.fromkeys(services, 0.0)
    statuses: dict[str, dict[int, float]] = {v: {} for v in services}
    errors: dict[str, dict[str, float]] = {v: {} for v in services}
    found_route = False
    for s in samples:
        if s.name not in (ROUTE_REQUESTS, ROUTE_STATUSES):
            continue
        lab = s.labels
        if lab.get("backend_namespace") != namespace or lab.get("backend_kind", "Service") != "Service":
            continue
        variant = by_service.get(lab.get("backend_name", ""))
        if variant is None:
            continue
        found_route = True
        if s.name == ROUTE_REQUESTS:
            requests[variant] += s.value
        else:
            status = lab.get("http_status", "")
            if status.isdigit():
                statuses[variant][int(status)] = statuses[variant].get(int(status), 0.0) + s.value
            error = lab.get("error", "")
            if error:
                errors[variant][error] = errors[variant].get(error, 0.0) + s.value
    source = "route-backend"
    if not found_route:
        source = "none"
        for s in samples:
            if s.name not in (LEGACY_REQUESTS, LEGACY_RESPONSES):
                continue
            lab = s.labels
            if lab.get("direction") != "outbound" or lab.get("dst_namespace") != namespace:
                continue
            variant = by_service.get(lab.get("dst_service", ""))
            if variant is None:
                continue
            source = "legacy-endpoint"
            if s.name == LEGACY_REQUESTS:
                requests[variant] += s.value
            else:
                code = lab.get("status_code", "")
                if code.isdigit():
                    statuses[variant][int(code)] = statuses[variant].get(int(code), 0.0) + s.value
                elif lab.get("error"):
                    errors[variant][lab["error"]] = errors[variant].get(lab["error"], 0.0) + s.value
    counters = {
        v: BackendCounters(
            requests=_count(requests[v]),
            responses_by_status={k: _count(c) for k, c in sorted(statuses[v].items())},
            proxy_errors={k: _count(c) for k, c in sorted(errors[v].items())},
        )
        for v in services
    }
    return MeshCounts(counters, source)


def add_counters(a: BackendCounters, b: BackendCounters) -> BackendCounters:
    def merge(x: Mapping[Any, int], y: Mapping[Any, int]) -> dict[Any, int]:
        out = dict(x)
        for k, v in y.items():
            out[k] = out.get(k, 0) + v
        return out

    return BackendCounters(requests=a.requests + b.requests,
                           responses_by_status=merge(a.responses_by_status, b.responses_by_status),
                           proxy_errors=merge(a.proxy_errors, b.proxy_errors))


@dataclass(frozen=True)
class MeshRow:
    variant: str
    app: int
    mesh: int

    @property
    def diff(self) -> int:
        return self.mesh - self.app


@dataclass(frozen=True)
class MeshCheck:
    """App-level vs mesh-level counts of one load run."""

    source: str
    rows: tuple[MeshRow, ...]
    abs_tolerance: int
    rel_tolerance: float
    problems: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "rows": [{"variant": r.variant, "app": r.app, "mesh": r.mesh, "diff": r.diff} for r in self.rows],
            "tolerance": {"abs": self.abs_tolerance, "rel": self.rel_tolerance},
            "problems": list(self.problems),
            "notes": list(self.notes),
        }

    def format(self) -> str:
        lines = [f"mesh cross-check ({self.source}): {'agrees' if self.ok else 'DISAGREES'}",
                 f"  {'variant':<12} {'app':>9} {'mesh':>9} {'diff':>7}"]
        lines += [f"  {r.variant:<12} {r.app:>9} {r.mesh:>9} {r.diff:>+7}" for r in self.rows]
        lines += [f"  ! {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def compare_with_app(app_counts: Mapping[str, int], mesh: MeshCounts, *,
                     abs_tolerance: int = DEFAULT_ABS_TOLERANCE, rel_tolerance: float = DEFAULT_REL_TOLERANCE,
                     retries: bool = False) -> MeshCheck:
    """Responses per variant seen by the app vs received by the client proxy from each backend.

    A difference beyond ``max(abs_tolerance, rel_tolerance * app)`` is a problem: the load did not
    go (only) through the mesh's split, or the version header lies about which backend answered.
    """
    rows = []
    problems = []
    notes = []
    # Response statuses exist from Linkerd 2.16; before, the request counter is what there is.
    by_status = any(c.responses_by_status for c in mesh.counters.values())
    if not by_status and mesh.source != "none":
        notes.append("no per-status response counters (Linkerd < 2.16?): comparing request counts")
    for variant, counters in mesh.counters.items():
        mesh_n = sum(counters.responses_by_status.values()) if by_status else counters.requests
        app_n = int(app_counts.get(variant, 0))
        rows.append(MeshRow(variant, app_n, mesh_n))
        allowed = max(abs_tolerance, rel_tolerance * app_n)
        if mesh.source != "none" and abs(mesh_n - app_n) > allowed:
            problems.append(f"{variant}: the app saw {app_n} responses from it, the client proxy {mesh_n} "
                            f"(allowed difference {allowed:g})")
        if counters.proxy_errors:
            notes.append(f"{variant}: the proxy answered itself (without reaching the backend) "
                         + ", ".join(f"{k}={v}" for k, v in counters.proxy_errors.items()))
    unknown = sorted(set(app_counts) - set(mesh.counters))
    if unknown:
        notes.append(f"responses with versions not among the split's backends: {', '.join(unknown)}")
    if mesh.source == "none":
        problems.append("the load pod's proxy reported no per-backend counters for these Services: was the load "
                        "pod meshed, and did it send to the apex Service?")
    if retries:
        notes.append("a retry policy is set: the mesh counts every attempt, the app only the final answer")
    return MeshCheck(mesh.source, tuple(rows), abs_tolerance, rel_tolerance, tuple(problems), tuple(notes))


__all__ = [
    "LEGACY_REQUESTS",
    "LEGACY_RESPONSES",
    "ROUTE_REQUESTS",
    "ROUTE_STATUSES",
    "MeshCheck",
    "MeshCounts",
    "MeshRow",
    "Sample",
    "add_counters",
    "backend_counters",
    "compare_with_app",
    "parse_prometheus",
]
