"""Load generation: Locust in a subprocess, per-request records, and the arithmetic on them.

Nothing here imports ``locust`` or ``gevent`` (they would monkey-patch the pytest process); only
``locustfile.py`` and ``locust_support.py`` do, and they run inside the locust subprocess.
"""

from __future__ import annotations

from ._driver import locustfile_path, run_locust
from ._logparse import parse_records_from_log
from ._plan import LoadObserver, LoadPlan
from ._results import RECORD_FIELDS, STOP_REASONS, LoadResult, LoadSnapshot, RequestRecord, TimeBucket

__all__ = [
    "RECORD_FIELDS",
    "STOP_REASONS",
    "LoadObserver",
    "LoadPlan",
    "LoadResult",
    "LoadSnapshot",
    "RequestRecord",
    "TimeBucket",
    "locustfile_path",
    "parse_records_from_log",
    "run_locust",
]
