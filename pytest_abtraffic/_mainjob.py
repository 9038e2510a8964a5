"""The main job in one load run: the split verification, then a fault scenario, without restarting Locust.

``abtraffic verify --fallback kill:v2`` (``make verify``) verifies the split and then runs the
fallback scenario. Run separately, each pays for starting and stopping the load generator (about a
second each on the 2-core machines here) and the scenario waits out a baseline of normal traffic.
In one run the split phase *is* that baseline: once the sequential test has decided the split, the
scenario's timeline starts with the last :data:`BASELINE_S` seconds of the split phase as its
baseline, and its phases end when decided (``_phases``).

Each part is judged exactly as on its own: the split on the counts its sequential test decided on
(``_runner.finish_split``), the fallback on the records from the start of its baseline, with times
shifted so that its timeline starts there (``_runner.finish_scenario``). The two results report
their own durations. Used where the phases are adaptive on the local backend and no header routes
are declared; otherwise the two run one after the other, as before.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ._runner import (
    PHASE_POLL_S,
    ProgressCallback,
    ScenarioRun,
    SplitRun,
    VerifySettings,
    check_programmed,
    finish_scenario,
    finish_split,
    prepare_scenario,
    prepare_split,
)

if TYPE_CHECKING:
    from ._backend import Deployment
    from ._chaos import FallbackExpectation, Scenario
    from ._load import LoadPlan, LoadResult, LoadSnapshot, RequestRecord
    from ._load._sizing import SizingStep
    from ._result import ExperimentResult

# Seconds of the split phase the scenario keeps as its baseline (the evaluation needs > 0.5 s).
BASELINE_S = 1.0


def can_share_one_run(deployment: Deployment, scenario: Scenario, settings: VerifySettings) -> bool:
    """The split and ``scenario`` can share one load run: adaptive phases on the local backend,
    no header routes, requests (not connections) as the unit."""
    from ._chaos import default_expectation
    from ._phases import fixed_timeline_reason

    spec = deployment.spec
    return (deployment.backend_name == "local" and settings.early_stop and spec.load.early_stop
            and not spec.routes and spec.load.unit == "requests" and spec.load.locustfile is None
            and fixed_timeline_reason(scenario, default_expectation(spec, scenario)) is None)


class _MainJobObserver:
    """LoadObserver: the split's sequential observer until it decides (or its budget or duration is
    spent), then the scenario's, with the scenario's clock starting BASELINE_S before the switch."""

    stop_reason = "observer"

    def __init__(self, deployment: Deployment, split: SplitRun, scenario: ScenarioRun) -> None:
        self._deployment = deployment
        self.split = split
        self.scenario = scenario
        self._t0 = 0.0
        self.switch_s: float | None = None  # load time at which the split phase ended
        self.switch_mono = 0.0
        self.split_reason = ""

    @property
    def base_s(self) -> float:
        return max(0.0, (self.switch_s or 0.0) - BASELINE_S)

    def load_started(self, monotonic: float) -> None:
        self._t0 = monotonic  # the records' time 0; the scenario's clock is set from it

    def on_start(self) -> None:
        if not self._t0:
            self._t0 = time.monotonic()
        self.split.observer.on_start()

    def on_sizing(self, step: SizingStep) -> None:
        self.split.observer.on_sizing(step)  # user sizing (load.target_rps): printed, gates the slow-load warning

    def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
        if self.switch_s is None:
            decided = self.split.observer.on_progress(snapshot, records)
            budget = self.split.plan.max_requests
            spent = budget is not None and snapshot.requests >= budget
            if not (decided or spent or snapshot.elapsed_s >= self.split.plan.duration_s):
                return False
            self.split_reason = "observer" if decided else ("budget" if spent else "duration")
            self.switch_s = snapshot.elapsed_s
            self.switch_mono = time.monotonic()
            phases = self.scenario.phases
            assert phases is not None
            phases.set_offset(self.base_s)
            self.scenario.runner.start(self._deployment, t0=self._t0 + self.base_s)
            return False
        return bool(self.scenario.observer.on_progress(snapshot, records))


def _shifted(records: Sequence[RequestRecord], offset_s: float) -> tuple[RequestRecord, ...]:
    return tuple(dataclasses.replace(r, t=r.t - offset_s) for r in records
                 if r.t + r.latency_ms / 1000.0 >= offset_s)


def run_split_then_scenario(
    deployment: Deployment,
    scenario: Scenario,
    *,
    expected: Mapping[str, float] | None = None,
    settings: VerifySettings | None = None,
    expectation: FallbackExpectation | None = None,
    progress: ProgressCallback | None = None,
    plan: LoadPlan | None = None,
    split_name: str = "split",
) -> tuple[ExperimentResult, ExperimentResult]:
    """Verify the split, then run ``scenario``, in one load run (see the module docstring).

    Check :func:`can_share_one_run` first. Always restores the deployment.
    """
    settings = settings or VerifySettings()
    split = prepare_split(deployment, expected=expected, settings=settings, progress=progress, plan=plan)
    run = prepare_scenario(deployment, scenario, settings=settings, expectation=expectation, progress=progress,
                           plan=plan)
    if run.phases is None:
        raise ValueError(f"scenario {scenario.name!r} runs on its fixed timeline: run it on its own")
    one_plan = dataclasses.replace(split.plan, max_requests=None,
                                   duration_s=split.plan.duration_s + run.plan.duration_s,
                                   progress_interval_s=min(split.plan.progress_interval_s, PHASE_POLL_S))
    observer = _MainJobObserver(deployment, split, run)
    check_programmed(deployment)
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.monotonic()
    try:
        load = deployment.run_load(one_plan, observer)
    finally:
        windows = run.runner.stop() if observer.switch_s is not None else ()
    end = time.monotonic()
    if observer.switch_s is None:
        # Load ended before the split phase did (the driver's own stop): judge the split alone.
        from ._errors import LoadError

        raise LoadError(f"the load ended ({load.stop_reason}, {len(load.records):,} requests) before the split phase "
                        f"finished, so {scenario.name} never started")
    switch, base = observer.switch_s, observer.base_s
    split_load = _part(load, tuple(r for r in load.records if r.t < switch), switch, observer.split_reason)
    split_result = finish_split(deployment, split, split_load, name=split_name, started=_iso(started), t0=t0)
    notes = tuple(n.replace("while load stopped", f"as the load went on into {scenario.name}")
                  for n in split_result.notes)
    split_result = dataclasses.replace(split_result, duration_s=observer.switch_mono - t0, notes=(
        *notes, f"one load run with {scenario.name}: the split phase ended at {switch:.2f} s "
        f"({observer.split_reason}); the scenario's baseline is its last {switch - base:.2f} s"))
    fault_load = _part(load, _shifted(load.records, base), load.duration_s - base, load.stop_reason,
                       stopped_early=load.stopped_early)
    fallback = finish_scenario(deployment, run, fault_load, windows, name=None,
                               started=_iso(started + _dt.timedelta(seconds=base)), t0=t0)
    fallback = dataclasses.replace(fallback, duration_s=end - (observer.switch_mono - BASELINE_S))
    return split_result, fallback


def _part(load: LoadResult, records: tuple[RequestRecord, ...], duration_s: float, reason: str, *,
          stopped_early: bool = True) -> LoadResult:
    return dataclasses.replace(load, records=records, duration_s=max(0.0, duration_s), stop_reason=reason,
                               stopped_early=stopped_early)


def _iso(when: _dt.datetime) -> str:
    return when.isoformat(timespec="seconds")


__all__ = ["BASELINE_S", "can_share_one_run", "run_split_then_scenario"]
