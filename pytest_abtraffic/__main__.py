"""``python -m pytest_abtraffic`` is the ``abtraffic`` command."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
