"""What a load run produced: per-request records and the arithmetic on them.

Plain Python only (no locust, no gevent): this module is used in the pytest process.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._stats import Unit, counts_by_unit

RECORD_FIELDS: tuple[str, ...] = ("t", "version", "status", "latency_ms", "connection", "error")
RESULT_FORMAT = "abtraffic-load/1"
STOP_REASONS: tuple[str, ...] = ("budget", "duration", "verdict", "observer", "exited")
UNITS: tuple[str, ...] = ("requests", "connections")
#: (payload index, version, canonical JSON answer, or None when the response had no value there).
Prediction = tuple[int, str, str | None]


def sorted_predictions(notes: Iterable[Prediction]) -> tuple[Prediction, ...]:
    """Distinct prediction notes in a stable order (payload, version, answer)."""
    return tuple(sorted(set(notes), key=lambda p: (p[0], p[1], p[2] is not None, p[2] or "")))


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the load generator saw it.

    ``t`` is when the request started, in seconds since the load started; ``version`` is the value
    of the version header ("" when the response had none, e.g. connection errors); ``status`` is the
    HTTP status, 0 for connection errors; ``connection`` identifies the client connection (the
    Locust user, which keeps one keep-alive connection, or one id per request in
    ``Connection: close`` mode).
    """

    t: float
    version: str
    status: int
    latency_ms: float
    connection: str
    error: str = ""
    cohort: str = ""  # header lines the request carried ("" = none), see load.cohorts
    path: str = ""  # the request path, recorded only when the run samples predictions (prediction_share)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400

    def as_row(self) -> list[Any]:
        row = [self.t, self.version, self.status, self.latency_ms, self.connection, self.error]
        # The path is not a column of the result document (abtraffic-load/1, _report/_json.py's schema).
        return [*row, self.cohort] if self.cohort else row


@dataclass(frozen=True)
class LoadSnapshot:
    """Progress of a running load, as given to ``LoadObserver.on_progress``."""

    elapsed_s: float
    requests: int
    counts: Mapping[str, int]  # successful responses per version
    failures: int
    rps: float


@dataclass(frozen=True)
class TimeBucket:
    """One slice of the run. ``counts`` lists every version that answered successfully anywhere in
    the run (zeros included) so buckets line up; ``errors`` only the statuses seen in this bucket."""

    start_s: float
    counts: Mapping[str, int]
    errors: Mapping[int, int]
    total: int


def _check_unit(unit: str) -> Unit:
    if unit == "requests":
        return "requests"
    if unit == "connections":
        return "connections"
    raise ValueError(f"unknown counting unit {unit!r}; choose one of {', '.join(UNITS)}")


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    frac = pos - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


@dataclass(frozen=True)
class LoadResult:
    """The records of one load run and how it ended.

    ``duration_s`` runs from the moment Locust started its users to the moment the load stopped.
    ``stop_reason``: ``"budget"`` (max_requests reached), ``"duration"``, ``"verdict"`` or
    ``"observer"`` (the observer asked to stop; ``stopped_early`` is then True), or ``"exited"``
    (a user locustfile stopped Locust itself).
    ``predictions``: what each version answered to each payload, when the plan asked for it
    (``LoadPlan.prediction_field``); each distinct (payload, version, answer) once.
    """

    records: tuple[RequestRecord, ...]
    duration_s: float
    stopped_early: bool
    stop_reason: str
    locust_stats: Mapping[str, Any] | None = None
    predictions: tuple[Prediction, ...] = ()
    #: User sizing's steps (``SizingStep.to_json()``), when the plan had a ``target_rps``. Not in
    #: ``to_dict`` (the result document's schema has no place for them yet): the notes sum them up.
    sizing: tuple[Mapping[str, Any], ...] = ()

    @property
    def requests(self) -> int:
        return len(self.records)

    def versions(self) -> list[str]:
        """Versions seen in successful responses, sorted."""
        return sorted({r.version for r in self.records if r.ok})

    def counts(self, unit: str = "requests") -> dict[str, int]:
        """Successful responses per version; ``unit="connections"`` counts distinct
        (connection, version) pairs instead (a connection that saw two versions counts for both).

        Same rules as the statistics (``_stats.counts_by_unit``): a success without a version
        header counts as ``"unknown"``.
        """
        return counts_by_unit(((r.version, r.connection) for r in self.records if r.ok), _check_unit(unit))

    def failures(self) -> dict[str, dict[int, int]]:
        """Failed requests: version ("" when unknown) -> status (0 = connection error) -> count."""
        out: dict[str, dict[int, int]] = defaultdict(dict)
        for r in self.records:
            if not r.ok:
                by_status = out[r.version]
                by_status[r.status] = by_status.get(r.status, 0) + 1
        return dict(out)

    def latency_percentiles(self, version: str | None = None) -> dict[str, float]:
        """p50, p90, p99 and max latency in ms, of every request (failures included) of ``version``
        (all versions when None). NaN when there is no such request."""
        values = sorted(r.latency_ms for r in self.records if version is None or r.version == version)
        return {
            "p50": _percentile(values, 0.50),
            "p90": _percentile(values, 0.90),
            "p99": _percentile(values, 0.99),
            "max": values[-1] if values else math.nan,
        }

    def timeseries(self, bucket_s: float = 1.0) -> list[TimeBucket]:
        """Per-bucket counts from 0 to the end of the run; empty buckets are kept (a gap in the
        traffic is information)."""
        if not bucket_s > 0:
            raise ValueError(f"bucket_s must be positive, got {bucket_s!r}")
        versions = self.versions()
        last_t = max((r.t for r in self.records), default=0.0)
        n = max(math.ceil(self.duration_s / bucket_s), math.floor(max(last_t, 0.0) / bucket_s) + 1)
        counts: list[dict[str, int]] = [dict.fromkeys(versions, 0) for _ in range(n)]
        errors: list[dict[int, int]] = [{} for _ in range(n)]
        totals = [0] * n
        for r in self.records:
            i = min(max(math.floor(r.t / bucket_s), 0), n - 1)
            totals[i] += 1
            if r.ok:
                counts[i][r.version] += 1
            else:
                errors[i][r.status] = errors[i].get(r.status, 0) + 1
        return [TimeBucket(start_s=i * bucket_s, counts=counts[i], errors=errors[i], total=totals[i])
                for i in range(n)]

    def window(self, start_s: float, end_s: float) -> LoadResult:
        """The records with ``start_s <= t < end_s`` (times stay relative to the run start)."""
        if end_s < start_s:
            raise ValueError(f"window end {end_s!r} is before its start {start_s!r}")
        records = tuple(r for r in self.records if start_s <= r.t < end_s)
        duration = max(0.0, min(end_s, self.duration_s) - max(start_s, 0.0))
        return LoadResult(records=records, duration_s=duration, stopped_early=self.stopped_early,
                          stop_reason=self.stop_reason, locust_stats=None, predictions=self.predictions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: records as compact rows plus a readable summary (ignored on load)."""
        return {
            "format": RESULT_FORMAT,
            "duration_s": self.duration_s,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "requests": len(self.records),
            "counts": self.counts(),
            "failures": {v: {str(s): n for s, n in by.items()} for v, by in self.failures().items()},
            "fields": list(RECORD_FIELDS),
            "records": [r.as_row() for r in self.records],
            "locust_stats": dict(self.locust_stats) if self.locust_stats is not None else None,
            "predictions": [list(p) for p in self.predictions],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoadResult:
        """Inverse of :meth:`to_dict`; records may also be mappings with the field names."""
        fmt = d.get("format", RESULT_FORMAT)
        if fmt != RESULT_FORMAT:
            raise ValueError(f"unsupported load result format {fmt!r} (expected {RESULT_FORMAT!r})")
        records = tuple(_record_from(item) for item in d.get("records", ()))
        stats = d.get("locust_stats")
        return cls(
            records=records,
            duration_s=float(d["duration_s"]),
            stopped_early=bool(d["stopped_early"]),
            stop_reason=str(d["stop_reason"]),
            locust_stats=dict(stats) if isinstance(stats, Mapping) else None,
            predictions=sorted_predictions((int(i), str(v), None if a is None else str(a))
                                           for i, v, a in d.get("predictions") or ()),
        )


def _record_from(item: Any) -> RequestRecord:
    if isinstance(item, Mapping):
        return RequestRecord(t=float(item["t"]), version=str(item["version"]), status=int(item["status"]),
                             latency_ms=float(item["latency_ms"]), connection=str(item["connection"]),
                             error=str(item.get("error", "")), cohort=str(item.get("cohort", "")),
                             path=str(item.get("path", "")))
    t, version, status, latency, conn, *rest = item
    return RequestRecord(float(t), str(version), int(status), float(latency), str(conn), str(rest[0]) if rest else "",
                         str(rest[1]) if len(rest) > 1 else "", str(rest[2]) if len(rest) > 2 else "")


__all__ = [
    "RECORD_FIELDS",
    "STOP_REASONS",
    "LoadResult",
    "LoadSnapshot",
    "Prediction",
    "RequestRecord",
    "TimeBucket",
    "sorted_predictions",
]
