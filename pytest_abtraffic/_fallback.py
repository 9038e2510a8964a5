"""Fallback assertions: what traffic did while a variant was broken, judged against Linkerd's behaviour.

Everything is computed from the per-request records of one load run, by **completion time**
(``t + latency``): a request that waited in a fail-fast queue for 3 s is a 504 the client saw 3 s
after it was sent, and that is when traffic had (not yet) fallen back. The rules each default
comes from are in ``docs/fallback.md`` (sources: ``linkerd-facts.md``, "When a backend fails").
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import FallbackAssertionError
from ._expectation import (
    ACCRUAL_EJECTION_PROBABILITY,
    DETECTION_MARGIN_S,
    FALLBACK_FRACTION,
    MAX_ERROR_RATE_AFTER_FALLBACK,
    POST_RECOVERY_TOLERANCE,
    READINESS_DETECTION_S,
    RECOVER_FRACTION,
    RESTART_ALLOWANCE_S,
    FallbackExpectation,
    _number,
    default_expectation,
    retry_covers,
)
from ._scenario import FaultWindow

if TYPE_CHECKING:
    from ._load import LoadResult
    from ._scenario import Scenario
    from ._spec import ExperimentSpec
    from ._stats import SplitResult

# Buckets for fallback/recovery detection hold about this many requests of the broken variant
# in normal operation, between these widths.
EXPECTED_PER_BUCKET = 20.0
MIN_BUCKET_S = 0.25
MAX_BUCKET_S = 2.0


class _Record(Protocol):
    """What the evaluation reads from a request record (``_load.RequestRecord`` has it)."""

    @property
    def t(self) -> float: ...
    @property
    def version(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def ok(self) -> bool: ...


@dataclass(frozen=True)
class Check:
    """One fallback assertion: ``observed`` against ``expected`` (text), and why."""

    name: str
    ok: bool
    observed: Any
    expected: str
    detail: str = ""
    unit: str = ""  # how to show ``observed``: "s", "share" (a fraction shown as %), "ms" or ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        obs = _fmt_observed(self.observed, self.unit)
        text = f"{mark} {self.name}: observed {obs}, expected {self.expected}"
        return f"{text} -- {self.detail}" if self.detail else text

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "observed": _jsonable(self.observed),
                "expected": self.expected, "detail": self.detail, "unit": self.unit}


@dataclass(frozen=True)
class TimelineRow:
    """One second of the run (by completion time)."""

    second: int
    total: int
    served: Mapping[str, int]  # successful responses per version ("" or other names included)
    errors: Mapping[int, int]  # status -> count (0 = connection error)
    markers: tuple[str, ...] = ()
    in_fault: bool = False


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class FallbackReport:
    """What traffic did during and after a fault scenario, and the verdict of each check."""

    scenario: str
    ok: bool
    checks: tuple[Check, ...]
    time_to_fallback_s: float | None
    time_to_recover_s: float | None
    error_rate_during_fault: float
    errors_by_status_during_fault: Mapping[int, int]
    healthy_share_during_fault: float
    post_recovery_split: SplitResult | None
    failed_variants: tuple[str, ...] = ()
    healthy_variants: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    fault_start_s: float | None = None
    fault_end_s: float | None = None
    requests_during_fault: int = 0
    failed_share_during_fault: float = 0.0
    bucket_s: float = 1.0
    windows: tuple[FaultWindow, ...] = ()
    rows: tuple[TimelineRow, ...] = ()
    expectation: FallbackExpectation | None = None
    notes: tuple[str, ...] = ()

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def summary(self) -> str:
        ttf = "-" if self.time_to_fallback_s is None else f"{self.time_to_fallback_s:.2f} s"
        ttr = "-" if self.time_to_recover_s is None else f"{self.time_to_recover_s:.2f} s"
        errors = ", ".join(f"{_status_name(s)}x{n}" for s, n in sorted(self.errors_by_status_during_fault.items()))
        verdict = "passed" if self.ok else f"FAILED {len(self.failed_checks)} of {len(self.checks)} checks"
        when = "after fallback" if self.time_to_fallback_s is not None else "during the fault"
        healthy = ", ".join(self.healthy_variants) or "healthy variants"
        return (f"fallback scenario {self.scenario!r} {verdict}: time to fallback {ttf}, time to recover {ttr}, "
                f"errors during the fault {self.error_rate_during_fault:.2%} of {self.requests_during_fault} "
                f"({errors or 'none'}), {healthy} served {self.healthy_share_during_fault:.1%} {when}")

    def timeline(self) -> str:
        """Per-second table: requests, share per version, errors, fault marker and events."""
        versions = list(self.variants)
        extra = sorted({v for r in self.rows for v in r.served if v not in versions})
        header = ["s", "reqs", *versions, *(["other"] if extra else []), "errors", "statuses", "fault"]
        lines: list[list[str]] = [header]
        for row in self.rows:
            total = row.total
            cells = [str(row.second), str(total)]
            for v in versions:
                cells.append(f"{row.served.get(v, 0) / total:.0%}" if total else "-")
            if extra:
                other = sum(n for v, n in row.served.items() if v not in versions)
                cells.append(f"{other / total:.0%}" if total else "-")
            n_err = sum(row.errors.values())
            cells.append(str(n_err))
            cells.append(" ".join(f"{_status_name(s)}x{n}" for s, n in sorted(row.errors.items())))
            cells.append(("#" if row.in_fault else " ") + (" " + "; ".join(row.markers) if row.markers else ""))
            lines.append(cells)
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        out = []
        for line in lines:
            body = [c.rjust(widths[i]) if i < len(header) - 2 else c.ljust(widths[i])
                    for i, c in enumerate(line[:-1])]
            out.append(("  ".join(body) + "  " + line[-1]).rstrip())
        out.append("(seconds since load start, by response time; shares are of all requests in that second; "
                   "# = fault active)")
        return "\n".join(out)

    def message(self) -> str:
        parts = [self.summary()]
        failed = self.failed_checks
        if failed:
            parts.append("failed checks:")
            parts.extend(f"  - {c.line()[5:]}" for c in failed)
        passed = [c for c in self.checks if c.ok]
        if passed:
            parts.append("passed checks:")
            parts.extend(f"  - {c.line()[5:]}" for c in passed)
        parts.extend(f"note: {n}" for n in self.notes)
        if self.post_recovery_split is not None and not self.post_recovery_split.ok:
            parts.append("post-recovery split:")
            parts.append(self.post_recovery_split.table())
        parts.append("timeline:")
        parts.append(self.timeline())
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.message()

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise FallbackAssertionError(self.message())

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "time_to_fallback_s": self.time_to_fallback_s,
            "time_to_recover_s": self.time_to_recover_s,
            "error_rate_during_fault": self.error_rate_during_fault,
            "errors_by_status_during_fault": {str(k): v for k, v in sorted(self.errors_by_status_during_fault.items())},
            "healthy_share_during_fault": self.healthy_share_during_fault,
            "failed_share_during_fault": self.failed_share_during_fault,
            "requests_during_fault": self.requests_during_fault,
            "post_recovery_split": self.post_recovery_split.to_dict() if self.post_recovery_split is not None else None,
            "failed_variants": list(self.failed_variants),
            "healthy_variants": list(self.healthy_variants),
            "fault_start_s": self.fault_start_s,
            "fault_end_s": self.fault_end_s,
            "bucket_s": self.bucket_s,
            "windows": [dataclasses.asdict(w) for w in self.windows],
            "timeline": [
                {"second": r.second, "total": r.total, "served": dict(r.served),
                 "errors": {str(k): v for k, v in sorted(r.errors.items())}, "markers": list(r.markers),
                 "in_fault": r.in_fault}
                for r in self.rows
            ],
            "expectation": _jsonable(self.expectation.to_dict()) if self.expectation is not None else None,
            "notes": list(self.notes),
        }


def _status_name(status: int) -> str:
    return "conn-error" if status == 0 else str(status)


def _fmt_observed(value: Any, unit: str = "") -> str:
    if value is None:
        return "none"
    if _number(value):
        if unit == "s":
            return f"{value:.2f} s"
        if unit == "share":
            return _pct(float(value))
        if unit == "ms":
            return f"{value:.0f} ms"
        if isinstance(value, float):
            return f"{value:.4g}"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Evaluation


def _done(r: _Record) -> float:
    return r.t + r.latency_ms / 1000.0


def _buckets(start: float, end: float, width: float) -> list[tuple[float, float]]:
    """[start, end) cut into ``width`` slices; a last sliver under half a width joins its neighbour."""
    if end <= start:
        return []
    n = max(1, math.ceil((end - start) / width - 1e-9))
    edges = [start + i * width for i in range(n)] + [end]
    if n > 1 and edges[-1] - edges[-2] < width / 2:
        del edges[-2]
    return list(itertools.pairwise(edges))


def _rate(bad: int, total: int) -> float:
    return bad / total if total else 0.0


def _pct(x: float) -> str:
    return f"{x:.2%}" if x < 0.1 else f"{x:.1%}"


def _expected_shares(spec: ExperimentSpec, scenario: Scenario, windows: Sequence[FaultWindow],
                     end_s: float) -> dict[str, float]:
    """Configured shares at the end of the run: a weights step still in force counts."""
    shares = spec.shares()
    for step in scenario.steps:
        if step.action != "weights":
            continue
        still = step.end_s is None or step.end_s >= end_s
        applied = any(w.label == step.label for w in windows) or not windows
        if still and applied:
            current = {v.name: v.weight for v in spec.variants}
            if isinstance(step.value, Mapping):
                current.update({k: v for k, v in step.value.items()})
            else:
                current[step.variant] = step.value  # type: ignore[assignment]
            shares = spec.with_weights(current).shares()
    return shares


# Fallback holds once this long has passed, and this many healthy responses came back, since the last
# request that went to the broken variant (whichever comes later). The adaptive fault phase waits for
# the same hold before it ends, so a phase that ends early is one the evaluation calls "held".
FALLBACK_HOLD_S = 0.5
FALLBACK_HOLD_REQUESTS = 200


def went_to_broken(r: _Record, failed: Sequence[str], healthy: Sequence[str]) -> bool:
    """Traffic that went to (or was lost on) a broken variant: its answers, and every failure that
    carries no healthy variant's version (a proxy-made 502/503/504 has none)."""
    return r.version in failed or (not r.ok and r.version not in healthy)


def bucket_width(records: Sequence[_Record], dones: Sequence[float], fault_start: float, end_s: float,
                 failed_share: float) -> float:
    """Buckets hold ~EXPECTED_PER_BUCKET requests of the broken variant in normal operation."""
    baseline = bisect.bisect_left(dones, fault_start)
    overall = len(records) / end_s if end_s > 0 else 0.0
    rps = baseline / fault_start if baseline >= 50 and fault_start > 0.5 else overall
    if rps > 0 and failed_share > 0:
        return min(MAX_BUCKET_S, max(MIN_BUCKET_S, EXPECTED_PER_BUCKET / (rps * failed_share)))
    return 1.0


def exact_fallback_instant(records: Sequence[_Record], dones: Sequence[float], fault_start: float,
                           fault_end: float, failed: Sequence[str], healthy: Sequence[str]) -> float | None:
    """Completion time of the last request that went to a broken variant during the fault, if the
    fallback then held (FALLBACK_HOLD_S and FALLBACK_HOLD_REQUESTS healthy answers before the fault
    ended); None when traffic kept reaching it until the end (no fallback, or probes).

    ``records`` sorted by completion time, ``dones`` their completion times.
    """
    first = bisect.bisect_left(dones, fault_start)
    last = bisect.bisect_left(dones, fault_end)
    instant = fault_start
    for i in range(last - 1, first - 1, -1):
        if went_to_broken(records[i], failed, healthy):
            instant = dones[i]
            break
    if fault_end - instant < FALLBACK_HOLD_S:
        return None
    after = bisect.bisect_right(dones, instant)
    healthy_answers = sum(1 for r in records[after:last] if r.ok and r.version in healthy)
    return instant if healthy_answers >= FALLBACK_HOLD_REQUESTS else None


def _sustained_fallback(records: Sequence[_Record], dones: Sequence[float], fault_start: float, fault_end: float,
                        bucket_s: float, threshold: float, is_bad: Callable[[_Record], bool]) -> float | None:
    """Seconds from the fault's start until the broken variant's share stays below ``threshold`` in
    every later bucket (sparse probes allowed); the instant is the last request that still went to it
    before that run of buckets. None when it never does."""
    buckets = _buckets(fault_start, fault_end, bucket_s)

    def between(a: float, b: float) -> Sequence[_Record]:
        return records[bisect.bisect_left(dones, a):bisect.bisect_left(dones, b)]

    stats = []
    for a, b in buckets:
        rs = between(a, b)
        bad = [_done(r) for r in rs if is_bad(r)]
        stats.append((len(rs), len(bad), max(bad, default=None)))
    below = [total > 0 and nbad / total < threshold for total, nbad, _ in stats]
    k = len(below)
    while k > 0 and below[k - 1]:
        k -= 1
    if k == len(below):
        return None
    last = max((s[2] for s in stats[:k] if s[2] is not None), default=fault_start)
    if k > 0 and stats[k - 1][0] == 0:
        # No responses at all just before: clients were stuck until the first one came back.
        first_bucket = between(*buckets[k])
        if first_bucket:
            last = max(last, _done(first_bucket[0]))
    return max(0.0, last - fault_start)


def recovery_instant(records: Sequence[_Record], dones: Sequence[float], fault_end: float, end_s: float,
                     bucket_s: float, failed: Sequence[str], shares: Mapping[str, float],
                     recover_fraction: float) -> tuple[float, float] | None:
    """(when, bucket end): every broken variant answers again and gets back to ``recover_fraction`` of
    its share. ``when`` is the latest, over the broken variants, of each one's first successful answer
    after the fault; the bucket end (where its share was back) starts the post-recovery window."""
    if not failed:
        return fault_end, fault_end
    whens: list[float] = []
    ends: list[float] = []
    for v in failed:
        threshold = recover_fraction * shares.get(v, 0.0)
        found: float | None = None
        for a, b in _buckets(fault_end, end_s, bucket_s):
            rs = records[bisect.bisect_left(dones, a):bisect.bisect_left(dones, b)]
            mine = sum(1 for r in rs if r.ok and r.version == v)
            if rs and mine / len(rs) >= threshold and (mine or threshold == 0):
                found = b
                break
        if found is None:
            return None
        start = bisect.bisect_left(dones, fault_end)
        stop = bisect.bisect_left(dones, found)
        first_ok = next((dones[i] for i in range(start, stop) if records[i].ok and records[i].version == v),
                        fault_end)
        whens.append(first_ok)
        ends.append(found)
    return max(whens), max(ends)


@dataclass(frozen=True)
class PostRecoveryDecision:
    """The post-recovery window as the adaptive recovery phase closed it: the sequential test's
    verdict on the successful answers completing in [start_s, end_s)."""

    start_s: float
    end_s: float
    counts: Mapping[str, int]
    verdict: str
    decided: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, "counts": dict(self.counts), "verdict": self.verdict,
                "decided": self.decided, "reason": self.reason}


def evaluate_fallback(
    load: LoadResult,
    scenario: Scenario,
    windows: Sequence[FaultWindow],
    spec: ExperimentSpec,
    expectation: FallbackExpectation | None = None,
    *,
    post_recovery: PostRecoveryDecision | None = None,
    phase_notes: Sequence[str] = (),
) -> FallbackReport:
    """Judge what traffic did around the fault windows (as recorded by the ScenarioRunner).

    ``windows`` empty: the scenario's planned times are used (and a note says so).
    ``post_recovery``: the window the adaptive recovery phase closed (its sequential verdict); the
    post-recovery split is then judged on exactly those counts, as ``verify_split`` judges the counts
    its sequential test decided on. ``phase_notes``: how each phase ended, for the report.
    """
    exp = expectation if expectation is not None else default_expectation(spec, scenario)
    notes: list[str] = list(phase_notes)
    records: list[_Record] = sorted(load.records, key=_done)
    dones = [_done(r) for r in records]
    last_done = dones[-1] if dones else 0.0
    end_s = max(float(load.duration_s), last_done)
    variants = spec.variant_names
    failed = tuple(v for v in scenario.targets if v in variants)
    healthy = tuple(v for v in variants if v not in failed)
    shares = spec.shares()
    w_failed = sum(shares.get(v, 0.0) for v in failed)

    used = list(windows)
    if not used:
        used = list(scenario.windows())
        notes.append("no recorded fault windows were given; the scenario's planned times were used")
    fault_labels = {s.label for s in scenario.fault_steps}
    fault_windows = [w for w in used if w.label in fault_labels] or (
        [] if scenario.fault_steps else [w for w in used])
    checks: list[Check] = []
    missing = [s.label for s in scenario.fault_steps if s.label not in {w.label for w in used}]
    if windows and scenario.fault_steps:
        checks.append(Check("fault_applied", not missing, len(scenario.fault_steps) - len(missing),
                            f"{len(scenario.fault_steps)} fault step(s) applied",
                            f"not applied: {', '.join(missing)}" if missing else ""))

    if not fault_windows:
        notes.append("no fault window: nothing to evaluate")
        fs = fe = end_s
    else:
        fs = min(w.start_s for w in fault_windows)
        fe = max(end_s if w.end_s is None else w.end_s for w in fault_windows)
    fault_open = fe >= end_s
    fe_eff = min(fe, end_s)

    # Bucket width: ~EXPECTED_PER_BUCKET requests of the broken variant per bucket in normal operation.
    bucket_s = bucket_width(records, dones, fs, end_s, w_failed)

    def is_bad(r: _Record) -> bool:
        return went_to_broken(r, failed, healthy)

    def between(a: float, b: float, *, after: bool = False) -> list[_Record]:
        """Records completing in [a, b) (or (a, b) with ``after``)."""
        first = bisect.bisect_right(dones, a) if after else bisect.bisect_left(dones, a)
        return records[first:bisect.bisect_left(dones, b)]

    in_fault = between(fs, fe_eff)
    n_fault = len(in_fault)
    fault_errors = [r for r in in_fault if not r.ok]
    errors_by_status = dict(sorted(Counter(r.status for r in fault_errors).items()))
    error_rate = _rate(len(fault_errors), n_fault)
    failed_share = _rate(sum(1 for r in in_fault if is_bad(r)), n_fault)

    # -- time to fallback ------------------------------------------------------------------------
    # Exact when the fallback held: the completion of the last request that still went to the broken
    # variant (its error, or its last answer before the fault took hold). Otherwise (probes keep
    # reaching it, e.g. failure accrual) the first instant after which its share stays under the
    # threshold, from buckets.
    fallback_threshold = exp.fallback_fraction * w_failed
    ttf: float | None = None
    ttf_method = ""
    if failed and fault_windows:
        instant = exact_fallback_instant(records, dones, fs, fe_eff, failed, healthy)
        if instant is not None:
            ttf, ttf_method = instant - fs, "exact"
        else:
            ttf = _sustained_fallback(records, dones, fs, fe_eff, bucket_s, fallback_threshold, is_bad)
            ttf_method = "threshold" if ttf is not None else ""
    after_fallback_start = fs + (ttf if ttf is not None else 0.0)
    # Strictly after the last request that still went to the broken variant.
    after_fallback = between(after_fallback_start, fe_eff, after=ttf is not None and ttf > 0)
    healthy_share = _rate(sum(1 for r in after_fallback if r.ok and r.version in healthy), len(after_fallback))

    # -- time to recover: each broken variant back above its threshold share -------------------
    ttr: float | None = None
    recovery_bucket_end: float | None = None
    if not fault_open and fault_windows:
        found = recovery_instant(records, dones, fe, end_s, bucket_s, failed, shares, exp.recover_fraction)
        if found is not None:
            back_at, recovery_bucket_end = found
            ttr = max(0.0, back_at - fe)

    # -- checks ---------------------------------------------------------------------------------
    reasons = exp.reasons
    failed_names = ", ".join(failed) or "-"

    if exp.expect_fallback and exp.max_time_to_fallback_s is not None:
        ok = ttf is not None and ttf <= exp.max_time_to_fallback_s
        if ttf_method == "exact":
            detail = (f"the last request that went to {failed_names} (an answer of it, or a failure without a "
                      f"healthy version) completed {ttf:.2f} s after the fault started; none after it")
        else:
            detail = (f"{failed_names} below {_pct(fallback_threshold)} of requests "
                      f"({exp.fallback_fraction:g} x its share) for the rest of the fault")
        if ttf is None:
            detail = f"{failed_names} never stayed below {_pct(fallback_threshold)} of requests during the fault"
        checks.append(Check("time_to_fallback", ok, ttf, f"<= {exp.max_time_to_fallback_s:.2f} s",
                            _why(detail, reasons.get("max_time_to_fallback_s")), unit="s"))

    if exp.allowed_error_statuses is not None and fault_errors:
        unexpected = {s: n for s, n in errors_by_status.items() if s not in exp.allowed_error_statuses}
        checks.append(Check("error_statuses", not unexpected,
                            ", ".join(f"{_status_name(s)}x{n}" for s, n in errors_by_status.items()),
                            "only " + ", ".join(_status_name(s) for s in sorted(exp.allowed_error_statuses)),
                            _why(f"unexpected: {', '.join(map(_status_name, unexpected))}" if unexpected else "",
                                 reasons.get("allowed_error_statuses"))))

    if exp.max_error_rate_after_fallback is not None:
        # After an exact fallback: from the same instant as the healthy share; otherwise after the grace.
        exact = exp.expect_fallback and ttf_method == "exact" and ttf is not None
        grace = ttf if exact and ttf is not None else exp.error_grace_s
        rs = between(fs + grace, fe_eff, after=exact)
        errs = sum(1 for r in rs if not r.ok)
        rate = _rate(errs, len(rs))
        checks.append(Check("errors_after_fallback", rate <= exp.max_error_rate_after_fallback, rate,
                            f"<= {_pct(exp.max_error_rate_after_fallback)}",
                            _why(f"{errs} of {len(rs)} requests completing {grace:.2f}-"
                                 f"{fe_eff - fs:.1f} s after the fault started failed"
                                 + (" (after the fallback)" if exact else ""),
                                 reasons.get("error_grace_s")), unit="share"))

    if exp.min_healthy_share_after_fallback is not None and healthy:
        ok = healthy_share >= exp.min_healthy_share_after_fallback and bool(after_fallback)
        checks.append(Check("healthy_share_after_fallback", ok, healthy_share,
                            f">= {exp.min_healthy_share_after_fallback:.0%}",
                            _why(f"{', '.join(healthy)} served {_pct(healthy_share)} of {len(after_fallback)} requests "
                                 f"from {after_fallback_start:.1f} s to {fe_eff:.1f} s",
                                 reasons.get("min_healthy_share_after_fallback")), unit="share"))

    if exp.max_failed_share_fraction is not None and failed:
        limit = exp.max_failed_share_fraction * w_failed
        ok = failed_share <= limit and n_fault > 0
        checks.append(Check("failed_variant_share_during_fault", ok, failed_share, f"<= {_pct(limit)}",
                            _why(f"{failed_names} got {_pct(failed_share)} of {n_fault} requests during the fault "
                                 f"(weight {_pct(w_failed)}; every failure counts as its traffic)",
                                 reasons.get("max_failed_share_fraction")), unit="share"))

    if exp.min_failed_share_fraction is not None and failed:
        limit = exp.min_failed_share_fraction * w_failed
        checks.append(Check("failed_variant_keeps_share", failed_share >= limit and n_fault > 0, failed_share,
                            f">= {_pct(limit)}",
                            _why(f"{failed_names} got {_pct(failed_share)} of {n_fault} requests during the fault "
                                 f"(weight {_pct(w_failed)})", reasons.get("min_failed_share_fraction")), unit="share"))

    if exp.max_error_rate_during_fault is not None:
        checks.append(Check("error_rate_during_fault", error_rate <= exp.max_error_rate_during_fault, error_rate,
                            f"<= {_pct(exp.max_error_rate_during_fault)}",
                            _why(f"{len(fault_errors)} of {n_fault} requests failed",
                                 reasons.get("max_error_rate_during_fault")), unit="share"))
    if exp.min_error_rate_during_fault is not None:
        checks.append(Check("errors_visible_during_fault", error_rate >= exp.min_error_rate_during_fault, error_rate,
                            f">= {_pct(exp.min_error_rate_during_fault)}",
                            _why(f"{len(fault_errors)} of {n_fault} requests failed",
                                 reasons.get("min_error_rate_during_fault")), unit="share"))

    if exp.min_fault_latency_ms is not None and failed:
        lat = [r.latency_ms for r in in_fault if r.ok and r.version in failed]
        median = statistics.median(lat) if lat else None
        checks.append(Check("fault_latency_observed", median is not None and median >= exp.min_fault_latency_ms,
                            median, f"median >= {exp.min_fault_latency_ms:g} ms",
                            _why(f"median latency of {len(lat)} {failed_names} responses during the fault",
                                 reasons.get("min_fault_latency_ms")), unit="ms"))

    if exp.expect_recovery and fault_windows:
        if fault_open:
            checks.append(Check("time_to_recover", False, None, "recovery after the fault",
                                f"the fault was still active when load ended ({end_s:.1f} s): lengthen the "
                                "recovery period"))
        else:
            limit_text = f"<= {exp.max_time_to_recover_s:.2f} s" if exp.max_time_to_recover_s is not None \
                else "before load ends"
            ok = ttr is not None and (exp.max_time_to_recover_s is None or ttr <= exp.max_time_to_recover_s)
            detail = (f"{failed_names} back to >= {exp.recover_fraction:g} x its share" if ttr is not None
                      else f"{failed_names} never got back to {exp.recover_fraction:g} x its share in the "
                      f"{end_s - fe:.1f} s of load after the fault")
            checks.append(Check("time_to_recover", ok, ttr, limit_text,
                                _why(detail, reasons.get("max_time_to_recover_s")), unit="s"))

    if exp.max_error_rate_after_fault is not None and not fault_open and fault_windows:
        rs = between(fe, end_s)
        errs = sum(1 for r in rs if not r.ok)
        rate = _rate(errs, len(rs))
        checks.append(Check("errors_after_fault", rate <= exp.max_error_rate_after_fault, rate,
                            f"<= {_pct(exp.max_error_rate_after_fault)}",
                            f"{errs} of {len(rs)} requests completing after the fault ended failed", unit="share"))

    split: SplitResult | None = None
    if exp.post_recovery_tolerance is not None and exp.expect_recovery and fault_windows and not fault_open:
        expected_shares = _expected_shares(spec, scenario, used, end_s)
        if recovery_bucket_end is None:
            checks.append(Check("post_recovery_split", False, None, "split within "
                                f"±{exp.post_recovery_tolerance * 100:g} pp after recovery",
                                "no recovery, so no post-recovery window"))
        else:
            window_start, window_end = recovery_bucket_end, end_s
            if post_recovery is not None:
                # The counts the recovery phase's sequential test stopped on (late arrivals not judged).
                window_start, window_end = post_recovery.start_s, post_recovery.end_s
                counts = Counter({k: v for k, v in post_recovery.counts.items() if v})
                notes.append(f"post-recovery window {window_start:.2f}-{window_end:.2f} s closed by the sequential "
                             f"test: {post_recovery.verdict}"
                             + (f" ({post_recovery.reason})" if post_recovery.reason else ""))
            else:
                rs = between(recovery_bucket_end, end_s + 1.0)
                counts = Counter(r.version or "unknown" for r in rs if r.ok)
            n = sum(counts.values())
            # Fewest requests with which even an exact split has its interval inside the tolerance.
            z = statistics.NormalDist().inv_cdf((1 + exp.post_recovery_confidence) / 2)
            spread = max(math.sqrt(s * (1 - s)) for s in expected_shares.values())
            n_needed = max(exp.post_recovery_min_requests, math.ceil((z * spread / exp.post_recovery_tolerance) ** 2))
            if n < n_needed:
                checks.append(Check("post_recovery_split", False, n, f">= {n_needed} requests after recovery",
                                    f"only {n} successful requests from {window_start:.1f} s to "
                                    f"{window_end:.1f} s; a ±{exp.post_recovery_tolerance * 100:g} pp claim at "
                                    f"{exp.post_recovery_confidence:.1%} confidence needs at least {n_needed} "
                                    "(more for a margin): lengthen the recovery period or widen "
                                    "post_recovery_tolerance"))
            else:
                from ._stats import check_split

                counts_full = {**dict.fromkeys(expected_shares, 0), **counts}
                split = check_split(counts_full, expected_shares, tolerance=exp.post_recovery_tolerance,
                                    confidence=exp.post_recovery_confidence, alpha=exp.post_recovery_alpha,
                                    unit="requests",
                                    notes=(f"post-recovery window {window_start:.1f}-{window_end:.1f} s",))
                shares_text = ", ".join(f"{v} {c / n:.1%}" for v, c in sorted(counts_full.items()))
                checks.append(Check("post_recovery_split", split.ok, shares_text,
                                    ", ".join(f"{v} {s:.0%}" for v, s in expected_shares.items())
                                    + f" ±{exp.post_recovery_tolerance * 100:g} pp",
                                    f"{n} requests from {window_start:.1f} s; {split.verdict}"))

    # -- timeline --------------------------------------------------------------------------------
    markers: dict[int, list[str]] = {}

    def mark(at: float, text: str) -> None:
        markers.setdefault(max(0, math.floor(at)), []).append(text)

    for w in used:
        mark(w.start_s, f">> {w.label} @{w.start_s:.2f}s")
        if w.end_s is not None and w.end_s < end_s:
            mark(w.end_s, f"<< {w.label} @{w.end_s:.2f}s")
    if ttf is not None and failed:
        mark(fs + ttf, f"fallback @{fs + ttf:.2f}s")
    if ttr is not None and failed and not fault_open:
        mark(fe + ttr, f"recovered @{fe + ttr:.2f}s")
    n_rows = max(1, math.ceil(end_s))
    per_second: list[list[_Record]] = [[] for _ in range(n_rows)]
    for r in records:
        per_second[min(n_rows - 1, max(0, int(_done(r))))].append(r)
    rows = []
    for i, rs in enumerate(per_second):
        served = Counter(r.version for r in rs if r.ok)
        errors = Counter(r.status for r in rs if not r.ok)
        active = bool(fault_windows) and i + 1 > fs and i < fe_eff
        rows.append(TimelineRow(i, len(rs), dict(served), dict(sorted(errors.items())),
                                tuple(markers.get(i, ())), active))

    if records and load.records and not failed and scenario.fault_steps:
        notes.append("the scenario's targets are not variants of this experiment")
    return FallbackReport(
        scenario=scenario.name,
        ok=all(c.ok for c in checks),
        checks=tuple(checks),
        time_to_fallback_s=ttf,
        time_to_recover_s=ttr,
        error_rate_during_fault=error_rate,
        errors_by_status_during_fault=errors_by_status,
        healthy_share_during_fault=healthy_share,
        post_recovery_split=split,
        failed_variants=failed,
        healthy_variants=healthy,
        variants=variants,
        fault_start_s=fs if fault_windows else None,
        fault_end_s=fe_eff if fault_windows else None,
        requests_during_fault=n_fault,
        failed_share_during_fault=failed_share,
        bucket_s=bucket_s,
        windows=tuple(used),
        rows=tuple(rows),
        expectation=exp,
        notes=tuple(notes),
    )


def _why(detail: str, reason: str | None) -> str:
    if reason and detail:
        return f"{detail}; why: {reason}"
    return detail or (f"why: {reason}" if reason else "")


__all__ = [
    "ACCRUAL_EJECTION_PROBABILITY",
    "DETECTION_MARGIN_S",
    "FALLBACK_FRACTION",
    "MAX_ERROR_RATE_AFTER_FALLBACK",
    "POST_RECOVERY_TOLERANCE",
    "READINESS_DETECTION_S",
    "RECOVER_FRACTION",
    "RESTART_ALLOWANCE_S",
    "Check",
    "FallbackExpectation",
    "FallbackReport",
    "TimelineRow",
    "default_expectation",
    "evaluate_fallback",
    "retry_covers",
]
