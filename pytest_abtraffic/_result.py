"""What one verification run produced: the input to assertions, the terminal summary and reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._backend import BackendCounters
    from ._chaos import FallbackReport
    from ._compare import CompareReport
    from ._load import LoadResult
    from ._slo import SloReport
    from ._stats import SequentialState, SplitResult


@dataclass(frozen=True)
class FaultWindow:
    """A span of the run during which a fault was active (seconds since load start)."""

    label: str
    start_s: float
    end_s: float | None  # None: still active when load ended


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
    slo: SloReport | None = None
    compare: CompareReport | None = None

    @property
    def ok(self) -> bool:
        split_ok = self.split is None or self.split.ok
        fallback_ok = self.fallback is None or self.fallback.ok
        slo_ok = self.slo is None or self.slo.ok
        compare_ok = self.compare is None or self.compare.ok
        return split_ok and fallback_ok and slo_ok and compare_ok

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
            "slo": self.slo.to_dict() if self.slo is not None else None,
            "compare": self.compare.to_dict() if self.compare is not None else None,
        }


__all__ = ["ExperimentResult", "FaultWindow"]
