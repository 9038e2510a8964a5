"""User sizing for slow models: ramp the users toward a target rate while latency and errors stay flat.

A closed-loop user sends its next request when the last one has answered (plus ``wait_s``), so by
Little's law N users give ``rate = N / (latency + wait)``: against a model that takes 50 ms, 10
users cannot go much past 200 requests/s whatever the machine could do. The rule below measures the
latency at the current user count and asks for the users the target rate needs at that latency,
at most doubling per step, and only while the latency (p50) stays within ``FLAT_LATENCY_FACTOR``
of the first window's and the error share does not rise: past that point more users only queue
(the rate stops growing, the latency grows) or break the servers, so it steps back to the last
flat count and stays there. See docs/slow-models.md.

Plain Python, parent side only: the driver feeds records in, writes the user count to a file the
built-in locustfile watches (``ENV_USERS_FILE``), and reports each step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._results import RequestRecord

#: One judged window of records (by request start time).
WINDOW_S = 0.5
#: After a change, the new users need a moment to start (the locustfile looks every 0.1 s).
SETTLE_S = 0.2
#: Latency (p50) this many times the first window's is no longer flat.
FLAT_LATENCY_FACTOR = 1.5
#: Error share this far above the first window's is no longer flat.
FLAT_ERROR_MARGIN = 0.02
#: Fewer answered requests than this in a window: judge nothing, look again.
MIN_WINDOW_REQUESTS = 5
#: The observed rate counts as the target from this share of it.
TARGET_REACHED = 0.95


@dataclass(frozen=True)
class Window:
    """What the load did at one user count for ``seconds``: requests started, failed, their p50."""

    users: int
    requests: int
    errors: int
    p50_ms: float
    seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class SizingStep:
    """One decision: at ``t`` s into the load, ``users_before`` -> ``users`` (``settled``: the last)."""

    t: float
    users_before: int
    users: int
    rate_rps: float
    p50_ms: float
    error_share: float
    reason: str
    settled: bool

    def describe(self) -> str:
        change = (f"{self.users_before} -> {self.users} users" if self.users != self.users_before
                  else f"{self.users} users")
        state = "settled" if self.settled else "ramping"
        return (f"user sizing at {self.t:.1f}s: {change} ({state}): {self.rate_rps:,.0f} rps at p50 "
                f"{self.p50_ms:.1f} ms, errors {self.error_share:.1%}; {self.reason}")

    def to_json(self) -> dict[str, object]:
        return {"t": round(self.t, 3), "users_before": self.users_before, "users": self.users,
                "rate_rps": round(self.rate_rps, 1), "p50_ms": round(self.p50_ms, 3),
                "error_share": round(self.error_share, 4), "reason": self.reason, "settled": self.settled}


def is_flat(window: Window, baseline: Window) -> bool:
    """Latency within FLAT_LATENCY_FACTOR of the baseline's, errors not above it by FLAT_ERROR_MARGIN."""
    return (window.p50_ms <= FLAT_LATENCY_FACTOR * baseline.p50_ms
            and window.error_share <= baseline.error_share + FLAT_ERROR_MARGIN)


def next_users(window: Window, baseline: Window | None, last_flat: int, *, target_rps: float, max_users: int,
               wait_s: float = 0.0) -> tuple[int, str, bool]:
    """The user count after ``window`` (measured at ``window.users``): ``(users, reason, settled)``.

    ``baseline`` is the first judged window (None: this is it); ``last_flat`` the largest count
    whose window was flat. Settled means: stop sizing, keep this count for the rest of the run.
    """
    current = window.users
    if window.requests < MIN_WINDOW_REQUESTS:
        return current, f"only {window.requests} requests in the window, looking again", False
    if baseline is not None and not is_flat(window, baseline):
        return (last_flat, f"not flat any more (p50 {window.p50_ms:.1f} ms vs {baseline.p50_ms:.1f} ms, errors "
                f"{window.error_share:.1%} vs {baseline.error_share:.1%} at the start): back to the last flat count",
                True)
    if window.rate >= TARGET_REACHED * target_rps:
        return current, f"target {target_rps:,.0f} rps reached", True
    needed = math.ceil(target_rps * (window.p50_ms / 1000.0 + wait_s))
    proposal = min(max_users, needed, max(current + 1, 2 * current))
    if proposal <= current:
        if current >= max_users:
            return current, f"at load.max_users={max_users} (target {target_rps:,.0f} rps not reached)", True
        return current, f"{target_rps:,.0f} rps needs ~{needed} users at this latency", True
    return proposal, f"{target_rps:,.0f} rps needs ~{needed} users at this latency (Little's law)", False


def _p50(values: list[float]) -> float:
    values.sort()
    n = len(values)
    if not n:
        return math.nan
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


class Sizer:
    """The sizing loop's state: collects records by start time, judges a window once it is complete.

    ``add`` takes records as they arrive; ``due(elapsed)`` says a window can be judged (its end
    plus the time its slowest requests need to come back); ``decide`` judges it and returns the step.
    """

    def __init__(self, users: int, *, target_rps: float, max_users: int, wait_s: float = 0.0) -> None:
        self.users = users
        self.target_rps = target_rps
        self.max_users = max_users
        self.wait_s = wait_s
        self.settled = False
        self.steps: list[SizingStep] = []
        self._baseline: Window | None = None
        self._last_flat = users
        self._start = SETTLE_S
        self._latencies: list[float] = []
        self._errors = 0
        self._lag_s = 0.5

    def add(self, records: Iterable[RequestRecord]) -> None:
        if self.settled:
            return
        start, end = self._start, self._start + WINDOW_S
        for r in records:
            if start <= r.t < end:
                self._latencies.append(r.latency_ms)
                if not r.ok:
                    self._errors += 1

    def due(self, elapsed_s: float) -> bool:
        return not self.settled and elapsed_s >= self._start + WINDOW_S + self._lag_s

    def decide(self, elapsed_s: float) -> SizingStep:
        n = len(self._latencies)
        window = Window(self.users, n, self._errors, _p50(self._latencies), WINDOW_S)
        users, reason, settled = next_users(window, self._baseline, self._last_flat, target_rps=self.target_rps,
                                            max_users=self.max_users, wait_s=self.wait_s)
        if n >= MIN_WINDOW_REQUESTS:
            if self._baseline is None:
                self._baseline = window
            if is_flat(window, self._baseline):
                self._last_flat = max(self._last_flat, window.users)
            # Requests that started in the window must have answered before it is judged.
            # (The records file is flushed every 0.2 s.)
            self._lag_s = min(2.0, 0.25 + 2.0 * window.p50_ms / 1000.0)
        step = SizingStep(elapsed_s, self.users, users, window.rate, window.p50_ms if n else 0.0,
                          window.error_share, reason, settled)
        self.steps.append(step)
        self.users, self.settled = users, settled
        self._start = elapsed_s + SETTLE_S
        self._latencies, self._errors = [], 0
        return step





#: Warn up front when the planned budget would take longer than this at the observed rate.
SLOW_BUDGET_S = 180.0
#: The rate is measured over this long, after the warm-up (or once sizing has settled).
RATE_WINDOW_S = 1.0
WARMUP_S = 1.0
#: With sizing on, the rate is measured once it has settled, or after this long at the latest.
SIZING_WARN_AFTER_S = 20.0


def budget_time_warning(rate_rps: float, budget: int, *, limit_s: float = SLOW_BUDGET_S) -> str | None:
    """The up-front warning when ``budget`` requests would take more than ``limit_s`` at ``rate_rps``."""
    expected = math.inf if rate_rps <= 0 else budget / rate_rps
    if expected <= limit_s:
        return None
    took = f"~{expected / 60:.1f} min ({expected:,.0f} s)" if math.isfinite(expected) else "forever"
    return (f"slow load: {rate_rps:,.0f} requests/s after warm-up, so the planned budget of {budget:,} requests "
            f"would take {took} (more than {limit_s:g} s; the sequential test often stops sooner). To go faster: "
            f"raise load.users or set load.target_rps (user sizing), send the ratio to a cheap load.path on the "
            f"same route rule with load.prediction_share, or loosen --tolerance / --confidence")


__all__ = [
    "FLAT_LATENCY_FACTOR",
    "SLOW_BUDGET_S",
    "Sizer",
    "SizingStep",
    "Window",
    "budget_time_warning",
    "is_flat",
    "next_users",
]
