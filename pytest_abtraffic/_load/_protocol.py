"""What the locust process and the calling process agree on: environment variables and the records file.

This module must stay import-light: both sides import it, and the locust side must not drag the
rest of the kit in before gevent has patched the process.

Records file (JSON lines, appended by the locust process, tailed by the parent):

- ``{"start": EPOCH, "pid": PID}`` once, when Locust fires ``test_start``; record times are
  seconds since ``EPOCH``.
- ``[t, version, status, latency_ms, connection, error]`` per request, then the cohort when there
  is one, then the request path when the run samples predictions (``prediction_share``).
- ``{"stop": REASON}`` when the locust process stopped itself (``"budget"``).
- ``{"prediction": [PAYLOAD, VERSION, ANSWER]}`` the first time a version gave that answer (the
  value at ``ABTRAFFIC_PREDICTION_FIELD``) to the request body at index PAYLOAD; ANSWER is
  ``null`` when the response had no value there.  Only when the field is set (prediction agreement).

Pod logs (in-cluster entry) carry the same lines between BEGIN/END markers, plus
``{"summary": {...}}`` (duration, stop reason, Locust stats) or ``{"error": MESSAGE}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._pointer import DEFAULT_PREDICTION_FIELD, PointerMiss, canonical_answer, parse_pointer, resolve_pointer

ENV_RECORDS = "ABTRAFFIC_RECORDS_FILE"
ENV_VERSION_HEADER = "ABTRAFFIC_VERSION_HEADER"
ENV_PATH = "ABTRAFFIC_PATH"
ENV_PAYLOADS = "ABTRAFFIC_PAYLOADS_FILE"
ENV_MAX_REQUESTS = "ABTRAFFIC_MAX_REQUESTS"
ENV_CONNECTION_CLOSE = "ABTRAFFIC_CONNECTION_CLOSE"
ENV_WAIT_S = "ABTRAFFIC_WAIT_S"
ENV_PARENT_PID = "ABTRAFFIC_PARENT_PID"
# JSON list of [header lines, share] (LoadPlan.cohorts); each request's cohort is recorded with it.
ENV_COHORTS = "ABTRAFFIC_COHORTS"
# Distributed mode (``locust --processes N``): every process appends to the one records file; the
# first to start writes its epoch to ENV_EPOCH_FILE (O_EXCL) and the ``start`` event, the others
# read it, so all record times share one origin; connection ids get a ``p<pid>/`` prefix.
ENV_PROCESSES = "ABTRAFFIC_PROCESSES"
ENV_EPOCH_FILE = "ABTRAFFIC_EPOCH_FILE"
# A JSON pointer (RFC 6901, plus ``*`` over an array's elements) to each response's prediction: when
# set, the built-in locustfile records each distinct (payload, version, answer) once.
ENV_PREDICTION_FIELD = "ABTRAFFIC_PREDICTION_FIELD"
# User sizing (LoadPlan.target_rps): the driver writes the wanted user count to this file; the
# built-in locustfile looks at it every USERS_POLL_S and changes the running user count.
ENV_USERS_FILE = "ABTRAFFIC_USERS_FILE"
USERS_POLL_S = 0.1
# Prediction sample (LoadPlan.prediction_share): that share of requests POSTs the payloads to
# ENV_PREDICTION_PATH; the others GET the cheap ENV_PATH. Each record then names its path.
ENV_PREDICTION_PATH = "ABTRAFFIC_PREDICTION_PATH"
ENV_PREDICTION_SHARE = "ABTRAFFIC_PREDICTION_SHARE"

# Warm start: the locust process imports and initialises, then waits in Locust's ``init`` event until
# this file exists; it holds ``{"host": URL, "run_time_s": S, "max_requests": N|null}`` (written
# atomically by the driver once the target is ready), so the start-up overlaps the deploy.
ENV_GATE_FILE = "ABTRAFFIC_GATE_FILE"
GATE_POLL_S = 0.005

DEFAULT_VERSION_HEADER = "x-model-version"
DEFAULT_PATH = "/predict"
FLUSH_INTERVAL_S = 0.2
#: The built-in locustfile's request bodies when ``load.payloads`` is not set (iris batches).
DEFAULT_PAYLOADS: tuple[Any, ...] = (
    {"instances": [[5.1, 3.5, 1.4, 0.2]]},
    {"instances": [[6.2, 2.9, 4.3, 1.3]]},
    {"instances": [[7.7, 3.0, 6.1, 2.3]]},
    {"instances": [[5.0, 3.4, 1.5, 0.2], [5.9, 3.0, 5.1, 1.8]]},
    {"instances": [[6.4, 3.2, 4.5, 1.5], [4.9, 3.1, 1.5, 0.1], [6.7, 3.3, 5.7, 2.5]]},
)

BEGIN_MARKER = "=== ABTRAFFIC RECORDS BEGIN ==="
END_MARKER = "=== ABTRAFFIC RECORDS END ==="
# Marker variant for base64(gzip(records)) blocks, for runs too large for plain pod logs.
BEGIN_MARKER_GZIP = "=== ABTRAFFIC RECORDS BEGIN gzip ==="

_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


_QUOTED: dict[str, str] = {}


def _quoted(text: str) -> str:
    # Versions and connection ids repeat: escape each distinct string once (bounded cache).
    q = _QUOTED.get(text)
    if q is None:
        q = _ENCODE(text)
        if len(_QUOTED) < 100_000:
            _QUOTED[text] = q
    return q


def encode_record(t: float, version: str, status: int, latency_ms: float, connection: str, error: str,
                  cohort: str = "", path: str = "") -> str:
    """One request as a records-file line (with its newline): microsecond times, 3-decimal ms; the
    cohort (header lines the request carried) is a 7th column only when there is one or a path
    follows, the path an 8th only when given (prediction sample)."""
    err = _ENCODE(error) if error else '""'
    tail = f",{_quoted(cohort)}" if cohort or path else ""
    if path:
        tail += f",{_quoted(path)}"
    return f"[{t:.6f},{_quoted(version)},{int(status)},{latency_ms:.3f},{_quoted(connection)},{err}{tail}]\n"


def encode_event(**fields: Any) -> str:
    return _ENCODE(fields) + "\n"


# (t, version, status, latency_ms, connection, error[, cohort[, path]]).
Row = (tuple[float, str, int, float, str, str] | tuple[float, str, int, float, str, str, str]
       | tuple[float, str, int, float, str, str, str, str])


@dataclass
class ParsedLines:
    """Raw content of a records file: rows plus the start epoch and the stop reason, if any."""

    rows: list[Row]
    start_epoch: float | None = None
    stop: str | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    # Distinct (payload index, version, canonical answer or None when the field was missing).
    predictions: set[tuple[int, str, str | None]] = field(default_factory=set)


def iter_rows(lines: Iterable[str], into: ParsedLines) -> Iterator[Row]:
    """Parse complete lines; rows are yielded, events update ``into``. Malformed lines are skipped
    (a line cut by a crash is the only expected case)."""
    batch = [line for line in (raw.strip() for raw in lines) if line]
    try:
        # One parse for the whole batch is several times faster than one per line.
        items: list[Any] = json.loads("[" + ",".join(batch) + "]")
    except ValueError:
        items = []
        for line in batch:
            try:
                items.append(json.loads(line))
            except ValueError:
                continue
    for item in items:
        if isinstance(item, list) and len(item) in (6, 7, 8):
            t, version, status, latency, conn, error, *extra = item
            row = (float(t), str(version), int(status), float(latency), str(conn), str(error))
            yield (*row, *(str(x) for x in extra)) if extra else row  # type: ignore[misc]
        elif isinstance(item, dict):
            if "start" in item and into.start_epoch is None:
                into.start_epoch = float(item["start"])
            if "stop" in item:
                into.stop = str(item["stop"])
            if "summary" in item and isinstance(item["summary"], dict):
                into.summary = item["summary"]
            if "error" in item and into.error is None:
                into.error = str(item["error"])
            note = item.get("prediction")
            if isinstance(note, list) and len(note) == 3 and isinstance(note[0], int):
                answer = None if note[2] is None else canonical_answer(note[2])
                into.predictions.add((note[0], str(note[1]), answer))


def parse_lines(lines: Iterable[str]) -> ParsedLines:
    out = ParsedLines(rows=[])
    out.rows.extend(iter_rows(lines, out))
    return out


__all__ = [
    "BEGIN_MARKER",
    "BEGIN_MARKER_GZIP",
    "DEFAULT_PATH",
    "DEFAULT_PAYLOADS",
    "DEFAULT_PREDICTION_FIELD",
    "DEFAULT_VERSION_HEADER",
    "END_MARKER",
    "ENV_CONNECTION_CLOSE",
    "ENV_EPOCH_FILE",
    "ENV_GATE_FILE",
    "ENV_MAX_REQUESTS",
    "ENV_PARENT_PID",
    "ENV_PATH",
    "ENV_PAYLOADS",
    "ENV_PREDICTION_FIELD",
    "ENV_PREDICTION_PATH",
    "ENV_PREDICTION_SHARE",
    "ENV_PROCESSES",
    "ENV_RECORDS",
    "ENV_USERS_FILE",
    "ENV_VERSION_HEADER",
    "ENV_WAIT_S",
    "FLUSH_INTERVAL_S",
    "GATE_POLL_S",
    "USERS_POLL_S",
    "ParsedLines",
    "PointerMiss",
    "canonical_answer",
    "encode_event",
    "encode_record",
    "iter_rows",
    "parse_lines",
    "parse_pointer",
    "resolve_pointer",
]
