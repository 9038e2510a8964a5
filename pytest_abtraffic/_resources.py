"""Where the bundled reference workloads and manifest templates live.

An installed wheel carries them under ``pytest_abtraffic/_bundled/``; an editable checkout
has them at the repository top level. Both layouts are supported.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    installed = _PACKAGE_DIR / "_bundled" / name
    if installed.is_dir():
        return installed
    checkout = _PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"pytest-abtraffic data directory {name!r} is missing; reinstall the package "
        f"(looked in {installed} and {checkout})"
    )


def fixtures_dir() -> Path:
    """Directory holding the reference model server package ``ai_model``."""
    return _bundled("fixtures")


def manifests_dir() -> Path:
    """Directory holding CRD schemas, the kind cluster config and other manifests."""
    return _bundled("manifests")
