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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import FallbackAssertionError, SpecError
from ._scenario import FaultWindow

if TYPE_CHECKING:
    from ._load import LoadResult
    from ._scenario import FaultStep, Scenario
    from ._spec import ExperimentSpec
    from ._stats import SplitResult

# -- thresholds and allowances (derivations in docs/fallback.md) ------------------------------
# Traffic has fallen back once the broken variant gets under 10% of its configured share
# (of requests completing, errors counted as its traffic).
FALLBACK_FRACTION = 0.1
# ... and has recovered once it serves at least half of its configured share again.
RECOVER_FRACTION = 0.5
# Once fallen back, at most 1% of requests may fail (the "100% v1 with no errors").
MAX_ERROR_RATE_AFTER_FALLBACK = 0.01
MAX_ERROR_RATE_AFTER_FAULT = 0.01
MIN_HEALTHY_SHARE_AFTER_FALLBACK = 0.99
# Time for the mesh to notice a dead process or a removed endpoint (endpoint watch, connection
# refused) plus the timeline's bucket resolution; added to the fail-fast timeout.
DETECTION_MARGIN_S = 1.0
# Readiness is noticed by probing: the local backend probes often; on a cluster it is
# periodSeconds x failureThreshold of the readiness probe (pass detection_s to default_expectation).
READINESS_DETECTION_S = 2.0
# Restarting a killed replica: process/container start, model load, first successful readiness probe.
RESTART_ALLOWANCE_S = 15.0
# Failure accrual: "always failing" when k consecutive failures are more likely than not (r^k >= 0.5).
ACCRUAL_EJECTION_PROBABILITY = 0.5
# An ejected variant's share must fall "far below its weight": under a quarter of it.
MAX_EJECTED_SHARE_FRACTION = 0.25
# A variant the mesh does not move traffic away from keeps at least half its share.
MIN_KEPT_SHARE_FRACTION = 0.5
# Post-recovery split: +-5 points at 99.9% needs ~1,100 requests at 50/50 (Wilson half-width
# 3.29 * sqrt(0.25 / n)); fewer than this many requests cannot show anything.
POST_RECOVERY_TOLERANCE = 0.05
POST_RECOVERY_MIN_REQUESTS = 200
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


@dataclass(frozen=True)
class FallbackExpectation:
    """Thresholds for one scenario. ``None`` switches a check off.

    Shares are fractions of all requests completing in the window; ``*_fraction`` fields are
    relative to the broken variant's configured share (0.1 = a tenth of its weight).
    """

    expect_fallback: bool = True
    fallback_fraction: float = FALLBACK_FRACTION
    recover_fraction: float = RECOVER_FRACTION
    max_time_to_fallback_s: float | None = None
    error_grace_s: float = 0.0
    max_error_rate_after_fallback: float | None = MAX_ERROR_RATE_AFTER_FALLBACK
    max_error_rate_during_fault: float | None = None
    min_error_rate_during_fault: float | None = None
    allowed_error_statuses: frozenset[int] | None = None
    min_healthy_share_after_fallback: float | None = None
    max_failed_share_fraction: float | None = None
    min_failed_share_fraction: float | None = None
    min_fault_latency_ms: float | None = None
    expect_recovery: bool = True
    max_time_to_recover_s: float | None = None
    max_error_rate_after_fault: float | None = MAX_ERROR_RATE_AFTER_FAULT
    post_recovery_tolerance: float | None = POST_RECOVERY_TOLERANCE
    post_recovery_min_requests: int = POST_RECOVERY_MIN_REQUESTS
    post_recovery_confidence: float = 0.999
    post_recovery_alpha: float = 0.001
    reasons: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.allowed_error_statuses is not None:
            object.__setattr__(self, "allowed_error_statuses", frozenset(self.allowed_error_statuses))
        object.__setattr__(self, "reasons", dict(self.reasons))
        for name in ("fallback_fraction", "recover_fraction"):
            value = getattr(self, name)
            if not _number(value) or not 0.0 < value <= 1.0:
                raise SpecError(f"expectation.{name}", f"must be in (0, 1], got {value!r}")
        for name in ("max_error_rate_after_fallback", "max_error_rate_during_fault", "min_error_rate_during_fault",
                     "min_healthy_share_after_fallback", "max_failed_share_fraction", "min_failed_share_fraction",
                     "max_error_rate_after_fault", "post_recovery_tolerance"):
            value = getattr(self, name)
            if value is not None and (not _number(value) or not 0.0 <= value <= 1.0):
                raise SpecError(f"expectation.{name}", f"must be a fraction in [0, 1] or None, got {value!r}")
        for name in ("max_time_to_fallback_s", "max_time_to_recover_s", "min_fault_latency_ms"):
            value = getattr(self, name)
            if value is not None and (not _number(value) or value < 0 or not math.isfinite(value)):
                raise SpecError(f"expectation.{name}", f"must be a number >= 0 or None, got {value!r}")
        if not _number(self.error_grace_s) or self.error_grace_s < 0:
            raise SpecError("expectation.error_grace_s", f"must be >= 0, got {self.error_grace_s!r}")
        if isinstance(self.post_recovery_min_requests, bool) or not isinstance(self.post_recovery_min_requests, int) \
                or self.post_recovery_min_requests < 1:
            raise SpecError("expectation.post_recovery_min_requests",
                            f"must be an integer >= 1, got {self.post_recovery_min_requests!r}")
        if not 0.5 <= self.post_recovery_confidence < 1:
            raise SpecError("expectation.post_recovery_confidence",
                            f"must be in [0.5, 1), got {self.post_recovery_confidence!r}")
        if not 0 < self.post_recovery_alpha < 0.5:
            raise SpecError("expectation.post_recovery_alpha", f"must be in (0, 0.5), got {self.post_recovery_alpha!r}")

    def replace(self, **changes: Any) -> FallbackExpectation:
        """A copy with some thresholds changed (``exp.replace(max_time_to_fallback_s=0.2)``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.allowed_error_statuses is not None:
            out["allowed_error_statuses"] = sorted(self.allowed_error_statuses)
        out["reasons"] = dict(self.reasons)
        return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# Default expectations, derived from the spec's failure policy and the kind of fault


def retry_covers(conditions: str, status: int) -> bool:
    """Whether Linkerd's ``retry.linkerd.io/http`` condition list retries ``status``."""
    for part in (p.strip() for p in conditions.split(",")):
        if part == "5xx" and 500 <= status <= 599:
            return True
        if part == "gateway-error" and status in (502, 503, 504):
            return True
        if "-" in part and part != "gateway-error":
            low, _, high = part.partition("-")
            if low.isdigit() and high.isdigit() and int(low) <= status <= int(high):
                return True
        elif part.isdigit() and int(part) == status:
            return True
    return False


def default_expectation(spec: ExperimentSpec, scenario: Scenario, *,
                        detection_s: float | None = None) -> FallbackExpectation:
    """Thresholds that follow from Linkerd's behaviour for this scenario and ``spec.failure_policy``.

    ``detection_s`` is how long the platform takes to notice an unready replica (default
    :data:`READINESS_DETECTION_S`; on a cluster: readiness periodSeconds x failureThreshold).
    A timeline with several faults gets the most lenient combination of its steps' expectations.
    """
    detect = READINESS_DETECTION_S if detection_s is None else detection_s
    shares = spec.shares()
    parts = [_expect_step(spec, step, shares.get(step.variant, 0.0), detect) for step in scenario.fault_steps]
    if not parts:
        return FallbackExpectation(expect_fallback=False, max_error_rate_after_fallback=None,
                                   max_error_rate_during_fault=MAX_ERROR_RATE_AFTER_FAULT, expect_recovery=False,
                                   reasons={"max_error_rate_during_fault": "a weight change alone must not fail "
                                            "requests"})
    result = parts[0]
    for other in parts[1:]:
        result = _merge(result, other)
    return result


def _expect_step(spec: ExperimentSpec, step: FaultStep, w: float, detect: float) -> FallbackExpectation:
    fp = spec.failure_policy
    ff = fp.fail_fast_timeout_s
    replicas = spec.variant(step.variant).replicas
    label = step.label
    duration = step.duration_s
    recover_open = duration is not None
    action = step.action
    all_gone = action in ("kill", "unready") or (action == "scale" and step.count() == 0) or (
        action == "kill-one" and step.count() >= replicas)

    if all_gone:
        if action == "unready":
            detect_s, how = detect, f"{detect:g} s for the failing readiness probe to remove the endpoint"
        else:
            detect_s, how = DETECTION_MARGIN_S, f"{DETECTION_MARGIN_S:g} s to notice the endpoint is gone"
        max_ttf = detect_s + ff + (DETECTION_MARGIN_S if action == "unready" else 0.0)
        statuses = {504} if action in ("unready", "scale") else {502, 504}
        if action == "scale" or action == "unready":
            restart = detect + DETECTION_MARGIN_S if action == "unready" else RESTART_ALLOWANCE_S
        else:
            restart = RESTART_ALLOWANCE_S
        why_ttf = (f"{label}: a backend without ready endpoints fails its queued requests with 504 after the "
                   f"fail-fast timeout ({ff:g} s), then the distributor skips it (Linkerd 2.13+); +{how}")
        return FallbackExpectation(
            expect_fallback=True,
            max_time_to_fallback_s=max_ttf,
            error_grace_s=max_ttf,
            max_error_rate_after_fallback=MAX_ERROR_RATE_AFTER_FALLBACK,
            allowed_error_statuses=frozenset(statuses),
            min_healthy_share_after_fallback=MIN_HEALTHY_SHARE_AFTER_FALLBACK,
            expect_recovery=recover_open,
            max_time_to_recover_s=restart,
            reasons={
                "max_time_to_fallback_s": why_ttf,
                "error_grace_s": f"{label}: errors are allowed only within the fail-fast window ({max_ttf:g} s)",
                "allowed_error_statuses": f"{label}: 504 = FailFast for requests queued for the empty backend"
                + ("; 502 = requests in flight on the killed process" if 502 in statuses else "")
                + "; 503 (LoadShed) would mean no backend at all was available",
                "min_healthy_share_after_fallback": f"{label}: once the broken backend is skipped, the healthy "
                "variant(s) serve everything",
                "max_time_to_recover_s": f"{label}: "
                + ("readiness probe passes again" if action == "unready"
                   else f"restart allowance {restart:g} s (process/pod start + model load + readiness)"),
            },
        )

    if action in ("kill-one", "scale"):
        # Replicas remain: the balancer inside the backend drops the lost endpoint; the split holds.
        statuses = {502, 504}
        return FallbackExpectation(
            expect_fallback=False,
            error_grace_s=DETECTION_MARGIN_S,
            max_error_rate_after_fallback=MAX_ERROR_RATE_AFTER_FALLBACK,
            allowed_error_statuses=frozenset(statuses) if action == "kill-one" else None,
            min_failed_share_fraction=MIN_KEPT_SHARE_FRACTION,
            expect_recovery=recover_open,
            max_time_to_recover_s=RESTART_ALLOWANCE_S,
            reasons={
                "min_failed_share_fraction": f"{label}: other replicas stay ready, so the backend keeps its weight; "
                "only the balancer inside it changes",
                "error_grace_s": f"{label}: requests in flight on the lost replica may fail while the endpoint is "
                f"removed ({DETECTION_MARGIN_S:g} s)",
            },
        )

    if action == "error-rate":
        rate, status = step.error_rate()
        accrual = fp.failure_accrual
        ejects = accrual is not None and rate ** accrual.max_failures >= ACCRUAL_EJECTION_PROBABILITY
        retried = fp.retries is not None and retry_covers(fp.retries.conditions, status)
        if ejects and accrual is not None:
            # The penalty in force when the fault ends is at most about the time spent ejected so far
            # (exponential backoff doubles it), capped at max_penalty, stretched by the jitter.
            span = (duration if duration is not None else accrual.max_penalty_s) + accrual.min_penalty_s
            penalty = min(accrual.max_penalty_s, span) * (1.0 + accrual.jitter_ratio)
            return FallbackExpectation(
                expect_fallback=True,
                max_time_to_fallback_s=None,
                max_error_rate_after_fallback=None,
                allowed_error_statuses=frozenset({status, 502, 503, 504}),
                max_failed_share_fraction=MAX_EJECTED_SHARE_FRACTION,
                expect_recovery=recover_open,
                max_time_to_recover_s=penalty + DETECTION_MARGIN_S,
                reasons={
                    "max_failed_share_fraction": f"{label}: failure accrual ejects an endpoint after "
                    f"{accrual.max_failures} consecutive failures ({rate:.0%}^{accrual.max_failures} = "
                    f"{rate ** accrual.max_failures:.2f} >= {ACCRUAL_EJECTION_PROBABILITY:g}); with every endpoint "
                    "ejected the backend is unavailable and another is selected, so its share falls far below "
                    "its weight",
                    "max_time_to_fallback_s": f"{label}: not checked: an ejected backend's requests wait "
                    f"{ff:g} s (fail-fast) before it is skipped, and every probe that fails re-opens that wait, "
                    "so the share never drops for good during the fault; the share check covers it",
                    "max_error_rate_after_fallback": f"{label}: not checked: after each penalty (backoff "
                    f"{accrual.min_penalty_s:g}-{accrual.max_penalty_s:g} s) a probe request fails by design",
                    "max_time_to_recover_s": f"{label}: the endpoint returns when its current penalty ends "
                    f"(<= min(max_penalty, fault + min_penalty) x (1 + jitter) = {penalty:.1f} s)",
                },
            )
        p = w * rate  # chance one attempt fails
        if retried and fp.retries is not None:
            limit = fp.retries.limit
            masked = p ** (limit + 1)  # a retry re-picks the backend, so every attempt fails with p
            bound = max(MAX_ERROR_RATE_AFTER_FALLBACK, 2.0 * masked)
            return FallbackExpectation(
                expect_fallback=False,
                max_error_rate_after_fallback=None,
                max_error_rate_during_fault=bound,
                min_failed_share_fraction=MIN_KEPT_SHARE_FRACTION * (1.0 - rate) if rate < 1.0 else None,
                expect_recovery=recover_open,
                max_time_to_recover_s=DETECTION_MARGIN_S,
                reasons={
                    "max_error_rate_during_fault": f"{label}: retries ({fp.retries.conditions}, limit {limit}) "
                    f"re-pick the backend, so a request fails only if all {limit + 1} attempts fail: "
                    f"({w:.0%} x {rate:.0%})^{limit + 1} = {masked:.2%}; bound max(1%, 2 x that)",
                    "min_failed_share_fraction": f"{label}: no ejection, so the variant keeps its weight; "
                    "its served share drops by the retried failures only",
                },
            )
        expected = p
        return FallbackExpectation(
            expect_fallback=False,
            max_error_rate_after_fallback=None,
            max_error_rate_during_fault=min(1.0, 1.5 * expected + 0.01),
            min_error_rate_during_fault=0.5 * expected,
            allowed_error_statuses=frozenset({status}),
            min_failed_share_fraction=MIN_KEPT_SHARE_FRACTION,
            expect_recovery=recover_open,
            max_time_to_recover_s=DETECTION_MARGIN_S,
            reasons={
                "max_error_rate_during_fault": f"{label}: without retries or failure accrual Linkerd passes 5xx "
                f"through and keeps the weight: about {w:.0%} x {rate:.0%} = {expected:.1%} of requests fail "
                "(bound 1.5 x that + 1 point)",
                "min_error_rate_during_fault": f"{label}: nothing masks the errors, so at least half the expected "
                f"{expected:.1%} must show (otherwise the fault did not take effect)",
                "min_failed_share_fraction": f"{label}: a 5xx does not move traffic; the variant keeps its weight",
            },
        )

    if action == "latency":
        ms, jitter = step.latency()
        timeout = fp.request_timeout_s
        times_out = timeout is not None and timeout * 1000.0 < ms + jitter
        return FallbackExpectation(
            expect_fallback=False,
            max_error_rate_after_fallback=None,
            max_error_rate_during_fault=None if times_out else MAX_ERROR_RATE_AFTER_FALLBACK,
            allowed_error_statuses=frozenset({504}) if times_out else None,
            min_failed_share_fraction=MIN_KEPT_SHARE_FRACTION,
            min_fault_latency_ms=0.8 * ms,
            expect_recovery=recover_open,
            max_time_to_recover_s=DETECTION_MARGIN_S + (ms + jitter) / 1000.0,
            reasons={
                "min_failed_share_fraction": f"{label}: the distributor picks backends by weight, not latency "
                "(latency-aware balancing is only among one backend's endpoints), so the split holds",
                "max_error_rate_during_fault": f"{label}: "
                + (f"the request timeout ({timeout:g} s) is shorter than the latency: timeouts are expected"
                   if times_out else "slow is not failing: no errors expected"),
                "min_fault_latency_ms": f"{label}: the added latency must show in the variant's responses",
            },
        )
    raise ValueError(f"no expectation for action {action!r}")  # pragma: no cover - weights is filtered out


def _lenient_max(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)


def _lenient_min(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else min(a, b)


def _merge(a: FallbackExpectation, b: FallbackExpectation) -> FallbackExpectation:
    """The most lenient combination (several faults in one timeline, judged as one fault span)."""
    ttf = [x for x in (a.max_time_to_fallback_s, b.max_time_to_fallback_s) if x is not None]
    statuses = None if a.allowed_error_statuses is None or b.allowed_error_statuses is None else (
        a.allowed_error_statuses | b.allowed_error_statuses)
    fallback = a.expect_fallback or b.expect_fallback
    return FallbackExpectation(
        expect_fallback=fallback,
        fallback_fraction=max(a.fallback_fraction, b.fallback_fraction),
        recover_fraction=min(a.recover_fraction, b.recover_fraction),
        max_time_to_fallback_s=max(ttf) if ttf else None,
        error_grace_s=max(a.error_grace_s, b.error_grace_s),
        max_error_rate_after_fallback=_lenient_max(a.max_error_rate_after_fallback, b.max_error_rate_after_fallback),
        max_error_rate_during_fault=_lenient_max(a.max_error_rate_during_fault, b.max_error_rate_during_fault),
        min_error_rate_during_fault=_lenient_min(a.min_error_rate_during_fault, b.min_error_rate_during_fault),
        allowed_error_statuses=statuses,
        min_healthy_share_after_fallback=_lenient_min(a.min_healthy_share_after_fallback,
                                                      b.min_healthy_share_after_fallback),
        max_failed_share_fraction=_lenient_max(a.max_failed_share_fraction, b.max_failed_share_fraction),
        min_failed_share_fraction=None if fallback else _lenient_min(a.min_failed_share_fraction,
                                                                     b.min_failed_share_fraction),
        min_fault_latency_ms=_lenient_min(a.min_fault_latency_ms, b.min_fault_latency_ms),
        expect_recovery=a.expect_recovery and b.expect_recovery,
        max_time_to_recover_s=_lenient_max(a.max_time_to_recover_s, b.max_time_to_recover_s),
        max_error_rate_after_fault=_lenient_max(a.max_error_rate_after_fault, b.max_error_rate_after_fault),
        post_recovery_tolerance=_lenient_max(a.post_recovery_tolerance, b.post_recovery_tolerance),
        post_recovery_min_requests=min(a.post_recovery_min_requests, b.post_recovery_min_requests),
        reasons={k: "; ".join(x for x in (a.reasons.get(k), b.reasons.get(k)) if x)
                 for k in {*a.reasons, *b.reasons}},
    )


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
