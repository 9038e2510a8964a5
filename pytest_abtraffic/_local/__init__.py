"""Local backend: the experiment as local processes behind a Linkerd-like outbound proxy.

Imports are lazy so that ``python -m pytest_abtraffic._local._proxy`` (the proxy process) does
not load the backend side first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._deployment import LocalBackend, LocalDeployment

__all__ = ["LocalBackend", "LocalDeployment"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _deployment

        return getattr(_deployment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
