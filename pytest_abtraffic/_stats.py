"""Statistics that decide whether an observed traffic split matches the configured one.

Three questions, three tools:

* **Is the split exactly what was configured?**  A sample ratio mismatch (SRM) test of the
  observed counts against the configured weights: Pearson chi-square or the G-test for any number
  of variants, the exact two-sided binomial test for two variants at small N (``method="auto"``
  uses it for two variants while the smaller expected count is below 100, chi-square otherwise).
  A failed SRM test is evidence that routing is off; a passed one proves nothing on its own.
* **Is every share within +-tolerance of its weight?**  An equivalence test (TOST): each
  variant's two-sided Wilson interval at ``confidence`` must lie inside ``[w - tol, w + tol]``.
  Using the two-sided interval makes each one-sided test run at ``(1 - confidence) / 2``, which is
  conservative and matches how the interval is reported.  *Multiplicity*: the claim "all k variants
  are within tolerance" is an intersection-union test, so each variant's test at the given level
  already bounds the chance of wrongly claiming the whole split holds; no Bonferroni correction is
  applied to the intervals.  The price is paid on the power side instead: the request planner splits
  the allowed miss rate ``1 - power`` over the k variants (for k >= 3; for two variants the two
  shares are complements and fail together).
* **Can a load run stop early?**  :class:`SequentialSplitTest` is anytime-valid: a
  Dirichlet-multinomial mixture Bayes factor (Lindon & Malek, arXiv 2011.03567) says "mismatch"
  and the matching beta-binomial mixture confidence sequence per variant says "holds", both valid
  however often the counts are peeked at.

Run-time dependencies are the standard library only (``math``, ``statistics``); the special
functions (regularized incomplete gamma, binomial probabilities after Loader's saddle-point
formulation) are written here so p-values agree with scipy to about 1e-12 relative.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any, Literal

from ._errors import SplitMismatchError

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


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Turn configured weights (any positive scale: 80/20, 0.8/0.2, 4/1) into shares summing to 1.

    Order is preserved: it is the order rows appear in reports.
    """
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("weights must be a non-empty mapping of version -> positive weight")
    raw: dict[str, float] = {}
    for name, value in weights.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"weights: variant names must be non-empty strings, got {name!r}")
        if isinstance(value, bool | str):
            raise ValueError(f"weights[{name!r}] must be a positive number, got {value!r}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"weights[{name!r}] must be a positive number, got {value!r}") from None
        if not (v > 0.0 and math.isfinite(v)):
            raise ValueError(f"weights[{name!r}] must be a positive finite number, got {value!r}")
        raw[name] = v
    total = math.fsum(raw.values())
    if not math.isfinite(total):
        raise ValueError("weights: the sum of the weights overflows")
    return {name: v / total for name, v in raw.items()}


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
# SRM test


@dataclass(frozen=True)
class SrmResult:
    """Outcome of a sample-ratio-mismatch test.

    ``statistic`` is Pearson's chi-square, the G statistic, or (binomial) the count of the first
    configured variant.  ``dof`` is k - 1.  ``note`` flags approximations worth knowing about.
    """

    statistic: float
    p_value: float
    method: str
    dof: int
    note: str = ""

    def describe(self) -> str:
        if self.method == "binomial":
            stat = f"exact binomial (first variant count {self.statistic:,.0f})"
        elif self.method == "g":
            stat = f"G = {self.statistic:.4g}, dof {self.dof}"
        else:
            stat = f"chi2 = {self.statistic:.4g}, dof {self.dof}"
        return f"SRM {stat}, {_p_is(self.p_value)}"


def _srm(observed: list[int], probs: list[float], method: str) -> SrmResult:
    k = len(observed)
    n = sum(observed)
    dof = k - 1
    if method == "auto":
        small = n * min(probs) < _AUTO_BINOMIAL_MIN_EXPECTED
        method = "binomial" if k == 2 and small else "chi2"
    if method == "binomial" and k != 2:
        raise ValueError(f"method 'binomial' needs exactly two variants, got {k}")
    if n == 0 or k == 1:
        return SrmResult(0.0, 1.0, method, dof)
    if method == "binomial":
        return SrmResult(float(observed[0]), binomial_two_sided_p(observed[0], n, probs[0]), method, dof)
    expected = [n * p for p in probs]
    note = ""
    if min(expected) < 5.0:
        note = "some expected counts are below 5: the chi-square approximation is rough"
    if method == "chi2":
        stat = math.fsum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    else:
        # 2 sum O ln(O/E) == 2 sum [O ln(O/E) + E - O] because sum O == sum E; the second form has
        # no cancellation and an O = 0 cell contributes its E (i.e. 0 * ln 0 = 0).
        stat = 2.0 * math.fsum(_bd0(float(o), e) for o, e in zip(observed, expected, strict=True))
    return SrmResult(stat, chi2_sf(stat, dof), method, dof, note)


def srm_test(
    counts: Mapping[str, int],
    weights: Mapping[str, float],
    method: Method = "auto",
) -> SrmResult:
    """Sample ratio mismatch test of observed counts against configured weights.

    Missing variants count 0.  A positive count for a version that is not in ``weights`` is a
    ValueError here (it cannot be tested against a ratio); :func:`check_split` reports such
    traffic as a failure instead.
    """
    _check_method(method)
    shares = normalize_weights(weights)
    clean = _clean_counts(counts)
    extra = sorted(name for name, c in clean.items() if name not in shares and c > 0)
    if extra:
        raise ValueError(
            f"counts: version(s) {', '.join(map(repr, extra))} are not in weights; "
            "check_split reports such traffic as a failure"
        )
    return _srm([clean.get(name, 0) for name in shares], list(shares.values()), method)


# --------------------------------------------------------------------------------------------
# intervals and the tolerance (equivalence) check


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
# results


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


@dataclass(frozen=True)
class VariantRow:
    """One line of the report.  ``weight`` and ``share`` are fractions (0..1).

    ``p_value`` is this variant against all others (one-vs-rest, unadjusted; it locates the
    offender); None for versions that were not configured.  ``expected`` is False for those.
    """

    name: str
    weight: float
    count: int
    share: float
    ci_low: float
    ci_high: float
    within_tolerance: bool
    p_value: float | None = None
    expected: bool = True

    def status(self, tolerance: float) -> str:
        """yes: interval inside the margin; no: entirely outside it; unclear: needs more data."""
        if self.within_tolerance:
            return "yes"
        if not self.expected:
            return "no"
        if self.ci_high < self.weight - tolerance or self.ci_low > self.weight + tolerance:
            return "no"
        return "unclear"


@dataclass(frozen=True)
class SplitResult:
    """The verdict on a split, with everything needed to explain it."""

    rows: tuple[VariantRow, ...]
    total: int
    unit: str
    srm: SrmResult
    alpha: float
    tolerance: float
    confidence: float
    srm_ok: bool
    tolerance_ok: bool
    verdict: str
    unexpected: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.srm_ok and self.tolerance_ok

    def table(self) -> str:
        """A fixed-width table: variant, weight, count, share, interval, p-value, within."""
        header = (
            "variant",
            "weight",
            "count",
            "share",
            f"{_conf_label(self.confidence)} interval",
            "p-value",
            f"within ±{_pp(self.tolerance)}",
        )
        body = [
            (
                r.name,
                _pct(r.weight),
                f"{r.count:,}",
                _pct(r.share),
                f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]",
                "-" if r.p_value is None else _fmt_p(r.p_value),
                r.status(self.tolerance),
            )
            for r in self.rows
        ]
        lines = [header, *body]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        right = {1, 2, 3}

        def fmt(line: tuple[str, ...]) -> str:
            cells = [
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        out = [fmt(line) for line in lines]
        out.append(f"total: {self.total:,} {self.unit}; {self.srm.describe()} (alpha {self.alpha:g})")
        if self.srm.note:
            out.append(f"note: {self.srm.note}")
        out.extend(f"note: {note}" for note in self.notes)
        return "\n".join(out)

    def message(self) -> str:
        """Verdict first (pytest's short summary shows the first line), then the table."""
        return f"{self.verdict}\n{self.table()}"

    def __str__(self) -> str:
        return self.message()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (plain floats, ints, strings, lists) for reports and artifacts."""
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "total": self.total,
            "unit": self.unit,
            "alpha": self.alpha,
            "tolerance": self.tolerance,
            "confidence": self.confidence,
            "srm_ok": self.srm_ok,
            "tolerance_ok": self.tolerance_ok,
            "srm": {
                "method": self.srm.method,
                "statistic": self.srm.statistic,
                "p_value": self.srm.p_value,
                "dof": self.srm.dof,
                "note": self.srm.note,
            },
            "rows": [
                {
                    "name": r.name,
                    "weight": r.weight,
                    "count": r.count,
                    "share": r.share,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "p_value": r.p_value,
                    "within_tolerance": r.within_tolerance,
                    "expected": r.expected,
                    "status": r.status(self.tolerance),
                }
                for r in self.rows
            ],
            "unexpected": list(self.unexpected),
            "notes": list(self.notes),
        }

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise SplitMismatchError(self.message())


def check_split(
    counts: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    tolerance: float = 0.02,
    confidence: float = 0.999,
    alpha: float = 0.001,
    unit: Unit = "requests",
    method: Method = "auto",
    notes: Iterable[str] = (),
) -> SplitResult:
    """Judge observed counts against configured weights; never raises on a mismatch.

    Passing needs both: the SRM test does not reject at ``alpha`` (the ratio among configured
    variants is plausible) and every variant's Wilson interval at ``confidence`` lies inside its
    weight +- ``tolerance`` (the equivalence claim).  Traffic to a version that is not configured
    fails the check.  Shares and intervals are of all counted units; the SRM test and per-row
    p-values compare the configured variants with each other.
    """
    tol = _unit_interval("tolerance", tolerance)
    conf = _unit_interval("confidence", confidence)
    a = _unit_interval("alpha", alpha)
    _check_unit(unit)
    _check_method(method)
    shares = normalize_weights(weights)
    clean = _clean_counts(counts)
    unexpected = tuple(name for name, c in clean.items() if name not in shares and c > 0)
    known = [clean.get(name, 0) for name in shares]
    probs = list(shares.values())
    total = sum(known) + sum(clean[name] for name in unexpected)
    srm = _srm(known, probs, method)
    z = _z(conf)

    rows: list[VariantRow] = []
    for i, (name, w) in enumerate(shares.items()):
        c = known[i]
        lo, hi = _wilson(c, total, z) if total else (0.0, 1.0)
        if len(known) <= 2:
            p_row = srm.p_value
        else:
            rest = sum(known) - c
            p_row = _srm([c, rest], [w, 1.0 - w], srm.method).p_value  # chi2 or g: k >= 3 here
        inside = total > 0 and lo >= w - tol and hi <= w + tol
        rows.append(VariantRow(name, w, c, c / total if total else 0.0, lo, hi, inside, p_row))
    for name in unexpected:
        c = clean[name]
        lo, hi = _wilson(c, total, z)
        rows.append(VariantRow(name, 0.0, c, c / total, lo, hi, False, None, expected=False))

    srm_ok = srm.p_value >= a
    tolerance_ok = total > 0 and all(r.within_tolerance for r in rows)
    partial = SplitResult(
        rows=tuple(rows),
        total=total,
        unit=unit,
        srm=srm,
        alpha=a,
        tolerance=tol,
        confidence=conf,
        srm_ok=srm_ok,
        tolerance_ok=tolerance_ok,
        verdict="",
        unexpected=unexpected,
        notes=tuple(notes),
    )
    return replace(partial, verdict=_verdict(partial, shares))


def _verdict(r: SplitResult, shares: Mapping[str, float]) -> str:
    """One line saying what went wrong (or that the split holds), naming the variants."""
    tol = _pp(r.tolerance)
    if r.total == 0:
        return f"split not verified: no {r.unit} were counted"
    if r.ok:
        return (
            f"split holds: every variant's {_conf_label(r.confidence)} interval lies within its weight "
            f"± {tol} and SRM {_p_is(r.srm.p_value)} >= {r.alpha:g} ({r.total:,} {r.unit})"
        )

    def served(row: VariantRow) -> str:
        return f"{row.name} served {_pct(row.share)} [{_pct(row.ci_low)}, {_pct(row.ci_high)}]"

    reasons: list[str] = []
    mismatch = False
    named: set[str] = set()
    if r.unexpected:
        mismatch = True
        stray = [row for row in r.rows if not row.expected]
        n_stray = sum(row.count for row in stray)
        which = ", ".join(f"{row.name} ({row.count:,})" for row in stray)
        reasons.append(
            f"{n_stray:,} of {r.total:,} {r.unit} ({_pct(n_stray / r.total)}) went to versions "
            f"not in the configured weights: {which}"
        )
        named.update(row.name for row in stray)
    known_rows = [row for row in r.rows if row.expected]
    # Two shares (and no stray traffic) are complements: naming one of them says it all.
    complements = len(known_rows) == 2 and not r.unexpected
    if not r.srm_ok:
        mismatch = True
        n_known = sum(row.count for row in known_rows)

        def residual(row: VariantRow) -> float:
            e = n_known * row.weight
            return abs(row.count - e) / math.sqrt(e)

        worst = max(known_rows, key=residual)
        if r.unexpected:  # the SRM test compares configured versions with each other
            clause = (
                f"among configured versions {worst.name} got {_pct(worst.count / n_known)} of {n_known:,} "
                f"{r.unit}; configured {_pct(worst.weight)}; SRM {_p_is(r.srm.p_value)} < {r.alpha:g}"
            )
        else:
            clause = (
                f"{served(worst)} of {r.total:,} {r.unit}; configured {_pct(worst.weight)} ± {tol}; "
                f"SRM {_p_is(r.srm.p_value)} < {r.alpha:g}"
            )
            if worst.within_tolerance:
                clause += " (inside the tolerance, but not the configured ratio)"
        reasons.append(clause)
        named.add(worst.name)
        if complements:
            named.update(row.name for row in known_rows)
    for row in sorted(known_rows, key=lambda row: row.weight):  # minority first: the usual suspect
        if row.within_tolerance or row.name in named:
            continue
        if complements:
            named.update(other.name for other in known_rows)
        if row.status(r.tolerance) == "no":
            mismatch = True
            reasons.append(f"{served(row)}, outside configured {_pct(row.weight)} ± {tol}")
        else:
            reasons.append(
                f"{row.name}'s interval [{_pct(row.ci_low)}, {_pct(row.ci_high)}] at {r.total:,} {r.unit} "
                f"is too wide to show {_pct(row.weight)} ± {tol}"
            )
    if not mismatch:
        need = default_request_budget(shares, tolerance=r.tolerance, confidence=r.confidence)
        reasons.append(f"about {need:,} {r.unit} are needed")
    prefix = "split mismatch: " if mismatch else "split not verified: "
    return prefix + "; ".join(reasons)


def assert_split(
    counts: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    tolerance: float = 0.02,
    confidence: float = 0.999,
    alpha: float = 0.001,
    unit: Unit = "requests",
    method: Method = "auto",
    notes: Iterable[str] = (),
) -> SplitResult:
    """Like :func:`check_split`, but raise SplitMismatchError (verdict + table) when not ok."""
    result = check_split(
        counts,
        weights,
        tolerance=tolerance,
        confidence=confidence,
        alpha=alpha,
        unit=unit,
        method=method,
        notes=notes,
    )
    result.raise_if_failed()
    return result


# --------------------------------------------------------------------------------------------
# sequential (anytime-valid) test


@dataclass(frozen=True)
class SequentialState:
    """Where a sequential test stands after an update.

    ``p_anytime`` is min over updates of 1/BF (capped at 1): valid however often one peeks.
    ``decided_at`` is the unit count at which the current verdict was first reached.
    """

    n: int
    verdict: SequentialVerdict
    log_bayes_factor: float
    p_anytime: float
    decided: bool
    decided_at: int | None = None
    reason: str = ""


class SequentialSplitTest:
    """Anytime-valid split check, cheap enough to update every ~100 requests.

    *Mismatch*: the Dirichlet-multinomial mixture Bayes factor against the configured shares p0,
    prior Dirichlet(c p0), ``ln BF = ln B(c p0 + x) - ln B(c p0) - sum x_i ln p0_i``.  Under a correct
    split BF is a nonnegative martingale with mean 1, so by Ville's inequality it ever reaches
    1/alpha with probability at most alpha, whenever one looks.

    *Holds*: per variant, the beta-binomial mixture confidence sequence (the Dirichlet prior's
    Beta(c w, c (1 - w)) marginal), ``{theta : ln m_t - ln L_t(theta) < ln(1/(1 - confidence))}``,
    covers the true share at all times with probability >= confidence.  It is an interval around
    the observed share (the likelihood is log-concave), so checking that it excludes both
    ``w - tol`` and ``w + tol`` costs two logarithms per variant.  When every variant's sequence is
    inside its margin the verdict is "holds" (intersection-union: no multiplicity correction).

    Verdicts: "holds" sticks once reached; "mismatch" overrides it if the Bayes factor ever crosses
    (a detectable departure from the configured ratio fails the fixed check too).  Traffic to a
    version not in ``weights`` is an immediate mismatch: it has probability zero under the config.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        alpha: float = 0.001,
        tolerance: float = 0.02,
        confidence: float = 0.999,
        concentration: float = DEFAULT_CONCENTRATION,
    ) -> None:
        self.alpha = _unit_interval("alpha", alpha)
        self.tolerance = _unit_interval("tolerance", tolerance)
        self.confidence = _unit_interval("confidence", confidence)
        if isinstance(concentration, bool) or not (
            isinstance(concentration, int | float) and math.isfinite(concentration) and concentration > 0
        ):
            raise ValueError(f"concentration must be a positive finite number, got {concentration!r}")
        self.concentration = float(concentration)
        self.weights = normalize_weights(weights)
        # One version (a 100% rollout) has no ratio to test and a degenerate Beta(c, 0) marginal:
        # stray traffic is still a mismatch, and "holds" uses a uniform Beta(1, 1) mixture for the
        # version's share of all traffic.
        self._single = len(self.weights) == 1
        self._names = tuple(self.weights)
        p0 = tuple(self.weights.values())
        c = self.concentration
        self._a = tuple(c * p for p in p0)
        self._a_total = math.fsum(self._a)
        self._b = tuple(self._a_total - a for a in self._a)  # Beta marginal's second parameter
        self._lg_a = tuple(math.lgamma(a) for a in self._a)
        self._lg_a_total = math.lgamma(self._a_total)
        self._log_p0 = tuple(math.log(p) for p in p0)
        self._log_multi_beta_a = math.fsum(self._lg_a) - self._lg_a_total  # ln B(a)
        self._name_set = frozenset(self._names)
        # ln B(a_i, b_i) of each marginal
        self._log_beta_ab = tuple(
            la + math.lgamma(b) - self._lg_a_total if b > 0.0 else 0.0
            for la, b in zip(self._lg_a, self._b, strict=True)
        )
        self._log_k = -math.log(self.alpha)
        self._log_k_cs = -math.log1p(-self.confidence)
        # Margin edges and (ln theta, ln(1 - theta)) at each; an edge outside (0, 1) needs no check.
        self._edges = tuple((w - self.tolerance, w + self.tolerance) for w in p0)
        self._edge_logs_lo = tuple((math.log(lo), math.log1p(-lo)) if lo > 0.0 else None for lo, _ in self._edges)
        self._edge_logs_hi = tuple((math.log(hi), math.log1p(-hi)) if hi < 1.0 else None for _, hi in self._edges)
        self._last: tuple[int, ...] = tuple(0 for _ in self._names)
        self._max_log_bf = 0.0
        self._held = False
        self._state = SequentialState(0, "undecided", 0.0, 1.0, False)

    @property
    def state(self) -> SequentialState:
        return self._state

    def update(self, counts: Mapping[str, int]) -> SequentialState:
        """Feed cumulative counts (not increments); returns the new state.

        O(k) arithmetic and ~2k ``lgamma`` calls: a few microseconds, so calling it every 100
        requests costs nothing next to the requests themselves.
        """
        names = self._names
        x: list[int] = []
        for name in names:
            value = counts.get(name, 0)
            # plain non-negative ints skip the general validation (this runs in the load loop)
            x.append(value if type(value) is int and value >= 0 else _as_count(name, value))
        last = self._last
        for i in range(len(names)):
            if x[i] < last[i]:
                raise ValueError(
                    f"counts[{names[i]!r}] went down from {last[i]} to {x[i]}: update() takes cumulative counts"
                )
        stray = 0
        stray_names: list[str] = []
        if not counts.keys() <= self._name_set:  # a version that was never configured
            for name, value in counts.items():
                if name not in self._name_set:
                    c = _as_count(str(name), value)
                    if c > 0:
                        stray += c
                        stray_names.append(str(name))
        self._last = tuple(x)
        n_known = sum(x)
        n = n_known + stray
        prev = self._state

        lgamma = math.lgamma
        lg_total = lgamma(self._a_total + n_known)
        lg_ax = [lgamma(a + xi) for a, xi in zip(self._a, x, strict=True)]
        if stray:
            log_bf = math.inf
        else:
            # ln B(a + x) - ln B(a) - sum x_i ln p0_i, with ln B(v) = sum lgamma(v_i) - lgamma(sum v)
            log_bf = (
                sum(lg_ax)
                - lg_total
                - self._log_multi_beta_a
                - sum([xi * lp for xi, lp in zip(x, self._log_p0, strict=True)])
            )
        if log_bf > self._max_log_bf:
            self._max_log_bf = log_bf
        p_anytime = min(1.0, math.exp(-self._max_log_bf))

        if not self._held and not stray and n_known > 0:
            self._held = self._all_inside(x, n_known, lg_ax, lg_total)

        verdict: SequentialVerdict
        if self._max_log_bf >= self._log_k:
            verdict = "mismatch"
        elif self._held:
            verdict = "holds"
        else:
            verdict = "undecided"
        if verdict == prev.verdict:
            decided_at, reason = prev.decided_at, prev.reason
        else:
            decided_at = n if verdict != "undecided" else None
            reason = self._reason(verdict, n, stray_names)
        self._state = SequentialState(n, verdict, log_bf, p_anytime, verdict != "undecided", decided_at, reason)
        return self._state

    def _all_inside(self, x: list[int], n: int, lg_ax: list[float], lg_total: float) -> bool:
        """True when every variant's confidence sequence lies strictly inside its margin."""
        if self._single:  # all n units went to the one version: m = 1 / (n + 1), L(theta) = theta^n
            logs = self._edge_logs_lo[0]
            return logs is None or -math.log1p(n) - n * logs[0] >= self._log_k_cs
        for i, xi in enumerate(x):
            lo, hi = self._edges[i]
            share = xi / n
            if not lo < share < hi:
                return False
            log_m = lg_ax[i] + math.lgamma(self._b[i] + n - xi) - lg_total - self._log_beta_ab[i]
            for logs in (self._edge_logs_lo[i], self._edge_logs_hi[i]):
                if logs is None:
                    continue
                log_lik = (xi * logs[0] if xi else 0.0) + ((n - xi) * logs[1] if n - xi else 0.0)
                if log_m - log_lik < self._log_k_cs:
                    return False
        return True

    def _reason(self, verdict: str, n: int, stray: list[str]) -> str:
        if verdict == "undecided":
            return ""
        if verdict == "mismatch":
            if stray:
                return f"traffic reached versions not in the configured weights: {', '.join(stray)}"
            return (
                f"Bayes factor against the configured split reached 1/alpha = {1 / self.alpha:,.0f} after {n:,} units"
            )
        return (
            f"every variant's {_conf_label(self.confidence)} confidence sequence lies within its weight "
            f"± {_pp(self.tolerance)} after {n:,} units"
        )

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Current confidence sequence per variant (by bisection; for reports, not the hot path)."""
        x = self._last
        n = sum(x)
        out: dict[str, tuple[float, float]] = {}
        lg_total = math.lgamma(self._a_total + n)
        for i, name in enumerate(self._names):
            xi = x[i]
            if n == 0:
                out[name] = (0.0, 1.0)
                continue
            if self._single:
                log_m = -math.log1p(n)  # uniform mixture, xi == n
            else:
                log_m = math.lgamma(self._a[i] + xi) + math.lgamma(self._b[i] + n - xi) - lg_total
                log_m -= self._log_beta_ab[i]

            def excluded(theta: float, xi: int = xi, log_m: float = log_m) -> bool:
                log_lik = (xi * math.log(theta) if xi else 0.0) + ((n - xi) * math.log1p(-theta) if n - xi else 0.0)
                return log_m - log_lik >= self._log_k_cs

            share = xi / n
            out[name] = (
                _bisect_edge(excluded, 0.0, share) if xi > 0 else 0.0,
                _bisect_edge(excluded, 1.0, share) if xi < n else 1.0,
            )
        return out


def _bisect_edge(excluded: Callable[[float], bool], outside: float, inside: float) -> float:
    """Boundary between an excluded end (0 or 1) and the included point estimate."""
    a, b = outside, inside
    for _ in range(80):
        mid = (a + b) / 2.0
        if mid in (a, b):
            break
        if mid <= 0.0 or mid >= 1.0 or excluded(mid):
            a = mid
        else:
            b = mid
    return b


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
    shares = normalize_weights(weights)
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


# --------------------------------------------------------------------------------------------
# counting units


@dataclass(frozen=True)
class UnitTally:
    """Counts per version plus what was noticed while counting (e.g. mixed connections)."""

    counts: dict[str, int]
    unit: str
    mixed_connections: int = 0
    notes: tuple[str, ...] = ()


def tally_units(records: Iterable[tuple[str, str]], unit: Unit) -> UnitTally:
    """Count ``(version, connection_id)`` records per version, by request or by connection.

    When a split is decided per connection, requests on one connection are not independent and a
    request-level SRM test raises false alarms; count connections instead.  A connection served by
    several versions means routing is really per request: each (connection, version) pair is then
    counted once and a note says so.  A missing/empty version is counted as "unknown".
    """
    _check_unit(unit)
    counts: dict[str, int] = {}
    if unit == "requests":
        for version, _conn in records:
            v = version or _UNKNOWN
            counts[v] = counts.get(v, 0) + 1
        return UnitTally(counts, unit)
    seen: dict[str, str] = {}  # connection -> first version
    pairs: set[tuple[str, str]] = set()
    mixed: set[str] = set()
    for version, conn in records:
        v = version or _UNKNOWN
        if (conn, v) in pairs:
            continue
        pairs.add((conn, v))
        counts[v] = counts.get(v, 0) + 1
        first = seen.setdefault(conn, v)
        if first != v:
            mixed.add(conn)
    notes: tuple[str, ...] = ()
    if mixed:
        notes = (
            f"{len(mixed):,} of {len(seen):,} connections were served by more than one version: routing "
            "looks per request, not per connection; each (connection, version) pair was counted once",
        )
    return UnitTally(counts, unit, len(mixed), notes)


def counts_by_unit(records: Iterable[tuple[str, str]], unit: Unit) -> dict[str, int]:
    """Counts per version, by request or by connection; see :func:`tally_units` for the rules."""
    return tally_units(records, unit).counts


__all__ = [
    "DEFAULT_CONCENTRATION",
    "SequentialSplitTest",
    "SequentialState",
    "SequentialVerdict",
    "SplitResult",
    "SrmResult",
    "Unit",
    "UnitTally",
    "VariantRow",
    "assert_split",
    "binomial_two_sided_p",
    "check_split",
    "chi2_sf",
    "counts_by_unit",
    "default_request_budget",
    "normalize_weights",
    "plan_sample_size",
    "regularized_gamma_q",
    "srm_test",
    "tally_units",
    "tolerance_power",
    "wilson_interval",
]
