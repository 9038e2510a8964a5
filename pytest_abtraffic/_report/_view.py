"""What every report shows, computed once from an :class:`ExperimentResult`.

The HTML page, the terminal summary and the JUnit properties read these views, so the three agree
on the numbers (which versions are listed, what an "error" is, which latencies are meant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._result import ExperimentResult

UNKNOWN_VERSION_LABEL = "(no version)"
_SPLIT_UNKNOWN = "unknown"
PERCENTILES: tuple[str, ...] = ("p50", "p90", "p99", "max")


def finite(value: object) -> float | None:
    """A float, or None for missing/NaN/infinite values (reports print these as a dash)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def pct(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{100.0 * value:.{digits}f}%"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0.0:
        return "<1e-300"
    if value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.1e}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def status_label(status: int) -> str:
    return "conn" if status == 0 else str(status)


def fmt_statuses(by_status: Mapping[int, int]) -> str:
    """``504x120, conn x3`` (most frequent first)."""
    items = sorted(by_status.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{status_label(s)}x{n:,}" for s, n in items)


def version_label(version: str) -> str:
    return version if version else UNKNOWN_VERSION_LABEL


@dataclass(frozen=True)
class VersionView:
    """One version's line: configuration, split judgement (when a split was judged), health."""

    version: str  # raw key; "" when responses carried no version header
    configured: bool
    weight: float | None  # configured share (0..1)
    successes: int
    share: float | None  # from the split judgement, else successes / all successes
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    within: str | None  # "yes" | "no" | "unclear"; None without a split judgement
    errors: int
    errors_by_status: Mapping[int, int]
    latency: Mapping[str, float | None]

    @property
    def label(self) -> str:
        return version_label(self.version)

    @property
    def requests(self) -> int:
        return self.successes + self.errors


@dataclass(frozen=True)
class CheckView:
    name: str
    ok: bool
    observed: str
    expected: str
    detail: str


@dataclass(frozen=True)
class FallbackView:
    scenario: str
    ok: bool
    checks: tuple[CheckView, ...]
    time_to_fallback_s: float | None
    time_to_recover_s: float | None
    error_rate_during_fault: float | None
    errors_by_status_during_fault: Mapping[int, int]
    healthy_share_during_fault: float | None
    post_recovery: Any  # a SplitResult-like object or None
    timeline: tuple[str, ...]


@dataclass(frozen=True)
class SplitView:
    verdict: str
    ok: bool
    total: int
    unit: str
    p_value: float | None
    method: str
    alpha: float
    tolerance: float
    confidence: float
    notes: tuple[str, ...]


def observed_text(value: object, unit: str = "") -> str:
    """A check's observed value as a reader wants it (``unit``: "s", "ms", "share" or "")."""
    if value is None:
        return "-"
    number = finite(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is not None:
        if unit == "share":
            return pct(number, 2)
        if unit == "s":
            return f"{number:.2f} s"
        if unit == "ms":
            return f"{fmt_ms(number)} ms"
        return f"{number:.4g}"
    return str(value)


def ordered_versions(result: ExperimentResult) -> list[str]:
    """Configured variants first (spec order), then anything else that answered, the unknown last."""
    seen = list(result.variants)
    extra: set[str] = set()
    for record in result.load.records:
        if record.version not in seen:
            extra.add(record.version)
    if result.split is not None:
        # The split counts version-less successes as "unknown"; list them once, as the empty version.
        extra.update(row.name for row in result.split.rows
                     if row.name not in seen and not (row.name == _SPLIT_UNKNOWN and "" in extra))
    return seen + sorted(v for v in extra if v) + ([""] if "" in extra else [])


def version_views(result: ExperimentResult) -> list[VersionView]:
    load = result.load
    successes = load.counts("requests")
    failures = load.failures()
    total_ok = sum(successes.values())
    rows = {row.name: row for row in result.split.rows} if result.split is not None else {}
    views: list[VersionView] = []
    for version in ordered_versions(result):
        row = rows.get(version) or (rows.get(_SPLIT_UNKNOWN) if version == "" else None)
        ok = successes.get(version, 0)
        by_status = dict(failures.get(version, {}))
        weight = finite(result.expected_shares.get(version)) if version in result.expected_shares else None
        if row is not None and result.split is not None:
            share: float | None = finite(row.share)
            lo, hi, p = finite(row.ci_low), finite(row.ci_high), finite(row.p_value)
            within: str | None = row.status(result.split.tolerance)
        else:
            # A version that never answered successfully (and is not configured) has no share to show.
            share = ok / total_ok if total_ok and (ok or version in result.variants) else None
            lo = hi = p = None
            within = None
        raw = load.latency_percentiles(version) if ok or by_status else {}
        latency = {key: finite(raw.get(key)) for key in PERCENTILES}
        views.append(VersionView(
            version=version, configured=version in result.variants, weight=weight, successes=ok, share=share,
            ci_low=lo, ci_high=hi, p_value=p, within=within, errors=sum(by_status.values()),
            errors_by_status=by_status, latency=latency,
        ))
    return views


def split_view(result: ExperimentResult) -> SplitView | None:
    split = result.split
    if split is None:
        return None
    return SplitView(
        verdict=split.verdict, ok=split.ok, total=split.total, unit=split.unit, p_value=finite(split.srm.p_value),
        method=split.srm.method, alpha=split.alpha, tolerance=split.tolerance, confidence=split.confidence,
        notes=tuple(split.notes) + ((split.srm.note,) if split.srm.note else ()),
    )


def _timeline_lines(report: Any) -> tuple[str, ...]:
    timeline = getattr(report, "timeline", None)
    if timeline is None:
        return ()
    value = timeline() if callable(timeline) else timeline
    if isinstance(value, str):
        return tuple(line for line in value.splitlines() if line.strip())
    if isinstance(value, Sequence):
        return tuple(str(item) for item in value)
    return ()


def _scenario_name(scenario: object) -> str:
    name = getattr(scenario, "name", scenario)
    return str(name)


def fallback_view(result: ExperimentResult) -> FallbackView | None:
    report = result.fallback
    if report is None:
        return None
    checks = tuple(
        CheckView(name=str(c.name), ok=bool(c.ok), observed=observed_text(c.observed, str(getattr(c, "unit", ""))),
                  expected=observed_text(c.expected), detail=str(c.detail or ""))
        for c in report.checks
    )
    by_status = {int(k): int(v) for k, v in dict(report.errors_by_status_during_fault or {}).items()}
    return FallbackView(
        scenario=_scenario_name(report.scenario),
        ok=bool(report.ok),
        checks=checks,
        time_to_fallback_s=finite(report.time_to_fallback_s),
        time_to_recover_s=finite(report.time_to_recover_s),
        error_rate_during_fault=finite(report.error_rate_during_fault),
        errors_by_status_during_fault=by_status,
        healthy_share_during_fault=finite(report.healthy_share_during_fault),
        post_recovery=report.post_recovery_split,
        timeline=_timeline_lines(report),
    )


def total_errors(result: ExperimentResult) -> int:
    return sum(sum(by.values()) for by in result.load.failures().values())


def verdict_line(result: ExperimentResult) -> str:
    """The one sentence a reader needs first."""
    parts: list[str] = []
    if result.split is not None:
        parts.append(result.split.verdict)
    fb = result.fallback
    if fb is not None:
        failed = [c.name for c in fb.checks if not c.ok]
        state = "fallback ok" if fb.ok else f"fallback failed ({', '.join(map(str, failed)) or 'see checks'})"
        parts.append(f"{state}: scenario {_scenario_name(fb.scenario)}")
    if result.routes is not None:
        failed_rules = [r.rule for r in result.routes.rules if not r.ok]
        parts.append(f"header routes failed ({', '.join(failed_rules)})" if failed_rules else "header routes ok")
    for extra in (result.slo, result.compare):
        if extra is not None:
            parts.append(extra.verdict)
    if not parts:
        parts.append("no split judgement and no fallback scenario: nothing was asserted")
    return "; ".join(parts)


__all__ = [
    "PERCENTILES",
    "UNKNOWN_VERSION_LABEL",
    "CheckView",
    "FallbackView",
    "SplitView",
    "VersionView",
    "fallback_view",
    "finite",
    "fmt_ms",
    "fmt_p",
    "fmt_s",
    "fmt_statuses",
    "observed_text",
    "ordered_versions",
    "pct",
    "split_view",
    "status_label",
    "total_errors",
    "verdict_line",
    "version_label",
    "version_views",
]
