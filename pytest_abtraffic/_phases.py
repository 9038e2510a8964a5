"""Adaptive phases for a fault run: each phase ends once it is decided, the planned times are deadlines.

A built-in fault scenario has three phases: a *baseline* of normal traffic, the *fault*, and the
*recovery*. On the fixed timeline each lasts as planned (2 s, 6-8 s, ``recovery_s``), which is mostly
waiting: the kill scenario is decided about half a second after the fail-fast timeout. Here:

- **baseline** ends once every Locust user has answered and each variant has
  :attr:`PhaseRules.baseline_answers` successful answers (and at least ``baseline_s``), so the
  evaluation has its pre-fault rate and the split is seen to be in place;
- **fault** ends, for a fault that must take the variant out of the split (kill, scale to zero,
  unready), once the fallback *held*: :data:`FALLBACK_HOLD_S` and :data:`FALLBACK_HOLD_REQUESTS`
  healthy answers since the last request that went to the broken variant, with every user's latest
  answer sent after that instant and recent (a user whose request waits in a fail-fast queue has
  no recent answer, so a queued 504 still to come keeps the phase open). For the other faults
  (errors, latency, a replica lost) it ends once every rate the evaluation checks is on one side of
  its bound with a Wilson interval at ``decision_z`` (a median by order statistics), so the
  verdict cannot change with more of the same traffic;
- **recovery** ends once every broken variant is back (the evaluation's rule) and the post-recovery
  split is decided by the sequential test (anytime-valid, as ``verify_split``), or its request cap
  is reached; the evaluation then judges exactly those counts.

A phase that does not decide runs to its planned deadline, so a run is never longer than on the
fixed timeline. Timelines with several steps, or a step without a duration, keep the fixed timeline.
Why these rules keep the verdicts of the fixed timeline: ``docs/fallback.md`` ("Phases that end
when decided") and the flakiness budget in ``docs/flakiness-budget.md``.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._fallback import (
    FALLBACK_HOLD_REQUESTS,
    FALLBACK_HOLD_S,
    FallbackExpectation,
    PostRecoveryDecision,
    bucket_width,
    recovery_instant,
    went_to_broken,
)

if TYPE_CHECKING:
    from ._chaos import Scenario, ScenarioRunner
    from ._load import RequestRecord
    from ._spec import ExperimentSpec

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class PhaseRules:
    """When the adaptive phases of a fault run end."""

    baseline_s: float = 0.75  # the evaluation estimates the pre-fault rate from > 0.5 s of it
    baseline_answers: int = 50  # successful answers per variant before the fault
    decision_z: float = 4.42  # two-sided 1e-5 per look: a rate check is decided when its interval clears the bound
    stall_s: float = 0.25  # a user with no answer for this long (or 10 x the median latency) may be stuck
    min_fault_requests: int = FALLBACK_HOLD_REQUESTS
    min_latency_samples: int = 30
    recovery_power: float = 0.9999  # the post-recovery cap, planned as verify_split plans its own

    def __post_init__(self) -> None:
        for name in ("baseline_s", "decision_z", "stall_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"PhaseRules.{name} must be a finite number >= 0, got {value!r}")
        if not 0.5 <= self.recovery_power < 1:
            raise ValueError(f"PhaseRules.recovery_power must be in [0.5, 1), got {self.recovery_power!r}")


def fixed_timeline_reason(scenario: Scenario, expectation: FallbackExpectation) -> str | None:
    """Why ``scenario`` keeps the fixed timeline, or None when its phases can end when decided."""
    if len(scenario.steps) != 1:
        return "a timeline of several steps keeps its planned times"
    step = scenario.steps[0]
    if not step.is_fault:
        return "a weights step is no fault"
    if step.duration_s is None:
        return "the fault has no duration (it lasts until load ends)"
    if not expectation.expect_recovery:
        return "no recovery is expected"
    return None


def _user(connection: str) -> str:
    # The built-in locustfile names connections u<N> (keep-alive) or u<N>.<k> (Connection: close).
    return connection.split(".", 1)[0]


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate_decided(k: int, n: int, bound: float, z: float) -> bool:
    """The interval of k/n lies on one side of ``bound``: more of the same traffic keeps the verdict."""
    low, high = _wilson(k, n, z)
    return high <= bound or low > bound


class AdaptivePhases:
    """PhaseController for a one-step fault scenario (see the module docstring)."""

    def __init__(self, scenario: Scenario, spec: ExperimentSpec, expectation: FallbackExpectation, *,
                 users: int, recovery_s: float, rules: PhaseRules | None = None,
                 progress: ProgressCallback | None = None, offset_s: float = 0.0) -> None:
        reason = fixed_timeline_reason(scenario, expectation)
        if reason is not None:
            raise ValueError(f"scenario {scenario.name!r} cannot run adaptively: {reason}")
        self.scenario = scenario
        self.step = scenario.steps[0]
        self.spec = spec
        self.expectation = expectation
        self.users = users
        self.recovery_s = recovery_s
        self.rules = rules or PhaseRules()
        self._progress = progress
        # Records' times are since load start; the runner's since ``offset_s`` into the load (when the
        # scenario starts part-way through a run, as in the main job's single load run).
        self._offset_s = offset_s
        self.shares = spec.shares()
        self.failed = tuple(v for v in scenario.targets if v in self.shares)
        self.healthy = tuple(v for v in self.shares if v not in self.failed)
        self.failed_share = sum(self.shares[v] for v in self.failed)
        self.phase = "baseline"
        self.notes: list[str] = []
        self.decision: PostRecoveryDecision | None = None
        self._records: list[RequestRecord] = []
        self._dones: list[float] = []
        self._seen = 0
        self._latest: dict[str, tuple[float, float]] = {}  # user -> (sent, done) of its latest answer
        self._recovery_start: float | None = None
        self._sequential: Any = None
        self._cap = 0
        self._undecided = ""  # what kept the fault phase open at the last look

    def set_offset(self, offset_s: float) -> None:
        """Where the scenario's time 0 lies in the load's time (before any record is looked at)."""
        if self._seen:
            raise RuntimeError("set_offset() after records were ingested")
        self._offset_s = offset_s

    # -- bookkeeping -----------------------------------------------------------------------
    def _ingest(self, records: Sequence[RequestRecord]) -> None:
        for r in records[self._seen:]:
            sent = r.t - self._offset_s
            done = sent + r.latency_ms / 1000.0
            if done < 0:
                continue  # completed before the scenario's time began
            if self._dones and done < self._dones[-1]:
                i = bisect.bisect_right(self._dones, done)
                self._dones.insert(i, done)
                self._records.insert(i, r)
            else:
                self._dones.append(done)
                self._records.append(r)
            user = _user(r.connection)
            latest = self._latest.get(user)
            if latest is None or done >= latest[1]:
                self._latest[user] = (sent, done)
        self._seen = len(records)

    def _note(self, text: str) -> None:
        self.notes.append(text)
        if self._progress is not None:
            self._progress(f"  phase: {text}")

    def _freshest(self) -> float:
        return self._dones[-1] if self._dones else 0.0

    # -- the controller --------------------------------------------------------------------
    def on_progress(self, runner: ScenarioRunner, records: Sequence[RequestRecord]) -> bool:
        self._ingest(records)
        windows = runner.windows
        if self.phase == "baseline":
            if windows:
                self.phase = "fault"
            elif self._baseline_done(runner.elapsed()):
                self._note(f"baseline ended at {runner.elapsed():.2f} s (planned {self.step.at_s:g} s): every "
                           f"user answered, each variant {self.rules.baseline_answers}+ times")
                runner.fire_now(0, undo=False)
                self.phase = "fault"
            return False
        if not windows:
            return False
        window = windows[0]
        if self.phase == "fault":
            if window.end_s is not None:
                self._note(f"fault phase ran to its planned end ({self.step.duration_s:g} s): "
                           f"{self._undecided or 'not decided'}")
                self.phase = "recovery"
            else:
                why = self._fault_decided(window.start_s, runner.elapsed())
                if why is not None:
                    self._note(f"fault phase ended at {runner.elapsed():.2f} s (planned "
                               f"{self.step.end_s or 0:g} s): {why}")
                    runner.fire_now(0, undo=True)
                    self.phase = "recovery"
            return False
        if window.end_s is None:
            return False
        return self._recovery_done(window.start_s, window.end_s, runner.elapsed())

    def _baseline_done(self, elapsed: float) -> bool:
        if elapsed < self.rules.baseline_s or len(self._latest) < self.users:
            return False
        answers = dict.fromkeys(self.shares, 0)
        for r in self._records:
            if r.ok and r.version in answers:
                answers[r.version] += 1
        return all(answers[v] >= self.rules.baseline_answers for v, w in self.shares.items() if w > 0)

    def _fault_decided(self, fault_start: float, now: float) -> str | None:
        exp = self.expectation
        if exp.expect_fallback and exp.max_time_to_fallback_s is not None:
            return self._fallback_held(fault_start, now)
        return self._fault_rates_decided(fault_start)

    def _fallback_held(self, fault_start: float, now: float) -> str | None:
        """``now``: the runner's clock. The fault's recorded end comes after it, so a hold counted up to
        ``now`` (time and answers) is one the evaluation, which counts up to that end, finds too."""
        records, dones = self._records, self._dones
        freshest = min(self._freshest(), now)
        first = bisect.bisect_left(dones, fault_start)
        instant = fault_start
        for i in range(len(records) - 1, first - 1, -1):
            if went_to_broken(records[i], self.failed, self.healthy):
                instant = dones[i]
                break
        self._undecided = (f"traffic still reached {', '.join(self.failed)} "
                           f"{instant - fault_start:.2f} s after the fault started")
        if freshest - instant < FALLBACK_HOLD_S:
            return None
        after = bisect.bisect_right(dones, instant)
        upto = bisect.bisect_left(dones, freshest)
        healthy = sum(1 for r in records[after:upto] if r.ok and r.version in self.healthy)
        if healthy < FALLBACK_HOLD_REQUESTS:
            return None
        self._undecided = f"{len(self._latest)} of {self.users} users answered"
        if len(self._latest) < self.users:
            return None
        # No user may still wait on a request sent before the instant (a queued 504 to come): each
        # user's latest answer was sent after it, and came back recently.
        stall = max(self.rules.stall_s, 10.0 * self._median_latency_s(fault_start))
        latest_done = self._freshest()
        for sent, done in self._latest.values():
            if sent < instant or done < latest_done - stall:
                self._undecided = "a user's request sent before the fallback may still be waiting"
                return None
        return (f"fallback held: the last request that went to {', '.join(self.failed)} completed "
                f"{instant - fault_start:.2f} s after the fault started, then {healthy} healthy answers in "
                f"{freshest - instant:.2f} s with every user answering")

    def _median_latency_s(self, before: float) -> float:
        end = bisect.bisect_left(self._dones, before)
        sample = [r.latency_ms for r in self._records[max(0, end - 2000):end] if r.ok]
        return statistics.median(sample) / 1000.0 if sample else 0.0

    def _fault_rates_decided(self, fault_start: float) -> str | None:
        exp, z = self.expectation, self.rules.decision_z
        freshest = self._freshest()
        if freshest - fault_start < exp.error_grace_s + FALLBACK_HOLD_S:
            return None
        first = bisect.bisect_left(self._dones, fault_start)
        in_fault = self._records[first:]
        n = len(in_fault)
        self._undecided = f"{n} requests in the fault, fewer than {self.rules.min_fault_requests}"
        if n < self.rules.min_fault_requests:
            return None
        bad = sum(1 for r in in_fault if went_to_broken(r, self.failed, self.healthy))
        errors = sum(1 for r in in_fault if not r.ok)
        pending: list[tuple[int, int, float]] = []
        if exp.max_failed_share_fraction is not None:
            pending.append((bad, n, exp.max_failed_share_fraction * self.failed_share))
        if exp.min_failed_share_fraction is not None:
            pending.append((bad, n, exp.min_failed_share_fraction * self.failed_share))
        if exp.max_error_rate_during_fault is not None:
            pending.append((errors, n, exp.max_error_rate_during_fault))
        if exp.min_error_rate_during_fault is not None:
            pending.append((errors, n, exp.min_error_rate_during_fault))
        if exp.max_error_rate_after_fallback is not None:
            late = self._records[bisect.bisect_left(self._dones, fault_start + exp.error_grace_s):]
            pending.append((sum(1 for r in late if not r.ok), len(late), exp.max_error_rate_after_fallback))
        open_rates = [f"{k}/{m} vs {bound:.2%}" for k, m, bound in pending if not _rate_decided(k, m, bound, z)]
        if open_rates:
            self._undecided = f"rates not yet clear of their bounds at z={z:g}: {', '.join(open_rates)}"
            return None
        if exp.min_fault_latency_ms is not None and not self._latency_decided(in_fault, exp.min_fault_latency_ms):
            self._undecided = f"the median latency of {', '.join(self.failed)} is not yet clear of its bound"
            return None
        return f"every rate the evaluation checks is decided ({n} requests in the fault)"

    def _latency_decided(self, in_fault: Sequence[RequestRecord], threshold_ms: float) -> bool:
        sample = sorted(r.latency_ms for r in in_fault if r.ok and r.version in self.failed)
        n = len(sample)
        if n < self.rules.min_latency_samples:
            return False
        # Distribution-free interval for the median: order statistics at n/2 -+ z sqrt(n)/2.
        half = self.rules.decision_z * math.sqrt(n) / 2
        low = math.floor(n / 2 - half)
        high = math.ceil(n / 2 + half)
        if low >= 0 and sample[low] >= threshold_ms:
            return True
        return high < n and sample[high] < threshold_ms

    def _recovery_done(self, fault_start: float, fault_end: float, elapsed: float) -> bool:
        exp = self.expectation
        freshest = self._freshest()
        if self._recovery_start is None:
            bucket_s = bucket_width(self._records, self._dones, fault_start, freshest, self.failed_share)
            found = recovery_instant(self._records, self._dones, fault_end, freshest, bucket_s, self.failed,
                                     self.shares, exp.recover_fraction)
            if found is None:
                return self._deadline(fault_end, elapsed)
            self._recovery_start = found[1]
            if exp.post_recovery_tolerance is not None:
                from ._stats import SequentialSplitTest, default_request_budget

                self._sequential = SequentialSplitTest(self.shares, alpha=exp.post_recovery_alpha,
                                                       tolerance=exp.post_recovery_tolerance,
                                                       confidence=exp.post_recovery_confidence)
                self._cap = default_request_budget(self.shares, tolerance=exp.post_recovery_tolerance,
                                                   confidence=exp.post_recovery_confidence,
                                                   power=self.rules.recovery_power)
        start = self._recovery_start
        window = self._records[bisect.bisect_left(self._dones, start):]
        if self._sequential is None:
            # No split to decide: the recovery and the errors after the fault need some traffic.
            if len(window) >= FALLBACK_HOLD_REQUESTS:
                self._note(f"recovery phase ended at {elapsed:.2f} s: recovered, {len(window)} requests since")
                return True
            return self._deadline(fault_end, elapsed)
        counts: dict[str, int] = dict.fromkeys(self.shares, 0)
        for r in window:
            if r.ok:
                key = r.version or "unknown"
                counts[key] = counts.get(key, 0) + 1
        state = self._sequential.update(counts)
        total = sum(counts.values())
        capped = total >= self._cap
        if state.decided or capped:
            reason = (f"sequential test {state.verdict!r} at n={total:,}" if state.decided
                      else f"request cap {self._cap:,} reached undecided")
            self.decision = PostRecoveryDecision(start, freshest, counts, state.verdict, state.decided, reason)
            self._note(f"recovery phase ended at {elapsed:.2f} s: recovered at {start:.2f} s, {reason}")
            return True
        return self._deadline(fault_end, elapsed)

    def _deadline(self, fault_end: float, elapsed: float) -> bool:
        if elapsed >= fault_end + self.recovery_s:
            self._note(f"recovery phase reached its deadline ({self.recovery_s:g} s after the fault ended)")
            return True
        return False

    def summary(self) -> Mapping[str, Any]:
        return {"phase": self.phase, "notes": list(self.notes),
                "post_recovery": self.decision.to_dict() if self.decision is not None else None}


__all__ = ["AdaptivePhases", "PhaseRules", "fixed_timeline_reason"]
