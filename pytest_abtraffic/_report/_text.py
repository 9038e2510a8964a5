"""Terminal output (the session summary, the live progress line) and JUnit properties."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ._view import (
    fallback_view,
    fmt_ms,
    fmt_p,
    fmt_s,
    fmt_statuses,
    pct,
    split_view,
    total_errors,
    verdict_line,
    version_views,
)

if TYPE_CHECKING:
    from .._result import ExperimentResult

_INDENT = "  "


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        return (_INDENT + "  ".join(cells)).rstrip()

    return [fmt(header), *(fmt(row) for row in rows)]


def _conf(confidence: float) -> str:
    return f"{100 * confidence:.10g}%"


def format_experiment(result: ExperimentResult) -> str:
    """One experiment: a heading, the verdict, the per-version table and the fallback timings."""
    load = result.load
    status = result.status
    rps = len(load.records) / load.duration_s if load.duration_s > 0 else 0.0
    lines = [
        f"{result.name} [{status}]  backend {result.backend}, namespace {result.namespace or '-'}, "
        f"{result.split_api}; {len(load.records):,} requests in {load.duration_s:.1f} s ({rps:,.0f} rps)",
        _INDENT + verdict_line(result),
    ]
    if result.weights is not None:
        w = result.weights
        observed = result.observed_shares()

        def fmt(weights: Mapping[str, float] | None) -> str:
            return "unknown" if weights is None else ", ".join(f"{k}={v:g}" for k, v in weights.items())

        after = f", converged after {w.converged_after_s:g} s" if w.converged_after_s is not None else ""
        lines.append(f"{_INDENT}weights: declared {fmt(w.declared)}; programmed {fmt(w.programmed)} "
                     f"({w.source}{after}); observed {', '.join(f'{k}={pct(v)}' for k, v in observed.items()) or '-'}")
    split = split_view(result)
    interval = f"{_conf(split.confidence)} interval" if split is not None else "interval"
    header = ("variant", "weight", "observed", interval, "p-value", "within", "p50 ms", "p99 ms", "errors")
    rows = []
    for v in version_views(result):
        ci = f"[{pct(v.ci_low)}, {pct(v.ci_high)}]" if v.ci_low is not None and v.ci_high is not None else "-"
        errors = f"{v.errors:,}" + (f" ({fmt_statuses(v.errors_by_status)})" if v.errors else "")
        rows.append((v.label, pct(v.weight), pct(v.share), ci, fmt_p(v.p_value), v.within or "-",
                     fmt_ms(v.latency.get("p50")), fmt_ms(v.latency.get("p99")), errors))
    lines.extend(_table(header, rows, right={1, 2, 6, 7}))
    if split is not None:
        lines.append(
            f"{_INDENT}SRM {split.method} p = {fmt_p(split.p_value)} (alpha {split.alpha:g}); tolerance "
            f"+/-{100 * split.tolerance:.1f} pp at {_conf(split.confidence)}; {split.total:,} {split.unit} counted"
        )
    if result.sequential is not None:
        seq = result.sequential
        lines.append(f"{_INDENT}sequential test: {seq.verdict} at n={seq.n:,} (anytime p = {fmt_p(seq.p_anytime)})")
    fb = fallback_view(result)
    if fb is not None:
        errors = fmt_statuses(fb.errors_by_status_during_fault)
        lines.append(
            f"{_INDENT}fallback {fb.scenario} [{'PASS' if fb.ok else 'FAIL'}]: time to fallback "
            f"{fmt_s(fb.time_to_fallback_s)}, time to recover {fmt_s(fb.time_to_recover_s)}, errors during fault "
            f"{pct(fb.error_rate_during_fault)}{f' ({errors})' if errors else ''}, healthy share during fault "
            f"{pct(fb.healthy_share_during_fault)}"
        )
        for check in fb.checks:
            if not check.ok:
                detail = f" ({check.detail})" if check.detail else ""
                lines.append(f"{_INDENT}{_INDENT}failed check {check.name}: observed {check.observed}, "
                             f"expected {check.expected}{detail}")
    if result.routes is not None:
        lines.extend(_INDENT + line for line in result.routes.lines())
    for title, extra in (("slo", result.slo), ("compare", result.compare)):
        if extra is not None:
            lines.append(f"{_INDENT}{title} [{'PASS' if extra.ok else 'FAIL'}]")
            lines.extend(f"{_INDENT}{_INDENT}{line}" for line in extra.table().splitlines())
    if load.stopped_early:
        lines.append(f"{_INDENT}load stopped early: {load.stop_reason}")
    lines.extend(f"{_INDENT}note: {note}" for note in result.notes)
    return "\n".join(lines)


def format_summary(results: Sequence[ExperimentResult]) -> str:
    """Every experiment of the session, one block each, separated by blank lines."""
    if not results:
        return "no A/B traffic experiments ran"
    return "\n\n".join(format_experiment(result) for result in results)


def format_progress(elapsed_s: float, requests: int, rps: float, shares: Mapping[str, float], verdict: str) -> str:
    """One live line: ``  12.3s  4,210 req  842 rps  v1 50.2%  v2 49.8%  verdict: undecided``."""
    rate = rps if math.isfinite(rps) and rps > 0 else 0.0
    parts = [f"{elapsed_s:6.1f}s", f"{requests:,} req", f"{rate:,.0f} rps"]
    parts.extend(f"{name or '(no version)'} {100.0 * share:.1f}%" for name, share in shares.items())
    parts.append(f"verdict: {verdict}")
    return "  ".join(parts)


_PROPERTY_NAME = re.compile(r"\s+")


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def junit_properties(result: ExperimentResult) -> list[tuple[str, str]]:
    """``(name, value)`` pairs for ``record_property``; names are ``abtraffic.<experiment>.<what>``."""
    prefix = "abtraffic." + _PROPERTY_NAME.sub("_", result.name.strip())
    load = result.load
    props: list[tuple[str, str]] = [
        (f"{prefix}.ok", "true" if result.ok else "false"),
        (f"{prefix}.backend", result.backend),
        (f"{prefix}.split_api", result.split_api),
        (f"{prefix}.requests", str(len(load.records))),
        (f"{prefix}.errors", str(total_errors(result))),
        (f"{prefix}.duration_s", _num(load.duration_s)),
    ]
    split = split_view(result)
    if split is not None:
        props += [
            (f"{prefix}.verdict", split.verdict),
            (f"{prefix}.p_value", _num(split.p_value)),
            (f"{prefix}.tolerance", _num(split.tolerance)),
            (f"{prefix}.confidence", _num(split.confidence)),
        ]
    for v in version_views(result):
        key = _PROPERTY_NAME.sub("_", v.label)
        if v.weight is not None:
            props.append((f"{prefix}.weight.{key}", _num(v.weight)))
        props.append((f"{prefix}.share.{key}", _num(v.share)))
        if v.ci_low is not None and v.ci_high is not None:
            props.append((f"{prefix}.share_ci.{key}", f"{v.ci_low:.6g},{v.ci_high:.6g}"))
        props += [
            (f"{prefix}.p50_ms.{key}", _num(v.latency.get("p50"))),
            (f"{prefix}.p99_ms.{key}", _num(v.latency.get("p99"))),
            (f"{prefix}.errors.{key}", str(v.errors)),
        ]
    if result.sequential is not None:
        props += [
            (f"{prefix}.sequential.verdict", str(result.sequential.verdict)),
            (f"{prefix}.sequential.n", str(result.sequential.n)),
        ]
    fb = fallback_view(result)
    if fb is not None:
        props += [
            (f"{prefix}.fallback.scenario", fb.scenario),
            (f"{prefix}.fallback.ok", "true" if fb.ok else "false"),
            (f"{prefix}.time_to_fallback_s", _num(fb.time_to_fallback_s)),
            (f"{prefix}.time_to_recover_s", _num(fb.time_to_recover_s)),
            (f"{prefix}.error_rate_during_fault", _num(fb.error_rate_during_fault)),
            (f"{prefix}.healthy_share_during_fault", _num(fb.healthy_share_during_fault)),
        ]
    return props


__all__ = ["format_experiment", "format_progress", "format_summary", "junit_properties"]
