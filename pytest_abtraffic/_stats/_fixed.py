"""Fixed-N tests: the sample ratio mismatch test, the tolerance (equivalence) check, the verdict."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .._errors import SplitMismatchError
from ._common import (
    _AUTO_BINOMIAL_MIN_EXPECTED,
    Method,
    Unit,
    _check_method,
    _check_unit,
    _clean_counts,
    _conf_label,
    _fmt_p,
    _p_is,
    _pct,
    _pp,
    _unit_interval,
    normalize_weights,
)
from ._distributions import _bd0, _wilson, _z, binomial_two_sided_p, chi2_sf
from ._planning import default_request_budget

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
