"""Fault scenarios: a timeline of chaos steps applied to a Deployment while load runs.

A :class:`Scenario` is a list of :class:`FaultStep` s, each with a start time (seconds after load
start) and an optional duration; both types live in the leaf module ``_scenario`` (so ``_fallback``
needs nothing from here) and are re-exported. :class:`ScenarioRunner` applies them from a thread through the
Deployment's chaos primitives, undoes each step when its duration is over, records when each fault
was really active (:class:`FaultWindow`), and on ``stop()`` always calls ``deployment.restore()``.

What traffic should do during each fault (and the checks on it) lives in ``_fallback``, how
scenarios are written and parsed in ``_scenario_grammar``; the names are re-exported here so
``from pytest_abtraffic._chaos import FallbackReport, parse_scenario`` works.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._backend import FaultSettings
from ._fallback import (
    Check,
    FallbackExpectation,
    FallbackReport,
    TimelineRow,
    default_expectation,
    evaluate_fallback,
)
from ._scenario import (
    ACTIONS,
    FAULT_ACTIONS,
    Action,
    FaultStep,
    FaultWindow,
    Scenario,
)
from ._scenario_grammar import (
    BUILTIN_SCENARIOS,
    DEFAULT_AT_S,
    ScenarioSource,
    builtin_scenario,
    default_target,
    iter_builtins,
    parse_scenario,
    scenario_from_spec,
    validate_scenario,
)

if TYPE_CHECKING:
    from ._backend import Deployment

# How long stop() waits for the timeline thread (it may be inside a slow deployment call).
JOIN_TIMEOUT_S = 120.0


# ---------------------------------------------------------------------------------------------
# The runner


@dataclass
class _Event:
    time_s: float
    undo: bool
    index: int


class ScenarioRunner:
    """Applies a scenario's steps at their times from a background thread.

    ``start(deployment, t0)``: ``t0`` is the ``time.monotonic()`` of load start (default: now).
    Each step is applied at ``t0 + at_s`` and undone at ``t0 + at_s + duration_s``. ``stop()``
    stops the timeline, calls ``deployment.restore()`` (always, also after an error), and
    re-raises the first exception a step raised. As a context manager it stops on exit::

        with ScenarioRunner(scenario).start(deployment) as runner:
            result = deployment.run_load(plan)
        windows = runner.windows
    """

    def __init__(self, scenario: Scenario, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.scenario = scenario
        self._clock = clock
        self._deployment: Deployment | None = None
        self._t0 = 0.0
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        # Wakes the timeline thread early: stop(), or fire_next_now() from an adaptive observer.
        self._wake = threading.Event()
        self._fire_now: tuple[int, bool] | None = None  # (step index, undo) to fire at once
        self._shift_s = 0.0  # how much earlier than planned the timeline runs after early events
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._started_at: dict[int, float] = {}
        self._ended_at: dict[int, float] = {}
        self._replicas: dict[str, int] = {}
        self._undo: dict[int, Callable[[], None]] = {}
        self._error: BaseException | None = None
        self._stopped = False
        self._restored = False
        self.log: list[tuple[float, str]] = []  # (seconds since t0, what was done)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, deployment: Deployment, t0: float | None = None) -> ScenarioRunner:
        if self._thread is not None:
            raise RuntimeError("ScenarioRunner.start() called twice; make a new runner per run")
        self._deployment = deployment
        self._t0 = self._clock() if t0 is None else t0
        self._replicas = {v.name: v.replicas for v in deployment.spec.variants}
        self._thread = threading.Thread(target=self._run, name=f"abtraffic-scenario-{self.scenario.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, *, restore: bool = True) -> tuple[FaultWindow, ...]:
        """Stop the timeline, restore the deployment, return the windows; re-raise a step's error.

        Safe to call more than once (later calls only return the windows).
        """
        if self._stopped:
            return self.windows
        self._stopped = True
        self._stop_event.set()
        self._wake.set()
        stuck = False
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            stuck = self._thread.is_alive()
        restore_error: BaseException | None = None
        try:
            if restore and self._deployment is not None:
                stop_s = self._now()
                self._log(stop_s, "restore deployment")
                self._deployment.restore()
                self._restored = True
        except Exception as exc:
            restore_error = exc
        finally:
            end = self._now()
            with self._lock:
                for i in self._started_at:
                    self._ended_at.setdefault(i, end)
        if self._error is not None:
            if restore_error is not None:
                self._error.add_note(f"restoring the deployment afterwards also failed: {restore_error!r}")
            raise self._error
        if restore_error is not None:
            raise restore_error
        if stuck:
            raise RuntimeError(f"scenario {self.scenario.name!r}: a step was still running {JOIN_TIMEOUT_S:g}s "
                               "after stop(); the deployment was restored anyway")
        return self.windows

    def __enter__(self) -> ScenarioRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: types.TracebackType | None) -> None:
        if exc is None:
            self.stop()
            return
        try:
            self.stop()
        except Exception as stop_exc:
            exc.add_note(f"scenario runner: {stop_exc!r}")

    # -- state -----------------------------------------------------------------------------
    @property
    def t0(self) -> float:
        return self._t0

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def done(self) -> bool:
        """Every step applied and (if it has a duration) undone, or the timeline failed."""
        return self._finished.is_set()

    @property
    def restored(self) -> bool:
        return self._restored

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the timeline is done; False on timeout."""
        return self._finished.wait(timeout)

    def elapsed(self) -> float:
        return self._now()

    def fire_now(self, index: int, *, undo: bool) -> None:
        """Apply (``undo=False``) or undo step ``index`` now instead of at its planned time; the steps
        after it move earlier by as much. An adaptive observer ends a phase with this once it is
        decided. A request for an event that already happened is ignored."""
        with self._lock:
            self._fire_now = (index, undo)
        self._wake.set()

    @property
    def windows(self) -> tuple[FaultWindow, ...]:
        """When each applied step was really active (seconds since t0), in order of start."""
        with self._lock:
            items = sorted(self._started_at.items(), key=lambda kv: (kv[1], kv[0]))
            return tuple(FaultWindow(self.scenario.steps[i].label, start, self._ended_at.get(i))
                         for i, start in items)

    # -- internals -------------------------------------------------------------------------
    def _now(self) -> float:
        return self._clock() - self._t0

    def _log(self, at: float, text: str) -> None:
        with self._lock:
            self.log.append((round(at, 3), text))

    def _events(self) -> list[_Event]:
        events: list[_Event] = []
        for i, step in enumerate(self.scenario.steps):
            events.append(_Event(step.at_s, False, i))
            if step.end_s is not None:
                events.append(_Event(step.end_s, True, i))
        # At equal times undo before apply, so a step that ends when the next begins hands over cleanly.
        # (Rounded so that 0.05 + 0.1 and 0.15 count as the same instant.)
        events.sort(key=lambda e: (round(e.time_s, 9), 0 if e.undo else 1, e.index))
        return events

    def _run(self) -> None:
        try:
            for event in self._events():
                if not self._wait_for(event):
                    return
                if event.undo:
                    self._undo_step(event.index)
                else:
                    self._apply_step(event.index)
        except BaseException as exc:
            self._error = exc
        finally:
            self._finished.set()

    def _wait_for(self, event: _Event) -> bool:
        """Sleep until ``event`` is due (or is fired early); False once the runner is stopped."""
        while True:
            if self._stop_event.is_set():
                return False
            planned = self._t0 + event.time_s + self._shift_s
            with self._lock:
                early = self._fire_now == (event.index, event.undo)
                if early:
                    self._fire_now = None
            if early:
                self._shift_s += min(0.0, self._clock() - planned)
                return True
            delay = planned - self._clock()
            if delay <= 0:
                return True
            self._wake.wait(delay)
            self._wake.clear()  # the flags are re-read above, so a wake-up set before this is not lost

    def _apply_step(self, index: int) -> None:
        step = self.scenario.steps[index]
        dep = self._deployment
        assert dep is not None
        v = step.variant
        started = self._now()
        self._log(started, f"apply {step.label}")
        undo: Callable[[], None]
        if step.action in ("kill", "kill-one"):
            before = self._replicas.get(v, 1)
            dep.kill(v, None if step.action == "kill" else step.count())
            undo = lambda: dep.scale(v, before)  # noqa: E731 - scale() brings the killed replicas back
        elif step.action == "scale":
            before = self._replicas.get(v, 1)
            target = step.count()
            dep.scale(v, target)
            self._replicas[v] = target

            def undo() -> None:
                dep.scale(v, before)
                self._replicas[v] = before
        elif step.action == "error-rate":
            rate, status = step.error_rate()
            dep.set_fault(v, FaultSettings(error_rate=rate, error_status=status))
            undo = lambda: dep.set_fault(v, FaultSettings(error_rate=0.0))  # noqa: E731
        elif step.action == "latency":
            ms, jitter = step.latency()
            dep.set_fault(v, FaultSettings(latency_ms=ms, latency_jitter_ms=jitter))
            undo = lambda: dep.set_fault(v, FaultSettings(latency_ms=0.0, latency_jitter_ms=0.0))  # noqa: E731
        elif step.action == "unready":
            dep.set_fault(v, FaultSettings(unready=True))
            undo = lambda: dep.set_fault(v, FaultSettings(unready=False))  # noqa: E731
        elif step.action == "weights":
            before_w: dict[str, int | str] = {x.name: x.weight for x in dep.spec.variants}
            if isinstance(step.value, Mapping):
                new = {**before_w, **{k: cast(int | str, w) for k, w in step.value.items()}}
            else:
                new = {**before_w, v: cast(int | str, step.value)}
            dep.set_weights(new)
            undo = lambda: dep.set_weights(before_w)  # noqa: E731
        else:  # pragma: no cover - FaultStep validates the action
            raise ValueError(f"unknown action {step.action!r}")
        with self._lock:
            self._started_at[index] = started
            self._undo[index] = undo

    def _undo_step(self, index: int) -> None:
        with self._lock:
            undo = self._undo.pop(index, None)
        if undo is None:
            return
        ended = self._now()
        self._log(ended, f"undo {self.scenario.steps[index].label}")
        with self._lock:
            self._ended_at[index] = ended
        undo()


# ---------------------------------------------------------------------------------------------
# A LoadObserver that runs a scenario


class PhaseController(Protocol):
    """Decides when the phases of a fault run end (``_phases.AdaptivePhases``)."""

    def on_progress(self, runner: ScenarioRunner, records: Sequence[Any]) -> bool: ...


class ScenarioObserver:
    """LoadObserver: starts ``runner`` when load starts; asks to stop ``recovery_s`` after the
    scenario's last step (or at once when a step failed).

    With ``phases`` the timeline is adaptive: the controller fires the steps early once a phase is
    decided and says when the load can stop (the planned times stay the deadlines).
    """

    stop_reason = "observer"

    def __init__(self, runner: ScenarioRunner, deployment: Deployment, recovery_s: float, *,
                 phases: PhaseController | None = None) -> None:
        self.runner = runner
        self._deployment = deployment
        self._stop_after = runner.scenario.end_s() + recovery_s
        self.phases = phases
        self._load_started: float | None = None

    def load_started(self, monotonic: float) -> None:
        """The instant the records' times count from: the runner's clock starts there too, so fault
        windows and records share one time axis."""
        self._load_started = monotonic

    def on_start(self) -> None:
        self.runner.start(self._deployment, self._load_started)

    def on_progress(self, snapshot: Any, records: Sequence[Any]) -> bool:
        if self.runner.error is not None:
            return True
        if self.phases is not None:
            return self.phases.on_progress(self.runner, records)
        return self.runner.done and self.runner.elapsed() >= self._stop_after


__all__ = [
    "ACTIONS",
    "BUILTIN_SCENARIOS",
    "DEFAULT_AT_S",
    "FAULT_ACTIONS",
    "Action",
    "Check",
    "FallbackExpectation",
    "FallbackReport",
    "FaultStep",
    "FaultWindow",
    "Scenario",
    "ScenarioObserver",
    "ScenarioRunner",
    "ScenarioSource",
    "TimelineRow",
    "builtin_scenario",
    "default_expectation",
    "default_target",
    "evaluate_fallback",
    "iter_builtins",
    "parse_scenario",
    "scenario_from_spec",
    "validate_scenario",
]
