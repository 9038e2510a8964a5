"""The self-contained HTML report: one file, inline CSS, inline SVG plots, no network.

A Content-Security-Policy meta tag forbids every external load, so a reference that slips in
cannot phone home; an inline handler records anything that fails to load (or is blocked) in
``window.__abtrafficErrors`` and in the ``#abtraffic-errors`` element, where a browser test reads it.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._files import report_path, write_text_atomic
from ._svg import FAULT_FILL, Axis, Canvas, LegendItem, esc, fmt_num, status_color, version_color
from ._view import (
    FallbackView,
    VersionView,
    fallback_view,
    finite,
    fmt_ms,
    fmt_p,
    fmt_s,
    fmt_statuses,
    ordered_versions,
    pct,
    split_view,
    status_label,
    total_errors,
    verdict_line,
    version_label,
    version_views,
)

if TYPE_CHECKING:
    from .._compare import CompareReport
    from .._load import LoadResult, TimeBucket
    from .._result import ExperimentResult
    from .._slo import SloReport

PLOT_IDS: tuple[str, ...] = ("plot-share", "plot-latency", "plot-errors")
# Beyond this many buckets a plot gets unreadable (and heavy): coarser buckets are used instead.
MAX_BUCKETS = 600
# Points per CDF line; more cannot be told apart at report width.
CDF_POINTS = 400

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'unsafe-inline'; base-uri 'none'; " \
      "form-action 'none'"

# Runs first: records failed or blocked loads so a test (or a reader) can see them after load.
_ERROR_SCRIPT = """
window.__abtrafficErrors = [];
(function () {
  var errors = window.__abtrafficErrors;
  function show() {
    var el = document.getElementById("abtraffic-errors");
    if (!el) { return; }
    el.setAttribute("data-count", String(errors.length));
    el.textContent = errors.join("\\n");
    el.hidden = errors.length === 0;
  }
  function add(message) { errors.push(String(message)); show(); }
  window.addEventListener("error", function (event) {
    var t = event.target;
    if (t && t !== window && (t.src || t.href)) { add("failed to load " + (t.src || t.href)); }
    else { add("script error: " + (event.message || "unknown")); }
  }, true);
  document.addEventListener("securitypolicyviolation", function (event) {
    add("blocked by the page's Content-Security-Policy: " + event.blockedURI + " (" + event.violatedDirective + ")");
  });
  window.addEventListener("load", function () {
    var plots = document.querySelectorAll("svg.plot");
    for (var i = 0; i < plots.length; i++) {
      var box = plots[i].getBoundingClientRect();
      if (!(box.width > 0 && box.height > 0)) { add("plot " + plots[i].id + " has no size"); }
    }
    show();
    var el = document.getElementById("abtraffic-errors");
    if (el) {
      el.setAttribute("data-plots", String(plots.length));
      el.setAttribute("data-loaded", "true");
    }
  });
})();
"""

_CSS = """
:root { --pass: #1a7f37; --fail: #cf222e; --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 0 20px 40px; }
.banner { padding: 18px 20px; color: #fff; }
.banner.pass { background: var(--pass); }
.banner.fail { background: var(--fail); }
.banner h1 { margin: 0 auto; max-width: 1060px; font-size: 22px; }
.banner p { margin: 6px auto 0; max-width: 1060px; font-size: 14px; opacity: .95; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px;
         background: rgba(255,255,255,.22); margin-right: 8px; vertical-align: 2px; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 16px 0 6px; }
dl.meta { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 8px 18px; margin: 14px 0; }
dl.meta div { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
dl.meta dt { color: var(--muted); font-size: 12px; }
dl.meta dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 8px 0 4px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
tr.bad td { background: #ffebe9; }
.ok { color: var(--pass); font-weight: 600; }
.bad-text { color: var(--fail); font-weight: 600; }
.muted { color: var(--muted); }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: 0; }
figure { margin: 10px 0 4px; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 2px; max-width: 760px; }
svg.plot { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; overflow-x: auto;
      font-size: 12px; }
ul.notes li { margin: 2px 0; }
footer { color: var(--muted); font-size: 12px; margin-top: 30px; border-top: 1px solid var(--line); padding-top: 8px; }
#abtraffic-errors { color: var(--fail); white-space: pre-wrap; }
"""


# --------------------------------------------------------------------------------------------
# small markup helpers


def _attrs(**attrs: object) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(f' {name}="{esc(value)}"')
    return "".join(parts)


_NUM_CLASS = ' class="num"'
_BAD_CLASS = ' class="bad"'


def _table(table_id: str, caption: str, header: Sequence[str], rows: Sequence[Sequence[str]],
           *, numeric: set[int] | frozenset[int] = frozenset(), bad_rows: set[int] | frozenset[int] = frozenset(),
           raw_cells: set[int] | frozenset[int] = frozenset()) -> str:
    """A table; cells are escaped unless their column is in ``raw_cells`` (already-built markup)."""
    head = "".join(f"<th scope=\"col\">{esc(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            content = cell if i in raw_cells else esc(cell)
            cells.append(f"<td{_NUM_CLASS if i in numeric else ''}>{content}</td>")
        body.append(f"<tr{_BAD_CLASS if r in bad_rows else ''}>{''.join(cells)}</tr>")
    cap = f"<caption class=\"muted\" style=\"caption-side: bottom; text-align: left\">{esc(caption)}</caption>" \
        if caption else ""
    return (f'<table{_attrs(id=table_id, data_testid=table_id)}>{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _swatch(color: str) -> str:
    return f'<span class="swatch" style="background:{esc(color)}"></span>'


def _meta(items: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in items)
    return f'<dl class="meta">{cells}</dl>'


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>"


def _yes_no(ok: bool) -> str:
    return '<span class="ok">pass</span>' if ok else '<span class="bad-text">FAIL</span>'


# --------------------------------------------------------------------------------------------
# plots


def _bucket_size(load: LoadResult) -> float:
    span = max(load.duration_s, max((r.t for r in load.records), default=0.0))
    return 1.0 if span <= MAX_BUCKETS else float(math.ceil(span / MAX_BUCKETS))


def _time_axis_end(result: ExperimentResult, buckets: Sequence[TimeBucket], bucket_s: float) -> float:
    end = max(result.load.duration_s, len(buckets) * bucket_s, 1.0)
    for window in result.fault_windows:
        end = max(end, window.start_s, window.end_s or 0.0)
    return end


def _time_fmt(value: float) -> str:
    return f"{fmt_num(value)}s"


def _share_fmt(value: float) -> str:
    return f"{100 * value:.0f}%"


def _shade_faults(canvas: Canvas, result: ExperimentResult, x_end: float) -> None:
    for window in result.fault_windows:
        end = window.end_s if window.end_s is not None else x_end
        still = "" if window.end_s is not None else " (still active when load ended)"
        canvas.span_x(window.start_s, end, fill=FAULT_FILL, opacity=0.09, label=window.label, css_class="fault-window",
                      tooltip=f"fault {window.label}: {window.start_s:.2f}s - {end:.2f}s{still}")


def _colors(result: ExperimentResult) -> dict[str, str]:
    return {version: version_color(i) for i, version in enumerate(ordered_versions(result))}


def share_plot(result: ExperimentResult, buckets: Sequence[TimeBucket], bucket_s: float) -> str:
    """Per-bucket share of successful responses per version, the cumulative share, the configured
    weights (dashed) and, when a split was judged, the tolerance band around each weight."""
    x_end = _time_axis_end(result, buckets, bucket_s)
    canvas = Canvas(
        plot_id="plot-share", title="Share of successful responses per version over time",
        x=Axis(0.0, x_end, "time since load start (s)", _time_fmt),
        y=Axis(0.0, 1.0, "share of successful responses", _share_fmt, ticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        description="Thin lines: share per time bucket; thick lines: cumulative share; dashed: configured weight.",
    )
    colors = _colors(result)
    _shade_faults(canvas, result, x_end)
    tolerance = result.split.tolerance if result.split is not None else None
    legend: list[LegendItem] = []
    for version, weight in result.expected_shares.items():
        color = colors.get(version, "#000")
        if tolerance is not None:
            canvas.band_y(weight - tolerance, weight + tolerance, fill=color, opacity=0.13, css_class="tolerance-band",
                          tooltip=f"{version}: weight {pct(weight)} +/- {100 * tolerance:.1f} pp")
        canvas.hline(weight, color=color, css_class="weight-line",
                     tooltip=f"{version}: configured weight {pct(weight)}")
    versions = [v for v in ordered_versions(result) if any(b.counts.get(v, 0) for b in buckets)]
    if not versions:
        canvas.note("no successful responses")
    for version in versions:
        color = colors[version]
        segments: list[list[tuple[float, float]]] = [[]]
        cumulative: list[tuple[float, float]] = []
        ok_so_far = 0
        mine_so_far = 0
        for bucket in buckets:
            ok = sum(bucket.counts.values())
            mid = bucket.start_s + bucket_s / 2
            if ok == 0:
                if segments[-1]:
                    segments.append([])
                continue
            mine = bucket.counts.get(version, 0)
            segments[-1].append((mid, mine / ok))
            ok_so_far += ok
            mine_so_far += mine
            cumulative.append((bucket.start_s + bucket_s, mine_so_far / ok_so_far))
        # With faults the per-bucket share is the story (traffic moving away and back); without,
        # the cumulative share is what the split test judges and the buckets are context.
        faults = bool(result.fault_windows)
        for segment in segments:
            if len(segment) > 1:
                canvas.polyline(segment, color=color, width=2.2 if faults else 1.1, opacity=1.0 if faults else 0.6,
                                css_class="share-series",
                                tooltip=f"{version_label(version)} share per {fmt_num(bucket_s)} s")
            canvas.dots(segment, color=color, radius=1.8, opacity=0.8, css_class="share-dots")
        if not faults:
            canvas.polyline(cumulative, color=color, width=2.6, css_class="share-cumulative",
                            tooltip=f"{version_label(version)} cumulative share")
        legend.append(LegendItem(version_label(version), color))
    legend.append(LegendItem("configured weight", "#555", "dash"))
    if tolerance is not None:
        legend.append(LegendItem(f"+/-{100 * tolerance:.1f} pp tolerance", "#555", "band"))
    if result.fault_windows:
        legend.append(LegendItem("fault active", FAULT_FILL, "band"))
    canvas.legend(legend)
    return canvas.render()


def _downsample_cdf(values: Sequence[float]) -> list[tuple[float, float]]:
    n = len(values)
    if n <= CDF_POINTS:
        return [(v, (i + 1) / n) for i, v in enumerate(values)]
    picks = sorted({min(n - 1, round(k * (n - 1) / (CDF_POINTS - 1))) for k in range(CDF_POINTS)})
    return [(values[i], (i + 1) / n) for i in picks]


def latency_plot(result: ExperimentResult) -> str:
    """Empirical CDF of request latency per version (failures included, like the latency table);
    log-scaled when latencies span more than a decade and a half."""
    by_version: dict[str, list[float]] = {}
    for record in result.load.records:
        latency = finite(record.latency_ms)
        if latency is not None and latency >= 0:
            by_version.setdefault(record.version, []).append(latency)
    every = [v for values in by_version.values() for v in values]
    positive = [v for v in every if v > 0]
    lo = min(positive, default=0.1)
    hi = max(every, default=1.0)
    use_log = bool(positive) and hi / lo > 30
    if use_log:
        x = Axis(lo * 0.9, hi * 1.1, "latency (ms, log scale)", _latency_fmt, log=True)
    else:
        x = Axis(0.0, max(hi * 1.05, 1.0), "latency (ms)", _latency_fmt)
    canvas = Canvas(
        plot_id="plot-latency", title="Latency distribution per version (cumulative)",
        x=x, y=Axis(0.0, 1.0, "requests at or below", _share_fmt, ticks=[0, 0.25, 0.5, 0.75, 1.0]),
        description="Empirical cumulative distribution of request latency per version, failures included.",
    )
    for level in (0.5, 0.9, 0.99):
        canvas.hline(level, color="#aaa", dash="2 3", css_class="percentile-line", tooltip=f"p{round(level * 100)}",
                     label=f"p{round(level * 100)}")
    colors = _colors(result)
    legend = []
    for version in ordered_versions(result):
        values = sorted(by_version.get(version, []))
        if not values:
            continue
        color = colors[version]
        canvas.polyline(_downsample_cdf(values), color=color, width=2.0, step=True, css_class="latency-cdf",
                        tooltip=f"{version_label(version)}: {len(values):,} requests")
        legend.append(LegendItem(f"{version_label(version)} ({len(values):,})", color))
    if not legend:
        canvas.note("no requests")
    canvas.legend(legend)
    return canvas.render()


def _latency_fmt(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}s"
    return f"{value:g}"


def errors_plot(result: ExperimentResult, buckets: Sequence[TimeBucket], bucket_s: float) -> str:
    """Failed requests per bucket, stacked by status (0 = connection error), fault windows shaded."""
    statuses = sorted({status for b in buckets for status in b.errors})
    peak = max((sum(b.errors.values()) for b in buckets), default=0)
    x_end = _time_axis_end(result, buckets, bucket_s)
    unit = "s" if bucket_s == 1.0 else f"{fmt_num(bucket_s)} s"
    canvas = Canvas(
        plot_id="plot-errors", title="Failed requests over time by status",
        x=Axis(0.0, x_end, "time since load start (s)", _time_fmt),
        y=Axis(0.0, max(float(peak), 1.0) * 1.08, f"failed requests per {unit}", _count_fmt),
        description="Stacked bars: failed requests per time bucket by HTTP status; shaded: fault windows.",
    )
    _shade_faults(canvas, result, x_end)
    colors = {status: status_color(status, i) for i, status in enumerate(statuses)}
    gap = min(0.15 * bucket_s, 0.1)
    for bucket in buckets:
        base = 0
        for status in statuses:
            count = bucket.errors.get(status, 0)
            if not count:
                continue
            canvas.bar(bucket.start_s + gap, bucket.start_s + bucket_s - gap, base, base + count,
                       color=colors[status], css_class="error-bar",
                       tooltip=f"{bucket.start_s:g}s: {status_label(status)} x {count:,} of {bucket.total:,} requests")
            base += count
    if not statuses:
        canvas.note("no failed requests")
    legend = [LegendItem("connection error" if s == 0 else f"HTTP {s}", colors[s], "box") for s in statuses]
    if result.fault_windows:
        legend.append(LegendItem("fault active", FAULT_FILL, "band"))
    canvas.legend(legend)
    return canvas.render()


def _count_fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


# --------------------------------------------------------------------------------------------
# sections


def _overview(result: ExperimentResult) -> str:
    load = result.load
    rps = len(load.records) / load.duration_s if load.duration_s > 0 else 0.0
    items = [
        ("backend", result.backend),
        ("namespace", result.namespace or "-"),
        ("split API", result.split_api),
        ("started", result.started_at or "-"),
        ("run time", f"{result.duration_s:.1f} s"),
        ("load", f"{len(load.records):,} requests in {load.duration_s:.1f} s ({rps:,.0f} rps)"),
        ("failed requests", f"{total_errors(result):,}"),
        ("load stopped by", load.stop_reason + (" (early)" if load.stopped_early else "")),
    ]
    return _meta(items)


def _split_section(result: ExperimentResult, views: Sequence[VersionView], colors: Mapping[str, str]) -> str:
    split = split_view(result)
    parts = ['<section id="split"><h2>Split</h2>']
    if split is None:
        parts.append('<p class="muted">No split judgement in this run (a fallback scenario judges fallback instead); '
                     "shares below are of all successful responses.</p>")
        interval_head = "interval"
    else:
        verdict_class = "ok" if split.ok else "bad-text"
        parts.append(f'<p class="{verdict_class}" id="split-verdict" data-testid="split-verdict">'
                     f"{esc(split.verdict)}</p>")
        interval_head = f"{100 * split.confidence:.10g}% interval"
    header = ("variant", "configured weight", "observed share", interval_head, "p-value", "within tolerance", "count")
    rows = []
    bad = set()
    # Versions that only ever failed (e.g. proxy answers without a version header) have no share.
    views = [v for v in views if v.configured or v.successes or v.share]
    for i, v in enumerate(views):
        ci = f"[{pct(v.ci_low, 2)}, {pct(v.ci_high, 2)}]" if v.ci_low is not None and v.ci_high is not None else "-"
        count = f"{v.successes:,}"
        rows.append((_swatch(colors.get(v.version, "#000")) + esc(v.label), esc(pct(v.weight)), esc(pct(v.share, 2)),
                     esc(ci), esc(fmt_p(v.p_value)), esc(v.within or "-"), esc(count)))
        if v.within == "no" or (not v.configured and v.successes):
            bad.add(i)
    caption = ""
    if split is not None:
        caption = (f"SRM test ({split.method}) p = {fmt_p(split.p_value)}, alpha {split.alpha:g}; tolerance "
                   f"+/-{100 * split.tolerance:.1f} pp; {split.total:,} {split.unit} counted. Row p-values: that "
                   "variant against the rest.")
    parts.append(_table("split-table", caption, header, rows, numeric={1, 2, 4, 6}, bad_rows=bad,
                        raw_cells=set(range(len(header)))))
    seq = result.sequential
    if seq is not None:
        reason = getattr(seq, "reason", "")
        decided_at = getattr(seq, "decided_at", None)
        p_anytime = esc(fmt_p(finite(seq.p_anytime)))
        text = (f"Sequential (anytime-valid) test: <strong>{esc(seq.verdict)}</strong> after {seq.n:,} units"
                f"{f', decided at {decided_at:,}' if decided_at else ''}; anytime p = {p_anytime}"
                f"{f' ({esc(reason)})' if reason else ''}.")
        parts.append(f'<p id="sequential" data-testid="sequential">{text}</p>')
    if split is not None and split.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in split.notes) + "</ul>")
    parts.append("</section>")
    return "".join(parts)


def _latency_section(result: ExperimentResult, views: Sequence[VersionView], colors: Mapping[str, str]) -> str:
    rows = []
    for v in views:
        if not v.requests:
            continue
        rows.append((_swatch(colors.get(v.version, "#000")) + esc(v.label), f"{v.requests:,}",
                     *(esc(fmt_ms(v.latency.get(k))) for k in ("p50", "p90", "p99", "max"))))
    table = _table("latency-table", "Latency of every request of the version, failures included.",
                   ("variant", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms"), rows, numeric={1, 2, 3, 4, 5},
                   raw_cells={0})
    return ('<section id="latency"><h2>Latency</h2>'
            + _figure(latency_plot(result), "Share of requests answered within a given latency, per version.")
            + table + "</section>")


def _errors_section(result: ExperimentResult, views: Sequence[VersionView], buckets: Sequence[TimeBucket],
                    bucket_s: float) -> str:
    rows = [(v.label, f"{v.requests:,}", f"{v.errors:,}", pct(v.errors / v.requests if v.requests else None, 2),
             fmt_statuses(v.errors_by_status) or "-") for v in views if v.requests]
    table = _table("errors-table", "Status 0 (conn) is a connection error; '(no version)' are responses without "
                   "a version header (often answered by the proxy).",
                   ("variant", "requests", "failed", "failure rate", "by status"), rows, numeric={1, 2, 3})
    windows = ""
    if result.fault_windows:
        wrows = [(w.label, f"{w.start_s:.2f} s", f"{w.end_s:.2f} s" if w.end_s is not None else "still active",
                  f"{(w.end_s - w.start_s):.2f} s" if w.end_s is not None else "-") for w in result.fault_windows]
        windows = "<h3>Fault windows</h3>" + _table("fault-windows", "", ("fault", "start", "end", "length"), wrows,
                                                    numeric={1, 2, 3})
    return ('<section id="errors"><h2>Errors</h2>'
            + _figure(errors_plot(result, buckets, bucket_s),
                      "Failed requests per time bucket (by request start time), stacked by status; red bands mark "
                      "when a fault was active.")
            + table + windows + "</section>")


def _fallback_section(fb: FallbackView) -> str:
    parts = [f'<section id="fallback"><h2>Fallback: {esc(fb.scenario)} {_yes_no(fb.ok)}</h2>']
    errors = fmt_statuses(fb.errors_by_status_during_fault)
    parts.append(_meta([
        ("time to fallback", fmt_s(fb.time_to_fallback_s) if fb.time_to_fallback_s is not None else "never"),
        ("time to recover", fmt_s(fb.time_to_recover_s) if fb.time_to_recover_s is not None else "never"),
        ("error rate during fault", pct(fb.error_rate_during_fault, 2)),
        ("errors during fault", errors or "none"),
        ("healthy share during fault", pct(fb.healthy_share_during_fault, 2)),
    ]))
    rows = [(_yes_no(c.ok), esc(c.name), esc(c.observed), esc(c.expected), esc(c.detail)) for c in fb.checks]
    bad = {i for i, c in enumerate(fb.checks) if not c.ok}
    parts.append(_table("fallback-checks", "", ("result", "check", "observed", "expected", "detail"), rows,
                        bad_rows=bad, raw_cells={0, 1, 2, 3, 4}))
    post = fb.post_recovery
    if post is not None:
        prow = [(r.name, pct(r.weight), pct(r.share, 2), f"[{pct(r.ci_low, 2)}, {pct(r.ci_high, 2)}]",
                 fmt_p(finite(r.p_value)), r.status(post.tolerance)) for r in post.rows]
        parts.append("<h3>Split after recovery</h3>")
        parts.append(f"<p>{esc(post.verdict)}</p>")
        parts.append(_table("post-recovery-split", "", ("variant", "weight", "observed share", "interval", "p-value",
                                                        "within tolerance"), prow, numeric={1, 2, 4}))
    if fb.timeline:
        parts.append('<h3>Timeline</h3><pre id="fallback-timeline" data-testid="fallback-timeline">'
                     + esc("\n".join(fb.timeline)) + "</pre>")
    parts.append("</section>")
    return "".join(parts)


def _routes_section(result: ExperimentResult) -> str:
    routes = result.routes
    if routes is None:
        return ""
    rows = [(_yes_no(r.ok), esc(r.rule), esc(r.match), esc(r.backend), f"{r.requests:,}",
             esc(", ".join(f"{v or '(no version)'}: {n:,}" for v, n in r.stray.items()) or "none"), esc(r.message()))
            for r in routes.rules]
    bad = {i for i, r in enumerate(routes.rules) if not r.ok}
    return (f'<section id="routes"><h2>Header routes {_yes_no(routes.ok)}</h2>'
            + _table("route-rules", f"{routes.default_requests:,} requests matched no rule; the split above is judged "
                     "on them. Matched traffic must all reach the rule's backend: any stray response fails the rule.",
                     ("result", "rule", "match", "backend", "matched", "stray", "verdict"), rows, numeric={4},
                     bad_rows=bad, raw_cells={0, 1, 2, 3, 5, 6})
            + "</section>")


def _mesh_section(result: ExperimentResult) -> str:
    if not result.mesh_counters:
        return ('<section id="mesh"><h2>Mesh counters</h2>'
                '<p class="muted" id="mesh-counters-empty" data-testid="mesh-counters-empty">'
                "The backend reported no mesh-level counters.</p></section>")
    rows = []
    for name, counters in result.mesh_counters.items():
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(counters.responses_by_status.items())) or "-"
        proxy = ", ".join(f"{k}: {v:,}" for k, v in sorted(counters.proxy_errors.items())) or "-"
        rows.append((name, f"{counters.requests:,}", statuses, proxy))
    return ('<section id="mesh"><h2>Mesh counters</h2>'
            + _table("mesh-counters", "What the mesh (proxy) counted per backend, independent of the load generator.",
                     ("backend", "requests", "responses by status", "answered by the proxy"), rows, numeric={1})
            + "</section>")


def _weights_section(result: ExperimentResult) -> str:
    """Declared (the objects) vs programmed (what the mesh serves) vs observed shares, side by side."""
    w = result.weights
    if w is None:
        return ('<section id="weights"><h2>Declared, programmed and observed weights</h2>'
                '<p class="muted" id="weights-empty" data-testid="weights-empty">'
                "The backend did not report what the mesh serves.</p></section>")
    observed = result.observed_shares()
    declared_total = sum(w.declared.values()) or 1.0
    programmed_total = sum((w.programmed or {}).values()) or 1.0
    names = list(dict.fromkeys([*w.declared, *(w.programmed or {}), *observed]))
    rows = []
    bad = set()
    for i, name in enumerate(names):
        d = w.declared.get(name, 0.0) / declared_total
        p = (w.programmed or {}).get(name, 0.0) / programmed_total if w.programmed is not None else None
        if p is not None and abs(p - d) > 1e-9:
            bad.add(i)
        rows.append((name, pct(d), pct(p) if p is not None else "unknown", pct(observed.get(name, 0.0))))
    after = f"; converged after {fmt_num(w.converged_after_s)} s" if w.converged_after_s is not None else ""
    return ('<section id="weights"><h2>Declared, programmed and observed weights</h2>'
            + _table("weights", f"Declared: the split objects; programmed: {w.source}{after}; observed: share of "
                     "successful responses.", ("variant", "declared", "programmed", "observed"), rows,
                     numeric={1, 2, 3}, bad_rows=bad)
            + "</section>")


def _notes_section(result: ExperimentResult) -> str:
    if not result.notes:
        return ""
    return ('<section id="notes"><h2>Notes</h2><ul class="notes">'
            + "".join(f"<li>{esc(n)}</li>" for n in result.notes) + "</ul></section>")


def _share_caption(result: ExperimentResult, bucket_text: str) -> str:
    if result.fault_windows:
        lines = f"Share of successful responses per version in each {bucket_text} (by request start time)"
    else:
        lines = (f"Share of successful responses per version in each {bucket_text} (thin) and cumulative since "
                 "the start (thick)")
    band = ", the bands the tolerance" if result.split is not None else ""
    faults = "; red: fault active" if result.fault_windows else ""
    return f"{lines}; dashed lines are the configured weights{band}{faults}."


def _judgment_section(section_id: str, title: str, report: SloReport | CompareReport | None) -> str:
    """An SLO or comparison verdict: its sentence, then its checks (failed and unclear rows marked)."""
    if report is None:
        return ""
    header, rows = report.table_rows()
    bad = {i for i, row in enumerate(rows) if row[-1] != "pass"}
    notes = "".join(f"<p class=\"muted\">note: {esc(line)}</p>" for line in report.notes())
    return (f'<section id="{section_id}"><h2>{esc(title)} {_yes_no(report.ok)}</h2>'
            f'<p data-testid="{section_id}-verdict">{esc(report.verdict)}</p>'
            + _table(f"{section_id}-checks", "", header, rows, bad_rows=bad) + notes + "</section>")


def render_html(result: ExperimentResult) -> str:
    """The whole report as one HTML document (UTF-8, no external resources)."""
    from .._version import __version__

    load = result.load
    bucket_s = _bucket_size(load)
    buckets = load.timeseries(bucket_s)
    views = version_views(result)
    colors = _colors(result)
    status = result.status
    fb = fallback_view(result)
    generated = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    bucket_text = "second" if bucket_s == 1.0 else f"{fmt_num(bucket_s)} seconds"
    body = [
        f'<header class="banner {"pass" if result.ok else "fail"}" id="verdict" data-testid="verdict" '
        f'data-ok="{str(result.ok).lower()}">',
        f'<h1><span class="badge">{status}</span>{esc(result.name)}</h1>',
        f"<p>{esc(verdict_line(result))}</p></header>",
        "<main>",
        _overview(result),
        _split_section(result, views, colors),
        _weights_section(result),
        '<section id="share"><h2>Share over time</h2>',
        _figure(share_plot(result, buckets, bucket_s), _share_caption(result, bucket_text)),
        "</section>",
        _latency_section(result, views, colors),
        _errors_section(result, views, buckets, bucket_s),
        _fallback_section(fb) if fb is not None else "",
        _routes_section(result),
        _judgment_section("slo", "Service levels", result.slo),
        _judgment_section("compare", "Candidate vs baseline", result.compare),
        _mesh_section(result),
        _notes_section(result),
        f"<footer>pytest-abtraffic {esc(__version__)}; report generated {esc(generated)}."
        '<div id="abtraffic-errors" data-testid="abtraffic-errors" data-count="0" hidden></div></footer>',
        "</main>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(status)}: {esc(result.name)} (A/B traffic report)</title>"
        f"<script>{_ERROR_SCRIPT}</script>"
        f"<style>{_CSS}</style></head>\n"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_html(result: ExperimentResult, report_dir: str | Path, *, stem: str | None = None) -> Path:
    """Write ``<report_dir>/<experiment>.html`` (created if missing) and return its path."""
    path = report_path(result.name, report_dir, ".html", stem=stem)
    write_text_atomic(path, render_html(result))
    return path


__all__ = ["CSP", "PLOT_IDS", "errors_plot", "latency_plot", "render_html", "share_plot", "write_html"]
