"""Seeded simulations of the split checks: false failures, power, early stopping and peeking.

numpy draws the binomial/multinomial counts (exact samplers; tests only); every decision is made
by the module under test.  Allowed failure counts are exact binomial quantiles, so a check fails
only if the true rate is above its nominal level, not because of simulation noise (each bound is
exceeded by chance with probability <= 1e-4 at the nominal rate).
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from scipy import stats

from pytest_abtraffic._stats import (
    SequentialSplitTest,
    check_split,
    counts_by_unit,
    default_request_budget,
    normalize_weights,
    plan_sample_size,
    srm_test,
)

SPLITS = {
    "50/50": {"v1": 50.0, "v2": 50.0},
    "90/10": {"v1": 90.0, "v2": 10.0},
    "50/30/20": {"v1": 50.0, "v2": 30.0, "v3": 20.0},
}
TAIL = 1e-4  # chance that a bound below is crossed by noise alone at the nominal rate


def most_failures(runs: int, rate: float) -> int:
    """Exact binomial upper quantile: failures allowed at a true rate of ``rate``."""
    return int(stats.binom.ppf(1 - TAIL, runs, rate))


def fewest_failures(runs: int, rate: float) -> int:
    """Exact binomial lower quantile: for calibration (a test must not be absurdly conservative)."""
    return int(stats.binom.ppf(TAIL, runs, rate))


def draws(weights: dict[str, float], n: int, runs: int, seed: int) -> list[dict[str, int]]:
    names = list(weights)
    shares = list(normalize_weights(weights).values())
    rows = np.random.default_rng(seed).multinomial(n, shares, size=runs).tolist()
    return [dict(zip(names, row, strict=True)) for row in rows]


# ---------------------------------------------------------------------------------------------
# fixed-N tests on correct splits


@pytest.mark.parametrize("alpha", [0.001, 0.05])
@pytest.mark.parametrize("method", ["chi2", "g"])
@pytest.mark.parametrize("split", list(SPLITS))
def test_srm_false_failure_rate_on_correct_splits(split: str, method: str, alpha: float) -> None:
    weights = SPLITS[split]
    runs = 4_000
    n = default_request_budget(weights)
    failures = sum(srm_test(c, weights, method).p_value < alpha for c in draws(weights, n, runs, seed=11))  # type: ignore[arg-type]
    print(f"{split} {method} alpha={alpha}: {failures}/{runs} = {failures / runs:.4f} at N={n:,}")
    assert failures <= most_failures(runs, alpha)
    if alpha == 0.05:  # calibrated, not just conservative
        assert failures / runs > 0.02
        assert failures >= fewest_failures(runs, alpha)


@pytest.mark.parametrize("alpha", [0.001, 0.05])
@pytest.mark.parametrize(("split", "n"), [("50/50", 40), ("90/10", 300)])
def test_exact_binomial_false_failure_rate_at_small_n(split: str, n: int, alpha: float) -> None:
    weights = SPLITS[split]
    runs = 4_000
    results = [srm_test(c, weights) for c in draws(weights, n, runs, seed=12)]
    assert {r.method for r in results} == {"binomial"}
    failures = sum(r.p_value < alpha for r in results)
    print(f"{split} binomial N={n} alpha={alpha}: {failures}/{runs}")
    assert failures <= most_failures(runs, alpha)


@pytest.mark.parametrize(("confidence", "power"), [(0.999, 0.99), (0.95, 0.95)])
@pytest.mark.parametrize("split", list(SPLITS))
def test_tolerance_false_failure_rate_at_the_planned_n(split: str, confidence: float, power: float) -> None:
    """A correct split fails the equivalence check only for lack of evidence: at the planned N
    that happens with probability 1 - power (its "alpha"); the full check adds the SRM alpha."""
    weights = SPLITS[split]
    runs = 3_000
    n = default_request_budget(weights, tolerance=0.02, confidence=confidence, power=power)
    results = [
        check_split(c, weights, tolerance=0.02, confidence=confidence, alpha=1 - confidence)
        for c in draws(weights, n, runs, seed=13)
    ]
    tol_failures = sum(not r.tolerance_ok for r in results)
    any_failures = sum(not r.ok for r in results)
    print(f"{split} conf={confidence} N={n:,}: tolerance {tol_failures}/{runs}, overall {any_failures}/{runs}")
    assert tol_failures <= most_failures(runs, 1 - power)
    assert any_failures <= most_failures(runs, (1 - power) + (1 - confidence))


@pytest.mark.parametrize("alpha", [0.001, 0.05])
@pytest.mark.parametrize("split", list(SPLITS))
def test_sequential_false_mismatch_rate_on_correct_splits(split: str, alpha: float) -> None:
    weights = SPLITS[split]
    names = list(weights)
    runs, step = 2_000, 400
    budget = default_request_budget(weights)
    peeks = budget // step + 1
    shares = list(normalize_weights(weights).values())
    paths = np.random.default_rng(14).multinomial(step, shares, size=(runs, peeks)).cumsum(axis=1).tolist()
    verdicts = {"mismatch": 0, "holds": 0, "undecided": 0}
    for path in paths:
        test = SequentialSplitTest(weights, alpha=alpha)
        for counts in path:
            state = test.update(dict(zip(names, counts, strict=True)))
            if state.decided:
                break
        verdicts[state.verdict] += 1
    print(f"{split} sequential alpha={alpha} up to {peeks * step:,}: {verdicts}")
    assert verdicts["mismatch"] <= most_failures(runs, alpha)
    assert verdicts["holds"] >= 0.85 * runs  # and it usually settles the question within the budget


# ---------------------------------------------------------------------------------------------
# power on a real mismatch: configured 10%, served 12%


WEIGHTS_90_10 = {"v1": 90.0, "v2": 10.0}


def test_fixed_test_power_at_the_planned_n() -> None:
    n = plan_sample_size(0.10, p1=0.12, alpha=0.001, power=0.99)
    assert 7_590 <= n <= 7_600
    # exact power of the test as implemented: sum P(x) over the outcomes it rejects
    xs = np.arange(n + 1)
    rejects = np.array([srm_test({"v1": n - int(x), "v2": int(x)}, WEIGHTS_90_10).p_value < 0.001 for x in xs])
    exact_power = float(stats.binom.pmf(xs[rejects], n, 0.12).sum())
    assert exact_power >= 0.99
    runs = 4_000
    served = np.random.default_rng(21).binomial(n, 0.12, size=runs).tolist()
    results = [srm_test({"v1": n - x, "v2": x}, WEIGHTS_90_10) for x in served]
    assert {r.method for r in results} == {"chi2"}
    misses = sum(r.p_value >= 0.001 for r in results)
    print(f"N={n:,}: exact power {exact_power:.4f}, simulated {1 - misses / runs:.4f} ({runs} runs)")
    assert misses <= most_failures(runs, 0.01)
    # the full check fails too: the 99.9% interval of v2 sits mostly above 12%
    assert not check_split({"v1": n - served[0], "v2": served[0]}, WEIGHTS_90_10).ok


def test_sequential_stops_early_on_a_mismatch() -> None:
    planned = plan_sample_size(0.10, p1=0.12, alpha=0.001, power=0.99)
    runs, step, horizon = 2_000, 100, 20_000  # the 90th percentile stop is ~7,000
    paths = (
        np.random.default_rng(22).multinomial(step, [0.88, 0.12], size=(runs, horizon // step)).cumsum(axis=1).tolist()
    )
    stops: list[int] = []
    mismatches = 0
    for path in paths:
        test = SequentialSplitTest(WEIGHTS_90_10)
        for v1, v2 in path:
            state = test.update({"v1": v1, "v2": v2})
            if state.decided:
                break
        stops.append(state.n)
        mismatches += state.verdict == "mismatch"
    median = statistics.median(stops)
    print(f"sequential median stop {median:,.0f} vs planned fixed {planned:,}: ratio {median / planned:.2f}")
    print(f"mismatch found in {mismatches}/{runs}; 90th percentile stop {np.percentile(stops, 90):,.0f}")
    assert median <= 0.6 * planned
    assert mismatches >= 0.99 * runs


# ---------------------------------------------------------------------------------------------
# continuous peeking under a correct 50/50 split


def test_peeking_keeps_the_sequential_test_valid_and_breaks_chi_square() -> None:
    runs, step, horizon = 1_000, 100, 40_000
    peeks = horizon // step
    increments = np.random.default_rng(31).binomial(step, 0.5, size=(runs, peeks))
    v1 = increments.cumsum(axis=1)
    n = step * np.arange(1, peeks + 1)
    # plain chi-square at every peek (1 dof): chi2 = (2 x - n)^2 / n
    chi2 = (2 * v1 - n) ** 2 / n
    sequential_min_p = []
    flagged = 0
    for row in v1.tolist():
        test = SequentialSplitTest({"v1": 1, "v2": 1}, alpha=0.05)
        for i, x in enumerate(row):
            state = test.update({"v1": x, "v2": step * (i + 1) - x})
        sequential_min_p.append(state.p_anytime)  # running min of 1/BF over all 400 peeks
        flagged += state.verdict == "mismatch"
    min_p = np.array(sequential_min_p)
    for alpha in (0.05, 0.01, 0.001):
        seq_rate = float((min_p <= alpha).mean())
        chi_rate = float((chi2 >= stats.chi2.isf(alpha, 1)).any(axis=1).mean())
        print(f"peeking every {step} up to {horizon:,}, alpha={alpha}: sequential {seq_rate:.4f}, chi2 {chi_rate:.4f}")
        if alpha >= 0.01:
            assert seq_rate <= alpha  # Ville's inequality, no margin needed
        else:
            assert seq_rate * runs <= most_failures(runs, alpha)
        assert chi_rate * runs > most_failures(runs, alpha)  # repeated fixed tests inflate the error
    assert flagged == int((min_p <= 0.05).sum())


# ---------------------------------------------------------------------------------------------
# per-connection routing


def test_sticky_connections_need_connection_counting() -> None:
    """20 sticky connections x 50 requests: request counts look like a wild SRM, connections do not."""
    runs, connections, per_connection, alpha = 400, 20, 50, 0.05
    weights = {"v1": 1.0, "v2": 1.0}
    picks = np.random.default_rng(41).integers(0, 2, size=(runs, connections)).tolist()
    by_request = by_connection = 0
    for row in picks:
        records = [
            ("v1" if pick == 0 else "v2", f"conn-{c}") for c, pick in enumerate(row) for _ in range(per_connection)
        ]
        by_request += srm_test(counts_by_unit(records, "requests"), weights).p_value < alpha
        by_connection += srm_test(counts_by_unit(records, "connections"), weights).p_value < alpha
    print(f"false SRM at alpha={alpha}: per request {by_request}/{runs}, per connection {by_connection}/{runs}")
    assert by_request > 0.5 * runs
    assert by_connection <= most_failures(runs, alpha)
