"""Candidate vs baseline: latency quantile ratio and error-rate difference, judged with intervals.

``baseline=v1,latency_p95_ratio<=1.10,error_rate_delta<=0.005`` compares every other version with
a positive weight (a candidate) against the baseline, on requests of the same phase: records
inside a fault window are left out, so a fault on one version never passes for a regression of
another (a plain split run has one phase).  Outcomes as for SLOs: **pass** when the interval's
upper end is within the limit, **fail** when its lower end is beyond it, **inconclusive**
otherwise; inconclusive fails the comparison ("not verified"), it never passes silently.

* **Latency ratio** (candidate q-quantile / baseline q-quantile): each quantile gets a
  distribution-free order-statistic interval at ``1 - (1 - confidence) / 2`` (Bonferroni over the
  two), so ``[lo_c / hi_b, hi_c / lo_b]`` covers the true ratio with at least ``confidence``.
  Reported beside it, as Kayenta does, Mann-Whitney's effect size: the probability that a
  candidate response is slower than a baseline one (ties count half), 0.5 when they match.
* **Error-rate difference** (candidate minus baseline): Newcombe's hybrid score interval (his
  method 10, from the two Wilson intervals), which keeps near-nominal coverage at rates near 0.
* **Disagreement** (``disagreement<=0.05``): the share of inputs (payloads) on which the
  candidate's answers at ``load.prediction_field`` differ from the baseline's, with its
  Clopper-Pearson interval over the inputs both answered (``_agreement``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ._agreement import Agreement, Prediction, disagreement_interval, min_inputs, payload_answers
from ._errors import ComparisonError, SpecError
from ._slo import QUANTILE_METRICS, SloStatus, limit_status, quantile_estimate, quantile_interval
from ._stats._common import _conf_label, _pct
from ._stats._distributions import _wilson, _z

CompareStatus = SloStatus  # the same four outcomes
_RATIO_KEY = re.compile(r"^latency_(p50|p90|p95|p99)_ratio$")


class _Record(Protocol):
    @property
    def t(self) -> float: ...
    @property
    def version(self) -> str: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def ok(self) -> bool: ...


class _Window(Protocol):
    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float | None: ...


@dataclass(frozen=True)
class CompareSpec:
    """What a candidate must show against the baseline.  ``latency_ratios``: (quantile, max ratio)."""

    baseline: str
    latency_ratios: tuple[tuple[str, float], ...] = ()
    error_rate_delta: float | None = None
    disagreement: float | None = None  # max share of inputs on which the answers differ

    def __post_init__(self) -> None:
        if not isinstance(self.baseline, str) or not self.baseline:
            raise SpecError("compare.baseline", "must name a variant")
        for q, ratio in self.latency_ratios:
            if f"{q}_ms" not in QUANTILE_METRICS:
                raise SpecError("compare", f"latency_{q}_ratio: unknown quantile; use p50, p90, p95 or p99")
            if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not (math.isfinite(ratio)
                                                                                     and ratio > 0):
                raise SpecError("compare", f"latency_{q}_ratio must be a positive number, got {ratio!r}")
        d = self.error_rate_delta
        if d is not None and (isinstance(d, bool) or not isinstance(d, int | float) or not 0 <= d < 1):
            raise SpecError("compare", f"error_rate_delta must be a fraction in [0, 1), got {d!r}")
        a = self.disagreement
        if a is not None and (isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a < 1):
            raise SpecError("compare", f"disagreement must be a fraction in [0, 1), got {a!r}")
        if not self.latency_ratios and self.error_rate_delta is None and self.disagreement is None:
            raise SpecError("compare", "give at least one of latency_pNN_ratio<=R, error_rate_delta<=D or "
                            "disagreement<=S")

    @property
    def label(self) -> str:
        parts = [f"baseline={self.baseline}"]
        parts += [f"latency_{q}_ratio<={r:g}" for q, r in self.latency_ratios]
        if self.error_rate_delta is not None:
            parts.append(f"error_rate_delta<={self.error_rate_delta:g}")
        if self.disagreement is not None:
            parts.append(f"disagreement<={self.disagreement:g}")
        return ",".join(parts)


def parse_compare(value: object, field_name: str = "compare") -> CompareSpec | None:
    """``"baseline=v1,latency_p95_ratio<=1.10,error_rate_delta<=0.005"`` or the same as a mapping."""
    if value is None or value == "":
        return None
    if isinstance(value, CompareSpec):
        return value
    items: list[tuple[str, object]] = []
    if isinstance(value, str):
        for part in value.split(","):
            part = part.strip()
            key, sep, rest = part.partition("<=")
            if not sep:
                key, sep, rest = part.partition("=")
            if not sep or not key.strip() or not rest.strip():
                raise SpecError(field_name, f"expected baseline=NAME,KEY<=LIMIT..., got {part!r}")
            items.append((key.strip(), rest.strip()))
    elif isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        raise SpecError(field_name, f"expected 'baseline=v1,latency_p95_ratio<=1.1' or a mapping, got {value!r}")
    baseline: str | None = None
    ratios: list[tuple[str, float]] = []
    delta: float | None = None
    disagreement: float | None = None
    for key, raw in items:
        if key == "baseline":
            baseline = str(raw)
            continue
        try:
            number = float(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise SpecError(field_name, f"{key}: {raw!r} is not a number") from None
        match = _RATIO_KEY.match(key)
        if match:
            if any(q == match[1] for q, _ in ratios):
                raise SpecError(field_name, f"{key} given twice")
            ratios.append((match[1], number))  # type: ignore[arg-type]
        elif key == "error_rate_delta":
            delta = number  # type: ignore[assignment]
        elif key == "disagreement":
            disagreement = number  # type: ignore[assignment]
        else:
            raise SpecError(field_name, f"unknown key {key!r}; use baseline, latency_p50|p90|p95|p99_ratio, "
                            "error_rate_delta, disagreement")
    if baseline is None:
        raise SpecError(field_name, "baseline=NAME is required")
    try:
        return CompareSpec(baseline, tuple(ratios), delta, disagreement)
    except SpecError as exc:
        raise SpecError(field_name, exc.message) from None


# --------------------------------------------------------------------------------------------
# statistics


def mann_whitney_effect(candidate: Sequence[float], baseline: Sequence[float]) -> float | None:
    """P(candidate > baseline) + P(tie) / 2, from the rank sum (U / (n_c n_b)); None without data."""
    n_c, n_b = len(candidate), len(baseline)
    if not n_c or not n_b:
        return None
    pooled = sorted([(x, 0) for x in candidate] + [(x, 1) for x in baseline])
    rank_sum = 0.0
    i = 0
    while i < len(pooled):  # average ranks over ties
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        avg = (i + j) / 2.0 + 1.0
        rank_sum += avg * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        i = j + 1
    u = rank_sum - n_c * (n_c + 1) / 2.0
    return u / (n_c * n_b)


def ratio_interval(candidate_sorted: Sequence[float], baseline_sorted: Sequence[float], q: float,
                   confidence: float) -> tuple[float, float]:
    """Interval for quantile_c / quantile_b from the two order-statistic intervals (Bonferroni)."""
    each = 1.0 - (1.0 - confidence) / 2.0
    lo_c, hi_c = quantile_interval(candidate_sorted, q, each)
    lo_b, hi_b = quantile_interval(baseline_sorted, q, each)
    lo = lo_c / hi_b if math.isfinite(hi_b) and hi_b > 0 and lo_c > 0 and math.isfinite(lo_c) else 0.0
    hi = hi_c / lo_b if math.isfinite(hi_c) and math.isfinite(lo_b) and lo_b > 0 else math.inf
    return lo, hi


def newcombe_interval(x_c: int, n_c: int, x_b: int, n_b: int, confidence: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p_c - p_b (method 10), from the two Wilson intervals."""
    z = _z(confidence)
    p_c, p_b = x_c / n_c, x_b / n_b
    l_c, u_c = _wilson(x_c, n_c, z)
    l_b, u_b = _wilson(x_b, n_b, z)
    d = p_c - p_b
    return d - math.sqrt((p_c - l_c) ** 2 + (u_b - p_b) ** 2), d + math.sqrt((u_c - p_c) ** 2 + (p_b - l_b) ** 2)


# --------------------------------------------------------------------------------------------
# checks


@dataclass(frozen=True)
class CompareCheck:
    """One limit for one candidate against the baseline."""

    candidate: str
    baseline: str
    metric: str  # latency_p95_ratio or error_rate_delta
    limit: float
    observed: float | None
    low: float | None
    high: float | None
    status: CompareStatus
    candidate_value: float | None
    baseline_value: float | None
    n_candidate: int
    n_baseline: int
    effect_size: float | None = None  # Mann-Whitney, latency checks only
    differing: int | None = None  # disagreement checks: inputs answered differently (of n_candidate)

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def describe(self, confidence: float) -> str:
        head = f"{self.candidate} vs {self.baseline} {self.metric} <= {self.limit:g}"
        if self.metric == "disagreement":
            return self._describe_disagreement(head, confidence)
        if self.status == "nodata":
            return (f"{head}: no data ({self.n_candidate:,} {self.candidate} and {self.n_baseline:,} "
                    f"{self.baseline} responses)")
        verdict = {"pass": "holds", "fail": "violated", "inconclusive": "not enough requests to tell"}[self.status]
        conf = _conf_label(confidence)
        if self.metric.startswith("latency_"):
            q = self.metric.split("_")[1]
            hi = "+inf" if self.high is None else f"{self.high:.3g}"
            effect = "" if self.effect_size is None else \
                f"; Mann-Whitney effect size P({self.candidate} slower) = {self.effect_size:.2f}"
            return (f"{head}: {verdict}; {q} {self.candidate} {self.candidate_value:.3g} ms vs {self.baseline} "
                    f"{self.baseline_value:.3g} ms, ratio {self.observed:.3g}, {conf} interval "
                    f"[{(self.low or 0.0):.3g}, {hi}]{effect}; {self.n_candidate:,} vs {self.n_baseline:,} responses")
        return (f"{head}: {verdict}; error rate {self.candidate} {_pct(self.candidate_value or 0.0)} vs "
                f"{self.baseline} {_pct(self.baseline_value or 0.0)}, difference {_pct(self.observed or 0.0)}, "
                f"{conf} interval [{_pct(self.low or 0.0)}, {_pct(self.high or 0.0)}]; "
                f"{self.n_candidate:,} vs {self.n_baseline:,} requests")

    def _describe_disagreement(self, head: str, confidence: float) -> str:
        if self.status == "nodata":
            return (f"{head}: no data; no payload was answered by both versions (predictions are noted by the "
                    "built-in locustfile; a locustfile of your own records none)")
        verdict = {"pass": "holds", "fail": "violated", "inconclusive": "not enough inputs to tell"}[self.status]
        text = (f"{head}: {verdict}; {self.candidate} and {self.baseline} answer differently on {self.differing:,} of "
                f"{self.n_candidate:,} inputs ({_pct(self.observed or 0.0)}), {_conf_label(confidence)} interval "
                f"[{_pct(self.low or 0.0)}, {_pct(self.high or 0.0)}]")
        if self.status == "inconclusive":
            need = min_inputs(self.limit, confidence)
            text += ("; a limit of 0 can never be shown on a sample of inputs, use a small positive one"
                     if need is None else "; more distinct inputs (payloads, not requests) narrow the interval: even "
                     f"with none answered differently, passing takes at least {need:,}")
        return text

    def to_dict(self) -> dict[str, Any]:
        def finite(x: float | None) -> float | None:
            return x if x is not None and math.isfinite(x) else None

        return {"candidate": self.candidate, "baseline": self.baseline, "metric": self.metric, "limit": self.limit,
                "observed": finite(self.observed), "low": finite(self.low), "high": finite(self.high),
                "status": self.status, "candidate_value": finite(self.candidate_value),
                "baseline_value": finite(self.baseline_value), "n_candidate": self.n_candidate,
                "n_baseline": self.n_baseline, "effect_size": finite(self.effect_size), "differing": self.differing}


def judge_latency_ratio(candidate_ms: Iterable[float], baseline_ms: Iterable[float], quantile: str, limit: float,
                        confidence: float, candidate: str = "candidate", baseline: str = "baseline",
                        effect_size: bool = True) -> CompareCheck:
    """One ``latency_pNN_ratio <= limit`` check on two samples of successful-response latencies."""
    q = QUANTILE_METRICS[f"{quantile}_ms"]
    c, b = sorted(candidate_ms), sorted(baseline_ms)
    metric = f"latency_{quantile}_ratio"
    if not c or not b:
        return CompareCheck(candidate, baseline, metric, limit, None, None, None, "nodata", None, None, len(c), len(b))
    qc, qb = quantile_estimate(c, q), quantile_estimate(b, q)
    lo, hi = ratio_interval(c, b, q, confidence)
    observed = qc / qb if qb > 0 else math.inf
    effect = mann_whitney_effect(c, b) if effect_size else None
    return CompareCheck(candidate, baseline, metric, limit, observed, lo, None if math.isinf(hi) else hi,
                        limit_status(lo, hi, limit), qc, qb, len(c), len(b), effect)


def judge_error_delta(x_c: int, n_c: int, x_b: int, n_b: int, limit: float, confidence: float,
                      candidate: str = "candidate", baseline: str = "baseline") -> CompareCheck:
    """One ``error_rate_delta <= limit`` check: ``x`` failed attempts out of ``n`` per side."""
    metric = "error_rate_delta"
    if not n_c or not n_b:
        return CompareCheck(candidate, baseline, metric, limit, None, None, None, "nodata", None, None, n_c, n_b)
    lo, hi = newcombe_interval(x_c, n_c, x_b, n_b, confidence)
    return CompareCheck(candidate, baseline, metric, limit, x_c / n_c - x_b / n_b, lo, hi, limit_status(lo, hi, limit),
                        x_c / n_c, x_b / n_b, n_c, n_b)


def judge_disagreement(differing: int, compared: int, limit: float, confidence: float,
                       candidate: str = "candidate", baseline: str = "baseline") -> CompareCheck:
    """One ``disagreement <= limit`` check: ``differing`` of ``compared`` inputs answered differently."""
    metric = "disagreement"
    if not compared:
        return CompareCheck(candidate, baseline, metric, limit, None, None, None, "nodata", None, None, 0, 0,
                            differing=0)
    lo, hi = disagreement_interval(differing, compared, confidence)
    return CompareCheck(candidate, baseline, metric, limit, differing / compared, lo, hi, limit_status(lo, hi, limit),
                        None, None, compared, compared, differing=differing)


@dataclass(frozen=True)
class CompareReport:
    """Every candidate-vs-baseline check of a run."""

    spec: CompareSpec
    checks: tuple[CompareCheck, ...]
    confidence: float
    excluded: int = 0  # records left out because they fell in a fault window
    agreement: Agreement | None = None  # per-payload answers, when disagreement<= was asked for

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        failed = [c for c in self.checks if c.status == "fail"]
        unclear = [c for c in self.checks if c.status in ("inconclusive", "nodata")]
        if not self.checks:
            return f"comparison not verified: no candidate besides the baseline {self.spec.baseline}"
        if not failed and not unclear:
            return (f"comparison holds: {self.spec.label} for every candidate at {_conf_label(self.confidence)} "
                    "confidence")
        which = "comparison violated: " if failed else "comparison not verified: "
        return which + "; ".join(c.describe(self.confidence) for c in failed + unclear)

    def table_rows(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """Header and one row per check (the terminal and HTML tables both draw these)."""
        header = ("candidate", "limit", "candidate", "baseline", "observed", f"{_conf_label(self.confidence)} "
                  "interval", "status")
        body: list[tuple[str, ...]] = []
        for c in self.checks:
            if c.metric == "disagreement":
                body.append(_disagreement_row(c))
                continue
            lat = c.metric.startswith("latency_")

            def val(x: float | None, lat: bool = lat) -> str:
                if x is None:
                    return "-"
                return f"{x:.3g} ms" if lat else _pct(x)

            obs = "-" if c.observed is None else (f"{c.observed:.3g}" if lat else _pct(c.observed))
            lo = "-" if c.low is None else (f"{c.low:.3g}" if lat else _pct(c.low))
            hi = "+inf" if c.high is None else (f"{c.high:.3g}" if lat else _pct(c.high))
            body.append((c.candidate, f"{c.metric} <= {c.limit:g}", val(c.candidate_value), val(c.baseline_value),
                         obs, f"[{lo}, {hi}]", c.status))
        return header, body

    def notes(self) -> list[str]:
        out = [f"{self.excluded:,} requests inside fault windows were not compared"] if self.excluded else []
        if self.agreement is not None:
            candidates = sorted({c.candidate for c in self.checks if c.metric == "disagreement"})
            out.extend(self.agreement.notes(candidates))
        return out

    def table(self) -> str:
        header, body = self.table_rows()
        lines = [header, *body]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        out.extend(f"note: {note}" for note in self.notes())
        return "\n".join(out)

    def message(self) -> str:
        return f"{self.verdict}\n{self.table()}"

    def __str__(self) -> str:
        return self.message()

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "verdict": self.verdict, "confidence": self.confidence, "spec": self.spec.label,
                "baseline": self.spec.baseline, "excluded": self.excluded,
                "checks": [c.to_dict() for c in self.checks],
                "agreement": self.agreement.to_dict() if self.agreement is not None else None}

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise ComparisonError(self.message())


def _disagreement_row(c: CompareCheck) -> tuple[str, ...]:
    if c.status == "nodata":
        return (c.candidate, f"disagreement <= {c.limit:g}", "-", "-", "-", "[-, -]", c.status)
    return (c.candidate, f"disagreement <= {c.limit:g}", f"{c.differing:,} of {c.n_candidate:,} inputs differ", "-",
            _pct(c.observed or 0.0), f"[{_pct(c.low or 0.0)}, {_pct(c.high or 0.0)}]", c.status)


def _in_window(t: float, windows: Sequence[_Window]) -> bool:
    return any(w.start_s <= t and (w.end_s is None or t < w.end_s) for w in windows)


def check_compare(records: Iterable[_Record], spec: CompareSpec, *, confidence: float,
                  candidates: Sequence[str], windows: Sequence[_Window] = (),
                  predictions: Iterable[Prediction] = (), payloads: Sequence[Any] | None = None,
                  prediction_field: str = "") -> CompareReport:
    """Judge each candidate against ``spec.baseline`` on the records outside every fault window.

    ``predictions`` (``LoadResult.predictions``), the request bodies (``payloads``, when known) and
    the pointer the answers were read at are for ``disagreement<=``: answers do not depend on the
    time they were given, so all of them count.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    names = {spec.baseline, *candidates}
    lat: dict[str, list[float]] = {n: [] for n in names}
    attempts: dict[str, int] = dict.fromkeys(names, 0)
    fails: dict[str, int] = dict.fromkeys(names, 0)
    excluded = 0
    for r in records:
        if windows and _in_window(r.t, windows):
            excluded += 1
            continue
        if r.version not in names:
            continue
        attempts[r.version] += 1
        if r.ok:
            lat[r.version].append(r.latency_ms)
        else:
            fails[r.version] += 1
    b = spec.baseline
    checks: list[CompareCheck] = []
    for cand in candidates:
        if cand == b:
            continue
        for quantile, limit in spec.latency_ratios:
            checks.append(judge_latency_ratio(lat[cand], lat[b], quantile, limit, confidence, cand, b))
        if spec.error_rate_delta is not None:
            checks.append(judge_error_delta(fails[cand], attempts[cand], fails[b], attempts[b],
                                            spec.error_rate_delta, confidence, cand, b))
    agreement = None
    if spec.disagreement is not None:
        agreement = Agreement((b, *(c for c in candidates if c != b)), b, payload_answers(predictions, payloads),
                              prediction_field)
        for cand in candidates:
            if cand != b:
                checks.append(judge_disagreement(len(agreement.differing(cand)), len(agreement.compared(cand)),
                                                 spec.disagreement, confidence, cand, b))
    return CompareReport(spec, tuple(checks), confidence, excluded, agreement)


def compare_min_requests(spec: CompareSpec, confidence: float, payloads: int = 0) -> int:
    """Fewest requests per version before every limit can pass at all (bounds must exist and clear it).

    With ``disagreement<=``, each of the ``payloads`` should reach each version: 10 requests per
    payload and version leave a payload unanswered by a version with probability about e^-10.
    """
    need = 10 * payloads if spec.disagreement is not None else 0
    each = 1.0 - (1.0 - confidence) / 2.0
    for quantile, _ in spec.latency_ratios:
        q = QUANTILE_METRICS[f"{quantile}_ms"]
        need = max(need, math.ceil(math.log((1.0 - each) / 2.0) / math.log(q)))
    if spec.error_rate_delta:
        z = _z(confidence)
        need = max(need, math.ceil(z * z / spec.error_rate_delta))
    return need


__all__ = [
    "CompareCheck",
    "CompareReport",
    "CompareSpec",
    "check_compare",
    "compare_min_requests",
    "judge_disagreement",
    "judge_error_delta",
    "judge_latency_ratio",
    "mann_whitney_effect",
    "newcombe_interval",
    "parse_compare",
    "ratio_interval",
]
