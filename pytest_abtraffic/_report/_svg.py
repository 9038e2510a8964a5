"""A small SVG plotting kit: axes with nice ticks, lines, bars, shaded spans and a legend.

Reports must open offline and without a plotting dependency, so plots are SVG markup built here.
Every coordinate goes through ``Canvas.sx``/``Canvas.sy``; every text and attribute is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

# Okabe-Ito: distinguishable for the common colour-vision deficiencies.
VERSION_COLORS: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
                                   "#000000")
STATUS_COLORS: dict[int, str] = {0: "#555555", 500: "#D55E00", 502: "#CC79A7", 503: "#E69F00", 504: "#8E44AD"}
_OTHER_STATUS_COLORS: tuple[str, ...] = ("#B8860B", "#0072B2", "#009E73", "#A0522D", "#2F4F4F")
FAULT_FILL = "#d62728"


def version_color(index: int) -> str:
    return VERSION_COLORS[index % len(VERSION_COLORS)]


def status_color(status: int, index: int) -> str:
    return STATUS_COLORS.get(status, _OTHER_STATUS_COLORS[index % len(_OTHER_STATUS_COLORS)])


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt_num(value: float) -> str:
    """Coordinates with two decimals and no trailing zeros: compact and stable markup."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = magnitude * 10
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * magnitude:
            step = mult * magnitude
            break
    first = math.ceil(lo / step - 1e-9) * step
    ticks: list[float] = []
    value = first
    while value <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(value, 10))
        value += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade inside [lo, hi] (both > 0); thinned to decades when there are many."""
    if lo <= 0 or hi <= lo:
        return [lo]
    ticks: list[float] = []
    for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for mult in (1, 2, 5):
            value = mult * 10.0**exp
            if lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9):
                ticks.append(value)
    if len(ticks) > 9:
        ticks = [t for t in ticks if math.isclose(10 ** round(math.log10(t)), t)]
    return ticks


@dataclass(frozen=True)
class Axis:
    lo: float
    hi: float
    label: str
    fmt: Callable[[float], str] = fmt_num
    log: bool = False
    ticks: Sequence[float] | None = None

    def tick_values(self) -> list[float]:
        if self.ticks is not None:
            return list(self.ticks)
        return log_ticks(self.lo, self.hi) if self.log else nice_ticks(self.lo, self.hi)

    def fraction(self, value: float) -> float:
        if self.log:
            lo, hi = math.log10(self.lo), math.log10(self.hi)
            value = math.log10(max(value, self.lo))
        else:
            lo, hi = self.lo, self.hi
        return 0.0 if hi == lo else (value - lo) / (hi - lo)


@dataclass(frozen=True)
class LegendItem:
    label: str
    color: str
    kind: str = "line"  # line | dash | box | band


@dataclass
class Canvas:
    """One plot. Build with the drawing methods, then ``render()`` the ``<svg>`` element."""

    plot_id: str
    title: str
    x: Axis
    y: Axis
    width: int = 760
    height: int = 280
    left: int = 58
    right: int = 18
    top: int = 34
    bottom: int = 40
    description: str = ""
    _body: list[str] = field(default_factory=list)
    _under: list[str] = field(default_factory=list)
    _legend: list[LegendItem] = field(default_factory=list)
    _note: str = ""

    # -- coordinates -----------------------------------------------------------------------
    @property
    def plot_w(self) -> float:
        return float(self.width - self.left - self.right)

    @property
    def plot_h(self) -> float:
        return float(self.height - self.top - self.bottom)

    def sx(self, value: float) -> float:
        return self.left + self.x.fraction(value) * self.plot_w

    def sy(self, value: float) -> float:
        return self.top + (1.0 - self.y.fraction(value)) * self.plot_h

    def _clamp_x(self, value: float) -> float:
        return min(max(self.sx(value), self.left), self.left + self.plot_w)

    def _clamp_y(self, value: float) -> float:
        return min(max(self.sy(value), self.top), self.top + self.plot_h)

    # -- drawing -----------------------------------------------------------------------------
    def span_x(self, x0: float, x1: float, *, fill: str, opacity: float, label: str = "",
               css_class: str = "span", tooltip: str = "") -> None:
        """A full-height shaded band between two x values (a fault window)."""
        px0, px1 = self._clamp_x(x0), self._clamp_x(x1)
        tip = f"<title>{esc(tooltip)}</title>" if tooltip else ""
        self._under.append(
            f'<rect class="{esc(css_class)}" x="{fmt_num(px0)}" y="{self.top}" width="{fmt_num(max(px1 - px0, 1.0))}" '
            f'height="{fmt_num(self.plot_h)}" fill="{esc(fill)}" fill-opacity="{opacity}">{tip}</rect>'
        )
        if label:
            self._under.append(
                f'<text class="span-label" x="{fmt_num(px0 + 3)}" y="{self.top + 11}" font-size="10" '
                f'fill="{esc(fill)}">{esc(label)}</text>'
            )

    def band_y(self, y0: float, y1: float, *, fill: str, opacity: float, css_class: str = "band",
               tooltip: str = "") -> None:
        """A full-width band between two y values (the tolerance band around a weight)."""
        py0, py1 = self._clamp_y(y1), self._clamp_y(y0)
        tip = f"<title>{esc(tooltip)}</title>" if tooltip else ""
        self._under.append(
            f'<rect class="{esc(css_class)}" x="{self.left}" y="{fmt_num(py0)}" width="{fmt_num(self.plot_w)}" '
            f'height="{fmt_num(max(py1 - py0, 0.5))}" fill="{esc(fill)}" fill-opacity="{opacity}">{tip}</rect>'
        )

    def hline(self, y: float, *, color: str, dash: str = "6 4", css_class: str = "ref-line", tooltip: str = "",
              label: str = "") -> None:
        """A horizontal reference line; ``label`` is written at its right end, inside the plot."""
        py = self._clamp_y(y)
        tip = f"<title>{esc(tooltip)}</title>" if tooltip else ""
        self._body.append(
            f'<line class="{esc(css_class)}" x1="{self.left}" x2="{fmt_num(self.left + self.plot_w)}" '
            f'y1="{fmt_num(py)}" y2="{fmt_num(py)}" stroke="{esc(color)}" stroke-width="1.5" '
            f'stroke-dasharray="{esc(dash)}">{tip}</line>'
        )
        if label:
            self._body.append(
                f'<text class="ref-label" x="{fmt_num(self.left + self.plot_w - 4)}" y="{fmt_num(py - 3)}" '
                f'font-size="9" text-anchor="end" fill="{esc(color)}">{esc(label)}</text>'
            )

    def polyline(self, points: Iterable[tuple[float, float]], *, color: str, css_class: str = "series",
                 width: float = 1.8, step: bool = False, tooltip: str = "", opacity: float = 1.0) -> None:
        """A line through ``points``; ``step`` draws a staircase (for CDFs)."""
        coords: list[tuple[float, float]] = []
        for px, py in ((self.sx(a), self.sy(b)) for a, b in points):
            if step and coords:
                coords.append((px, coords[-1][1]))
            coords.append((px, py))
        if not coords:
            return
        text = " ".join(f"{fmt_num(a)},{fmt_num(b)}" for a, b in coords)
        tip = f"<title>{esc(tooltip)}</title>" if tooltip else ""
        self._body.append(
            f'<polyline class="{esc(css_class)}" points="{text}" fill="none" stroke="{esc(color)}" '
            f'stroke-width="{width}" stroke-opacity="{opacity}" stroke-linejoin="round">{tip}</polyline>'
        )

    def dots(self, points: Iterable[tuple[float, float]], *, color: str, css_class: str = "dot",
             radius: float = 2.2, opacity: float = 1.0) -> None:
        """Markers, for series too short or too gappy for a line to show."""
        marks = "".join(f'<circle cx="{fmt_num(self.sx(a))}" cy="{fmt_num(self.sy(b))}" r="{radius}"/>'
                        for a, b in points)
        if marks:
            self._body.append(f'<g class="{esc(css_class)}" fill="{esc(color)}" fill-opacity="{opacity}">{marks}</g>')

    def bar(self, x0: float, x1: float, y0: float, y1: float, *, color: str, css_class: str = "bar",
            tooltip: str = "") -> None:
        px0, px1 = self._clamp_x(x0), self._clamp_x(x1)
        py_top, py_bottom = self._clamp_y(y1), self._clamp_y(y0)
        tip = f"<title>{esc(tooltip)}</title>" if tooltip else ""
        self._body.append(
            f'<rect class="{esc(css_class)}" x="{fmt_num(px0)}" y="{fmt_num(py_top)}" '
            f'width="{fmt_num(max(px1 - px0, 0.6))}" height="{fmt_num(max(py_bottom - py_top, 0.0))}" '
            f'fill="{esc(color)}">{tip}</rect>'
        )

    def legend(self, items: Sequence[LegendItem]) -> None:
        self._legend.extend(items)

    def note(self, text: str) -> None:
        """A centred message inside the plot area (``no data``)."""
        self._note = text

    # -- output ------------------------------------------------------------------------------
    def _axes(self) -> list[str]:
        out: list[str] = []
        x_end = self.left + self.plot_w
        y_end = self.top + self.plot_h
        for value in self.y.tick_values():
            py = self.sy(value)
            if py < self.top - 0.5 or py > y_end + 0.5:
                continue
            out.append(f'<line class="grid" x1="{self.left}" x2="{fmt_num(x_end)}" y1="{fmt_num(py)}" '
                       f'y2="{fmt_num(py)}" stroke="#e3e3e3" stroke-width="1"/>')
            out.append(f'<text class="tick" x="{self.left - 6}" y="{fmt_num(py + 3.5)}" font-size="10" '
                       f'text-anchor="end" fill="#444">{esc(self.y.fmt(value))}</text>')
        for value in self.x.tick_values():
            px = self.sx(value)
            if px < self.left - 0.5 or px > x_end + 0.5:
                continue
            out.append(f'<line class="tick-mark" x1="{fmt_num(px)}" x2="{fmt_num(px)}" y1="{fmt_num(y_end)}" '
                       f'y2="{fmt_num(y_end + 4)}" stroke="#666" stroke-width="1"/>')
            out.append(f'<text class="tick" x="{fmt_num(px)}" y="{fmt_num(y_end + 15)}" font-size="10" '
                       f'text-anchor="middle" fill="#444">{esc(self.x.fmt(value))}</text>')
        out.append(f'<rect class="frame" x="{self.left}" y="{self.top}" width="{fmt_num(self.plot_w)}" '
                   f'height="{fmt_num(self.plot_h)}" fill="none" stroke="#999" stroke-width="1"/>')
        out.append(f'<text class="axis-label" x="{fmt_num(self.left + self.plot_w / 2)}" y="{self.height - 6}" '
                   f'font-size="11" text-anchor="middle" fill="#222">{esc(self.x.label)}</text>')
        mid_y = fmt_num(self.top + self.plot_h / 2)
        out.append(f'<text class="axis-label" x="13" y="{mid_y}" font-size="11" text-anchor="middle" '
                   f'fill="#222" transform="rotate(-90 13 {mid_y})">{esc(self.y.label)}</text>')
        return out

    def _legend_markup(self) -> list[str]:
        out: list[str] = []
        x = float(self.left)
        y = 14.0
        for item in self._legend:
            if item.kind == "box":
                out.append(f'<rect x="{fmt_num(x)}" y="{fmt_num(y - 8)}" width="12" height="10" '
                           f'fill="{esc(item.color)}"/>')
            elif item.kind == "band":
                out.append(f'<rect x="{fmt_num(x)}" y="{fmt_num(y - 8)}" width="16" height="10" '
                           f'fill="{esc(item.color)}" fill-opacity="0.18"/>')
            else:
                dash = ' stroke-dasharray="4 3"' if item.kind == "dash" else ""
                out.append(f'<line x1="{fmt_num(x)}" x2="{fmt_num(x + 16)}" y1="{fmt_num(y - 3)}" '
                           f'y2="{fmt_num(y - 3)}" stroke="{esc(item.color)}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{fmt_num(x + 20)}" y="{fmt_num(y)}" font-size="11" fill="#222">'
                       f'{esc(item.label)}</text>')
            # Rough text width: enough to keep labels apart without measuring fonts.
            x += 32 + 6.2 * len(item.label)
            if x > self.width - 120:
                x = float(self.left)
                y += 14
        return [f'<g class="legend">{"".join(out)}</g>'] if out else []

    def render(self) -> str:
        title_id = f"{self.plot_id}-title"
        clip_id = f"{self.plot_id}-clip"
        parts = [
            f'<svg id="{esc(self.plot_id)}" data-testid="{esc(self.plot_id)}" class="plot" '
            f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" '
            f'role="img" aria-labelledby="{esc(title_id)}" preserveAspectRatio="xMinYMin meet">',
            f'<title id="{esc(title_id)}">{esc(self.title)}</title>',
        ]
        if self.description:
            parts.append(f"<desc>{esc(self.description)}</desc>")
        parts.append(f'<defs><clipPath id="{esc(clip_id)}"><rect x="{self.left}" y="{self.top}" '
                     f'width="{fmt_num(self.plot_w)}" height="{fmt_num(self.plot_h)}"/></clipPath></defs>')
        parts.append(f'<rect class="background" x="0" y="0" width="{self.width}" height="{self.height}" fill="#fff"/>')
        parts.append(f'<g class="under">{"".join(self._under)}</g>')
        parts.extend(self._axes())
        parts.append(f'<g class="data" clip-path="url(#{esc(clip_id)})">{"".join(self._body)}</g>')
        if self._note:
            parts.append(f'<text class="note" x="{fmt_num(self.left + self.plot_w / 2)}" '
                         f'y="{fmt_num(self.top + self.plot_h / 2)}" font-size="13" text-anchor="middle" '
                         f'fill="#777">{esc(self._note)}</text>')
        parts.extend(self._legend_markup())
        parts.append("</svg>")
        return "".join(parts)


__all__ = ["Axis", "Canvas", "LegendItem", "esc", "fmt_num", "log_ticks", "nice_ticks", "status_color",
           "version_color"]
