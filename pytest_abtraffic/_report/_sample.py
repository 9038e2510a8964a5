"""Synthetic but realistic results, for previews of the reports and for the report tests.

The records follow what a real run shows (see linkerd-facts.md): per-request weighted routing,
log-normal latencies, and when a version is killed, 504s from the proxy's fail-fast queue for about
3 s before its share moves to the healthy version, then its return after the restore.
Deterministic for a given seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._backend import BackendCounters
from .._result import ExperimentResult, FaultWindow

if TYPE_CHECKING:
    from .._load import RequestRecord

FAIL_FAST_S = 3.0  # Linkerd's default queue fail-fast timeout


def _latency(rng: random.Random, median_ms: float) -> float:
    return round(median_ms * math.exp(rng.gauss(0.0, 0.45)), 3)


def split_records(weights: Mapping[str, float], *, requests: int = 10_000, rps: float = 800.0,
                  medians_ms: Mapping[str, float] | None = None, error_rate: float = 0.0,
                  users: int = 20, seed: int = 1) -> list[RequestRecord]:
    """Steady traffic split by ``weights`` (shares), with an optional background error rate."""
    from .._load import RequestRecord

    rng = random.Random(seed)
    names = list(weights)
    shares = [weights[n] for n in names]
    medians = medians_ms or {}
    out: list[RequestRecord] = []
    t = 0.0
    for i in range(requests):
        t += rng.expovariate(rps)
        version = rng.choices(names, shares)[0]
        conn = f"u{i % users}"
        if error_rate and rng.random() < error_rate:
            out.append(RequestRecord(t, version, 500, _latency(rng, 2.0), conn, "HTTP 500: injected"))
        else:
            out.append(RequestRecord(t, version, 200, _latency(rng, medians.get(version, 5.0)), conn, ""))
    return out


def kill_records(weights: Mapping[str, float], victim: str, *, kill_at_s: float = 2.0, restore_at_s: float = 8.0,
                 ready_after_s: float = 1.2, duration_s: float = 13.0, rps: float = 600.0, users: int = 20,
                 seed: int = 2) -> list[RequestRecord]:
    """``victim`` is killed at ``kill_at_s`` and restored at ``restore_at_s`` (ready ``ready_after_s``
    later): 504s (no version header) until the fail-fast window passes, then no traffic to it."""
    from .._load import RequestRecord

    rng = random.Random(seed)
    names = list(weights)
    shares = [weights[n] for n in names]
    healthy = [n for n in names if n != victim]
    back_at = restore_at_s + ready_after_s
    fallback_at = kill_at_s + FAIL_FAST_S
    out: list[RequestRecord] = []
    t = 0.0
    i = 0
    while True:
        t += rng.expovariate(rps)
        if t >= duration_s:
            break
        i += 1
        conn = f"u{i % users}"
        version = rng.choices(names, shares)[0]
        down = kill_at_s <= t < back_at
        if version == victim and down:
            if t < kill_at_s + 0.05 and rng.random() < 0.5:
                # in flight on the killed process: the proxy answers 502
                out.append(RequestRecord(t, "", 502, _latency(rng, 8.0), conn, "HTTP 502"))
            elif t < fallback_at:
                # queued for the dead backend until the queue fails fast
                waited = max(0.02, fallback_at - t) * 1000.0
                out.append(RequestRecord(t, "", 504, round(min(waited, 3000.0), 3), conn, "HTTP 504"))
            else:
                version = rng.choices(healthy)[0]
                out.append(RequestRecord(t, version, 200, _latency(rng, 4.0), conn, ""))
        else:
            median = 4.0 if version != victim else 6.0
            out.append(RequestRecord(t, version, 200, _latency(rng, median), conn, ""))
    return out


def sample_split_result(*, name: str = "canary 90/10", seed: int = 1, skew: float = 0.0) -> ExperimentResult:
    """A split verification: 10,000 requests at 90/10 (``skew`` moves that share from v1 to v2)."""
    from .._load import LoadResult
    from .._stats import SequentialSplitTest, check_split

    expected = {"v1": 0.9, "v2": 0.1}
    actual = {"v1": 0.9 - skew, "v2": 0.1 + skew}
    records = split_records(actual, requests=10_000, rps=800.0, medians_ms={"v1": 4.0, "v2": 9.0},
                            error_rate=0.002, seed=seed)
    duration = records[-1].t + 0.05
    load = LoadResult(records=tuple(records), duration_s=duration, stopped_early=False, stop_reason="budget")
    counts = load.counts()
    split = check_split(counts, expected)
    sequential = SequentialSplitTest(expected)
    for k in range(500, len(records) + 1, 500):
        state = sequential.update(LoadResult(tuple(records[:k]), 0.0, False, "budget").counts())
    return ExperimentResult(
        name=name, backend="local", namespace="abt-sample", variants=("v1", "v2"), expected_shares=expected,
        split_api="httproute", load=load, split=split, sequential=state,
        mesh_counters={
            "v1": BackendCounters(requests=counts.get("v1", 0) + 18, responses_by_status={200: counts.get("v1", 0)}),
            "v2": BackendCounters(requests=counts.get("v2", 0) + 2, responses_by_status={200: counts.get("v2", 0)}),
        },
        started_at="2025-01-01T12:00:00+00:00", duration_s=duration + 1.5,
        notes=("synthetic sample result",),
    )


def sample_fallback_result(*, name: str | None = None, seed: int = 2, recovers: bool = True,
                           victim: str = "v2") -> ExperimentResult:
    """The built-in ``kill`` scenario on a 50/50 split: ``victim`` is killed at 2 s and restored at
    8 s. With ``recovers=False`` it never comes back, so the recovery checks fail."""
    from .._chaos import parse_scenario
    from .._fallback import evaluate_fallback
    from .._load import LoadResult
    from .._spec import default_spec

    spec = default_spec()
    scenario = parse_scenario(f"kill:{victim}", spec)
    (step,) = scenario.steps
    restore_at = step.end_s if step.end_s is not None else step.at_s
    duration = restore_at + 6.0
    shares = spec.shares()
    records = kill_records(shares, victim, kill_at_s=step.at_s, restore_at_s=restore_at if recovers else duration,
                           duration_s=duration, seed=seed)
    # The runner's actual windows start a little after the planned time (the kill takes a moment).
    windows = tuple(FaultWindow(w.label, w.start_s + 0.03, None if w.end_s is None else w.end_s + 0.05)
                    for w in scenario.windows())
    load = LoadResult(records=tuple(records), duration_s=duration, stopped_early=True, stop_reason="observer")
    report = evaluate_fallback(load, scenario, windows, spec)
    served = load.counts()
    failures = load.failures()
    proxy_504 = failures.get("", {}).get(504, 0)
    counters = {
        v: BackendCounters(requests=served.get(v, 0) + (proxy_504 if v == victim else 0),
                           responses_by_status={200: served.get(v, 0)},
                           proxy_errors={"FailFast": proxy_504} if v == victim and proxy_504 else {})
        for v in spec.variant_names
    }
    return ExperimentResult(
        name=name or f"fallback:{scenario.name}", backend="local", namespace="abt-sample",
        variants=spec.variant_names, expected_shares=shares, split_api=spec.split_api, load=load,
        fallback=report, fault_windows=windows, mesh_counters=counters,
        started_at="2025-01-01T12:05:00+00:00", duration_s=duration + 2.0,
    )


__all__ = ["kill_records", "sample_fallback_result", "sample_split_result", "split_records"]
