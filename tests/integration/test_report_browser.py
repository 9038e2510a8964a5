"""The HTML report of a fallback run, opened in headless Chromium: it loads cleanly and shows its parts.

Needs Chromium (``apt-get install -y chromium``); skipped only when it is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_abtraffic._report import PLOT_IDS, write_html
from pytest_abtraffic._report._sample import sample_fallback_result
from pytest_abtraffic._result import ExperimentResult


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


CHROMIUM = _find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed; install it to run the browser check of the HTML report: "
    "`apt-get install -y chromium` (Debian/Ubuntu; the CI script does this)",
)

WINDOW = (1280, 3200)
TIMEOUT_S = 60.0
PASS_GREEN = (0x1A, 0x7F, 0x37)  # --pass in the report's CSS


def run_chromium(page: Path, profile: Path, *action: str) -> tuple[str, str]:
    """Run headless Chromium on ``page`` in its own process group; nothing of it outlives the call."""
    assert CHROMIUM is not None
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", "--enable-logging=stderr", "--v=0",
        *action, page.as_uri(),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT_S:.0f} s: {' '.join(argv)}")
    finally:
        # Helpers (zygote, GPU, crashpad) share the group; make sure none is left behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
    return out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace")


@dataclass
class Dom(HTMLParser):
    """Elements of the dumped DOM by id, the plot each sits in, and the text of each id'd element."""

    attrs_by_id: dict[str, dict[str, str]] = field(default_factory=dict)
    text_by_id: dict[str, str] = field(default_factory=dict)
    in_plot: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # plot id -> [(tag, class)]
    rows_by_table: dict[str, int] = field(default_factory=dict)
    _stack: list[tuple[str, str | None]] = field(default_factory=list)

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr", "wbr", "source", "col", "area", "base"})

    def __post_init__(self) -> None:
        HTMLParser.__init__(self, convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.attrs_by_id[a["id"]] = a
            self.text_by_id.setdefault(a["id"], "")
        plot = next((i for t, i in reversed(self._stack) if t == "svg"), None)
        if plot is not None:
            self.in_plot.setdefault(plot, []).append((tag, a.get("class", "")))
        table = next((i for t, i in reversed(self._stack) if t == "table"), None)
        if tag == "tr" and table is not None:
            self.rows_by_table[table] = self.rows_by_table.get(table, 0) + 1
        if tag not in self.VOID:
            self._stack.append((tag, a.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._stack:
            if element_id is not None:
                self.text_by_id[element_id] += data


def parse_dom(text: str) -> Dom:
    dom = Dom()
    dom.feed(text)
    dom.close()
    return dom


def png_size_and_top_rows(path: Path, rows: int) -> tuple[int, int, list[bytes]]:
    """Width, height and the first ``rows`` rows as RGB(A) bytes (8-bit, non-interlaced PNG)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    stride = width * channels
    raw = zlib.decompressobj().decompress(idat, (stride + 1) * rows)
    out: list[bytes] = []
    prev = bytearray(stride)
    for r in range(rows):
        filt, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = prev[i], (prev[i - channels] if i >= channels else 0)
            if filt == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filt == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 0xFF
        out.append(bytes(line))
        prev = line
    return width, height, out


@pytest.fixture(scope="module")
def result() -> ExperimentResult:
    return sample_fallback_result()


@pytest.fixture(scope="module")
def report(result: ExperimentResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_html(result, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def dumped(report: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Dom, str]:
    out, err = run_chromium(report, tmp_path_factory.mktemp("profile"), "--dump-dom")
    return parse_dom(out), err


def test_report_loads_without_errors(dumped: tuple[Dom, str]) -> None:
    dom, log = dumped
    status = dom.attrs_by_id["abtraffic-errors"]
    assert status.get("data-loaded") == "true", "the page's load handler did not run"
    assert status.get("data-count") == "0", dom.text_by_id["abtraffic-errors"]
    assert status.get("data-plots") == str(len(PLOT_IDS))
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert not console, console


def test_plots_and_tables_are_in_the_loaded_page(dumped: tuple[Dom, str], result: ExperimentResult) -> None:
    dom, _ = dumped
    for plot_id in PLOT_IDS:
        assert dom.attrs_by_id[plot_id].get("data-testid") == plot_id
    classes = {plot: {c for _, c in items} for plot, items in dom.in_plot.items()}
    assert {"share-series", "weight-line", "fault-window"} <= classes["plot-share"]
    assert "latency-cdf" in classes["plot-latency"]
    assert {"error-bar", "fault-window"} <= classes["plot-errors"]
    assert result.fallback is not None
    # header row + one per check
    assert dom.rows_by_table["fallback-checks"] == 1 + len(result.fallback.checks)
    for table in ("split-table", "latency-table", "errors-table", "fault-windows", "post-recovery-split",
                  "mesh-counters"):
        assert dom.rows_by_table.get(table, 0) >= 2, table
    assert "PASS" in dom.text_by_id["verdict"] and result.name in dom.text_by_id["verdict"]
    assert "fallback @" in dom.text_by_id["fallback-timeline"]


def test_screenshot(report: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    shot = tmp_path_factory.mktemp("shot") / "report.png"
    run_chromium(report, tmp_path_factory.mktemp("profile"), f"--screenshot={shot}")
    width, height, rows = png_size_and_top_rows(shot, 12)
    assert (width, height) == WINDOW
    channels = len(rows[0]) // width
    pixel = tuple(rows[10][20 * channels:20 * channels + 3])
    assert all(abs(a - b) <= 3 for a, b in zip(pixel, PASS_GREEN, strict=True)), f"banner pixel {pixel}"
    # A page with plots and tables compresses far worse than an empty one.
    assert shot.stat().st_size > 100_000
    keep = os.environ.get("ABTRAFFIC_KEEP_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_a_broken_page_is_caught(report: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The checks above must be able to fail: an external image and a failing script are both seen.
    broken = tmp_path_factory.mktemp("broken") / "broken.html"
    text = report.read_text(encoding="utf-8")
    broken.write_text(text.replace("<main>", '<main><img src="http://127.0.0.1:9/x.png"><script>nope();</script>',
                                   1), encoding="utf-8")
    out, log = run_chromium(broken, tmp_path_factory.mktemp("profile"), "--dump-dom")
    dom = parse_dom(out)
    errors = dom.text_by_id["abtraffic-errors"]
    assert int(dom.attrs_by_id["abtraffic-errors"]["data-count"]) >= 2, errors
    assert "Content-Security-Policy" in errors and "127.0.0.1:9" in errors
    assert "nope is not defined" in errors
    assert any(":CONSOLE" in line for line in log.splitlines())
