"""Planning: how many units a run needs, and the exact pass probability of the tolerance check."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ._common import _NORMAL, _as_count, _unit_interval, normalize_weights
from ._distributions import _binom_lower_tail, _binom_upper_tail, _wilson, _z


def tolerance_power(weight: float, n: int, *, tolerance: float, confidence: float) -> float:
    """Exact probability that a correct split passes the tolerance check at ``n`` units.

    That is P(Wilson interval lies inside [w - tol, w + tol]) when the true share is exactly ``w``:
    summed over the binomial outcomes, no simulation.
    """
    w = _unit_interval("weight", weight)
    tol = _unit_interval("tolerance", tolerance)
    z = _z(_unit_interval("confidence", confidence))
    n = _as_count("n", n)
    if n == 0:
        return 0.0
    lo_edge, hi_edge = w - tol, w + tol
    # Both Wilson bounds increase with x, so the passing outcomes form one run [x_min, x_max].
    a, b = 0, n + 1  # first x whose lower bound clears the lower edge
    while a < b:
        mid = (a + b) // 2
        if _wilson(mid, n, z)[0] >= lo_edge:
            b = mid
        else:
            a = mid + 1
    x_min = a
    a, b = -1, n  # last x whose upper bound stays under the upper edge
    while a < b:
        mid = (a + b + 1) // 2
        if _wilson(mid, n, z)[1] <= hi_edge:
            a = mid
        else:
            b = mid - 1
    x_max = a
    if x_min > x_max:
        return 0.0
    mode = math.floor((n + 1) * w)
    below = _binom_lower_tail(x_min - 1, n, w) if x_min - 1 <= mode else 1.0 - _binom_upper_tail(x_min, n, w)
    above = _binom_upper_tail(x_max + 1, n, w) if x_max + 1 >= mode else 1.0 - _binom_lower_tail(x_max, n, w)
    return max(0.0, 1.0 - below - above)


# --------------------------------------------------------------------------------------------
# planning


def plan_sample_size(
    p0: float,
    *,
    p1: float | None = None,
    tolerance: float | None = None,
    alpha: float = 0.001,
    power: float = 0.99,
) -> int:
    """Units (requests or connections) needed, for one of two questions.

    * ``p1`` given (SRM detection): a variant configured at ``p0`` really gets ``p1``; two-sided
      test at ``alpha`` with ``power``:
      ``n = [z(1-alpha/2) sqrt(p0 q0) + z(power) sqrt(p1 q1)]^2 / (p1 - p0)^2``.
    * ``tolerance`` given (equivalence): a correct split passes the +-tolerance check, whose
      interval is two-sided at ``1 - alpha``, with probability ``power``:
      ``n = [z(1-alpha/2) + z(1-(1-power)/2)]^2 p0 q0 / tol^2``, then raised if needed until the
      exact Wilson-interval pass probability (:func:`tolerance_power`) reaches ``power``.
    """
    w = _unit_interval("p0", p0)
    a = _unit_interval("alpha", alpha)
    pw = _unit_interval("power", power)
    if (p1 is None) == (tolerance is None):
        raise ValueError("give exactly one of p1 (SRM detection) or tolerance (equivalence)")
    z_a = _z(1.0 - a)
    if p1 is not None:
        alt = _unit_interval("p1", p1)
        if alt == w:
            raise ValueError("p1 must differ from p0")
        root = z_a * math.sqrt(w * (1 - w)) + _NORMAL.inv_cdf(pw) * math.sqrt(alt * (1 - alt))
        return max(1, math.ceil((root / (alt - w)) ** 2 - 1e-9))
    tol = _unit_interval("tolerance", tolerance)  # type: ignore[arg-type]
    n = max(1, math.ceil((z_a + _z(pw)) ** 2 * w * (1 - w) / tol**2 - 1e-9))
    # The normal approximation ignores the skew of the binomial at small shares (at w = 10% it
    # promises 0.99 where the exact pass probability is 0.988): step up in 0.1% increments.
    for _ in range(20_000):
        if tolerance_power(w, n, tolerance=tol, confidence=1.0 - a) >= pw:
            return n
        n += max(1, n // 1000)
    raise ArithmeticError(f"no sample size up to {n:,} reaches power {pw} for p0={w}, tolerance={tol}")


def default_request_budget(
    weights: Mapping[str, float],
    *,
    tolerance: float = 0.02,
    confidence: float = 0.999,
    power: float = 0.99,
) -> int:
    """Units for a fixed-N run so a correct split passes the tolerance check with ``power``.

    Per variant, :func:`plan_sample_size` in tolerance mode; the variant closest to 50% dominates.
    With three or more variants each must pass, so the miss rate ``1 - power`` is split evenly
    (Bonferroni); two shares are complements and pass or fail together.  A deviation of a full
    ``tolerance`` is caught by the same check at level ``(1 - confidence) / 2`` at any N, so no
    separate SRM power term is needed.
    """
    # A zero-weight variant is judged exactly (any unit it serves fails): it needs no units of its own.
    shares = {name: w for name, w in normalize_weights(weights).items() if w > 0.0}
    tol = _unit_interval("tolerance", tolerance)
    conf = _unit_interval("confidence", confidence)
    pw = _unit_interval("power", power)
    k = len(shares)
    if k == 1:
        # One version takes everything: only the Wilson lower bound of n/n must reach 1 - tol,
        # n / (n + z^2) >= 1 - tol; a correct rollout then passes with certainty.
        z = _z(conf)
        return max(1, math.ceil(z * z * (1.0 - tol) / tol - 1e-9))
    per_variant_power = pw if k <= 2 else 1.0 - (1.0 - pw) / k
    # The variant with the largest w(1-w) needs the most units; equal shares give equal answers.
    hardest = max(shares.values(), key=lambda w: w * (1.0 - w))
    candidates = {hardest, *(w for w in shares.values() if abs(w - hardest) < 1e-12)}
    return max(plan_sample_size(w, tolerance=tol, alpha=1.0 - conf, power=per_variant_power) for w in candidates)
