"""pytest-abtraffic: prove that an A/B traffic split behaves as configured."""

from __future__ import annotations

from ._errors import (
    AbTrafficAssertionError,
    AbTrafficError,
    BackendError,
    CommandError,
    FallbackAssertionError,
    LoadError,
    NotReadyError,
    PrerequisiteError,
    SpecError,
    SplitMismatchError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "AbTrafficAssertionError",
    "AbTrafficError",
    "BackendError",
    "CommandError",
    "FallbackAssertionError",
    "LoadError",
    "NotReadyError",
    "PrerequisiteError",
    "SpecError",
    "SplitMismatchError",
    "UsageError",
    "__version__",
]
