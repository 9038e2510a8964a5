"""Numbers and durations as the spec writes them; a leaf module the spec and the scenario grammar share."""

from __future__ import annotations

import math
import re

from ._errors import SpecError


def check_float(value: object, field_name: str, *, low: float, high: float | None = None,
                low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(field_name, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < low or (low_open and number == low) or (
        high is not None and number > high
    ):
        lower = f"> {low:g}" if low_open else f">= {low:g}"
        bound = lower if high is None else f"{lower} and <= {high:g}"
        raise SpecError(field_name, f"must be {bound}, got {value!r}")
    return number


_DURATION = re.compile(r"^(?P<num>\d+(\.\d+)?)(?P<unit>ms|s|m)$")


def parse_duration(value: object, field_name: str) -> float:
    """Seconds from a number or a Linkerd-style duration string (``"250ms"``, ``"3s"``, ``"1m"``)."""
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match is None:
            raise SpecError(field_name, f"duration {value!r} is not like '250ms', '3s' or '1m'")
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0}[match["unit"]]
        seconds = float(match["num"]) * scale
    else:
        seconds = check_float(value, field_name, low=0.0)
    if seconds <= 0:
        raise SpecError(field_name, f"duration must be positive, got {value!r}")
    return seconds


__all__ = ["check_float", "parse_duration"]
