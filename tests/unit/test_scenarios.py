"""Fault scenarios: parsing and validation (errors name their field), built-ins, and the timeline
runner against a fake Deployment that records every call (order, undo, restore on failure)."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_abtraffic._backend import FaultSettings
from pytest_abtraffic._chaos import (
    BUILTIN_SCENARIOS,
    FaultStep,
    Scenario,
    ScenarioObserver,
    ScenarioRunner,
    parse_scenario,
    scenario_from_spec,
)
from pytest_abtraffic._errors import SpecError
from pytest_abtraffic._result import FaultWindow
from pytest_abtraffic._spec import ExperimentSpec, Variant, default_spec, reference_variant, spec_from_mapping

SPEC = default_spec()


class FakeDeployment:
    """Implements the Deployment chaos primitives in memory and records each call."""

    backend_name = "fake"
    namespace = "fake-ns"

    def __init__(self, spec: ExperimentSpec = SPEC, *, fail_on: str | None = None) -> None:
        self._deployed = spec
        self._spec = spec
        self.fail_on = fail_on
        self.calls: list[tuple[Any, ...]] = []
        self.replicas = {v.name: v.replicas for v in spec.variants}
        self.faults: dict[str, dict[str, Any]] = {v.name: {} for v in spec.variants}
        self.restores = 0
        self._lock = threading.Lock()

    @property
    def spec(self) -> ExperimentSpec:
        return self._spec

    def _call(self, *call: Any) -> None:
        with self._lock:
            self.calls.append(call)
        if self.fail_on is not None and call[0] == self.fail_on:
            raise RuntimeError(f"{call[0]} failed on purpose")

    def kill(self, variant: str, count: int | None = None) -> int:
        self._call("kill", variant, count)
        killed = self.replicas[variant] if count is None else min(count, self.replicas[variant])
        self.replicas[variant] -= killed
        return killed

    def scale(self, variant: str, replicas: int) -> None:
        self._call("scale", variant, replicas)
        self.replicas[variant] = replicas

    def set_fault(self, variant: str, fault: FaultSettings) -> None:
        self._call("set_fault", variant, fault.to_json())
        self.faults[variant].update(fault.to_json())

    def set_weights(self, weights: Mapping[str, int | str]) -> None:
        self._call("set_weights", dict(weights))
        self._spec = self._spec.with_weights(weights)

    def restore(self) -> None:
        self._call("restore")
        self.restores += 1
        self.replicas = {v.name: v.replicas for v in self._deployed.variants}
        self.faults = {v.name: {} for v in self._deployed.variants}
        self._spec = self._deployed

    def ready_endpoints(self, variant: str) -> int:
        return self.replicas[variant]

    def active_faults(self) -> dict[str, dict[str, Any]]:
        """Faults still switched on (non-zero rate/latency, unready)."""
        return {v: {k: x for k, x in f.items() if x not in (0, 0.0, False, None, 500)}
                for v, f in self.faults.items() if any(x not in (0, 0.0, False, None, 500) for x in f.values())}


def run_to_end(scenario: Scenario, dep: FakeDeployment) -> tuple[FaultWindow, ...]:
    runner = ScenarioRunner(scenario).start(dep)  # type: ignore[arg-type]
    assert runner.wait(10.0), "timeline did not finish"
    return runner.stop()


# -- built-ins and text -----------------------------------------------------------------------


def test_builtins_target_the_last_variant_by_default() -> None:
    assert set(BUILTIN_SCENARIOS) == {"kill", "kill-one", "scale-zero", "errors", "slow", "unready"}
    for name, factory in BUILTIN_SCENARIOS.items():
        scenario = factory(SPEC, "v2")
        assert scenario.name == f"{name}:v2"
        (step,) = scenario.steps
        assert step.variant == "v2" and step.at_s == 2.0
        assert step.duration_s is not None and 6.0 <= step.duration_s <= 8.0
        assert parse_scenario(name, SPEC) == scenario


@pytest.mark.parametrize(("text", "action", "variant", "value"), [
    ("kill", "kill", "v2", None),
    ("kill:v1", "kill", "v1", None),
    ("KILL-ONE:v2:1", "kill-one", "v2", 1),
    ("scale-zero", "scale", "v2", 0),
    ("errors", "error-rate", "v2", 0.2),
    ("errors:v2:1", "error-rate", "v2", 1.0),
    ("errors:v1:35%", "error-rate", "v1", 0.35),
    ("slow:v2:500ms", "latency", "v2", 500.0),
    ("slow:v2:1s", "latency", "v2", 1000.0),
    ("slow::120", "latency", "v2", 120.0),
    ("unready", "unready", "v2", None),
])
def test_text_forms(text: str, action: str, variant: str, value: object) -> None:
    (step,) = parse_scenario(text, SPEC).steps
    assert (step.action, step.variant, step.value) == (action, variant, value)


def test_text_scenarios_compose_with_plus() -> None:
    scenario = parse_scenario("kill:v2+slow:v1", SPEC)
    assert scenario.name == "kill:v2+slow:v1"
    assert [s.label for s in scenario.steps] == ["kill v2", "latency v1 +250ms"]
    with pytest.raises(SpecError, match="overlaps"):
        parse_scenario("kill:v2+scale-zero:v2", SPEC)


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected NAME"),
    ("explode", "unknown scenario 'explode'"),
    ("kill:v9", "unknown variant 'v9'"),
    ("kill:v2:3", "takes no value"),
    ("errors:v2:lots", "not a number"),
    ("errors:v2:1.5", "error rate must be a number in (0, 1]"),
    ("kill-one:v2:0", "replicas to kill"),
    ("kill+", "expected NAME"),
])
def test_bad_text_names_the_option(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_scenario(text, SPEC, field="--fallback")
    assert info.value.field == "--fallback"
    assert message in info.value.message


# -- step lists (the spec file's scenarios:) -----------------------------------------------------


def test_step_list_with_every_action() -> None:
    scenario = parse_scenario([
        {"action": "kill", "variant": "v2", "at": "2s", "duration": 3},
        {"action": "kill-one", "variant": "v1", "at": 0, "for": "500ms", "count": 1},
        {"action": "scale", "variant": "v2", "at": 6, "duration": 1, "replicas": 0},
        {"action": "error_rate", "variant": "v1", "at": 1, "duration": 2, "rate": 0.5, "status": 503},
        {"action": "latency", "variant": "v2", "at": 1, "latency": "300ms", "jitter": 50},
        {"action": "unready", "variant": "v1", "at": 4, "duration": 1},
        {"action": "weights", "at": 0.5, "duration": 1, "weights": {"v1": 90, "v2": 10}},
        {"scenario": "errors:v1:1", "at": 9, "duration": 2},
    ], SPEC)
    steps = {s.action + ":" + s.variant: s for s in scenario.steps}
    assert steps["kill:v2"].at_s == 2.0 and steps["kill:v2"].duration_s == 3.0
    assert steps["kill-one:v1"].duration_s == 0.5
    assert steps["scale:v2"].count() == 0
    assert steps["error-rate:v1"].error_rate() in ((0.5, 503), (1.0, 500))
    assert steps["latency:v2"].latency() == (300.0, 50.0) and steps["latency:v2"].duration_s is None
    assert steps["weights:*"].value == {"v1": 90, "v2": 10}
    assert [s.error_rate() for s in scenario.steps if s.action == "error-rate"] == [(0.5, 503), (1.0, 500)]
    assert scenario.end_s() == 11.0
    windows = scenario.windows()
    assert [w.label for w in windows] == [s.label for s in scenario.steps]
    assert windows[4] == FaultWindow("latency v2 +300ms (jitter 50ms)", 1.0, None)


@pytest.mark.parametrize(("steps", "field", "message"), [
    ([{"action": "kill", "variant": "v2"}], "scenarios[0].at", "is required"),
    ([{"action": "kill", "variant": "v2", "at": -1}], "scenarios[0].at", ">= 0"),
    ([{"action": "kill", "variant": "v2", "at": "soon"}], "scenarios[0].at", "duration"),
    ([{"action": "kill", "at": 1, "duration": 0}], "scenarios[0].duration", "positive"),
    ([{"action": "kill", "at": 1}, {"action": "boom", "at": 2}], "scenarios[1].action", "unknown action 'boom'"),
    ([{"at": 2}], "scenarios[0].action", "is required"),
    ([{"action": "kill", "variant": "v3", "at": 2}], "scenarios[0].variant", "unknown variant 'v3'"),
    ([{"action": "kill", "at": 2, "rate": 0.5}], "scenarios[0].rate", "does not apply to kill"),
    ([{"action": "error-rate", "at": 2, "rate": 1.5}], "scenarios[0].rate", "(0, 1]"),
    ([{"action": "error-rate", "at": 2, "status": 404}], "scenarios[0].status", "5xx"),
    ([{"action": "scale", "at": 2}], "scenarios[0].replicas", "needs replicas"),
    ([{"action": "scale", "at": 2, "replicas": -1}], "scenarios[0].replicas", "integer >= 0"),
    ([{"action": "latency", "at": 2, "latency": "fast"}], "scenarios[0].latency", "duration"),
    ([{"action": "weights", "at": 2, "weights": {"v9": 1}}], "scenarios[0].weights", "unknown variant"),
    ([{"action": "weights", "at": 2, "weights": {"v1": 0, "v2": 0}}], "scenarios[0].weights", "all weights are zero"),
    ([{"action": "kill", "at": 2, "color": "red"}], "scenarios[0].color", "unknown key"),
    ([{"action": "kill", "at": 2, "duration": 1, "for": 1}], "scenarios[0].for", "either duration or for"),
    ([{"action": "kill", "at": 2, "duration": 4}, {"action": "scale", "replicas": 0, "at": 5}],
     "scenarios[1].at", "overlaps step 0"),
    ([{"action": "kill", "at": 2}, {"action": "kill-one", "at": 50}], "scenarios[1].at", "overlaps"),
    ([{"scenario": "kill", "at": 1, "duration": 5}, {"scenario": "scale-zero", "at": 3}],
     "scenarios[1].at", "overlaps"),
    ([{"scenario": "kill", "rate": 1}], "scenarios[0].rate", "takes only variant, at and duration"),
    ([{"scenario": "kill:v2", "variant": "v1", "at": 1}], "scenarios[0].variant", "already names"),
    (["kill"], "scenarios[0]", "must be a mapping"),
    ([], "scenarios", "at least one step"),
])
def test_bad_steps_name_their_field(steps: list[Any], field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_scenario(steps, SPEC)
    assert info.value.field == field
    assert message in info.value.message


def test_fault_knobs_need_an_admin_port() -> None:
    plain = default_spec(variants=(reference_variant("v1"), dataclasses.replace(reference_variant("v2"),
                                                                                 admin_port=None)))
    with pytest.raises(SpecError) as info:
        parse_scenario([{"action": "latency", "variant": "v2", "at": 1}], plain)
    assert info.value.field == "scenarios[0].action" and "admin_port" in info.value.message
    with pytest.raises(SpecError, match="admin_port"):
        parse_scenario("errors:v2", plain)
    parse_scenario("kill:v2", plain)  # killing needs no admin API


def test_spec_file_scenarios_become_one_timeline() -> None:
    spec = spec_from_mapping({"scenarios": [
        {"action": "kill", "variant": "v2", "at": "2s", "duration": "6s"},
        {"action": "latency", "variant": "v1", "at": 9, "duration": 2, "latency": 100},
    ]})
    scenario = scenario_from_spec(spec)
    assert scenario is not None and scenario.name == "kill:v2+latency:v1"
    assert [w.label for w in scenario.windows()] == ["kill v2", "latency v1 +100ms"]
    assert scenario_from_spec(default_spec()) is None
    # A bad step is reported when the spec is loaded, before anything is deployed.
    with pytest.raises(SpecError) as info:
        spec_from_mapping({"scenarios": [{"action": "kill", "variant": "v2", "at": 1},
                                         {"action": "kill", "variant": "v2"}]})
    assert info.value.field == "scenarios[1].at"


def test_mapping_with_name_and_steps() -> None:
    scenario = parse_scenario({"name": "double", "steps": [{"scenario": "kill", "at": 1},
                                                           {"scenario": "slow:v1", "at": 1}]}, SPEC)
    assert scenario.name == "double" and len(scenario.steps) == 2
    with pytest.raises(SpecError) as info:
        parse_scenario({"name": "x", "steps": [{"action": "kill"}]}, SPEC)
    assert info.value.field == "scenario.steps[0].at"


def test_scenario_objects_are_checked_against_the_spec() -> None:
    other = default_spec(variants=(Variant("a", 1, command=("x",)), Variant("b", 1, command=("x",))))
    scenario = parse_scenario("kill:b", other)
    with pytest.raises(SpecError, match="unknown variant 'b'"):
        parse_scenario(scenario, SPEC)
    assert parse_scenario(scenario, other) is scenario


def test_fault_step_and_scenario_validate_direct_use() -> None:
    with pytest.raises(SpecError) as info:
        FaultStep("kill", "v2", at_s=-0.5)
    assert info.value.field == "step.at"
    with pytest.raises(SpecError, match="unknown action"):
        FaultStep("melt", "v2", at_s=1)  # type: ignore[arg-type]
    with pytest.raises(SpecError) as info:
        FaultStep("error-rate", "v2", 1, 2, {"rate": 0})
    assert info.value.field == "step.value"
    with pytest.raises(SpecError, match="at least one step"):
        Scenario("empty", ())
    with pytest.raises(SpecError, match="overlaps"):
        Scenario("clash", (FaultStep("unready", "v2", 1, 5), FaultStep("unready", "v2", 3, 1)))
    step = FaultStep("weights", "*", 0, None, {"v1": 3})
    assert step.value == {"v1": 3} and not step.is_fault
    with pytest.raises(TypeError):
        step.value["v1"] = 4  # type: ignore[index]  # read-only copy
    # ... that still copies, pickles and turns into plain data like any dataclass field
    scenario = Scenario("w", (step,))
    assert copy.deepcopy(scenario) == scenario == pickle.loads(pickle.dumps(scenario))
    assert dataclasses.asdict(scenario)["steps"][0]["value"] == {"v1": 3}


# -- the runner -----------------------------------------------------------------------------------


def test_timeline_applies_and_undoes_steps_in_time_order() -> None:
    spec = default_spec(variants=(reference_variant("v1"), dataclasses.replace(reference_variant("v2"), replicas=2)))
    dep = FakeDeployment(spec)
    scenario = Scenario("mixed", (
        FaultStep("latency", "v2", 0.15, None, 40.0),
        FaultStep("error-rate", "v1", 0.10, 0.10, {"rate": 0.5, "status": 503}),
        FaultStep("kill", "v2", 0.05, 0.10),
        FaultStep("weights", "*", 0.0, 0.20, {"v1": 90, "v2": 10}),
    ))
    runner = ScenarioRunner(scenario).start(dep)  # type: ignore[arg-type]
    assert runner.wait(10.0)
    assert dep.calls == [
        ("set_weights", {"v1": 90, "v2": 10}),                      # 0.00
        ("kill", "v2", None),                                       # 0.05
        ("set_fault", "v1", {"error_rate": 0.5, "error_status": 503}),  # 0.10
        ("scale", "v2", 2),                                         # 0.15 undo kill (before the apply at 0.15)
        ("set_fault", "v2", {"latency_ms": 40.0, "latency_jitter_ms": 0.0}),  # 0.15
        ("set_fault", "v1", {"error_rate": 0.0}),                   # 0.20 undo error-rate (step 1)...
        ("set_weights", {"v1": 50, "v2": 50}),                      # 0.20 ...then weights (step 3)
    ]
    windows = runner.stop()
    assert dep.calls[-1] == ("restore",) and dep.restores == 1
    by_label = {w.label: w for w in windows}
    assert list(by_label) == ["weights v1=90,v2=10", "kill v2", "error-rate v1 50% (503)", "latency v2 +40ms"]
    for step in scenario.steps:
        w = by_label[step.label]
        assert w.start_s >= step.at_s - 1e-6  # never early
        assert w.end_s is not None and w.end_s >= w.start_s
        if step.end_s is not None:
            assert w.end_s >= step.end_s - 1e-6
    assert runner.restored
    assert [text for _, text in runner.log][-1] == "restore deployment"


def test_scale_steps_track_replicas_for_later_kills() -> None:
    dep = FakeDeployment()
    scenario = Scenario("s", (FaultStep("scale", "v2", 0.0, 0.05, 3), FaultStep("kill-one", "v2", 0.06, 0.02, 1)))
    run_to_end(scenario, dep)
    assert dep.calls == [("scale", "v2", 3), ("scale", "v2", 1), ("kill", "v2", 1), ("scale", "v2", 1),
                         ("restore",)]


def test_a_failing_step_stops_the_timeline_restores_and_is_reraised() -> None:
    dep = FakeDeployment(fail_on="set_fault")
    scenario = Scenario("s", (FaultStep("kill", "v2", 0.0, 5.0), FaultStep("unready", "v1", 0.01, 1.0),
                              FaultStep("scale", "v1", 0.02, None, 0)))
    runner = ScenarioRunner(scenario).start(dep)  # type: ignore[arg-type]
    assert runner.wait(10.0)
    assert isinstance(runner.error, RuntimeError)
    with pytest.raises(RuntimeError, match="set_fault failed on purpose"):
        runner.stop()
    assert dep.calls == [("kill", "v2", None), ("set_fault", "v1", {"unready": True}), ("restore",)]
    assert [w.label for w in runner.windows] == ["kill v2"]  # the failed step never became active
    assert runner.stop() == runner.windows  # a second stop only returns the windows
    assert dep.restores == 1


def test_stop_before_the_steps_are_due_restores_without_applying() -> None:
    dep = FakeDeployment()
    runner = ScenarioRunner(parse_scenario("kill", SPEC)).start(dep)  # type: ignore[arg-type]
    assert runner.stop() == ()
    assert dep.calls == [("restore",)]


def test_context_manager_restores_when_the_test_fails_and_keeps_its_error() -> None:
    dep = FakeDeployment()
    scenario = Scenario("s", (FaultStep("kill", "v2", 0.0, None), FaultStep("error-rate", "v1", 0.0, None, 1.0)))
    with pytest.raises(AssertionError, match="the test failed"), \
            ScenarioRunner(scenario).start(dep) as runner:  # type: ignore[arg-type]
        assert runner.wait(5.0)
        assert dep.replicas["v2"] == 0 and dep.active_faults() == {"v1": {"error_rate": 1.0}}
        raise AssertionError("the test failed")
    assert dep.restores == 1 and dep.replicas == {"v1": 1, "v2": 1} and dep.active_faults() == {}
    assert runner.windows[0].end_s is not None


def test_context_manager_adds_a_restore_failure_as_a_note() -> None:
    dep = FakeDeployment(fail_on="restore")
    with pytest.raises(AssertionError) as info, \
            ScenarioRunner(Scenario("s", (FaultStep("kill", "v2", 0.0),))).start(dep):  # type: ignore[arg-type]
        raise AssertionError("original")
    assert str(info.value) == "original"
    assert any("restore failed on purpose" in note for note in info.value.__notes__)


def test_start_twice_and_start_in_the_past() -> None:
    dep = FakeDeployment()
    runner = ScenarioRunner(Scenario("s", (FaultStep("unready", "v2", 0.5, None),)))
    runner.start(dep, t0=time.monotonic() - 1.0)  # type: ignore[arg-type]  # load started a second ago
    with pytest.raises(RuntimeError, match="twice"):
        runner.start(dep)  # type: ignore[arg-type]
    assert runner.wait(5.0)
    (window,) = runner.stop()
    assert window.start_s >= 1.0  # applied at once, and recorded when it really happened


def test_observer_starts_the_runner_and_stops_load_after_recovery() -> None:
    dep = FakeDeployment()
    runner = ScenarioRunner(Scenario("s", (FaultStep("kill", "v2", 0.0, 0.05),)))
    observer = ScenarioObserver(runner, dep, recovery_s=0.1)  # type: ignore[arg-type]
    assert not observer.on_progress(None, ())
    observer.on_start()
    deadline = time.monotonic() + 10
    while not observer.on_progress(None, ()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert runner.elapsed() >= 0.15
    runner.stop()
    assert dep.calls == [("kill", "v2", None), ("scale", "v2", 1), ("restore",)]


def test_observer_stops_load_at_once_when_a_step_failed() -> None:
    dep = FakeDeployment(fail_on="kill")
    runner = ScenarioRunner(Scenario("s", (FaultStep("kill", "v2", 0.0, 30.0),)))
    observer = ScenarioObserver(runner, dep, recovery_s=30.0)  # type: ignore[arg-type]
    observer.on_start()
    assert runner.wait(5.0)
    assert observer.on_progress(None, ())
    with pytest.raises(RuntimeError):
        runner.stop()


# -- a failing test in a real pytest run still leaves the deployment restored -------------------


PYTESTER_TEST = '''
import json, os, threading
import pytest
from pytest_abtraffic._chaos import ScenarioRunner, parse_scenario
from pytest_abtraffic._spec import default_spec

SPEC = default_spec()

class Dep:
    backend_name = "fake"
    namespace = "ns"
    def __init__(self):
        self.spec = SPEC
        self.replicas = {"v1": 1, "v2": 1}
        self.faults = {"v1": {}, "v2": {}}
        self.restores = 0
    def kill(self, variant, count=None):
        self.replicas[variant] = 0
        return 1
    def scale(self, variant, replicas):
        self.replicas[variant] = replicas
    def set_fault(self, variant, fault):
        self.faults[variant].update(fault.to_json())
    def set_weights(self, weights):
        pass
    def restore(self):
        self.restores += 1
        self.replicas = {"v1": 1, "v2": 1}
        self.faults = {"v1": {}, "v2": {}}

@pytest.fixture
def dep():
    d = Dep()
    yield d
    with open(os.environ["OBSERVED_FILE"], "a") as fh:
        fh.write(json.dumps({"replicas": d.replicas, "faults": d.faults, "restores": d.restores}) + "\\n")

def test_fails_during_a_fault(dep):
    scenario = parse_scenario([{"action": "kill", "variant": "v2", "at": 0},
                               {"action": "error-rate", "variant": "v1", "at": 0, "rate": 1.0}], SPEC)
    with ScenarioRunner(scenario).start(dep) as runner:
        assert runner.wait(5)
        assert dep.replicas["v2"] == 0 and dep.faults["v1"]["error_rate"] == 1.0
        assert False, "the model got worse"

def test_a_step_error_fails_the_test_and_still_restores(dep):
    def boom(variant, fault):
        raise RuntimeError("admin API down")
    dep.set_fault = boom
    scenario = parse_scenario([{"action": "kill", "variant": "v2", "at": 0},
                               {"action": "unready", "variant": "v1", "at": 0.01}], SPEC)
    with ScenarioRunner(scenario).start(dep) as runner:
        runner.wait(5)
'''


def test_a_failing_test_leaves_the_deployment_restored(pytester: pytest.Pytester, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    observed = tmp_path / "observed.jsonl"
    monkeypatch.setenv("OBSERVED_FILE", str(observed))
    pytester.makepyfile(test_chaos_restore=PYTESTER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:locust", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*the model got worse*", "*RuntimeError: admin API down*"])
    rows = [json.loads(line) for line in observed.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row == {"replicas": {"v1": 1, "v2": 1}, "faults": {"v1": {}, "v2": {}}, "restores": 1}


def test_user_registered_scenarios_parse_like_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    def flap(spec: ExperimentSpec, variant: str) -> Scenario:
        return Scenario(f"flap:{variant}", (FaultStep("unready", variant, 1, 1), FaultStep("unready", variant, 3, 1)))

    monkeypatch.setitem(BUILTIN_SCENARIOS, "flap", flap)
    assert [w.start_s for w in parse_scenario("flap", SPEC).windows()] == [1, 3]
    assert parse_scenario("flap:v1", SPEC).name == "flap:v1"
    with pytest.raises(SpecError, match="takes no value"):
        parse_scenario("flap:v2:3", SPEC)
