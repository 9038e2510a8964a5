"""Adaptive fault phases: the runner fires steps early on request, and each phase ends only when decided."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import pytest
from test_scenarios import FakeDeployment

from pytest_abtraffic._chaos import ScenarioRunner, builtin_scenario, default_expectation, evaluate_fallback
from pytest_abtraffic._fallback import FALLBACK_HOLD_REQUESTS, FALLBACK_HOLD_S
from pytest_abtraffic._load import LoadResult, RequestRecord
from pytest_abtraffic._phases import AdaptivePhases, PhaseRules, _rate_decided, fixed_timeline_reason
from pytest_abtraffic._result import FaultWindow
from pytest_abtraffic._spec import FailurePolicy, default_spec

SPEC = default_spec(failure_policy=FailurePolicy(fail_fast_timeout_s=1.0))


# -- the runner ------------------------------------------------------------------------------------


def test_fire_now_applies_a_step_early_and_moves_its_undo_by_as_much() -> None:
    scenario = builtin_scenario("kill", SPEC, "v2", at_s=2.0, duration_s=0.3)
    dep = FakeDeployment(SPEC)
    runner = ScenarioRunner(scenario).start(dep)  # type: ignore[arg-type]
    try:
        time.sleep(0.05)
        runner.fire_now(0, undo=False)
        assert runner.wait(5.0)
        (window,) = runner.windows
        assert window.start_s < 0.5  # not at the planned 2 s
        assert window.end_s is not None and 0.25 <= window.end_s - window.start_s < 1.0  # the duration kept
    finally:
        runner.stop()


def test_fire_now_ends_a_fault_early_and_ignores_requests_for_events_already_past() -> None:
    scenario = builtin_scenario("kill", SPEC, "v2", at_s=0.0, duration_s=30.0)
    dep = FakeDeployment(SPEC)
    runner = ScenarioRunner(scenario).start(dep)  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 5.0
        while not runner.windows and time.monotonic() < deadline:
            time.sleep(0.01)
        runner.fire_now(0, undo=False)  # already applied: must not undo it
        time.sleep(0.1)
        assert runner.windows[0].end_s is None
        runner.fire_now(0, undo=True)
        assert runner.wait(5.0)
        assert runner.windows[0].end_s is not None and runner.windows[0].end_s < 2.0
    finally:
        runner.stop()


# -- the controller, on synthetic records ------------------------------------------------------------


@dataclass
class FakeRunner:
    now: float = 0.0
    windows: tuple[FaultWindow, ...] = ()
    fired: list[tuple[int, bool]] = field(default_factory=list)

    def elapsed(self) -> float:
        return self.now

    def fire_now(self, index: int, *, undo: bool) -> None:
        self.fired.append((index, undo))
        if not undo:
            self.windows = (FaultWindow("kill v2", self.now, None),)
        else:
            self.windows = (FaultWindow("kill v2", self.windows[0].start_s, self.now),)


USERS = 10


class Traffic:
    """Closed-loop users, each sending its next request when the previous one returns."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.records: list[RequestRecord] = []
        self.busy_until = [0.0] * USERS

    def run(self, until: float, route: object, *, skip: frozenset[int] = frozenset()) -> None:
        while True:
            user = min((u for u in range(USERS) if u not in skip), key=lambda u: self.busy_until[u])
            t = self.busy_until[user]
            if t >= until:
                return
            version, status, latency_ms = route(t, self.rng)  # type: ignore[operator]
            self.records.append(RequestRecord(t, version, status, latency_ms, f"u{user}"))
            self.busy_until[user] = t + latency_ms / 1000.0

    def visible(self, now: float) -> tuple[RequestRecord, ...]:
        return tuple(sorted((r for r in self.records if r.t + r.latency_ms / 1000.0 <= now),
                            key=lambda r: r.t + r.latency_ms / 1000.0))


def healthy_split(t: float, rng: random.Random) -> tuple[str, int, float]:
    return rng.choice(("v1", "v2")), 200, 2.0


def only_v1(t: float, rng: random.Random) -> tuple[str, int, float]:
    return "v1", 200, 2.0


def phases(**rules: object) -> AdaptivePhases:
    scenario = builtin_scenario("kill", SPEC, "v2")
    exp = default_expectation(SPEC, scenario).replace(post_recovery_tolerance=0.08)
    return AdaptivePhases(scenario, SPEC, exp, users=USERS, recovery_s=5.0, rules=PhaseRules(**rules))  # type: ignore[arg-type]


def test_the_baseline_ends_once_every_user_answered_and_each_variant_was_seen() -> None:
    ctl, runner, traffic = phases(), FakeRunner(), Traffic()
    traffic.run(1.0, healthy_split, skip=frozenset({9}))  # user 9 has not started yet
    runner.now = 1.0
    assert ctl.on_progress(runner, traffic.visible(1.0)) is False
    assert runner.fired == []
    traffic.run(1.1, healthy_split)
    runner.now = 1.1
    ctl.on_progress(runner, traffic.visible(1.1))
    assert runner.fired == [(0, False)] and "baseline ended" in ctl.notes[0]


def test_the_fault_phase_waits_for_a_queued_request_still_to_fail() -> None:
    """After the first 502s every user but one answers from v1; that one waits in v2's fail-fast
    queue. Its 504 is still to come, so the fallback has not held, however long the others answer."""
    ctl, runner, traffic = phases(), FakeRunner(), Traffic()
    traffic.run(1.0, healthy_split)
    runner.now = 1.0
    ctl.on_progress(runner, traffic.visible(1.0))
    fault_start = runner.windows[0].start_s
    # user 3 queued for v2 at the kill: its 504 comes at the fail-fast timeout (1 s)
    traffic.records.append(RequestRecord(fault_start + 0.001, "", 504, 1000.0, "u3"))
    traffic.busy_until[3] = fault_start + 1.001
    traffic.records.append(RequestRecord(fault_start - 0.001, "", 502, 1.5, "u4"))  # in flight on the killed v2
    traffic.run(fault_start + 0.9, only_v1, skip=frozenset({3}))
    for now in (fault_start + 0.6, fault_start + 0.9):
        runner.now = now
        ctl.on_progress(runner, traffic.visible(now))
        assert runner.fired == [(0, False)], "ended the fault before the queued 504"
    traffic.run(fault_start + 1.8, only_v1)
    now = fault_start + 1.8
    runner.now = now
    ctl.on_progress(runner, traffic.visible(now))
    assert runner.fired == [(0, False), (0, True)]
    assert "fallback held" in ctl.notes[-1] and "1.00 s after the fault started" in ctl.notes[-1]


def test_the_fault_phase_does_not_end_before_the_hold() -> None:
    ctl, runner, traffic = phases(), FakeRunner(), Traffic()
    traffic.run(1.0, healthy_split)
    runner.now = 1.0
    ctl.on_progress(runner, traffic.visible(1.0))
    fault_start = runner.windows[0].start_s
    traffic.run(fault_start + FALLBACK_HOLD_S * 0.9, only_v1)
    runner.now = fault_start + FALLBACK_HOLD_S * 0.9
    ctl.on_progress(runner, traffic.visible(runner.now))
    assert runner.fired == [(0, False)]
    assert len(traffic.visible(runner.now)) > FALLBACK_HOLD_REQUESTS  # the time, not the count, held it back


def test_recovery_ends_on_the_sequential_verdict_and_the_evaluation_judges_those_counts() -> None:
    ctl, runner, traffic = phases(), FakeRunner(), Traffic()
    traffic.run(1.0, healthy_split)
    runner.now = 1.0
    ctl.on_progress(runner, traffic.visible(1.0))
    fs = runner.windows[0].start_s
    traffic.run(fs + 1.0, only_v1)
    runner.now = fs + 1.0
    ctl.on_progress(runner, traffic.visible(runner.now))
    fe = runner.windows[0].end_s
    assert fe is not None
    stopped = False
    now = fe
    while not stopped and now < fe + 5.0:
        now += 0.1
        traffic.run(now, healthy_split)
        runner.now = now
        stopped = ctl.on_progress(runner, traffic.visible(now))
    assert stopped and ctl.decision is not None and ctl.decision.decided and ctl.decision.verdict == "holds"
    load = LoadResult(records=traffic.visible(now), duration_s=now, stopped_early=True, stop_reason="observer")
    scenario = ctl.scenario
    report = evaluate_fallback(load, scenario, runner.windows, SPEC, ctl.expectation, post_recovery=ctl.decision,
                               phase_notes=ctl.notes)
    assert report.ok, report.message()
    assert report.post_recovery_split is not None
    assert report.post_recovery_split.total == sum(ctl.decision.counts.values())
    assert any("closed by the sequential test" in n for n in report.notes)


def test_recovery_runs_to_its_deadline_when_the_variant_never_comes_back() -> None:
    ctl, runner, traffic = phases(), FakeRunner(), Traffic()
    traffic.run(1.0, healthy_split)
    runner.now = 1.0
    ctl.on_progress(runner, traffic.visible(1.0))
    fs = runner.windows[0].start_s
    traffic.run(fs + 1.0, only_v1)
    runner.now = fs + 1.0
    ctl.on_progress(runner, traffic.visible(runner.now))
    fe = runner.windows[0].end_s
    assert fe is not None
    traffic.run(fe + 4.9, only_v1)
    runner.now = fe + 4.9
    assert ctl.on_progress(runner, traffic.visible(runner.now)) is False
    traffic.run(fe + 5.0, only_v1)
    runner.now = fe + 5.0
    assert ctl.on_progress(runner, traffic.visible(runner.now)) is True
    assert ctl.decision is None and "deadline" in ctl.notes[-1]


def test_timelines_that_keep_the_fixed_timeline_say_why() -> None:
    kill = builtin_scenario("kill", SPEC, "v2")
    assert fixed_timeline_reason(kill, default_expectation(SPEC, kill)) is None
    endless = builtin_scenario("kill", SPEC, "v2")
    endless = type(endless)(endless.name, (type(endless.steps[0])("kill", "v2", 1.0, None),), "")
    exp = default_expectation(SPEC, endless)
    assert fixed_timeline_reason(endless, exp) is not None
    with pytest.raises(ValueError, match="cannot run adaptively"):
        AdaptivePhases(endless, SPEC, exp, users=1, recovery_s=1.0)


# -- the early decision on a rate, simulated ---------------------------------------------------------


def _early_verdict(rng: random.Random, p: float, bound: float, looks: int, per_look: int, z: float) -> bool | None:
    """Looks at a growing sample; the first decided look's verdict (rate <= bound), else None."""
    k = n = 0
    for _ in range(looks):
        k += sum(1 for _ in range(per_look) if rng.random() < p)
        n += per_look
        if _rate_decided(k, n, bound, z):
            return k / n <= bound
    return None


@pytest.mark.parametrize(("p", "bound", "expected", "min_decided"), [
    # far from the bound: decided early in (almost) every run
    (0.001, 0.01, True, 1900), (0.03, 0.01, False, 1990), (0.06, 0.1, True, 1900), (0.15, 0.1, False, 1990),
    # close to it: often undecided (the phase then runs to its planned end), never wrong
    (0.005, 0.01, True, 0), (0.02, 0.01, False, 1800), (0.08, 0.1, True, 0), (0.12, 0.1, False, 1000),
])
def test_an_early_decision_almost_never_contradicts_the_truth(p: float, bound: float, expected: bool,
                                                              min_decided: int) -> None:
    """2,000 simulated fault phases of 20 looks at 250 more requests each, z = 4.42 (the default): the
    rate check's early verdict is never wrong (a pass for a rate above its bound, or the reverse), and
    the share of runs decided early (the power of ending early) is at least ``min_decided``/2,000 at the
    stated effect. Where it does not decide, the phase keeps its planned length, as before."""
    rng = random.Random(2026)
    z = PhaseRules().decision_z
    verdicts = [_early_verdict(rng, p, bound, looks=20, per_look=250, z=z) for _ in range(2000)]
    wrong = sum(1 for v in verdicts if v is not None and v != expected)
    decided = sum(1 for v in verdicts if v is not None)
    print(f"\nMEASURED early rate decision p={p} bound={bound}: wrong {wrong}/2000, decided {decided}/2000")
    assert wrong == 0
    assert decided >= min_decided


# -- the main job's one load run ---------------------------------------------------------------------


def test_the_scenario_part_of_one_run_keeps_only_its_baseline_second_on_its_own_clock() -> None:
    from pytest_abtraffic._mainjob import _shifted

    records = [RequestRecord(t / 10, "v1", 200, 50.0, "u0") for t in range(100)]  # 0.0 .. 9.9 s, 50 ms each
    part = _shifted(records, 8.0)
    # Requests that completed before the scenario's time 0 are left to the split; one in flight across
    # it is kept (sent at -0.0 s on the scenario's clock).
    assert [round(r.t, 3) for r in part][:3] == [0.0, 0.1, 0.2]
    assert len(part) == 20


def test_one_run_only_where_it_judges_the_same() -> None:
    from pytest_abtraffic._mainjob import can_share_one_run
    from pytest_abtraffic._runner import VerifySettings

    class Dep:
        def __init__(self, backend_name: str, spec: object) -> None:
            self.backend_name = backend_name
            self.spec = spec

    kill = builtin_scenario("kill", SPEC, "v2")
    assert can_share_one_run(Dep("local", SPEC), kill, VerifySettings())  # type: ignore[arg-type]
    assert not can_share_one_run(Dep("kind", SPEC), kill, VerifySettings())  # type: ignore[arg-type]
    assert not can_share_one_run(Dep("local", SPEC), kill, VerifySettings(early_stop=False))  # type: ignore[arg-type]
    endless = type(kill)(kill.name, (type(kill.steps[0])("kill", "v2", 1.0, None),), "")
    assert not can_share_one_run(Dep("local", SPEC), endless, VerifySettings())  # type: ignore[arg-type]


def test_the_hold_is_counted_on_the_runners_clock_so_the_evaluation_sees_it_too() -> None:
    """Found in a suite run (examples' kill:v2, 2026-12): the records' clock ran ahead of the runner's,
    so the phase ended with 0.5 s of hold on the records' clock but less up to the recorded fault end,
    the evaluation found no held fallback, fell back to the share rule and counted the 504s as after
    the fallback. The hold must be there on the clock the fault's end is recorded with."""
    ctl, runner, traffic = phases(), FakeRunner(), Traffic()
    traffic.run(1.0, healthy_split)
    runner.now = 1.0
    ctl.on_progress(runner, traffic.visible(1.0))
    fs = runner.windows[0].start_s
    traffic.run(fs + 0.8, only_v1)
    runner.now = fs + FALLBACK_HOLD_S * 0.9  # the records reach fs + 0.8, the runner's clock does not
    ctl.on_progress(runner, traffic.visible(fs + 0.8))
    assert runner.fired == [(0, False)]
    runner.now = fs + FALLBACK_HOLD_S + 0.01
    ctl.on_progress(runner, traffic.visible(fs + 0.8))
    assert runner.fired == [(0, False), (0, True)]
    (window,) = runner.windows
    assert window.end_s is not None
    load = LoadResult(records=traffic.visible(fs + 0.8), duration_s=fs + 0.8, stopped_early=True,
                      stop_reason="observer")
    report = evaluate_fallback(load, ctl.scenario, runner.windows, SPEC, ctl.expectation)
    ttf = next(c for c in report.checks if c.name == "time_to_fallback")
    assert "last request that went to v2" in ttf.detail  # the exact rule, not the share rule
