"""Fault scenarios as data: a :class:`Scenario` is a named timeline of :class:`FaultStep` s.

A leaf module: the chaos runner (``_chaos``) applies scenarios and the fallback judge
(``_fallback``) derives what traffic should do during them; both import the types from here, so
neither imports the other. The grammar that parses scenarios from text and specs stays in ``_chaos``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, get_args

from ._errors import SpecError

Action = Literal["kill", "kill-one", "scale", "error-rate", "latency", "unready", "weights"]
ACTIONS: tuple[str, ...] = get_args(Action)
# Actions that break a variant; "weights" only changes the split (a canary step), it is no fault.
FAULT_ACTIONS: frozenset[str] = frozenset(ACTIONS) - {"weights"}
# Actions that go through the reference server's admin API (FaultSettings), so need an admin port.
KNOB_ACTIONS: frozenset[str] = frozenset({"error-rate", "latency", "unready"})

# Defaults of a step's value (the built-in scenarios use them too).
DEFAULT_ERROR_RATE = 0.2
DEFAULT_ERROR_STATUS = 500
DEFAULT_LATENCY_MS = 250.0


@dataclass(frozen=True)
class FaultWindow:
    """A span of the run during which a fault was active (seconds since load start)."""

    label: str
    start_s: float
    end_s: float | None  # None: still active when load ended


class _ReadOnlyDict(dict[str, Any]):
    """A step's mapping value: a real dict (so asdict, copy and pickle work) that refuses changes."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a FaultStep's value is read-only; build a new step instead")

    __setitem__ = _refuse
    __delitem__ = _refuse
    __ior__ = _refuse
    clear = _refuse
    pop = _refuse
    popitem = _refuse
    setdefault = _refuse
    update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


@dataclass(frozen=True)
class FaultStep:
    """One change at ``at_s`` seconds after load start, undone after ``duration_s`` (None: at stop).

    ``value`` by action: ``kill`` None; ``kill-one`` replicas to kill (int, default 1); ``scale``
    the replica count (int); ``error-rate`` the rate (float 0..1) or ``{"rate": r, "status": s}``;
    ``latency`` milliseconds (float) or ``{"ms": m, "jitter_ms": j}``; ``unready`` None;
    ``weights`` a full ``{variant: weight}`` mapping, or a number for ``variant`` alone.
    """

    action: Action
    variant: str
    at_s: float
    duration_s: float | None = None
    value: float | int | Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise SpecError("step.action", f"unknown action {self.action!r}; choose one of {', '.join(ACTIONS)}")
        if not isinstance(self.variant, str) or not self.variant:
            raise SpecError("step.variant", f"must be a variant name, got {self.variant!r}")
        if not _is_number(self.at_s) or not math.isfinite(self.at_s) or self.at_s < 0:
            raise SpecError("step.at", f"must be a number of seconds >= 0, got {self.at_s!r}")
        if self.duration_s is not None and (
            not _is_number(self.duration_s) or not math.isfinite(self.duration_s) or self.duration_s <= 0
        ):
            raise SpecError("step.duration", f"must be a positive number of seconds or None, got {self.duration_s!r}")
        if isinstance(self.value, Mapping):
            # A read-only copy, so a caller's dict cannot change the step later.
            object.__setattr__(self, "value", _ReadOnlyDict(self.value))
        _check_value(self.action, self.value, "step.value")

    @property
    def end_s(self) -> float | None:
        return None if self.duration_s is None else self.at_s + self.duration_s

    @property
    def is_fault(self) -> bool:
        return self.action in FAULT_ACTIONS

    # -- value accessors (defaults applied) ------------------------------------------------
    def error_rate(self) -> tuple[float, int]:
        """(rate, status) of an ``error-rate`` step."""
        if isinstance(self.value, Mapping):
            return float(self.value.get("rate", 1.0)), int(self.value.get("status", DEFAULT_ERROR_STATUS))
        return (float(self.value) if self.value is not None else 1.0), DEFAULT_ERROR_STATUS

    def latency(self) -> tuple[float, float]:
        """(latency_ms, jitter_ms) of a ``latency`` step."""
        if isinstance(self.value, Mapping):
            return float(self.value.get("ms", DEFAULT_LATENCY_MS)), float(self.value.get("jitter_ms", 0.0))
        return (float(self.value) if self.value is not None else DEFAULT_LATENCY_MS), 0.0

    def count(self) -> int:
        """Replicas killed by ``kill-one`` / target replicas of ``scale``."""
        if self.action == "kill-one":
            return int(self.value) if isinstance(self.value, int | float) else 1
        if self.action == "scale":
            return int(self.value) if isinstance(self.value, int | float) else 0
        raise ValueError(f"{self.action} has no count")

    @property
    def label(self) -> str:
        """Short human form, also the FaultWindow label: ``kill v2``, ``error-rate v2 20% (500)``."""
        a, v = self.action, self.variant
        if a == "kill-one":
            n = self.count()
            return f"kill {n} of {v}" if n != 1 else f"kill-one {v}"
        if a == "scale":
            return f"scale {v} to {self.count()}"
        if a == "error-rate":
            rate, status = self.error_rate()
            return f"error-rate {v} {rate:.0%} ({status})"
        if a == "latency":
            ms, jitter = self.latency()
            return f"latency {v} +{ms:g}ms" + (f" (jitter {jitter:g}ms)" if jitter else "")
        if a == "weights":
            if isinstance(self.value, Mapping):
                return "weights " + ",".join(f"{k}={w}" for k, w in self.value.items())
            return f"weights {v}={self.value}"
        return f"{a} {v}"

    def to_dict(self) -> dict[str, Any]:
        value: Any = dict(self.value) if isinstance(self.value, Mapping) else self.value
        return {"action": self.action, "variant": self.variant, "at_s": self.at_s, "duration_s": self.duration_s,
                "value": value, "label": self.label}


@dataclass(frozen=True)
class Scenario:
    """A named timeline of fault steps (times relative to load start)."""

    name: str
    steps: tuple[FaultStep, ...]
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError("scenario.name", f"must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise SpecError("scenario.steps", "a scenario needs at least one step")
        for i, step in enumerate(self.steps):
            if not isinstance(step, FaultStep):
                raise SpecError(f"scenario.steps[{i}]", f"must be a FaultStep, got {type(step).__name__}")
        _check_overlaps(self.steps, "scenario.steps")

    def windows(self) -> tuple[FaultWindow, ...]:
        """The planned windows, in step order (the runner records the actual ones)."""
        return tuple(FaultWindow(s.label, s.at_s, s.end_s) for s in self.steps)

    def end_s(self) -> float:
        """When the last step is over (an open-ended step counts from its start)."""
        return max(s.end_s if s.end_s is not None else s.at_s for s in self.steps)

    @property
    def fault_steps(self) -> tuple[FaultStep, ...]:
        return tuple(s for s in self.steps if s.is_fault)

    @property
    def targets(self) -> tuple[str, ...]:
        """Variants a fault step breaks, in first-seen order."""
        return tuple(dict.fromkeys(s.variant for s in self.fault_steps))

    def shifted(self, offset_s: float) -> Scenario:
        """The same timeline ``offset_s`` seconds later."""
        return Scenario(self.name, tuple(FaultStep(s.action, s.variant, s.at_s + offset_s, s.duration_s, s.value)
                                         for s in self.steps), self.description)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "steps": [s.to_dict() for s in self.steps]}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(action: str, value: Any, where: str) -> None:
    """Type and range of a step's value for its action (SpecError naming ``where``)."""
    if action in ("kill", "unready"):
        if value is not None:
            raise SpecError(where, f"{action} takes no value, got {value!r}")
    elif action in ("kill-one", "scale"):
        if value is None and action == "kill-one":
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if action == "kill-one" else 0):
            what = "replicas to kill (an integer >= 1)" if action == "kill-one" else "a replica count (integer >= 0)"
            raise SpecError(where, f"{action} needs {what}, got {value!r}")
        if value > 100:
            raise SpecError(where, f"{value} replicas is more than the 100 a variant may have")
    elif action == "error-rate":
        rate, status = (value.get("rate", 1.0), value.get("status", DEFAULT_ERROR_STATUS)) if isinstance(
            value, Mapping) else (1.0 if value is None else value, DEFAULT_ERROR_STATUS)
        if isinstance(value, Mapping) and set(value) - {"rate", "status"}:
            raise SpecError(where, f"error-rate takes rate and status, got {sorted(value)}")
        if not _is_number(rate) or not 0.0 < float(rate) <= 1.0:
            raise SpecError(where, f"error rate must be a number in (0, 1], got {rate!r}")
        if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
            raise SpecError(where, f"error status must be a 5xx status, got {status!r}")
    elif action == "latency":
        ms, jitter = (value.get("ms", DEFAULT_LATENCY_MS), value.get("jitter_ms", 0.0)) if isinstance(
            value, Mapping) else (DEFAULT_LATENCY_MS if value is None else value, 0.0)
        if isinstance(value, Mapping) and set(value) - {"ms", "jitter_ms"}:
            raise SpecError(where, f"latency takes ms and jitter_ms, got {sorted(value)}")
        for name, number in (("latency", ms), ("jitter", jitter)):
            if not _is_number(number) or not math.isfinite(float(number)) or not 0.0 <= float(number) <= 60_000.0:
                raise SpecError(where, f"{name} must be milliseconds in 0..60000, got {number!r}")
        if float(ms) <= 0:
            raise SpecError(where, f"latency must be positive, got {ms!r}")
    elif action == "weights":
        if isinstance(value, Mapping):
            if not value:
                raise SpecError(where, "weights must name at least one variant")
            for name, w in value.items():
                if not isinstance(name, str) or (not _is_number(w) and not isinstance(w, str)):
                    raise SpecError(where, f"weights must map variant names to weights, got {name!r}: {w!r}")
        elif not _is_number(value) and not isinstance(value, str):
            raise SpecError(where, f"weights needs a {{variant: weight}} mapping or a weight, got {value!r}")


def _resource(step: FaultStep) -> tuple[str, str]:
    """What a step changes; two overlapping steps must not change the same thing."""
    if step.action in ("kill", "kill-one", "scale"):
        return ("replicas", step.variant)
    if step.action == "weights":
        return ("weights", "")
    return (step.action, step.variant)


def _check_overlaps(steps: Sequence[FaultStep], where: str) -> None:
    # Undoing one of two overlapping changes to the same thing would also undo the other.
    for j, b in enumerate(steps):
        for i in range(j):
            a = steps[i]
            if _resource(a) != _resource(b):
                continue
            a_end = math.inf if a.end_s is None else a.end_s
            b_end = math.inf if b.end_s is None else b.end_s
            if a.at_s < b_end and b.at_s < a_end:
                span = f"{a.at_s:g}-{'end' if a.end_s is None else f'{a.end_s:g}'} s"
                raise SpecError(f"{where}[{j}].at", f"{b.label!r} overlaps step {i} ({a.label!r}, {span}), "
                                "which changes the same thing; run them one after the other")


__all__ = [
    "ACTIONS",
    "DEFAULT_ERROR_RATE",
    "DEFAULT_ERROR_STATUS",
    "DEFAULT_LATENCY_MS",
    "FAULT_ACTIONS",
    "KNOB_ACTIONS",
    "Action",
    "FaultStep",
    "FaultWindow",
    "Scenario",
]
