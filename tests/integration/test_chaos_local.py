"""Fault scenarios on the local backend under real Locust load: the fallback behaves as Linkerd's does.

Each run is short: the mechanism tests use a 1 s fail-fast timeout; one run keeps the documented
3 s default. The kill run's load is judged twice: once with the default expectation (passes) and
once with a fallback deadline the fail-fast window cannot meet (must fail, readably).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from _local_testkit import POST_RECOVERY_TOLERANCE, RECOVERY_S, seeded_backend  # noqa: F401 (fixture)

from pytest_abtraffic._chaos import (
    FallbackReport,
    Scenario,
    ScenarioObserver,
    ScenarioRunner,
    builtin_scenario,
    default_expectation,
    evaluate_fallback,
    parse_scenario,
)
from pytest_abtraffic._errors import FallbackAssertionError
from pytest_abtraffic._load import LoadPlan, LoadResult
from pytest_abtraffic._local import LocalBackend, LocalDeployment
from pytest_abtraffic._result import FaultWindow
from pytest_abtraffic._spec import ExperimentSpec, FailureAccrual, FailurePolicy, RetryPolicy, default_spec

# Checked without importing locust: importing it would gevent-patch this process.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="needs locust"),
]

USERS = 10


def deploy(backend: LocalBackend, **policy: Any) -> LocalDeployment:
    spec = default_spec(failure_policy=FailurePolicy(**policy))
    return backend.deploy(spec)


def run(dep: LocalDeployment, scenario: Scenario) -> tuple[LoadResult, tuple[FaultWindow, ...]]:
    """Load the deployment while the scenario runs; stop ``RECOVERY_S`` after its last step."""
    runner = ScenarioRunner(scenario)
    observer = ScenarioObserver(runner, dep, RECOVERY_S)
    # duration is only a backstop: the observer stops the load once the recovery period is over.
    plan = LoadPlan.from_spec(dep.spec, users=USERS, duration_s=scenario.end_s() + RECOVERY_S + 30.0)
    try:
        load = dep.run_load(plan, observer)
    finally:
        windows = runner.stop()
    return load, windows


def judge(load: LoadResult, scenario: Scenario, windows: tuple[FaultWindow, ...], spec: ExperimentSpec,
          **changes: Any) -> FallbackReport:
    exp = default_expectation(spec, scenario).replace(post_recovery_tolerance=POST_RECOVERY_TOLERANCE, **changes)
    return evaluate_fallback(load, scenario, windows, spec, exp)


def figures(name: str, report: FallbackReport, **extra: Any) -> None:
    split = report.post_recovery_split
    shares = {r.name: round(r.share, 4) for r in split.rows} if split is not None else None
    print(f"\nMEASURED {name}: " + json.dumps({
        "time_to_fallback_s": report.time_to_fallback_s, "time_to_recover_s": report.time_to_recover_s,
        "requests_during_fault": report.requests_during_fault,
        "error_rate_during_fault": round(report.error_rate_during_fault, 5),
        "errors_by_status_during_fault": dict(report.errors_by_status_during_fault),
        "healthy_share_after_fallback": round(report.healthy_share_during_fault, 4),
        "failed_share_during_fault": round(report.failed_share_during_fault, 4),
        "post_recovery_shares": shares, "post_recovery_n": split.total if split is not None else None, **extra}))


def done_s(r: Any) -> float:
    return float(r.t + r.latency_ms / 1000.0)


@pytest.fixture(scope="module")
def kill_run(backend: LocalBackend) -> tuple[LoadResult, Scenario, tuple[FaultWindow, ...], ExperimentSpec]:
    dep = deploy(backend, fail_fast_timeout_s=1.0)
    try:
        scenario = builtin_scenario("kill", dep.spec, "v2", at_s=1.5, duration_s=5.0)
        load, windows = run(dep, scenario)
        return load, scenario, windows, dep.spec
    finally:
        dep.teardown()


def test_kill_v2_fails_fast_then_serves_all_from_v1_then_recovers(kill_run: Any) -> None:
    load, scenario, windows, spec = kill_run
    report = judge(load, scenario, windows, spec)
    figures("kill fail_fast=1s", report)
    report.raise_if_failed()
    (window,) = windows
    assert window.end_s is not None
    exp = report.expectation
    assert exp is not None and exp.max_time_to_fallback_s is not None
    fault = [r for r in load.records if window.start_s <= done_s(r) < window.end_s]
    errors = [r for r in fault if not r.ok]
    # 504 (fail-fast) and 502 (requests in flight on the killed process) only, and only inside the
    # fail-fast window (+ the detection margin): a killed backend costs its queued requests, no more.
    assert errors and {r.status for r in errors} <= {502, 504}
    assert 504 in {r.status for r in errors}
    assert all(done_s(r) - window.start_s <= exp.max_time_to_fallback_s for r in errors)
    # Then 100% v1 with no errors until the fault ends.
    assert report.time_to_fallback_s is not None
    after = [r for r in fault if done_s(r) > window.start_s + report.time_to_fallback_s]
    assert len(after) > 500
    odd = [r for r in after if not (r.ok and r.version == "v1")]
    assert not odd, f"after fallback at {report.time_to_fallback_s:.2f}s: {odd[:5]} (window {window})"
    # And after the restart the split is back.
    assert report.time_to_recover_s is not None
    assert report.post_recovery_split is not None and report.post_recovery_split.ok


def test_a_fallback_deadline_tighter_than_fail_fast_fails_readably(kill_run: Any) -> None:
    load, scenario, windows, spec = kill_run
    report = judge(load, scenario, windows, spec, max_time_to_fallback_s=0.2)
    assert not report.ok
    assert [c.name for c in report.failed_checks] == ["time_to_fallback"]
    with pytest.raises(FallbackAssertionError) as info:
        report.raise_if_failed()
    text = str(info.value)
    first = text.splitlines()[0]
    assert first.startswith("fallback scenario 'kill:v2' FAILED 1 of") and "time to fallback" in first
    assert "expected <= 0.20 s" in text and "fail-fast timeout (1 s)" in text
    lines = text.splitlines()
    table = lines[lines.index("timeline:") + 1:]
    assert table[0].split() == ["s", "reqs", "v1", "v2", "errors", "statuses", "fault"]
    fault_rows = [line for line in table if "#" in line]
    assert any(">> kill v2" in line for line in fault_rows)
    assert any("504x" in line for line in fault_rows)
    assert any("fallback @" in line for line in table) and any("recovered @" in line for line in table)


def test_kill_with_the_documented_3s_fail_fast(backend: LocalBackend) -> None:
    """The documented default, through the runner as users run it (phases that end when decided; the
    fixed timeline is the kill_run above)."""
    from pytest_abtraffic._runner import VerifySettings, run_scenario

    dep = deploy(backend)  # fail_fast_timeout_s = 3.0, Linkerd's policy-controller default
    try:
        assert dep.spec.failure_policy.fail_fast_timeout_s == 3.0
        scenario = builtin_scenario("kill", dep.spec, "v2", duration_s=7.0)
        exp = default_expectation(dep.spec, scenario).replace(post_recovery_tolerance=POST_RECOVERY_TOLERANCE)
        result = run_scenario(dep, scenario, settings=VerifySettings(users=USERS, recovery_s=RECOVERY_S),
                              expectation=exp)
    finally:
        dep.teardown()
    report = result.fallback
    assert report is not None
    figures("kill fail_fast=3s", report)
    report.raise_if_failed()
    assert report.time_to_fallback_s is not None
    # Requests routed to the dead backend waited out the whole 3 s queue before their 504.
    assert report.time_to_fallback_s >= 2.5
    assert set(report.errors_by_status_during_fault) <= {502, 504}


def test_retries_mask_a_20_percent_error_rate(backend: LocalBackend) -> None:
    # limit 2: a retry re-picks the backend, so a request fails only if 3 attempts fail:
    # (50% x 20%)^3 = 0.1% expected (with Linkerd's default limit 1 it would be 1%, at the bound).
    dep = deploy(backend, fail_fast_timeout_s=1.0, retries=RetryPolicy(conditions="5xx", limit=2))
    try:
        scenario = parse_scenario([{"action": "error-rate", "variant": "v2", "at": 1.5, "duration": 5, "rate": 0.2}],
                                  dep.spec)
        load, windows = run(dep, scenario)
        counters = dep.mesh_counters()
        route = dep.proxy.counters()["route"]
    finally:
        dep.teardown()
    report = judge(load, scenario, windows, dep.spec)
    figures("errors 20% + retries(limit 2)", report, v2_500s=counters["v2"].responses_by_status.get(500, 0),
            retries=route["retries"])
    report.raise_if_failed()
    assert report.expectation is not None and report.expectation.max_error_rate_during_fault == pytest.approx(0.01)
    assert report.error_rate_during_fault < 0.01
    # The fault was real: v2 answered many 500s, and the proxy retried them.
    assert counters["v2"].responses_by_status.get(500, 0) > 100
    assert route["retries"] > 100


def test_failure_accrual_ejects_an_always_failing_variant(backend: LocalBackend) -> None:
    dep = deploy(backend, fail_fast_timeout_s=1.0, failure_accrual=FailureAccrual())
    try:
        scenario = parse_scenario([{"action": "error-rate", "variant": "v2", "at": 1.5, "duration": 6, "rate": 1.0}],
                                  dep.spec)
        load, windows = run(dep, scenario)
        route = dep.proxy.counters()["route"]
    finally:
        dep.teardown()
    report = judge(load, scenario, windows, dep.spec)
    figures("errors 100% + failure accrual", report, ejections=route["failure_accrual_ejections"])
    report.raise_if_failed()
    assert route["failure_accrual_ejections"] >= 1
    # Ejected: far below its 50% weight (every failure and every v2 response counted as v2 traffic).
    assert report.failed_share_during_fault < 0.125


# -- a failing test on a real deployment still leaves it restored ---------------------------------

PYTESTER_TEST = '''
import json, os, urllib.error, urllib.request
import pytest
from pytest_abtraffic._chaos import ScenarioRunner, parse_scenario
from pytest_abtraffic._local import LocalBackend
from pytest_abtraffic._spec import FailurePolicy, default_spec

BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()

def call(url):
    req = urllib.request.Request(url + "/predict", data=BODY, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("x-model-version")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("x-model-version")

@pytest.fixture
def dep():
    backend = LocalBackend(seed=3)
    try:
        d = backend.deploy(default_spec(failure_policy=FailurePolicy(fail_fast_timeout_s=1.0)))
        yield d
        observed = {"ready": {v: d.ready_endpoints(v) for v in ("v1", "v2")},
                    "responses": [call(d.target_url()) for _ in range(60)]}
        with open(os.environ["OBSERVED_FILE"], "w") as fh:
            json.dump(observed, fh)
    finally:
        backend.close()

def test_fails_in_the_middle_of_a_fault(dep):
    scenario = parse_scenario([{"action": "kill", "variant": "v2", "at": 0},
                               {"action": "error-rate", "variant": "v1", "at": 0, "rate": 1.0}], dep.spec)
    with ScenarioRunner(scenario).start(dep) as runner:
        assert runner.wait(10)
        assert dep.ready_endpoints("v2") == 0
        assert call(dep.target_url())[0] == 500
        assert False, "the model got worse"
'''


def test_a_failing_test_leaves_the_local_deployment_restored(pytester: pytest.Pytester, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    observed_file = tmp_path / "observed.json"
    monkeypatch.setenv("OBSERVED_FILE", str(observed_file))
    pytester.makepyfile(test_real_restore=PYTESTER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:locust", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the model got worse*"])
    observed = json.loads(observed_file.read_text())
    assert observed["ready"] == {"v1": 1, "v2": 1}  # the killed replica is back
    statuses = {status for status, _ in observed["responses"]}
    versions = {version for _, version in observed["responses"]}
    assert statuses == {200}  # v1's 100% error rate is cleared
    assert versions == {"v1", "v2"}
