"""Fallback expectations: the thresholds each fault scenario must meet, derived from Linkerd's behaviour.

``default_expectation(spec, scenario)`` turns the spec's failure policy and the kind of fault into
a :class:`FallbackExpectation`; ``_fallback.evaluate_fallback`` judges the records against it. The
derivation of every default is in ``docs/fallback.md`` ("What each scenario must show, and why";
sources: ``linkerd-facts.md``, "When a backend fails").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import SpecError

if TYPE_CHECKING:
    from ._scenario import FaultStep, Scenario
    from ._spec import ExperimentSpec

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


__all__ = [
    "ACCRUAL_EJECTION_PROBABILITY",
    "DETECTION_MARGIN_S",
    "FALLBACK_FRACTION",
    "MAX_EJECTED_SHARE_FRACTION",
    "MAX_ERROR_RATE_AFTER_FALLBACK",
    "MAX_ERROR_RATE_AFTER_FAULT",
    "MIN_HEALTHY_SHARE_AFTER_FALLBACK",
    "MIN_KEPT_SHARE_FRACTION",
    "POST_RECOVERY_MIN_REQUESTS",
    "POST_RECOVERY_TOLERANCE",
    "READINESS_DETECTION_S",
    "RECOVER_FRACTION",
    "RESTART_ALLOWANCE_S",
    "FallbackExpectation",
    "default_expectation",
    "retry_covers",
]
