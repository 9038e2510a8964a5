"""Per-version SLOs: latency quantiles and error rates, judged with intervals at the run's confidence.

A limit such as ``p99_ms<=250`` is checked for every version and for all traffic together
("overall").  Each check has three outcomes, never a silent pass:

* **pass**: the upper bound of the two-sided interval at ``confidence`` is at or under the limit,
  so the limit holds with that confidence;
* **fail**: the lower bound is above the limit (violated with that confidence);
* **inconclusive**: the interval straddles the limit, or there are too few requests for the
  bound to exist ("not enough requests to tell"); **nodata** when a scope has no requests at all.

An inconclusive or nodata check fails the SLO verdict (``ok`` is False, the message says "not
verified" and how many requests the check would need), as the split's "not verified" does: a CI
gate must not pass on a claim it could not show.  Each one-sided error is at most
``(1 - confidence) / 2``; with several checks the family-wise false-failure rate is at most their
number times that (no correction: the kit's defaults make it 0.05% per check).

Intervals are distribution-free:

* a latency quantile's bounds are order statistics whose ranks come from the binomial(n, q)
  distribution (the number of observations below the true q-quantile is binomial), valid for any
  continuous latency distribution;
* an error rate's bounds are Clopper-Pearson (exact binomial), which never covers less than the
  nominal level (Wilson can, for rates near 0 such as a 1% error budget).

Latency quantiles are over successful responses (a refused connection has no service latency);
the error rate is failed attempts over all attempts.  A failed attempt without a version header
(a connection error, a proxy 503) cannot be attributed to a version and counts in "overall" only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

from ._errors import SloViolationError, SpecError
from ._stats._common import _conf_label, _pct
from ._stats._distributions import _binom_lower_tail, _binom_upper_tail

SloStatus = Literal["pass", "fail", "inconclusive", "nodata"]
QUANTILE_METRICS: dict[str, float] = {"p50_ms": 0.50, "p90_ms": 0.90, "p95_ms": 0.95, "p99_ms": 0.99}
SLO_METRICS: tuple[str, ...] = (*QUANTILE_METRICS, "error_rate")
OVERALL = "overall"


class _Record(Protocol):
    @property
    def version(self) -> str: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def ok(self) -> bool: ...


# --------------------------------------------------------------------------------------------
# limits


@dataclass(frozen=True)
class SloLimit:
    """``metric <= limit``: a latency quantile in milliseconds or an error rate (a fraction)."""

    metric: str
    limit: float

    def __post_init__(self) -> None:
        if self.metric not in SLO_METRICS:
            raise SpecError("slo", f"unknown metric {self.metric!r}; choose from {', '.join(SLO_METRICS)}")
        value = self.limit
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SpecError("slo", f"{self.metric}: the limit must be a finite number, got {value!r}")
        if self.metric == "error_rate" and not 0.0 < value < 1.0:
            raise SpecError("slo", f"error_rate: the limit must be a fraction in (0, 1), got {value!r}")
        if self.metric != "error_rate" and value <= 0.0:
            raise SpecError("slo", f"{self.metric}: the limit must be a positive number of ms, got {value!r}")

    @property
    def label(self) -> str:
        return f"{self.metric}<={self.limit:g}"


def parse_slo(value: object, field_name: str = "slo") -> tuple[SloLimit, ...]:
    """``"p99_ms<=250,error_rate<=0.01"``, a mapping ``{"p99_ms": 250}`` or SloLimits -> limits."""
    if value is None or value == "" or value == ():
        return ()
    pairs: list[tuple[str, object]] = []
    if isinstance(value, str):
        for part in value.split(","):
            metric, sep, limit = part.partition("<=")
            if not sep or not metric.strip() or not limit.strip():
                raise SpecError(field_name, f"expected METRIC<=LIMIT[,METRIC<=LIMIT...] (metrics: "
                                f"{', '.join(SLO_METRICS)}), got {part.strip()!r}")
            try:
                number: object = float(limit.strip().removesuffix("ms"))
            except ValueError:
                raise SpecError(field_name, f"{metric.strip()}: limit {limit.strip()!r} is not a number") from None
            pairs.append((metric.strip(), number))
    elif isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, Sequence) and all(isinstance(v, SloLimit) for v in value):
        pairs = [(limit.metric, limit.limit) for limit in value if isinstance(limit, SloLimit)]
    else:
        raise SpecError(field_name, f"expected 'p99_ms<=250,error_rate<=0.01' or a mapping, got {value!r}")
    out: list[SloLimit] = []
    for name, bound in pairs:
        if any(o.metric == name for o in out):
            raise SpecError(field_name, f"{name} given twice")
        try:
            out.append(SloLimit(name, bound))  # type: ignore[arg-type]
        except SpecError as exc:
            raise SpecError(field_name, exc.message) from None
    return tuple(out)


# --------------------------------------------------------------------------------------------
# intervals


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k), summing the shorter tail (each helper is exact on its side of the mode)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    mode = math.floor((n + 1) * p)
    if k <= mode:
        return _binom_lower_tail(k, n, p)
    return 1.0 - _binom_upper_tail(k + 1, n, p)


@lru_cache(maxsize=4096)
def quantile_ranks(n: int, q: float, confidence: float) -> tuple[int | None, int | None]:
    """1-based ranks (l, u) with P(x_(l) <= xi_q) >= 1 - b and P(x_(u) >= xi_q) >= 1 - b, b = (1-conf)/2.

    The count of observations below the true q-quantile is binomial(n, q), so
    ``P(x_(u) >= xi_q) = P(Bin(n, q) <= u - 1)``; None where no rank reaches the level
    (too few observations for that bound).
    """
    beta = (1.0 - confidence) / 2.0
    if n <= 0:
        return None, None
    # u: smallest u in 1..n with cdf(u - 1) >= 1 - beta
    if _binom_cdf(n - 1, n, q) < 1.0 - beta:
        upper = None
    else:
        a, b = 0, n - 1
        while a < b:
            mid = (a + b) // 2
            if _binom_cdf(mid, n, q) >= 1.0 - beta:
                b = mid
            else:
                a = mid + 1
        upper = a + 1
    # l: largest l in 1..n with P(Bin >= l) = 1 - cdf(l - 1) >= 1 - beta, i.e. cdf(l - 1) <= beta
    if _binom_cdf(0, n, q) > beta:
        lower = None
    else:
        a, b = 0, n - 1
        while a < b:
            mid = (a + b + 1) // 2
            if _binom_cdf(mid, n, q) <= beta:
                a = mid
            else:
                b = mid - 1
        lower = a + 1
    return lower, upper


def quantile_interval(sorted_values: Sequence[float], q: float, confidence: float) -> tuple[float, float]:
    """Distribution-free two-sided interval for the q-quantile; -inf / +inf where a bound needs more data."""
    lower, upper = quantile_ranks(len(sorted_values), q, confidence)
    lo = sorted_values[lower - 1] if lower is not None else -math.inf
    hi = sorted_values[upper - 1] if upper is not None else math.inf
    return lo, hi


def quantile_estimate(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, as the load summary reports)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def _bisect_p(pred: Any, lo: float = 0.0, hi: float = 1.0) -> float:
    """Boundary of a monotone predicate on (0, 1): pred(lo side) False, pred(hi side) True."""
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2.0


@lru_cache(maxsize=65536)
def clopper_pearson(x: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion; (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    beta = (1.0 - confidence) / 2.0
    # lower: the p at which P(X >= x; p) = beta (that tail grows with p)
    lo = 0.0 if x == 0 else _bisect_p(lambda p: 1.0 - _binom_cdf(x - 1, n, p) >= beta)
    # upper: the p at which P(X <= x; p) = beta (that tail shrinks with p)
    hi = 1.0 if x == n else _bisect_p(lambda p: _binom_cdf(x, n, p) <= beta)
    return lo, hi


def limit_status(low: float, high: float, limit: float) -> SloStatus:
    """An upper limit judged on an interval: pass when it all lies at or under the limit, fail when
    it all lies over it, else inconclusive (SLOs and comparisons alike)."""
    if high <= limit:
        return "pass"
    if low > limit:
        return "fail"
    return "inconclusive"


# --------------------------------------------------------------------------------------------
# checks


@dataclass(frozen=True)
class SloCheck:
    """One limit for one scope (a version, or "overall")."""

    scope: str
    metric: str
    limit: float
    n: int
    observed: float | None
    low: float | None
    high: float | None
    status: SloStatus
    needed: int | None = None  # for inconclusive checks: about how many requests would decide it

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def _value(self, x: float | None) -> str:
        if x is None:
            return "-"
        if self.metric == "error_rate":
            return _pct(x)
        return f"{x:.3g} ms" if x < 1000 else f"{x:,.0f} ms"

    def interval(self) -> str:
        return f"[{self._value(self.low) if self.low is not None else '-inf'}, " \
               f"{self._value(self.high) if self.high is not None else '+inf'}]"

    def describe(self, confidence: float) -> str:
        limit = _pct(self.limit) if self.metric == "error_rate" else f"{self.limit:g} ms"
        head = f"{self.scope} {self.metric} <= {limit}"
        if self.status == "nodata":
            return f"{head}: no requests"
        body = (f"observed {self._value(self.observed)}, {_conf_label(confidence)} interval {self.interval()} "
                f"over {self.n:,} {'requests' if self.metric == 'error_rate' else 'responses'}")
        if self.status == "pass":
            return f"{head}: holds; {body}"
        if self.status == "fail":
            return f"{head}: violated; {body}"
        need = f"; about {self.needed:,} would be needed" if self.needed else ""
        return f"{head}: not enough requests to tell; {body}{need}"

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "metric": self.metric, "limit": self.limit, "n": self.n,
                "observed": _finite(self.observed), "low": _finite(self.low), "high": _finite(self.high),
                "status": self.status, "needed": self.needed}


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _needed_for_quantile(q: float, confidence: float) -> int:
    """Fewest observations for an upper bound to exist at all: 1 - q^n >= 1 - beta."""
    beta = (1.0 - confidence) / 2.0
    return math.ceil(math.log(beta) / math.log(q))


def judge_latency(latencies_ms: Iterable[float], metric: str, limit: float, confidence: float,
                  scope: str = OVERALL) -> SloCheck:
    """One latency-quantile limit on one scope's successful-response latencies."""
    q = QUANTILE_METRICS[metric]
    values = sorted(latencies_ms)
    n = len(values)
    if n == 0:
        return SloCheck(scope, metric, limit, 0, None, None, None, "nodata", _needed_for_quantile(q, confidence))
    lo, hi = quantile_interval(values, q, confidence)
    status = limit_status(lo, hi, limit)
    needed = None
    if status == "inconclusive":
        needed = max(_needed_for_quantile(q, confidence), 2 * n) if math.isinf(hi) else 2 * n
    return SloCheck(scope, metric, limit, n, quantile_estimate(values, q), None if math.isinf(lo) else lo,
                    None if math.isinf(hi) else hi, status, needed)


def judge_error_rate(failures: int, n: int, limit: float, confidence: float, scope: str = OVERALL) -> SloCheck:
    """One error-rate limit on one scope: ``failures`` failed attempts out of ``n``."""
    if n == 0:
        need = math.ceil(-math.log((1.0 - confidence) / 2.0) / limit)
        return SloCheck(scope, "error_rate", limit, 0, None, None, None, "nodata", need)
    lo, hi = clopper_pearson(failures, n, confidence)
    status = limit_status(lo, hi, limit)
    needed = None
    if status == "inconclusive":
        # with no failures at all the upper bound is about -ln(beta)/n
        needed = max(2 * n, math.ceil(-math.log((1.0 - confidence) / 2.0) / limit))
    return SloCheck(scope, "error_rate", limit, n, failures / n, lo, hi, status, needed)


@dataclass(frozen=True)
class SloReport:
    """Every SLO check of a run, with its verdict line first."""

    checks: tuple[SloCheck, ...]
    confidence: float
    limits: tuple[SloLimit, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        failed = [c for c in self.checks if c.status == "fail"]
        unclear = [c for c in self.checks if c.status in ("inconclusive", "nodata")]
        labels = ", ".join(limit.label for limit in self.limits)
        if not failed and not unclear:
            return (f"slo holds: {labels} hold for every version and overall at {_conf_label(self.confidence)} "
                    "confidence")
        if failed:
            return "slo violated: " + "; ".join(c.describe(self.confidence) for c in failed + unclear)
        return "slo not verified: " + "; ".join(c.describe(self.confidence) for c in unclear)

    def table_rows(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """Header and one row per check (the terminal and HTML tables both draw these)."""
        header = ("scope", "limit", "observed", f"{_conf_label(self.confidence)} interval", "n", "status")
        body: list[tuple[str, ...]] = []
        for c in self.checks:
            limit = _pct(c.limit) if c.metric == "error_rate" else f"{c.limit:g} ms"
            body.append((c.scope, f"{c.metric} <= {limit}", c._value(c.observed), c.interval(), f"{c.n:,}",
                         c.status))
        return header, body

    def notes(self) -> list[str]:
        return []

    def table(self) -> str:
        header, body = self.table_rows()
        lines = [header, *body]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                         for line in lines)

    def message(self) -> str:
        return f"{self.verdict}\n{self.table()}"

    def __str__(self) -> str:
        return self.message()

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "verdict": self.verdict, "confidence": self.confidence,
                "limits": [{"metric": limit.metric, "limit": limit.limit} for limit in self.limits],
                "checks": [c.to_dict() for c in self.checks]}

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise SloViolationError(self.message())


def check_slo(records: Iterable[_Record], limits: Sequence[SloLimit], *, confidence: float,
              versions: Sequence[str]) -> SloReport:
    """Judge every limit for every version in ``versions`` and overall; never raises on a violation."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    latencies: dict[str, list[float]] = {v: [] for v in (*versions, OVERALL)}
    attempts: dict[str, int] = dict.fromkeys((*versions, OVERALL), 0)
    failures: dict[str, int] = dict.fromkeys((*versions, OVERALL), 0)
    for r in records:
        scopes = (r.version, OVERALL) if r.version in attempts and r.version != OVERALL else (OVERALL,)
        for scope in scopes:
            attempts[scope] += 1
            if r.ok:
                latencies[scope].append(r.latency_ms)
            else:
                failures[scope] += 1
    checks: list[SloCheck] = []
    for scope in (*versions, OVERALL):
        for limit in limits:
            if limit.metric == "error_rate":
                checks.append(judge_error_rate(failures[scope], attempts[scope], limit.limit, confidence, scope))
            else:
                checks.append(judge_latency(latencies[scope], limit.metric, limit.limit, confidence, scope))
    return SloReport(tuple(checks), confidence, tuple(limits))


def slo_min_requests(limits: Sequence[SloLimit], confidence: float) -> int:
    """Fewest requests per scope before every limit can pass at all (a bound must exist and clear it)."""
    need = 0
    beta = (1.0 - confidence) / 2.0
    for limit in limits:
        if limit.metric == "error_rate":
            need = max(need, math.ceil(-math.log(beta) / limit.limit))
        else:
            need = max(need, _needed_for_quantile(QUANTILE_METRICS[limit.metric], confidence))
    return need


__all__ = [
    "OVERALL",
    "QUANTILE_METRICS",
    "SLO_METRICS",
    "SloCheck",
    "SloLimit",
    "SloReport",
    "check_slo",
    "clopper_pearson",
    "judge_error_rate",
    "judge_latency",
    "limit_status",
    "parse_slo",
    "quantile_interval",
    "quantile_ranks",
    "slo_min_requests",
]
