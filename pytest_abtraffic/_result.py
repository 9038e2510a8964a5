"""What one verification run produced: the input to assertions, the terminal summary and reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ._scenario import FaultWindow

if TYPE_CHECKING:
    from ._backend import BackendCounters
    from ._compare import CompareReport
    from ._fallback import FallbackReport
    from ._load import LoadResult
    from ._route_check import RouteReport
    from ._slo import SloReport
    from ._stats import SequentialState, SplitResult


@dataclass(frozen=True)
class ServedWeights:
    """Declared weights (the split objects) next to programmed ones (what the mesh serves: the control
    plane's policy on a cluster, the proxy's control API locally), and how long the mesh took."""

    declared: Mapping[str, float]
    programmed: Mapping[str, float] | None
    source: str
    converged_after_s: float | None

    @property
    def agree(self) -> bool:
        return self.programmed is None or same_split(self.declared, self.programmed)

    def to_dict(self) -> dict[str, Any]:
        return {"declared": dict(self.declared),
                "programmed": dict(self.programmed) if self.programmed is not None else None,
                "source": self.source, "converged_after_s": self.converged_after_s}


def _shares(weights: Mapping[str, float]) -> dict[str, Fraction]:
    # Weights come as floats of quantities ("900m" -> 0.9): limit the denominator before comparing.
    exact = {k: Fraction(v).limit_denominator(10**6) for k, v in weights.items()}
    total = sum(exact.values())
    return {k: v / total for k, v in exact.items() if v} if total else {}


def same_split(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Same backends with the same shares (a backend at weight 0 equals an absent one)."""
    return _shares(a) == _shares(b)


@dataclass(frozen=True)
class ExperimentResult:
    """One experiment's run: configuration, raw load, and every judgement made on it."""

    name: str
    backend: str
    namespace: str
    variants: tuple[str, ...]
    expected_shares: Mapping[str, float]
    split_api: str
    load: LoadResult
    split: SplitResult | None = None
    sequential: SequentialState | None = None
    fallback: FallbackReport | None = None
    fault_windows: tuple[FaultWindow, ...] = ()
    mesh_counters: Mapping[str, BackendCounters] = field(default_factory=dict)
    started_at: str = ""
    duration_s: float = 0.0
    notes: tuple[str, ...] = ()
    weights: ServedWeights | None = None
    routes: RouteReport | None = None
    slo: SloReport | None = None
    compare: CompareReport | None = None

    def observed_shares(self) -> dict[str, float]:
        """Share of successful responses per version over the whole run."""
        counts = self.load.counts()
        total = sum(counts.values())
        return {k: v / total for k, v in counts.items()} if total else {}

    @property
    def failed_parts(self) -> tuple[str, ...]:
        """The judgments that failed, in report order: split, fallback, routes, slo, compare."""
        parts = (("split", self.split), ("fallback", self.fallback), ("routes", self.routes), ("slo", self.slo),
                 ("compare", self.compare))
        return tuple(name for name, part in parts if part is not None and not part.ok)

    @property
    def ok(self) -> bool:
        return not self.failed_parts

    @property
    def status(self) -> str:
        """``PASS``, or ``FAIL: slo`` naming what failed (an experiment named "split" can fail on its SLO
        alone while its split holds)."""
        return "PASS" if self.ok else f"FAIL: {', '.join(self.failed_parts)}"

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON form; the schema lives in ``pytest_abtraffic/_report`` (``RESULT_SCHEMA``)."""
        from dataclasses import asdict

        return {
            "schema_version": 1,
            "name": self.name,
            "backend": self.backend,
            "namespace": self.namespace,
            "variants": list(self.variants),
            "expected_shares": dict(self.expected_shares),
            "split_api": self.split_api,
            "ok": self.ok,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "split": self.split.to_dict() if self.split is not None else None,
            "sequential": asdict(self.sequential) if self.sequential is not None else None,
            "fallback": self.fallback.to_dict() if self.fallback is not None else None,
            "routes": self.routes.to_dict() if self.routes is not None else None,
            "fault_windows": [asdict(w) for w in self.fault_windows],
            "mesh_counters": {
                name: {
                    "requests": c.requests,
                    "responses_by_status": {str(k): v for k, v in c.responses_by_status.items()},
                    "proxy_errors": dict(c.proxy_errors),
                }
                for name, c in self.mesh_counters.items()
            },
            "load": self.load.to_dict(),
            "notes": list(self.notes),
            "weights": ({**self.weights.to_dict(), "observed": self.observed_shares()}
                        if self.weights is not None else None),
            "slo": self.slo.to_dict() if self.slo is not None else None,
            "compare": self.compare.to_dict() if self.compare is not None else None,
        }


__all__ = ["ExperimentResult", "FaultWindow", "ServedWeights", "same_split"]
