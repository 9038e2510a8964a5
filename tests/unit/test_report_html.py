"""The HTML report, checked without a browser: structure, plot content, self-containment, escaping."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_abtraffic._backend import BackendCounters
from pytest_abtraffic._load import LoadResult, RequestRecord
from pytest_abtraffic._report import PLOT_IDS, render_html, write_html
from pytest_abtraffic._report._sample import sample_fallback_result, sample_split_result
from pytest_abtraffic._result import ExperimentResult, FaultWindow

VOID = {"meta", "br", "img", "input", "link", "hr", "wbr", "source", "col", "area", "base", "embed", "track"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    svg: str | None  # id of the enclosing <svg>, if any
    text: str = ""


@dataclass
class Page(HTMLParser):
    """Elements with their attributes, the plot each sits in, and tag-balance problems."""

    elements: list[Element] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _stack: list[Element] = field(default_factory=list)

    def __post_init__(self) -> None:
        HTMLParser.__init__(self, convert_charrefs=True)

    def _svg_id(self) -> str | None:
        for el in reversed(self._stack):
            if el.tag == "svg":
                return el.attrs.get("id")
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs}, self._svg_id())
        if tag == "svg":
            el.svg = el.attrs.get("id")
        self.elements.append(el)
        if tag not in VOID:
            self._stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}, self._svg_id()))

    def handle_endtag(self, tag: str) -> None:
        if not self._stack or self._stack[-1].tag != tag:
            self.problems.append(f"</{tag}> does not close {self._stack[-1].tag if self._stack else 'anything'}")
            return
        self._stack.pop()

    def handle_data(self, data: str) -> None:
        for el in self._stack:
            el.text += data

    def by_id(self, element_id: str) -> Element:
        found = [e for e in self.elements if e.attrs.get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    def in_plot(self, plot_id: str, tag: str, css_class: str | None = None) -> list[Element]:
        return [e for e in self.elements if e.svg == plot_id and e.tag == tag
                and (css_class is None or css_class in e.attrs.get("class", "").split())]

    def rows(self, table_id: str) -> list[Element]:
        table = self.by_id(table_id)
        start = self.elements.index(table)
        out = []
        for e in self.elements[start + 1:]:
            if e.tag == "table":
                break
            if e.tag == "tr":
                out.append(e)
        return out[1:]  # the header row


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert not page.problems, page.problems[:5]
    assert not page._stack, [e.tag for e in page._stack]
    return page


@pytest.fixture(scope="module")
def split_html(split_result: ExperimentResult) -> str:
    return render_html(split_result)


@pytest.fixture(scope="module")
def fallback_html(fallback_result: ExperimentResult) -> str:
    return render_html(fallback_result)


# Plot geometry (Canvas defaults): the plot area spans y = 34 .. 240 for values 1 .. 0.
PLOT_TOP, PLOT_HEIGHT = 34.0, 206.0


def _value_at(y: float) -> float:
    return 1.0 - (y - PLOT_TOP) / PLOT_HEIGHT


def _points(el: Element) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in (p.split(",") for p in el.attrs["points"].split())]


def test_every_plot_is_an_inline_svg_with_an_id(split_html: str) -> None:
    page = parse(split_html)
    for plot_id in PLOT_IDS:
        svg = page.by_id(plot_id)
        assert svg.tag == "svg" and svg.attrs["data-testid"] == plot_id
        assert svg.attrs["role"] == "img" and svg.attrs.get("viewbox")
        assert page.in_plot(plot_id, "title"), f"{plot_id} has no accessible title"


def test_share_plot_shows_weights_tolerance_and_the_observed_share(split_html: str,
                                                                   split_result: ExperimentResult) -> None:
    page = parse(split_html)
    weights = page.in_plot("plot-share", "line", "weight-line")
    assert len(weights) == 2
    assert [round(_value_at(float(w.attrs["y1"])), 3) for w in weights] == [0.9, 0.1]
    bands = page.in_plot("plot-share", "rect", "tolerance-band")
    assert len(bands) == 2
    top = _value_at(float(bands[0].attrs["y"]))
    bottom = _value_at(float(bands[0].attrs["y"]) + float(bands[0].attrs["height"]))
    assert top == pytest.approx(0.92, abs=1e-3) and bottom == pytest.approx(0.88, abs=1e-3)
    cumulative = page.in_plot("plot-share", "polyline", "share-cumulative")
    assert len(cumulative) == 2
    assert split_result.split is not None
    for line, row in zip(cumulative, split_result.split.rows, strict=True):
        # the last cumulative point is the share the split table reports
        assert _value_at(_points(line)[-1][1]) == pytest.approx(row.share, abs=0.003)
    per_bucket = page.in_plot("plot-share", "polyline", "share-series")
    assert len(per_bucket) == 2 and all(len(_points(p)) >= 10 for p in per_bucket)
    assert not page.in_plot("plot-share", "rect", "fault-window")


def test_latency_plot_has_one_cdf_per_version_ending_at_100_percent(split_html: str) -> None:
    page = parse(split_html)
    cdfs = page.in_plot("plot-latency", "polyline", "latency-cdf")
    assert len(cdfs) == 2
    for cdf in cdfs:
        pts = _points(cdf)
        assert _value_at(pts[-1][1]) == pytest.approx(1.0, abs=1e-3)
        assert [y for _, y in pts] == sorted((y for _, y in pts), reverse=True)  # non-decreasing share
        assert [x for x, _ in pts] == sorted(x for x, _ in pts)


def test_errors_plot_has_one_bar_per_second_and_status(split_html: str, split_result: ExperimentResult) -> None:
    page = parse(split_html)
    bars = page.in_plot("plot-errors", "rect", "error-bar")
    expected = sum(len(b.errors) for b in split_result.load.timeseries(1.0))
    assert expected > 0 and len(bars) == expected
    assert all("500" in bar.text for bar in bars)  # the tooltip names the status


def test_tables(split_html: str, split_result: ExperimentResult) -> None:
    page = parse(split_html)
    assert split_result.split is not None
    rows = page.rows("split-table")
    assert len(rows) == len(split_result.split.rows)
    for tr, row in zip(rows, split_result.split.rows, strict=True):
        assert row.name in tr.text
        assert f"{100 * row.share:.2f}%" in tr.text and f"{100 * row.ci_low:.2f}%" in tr.text
        assert f"{row.p_value:.3f}" in tr.text
    latency = page.rows("latency-table")
    assert len(latency) == 2
    p99 = split_result.load.latency_percentiles("v2")["p99"]
    assert f"{p99:.1f}" in latency[1].text
    assert len(page.rows("mesh-counters")) == 2
    assert page.by_id("verdict").attrs["data-ok"] == "true" and "pass" in page.by_id("verdict").attrs["class"]
    assert "holds" in page.by_id("sequential").text


def test_fallback_report(fallback_html: str, fallback_result: ExperimentResult) -> None:
    page = parse(fallback_html)
    fb = fallback_result.fallback
    assert fb is not None
    checks = page.rows("fallback-checks")
    assert len(checks) == len(fb.checks)
    for tr, check in zip(checks, fb.checks, strict=True):
        assert check.name in tr.text
    assert len(page.in_plot("plot-share", "rect", "fault-window")) == len(fallback_result.fault_windows)
    assert len(page.in_plot("plot-errors", "rect", "fault-window")) == len(fallback_result.fault_windows)
    assert any("504" in bar.text for bar in page.in_plot("plot-errors", "rect", "error-bar"))
    assert "fallback @" in page.by_id("fallback").text  # the timeline's markers
    assert page.rows("post-recovery-split")
    assert not page.in_plot("plot-share", "rect", "tolerance-band")  # no split judged: no band
    assert page.in_plot("plot-latency", "polyline", "latency-cdf")
    text = page.by_id("fallback").text
    assert f"{fb.time_to_fallback_s:.2f} s" in text


@pytest.mark.parametrize("make", [lambda: sample_fallback_result(recovers=False),
                                  lambda: sample_split_result(skew=0.04)], ids=["no-recovery", "skewed-split"])
def test_failures_are_red_and_marked(make: object) -> None:
    result = make()  # type: ignore[operator]
    assert not result.ok
    page = parse(render_html(result))
    banner = page.by_id("verdict")
    assert banner.attrs["data-ok"] == "false" and "fail" in banner.attrs["class"].split()
    assert "FAIL" in banner.text
    table = "fallback-checks" if result.fallback is not None else "split-table"
    assert any(tr.attrs.get("class") == "bad" for tr in page.rows(table))


EXTERNAL = re.compile(r"""(?:src|href|xlink:href|action|poster|data)\s*=\s*["']?\s*(?!#|data:)[a-z]""", re.I)


@pytest.mark.parametrize("which", ["split", "fallback"])
def test_self_contained(which: str, split_html: str, fallback_html: str) -> None:
    html = split_html if which == "split" else fallback_html
    assert "http://" not in html and "https://" not in html
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "<link" not in html and "@import" not in html
    assert all(ref.startswith("#") for ref in re.findall(r"url\(\s*['\"]?([^)'\"]*)", html))
    page = parse(html)
    scripts = [e for e in page.elements if e.tag == "script"]
    assert len(scripts) == 1 and "src" not in scripts[0].attrs
    csp = [e for e in page.elements if e.tag == "meta" and e.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0].attrs["content"]
    errors = page.by_id("abtraffic-errors")
    assert errors.attrs["data-count"] == "0"


def test_the_error_check_catches_an_external_reference() -> None:
    # the checks above must be able to fail
    bad = '<img src="http://127.0.0.1:9/x.png"><link rel="stylesheet" href="https://cdn.example/x.css">'
    assert EXTERNAL.search(bad)


HOSTILE = '<script>alert("x")</script> & <b>bold</b> \'q\''


def test_all_text_is_escaped(split_result: ExperimentResult, fallback_result: ExperimentResult) -> None:
    assert fallback_result.fallback is not None
    fb = fallback_result.fallback
    hostile_check = replace(fb.checks[0], name=HOSTILE, detail="</table><img src=x onerror=alert(1)>",
                            observed=HOSTILE)
    result = replace(
        fallback_result,
        name=HOSTILE,
        namespace='ns"><svg onload=alert(1)>',
        notes=(HOSTILE, "<iframe src=javascript:alert(1)>"),
        fault_windows=(FaultWindow('kill <v2> & "x"', 2.0, 8.0),),
        mesh_counters={"<v1>": BackendCounters(requests=3, responses_by_status={200: 3},
                                               proxy_errors={"<Fail>": 1})},
        fallback=replace(fb, checks=(hostile_check, *fb.checks[1:]), scenario="<kill>"),
    )
    html = render_html(result)
    page = parse(html)
    assert len([e for e in page.elements if e.tag == "script"]) == 1
    for tag in ("b", "iframe", "img"):
        assert not [e for e in page.elements if e.tag == tag], tag
    assert not [e for e in page.elements for k in e.attrs if k.startswith("on")]
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert HOSTILE in page.by_id("verdict").text  # shown as text, exactly
    assert "kill <v2> & \"x\"" in page.by_id("fault-windows").text


def test_versions_are_escaped_in_plots_and_tables(split_result: ExperimentResult) -> None:
    records = tuple(replace(r, version="<v2>") if r.version == "v2" else r for r in split_result.load.records)
    result = replace(split_result, load=replace(split_result.load, records=records), split=None,
                     variants=("v1", "<v2>"), expected_shares={"v1": 0.9, "<v2>": 0.1})
    page = parse(render_html(result))
    assert "<v2>" in page.by_id("latency-table").text
    assert any("<v2>" in e.text for e in page.in_plot("plot-share", "g", "legend"))


def _bare(records: list[RequestRecord], duration: float) -> ExperimentResult:
    return ExperimentResult(
        name="bare", backend="local", namespace="", variants=("v1", "v2"), expected_shares={"v1": 0.5, "v2": 0.5},
        split_api="httproute", load=LoadResult(tuple(records), duration, False, "duration"),
    )


def test_a_run_without_requests_still_renders_every_part() -> None:
    page = parse(render_html(_bare([], 0.0)))
    for plot_id in PLOT_IDS:
        assert page.by_id(plot_id)
    notes = {e.svg: e.text for e in page.elements if e.tag == "text" and e.attrs.get("class") == "note"}
    assert notes == {"plot-share": "no successful responses", "plot-latency": "no requests",
                     "plot-errors": "no failed requests"}
    assert page.by_id("mesh-counters-empty")
    assert "nothing was asserted" in page.by_id("verdict").text


def test_long_runs_use_coarser_buckets() -> None:
    records = [RequestRecord(float(t), "v1" if t % 2 else "v2", 200 if t % 7 else 503, 5.0, "u1") for t in range(1500)]
    page = parse(render_html(_bare(records, 1500.0)))
    bars = page.in_plot("plot-errors", "rect", "error-bar")
    assert 0 < len(bars) <= 600
    assert "per 3 s" in " ".join(e.text for e in page.in_plot("plot-errors", "text"))


def test_write_html(tmp_path: Path, split_result: ExperimentResult) -> None:
    path = write_html(split_result, tmp_path / "out")
    assert path == tmp_path / "out" / "canary-90-10.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text
    parse(text)
    assert write_html(split_result, tmp_path / "out", stem="other").name == "other.html"
