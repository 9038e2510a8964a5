"""How scenarios are written: built-in names (``kill:v2``), the spec's ``scenarios:`` steps, marker
arguments; parsed into :class:`Scenario` s and validated against an experiment.

It reads the experiment through :class:`SpecView` (what it needs of an ``ExperimentSpec``), so the
spec loader can validate a spec's scenarios with it and neither imports the other's module tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from ._errors import SpecError
from ._scenario import (
    ACTIONS,
    DEFAULT_ERROR_RATE,
    DEFAULT_ERROR_STATUS,
    DEFAULT_LATENCY_MS,
    KNOB_ACTIONS,
    Action,
    FaultStep,
    Scenario,
    _check_overlaps,
    _check_value,
    _is_number,
)
from ._units import parse_duration


class VariantView(Protocol):
    """What the grammar reads of a variant."""

    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> int | str: ...

    @property
    def admin_port(self) -> int | None: ...


class SpecView(Protocol):
    """What the grammar reads of an experiment (``ExperimentSpec`` has all of it)."""

    @property
    def variants(self) -> Sequence[VariantView]: ...

    @property
    def variant_names(self) -> tuple[str, ...]: ...

    @property
    def scenarios(self) -> tuple[Mapping[str, Any], ...]: ...

    def variant(self, name: str) -> VariantView: ...

    def with_weights(self, weights: Mapping[str, int | str]) -> object: ...


# Built-in scenario timing: a couple of seconds of normal traffic first (a baseline in the
# timeline), then a fault long enough to outlast Linkerd's 3 s fail-fast window with room to see
# the fallen-back state, then restore.
DEFAULT_AT_S = 2.0

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

    def __call__(self, spec: SpecView, variant: str, *, value: float | int | None = None,
                 at_s: float = DEFAULT_AT_S, duration_s: float | None = None) -> Scenario:
        b = self.builtin
        spec.variant(variant)  # SpecError for an unknown variant
        chosen = b.value if value is None else value
        name = f"{self.name}:{variant}" + (f":{value:g}" if value is not None else "")
        step = FaultStep(b.action, variant, at_s, b.duration_s if duration_s is None else duration_s, chosen)
        return Scenario(name, (step,), b.summary)

    def __repr__(self) -> str:
        return f"<builtin scenario {self.name}: {self.builtin.summary}>"


BUILTIN_SCENARIOS: dict[str, Callable[[SpecView, str], Scenario]] = {
    name: _BuiltinFactory(name, b) for name, b in _BUILTINS.items()
}


def builtin_scenario(name: str, spec: SpecView, variant: str | None = None, *,
                     value: float | int | None = None, at_s: float = DEFAULT_AT_S,
                     duration_s: float | None = None) -> Scenario:
    """A built-in scenario with its timing or value changed (``builtin_scenario("kill", spec, at_s=1)``)."""
    if name not in _BUILTINS:
        raise SpecError("scenario", f"unknown scenario {name!r}; built-in scenarios: {', '.join(_BUILTINS)}")
    scenario = _BuiltinFactory(name, _BUILTINS[name])(spec, variant or default_target(spec), value=value, at_s=at_s,
                                                      duration_s=duration_s)
    validate_scenario(scenario, spec)
    return scenario


def default_target(spec: SpecView) -> str:
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


def parse_scenario(source: ScenarioSource, spec: SpecView, *, field: str | None = None) -> Scenario:
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


def scenario_from_spec(spec: SpecView) -> Scenario | None:
    """The timeline in the spec file's ``scenarios:`` (None when it has none)."""
    if not spec.scenarios:
        return None
    return parse_scenario(list(spec.scenarios), spec, field="scenarios")


def _parse_text(text: str, spec: SpecView, where: str) -> Scenario:
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


def _parse_builtin(text: str, spec: SpecView, where: str, *, at_s: float = DEFAULT_AT_S,
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


def _parse_steps(items: Sequence[Any], spec: SpecView, where: str, name: str | None,
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


def _step_builtin(item: Mapping[str, Any], spec: SpecView, at: str) -> Scenario:
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


def _step_mapping(item: Mapping[str, Any], spec: SpecView, at: str) -> FaultStep:
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


def _check_weights(value: object, variant: str, spec: SpecView, where: str) -> None:
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


def _check_step_against_spec(step: FaultStep, spec: SpecView, at: str) -> None:
    if step.action == "weights":
        return
    variant = spec.variant(step.variant)
    if step.action in KNOB_ACTIONS and variant.admin_port is None:
        raise SpecError(f"{at}.action", f"{step.action} needs the fault admin API, but variant {step.variant!r} "
                        "has no admin_port (the reference model server has one)")


def validate_scenario(scenario: Scenario, spec: SpecView, where: str = "scenario") -> None:
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


def iter_builtins() -> Iterator[tuple[str, str]]:
    """(name, summary) of each built-in scenario, for help texts."""
    for name, b in _BUILTINS.items():
        yield name, b.summary


__all__ = [
    "BUILTIN_SCENARIOS",
    "DEFAULT_AT_S",
    "ScenarioSource",
    "SpecView",
    "VariantView",
    "builtin_scenario",
    "default_target",
    "iter_builtins",
    "parse_scenario",
    "scenario_from_spec",
    "validate_scenario",
]
