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

    Missing variants count 0.  Variants at weight 0 take no part in the test.  A positive count
    for a version that is not in ``weights`` or has weight 0 is a ValueError here (it cannot be
    tested against a ratio); :func:`check_split` reports such traffic as a failure instead.
    """
    _check_method(method)
    shares = normalize_weights(weights)
    clean = _clean_counts(counts)
    extra = sorted(name for name, c in clean.items() if shares.get(name, 0.0) == 0.0 and c > 0)
    if extra:
        raise ValueError(
            f"counts: version(s) {', '.join(map(repr, extra))} are not in weights or have weight 0; "
            "check_split reports such traffic as a failure"
        )
    tested = {name: w for name, w in shares.items() if w > 0.0}
    return _srm([clean.get(name, 0) for name in tested], list(tested.values()), method)


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
        """yes: interval inside the margin; no: entirely outside it; unclear: needs more data.

        A variant at weight 0 is "yes" with no units and "no" with any: that is exact, not estimated.
        """
        if self.within_tolerance:
            return "yes"
        if not self.expected or self.weight == 0.0:
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
    # Variants configured at weight 0 that served units anyway (each one fails the check).
    zero_weight_traffic: tuple[str, ...] = ()

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
            "zero_weight_traffic": list(self.zero_weight_traffic),
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
    weight +- ``tolerance`` (the equivalence claim).  Traffic to a version that is not configured,
    or to one configured at weight 0 ("must get no traffic"), fails the check.  Shares and
    intervals are of all counted units; the SRM test and per-row p-values compare the variants
    with a positive weight with each other.
    """
    tol = _unit_interval("tolerance", tolerance)
    conf = _unit_interval("confidence", confidence)
    a = _unit_interval("alpha", alpha)
    _check_unit(unit)
    _check_method(method)
    shares = normalize_weights(weights)
    clean = _clean_counts(counts)
    unexpected = tuple(name for name, c in clean.items() if name not in shares and c > 0)
    # Weight 0 has probability zero under the configuration: such a cell takes no part in the SRM
    # test (its expected count would be 0) and any unit it serves fails the check outright.
    tested = {name: w for name, w in shares.items() if w > 0.0}
    zero_traffic = tuple(name for name, w in shares.items() if w == 0.0 and clean.get(name, 0) > 0)
    known = [clean.get(name, 0) for name in tested]
    probs = list(tested.values())
    total = sum(clean.get(name, 0) for name in shares) + sum(clean[name] for name in unexpected)
    srm = _srm(known, probs, method)
    z = _z(conf)

    rows: list[VariantRow] = []
    for name, w in shares.items():
        c = clean.get(name, 0)
        lo, hi = _wilson(c, total, z) if total else (0.0, 1.0)
        if w == 0.0:
            rows.append(VariantRow(name, 0.0, c, c / total if total else 0.0, lo, hi, total > 0 and c == 0, None))
            continue
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
        zero_weight_traffic=zero_traffic,
    )
    return replace(partial, verdict=_verdict(partial, shares))


def _verdict(r: SplitResult, shares: Mapping[str, float]) -> str:
    """One line saying what went wrong (or that the split holds), naming the variants."""
    tol = _pp(r.tolerance)
    if r.total == 0:
        return f"split not verified: no {r.unit} were counted"
    zero_rows = [row for row in r.rows if row.expected and row.weight == 0.0]
    if r.ok:
        silent = f"; zero-weight {', '.join(row.name for row in zero_rows)} got no {r.unit}" if zero_rows else ""
        return (
            f"split holds: every variant's {_conf_label(r.confidence)} interval lies within its weight "
            f"± {tol} and SRM {_p_is(r.srm.p_value)} >= {r.alpha:g} ({r.total:,} {r.unit}){silent}"
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
    for row in zero_rows:
        if row.count:
            mismatch = True
            reasons.append(
                f"{row.name} is configured at weight 0 (must get no traffic) but served {row.count:,} of "
                f"{r.total:,} {r.unit} ({_pct(row.share)})"
            )
            named.add(row.name)
    known_rows = [row for row in r.rows if row.expected and row.weight > 0.0]
    stray_traffic = bool(r.unexpected or r.zero_weight_traffic)
    # Two shares (and no stray traffic) are complements: naming one of them says it all.
    complements = len(known_rows) == 2 and not stray_traffic
    if not r.srm_ok:
        mismatch = True
        n_known = sum(row.count for row in known_rows)

        def residual(row: VariantRow) -> float:
            e = n_known * row.weight
            return abs(row.count - e) / math.sqrt(e)

        worst = max(known_rows, key=residual)
        if stray_traffic:  # the SRM test compares configured versions with each other
            among = "versions with a positive weight" if zero_rows else "configured versions"
            clause = (
                f"among {among} {worst.name} got {_pct(worst.count / n_known)} of {n_known:,} "
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
