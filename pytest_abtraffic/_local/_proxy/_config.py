"""The proxy's configuration: what the parent passes in a JSON file, and its parsers."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..._routes import RouteRule, parse_routes

# linkerd policy-controller queue defaults (linkerd-facts.md: capacity 100, fail-fast 3 s).
DEFAULT_FAIL_FAST_TIMEOUT_S = 3.0
DEFAULT_QUEUE_CAPACITY = 100

_RETRY_TOKEN = re.compile(r"^(5xx|gateway-error|[1-5]\d\d(-[1-5]\d\d)?)$")


def parse_retry_conditions(text: str) -> frozenset[int]:
    """Statuses named by ``retry.linkerd.io/http`` (``5xx``, ``gateway-error``, ``500-504``, ``503``)."""
    out: set[int] = set()
    for raw in text.split(","):
        cond = raw.strip()
        if not _RETRY_TOKEN.match(cond):
            raise ValueError(f"invalid retry condition {cond!r}")
        if cond == "5xx":
            out.update(range(500, 600))
        elif cond == "gateway-error":
            out.update((502, 503, 504))
        elif "-" in cond:
            low, high = (int(p) for p in cond.split("-"))
            if low > high:
                raise ValueError(f"invalid retry range {cond!r}")
            out.update(range(low, high + 1))
        else:
            out.add(int(cond))
    return frozenset(out)


@dataclass(frozen=True)
class AccrualConfig:
    max_failures: int = 7
    min_penalty_s: float = 1.0
    max_penalty_s: float = 60.0
    jitter_ratio: float = 0.5

    def penalty(self, iteration: int, rng: random.Random) -> float:
        """linkerd exp-backoff: base = min * 2^i capped at max, plus up to base * jitter (capped at max)."""
        base = min(self.min_penalty_s * float(2 ** min(iteration, 62)), self.max_penalty_s)
        jitter = 0.0 if self.jitter_ratio == 0 else min(base * self.jitter_ratio * rng.random(),
                                                       self.max_penalty_s - base)
        return base + jitter


@dataclass(frozen=True)
class RetryConfig:
    conditions: str = "5xx"
    limit: int = 1
    timeout_s: float | None = None
    statuses: frozenset[int] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "statuses", parse_retry_conditions(self.conditions))


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the proxy needs; JSON-serialisable so the parent can pass it in a file."""

    weights: Mapping[str, float]
    services: tuple[str, ...]
    endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fail_fast_timeout_s: float = DEFAULT_FAIL_FAST_TIMEOUT_S
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    request_timeout_s: float | None = None
    retry: RetryConfig | None = None
    accrual: AccrualConfig | None = None
    seed: int | None = None
    # Header (cohort) rules before the weighted default rule, matched with Gateway API precedence.
    routes: tuple[RouteRule, ...] = ()
    # Test only: route every request by the default rule, as a proxy that does not implement
    # matches would; the header-route verdict must catch it.
    ignore_matches: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "services": list(self.services),
            "endpoints": {k: list(v) for k, v in self.endpoints.items()},
            "fail_fast_timeout_s": self.fail_fast_timeout_s,
            "queue_capacity": self.queue_capacity,
            "request_timeout_s": self.request_timeout_s,
            "retry": None if self.retry is None else {
                "conditions": self.retry.conditions, "limit": self.retry.limit, "timeout_s": self.retry.timeout_s},
            "accrual": None if self.accrual is None else {
                "max_failures": self.accrual.max_failures, "min_penalty_s": self.accrual.min_penalty_s,
                "max_penalty_s": self.accrual.max_penalty_s, "jitter_ratio": self.accrual.jitter_ratio},
            "seed": self.seed,
            "routes": [r.to_json() for r in self.routes],
            "ignore_matches": self.ignore_matches,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProxyConfig:
        retry = doc.get("retry")
        accrual = doc.get("accrual")
        return cls(
            weights=parse_weights(doc.get("weights", {})),
            services=tuple(str(s) for s in doc.get("services", ())),
            endpoints={str(k): tuple(str(a) for a in v) for k, v in dict(doc.get("endpoints") or {}).items()},
            fail_fast_timeout_s=float(doc.get("fail_fast_timeout_s", DEFAULT_FAIL_FAST_TIMEOUT_S)),
            queue_capacity=int(doc.get("queue_capacity", DEFAULT_QUEUE_CAPACITY)),
            request_timeout_s=None if doc.get("request_timeout_s") is None else float(doc["request_timeout_s"]),
            retry=None if not retry else RetryConfig(
                conditions=str(retry.get("conditions", "5xx")), limit=int(retry.get("limit", 1)),
                timeout_s=None if retry.get("timeout_s") is None else float(retry["timeout_s"])),
            accrual=None if not accrual else AccrualConfig(
                max_failures=int(accrual.get("max_failures", 7)),
                min_penalty_s=float(accrual.get("min_penalty_s", 1.0)),
                max_penalty_s=float(accrual.get("max_penalty_s", 60.0)),
                jitter_ratio=float(accrual.get("jitter_ratio", 0.5))),
            seed=None if doc.get("seed") is None else int(doc["seed"]),
            routes=parse_routes(doc.get("routes") or []),
            ignore_matches=bool(doc.get("ignore_matches", False)),
        )


def parse_weights(raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ValueError("weights must be a mapping of backend name to number")
    out: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
            raise ValueError(f"weight of {name!r} must be a non-negative number, got {value!r}")
        out[str(name)] = float(value)
    return out


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"endpoint address must be HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)



__all__ = [
    "DEFAULT_FAIL_FAST_TIMEOUT_S",
    "DEFAULT_QUEUE_CAPACITY",
    "AccrualConfig",
    "ProxyConfig",
    "RetryConfig",
    "parse_addr",
    "parse_retry_conditions",
    "parse_weights",
]
