"""Distributions: the incomplete gamma and chi-square tail, exact binomial probabilities, Wilson.

The special functions (regularized incomplete gamma, binomial probabilities after Loader's
saddle-point formulation) are written here so p-values agree with scipy to about 1e-12 relative.
"""

from __future__ import annotations

import math

from ._common import _LOG_SQRT_2PI, _NORMAL, _TIE_FACTOR, _as_count, _unit_interval

# --------------------------------------------------------------------------------------------
# special functions


def _gamma_p_series(s: float, x: float) -> float:
    """sum_{j>=0} x^j / (s (s+1) ... (s+j)); converges fast for x < s + 1."""
    term = 1.0 / s
    total = term
    denom = s
    for _ in range(100_000):
        denom += 1.0
        term *= x / denom
        total += term
        if term <= total * 1e-17:
            return total
    raise ArithmeticError(f"incomplete gamma series did not converge for s={s}, x={x}")


def _gamma_q_fraction(s: float, x: float) -> float:
    """Legendre's continued fraction for e^x x^-s Gamma(s, x), evaluated by modified Lentz.

    Used for x >= s + 1, where it converges in a few dozen steps and, unlike 1 - P, keeps full
    relative precision for tiny upper tails.
    """
    tiny = 1e-300
    b = x + 1.0 - s
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - s)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            return h
    raise ArithmeticError(f"incomplete gamma continued fraction did not converge for s={s}, x={x}")


def regularized_gamma_q(s: float, x: float) -> float:
    """Q(s, x) = Gamma(s, x) / Gamma(s), the upper tail of a Gamma(s) variable.

    Underflows gracefully to 0.0 for astronomically large x (p-values below ~1e-308).
    """
    if not s > 0.0:
        raise ValueError(f"s must be positive, got {s!r}")
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_front = s * math.log(x) - x - math.lgamma(s)
    if x < s + 1.0:
        return max(0.0, 1.0 - math.exp(log_front) * _gamma_p_series(s, x))
    return math.exp(log_front) * _gamma_q_fraction(s, x)


def chi2_sf(statistic: float, dof: int) -> float:
    """Upper tail P(X >= statistic) of a chi-square variable with ``dof`` degrees of freedom."""
    if dof <= 0 or statistic <= 0.0:
        return 1.0
    if math.isinf(statistic):
        return 0.0
    if dof == 1:
        return math.erfc(math.sqrt(statistic / 2.0))  # exact identity, full precision
    if dof == 2:
        return math.exp(-statistic / 2.0)
    return regularized_gamma_q(dof / 2.0, statistic / 2.0)


def _stirling_error(n: int) -> float:
    """ln(n!) - [(n + 1/2) ln n - n + ln sqrt(2 pi)], the error of Stirling's formula."""
    if n <= 15:
        return math.lgamma(n + 1.0) - (n + 0.5) * math.log(n) + n - _LOG_SQRT_2PI
    nn = 1.0 / (float(n) * n)
    # Stirling series: B_2k / (2k (2k - 1) n^(2k-1)); five terms reach double precision for n > 15.
    return (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - nn / 1188) * nn) * nn) * nn) / n


def _bd0(x: float, m: float) -> float:
    """x ln(x/m) + m - x, computed without cancellation when x is close to m (Loader 2000)."""
    if x == 0.0:
        return m
    if abs(x - m) < 0.1 * (x + m):
        v = (x - m) / (x + m)
        total = (x - m) * v
        ej = 2.0 * x * v
        v2 = v * v
        j = 1
        while True:
            ej *= v2
            nxt = total + ej / (2 * j + 1)
            if nxt == total:
                return total
            total = nxt
            j += 1
    return x * math.log(x / m) + m - x


def _binom_pmf(x: int, n: int, p: float) -> float:
    """P(X = x) for X ~ Binomial(n, p) to full relative precision, even for n in the millions."""
    if x < 0 or x > n:
        return 0.0
    q = 1.0 - p
    if x == 0:
        return math.exp(n * math.log1p(-p))
    if x == n:
        return math.exp(n * math.log(p))
    log_core = (
        _stirling_error(n)
        - _stirling_error(x)
        - _stirling_error(n - x)
        - _bd0(float(x), n * p)
        - _bd0(float(n - x), n * q)
    )
    log_scale = math.log(2.0 * math.pi * x * (n - x) / n)
    return math.exp(log_core - 0.5 * log_scale)


def _binom_lower_tail(k: int, n: int, p: float) -> float:
    """P(X <= k) for k at or below the mode: sum downward while terms still matter."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    odds = (1.0 - p) / p
    term = _binom_pmf(k, n, p)
    total = term
    i = k
    while i > 0 and term > total * 1e-17:
        term *= i / (n - i + 1) * odds
        total += term
        i -= 1
    return total


def _binom_upper_tail(j: int, n: int, p: float) -> float:
    """P(X >= j) for j at or above the mode: sum upward while terms still matter."""
    if j <= 0:
        return 1.0
    if j > n:
        return 0.0
    odds = p / (1.0 - p)
    term = _binom_pmf(j, n, p)
    total = term
    i = j
    while i < n and term > total * 1e-17:
        term *= (n - i) / (i + 1) * odds
        total += term
        i += 1
    return total


def binomial_two_sided_p(k: int, n: int, p: float) -> float:
    """Exact two-sided binomial p-value: total probability of outcomes no likelier than ``k``.

    Same convention as ``scipy.stats.binomtest`` (relative tie tolerance 1e-7).
    """
    if n == 0:
        return 1.0
    mean = n * p
    if k == mean:
        return 1.0
    threshold = _binom_pmf(k, n, p) * _TIE_FACTOR
    if k < mean:
        # pmf is non-increasing on [ceil(np), n]: find the first index at or below the threshold
        lo, hi = math.ceil(mean), n
        if _binom_pmf(hi, n, p) > threshold:
            other = 0.0
        else:
            while lo < hi:
                mid = (lo + hi) // 2
                if _binom_pmf(mid, n, p) <= threshold:
                    hi = mid
                else:
                    lo = mid + 1
            other = _binom_upper_tail(lo, n, p)
        total = _binom_lower_tail(k, n, p) + other
    else:
        # pmf is non-decreasing on [0, floor(np)]: find the last index at or below the threshold
        lo, hi = 0, math.floor(mean)
        if _binom_pmf(0, n, p) > threshold:
            other = 0.0
        else:
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _binom_pmf(mid, n, p) <= threshold:
                    lo = mid
                else:
                    hi = mid - 1
            other = _binom_lower_tail(lo, n, p)
        total = other + _binom_upper_tail(k, n, p)
    return min(1.0, total)


def _z(two_sided_confidence: float) -> float:
    return _NORMAL.inv_cdf(0.5 + two_sided_confidence / 2.0)


# --------------------------------------------------------------------------------------------
# intervals


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided Wilson score interval for a proportion.

    Chosen over the Wald interval because it stays inside [0, 1] and keeps near-nominal coverage
    for small shares (a 10% canary) and small N; (0, 1) when n == 0.
    """
    conf = _unit_interval("confidence", confidence)
    n = _as_count("n", n)
    successes = _as_count("successes", successes)
    if successes > n:
        raise ValueError(f"successes ({successes}) must not exceed n ({n})")
    if n == 0:
        return 0.0, 1.0
    return _wilson(successes, n, _z(conf))


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    z2 = z * z
    denom = 2.0 * (n + z2)
    center = (2.0 * n * p + z2) / denom
    delta = z / denom * math.sqrt(4.0 * n * p * (1.0 - p) + z2)
    lo = 0.0 if x == 0 else max(0.0, center - delta)
    hi = 1.0 if x == n else min(1.0, center + delta)
    return lo, hi
