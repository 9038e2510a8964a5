"""What ``abtraffic verify`` prints and writes once its runs are done (the spec's and a live target's)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .._errors import AbTrafficAssertionError
from .._result import ExperimentResult
from ._html import write_html
from ._json import write_json
from ._text import format_summary


def print_results(results: Sequence[ExperimentResult], report_dir: str | Path | None, *,
                  announce_reports: bool = True) -> bool:
    """The summary table, each failed fallback's full message, and the JSON + HTML reports when asked
    for (their paths on stderr with ``announce_reports``). True when every result is ok."""
    print(format_summary(results))
    for result in results:
        if result.fallback is not None and not result.fallback.ok:
            try:
                result.fallback.raise_if_failed()
            except AbTrafficAssertionError as exc:
                print(str(exc))
        if report_dir:
            write_json(result, report_dir)
            path = write_html(result, report_dir)
            if announce_reports:
                print(f"abtraffic: report: {path}", file=sys.stderr, flush=True)
    return all(r.ok for r in results)


__all__ = ["print_results"]
