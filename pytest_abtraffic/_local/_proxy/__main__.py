"""``python -m pytest_abtraffic._local._proxy --config CONFIG.json --port-file PORTS.json [--parent-pid PID]``."""

from __future__ import annotations

from ._serve import main

if __name__ == "__main__":
    raise SystemExit(main())
