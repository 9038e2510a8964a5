"""Seeded simulations of the SLO and candidate-vs-baseline judgments: false failures and power.

Same rules as tests/unit/test_stats_simulation.py: numpy draws the samples (tests only), every
decision is made by the module under test, and the allowed counts are exact binomial quantiles
(a bound is crossed by noise alone with probability <= 1e-4 at the rate it guards).

* False failure: the true value sits exactly on the limit (the hardest case a compliant service
  can be in), so "fail" must come at most (1 - confidence) / 2 of the time (one side of the
  two-sided interval).
* Power: at a stated effect, "fail" must come at least as often as the stated power.  For the
  latency quantile the exact rate is known in closed form (an order statistic exceeds the limit
  when fewer than l observations fall below it), so the simulation is also checked against it.
* Disagreement: the inputs are a sample; each disagrees with the true share, independently.  The
  whole path is simulated (prediction notes -> per-payload answers -> verdict), and its rate is
  also checked against the exact binomial tail from the first failing count.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pytest_abtraffic._compare import (
    check_compare,
    judge_disagreement,
    judge_error_delta,
    judge_latency_ratio,
    parse_compare,
)
from pytest_abtraffic._slo import judge_error_rate, judge_latency, quantile_ranks

TAIL = 1e-4
RUNS = 2_000


def most(runs: int, rate: float) -> int:
    return int(stats.binom.ppf(1 - TAIL, runs, rate))


def fewest(runs: int, rate: float) -> int:
    return int(stats.binom.ppf(TAIL, runs, rate))


def lognormal(rng: np.random.Generator, runs: int, n: int, scale: float = 1.0) -> np.ndarray:
    """Latency-like samples (ms): lognormal, median 8 ms, a long right tail."""
    return scale * rng.lognormal(mean=math.log(8.0), sigma=0.6, size=(runs, n))


def lognormal_quantile(q: float, scale: float = 1.0) -> float:
    return scale * 8.0 * math.exp(0.6 * stats.norm.ppf(q))


# ---------------------------------------------------------------------------------------------
# SLO: latency quantile


@pytest.mark.parametrize("confidence", [0.95, 0.999])
@pytest.mark.parametrize(("metric", "q", "n"), [("p95_ms", 0.95, 400), ("p99_ms", 0.99, 2000)])
def test_slo_latency_false_failure_rate_at_the_limit(metric: str, q: float, n: int, confidence: float) -> None:
    limit = lognormal_quantile(q)
    samples = lognormal(np.random.default_rng(51), RUNS, n)
    fails = sum(judge_latency(row.tolist(), metric, limit, confidence).status == "fail" for row in samples)
    lower, _ = quantile_ranks(n, q, confidence)
    assert lower is not None
    exact = stats.binom.cdf(lower - 1, n, q)  # P(x_(l) > limit) when limit is the true quantile
    print(f"SLO {metric} conf={confidence} n={n}: false failures {fails}/{RUNS} = {fails / RUNS:.4f} "
          f"(exact {exact:.4f}, nominal <= {(1 - confidence) / 2:.4f})")
    assert exact <= (1 - confidence) / 2
    assert fails <= most(RUNS, (1 - confidence) / 2)
    assert fewest(RUNS, exact) <= fails <= most(RUNS, exact)


@pytest.mark.parametrize(("metric", "q", "n", "effect"), [("p95_ms", 0.95, 1000, 1.25), ("p99_ms", 0.99, 5000, 1.2)])
def test_slo_latency_power_at_a_stated_effect(metric: str, q: float, n: int, effect: float) -> None:
    """The true quantile is ``effect`` times the limit (a 20-25% breach): caught >= 99% of the time."""
    confidence = 0.999
    limit = lognormal_quantile(q) / effect
    samples = lognormal(np.random.default_rng(52), RUNS, n)
    fails = sum(judge_latency(row.tolist(), metric, limit, confidence).status == "fail" for row in samples)
    lower, _ = quantile_ranks(n, q, confidence)
    assert lower is not None
    below = stats.lognorm.cdf(limit, 0.6, scale=8.0)  # share of observations under the limit
    exact = stats.binom.cdf(lower - 1, n, below)
    print(f"SLO {metric} n={n} true = {effect}x limit: power {fails}/{RUNS} = {fails / RUNS:.4f} (exact {exact:.4f})")
    assert exact >= 0.99
    assert fewest(RUNS, exact) <= fails <= most(RUNS, exact)


def test_slo_latency_compliant_service_passes() -> None:
    """p95 at 80% of the limit, 2,000 responses: shown to hold (upper bound under the limit) >= 99%.

    Exact pass probability P(Bin(n, F(limit)) >= u): 0.92 at n = 1,000, 0.9998 at n = 2,000.
    """
    n = 2000
    limit = lognormal_quantile(0.95) / 0.8
    samples = lognormal(np.random.default_rng(53), RUNS, n)
    passes = sum(judge_latency(row.tolist(), "p95_ms", limit, 0.999).status == "pass" for row in samples)
    _, upper = quantile_ranks(n, 0.95, 0.999)
    assert upper is not None
    exact = stats.binom.sf(upper - 1, n, stats.lognorm.cdf(limit, 0.6, scale=8.0))
    print(f"SLO p95_ms at 0.8x limit, n={n}: pass {passes}/{RUNS} (exact {exact:.4f})")
    assert exact >= 0.99
    assert fewest(RUNS, exact) <= passes


# ---------------------------------------------------------------------------------------------
# SLO: error rate (Clopper-Pearson)


@pytest.mark.parametrize("confidence", [0.95, 0.999])
@pytest.mark.parametrize(("rate", "n"), [(0.01, 2000), (0.05, 500)])
def test_slo_error_rate_false_failure_rate_at_the_limit(rate: float, n: int, confidence: float) -> None:
    failures = np.random.default_rng(54).binomial(n, rate, size=RUNS)
    fails = sum(judge_error_rate(int(x), n, rate, confidence).status == "fail" for x in failures)
    # exact rate: "fail" is monotone in the failure count, so it is the binomial tail from the first failing count
    first = next(x for x in range(int(n * rate), n + 1) if judge_error_rate(x, n, rate, confidence).status == "fail")
    exact = stats.binom.sf(first - 1, n, rate)
    print(f"SLO error_rate<={rate} conf={confidence} n={n}: false failures {fails}/{RUNS} = {fails / RUNS:.4f} "
          f"(exact {exact:.5f}, nominal <= {(1 - confidence) / 2:.4f})")
    assert exact <= (1 - confidence) / 2
    assert fewest(RUNS, exact) <= fails <= most(RUNS, exact)


@pytest.mark.parametrize(("rate", "n", "effect"), [(0.01, 5000, 2.0), (0.05, 4000, 1.5)])
def test_slo_error_rate_power_at_a_stated_effect(rate: float, n: int, effect: float) -> None:
    failures = np.random.default_rng(55).binomial(n, rate * effect, size=RUNS)
    fails = sum(judge_error_rate(int(x), n, rate, 0.999).status == "fail" for x in failures)
    print(f"SLO error_rate<={rate} true {rate * effect:g}, n={n}: power {fails}/{RUNS} = {fails / RUNS:.4f}")
    assert fails >= fewest(RUNS, 0.99)


# ---------------------------------------------------------------------------------------------
# candidate vs baseline: latency ratio (order statistics, Bonferroni)


@pytest.mark.parametrize("confidence", [0.95, 0.999])
def test_compare_latency_ratio_false_failure_rate_at_the_limit(confidence: float) -> None:
    """The candidate is exactly 1.10x slower at every quantile; limit latency_p95_ratio<=1.10."""
    rng = np.random.default_rng(56)
    n = 1000
    base, cand = np.sort(lognormal(rng, RUNS, n), axis=1), np.sort(lognormal(rng, RUNS, n, scale=1.10), axis=1)
    fails = sum(judge_latency_ratio(c.tolist(), b.tolist(), "p95", 1.10, confidence, effect_size=False).status
                == "fail" for c, b in zip(cand, base, strict=True))
    print(f"compare p95 ratio at the limit, conf={confidence}, n={n}+{n}: false failures {fails}/{RUNS} "
          f"= {fails / RUNS:.4f} (nominal <= {(1 - confidence) / 2:.4f})")
    assert fails <= most(RUNS, (1 - confidence) / 2)


def test_compare_latency_ratio_power_at_a_stated_effect() -> None:
    """The candidate is 1.5x slower; limit 1.10; 3,000 responses per version: caught >= 99%.

    (At 1,000 per version the distribution-free Bonferroni interval catches it only ~60% of the time.)
    """
    rng = np.random.default_rng(57)
    n = 3000
    base, cand = np.sort(lognormal(rng, RUNS, n), axis=1), np.sort(lognormal(rng, RUNS, n, scale=1.5), axis=1)
    fails = sum(judge_latency_ratio(c.tolist(), b.tolist(), "p95", 1.10, 0.999, effect_size=False).status
                == "fail" for c, b in zip(cand, base, strict=True))
    print(f"compare p95 ratio, candidate 1.5x slower, n={n}+{n}: power {fails}/{RUNS} = {fails / RUNS:.4f}")
    assert fails >= fewest(RUNS, 0.99)


def test_compare_equal_versions_pass_the_ratio() -> None:
    """Identical latency distributions, 3,000 responses each, limit 1.30: shown to hold >= 99%.

    The interval is distribution-free and Bonferroni-split, so it is wide: showing <= 1.10 for two
    equal versions takes well over 10,000 responses each (docs/judgments.md).
    """
    rng = np.random.default_rng(58)
    n = 3000
    base, cand = np.sort(lognormal(rng, RUNS, n), axis=1), np.sort(lognormal(rng, RUNS, n), axis=1)
    passes = sum(judge_latency_ratio(c.tolist(), b.tolist(), "p95", 1.30, 0.999, effect_size=False).status
                 == "pass" for c, b in zip(cand, base, strict=True))
    print(f"compare p95 ratio<=1.30, equal versions, n={n}+{n}: pass {passes}/{RUNS}")
    assert passes >= fewest(RUNS, 0.99)


# ---------------------------------------------------------------------------------------------
# candidate vs baseline: error-rate difference (Newcombe)


@pytest.mark.parametrize("confidence", [0.95, 0.999])
@pytest.mark.parametrize(("base_rate", "delta", "n"), [(0.01, 0.005, 5000), (0.0, 0.01, 2000), (0.05, 0.02, 1000)])
def test_compare_error_delta_false_failure_rate_at_the_limit(base_rate: float, delta: float, n: int,
                                                              confidence: float) -> None:
    rng = np.random.default_rng(59)
    x_b = rng.binomial(n, base_rate, size=RUNS)
    x_c = rng.binomial(n, base_rate + delta, size=RUNS)
    fails = sum(judge_error_delta(int(c), n, int(b), n, delta, confidence).status == "fail"
                for c, b in zip(x_c, x_b, strict=True))
    print(f"compare error delta<={delta} (baseline {base_rate}) conf={confidence} n={n}: false failures "
          f"{fails}/{RUNS} = {fails / RUNS:.4f} (nominal <= {(1 - confidence) / 2:.4f})")
    assert fails <= most(RUNS, (1 - confidence) / 2)


def test_compare_error_delta_power_at_a_stated_effect() -> None:
    """Baseline 1% errors, candidate 3%, limit error_rate_delta<=0.005, 6,000 requests each: caught >= 99%.

    (At 5,000 each the measured power is 0.986.)
    """
    rng = np.random.default_rng(60)
    n = 6000
    x_b, x_c = rng.binomial(n, 0.01, size=RUNS), rng.binomial(n, 0.03, size=RUNS)
    fails = sum(judge_error_delta(int(c), n, int(b), n, 0.005, 0.999).status == "fail"
                for c, b in zip(x_c, x_b, strict=True))
    print(f"compare error delta<=0.005, 1% vs 3%, n={n}: power {fails}/{RUNS} = {fails / RUNS:.4f}")
    assert fails >= fewest(RUNS, 0.99)


# ---------------------------------------------------------------------------------------------
# candidate vs baseline: prediction disagreement (Clopper-Pearson over inputs)


def _disagreement_runs(rng: np.random.Generator, n: int, share: float, limit: float, confidence: float) -> int:
    """Runs (of RUNS) judged "fail": n payloads, each answered differently by v2 with probability ``share``."""
    spec = parse_compare(f"baseline=v1,disagreement<={limit}")
    assert spec is not None
    differs = rng.random((RUNS, n)) < share
    fails = 0
    for row in differs:
        notes = [(i, "v1", '"a"') for i in range(n)] + [(i, "v2", '"b"' if d else '"a"') for i, d in enumerate(row)]
        report = check_compare((), spec, confidence=confidence, candidates=["v2"], predictions=notes,
                               payloads=[None] * n)
        fails += report.checks[0].status == "fail"
    return fails


def _exact_fail_rate(n: int, share: float, limit: float, confidence: float) -> float:
    first = next((x for x in range(n + 1) if judge_disagreement(x, n, limit, confidence).status == "fail"), n + 1)
    return float(stats.binom.sf(first - 1, n, share))


@pytest.mark.parametrize(("confidence", "limit", "n"), [(0.95, 0.05, 200), (0.999, 0.1, 150), (0.95, 0.2, 60)])
def test_compare_disagreement_false_failure_rate_at_the_limit(confidence: float, limit: float, n: int) -> None:
    """The true share of inputs answered differently is exactly the limit."""
    fails = _disagreement_runs(np.random.default_rng(61), n, limit, limit, confidence)
    exact = _exact_fail_rate(n, limit, limit, confidence)
    print(f"compare disagreement<={limit} conf={confidence} n={n} inputs: false failures {fails}/{RUNS} = "
          f"{fails / RUNS:.4f} (exact {exact:.5f}, nominal <= {(1 - confidence) / 2:.4f})")
    assert exact <= (1 - confidence) / 2
    assert fewest(RUNS, exact) <= fails <= most(RUNS, exact)


def test_compare_disagreement_power_at_a_stated_effect() -> None:
    """Limit 5%, true share 15% (3x), 200 inputs, 99.9% confidence: caught >= 95% (exact power 0.9585).

    (At 150 inputs the exact power is 0.82: the number of distinct inputs, not of requests, decides.)
    """
    n, limit, share, confidence = 200, 0.05, 0.15, 0.999
    fails = _disagreement_runs(np.random.default_rng(62), n, share, limit, confidence)
    exact = _exact_fail_rate(n, share, limit, confidence)
    print(f"compare disagreement<={limit}, true {share}, n={n}: power {fails}/{RUNS} = {fails / RUNS:.4f} "
          f"(exact {exact:.4f})")
    assert exact >= 0.95
    assert fewest(RUNS, exact) <= fails <= most(RUNS, exact)
    assert fails >= fewest(RUNS, 0.95)


def test_compare_disagreement_identical_answers_pass_on_enough_inputs() -> None:
    """True share 1%, limit 5%, 400 inputs, 95%: passes >= 95% of the time; never fails."""
    spec = parse_compare("baseline=v1,disagreement<=0.05")
    assert spec is not None
    counts = np.random.default_rng(63).binomial(400, 0.01, size=RUNS)
    statuses = [judge_disagreement(int(x), 400, 0.05, 0.95).status for x in counts]
    print(f"compare disagreement<=0.05, true 0.01, n=400: passes {statuses.count('pass')}/{RUNS}")
    assert statuses.count("fail") == 0 and statuses.count("pass") >= fewest(RUNS, 0.95)
