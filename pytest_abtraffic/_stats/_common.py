"""Shared pieces of the statistics engine: argument checking, weight normalisation, formatting."""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from statistics import NormalDist
from typing import Literal

Unit = Literal["requests", "connections"]
Method = Literal["chi2", "g", "binomial", "auto"]
SequentialVerdict = Literal["mismatch", "holds", "undecided"]

_UNITS: tuple[str, ...] = ("requests", "connections")
_METHODS: tuple[str, ...] = ("chi2", "g", "binomial", "auto")
# "auto" uses the exact binomial test for two variants while the smaller expected count is below
# this.  Exact sizes of chi-square at alpha = 0.001: 2-3.4x nominal with expected counts of 1-30,
# within 3% of nominal from 100 on; above that chi-square is what dashboards report and what the
# sample-size formula plans for (the exact test is slightly conservative: power 0.989 vs 0.991 at
# the planned 7,597 requests for 10% -> 12%).
_AUTO_BINOMIAL_MIN_EXPECTED = 100.0
# scipy.stats.binomtest treats pmf values within this relative factor as ties; matching it keeps
# the two-sided p-values identical when the distribution is symmetric (p = 0.5).
_TIE_FACTOR = 1.0 + 1e-7
_UNKNOWN = "unknown"
_NORMAL = NormalDist()
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# Default Dirichlet concentration c (prior a = c p0).  The prior spread of a share w is
# sqrt(w (1 - w) / (c + 1)): c = 500 puts it at 1.3-2.2 points for shares of 10-50%, the size of
# deviations worth catching.  Simulated (peeking every 100): 10% -> 12% is flagged at a median of
# ~4,100 requests (c = 200..700 gives 4,000..4,200); a correct 50/50 split "holds" at ~14,000.
DEFAULT_CONCENTRATION = 500.0


# --------------------------------------------------------------------------------------------
# argument checking


def _unit_interval(name: str, value: float) -> float:
    """Return ``value`` as a float strictly inside (0, 1), or raise ValueError naming ``name``."""
    if isinstance(value, bool | str):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return v


def _as_count(name: str, value: object) -> int:
    """A count must be a non-negative integer; integral floats (e.g. from JSON) are accepted."""
    if isinstance(value, bool):
        raise ValueError(f"counts[{name!r}] must be a non-negative integer, got {value!r}")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            n = int(value)
        else:
            raise ValueError(f"counts[{name!r}] must be a non-negative integer, got {value!r}") from None
    if n < 0:
        raise ValueError(f"counts[{name!r}] must be a non-negative integer, got {value!r}")
    return n


def _clean_counts(counts: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(counts, Mapping):
        raise ValueError(f"counts must be a mapping of version -> count, got {type(counts).__name__}")
    out: dict[str, int] = {}
    for name, value in counts.items():
        if not isinstance(name, str):
            raise ValueError(f"counts: variant names must be strings, got {name!r}")
        out[name] = _as_count(name, value)
    return out


def _check_unit(unit: str) -> str:
    if unit not in _UNITS:
        raise ValueError(f"unit must be one of {', '.join(_UNITS)}; got {unit!r}")
    return unit


def _check_method(method: str) -> str:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}; got {method!r}")
    return method


class Shares(dict[str, float]):
    """Weights already normalised by :func:`normalize_weights` (do not mutate).

    A verification normalises once at its entrance; the planner, the sequential test and the fixed
    test then take these shares as they are instead of normalising them again at every stop.
    """


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Turn configured weights (any scale: 80/20, 0.8/0.2, 4/1) into shares summing to 1.

    A weight of 0 is legal and means "must get no traffic" (the first and last step of a rollout);
    at least one weight must be positive.  Order is preserved: it is the order rows appear in
    reports.  Shares this function returned are passed through unchanged (they are a
    :class:`Shares`).
    """
    if isinstance(weights, Shares):
        return weights
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("weights must be a non-empty mapping of version -> non-negative weight")
    raw: dict[str, float] = {}
    for name, value in weights.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"weights: variant names must be non-empty strings, got {name!r}")
        if isinstance(value, bool | str):
            raise ValueError(f"weights[{name!r}] must be a non-negative number, got {value!r}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"weights[{name!r}] must be a non-negative number, got {value!r}") from None
        if not (v >= 0.0 and math.isfinite(v)):
            raise ValueError(f"weights[{name!r}] must be a non-negative finite number, got {value!r}")
        raw[name] = v
    total = math.fsum(raw.values())
    if not math.isfinite(total):
        raise ValueError("weights: the sum of the weights overflows")
    if total <= 0.0:
        raise ValueError("weights: all weights are zero; at least one variant must get traffic")
    return Shares({name: v / total for name, v in raw.items()})


# --------------------------------------------------------------------------------------------
# formatting


def _fmt_p(p: float) -> str:
    if p == 0.0:
        return "< 1e-300"  # underflow: the true value is below the smallest double
    if p >= 0.01:
        return f"{p:.3f}"
    return f"{p:.1e}"


def _p_is(p: float) -> str:
    """Render as 'p = 0.316', or 'p < 1e-300' when the value underflowed."""
    text = _fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _pct(x: float) -> str:
    if x == 0.0 or abs(x) >= 0.01:
        return f"{100 * x:.1f}%"
    if abs(x) >= 0.0001:
        return f"{100 * x:.2f}%"
    return f"{100 * x:.1g}%"


def _pp(tol: float) -> str:
    return f"{100 * tol:.1f} pp"


def _conf_label(conf: float) -> str:
    return f"{100 * conf:.10g}%"


def zero_weight_names(shares: Mapping[str, float]) -> tuple[str, ...]:
    """Variants configured at weight 0: any unit they serve is a failure, not a share to test."""
    return tuple(name for name, w in shares.items() if w == 0.0)
