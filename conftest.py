"""Repository-level test configuration: the e2e tier runs only when asked for."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-e2e",
        action="store_true",
        default=False,
        help="run the kind + Linkerd end-to-end tests (needs Docker, kind, kubectl and the linkerd CLI)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-e2e"):
        return
    skip = pytest.mark.skip(
        reason="e2e tier: needs Docker, kind, kubectl and the linkerd CLI; run with `pytest --run-e2e tests/e2e` "
        "(see .github/workflows/e2e.yml)"
    )
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)
