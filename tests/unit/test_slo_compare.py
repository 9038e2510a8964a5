"""Unit tests of the SLO and candidate-vs-baseline judgments: parsing, intervals against scipy, verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from pytest_abtraffic._compare import (
    CompareSpec,
    check_compare,
    judge_error_delta,
    judge_latency_ratio,
    mann_whitney_effect,
    newcombe_interval,
    parse_compare,
)
from pytest_abtraffic._errors import ComparisonError, SloViolationError, SpecError
from pytest_abtraffic._report._json import validate_result_json
from pytest_abtraffic._slo import (
    SloLimit,
    check_slo,
    clopper_pearson,
    judge_error_rate,
    judge_latency,
    parse_slo,
    quantile_ranks,
    slo_min_requests,
)
from pytest_abtraffic._spec import spec_from_mapping


@dataclass(frozen=True)
class Rec:
    t: float
    version: str
    latency_ms: float
    status: int = 200

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400


# ---------------------------------------------------------------------------------------------
# parsing


def test_parse_slo_forms() -> None:
    assert parse_slo("p99_ms<=250, error_rate<=0.01") == (SloLimit("p99_ms", 250.0), SloLimit("error_rate", 0.01))
    assert parse_slo({"p50_ms": 20}) == (SloLimit("p50_ms", 20),)
    assert parse_slo("p95_ms<=30ms") == (SloLimit("p95_ms", 30.0),)
    assert parse_slo(None) == () == parse_slo("")


@pytest.mark.parametrize("text", ["p99<=250", "p99_ms>=250", "p99_ms<=abc", "error_rate<=1.5", "p50_ms<=-1",
                                  "p99_ms<=1,p99_ms<=2", "p99_ms<=nan"])
def test_parse_slo_rejects_bad_input(text: str) -> None:
    with pytest.raises(SpecError, match="slo"):
        parse_slo(text)


def test_parse_compare_forms_and_errors() -> None:
    spec = parse_compare("baseline=v1,latency_p95_ratio<=1.10,error_rate_delta<=0.005")
    assert spec == CompareSpec("v1", (("p95", 1.10),), 0.005)
    assert spec.label == "baseline=v1,latency_p95_ratio<=1.1,error_rate_delta<=0.005"
    assert parse_compare({"baseline": "v1", "error_rate_delta": 0.01}) == CompareSpec("v1", (), 0.01)
    for bad, match in [("latency_p95_ratio<=1.1", "baseline"), ("baseline=v1", "at least one"),
                       ("baseline=v1,latency_p97_ratio<=1.1", "unknown key"),
                       ("baseline=v1,latency_p95_ratio<=0", "positive"),
                       ("baseline=v1,disagreement<=1", "fraction"),
                       ("baseline=v1,disagreement<=-0.1", "fraction")]:
        with pytest.raises(SpecError, match=match):
            parse_compare(bad)


def test_spec_keys_and_unknown_baseline() -> None:
    spec = spec_from_mapping({"slo": {"p99_ms": 250, "error_rate": 0.01},
                              "compare": {"baseline": "v1", "latency_p95_ratio": 1.1},
                              "variants": [{"name": "v1", "weight": 50, "reference": True},
                                           {"name": "v2", "weight": 50, "reference": True, "extra_latency_ms": 20}]})
    assert spec.slo == (SloLimit("p99_ms", 250), SloLimit("error_rate", 0.01))
    assert spec.compare == CompareSpec("v1", (("p95", 1.1),))
    assert spec.variants[1].env["MODEL_EXTRA_LATENCY_MS"] == "20"
    with pytest.raises(SpecError, match=r"compare\.baseline"):
        spec_from_mapping({"compare": "baseline=v9,error_rate_delta<=0.01"})
    with pytest.raises(SpecError, match="extra_latency_ms"):
        spec_from_mapping({"variants": [{"name": "v1", "weight": 1, "extra_latency_ms": -5}]})


# ---------------------------------------------------------------------------------------------
# intervals against scipy


@pytest.mark.parametrize(("n", "q", "conf"), [(100, 0.5, 0.95), (1000, 0.99, 0.999), (50, 0.9, 0.99),
                                              (5000, 0.95, 0.999), (10, 0.5, 0.999), (700, 0.99, 0.999)])
def test_quantile_ranks_are_the_binomial_ones(n: int, q: float, conf: float) -> None:
    beta = (1 - conf) / 2
    ks = np.arange(1, n + 1)
    ok_u = ks[stats.binom.cdf(ks - 1, n, q) >= 1 - beta]
    ok_l = ks[stats.binom.sf(ks - 1, n, q) >= 1 - beta]
    assert quantile_ranks(n, q, conf) == (int(ok_l.max()) if ok_l.size else None,
                                          int(ok_u.min()) if ok_u.size else None)


@pytest.mark.parametrize(("x", "n", "conf"), [(0, 100, 0.999), (3, 100, 0.95), (10, 1000, 0.999), (50, 50, 0.99),
                                              (7, 700, 0.999), (1, 3, 0.9)])
def test_clopper_pearson_matches_the_beta_quantiles(x: int, n: int, conf: float) -> None:
    beta = (1 - conf) / 2
    lo, hi = clopper_pearson(x, n, conf)
    assert math.isclose(lo, stats.beta.ppf(beta, x, n - x + 1) if x else 0.0, rel_tol=1e-9, abs_tol=1e-15)
    assert math.isclose(hi, stats.beta.ppf(1 - beta, x + 1, n - x) if x < n else 1.0, rel_tol=1e-9)


def test_newcombe_matches_the_published_example() -> None:
    # Newcombe (1998), Stat Med 17:873, table II example (a): 56/70 vs 48/80, 95%: 0.0524 to 0.3339
    lo, hi = newcombe_interval(56, 70, 48, 80, 0.95)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_mann_whitney_effect_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.exponential(10, 300).round(1), rng.exponential(12, 200).round(1)  # rounded: ties
    u = stats.mannwhitneyu(a, b).statistic
    assert math.isclose(mann_whitney_effect(list(a), list(b)) or 0.0, u / (300 * 200), rel_tol=1e-12)


# ---------------------------------------------------------------------------------------------
# verdicts


def test_latency_check_statuses_and_messages() -> None:
    values = [float(v) for v in range(1, 1001)]  # p99 ~ 990
    assert judge_latency(values, "p99_ms", 2000, 0.999, "v1").status == "pass"
    fail = judge_latency(values, "p99_ms", 0.01, 0.999, "v2")
    assert fail.status == "fail"
    assert fail.describe(0.999).startswith("v2 p99_ms <= 0.01 ms: violated; observed 990 ms, 99.9% interval [")
    unclear = judge_latency(values, "p99_ms", 990, 0.999, "v1")
    assert unclear.status == "inconclusive" and "not enough requests to tell" in unclear.describe(0.999)
    few = judge_latency(values[:100], "p99_ms", 5000, 0.999, "v1")  # no upper bound at n = 100
    assert few.status == "inconclusive" and few.high is None and few.needed == 757
    assert judge_latency([], "p50_ms", 10, 0.999, "v1").status == "nodata"


def test_error_rate_check_statuses() -> None:
    assert judge_error_rate(0, 5000, 0.01, 0.999).status == "pass"
    assert judge_error_rate(200, 5000, 0.01, 0.999).status == "fail"
    assert judge_error_rate(0, 300, 0.01, 0.999).status == "inconclusive"  # 0/300: upper bound ~2.5%
    assert judge_error_rate(0, 0, 0.01, 0.999).status == "nodata"


def test_check_slo_is_per_version_and_overall_and_inconclusive_is_not_ok() -> None:
    recs = [Rec(i / 100, "v1", 5.0 + i % 10) for i in range(2000)] + [Rec(i / 100, "v2", 50.0 + i % 10)
                                                                      for i in range(2000)]
    recs += [Rec(1.0, "", 0.0, status=0)]  # a connection error: overall only
    report = check_slo(recs, parse_slo("p99_ms<=30,error_rate<=0.01"), confidence=0.999, versions=["v1", "v2"])
    by = {(c.scope, c.metric): c for c in report.checks}
    assert by["v1", "p99_ms"].status == "pass" and by["v2", "p99_ms"].status == "fail"
    assert by["overall", "error_rate"].n == 4001 and by["v1", "error_rate"].n == 2000
    assert not report.ok and report.verdict.startswith("slo violated: v2 p99_ms <= 30 ms: violated")
    with pytest.raises(SloViolationError, match="v2 p99_ms"):
        report.raise_if_failed()
    thin = check_slo(recs[:200], parse_slo("error_rate<=0.01"), confidence=0.999, versions=["v1", "v2"])
    assert not thin.ok and thin.verdict.startswith("slo not verified:")
    assert {c.status for c in thin.checks} == {"inconclusive", "nodata"}
    assert slo_min_requests(parse_slo("p99_ms<=1"), 0.999) == 757


def test_compare_checks_and_phase() -> None:
    base = [Rec(i / 100, "v1", 10.0 + (i * 7919) % 100 / 10) for i in range(3000)]
    slow = [Rec(i / 100, "v2", 30.0 + (i * 7919) % 100 / 10) for i in range(3000)]
    spec = parse_compare("baseline=v1,latency_p95_ratio<=1.10,error_rate_delta<=0.01")
    assert spec is not None
    report = check_compare(base + slow, spec, confidence=0.999, candidates=["v2"])
    lat = report.checks[0]
    assert lat.status == "fail" and lat.effect_size == 1.0
    assert "p95 v2 39.4 ms vs v1 19.4 ms, ratio 2.03" in report.verdict
    assert report.checks[1].status == "pass" and not report.ok
    with pytest.raises(ComparisonError, match="latency_p95_ratio"):
        report.raise_if_failed()
    same = check_compare(base + [Rec(r.t, "v2", r.latency_ms) for r in base], spec, confidence=0.999,
                         candidates=["v2"])
    assert same.ok, same.message()

    @dataclass(frozen=True)
    class W:
        start_s: float
        end_s: float | None

    # the slow stretch is inside a fault window: left out, the rest compares equal
    faulty = base + [Rec(r.t, "v2", r.latency_ms + (100.0 if 10 <= r.t < 20 else 0.0)) for r in base]
    windowed = check_compare(faulty, spec, confidence=0.999, candidates=["v2"], windows=[W(10.0, 20.0)])
    assert windowed.ok and windowed.excluded == 2000


def test_ratio_and_delta_edge_cases() -> None:
    assert judge_latency_ratio([], [1.0], "p95", 1.1, 0.999).status == "nodata"
    few = judge_latency_ratio([1.0] * 20, [1.0] * 20, "p99", 1.1, 0.999)
    assert few.status == "inconclusive" and few.high is None
    assert judge_error_delta(0, 0, 0, 10, 0.01, 0.999).status == "nodata"
    assert judge_error_delta(100, 1000, 0, 1000, 0.01, 0.999).status == "fail"


def test_result_json_with_slo_and_compare_validates() -> None:
    from pytest_abtraffic._load import LoadResult
    from pytest_abtraffic._load._results import RequestRecord
    from pytest_abtraffic._result import ExperimentResult

    records = tuple(RequestRecord(i / 100, "v1" if i % 2 else "v2", 200, 5.0 + i % 7, f"c{i % 4}")
                    for i in range(400))
    load = LoadResult(records=records, duration_s=4.0, stopped_early=False, stop_reason="budget")
    spec = parse_compare("baseline=v1,latency_p50_ratio<=1.5,error_rate_delta<=0.05")
    assert spec is not None
    result = ExperimentResult(
        name="x", backend="local", namespace="ns", variants=("v1", "v2"), expected_shares={"v1": 0.5, "v2": 0.5},
        split_api="httproute", load=load,
        slo=check_slo(records, parse_slo("p50_ms<=100,error_rate<=0.5"), confidence=0.999, versions=["v1", "v2"]),
        compare=check_compare(records, spec, confidence=0.999, candidates=["v2"]))
    data = result.to_dict()
    assert validate_result_json(data) == [] and validate_result_json(data, engine="builtin") == []
    assert data["slo"]["ok"] is True and data["compare"]["checks"][0]["metric"] == "latency_p50_ratio"
