"""Fault scenarios: a timeline of chaos steps applied to a Deployment while load runs.

A :class:`Scenario` is a list of :class:`FaultStep` s, each with a start time (seconds after load
start) and an optional duration; both types live in the leaf module ``_scenario`` (so ``_fallback``
needs nothing from here) and are re-exported. :class:`ScenarioRunner` applies them from a thread through the
Deployment's chaos primitives, undoes each step when its duration is over, records when each fault
was really active (:class:`FaultWindow`), and on ``stop()`` always calls ``deployment.restore()``.

What traffic should do during each fault (and the checks on it) lives in ``_fallback``; the names
are re-exported here so ``from pytest_abtraffic._chaos import FallbackReport`` works.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ._backend import FaultSettings
from ._errors import SpecError
from ._fallback import (
    Check,
    FallbackExpectation,
    FallbackReport,
    TimelineRow,
    default_expectation,
    evaluate_fallback,
)
from ._result import FaultWindow
from ._scenario import (
    ACTIONS,
    DEFAULT_ERROR_RATE,
    DEFAULT_ERROR_STATUS,
    DEFAULT_LATENCY_MS,
    FAULT_ACTIONS,
    KNOB_ACTIONS,
    Action,
    FaultStep,
    Scenario,
    _check_overlaps,
    _check_value,
    _is_number,
)
from ._spec import parse_duration

if TYPE_CHECKING:
    from ._backend import Deployment
    from ._spec import ExperimentSpec

# Built-in scenario timing: a couple of seconds of normal traffic first (a baseline in the
# timeline), then a fault long enough to outlast Linkerd's 3 s fail-fast window with room to see
# the fallen-back state, then restore.
DEFAULT_AT_S = 2.0
# How long stop() waits for the timeline thread (it may be inside a slow deployment call).
JOIN_TIMEOUT_S = 120.0

_ACTION_ALIASES = {"errors": "error-rate", "error": "error-rate", "slow": "latency", "kill-all": "kill"}


# ---------------------------------------------------------------------------------------------
# Built-in scenarios


@dataclass(frozen=True)
class _Builtin:
    action: Action
    duration_s: float
    value: float | int | None
    summary: str


_BUILTINS: dict[str, _Builtin] = {
    "kill": _Builtin("kill", 6.0, None, "kill every replica of the variant (SIGKILL), restart after the fault"),
    "kill-one": _Builtin("kill-one", 6.0, 1, "kill one replica of the variant, restart it after the fault"),
    "scale-zero": _Builtin("scale", 6.0, 0, "scale the variant to zero replicas (graceful), then back"),
    "errors": _Builtin("error-rate", 8.0, DEFAULT_ERROR_RATE,
                       "the variant answers 500 to a share of requests (default 20%; errors:v2:1 always fails)"),
    "slow": _Builtin("latency", 6.0, DEFAULT_LATENCY_MS,
                     "add latency to every request of the variant (default 250 ms)"),
    "unready": _Builtin("unready", 8.0, None, "the variant's readiness probe fails while it keeps serving"),
}


class _BuiltinFactory:
    """``BUILTIN_SCENARIOS[name](spec, variant)``; keyword arguments tune value and timing."""

    def __init__(self, name: str, builtin: _Builtin) -> None:
        self.name = name
        self.builtin = builtin
        self.__doc__ = builtin.summary

    def __call__(self, spec: ExperimentSpec, variant: str, *, value: float | int | None = None,
                 at_s: float = DEFAULT_AT_S, duration_s: float | None = None) -> Scenario:
        b = self.builtin
        spec.variant(variant)  # SpecError for an unknown variant
        chosen = b.value if value is None else value
        name = f"{self.name}:{variant}" + (f":{value:g}" if value is not None else "")
        step = FaultStep(b.action, variant, at_s, b.duration_s if duration_s is None else duration_s, chosen)
        return Scenario(name, (step,), b.summary)

    def __repr__(self) -> str:
        return f"<builtin scenario {self.name}: {self.builtin.summary}>"


BUILTIN_SCENARIOS: dict[str, Callable[[ExperimentSpec, str], Scenario]] = {
    name: _BuiltinFactory(name, b) for name, b in _BUILTINS.items()
}


def builtin_scenario(name: str, spec: ExperimentSpec, variant: str | None = None, *,
                     value: float | int | None = None, at_s: float = DEFAULT_AT_S,
                     duration_s: float | None = None) -> Scenario:
    """A built-in scenario with its timing or value changed (``builtin_scenario("kill", spec, at_s=1)``)."""
    if name not in _BUILTINS:
        raise SpecError("scenario", f"unknown scenario {name!r}; built-in scenarios: {', '.join(_BUILTINS)}")
    scenario = _BuiltinFactory(name, _BUILTINS[name])(spec, variant or default_target(spec), value=value, at_s=at_s,
                                                      duration_s=duration_s)
    validate_scenario(scenario, spec)
    return scenario


def default_target(spec: ExperimentSpec) -> str:
    """The variant a scenario breaks when none is named: the last one (the candidate, ``v2``)."""
    return spec.variant_names[-1]


# ---------------------------------------------------------------------------------------------
# Parsing: CLI text (``kill:v2``), the spec file's ``scenarios:`` list, marker arguments


ScenarioSource = str | Scenario | Mapping[str, Any] | Sequence[Mapping[str, Any]]

_STEP_KEYS = {"action", "scenario", "variant", "at", "duration", "for", "value", "rate", "status", "latency",
              "jitter", "replicas", "count", "weights", "weight", "name"}
_VALUE_KEYS = {
    "kill": set(),
    "unready": set(),
    "kill-one": {"count"},
    "scale": {"replicas"},
    "error-rate": {"rate", "status"},
    "latency": {"latency", "jitter"},
    "weights": {"weights", "weight"},
}


def parse_scenario(source: ScenarioSource, spec: ExperimentSpec, *, field: str | None = None) -> Scenario:
    """A Scenario from any of the accepted forms, validated against ``spec``.

    - text ``NAME[:VARIANT[:VALUE]]`` naming a built-in (``kill``, ``kill:v2``, ``errors:v2:1``,
      ``slow:v1:500ms``); several joined with ``+`` run together (``kill:v2+slow:v1``);
    - a list of step mappings (the spec file's ``scenarios:``), each ``{action, variant, at,
      duration, ...}`` or ``{scenario: kill:v2, at: 5}`` to place a built-in;
    - a mapping ``{name: ..., steps: [...]}`` or a single step mapping;
    - a Scenario (checked against ``spec`` and returned).

    Errors are SpecErrors naming the field (``scenarios[0].at``, or ``field`` for text).
    """
    if isinstance(source, Scenario):
        where = field or "scenario"
        validate_scenario(source, spec, where)
        return source
    if isinstance(source, str):
        return _parse_text(source, spec, field or "scenario")
    if isinstance(source, Mapping):
        where = field or "scenario"
        if "steps" in source:
            unknown = sorted(str(k) for k in source if k not in ("name", "steps", "description"))
            if unknown:
                raise SpecError(f"{where}.{unknown[0]}", "unknown key; allowed keys: description, name, steps")
            name = source.get("name", "custom")
            if not isinstance(name, str) or not name:
                raise SpecError(f"{where}.name", f"must be a non-empty string, got {name!r}")
            steps_src = source["steps"]
            if not isinstance(steps_src, Sequence) or isinstance(steps_src, str | bytes):
                raise SpecError(f"{where}.steps", "must be a list of step mappings")
            return _parse_steps(steps_src, spec, f"{where}.steps", name, str(source.get("description", "")))
        return _parse_steps([source], spec, field or "scenarios", None, "")
    if isinstance(source, Sequence) and not isinstance(source, bytes):
        return _parse_steps(source, spec, field or "scenarios", None, "")
    raise SpecError(field or "scenario", f"expected a scenario name like 'kill:v2' or a list of steps, "
                    f"got {type(source).__name__}")


def scenario_from_spec(spec: ExperimentSpec) -> Scenario | None:
    """The timeline in the spec file's ``scenarios:`` (None when it has none)."""
    if not spec.scenarios:
        return None
    return parse_scenario(list(spec.scenarios), spec, field="scenarios")


def _parse_text(text: str, spec: ExperimentSpec, where: str) -> Scenario:
    parts = [p.strip() for p in text.split("+")]
    if not text.strip() or any(not p for p in parts):
        raise SpecError(where, f"expected NAME[:VARIANT[:VALUE]] with NAME one of {', '.join(_BUILTINS)}, "
                        f"got {text!r}")
    scenarios = [_parse_builtin(p, spec, where) for p in parts]
    if len(scenarios) == 1:
        return scenarios[0]
    steps = tuple(s for sc in scenarios for s in sc.steps)
    try:
        _check_overlaps(steps, where)
    except SpecError as exc:
        raise SpecError(where, f"{text!r}: {exc.message}") from None
    return Scenario("+".join(sc.name for sc in scenarios), steps, "; ".join(sc.description for sc in scenarios))


def _parse_builtin(text: str, spec: ExperimentSpec, where: str, *, at_s: float = DEFAULT_AT_S,
                   duration_s: float | None = None) -> Scenario:
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    variant_text, _, value_text = rest.partition(":")
    factory = BUILTIN_SCENARIOS.get(name)
    if factory is None:
        raise SpecError(where, f"unknown scenario {name!r}; built-in scenarios: {', '.join(BUILTIN_SCENARIOS)} "
                        "(write NAME or NAME:VARIANT, e.g. kill:v2)")
    variant = variant_text.strip() or default_target(spec)
    if variant not in spec.variant_names:
        raise SpecError(where, f"{text!r} names unknown variant {variant!r}; the experiment has "
                        f"{', '.join(spec.variant_names)}")
    try:
        if isinstance(factory, _BuiltinFactory):
            value = _builtin_value(name, value_text.strip(), where) if value_text.strip() else None
            scenario = factory(spec, variant, value=value, at_s=at_s, duration_s=duration_s)
        else:
            # A scenario registered in BUILTIN_SCENARIOS by the user: only (spec, variant).
            if value_text.strip() or at_s != DEFAULT_AT_S or duration_s is not None:
                raise SpecError(where, f"scenario {name!r} takes no value, at or duration")
            scenario = factory(spec, variant)
    except SpecError as exc:
        raise SpecError(where, exc.message if exc.field == where else f"{text!r}: {exc.message}") from None
    validate_scenario(scenario, spec, where)
    return scenario


def _builtin_value(name: str, text: str, where: str) -> float | int:
    action = _BUILTINS[name].action
    try:
        if action == "latency":
            return parse_duration(text, where) * 1000.0 if text[-1].isalpha() else float(text)
        if action == "error-rate":
            return float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        if action == "kill-one":
            return int(text)
    except ValueError:
        raise SpecError(where, f"{name}: value {text!r} is not a number") from None
    raise SpecError(where, f"scenario {name!r} takes no value (got {text!r})")


def _parse_steps(items: Sequence[Any], spec: ExperimentSpec, where: str, name: str | None,
                 description: str) -> Scenario:
    if not items:
        raise SpecError(where, "a scenario needs at least one step")
    steps: list[FaultStep] = []
    origin: list[int] = []  # index of the source item each step came from (for error fields)
    names: list[str] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(at, f"must be a mapping, got {type(item).__name__}")
        unknown = sorted(str(k) for k in item if k not in _STEP_KEYS)
        if unknown:
            raise SpecError(f"{at}.{unknown[0]}", f"unknown key; allowed keys: {', '.join(sorted(_STEP_KEYS))}")
        if "duration" in item and "for" in item:
            raise SpecError(f"{at}.for", "give either duration or for, not both")
        if "scenario" in item:
            built = _step_builtin(item, spec, at)
            steps.extend(built.steps)
            origin.extend([i] * len(built.steps))
            names.append(built.name)
        else:
            step = _step_mapping(item, spec, at)
            steps.append(step)
            origin.append(i)
            names.append(f"{step.action}:{step.variant}" if step.action != "weights" else "weights")
    try:
        _check_overlaps(steps, where)
    except SpecError as exc:
        # Re-point the field at the source item (a placed built-in may have expanded to several steps).
        j = int(exc.field[len(where) + 1:].split("]")[0])
        raise SpecError(f"{where}[{origin[j]}].at", exc.message) from None
    return Scenario(name or "+".join(names), tuple(steps), description)


def _seconds(value: object, field_name: str, *, allow_zero: bool) -> float:
    if allow_zero and _is_number(value) and value == 0:
        return 0.0
    if allow_zero and isinstance(value, str) and value.strip() in ("0", "0s", "0ms"):
        return 0.0
    return parse_duration(value, field_name)


def _step_builtin(item: Mapping[str, Any], spec: ExperimentSpec, at: str) -> Scenario:
    allowed = {"scenario", "variant", "at", "duration", "for"}
    extra = sorted(str(k) for k in item if k not in allowed)
    if extra:
        raise SpecError(f"{at}.{extra[0]}", "a placed built-in scenario takes only variant, at and duration "
                        "(put the value in the name: errors:v2:0.5)")
    text = item["scenario"]
    if not isinstance(text, str):
        raise SpecError(f"{at}.scenario", f"must be a built-in scenario name like 'kill:v2', got {text!r}")
    if "variant" in item:
        if ":" in text:
            raise SpecError(f"{at}.variant", "the scenario text already names a variant")
        text = f"{text}:{item['variant']}"
    at_s = _seconds(item["at"], f"{at}.at", allow_zero=True) if "at" in item else DEFAULT_AT_S
    dur_raw = item.get("duration", item.get("for"))
    duration = _seconds(dur_raw, f"{at}.{'duration' if 'duration' in item else 'for'}",
                        allow_zero=False) if dur_raw is not None else None
    return _parse_builtin(text, spec, f"{at}.scenario", at_s=at_s, duration_s=duration)


def _step_mapping(item: Mapping[str, Any], spec: ExperimentSpec, at: str) -> FaultStep:
    raw_action = item.get("action")
    if raw_action is None:
        raise SpecError(f"{at}.action", f"is required: one of {', '.join(ACTIONS)} (or use scenario: NAME)")
    if not isinstance(raw_action, str):
        raise SpecError(f"{at}.action", f"must be a string, got {raw_action!r}")
    action_text = raw_action.strip().lower().replace("_", "-")
    action_text = _ACTION_ALIASES.get(action_text, action_text)
    if action_text == "scale-zero":
        action_text, item = "scale", {**item, "replicas": item.get("replicas", 0)}
    if action_text not in ACTIONS:
        raise SpecError(f"{at}.action", f"unknown action {raw_action!r}; choose one of {', '.join(ACTIONS)}")
    action = cast(Action, action_text)
    value_keys = _VALUE_KEYS[action]
    for key in ("rate", "status", "latency", "jitter", "replicas", "count", "weights", "weight"):
        if key in item and key not in value_keys:
            takes = f"takes {', '.join(sorted(value_keys))}" if value_keys else "takes no value"
            raise SpecError(f"{at}.{key}", f"does not apply to {action} ({action} {takes})")
    if "value" in item and value_keys & set(item):
        raise SpecError(f"{at}.value", f"give either value or {'/'.join(sorted(value_keys & set(item)))}")

    if "variant" in item:
        variant = item["variant"]
        if action == "weights" and variant == "*":
            pass
        elif not isinstance(variant, str) or variant not in spec.variant_names:
            raise SpecError(f"{at}.variant", f"unknown variant {variant!r}; the experiment has "
                            f"{', '.join(spec.variant_names)}")
    else:
        variant = "*" if action == "weights" and "weight" not in item else default_target(spec)
    if "at" not in item:
        raise SpecError(f"{at}.at", "is required: when the step starts, in seconds after load start "
                        "(a number or '2s', '500ms')")
    at_s = _seconds(item["at"], f"{at}.at", allow_zero=True)
    dur_key = "duration" if "duration" in item else "for"
    duration = _seconds(item[dur_key], f"{at}.{dur_key}", allow_zero=False) if item.get(dur_key) is not None else None

    value_field = f"{at}.value"
    value: Any = item.get("value")
    if action == "kill-one" and "count" in item:
        value, value_field = item["count"], f"{at}.count"
    elif action == "scale":
        if "replicas" in item:
            value, value_field = item["replicas"], f"{at}.replicas"
        if value is None:
            raise SpecError(f"{at}.replicas", "scale needs replicas (an integer >= 0)")
    elif action == "error-rate" and ("rate" in item or "status" in item):
        value = {"rate": item.get("rate", 1.0), "status": item.get("status", DEFAULT_ERROR_STATUS)}
        value_field = f"{at}.{'rate' if 'rate' in item else 'status'}"
    elif action == "latency" and ("latency" in item or "jitter" in item):
        ms = _millis(item.get("latency", DEFAULT_LATENCY_MS), f"{at}.latency")
        jitter = _millis(item.get("jitter", 0), f"{at}.jitter")
        value, value_field = ({"ms": ms, "jitter_ms": jitter} if jitter else ms), f"{at}.latency"
    elif action == "latency" and isinstance(value, str):
        value = _millis(value, value_field)
    elif action == "weights":
        if "weights" in item:
            value, value_field = item["weights"], f"{at}.weights"
        elif "weight" in item:
            value, value_field = item["weight"], f"{at}.weight"
        if value is None:
            raise SpecError(f"{at}.weights", "weights needs weights: {variant: weight, ...} (or weight: N)")
    _check_value(action, value, value_field)
    if action == "weights":
        _check_weights(value, variant, spec, value_field)
    try:
        step = FaultStep(action, variant, at_s, duration, value)
    except SpecError as exc:
        raise SpecError(f"{at}.{exc.field.split('.', 1)[1]}", exc.message) from None
    _check_step_against_spec(step, spec, at)
    return step


def _millis(value: object, where: str) -> float:
    """Milliseconds from a number (ms) or a duration string (``300ms``, ``1s``)."""
    if isinstance(value, str):
        text = value.strip()
        if text and text[-1].isalpha():
            return parse_duration(text, where) * 1000.0
        try:
            return float(text)
        except ValueError:
            raise SpecError(where, f"{value!r} is not milliseconds or a duration like '300ms'") from None
    if not _is_number(value):
        raise SpecError(where, f"must be milliseconds or a duration like '300ms', got {value!r}")
    return float(cast(float, value))


def _check_weights(value: object, variant: str, spec: ExperimentSpec, where: str) -> None:
    current = {v.name: v.weight for v in spec.variants}
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(spec.variant_names))
        if unknown:
            raise SpecError(where, f"unknown variant(s) {unknown}; the experiment has {', '.join(spec.variant_names)}")
        new = {**current, **value}
    else:
        if variant == "*":
            raise SpecError(where, "a single weight needs the variant it is for")
        new = {**current, variant: value}
    try:
        spec.with_weights(cast(Mapping[str, int | str], new))
    except SpecError as exc:
        raise SpecError(where, exc.message) from None


def _check_step_against_spec(step: FaultStep, spec: ExperimentSpec, at: str) -> None:
    if step.action == "weights":
        return
    variant = spec.variant(step.variant)
    if step.action in KNOB_ACTIONS and variant.admin_port is None:
        raise SpecError(f"{at}.action", f"{step.action} needs the fault admin API, but variant {step.variant!r} "
                        "has no admin_port (the reference model server has one)")


def validate_scenario(scenario: Scenario, spec: ExperimentSpec, where: str = "scenario") -> None:
    """Check that every step fits ``spec`` (known variants, fault knobs available, valid weights)."""
    for i, step in enumerate(scenario.steps):
        at = f"{where}.steps[{i}]" if len(scenario.steps) > 1 else where
        if step.action == "weights":
            _check_weights(step.value, step.variant, spec, f"{at}.value")
            continue
        if step.variant not in spec.variant_names:
            raise SpecError(f"{at}.variant" if len(scenario.steps) > 1 else where,
                            f"unknown variant {step.variant!r}; the experiment has {', '.join(spec.variant_names)}")
        _check_step_against_spec(step, spec, at)


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
                delay = self._t0 + event.time_s - self._clock()
                if delay > 0 and self._stop_event.wait(delay):
                    return
                if self._stop_event.is_set():
                    return
                if event.undo:
                    self._undo_step(event.index)
                else:
                    self._apply_step(event.index)
        except BaseException as exc:
            self._error = exc
        finally:
            self._finished.set()

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


class ScenarioObserver:
    """LoadObserver: starts ``runner`` when load starts; asks to stop ``recovery_s`` after the
    scenario's last step (or at once when a step failed)."""

    stop_reason = "observer"

    def __init__(self, runner: ScenarioRunner, deployment: Deployment, recovery_s: float) -> None:
        self.runner = runner
        self._deployment = deployment
        self._stop_after = runner.scenario.end_s() + recovery_s

    def on_start(self) -> None:
        self.runner.start(self._deployment)

    def on_progress(self, snapshot: Any, records: Sequence[Any]) -> bool:
        if self.runner.error is not None:
            return True
        return self.runner.done and self.runner.elapsed() >= self._stop_after


def iter_builtins() -> Iterator[tuple[str, str]]:
    """(name, summary) of each built-in scenario, for help texts."""
    for name, b in _BUILTINS.items():
        yield name, b.summary


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
