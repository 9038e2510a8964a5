"""Every built-in fault scenario on the local backend with phases that end when decided.

The guarantees are those of the fixed timeline (``test_chaos_local.py`` keeps that one): each
scenario's default expectation passes, and the adaptive run ends its phases early, says why, and
is shorter than the planned timeline. A 1 s fail-fast timeout keeps the runs short; the main job's
3 s default is covered by ``test_cli_verify.py``.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
from _local_testkit import POST_RECOVERY_TOLERANCE, RECOVERY_S, seeded_backend  # noqa: F401 (fixture)

from pytest_abtraffic._chaos import builtin_scenario, default_expectation
from pytest_abtraffic._load import LoadPlan
from pytest_abtraffic._local import LocalBackend
from pytest_abtraffic._runner import VerifySettings, run_scenario
from pytest_abtraffic._spec import FailurePolicy, default_spec, reference_variant

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="needs locust"),
]

# POST_RECOVERY_TOLERANCE: the sequential test decides the +-8 point window in ~600-1,200 requests.


@pytest.mark.parametrize("name", ["kill", "kill-one", "scale-zero", "errors", "slow", "unready"])
def test_builtin_scenario_passes_with_phases_that_end_when_decided(backend: LocalBackend, name: str) -> None:
    # kill-one on a variant with two replicas keeps the variant in the split (the other case of kill-one,
    # the only replica, is the kill case).
    replicas = 2 if name == "kill-one" else 1
    spec = default_spec(failure_policy=FailurePolicy(fail_fast_timeout_s=1.0),
                        variants=(reference_variant("v1"), dataclasses.replace(reference_variant("v2"),
                                                                             replicas=replicas)))
    dep = backend.deploy(spec)
    try:
        scenario = builtin_scenario(name, dep.spec, "v2")
        exp = default_expectation(dep.spec, scenario).replace(post_recovery_tolerance=POST_RECOVERY_TOLERANCE)
        result = run_scenario(dep, scenario, settings=VerifySettings(users=10, recovery_s=RECOVERY_S),
                              expectation=exp, plan=LoadPlan.from_spec(dep.spec))
    finally:
        dep.teardown()
    report = result.fallback
    assert report is not None
    print(f"\nMEASURED {name}: load {result.load.duration_s:.2f} s of planned {scenario.end_s() + RECOVERY_S:g} s; "
          f"ttf {report.time_to_fallback_s}; ttr {report.time_to_recover_s}; notes {list(report.notes)}")
    assert report.ok, report.message()
    notes = " | ".join(report.notes)
    assert "baseline ended" in notes and "recovery phase ended" in notes, notes
    (window,) = result.fault_windows
    assert window.start_s < scenario.steps[0].at_s and window.end_s is not None
    if name == "slow":
        # 250 ms answers from half the requests: ~80 requests/s, too few in 6 s to show "no errors"
        # (<= 1%) at the decision's 1e-5 level (0 errors need ~1,950 requests), so the fault runs its course.
        assert "fault phase ran to its planned end" in notes and "rates not yet clear" in notes, notes
    else:
        assert "fault phase ended" in notes, notes
        assert window.end_s - window.start_s < (scenario.steps[0].duration_s or 0.0)
    assert result.load.duration_s < scenario.end_s() + RECOVERY_S
    assert report.post_recovery_split is not None and report.post_recovery_split.ok
