"""Reports of an experiment run: JSON (with its schema), a self-contained HTML page, terminal text
and JUnit properties. See docs/reports.md.

Nothing here needs a plotting library or the network: plots are inline SVG built by ``_svg``.
"""

from __future__ import annotations

from ._files import slugify
from ._html import PLOT_IDS, render_html, write_html
from ._json import (
    RESULT_SCHEMA,
    SCHEMA_VERSION,
    dumps_result,
    result_document,
    validate_result_json,
    write_json,
)
from ._text import format_experiment, format_progress, format_summary, junit_properties

__all__ = [
    "PLOT_IDS",
    "RESULT_SCHEMA",
    "SCHEMA_VERSION",
    "dumps_result",
    "format_experiment",
    "format_progress",
    "format_summary",
    "junit_properties",
    "render_html",
    "result_document",
    "slugify",
    "validate_result_json",
    "write_html",
    "write_json",
]
