"""The kit's version, in a leaf module so that modules inside the package need not import ``__init__``."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
