"""Fallback assertions on synthetic request records: each check can pass and can fail.

The simulator produces what the local proxy / Linkerd does to open-loop traffic: requests routed
to a killed backend wait in its queue and fail with 504 at the fail-fast timeout, then the
distributor skips that backend until it is back.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable

import pytest

from pytest_abtraffic._chaos import (
    FallbackExpectation,
    FallbackReport,
    Scenario,
    default_expectation,
    evaluate_fallback,
    parse_scenario,
)
from pytest_abtraffic._errors import FallbackAssertionError, SpecError
from pytest_abtraffic._fallback import retry_covers
from pytest_abtraffic._load import LoadResult, RequestRecord
from pytest_abtraffic._result import FaultWindow
from pytest_abtraffic._spec import (
    ExperimentSpec,
    FailureAccrual,
    FailurePolicy,
    RetryPolicy,
    default_spec,
    reference_variant,
)

# route(t, picked_version, rng) -> (served_version, status, latency_ms)
Route = Callable[[float, str, random.Random], tuple[str, int, float]]

FS, FE, FF = 2.0, 8.0, 1.0


def simulate(route: Route, *, seed: int = 7, rps: float = 1500.0, duration: float = 16.0,
             weights: tuple[tuple[str, float], ...] = (("v1", 0.5), ("v2", 0.5))) -> LoadResult:
    rng = random.Random(seed)
    names = [n for n, _ in weights]
    probs = [w for _, w in weights]
    records = []
    t = 0.0
    i = 0
    while True:
        t += rng.expovariate(rps)
        if t >= duration:
            break
        picked = rng.choices(names, probs)[0]
        version, status, latency = route(t, picked, rng)
        records.append(RequestRecord(t, version, status, latency, f"u{i % 10}", "" if status < 500 else "HTTPError"))
        i += 1
    return LoadResult(records=tuple(records), duration_s=duration, stopped_early=True, stop_reason="observer")


def normal(t: float, picked: str, rng: random.Random) -> tuple[str, int, float]:
    return picked, 200, 4.0 + rng.random() * 2


def kill_route(*, ff: float = FF, restart: float = 0.5, leftover_error_rate: float = 0.0,
               leftover_status: int = 503, after: tuple[str, ...] | None = None) -> Route:
    """kill v2 at FS, restart at FE (+restart delay); ``after`` = version choices after recovery."""

    def route(t: float, picked: str, rng: random.Random) -> tuple[str, int, float]:
        if FS <= t < FS + ff and picked == "v2":
            return "", 504, (FS + ff - t) * 1000.0  # queued until the fail-fast timeout
        if FS + ff <= t < FE + restart:
            if leftover_error_rate and rng.random() < leftover_error_rate:
                return "", leftover_status, 2.0
            return "v1", 200, 5.0
        if after is not None and t >= FE + restart:
            return rng.choice(after), 200, 5.0
        return normal(t, picked, rng)

    return route


def spec_with(**policy: object) -> ExperimentSpec:
    return default_spec(failure_policy=FailurePolicy(**{"fail_fast_timeout_s": FF, **policy}))  # type: ignore[arg-type]


KILL_WINDOW = (FaultWindow("kill v2", FS, FE),)


def kill_report(route: Route, expectation: FallbackExpectation | None = None, **sim: object) -> FallbackReport:
    spec = spec_with()
    scenario = parse_scenario("kill:v2", spec)
    return evaluate_fallback(simulate(route, **sim), scenario, KILL_WINDOW, spec, expectation)  # type: ignore[arg-type]


def failed_names(report: FallbackReport) -> set[str]:
    return {c.name for c in report.checks if not c.ok}


# -- the kill scenario end to end ----------------------------------------------------------------


def test_kill_falls_back_within_the_fail_fast_window_and_recovers() -> None:
    report = kill_report(kill_route())
    assert report.ok, report.message()
    assert report.time_to_fallback_s is not None
    assert 0.9 <= report.time_to_fallback_s <= FF + 0.05
    assert set(report.errors_by_status_during_fault) == {504}
    assert report.healthy_share_during_fault >= 0.99
    assert report.time_to_recover_s is not None and 0.4 <= report.time_to_recover_s <= 0.8
    assert report.post_recovery_split is not None and report.post_recovery_split.ok
    names = {c.name for c in report.checks}
    assert {"time_to_fallback", "errors_after_fallback", "healthy_share_after_fallback", "time_to_recover",
            "post_recovery_split", "error_statuses"} <= names


def test_a_fallback_threshold_tighter_than_fail_fast_fails_with_a_readable_timeline() -> None:
    spec = spec_with()
    scenario = parse_scenario("kill", spec)
    tight = default_expectation(spec, scenario).replace(max_time_to_fallback_s=0.2)
    report = evaluate_fallback(simulate(kill_route()), scenario, KILL_WINDOW, spec, tight)
    assert not report.ok
    assert failed_names(report) == {"time_to_fallback"}
    with pytest.raises(FallbackAssertionError) as info:
        report.raise_if_failed()
    text = str(info.value)
    assert text.startswith("fallback scenario 'kill:v2' FAILED 1 of")
    assert "time_to_fallback: observed 1.00 s, expected <= 0.20 s" in text or "observed 0.99 s" in text
    assert "fail-fast timeout (1 s)" in text
    assert "timeline:" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["s", "reqs"])
    assert header.split() == ["s", "reqs", "v1", "v2", "errors", "statuses", "fault"]
    row2 = next(line for line in lines if line.split()[:1] == ["2"])
    assert "# >> kill v2 @2.00s" in row2
    row3 = next(line for line in lines if line.split()[:1] == ["3"])
    assert "504x" in row3 and "fallback @" in row3


def test_no_fallback_fails_time_to_fallback_and_the_share_checks() -> None:
    def stuck(t: float, picked: str, rng: random.Random) -> tuple[str, int, float]:
        if FS <= t < FE and picked == "v2":
            return "", 504, 5.0  # v2 keeps its share and keeps failing: the mesh never moved traffic
        return normal(t, picked, rng)

    report = kill_report(stuck)
    assert report.time_to_fallback_s is None
    assert {"time_to_fallback", "errors_after_fallback", "healthy_share_after_fallback"} <= failed_names(report)
    assert "never stayed below 5.00% of requests" in report.message()


def test_errors_after_the_fail_fast_window_fail() -> None:
    report = kill_report(kill_route(leftover_error_rate=0.03, leftover_status=503))
    assert {"errors_after_fallback", "error_statuses"} <= failed_names(report)
    check = next(c for c in report.checks if c.name == "error_statuses")
    assert "503" in check.observed and "unexpected: 503" in check.detail


def test_a_wrong_split_after_recovery_fails_and_shows_the_table() -> None:
    report = kill_report(kill_route(after=("v1", "v1", "v1", "v1", "v2")))  # 80/20 instead of 50/50
    assert "post_recovery_split" in failed_names(report)
    assert report.post_recovery_split is not None and not report.post_recovery_split.ok
    assert "post-recovery split:" in report.message()


def test_no_recovery_fails_recovery_and_the_post_recovery_split() -> None:
    report = kill_report(kill_route(restart=100.0))
    assert report.time_to_recover_s is None
    assert {"time_to_recover", "post_recovery_split"} <= failed_names(report)
    assert "never got back" in report.message()


def test_a_slow_restart_beyond_the_allowance_fails() -> None:
    spec = spec_with()
    scenario = parse_scenario("kill", spec)
    exp = default_expectation(spec, scenario).replace(max_time_to_recover_s=0.2)
    report = evaluate_fallback(simulate(kill_route(restart=0.5)), scenario, KILL_WINDOW, spec, exp)
    assert failed_names(report) == {"time_to_recover"}


def test_a_fault_still_active_when_load_ended_cannot_show_recovery() -> None:
    spec = spec_with()
    scenario = parse_scenario("kill", spec)
    report = evaluate_fallback(simulate(kill_route(restart=100.0)), scenario, (FaultWindow("kill v2", FS, None),),
                               spec)
    assert report.time_to_fallback_s is not None  # the fallback part is still judged
    assert failed_names(report) == {"time_to_recover"}
    assert "still active when load ended" in report.message()


def test_too_few_requests_after_recovery_fail_the_split_check() -> None:
    report = kill_report(kill_route(), duration=FE + 1.2)
    check = next(c for c in report.checks if c.name == "post_recovery_split")
    assert not check.ok and "lengthen the recovery period" in check.detail


def test_planned_windows_are_used_when_none_were_recorded() -> None:
    spec = spec_with()
    scenario = parse_scenario([{"action": "kill", "variant": "v2", "at": FS, "duration": FE - FS}], spec)
    report = evaluate_fallback(simulate(kill_route()), scenario, (), spec)
    assert report.ok, report.message()
    assert any("planned times" in n for n in report.notes)


def test_a_step_that_was_not_applied_fails_fault_applied() -> None:
    spec = spec_with()
    scenario = parse_scenario("kill", spec)
    report = evaluate_fallback(simulate(kill_route()), scenario, (FaultWindow("weights v1=1", 1.0, 2.0),), spec)
    assert "fault_applied" in failed_names(report)


def test_report_serialises_to_json() -> None:
    report = kill_report(kill_route())
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["ok"] is True and doc["scenario"] == "kill:v2"
    assert doc["errors_by_status_during_fault"] == {"504": report.errors_by_status_during_fault[504]}
    assert len(doc["timeline"]) in (16, 17) and doc["timeline"][3]["in_fault"] is True  # + in-flight at the end
    assert doc["post_recovery_split"]["ok"] is True
    assert doc["expectation"]["allowed_error_statuses"] == [502, 504]
    assert {c["name"] for c in doc["checks"]} == {c.name for c in report.checks}


# -- other scenarios -------------------------------------------------------------------------------


def error_route(rate: float, *, retries: int = 0, status: int = 500, until: float = FE + 2) -> Route:
    """v2 fails ``rate`` of its requests; each retry re-picks the backend (50/50)."""

    def route(t: float, picked: str, rng: random.Random) -> tuple[str, int, float]:
        version = picked
        for _ in range(retries + 1):
            if not (FS <= t < until and version == "v2" and rng.random() < rate):
                return version, 200, 5.0
            version = rng.choice(("v1", "v2"))
        return "v2", status, 3.0

    return route


ERROR_WINDOW = (FaultWindow("error-rate v2 20% (500)", FS, FE + 2),)


def test_retries_mask_a_20_percent_error_rate_below_one_percent() -> None:
    spec = spec_with(retries=RetryPolicy(conditions="5xx", limit=2))
    scenario = parse_scenario("errors:v2", spec)
    exp = default_expectation(spec, scenario)
    assert exp.max_error_rate_during_fault == pytest.approx(0.01)
    masked = evaluate_fallback(simulate(error_route(0.2, retries=2)), scenario, ERROR_WINDOW, spec)
    assert masked.ok, masked.message()
    assert masked.error_rate_during_fault < 0.01
    unmasked = evaluate_fallback(simulate(error_route(0.2)), scenario, ERROR_WINDOW, spec)
    assert "error_rate_during_fault" in failed_names(unmasked)


def test_unmitigated_errors_pass_through_and_must_be_visible() -> None:
    spec = spec_with()
    scenario = parse_scenario("errors:v2", spec)
    report = evaluate_fallback(simulate(error_route(0.2)), scenario, ERROR_WINDOW, spec)
    assert report.ok, report.message()
    assert 0.07 < report.error_rate_during_fault < 0.13
    nothing = evaluate_fallback(simulate(normal), scenario, ERROR_WINDOW, spec)
    assert failed_names(nothing) == {"errors_visible_during_fault"}


def test_failure_accrual_ejection_needs_the_share_far_below_the_weight() -> None:
    spec = spec_with(failure_accrual=FailureAccrual())
    scenario = parse_scenario("errors:v2:1", spec)
    window = (FaultWindow(scenario.steps[0].label, FS, FE + 2),)

    def ejected(t: float, picked: str, rng: random.Random) -> tuple[str, int, float]:
        if FS <= t < FE + 2 and picked == "v2":
            return ("v2", 500, 2.0) if rng.random() < 0.02 else ("v1", 200, 5.0)
        return normal(t, picked, rng)

    report = evaluate_fallback(simulate(ejected), scenario, window, spec)
    assert report.ok, report.message()
    assert report.failed_share_during_fault < 0.02
    never_ejected = evaluate_fallback(simulate(error_route(1.0)), scenario, window, spec)
    assert "failed_variant_share_during_fault" in failed_names(never_ejected)


def test_latency_keeps_the_split_and_must_show_in_the_responses() -> None:
    spec = spec_with()
    scenario = parse_scenario("slow:v2:300ms", spec)
    window = (FaultWindow(scenario.steps[0].label, FS, FE),)

    def slow(t: float, picked: str, rng: random.Random) -> tuple[str, int, float]:
        if FS <= t < FE and picked == "v2":
            return "v2", 200, 305.0
        return normal(t, picked, rng)

    report = evaluate_fallback(simulate(slow), scenario, window, spec)
    assert report.ok, report.message()
    assert report.time_to_fallback_s is None
    not_slow = evaluate_fallback(simulate(normal), scenario, window, spec)
    assert failed_names(not_slow) == {"fault_latency_observed"}

    def moved(t: float, picked: str, rng: random.Random) -> tuple[str, int, float]:
        return ("v1", 200, 5.0) if FS <= t < FE else normal(t, picked, rng)

    assert "failed_variant_keeps_share" in failed_names(evaluate_fallback(simulate(moved), scenario, window, spec))


def test_a_weights_only_timeline_checks_errors_and_the_new_split() -> None:
    spec = spec_with()
    scenario = parse_scenario([{"action": "weights", "at": 2, "weights": {"v1": 90, "v2": 10}}], spec)
    window = (FaultWindow(scenario.steps[0].label, FS, None),)

    def shifted(t: float, picked: str, rng: random.Random) -> tuple[str, int, float]:
        if t >= FS:
            return ("v1" if rng.random() < 0.9 else "v2"), 200, 5.0
        return normal(t, picked, rng)

    report = evaluate_fallback(simulate(shifted), scenario, window, spec)
    assert report.ok, report.message()
    assert report.failed_variants == ()


# -- expectations ----------------------------------------------------------------------------------


def test_default_expectation_for_kill_follows_fail_fast() -> None:
    spec = default_spec()  # the documented 3 s fail-fast
    exp = default_expectation(spec, parse_scenario("kill", spec))
    assert exp.expect_fallback
    assert exp.max_time_to_fallback_s == pytest.approx(4.0)
    assert exp.error_grace_s == pytest.approx(4.0)
    assert exp.allowed_error_statuses == frozenset({502, 504})
    assert exp.max_error_rate_after_fallback == pytest.approx(0.01)
    assert exp.min_healthy_share_after_fallback == pytest.approx(0.99)
    assert exp.max_time_to_recover_s == pytest.approx(15.0)
    assert "fail-fast timeout (3 s)" in exp.reasons["max_time_to_fallback_s"]
    scale = default_expectation(spec, parse_scenario("scale-zero", spec))
    assert scale.allowed_error_statuses == frozenset({504})  # graceful: nothing in flight is cut


def test_default_expectation_for_unready_adds_probe_detection() -> None:
    spec = default_spec()
    scenario = parse_scenario("unready", spec)
    assert default_expectation(spec, scenario).max_time_to_fallback_s == pytest.approx(2.0 + 3.0 + 1.0)
    assert default_expectation(spec, scenario, detection_s=30.0).max_time_to_fallback_s == pytest.approx(34.0)


@pytest.mark.parametrize(("limit", "bound"), [(1, 0.02), (2, 0.01), (3, 0.01)])
def test_default_expectation_for_retried_errors(limit: int, bound: float) -> None:
    spec = default_spec(failure_policy=FailurePolicy(retries=RetryPolicy(limit=limit)))
    exp = default_expectation(spec, parse_scenario("errors:v2:0.2", spec))
    assert not exp.expect_fallback
    assert exp.max_error_rate_during_fault == pytest.approx(bound)


def test_retries_that_do_not_cover_the_status_do_not_mask() -> None:
    spec = default_spec(failure_policy=FailurePolicy(retries=RetryPolicy(conditions="gateway-error")))
    exp = default_expectation(spec, parse_scenario("errors:v2:0.2", spec))
    assert exp.min_error_rate_during_fault == pytest.approx(0.05)  # 500 is not a gateway error


def test_default_expectation_for_accrual() -> None:
    spec = default_spec(failure_policy=FailurePolicy(failure_accrual=FailureAccrual()))
    always = default_expectation(spec, parse_scenario("errors:v2:1", spec))
    assert always.expect_fallback and always.max_failed_share_fraction == pytest.approx(0.25)
    # penalty in force at the end <= min(60, 8 + 1) x 1.5, plus the detection margin
    assert always.max_time_to_recover_s == pytest.approx(9.0 * 1.5 + 1.0)
    sometimes = default_expectation(spec, parse_scenario("errors:v2:0.2", spec))
    assert not sometimes.expect_fallback and sometimes.max_failed_share_fraction is None


def test_default_expectation_for_latency_with_a_request_timeout() -> None:
    spec = default_spec(failure_policy=FailurePolicy(request_timeout_s=0.1))
    exp = default_expectation(spec, parse_scenario("slow:v2:250", spec))
    assert exp.max_error_rate_during_fault is None and exp.allowed_error_statuses == frozenset({504})
    assert exp.min_fault_latency_ms == pytest.approx(200.0)


def test_default_expectation_for_kill_one_with_replicas_left() -> None:
    spec = default_spec(variants=(reference_variant("v1"), dataclasses.replace(reference_variant("v2"), replicas=3)))
    exp = default_expectation(spec, parse_scenario("kill-one", spec))
    assert not exp.expect_fallback and exp.min_failed_share_fraction == pytest.approx(0.5)
    one = default_expectation(default_spec(), parse_scenario("kill-one", default_spec()))
    assert one.expect_fallback  # one replica: killing it empties the backend


def test_composite_timelines_get_the_most_lenient_combination() -> None:
    spec = default_spec()
    exp = default_expectation(spec, parse_scenario("kill:v2+slow:v1", spec))
    assert exp.expect_fallback
    assert exp.max_time_to_fallback_s == pytest.approx(4.0)
    assert exp.min_failed_share_fraction is None
    assert exp.min_healthy_share_after_fallback is None  # slow v1 sets none, so none is checked
    assert "kill v2" in exp.reasons["max_time_to_fallback_s"]


@pytest.mark.parametrize(("changes", "field"), [
    ({"fallback_fraction": 0.0}, "expectation.fallback_fraction"),
    ({"max_error_rate_after_fallback": 1.5}, "expectation.max_error_rate_after_fallback"),
    ({"max_time_to_fallback_s": -1.0}, "expectation.max_time_to_fallback_s"),
    ({"post_recovery_min_requests": 0}, "expectation.post_recovery_min_requests"),
    ({"post_recovery_confidence": 1.0}, "expectation.post_recovery_confidence"),
])
def test_expectation_validation_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        FallbackExpectation(**changes)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(("conditions", "status", "covered"), [
    ("5xx", 500, True), ("5xx", 404, False), ("gateway-error", 504, True), ("gateway-error", 500, False),
    ("500-504", 503, True), ("500-504", 505, False), ("502,503", 503, True), ("502,503", 500, False),
])
def test_retry_covers(conditions: str, status: int, covered: bool) -> None:
    assert retry_covers(conditions, status) is covered


def test_scenario_type_is_reexported() -> None:
    from pytest_abtraffic import _chaos

    assert _chaos.FallbackReport is FallbackReport and isinstance(parse_scenario("kill", default_spec()), Scenario)


# -- the exact time to fallback ------------------------------------------------------------------


def queued_504_after_a_good_answer() -> LoadResult:
    """What the CI run of 2026-12 recorded (test_kill_v2_fails_fast_then_serves_all_from_v1_then_recovers):
    every user stuck in v2's fail-fast queue (a quiet bucket), then the queue releases its 504s over a
    few milliseconds, and a user whose 504 came back first already has a v1 answer before the last 504
    completes. The last request that went to v2 is that last 504, 1.058 s after the kill."""
    records: list[RequestRecord] = []
    t = 0.0
    i = 0
    while t < FS:  # 2,000 rps at 50/50 before the fault
        records.append(RequestRecord(t, "v1" if i % 2 else "v2", 200, 0.4, f"u{i % 10}"))
        t += 0.0005
        i += 1
    records.append(RequestRecord(FS - 0.0003, "", 502, 0.5, "u0", "ConnectionError"))  # in flight on the killed v2
    for user in range(1, 10):  # queued for v2 at the kill, released at the fail-fast timeout
        latency_ms = (FF + 0.049 + 0.001 * (user - 1)) * 1000.0 if user != 9 else (FF + 0.058) * 1000.0
        records.append(RequestRecord(FS + 0.0001 * user, "", 504, latency_ms - 0.1 * user, f"u{user}", "HTTPError"))
    records.append(RequestRecord(FS + FF + 0.0492, "v1", 200, 0.3, "u1"))  # first good answer after the stall
    t = FS + FF + 0.0496
    while t < FE:
        records.append(RequestRecord(t, "v1", 200, 0.4, f"u{i % 10}"))
        t += 0.0005
        i += 1
    while t < FE + 6.0:
        records.append(RequestRecord(t, "v1" if i % 2 else "v2", 200, 0.4, f"u{i % 10}"))
        t += 0.0005
        i += 1
    return LoadResult(records=tuple(records), duration_s=FE + 6.0, stopped_early=True, stop_reason="observer")


def test_time_to_fallback_is_the_last_request_that_went_to_the_broken_variant() -> None:
    load = queued_504_after_a_good_answer()
    spec = spec_with()
    report = evaluate_fallback(load, parse_scenario("kill:v2", spec), KILL_WINDOW, spec)
    last_504 = max(r.t + r.latency_ms / 1000.0 for r in load.records if r.status == 504)
    assert report.time_to_fallback_s == pytest.approx(last_504 - FS, abs=1e-9)
    assert report.time_to_fallback_s == pytest.approx(FF + 0.058, abs=1e-3)
    # The bucket heuristic this replaced stopped at the first good answer of the first quiet bucket
    # (FF + 0.049 s), so the last 504 counted as "after fallback" and the CI test failed on it.
    after = [r for r in load.records if FS + report.time_to_fallback_s < r.t + r.latency_ms / 1000.0 < FE]
    assert after and all(r.ok and r.version == "v1" for r in after)
    assert report.healthy_share_during_fault == 1.0
    assert report.ok, report.message()
    ttf = next(c for c in report.checks if c.name == "time_to_fallback")
    assert "last request that went to v2" in ttf.detail


def test_a_stray_request_to_the_broken_variant_moves_the_fallback_instant() -> None:
    """One v2 answer late in the fault: traffic had not fallen back until then, so the exact time to
    fallback is that answer, and the deadline check fails instead of the stray being averaged away."""
    load = queued_504_after_a_good_answer()
    stray = RequestRecord(FS + 4.0, "v2", 200, 0.4, "u3")
    records = tuple(sorted((*load.records, stray), key=lambda r: r.t))
    spec = spec_with()
    report = evaluate_fallback(dataclasses.replace(load, records=records), parse_scenario("kill:v2", spec),
                               KILL_WINDOW, spec)
    assert report.time_to_fallback_s == pytest.approx(4.0004, abs=1e-6)
    assert failed_names(report) == {"time_to_fallback"}


def test_traffic_to_the_broken_variant_until_the_fault_ends_is_no_fallback() -> None:
    """With no hold after the last request to v2 there is no exact instant; the share rule decides."""
    load = queued_504_after_a_good_answer()
    strays = tuple(RequestRecord(FS + 1.2 + 0.25 * k, "v2", 200, 0.4, "u3") for k in range(int((FE - FS - 1.2) / 0.25)))
    records = tuple(sorted((*load.records, *strays), key=lambda r: r.t))
    spec = spec_with()
    report = evaluate_fallback(dataclasses.replace(load, records=records), parse_scenario("kill:v2", spec),
                               KILL_WINDOW, spec)
    ttf = next(c for c in report.checks if c.name == "time_to_fallback")
    # v2 gets ~0.5% of requests (under the 5% threshold): the share rule places the fallback after the
    # stall, and says how it was decided.
    assert report.time_to_fallback_s is not None and "below" in ttf.detail
