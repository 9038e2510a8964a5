"""Unit tests of pytest_abtraffic._stats: exactness against scipy, reports, validation, planning."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
from scipy import special, stats

from pytest_abtraffic._errors import SplitMismatchError
from pytest_abtraffic._stats import (
    SequentialSplitTest,
    SplitResult,
    SrmResult,
    assert_split,
    binomial_two_sided_p,
    check_split,
    chi2_sf,
    counts_by_unit,
    default_request_budget,
    normalize_weights,
    plan_sample_size,
    regularized_gamma_q,
    srm_test,
    tally_units,
    tolerance_power,
    wilson_interval,
)

REL = 1e-9


def close(mine: float, ref: float, rel: float = REL) -> bool:
    """Relative agreement; a reference that underflows must be matched by 0 or a sub-1e-300 value."""
    if ref < 1e-300:
        return mine < 1e-290
    return abs(mine - ref) <= rel * abs(ref)


# ---------------------------------------------------------------------------------------------
# weights


def test_normalize_weights_scales_and_keeps_order() -> None:
    assert normalize_weights({"v1": 80, "v2": 20}) == {"v1": 0.8, "v2": 0.2}
    shares = normalize_weights({"c": 1, "a": 3})
    assert list(shares) == ["c", "a"]
    assert math.isclose(sum(normalize_weights({"a": 1, "b": 1, "c": 1}).values()), 1.0)


@pytest.mark.parametrize(
    "weights",
    [{}, {"a": 0}, {"a": -1, "b": 2}, {"a": math.nan}, {"a": math.inf}, {"a": "1"}, {"a": True}, {1: 1}],
)
def test_normalize_weights_rejects_bad_input(weights: dict[object, object]) -> None:
    with pytest.raises(ValueError, match="weights"):
        normalize_weights(weights)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# special functions against scipy


@pytest.mark.parametrize("s", [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 7.5, 20.0, 60.0])
def test_regularized_gamma_q_matches_scipy(s: float) -> None:
    for x in [1e-8, 0.01, 0.3, 1.0, s, s + 0.99, s + 1.01, 2 * s + 3, 30.0, 100.0, 400.0, 700.0, 760.0]:
        assert close(regularized_gamma_q(s, x), float(special.gammaincc(s, x))), (s, x)


def test_chi2_sf_matches_scipy_and_handles_extremes() -> None:
    for dof in range(1, 11):
        for stat in [0.0, 1e-6, 0.5, 1.0, 3.84, 10.83, 50.0, 300.0, 1400.0]:
            assert close(chi2_sf(stat, dof), float(stats.chi2.sf(stat, dof))), (stat, dof)
    assert chi2_sf(1e7, 3) == 0.0
    assert chi2_sf(math.inf, 1) == 0.0
    assert chi2_sf(-1.0, 2) == 1.0


# ---------------------------------------------------------------------------------------------
# SRM tests against scipy


def _grid_cases() -> list[tuple[list[int], list[float]]]:
    """Counts for k = 2..5: near, off and far from the weights, with zeros and large N."""
    weight_sets = [
        [0.5, 0.5],
        [0.9, 0.1],
        [0.99, 0.01],
        [0.5, 0.3, 0.2],
        [1 / 3, 1 / 3, 1 / 3],
        [0.4, 0.3, 0.2, 0.1],
        [0.6, 0.1, 0.1, 0.1, 0.1],
        [0.2, 0.2, 0.2, 0.2, 0.2],
    ]
    cases = []
    for w in weight_sets:
        for n in [10, 137, 1_000, 10_000, 250_000]:
            base = [round(n * p) for p in w]
            cases.append((base, w))
            for shift in [1, 3, n // 50 + 1, n // 10 + 1]:
                moved = list(base)
                take = min(shift, moved[0])
                moved[0] -= take
                moved[-1] += take
                cases.append((moved, w))
                moved = list(base)
                take = min(shift, moved[-1])
                moved[-1] -= take
                moved[0] += take
                cases.append((moved, w))
            zero = list(base)
            zero[0], zero[-1] = 0, zero[-1] + zero[0]
            cases.append((zero, w))
    return cases


GRID = _grid_cases()


@pytest.mark.parametrize(("method", "lambda_"), [("chi2", "pearson"), ("g", "log-likelihood")])
def test_chi2_and_g_match_scipy_on_grid(method: str, lambda_: str) -> None:
    checked = 0
    for observed, w in GRID:
        names = [f"v{i}" for i in range(len(w))]
        mine = srm_test(dict(zip(names, observed, strict=True)), dict(zip(names, w, strict=True)), method)  # type: ignore[arg-type]
        n = sum(observed)
        shares = list(normalize_weights(dict(zip(names, w, strict=True))).values())
        ref = stats.power_divergence(observed, [n * p for p in shares], lambda_=lambda_)
        assert mine.dof == len(w) - 1
        assert mine.method == method
        assert close(mine.p_value, float(ref.pvalue)), (observed, w, mine, ref)
        # scipy's own G statistic loses digits to cancellation: compare statistics loosely
        assert math.isclose(mine.statistic, float(ref.statistic), rel_tol=1e-9, abs_tol=1e-9)
        checked += 1
    assert checked > 300


def test_chisquare_agrees_with_scipy_chisquare() -> None:
    observed, w = [5_210, 2_890, 1_900], [0.5, 0.3, 0.2]
    ref = stats.chisquare(observed, [sum(observed) * p for p in w])
    mine = srm_test({"a": 5_210, "b": 2_890, "c": 1_900}, {"a": 5, "b": 3, "c": 2}, "chi2")
    assert close(mine.p_value, float(ref.pvalue))
    assert math.isclose(mine.statistic, float(ref.statistic), rel_tol=1e-12)


def test_binomial_matches_scipy_binomtest() -> None:
    checked = 0
    for n in [1, 2, 5, 10, 37, 100, 1_000, 7_597, 20_000, 300_000]:
        for p in [0.5, 0.1, 0.9, 0.2, 0.37, 0.01]:
            mean = n * p
            sd = math.sqrt(n * p * (1 - p))
            ks = {0, n, int(mean), math.ceil(mean), n // 3, n - n // 3}
            ks |= {int(mean + d * sd) for d in (-40, -8, -4, -3, -1.5, -0.5, 0.5, 1.5, 3, 4, 8, 40)}
            for k in sorted(x for x in ks if 0 <= x <= n):
                ref = float(stats.binomtest(k, n, p).pvalue)
                mine = binomial_two_sided_p(k, n, p)
                assert close(mine, ref), (k, n, p, mine, ref)
                checked += 1
    assert checked > 500


def test_binomial_via_srm_test_and_auto_choice() -> None:
    small = srm_test({"a": 12, "b": 8}, {"a": 50, "b": 50})
    assert small.method == "binomial"
    assert close(small.p_value, float(stats.binomtest(12, 20, 0.5).pvalue))
    assert small.statistic == 12
    # smaller expected count >= 100: chi-square, as dashboards report
    assert srm_test({"a": 900, "b": 100}, {"a": 90, "b": 10}).method == "chi2"
    assert srm_test({"a": 990, "b": 10}, {"a": 99, "b": 1}).method == "binomial"
    assert srm_test({"a": 5, "b": 3, "c": 2}, {"a": 5, "b": 3, "c": 2}).method == "chi2"
    with pytest.raises(ValueError, match="two variants"):
        srm_test({"a": 5, "b": 3, "c": 2}, {"a": 5, "b": 3, "c": 2}, "binomial")


def test_srm_edge_cases() -> None:
    assert srm_test({}, {"a": 1, "b": 1}).p_value == 1.0  # zero total
    missing = srm_test({"a": 600}, {"a": 1, "b": 1}, "chi2")  # missing variant counts 0
    assert missing.statistic == pytest.approx(600.0)
    huge = srm_test({"a": 1_000_000, "b": 0}, {"a": 1, "b": 1}, "chi2")
    assert huge.p_value == 0.0 and math.isfinite(huge.statistic)
    g_zero = srm_test({"a": 0, "b": 70, "c": 30}, {"a": 1, "b": 1, "c": 1}, "g")
    ref = stats.power_divergence([0, 70, 30], [100 / 3] * 3, lambda_="log-likelihood")
    assert close(g_zero.p_value, float(ref.pvalue))
    assert srm_test({"a": 5}, {"a": 1}).p_value == 1.0  # a single variant: nothing to test
    assert srm_test({"a": 5, "b": 5, "unknown": 0}, {"a": 1, "b": 1}).p_value == 1.0
    with pytest.raises(ValueError, match="unknown"):
        srm_test({"a": 5, "b": 5, "unknown": 2}, {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="method"):
        srm_test({"a": 5, "b": 5}, {"a": 1, "b": 1}, "fisher")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counts"):
        srm_test({"a": -1, "b": 5}, {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="counts"):
        srm_test({"a": 1.5, "b": 5}, {"a": 1, "b": 1})  # type: ignore[dict-item]
    assert srm_test({"a": np.int64(5), "b": 5.0}, {"a": 1, "b": 1}).p_value == 1.0  # type: ignore[dict-item]
    with pytest.raises(dataclasses.FrozenInstanceError):
        huge.p_value = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# intervals


def test_wilson_matches_scipy() -> None:
    for n in [1, 7, 50, 1_000, 123_457]:
        for k in sorted({0, 1, n // 10, n // 2, n - 1, n}):
            for conf in [0.95, 0.999]:
                ref = stats.binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
                lo, hi = wilson_interval(k, n, conf)
                assert lo == pytest.approx(ref.low, rel=1e-9, abs=1e-14)
                assert hi == pytest.approx(ref.high, rel=1e-9, abs=1e-14)
    assert wilson_interval(0, 0, 0.95) == (0.0, 1.0)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, 1.0)
    with pytest.raises(ValueError, match="exceed"):
        wilson_interval(11, 10, 0.95)


@pytest.mark.parametrize(("w", "n"), [(0.1, 7_743), (0.5, 5_000), (0.2, 900), (0.97, 3_000)])
def test_tolerance_power_is_the_exact_pass_probability(w: float, n: int) -> None:
    x = np.arange(n + 1)
    z = float(stats.norm.ppf(0.9995))
    p = x / n
    center = (2 * n * p + z**2) / (2 * (n + z**2))
    delta = z / (2 * (n + z**2)) * np.sqrt(4 * n * p * (1 - p) + z**2)
    lo = np.where(x == 0, 0.0, center - delta)
    hi = np.where(x == n, 1.0, center + delta)
    passing = (lo >= w - 0.02) & (hi <= w + 0.02)
    ref = float(stats.binom.pmf(x[passing], n, w).sum())
    assert tolerance_power(w, n, tolerance=0.02, confidence=0.999) == pytest.approx(ref, abs=1e-11)


# ---------------------------------------------------------------------------------------------
# planning


def test_plan_sample_size_srm_formula() -> None:
    n = plan_sample_size(0.10, p1=0.12, alpha=1e-3, power=0.99)
    assert 7_590 <= n <= 7_600  # the closed form gives 7,596.1
    assert plan_sample_size(0.10, p1=0.08) < n  # the variance at p1 is smaller below
    assert plan_sample_size(0.5, p1=0.6, alpha=0.05, power=0.8) == pytest.approx(194, abs=2)


def test_plan_sample_size_tolerance_reaches_exact_power() -> None:
    n = plan_sample_size(0.10, tolerance=0.02, alpha=1e-3, power=0.99)
    assert n >= 7_743  # the normal-approximation answer; the exact Wilson check needs a bit more
    assert tolerance_power(0.10, n, tolerance=0.02, confidence=0.999) >= 0.99
    assert n < 8_200


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"p1": 0.12, "tolerance": 0.02},
        {"p1": 0.10},
        {"p1": 1.2},
        {"tolerance": 0.0},
        {"p1": 0.12, "alpha": 0.0},
        {"p1": 0.12, "power": 1.0},
    ],
)
def test_plan_sample_size_validates(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        plan_sample_size(0.10, **kwargs)


def test_default_request_budget() -> None:
    two = default_request_budget({"v1": 50, "v2": 50})
    assert two == plan_sample_size(0.5, tolerance=0.02, alpha=0.001, power=0.99)
    assert 21_400 <= two <= 21_700  # (z_0.9995 + z_0.995)^2 * 0.25 / 0.02^2 = 21,506
    canary = default_request_budget({"v1": 90, "v2": 10})
    assert canary == plan_sample_size(0.1, tolerance=0.02, alpha=0.001, power=0.99)
    three = default_request_budget({"a": 50, "b": 30, "c": 20})
    # three shares must all pass: the miss rate is split over them (Bonferroni on power)
    assert three == plan_sample_size(0.5, tolerance=0.02, alpha=0.001, power=1 - 0.01 / 3)
    assert three > two
    # (1.96 + 1.96)^2 * 0.25 / 0.05^2 = 1,537
    assert default_request_budget({"a": 1, "b": 1}, tolerance=0.05, confidence=0.95, power=0.95) == 1_537
    with pytest.raises(ValueError, match="power"):
        default_request_budget({"a": 1, "b": 1}, power=1.5)


# ---------------------------------------------------------------------------------------------
# check_split / assert_split


def test_check_split_passes_a_correct_split() -> None:
    result = check_split({"v1": 8_010, "v2": 1_990}, {"v1": 80, "v2": 20})
    assert isinstance(result, SplitResult)
    assert result.ok and result.srm_ok and result.tolerance_ok
    assert result.verdict.startswith("split holds")
    assert [r.name for r in result.rows] == ["v1", "v2"]
    row = result.rows[1]
    assert row.count == 1_990
    assert (row.weight, row.share) == pytest.approx((0.2, 0.199))
    assert (row.ci_low, row.ci_high) == pytest.approx(wilson_interval(1_990, 10_000, 0.999))
    assert row.within_tolerance
    assert result.total == 10_000 and result.unit == "requests"
    assert isinstance(result.srm, SrmResult) and result.srm.method == "chi2"
    result.raise_if_failed()
    assert assert_split({"v1": 8_010, "v2": 1_990}, {"v1": 80, "v2": 20}).ok


def test_assert_split_failure_message_is_a_table_with_a_verdict() -> None:
    with pytest.raises(SplitMismatchError) as info:
        assert_split({"v1": 7_000, "v2": 3_000}, {"v1": 80, "v2": 20})
    assert isinstance(info.value, AssertionError)
    text = str(info.value)
    lines = text.splitlines()
    verdict = lines[0]
    assert verdict.startswith("split mismatch:")
    assert "v2 served 30.0%" in verdict and "configured 20.0% ± 2.0 pp" in verdict
    assert "SRM p = " in verdict and "< 0.001" in verdict
    header = next(line for line in lines if line.startswith("variant"))
    for column in ("variant", "weight", "count", "share", "interval", "p-value"):
        assert column in header
    assert any(line.startswith("v1") and "70.0%" in line and "7,000" in line for line in lines)
    assert any(line.startswith("v2") and "30.0%" in line and "3,000" in line for line in lines)
    assert any(line.startswith("total: 10,000 requests") for line in lines)


def test_unknown_version_fails_and_is_reported() -> None:
    result = check_split({"v1": 8_000, "v2": 1_950, "unknown": 50}, {"v1": 80, "v2": 20})
    assert not result.ok
    assert result.srm_ok  # the configured versions are in the right ratio ...
    assert not result.tolerance_ok  # ... but traffic went somewhere unexpected
    assert result.unexpected == ("unknown",)
    stray = result.rows[-1]
    assert (stray.name, stray.weight, stray.count, stray.expected, stray.p_value) == (
        "unknown",
        0.0,
        50,
        False,
        None,
    )
    assert "not in the configured weights" in result.verdict and "unknown (50)" in result.verdict
    assert any(line.startswith("unknown") for line in result.table().splitlines())
    with pytest.raises(SplitMismatchError, match="unknown"):
        result.raise_if_failed()


def test_zero_total_and_missing_variants() -> None:
    empty = check_split({}, {"v1": 1, "v2": 1}, unit="connections")
    assert not empty.ok and empty.total == 0
    assert empty.verdict == "split not verified: no connections were counted"
    missing = check_split({"v1": 5_000}, {"v1": 1, "v2": 1})
    assert missing.rows[1].count == 0 and not missing.ok


def test_too_few_requests_is_inconclusive_not_a_mismatch() -> None:
    result = check_split({"v1": 800, "v2": 200}, {"v1": 80, "v2": 20})
    assert result.srm_ok and not result.tolerance_ok and not result.ok
    assert result.verdict.startswith("split not verified:")
    assert "too wide" in result.verdict
    assert f"about {default_request_budget({'v1': 80, 'v2': 20}):,} requests" in result.verdict
    assert result.rows[0].status(result.tolerance) == "unclear"


def test_within_tolerance_but_wrong_ratio_fails_on_srm() -> None:
    result = check_split({"v1": 505_000, "v2": 495_000}, {"v1": 1, "v2": 1})
    assert result.tolerance_ok and not result.srm_ok and not result.ok
    assert "inside the tolerance, but not the configured ratio" in result.verdict


def test_three_way_verdict_names_the_offender() -> None:
    result = check_split({"a": 5_000, "b": 2_400, "c": 2_600}, {"a": 50, "b": 30, "c": 20})
    assert not result.ok
    # c is 600 over an expected 2,000, b 600 under 3,000: c has the larger standardized residual
    assert result.verdict.startswith("split mismatch: c served 26.0%")
    assert "b served 24.0%" in result.verdict and "a served" not in result.verdict
    assert result.srm.dof == 2
    # per-row p-values are one-vs-rest, so the well-behaved variant is not blamed
    assert result.rows[0].p_value is not None and result.rows[0].p_value > 0.5


def test_connection_unit_and_notes_appear_in_the_table() -> None:
    result = check_split({"v1": 16, "v2": 4}, {"v1": 80, "v2": 20}, unit="connections", notes=["sticky"])
    assert "total: 20 connections" in result.table()
    assert "note: sticky" in result.table()
    assert result.srm.method == "binomial"


def test_to_dict_is_json_ready() -> None:
    result = check_split({"v1": 7_000, "v2": 3_000, "unknown": 3}, {"v1": 80, "v2": 20})
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["ok"] is False and data["unit"] == "requests"
    assert [row["name"] for row in data["rows"]] == ["v1", "v2", "unknown"]
    assert data["srm"]["method"] == "chi2" and data["unexpected"] == ["unknown"]


def test_underflowing_p_value_is_reported_sensibly() -> None:
    result = check_split({"a": 1_000_000, "b": 0}, {"a": 1, "b": 1})
    assert result.srm.p_value == 0.0
    assert "p < 1e-300" in result.verdict


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"tolerance": 0.0}, "tolerance"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": "high"}, "confidence"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"unit": "bytes"}, "unit"),
        ({"method": "fisher"}, "method"),
    ],
)
def test_check_split_validates_arguments(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        check_split({"a": 1, "b": 1}, {"a": 1, "b": 1}, **kwargs)  # type: ignore[arg-type]


def test_check_split_validates_counts_and_weights() -> None:
    # weight 0 is legal (issue 15: "must get no traffic"); all zero or a negative weight is not
    with pytest.raises(ValueError, match="weights"):
        check_split({"a": 1}, {"a": 0, "b": 0})
    with pytest.raises(ValueError, match="weights"):
        check_split({"a": 1}, {"a": -1, "b": 1})
    with pytest.raises(ValueError, match="counts"):
        check_split({"a": -3}, {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="counts"):
        check_split([("a", 1)], {"a": 1, "b": 1})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# counting units


def test_counts_by_unit_requests_and_connections() -> None:
    records = [("v1", "c1")] * 5 + [("v2", "c2")] * 3 + [("v1", "c3")]
    assert counts_by_unit(records, "requests") == {"v1": 6, "v2": 3}
    assert counts_by_unit(iter(records), "connections") == {"v1": 2, "v2": 1}
    assert counts_by_unit([(None, "c9"), ("", "c8")], "requests") == {"unknown": 2}  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unit"):
        counts_by_unit(records, "users")  # type: ignore[arg-type]


def test_connection_served_by_two_versions_is_counted_per_pair_and_noted() -> None:
    records = [("v1", "c1"), ("v2", "c1"), ("v1", "c1"), ("v1", "c2")]
    tally = tally_units(records, "connections")
    assert tally.counts == {"v1": 2, "v2": 1}
    assert tally.mixed_connections == 1
    assert "1 of 2 connections" in tally.notes[0] and "per request" in tally.notes[0]
    assert tally_units(records, "requests").notes == ()


# ---------------------------------------------------------------------------------------------
# sequential test


def _log_bf_reference(x: list[int], p0: list[float], c: float) -> float:
    a = np.array(p0) * c
    xs = np.array(x, dtype=float)

    def log_b(v: np.ndarray) -> float:
        return float(special.gammaln(v).sum() - special.gammaln(v.sum()))

    return log_b(a + xs) - log_b(a) - float(np.sum(xs * np.log(p0)))


@pytest.mark.parametrize("weights", [{"a": 1, "b": 1}, {"a": 9, "b": 1}, {"a": 5, "b": 3, "c": 2}])
def test_sequential_log_bayes_factor_matches_the_formula(weights: dict[str, float]) -> None:
    shares = list(normalize_weights(weights).values())
    test = SequentialSplitTest(weights, concentration=300)
    rng = np.random.default_rng(7)
    x = np.zeros(len(weights), dtype=int)
    for _ in range(20):
        x += rng.multinomial(250, [0.45, 0.55] if len(weights) == 2 else [0.5, 0.25, 0.25])
        state = test.update(dict(zip(weights, x.tolist(), strict=True)))
        assert state.log_bayes_factor == pytest.approx(_log_bf_reference(x.tolist(), shares, 300), abs=1e-8)
        assert state.n == int(x.sum())


def test_sequential_detects_a_gross_mismatch_and_keeps_a_running_min_p() -> None:
    test = SequentialSplitTest({"v1": 80, "v2": 20})
    ps = []
    state = test.state
    for i in range(1, 60):
        state = test.update({"v1": 60 * i, "v2": 40 * i})
        ps.append(state.p_anytime)
        if state.decided:
            break
    assert state.verdict == "mismatch" and state.decided
    assert state.p_anytime <= 0.001 and state.decided_at == state.n
    assert "Bayes factor" in state.reason
    assert all(b <= a for a, b in itertools.pairwise(ps))


def test_sequential_concludes_holds_on_a_correct_split_and_agrees_with_intervals() -> None:
    test = SequentialSplitTest({"v1": 90, "v2": 10})
    state = test.state
    assert state.verdict == "undecided" and not state.decided
    for i in range(1, 400):
        state = test.update({"v1": 90 * i, "v2": 10 * i})
        if state.decided:
            break
    assert state.verdict == "holds"
    assert "confidence sequence" in state.reason
    for name, w in (("v1", 0.9), ("v2", 0.1)):
        lo, hi = test.intervals()[name]
        assert w - 0.02 < lo < w < hi < w + 0.02
    # one step earlier the sequences were not yet inside the margin
    earlier = SequentialSplitTest({"v1": 90, "v2": 10})
    earlier.update({"v1": 90 * (i - 1), "v2": 10 * (i - 1)})
    lo, hi = earlier.intervals()["v2"]
    assert lo <= 0.08 or hi >= 0.12
    # "holds" sticks through later undecided-looking updates, a mismatch overrides it
    state = test.update({"v1": 90 * i + 30, "v2": 10 * i + 30})
    assert state.verdict == "holds"
    state = test.update({"v1": 90 * i + 30, "v2": 10 * i + 3_000})
    assert state.verdict == "mismatch"


def test_sequential_unknown_version_is_an_immediate_mismatch() -> None:
    test = SequentialSplitTest({"v1": 1, "v2": 1})
    state = test.update({"v1": 10, "v2": 9, "unknown": 1})
    assert state.verdict == "mismatch" and state.p_anytime == 0.0 and state.n == 20
    assert "unknown" in state.reason


def test_sequential_validates() -> None:
    test = SequentialSplitTest({"v1": 1, "v2": 1})
    test.update({"v1": 10, "v2": 10})
    with pytest.raises(ValueError, match="cumulative"):
        test.update({"v1": 9, "v2": 12})
    for kwargs in ({"alpha": 1.0}, {"tolerance": -0.1}, {"confidence": 0.0}, {"concentration": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            SequentialSplitTest({"v1": 1, "v2": 1}, **kwargs)
    assert SequentialSplitTest({"v1": 1, "v2": 1}).intervals() == {"v1": (0.0, 1.0), "v2": (0.0, 1.0)}


def test_single_variant_split() -> None:
    """A 100% rollout: nothing to compare, but stray traffic and too little evidence still fail."""
    assert check_split({"v1": 10_000}, {"v1": 1}).ok
    few = check_split({"v1": 100}, {"v1": 1})  # the interval still reaches below 98%
    assert not few.ok and few.verdict.startswith("split not verified")
    need = default_request_budget({"v1": 1})
    assert check_split({"v1": need}, {"v1": 1}).ok and not check_split({"v1": need - 1}, {"v1": 1}).ok
    stray = check_split({"v1": 10_000, "v0": 400}, {"v1": 1})
    assert not stray.ok and stray.unexpected == ("v0",)


def test_sequential_single_variant_rollout() -> None:
    test = SequentialSplitTest({"v1": 1})
    assert test.update({"v1": 100}).verdict == "undecided"
    # holds once -ln(n + 1) - n ln(0.98) >= ln(1000): n = 664 (uniform-mixture confidence sequence)
    assert test.update({"v1": 663}).verdict == "undecided"
    state = test.update({"v1": 664})
    assert state.verdict == "holds" and state.decided_at == 664
    lo, hi = test.intervals()["v1"]
    assert 0.98 < lo < 1.0 and hi == 1.0
    assert test.update({"v1": 700, "v0": 1}).verdict == "mismatch"
