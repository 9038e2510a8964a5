"""Counting units: requests, or connections when a split is decided per connection."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._common import _UNKNOWN, Unit, _check_unit

# --------------------------------------------------------------------------------------------
# counting units


@dataclass(frozen=True)
class UnitTally:
    """Counts per version plus what was noticed while counting (e.g. mixed connections)."""

    counts: dict[str, int]
    unit: str
    mixed_connections: int = 0
    notes: tuple[str, ...] = ()


class RunningTally:
    """:func:`tally_units` over records that arrive in batches: each record is counted once.

    The load observers feed it the new records at every poll instead of counting them all again.
    """

    def __init__(self, unit: Unit) -> None:
        _check_unit(unit)
        self.unit = unit
        self.counts: dict[str, int] = {}
        self._first: dict[str, str] = {}  # connection -> first version
        self._pairs: set[tuple[str, str]] = set()
        self._mixed: set[str] = set()

    def add(self, records: Iterable[tuple[str, str]]) -> None:
        counts = self.counts
        if self.unit == "requests":
            for version, _conn in records:
                v = version or _UNKNOWN
                counts[v] = counts.get(v, 0) + 1
            return
        for version, conn in records:
            v = version or _UNKNOWN
            if (conn, v) in self._pairs:
                continue
            self._pairs.add((conn, v))
            counts[v] = counts.get(v, 0) + 1
            if self._first.setdefault(conn, v) != v:
                self._mixed.add(conn)

    def tally(self) -> UnitTally:
        notes: tuple[str, ...] = ()
        if self._mixed:
            notes = (
                f"{len(self._mixed):,} of {len(self._first):,} connections were served by more than one version: "
                "routing looks per request, not per connection; each (connection, version) pair was counted once",
            )
        return UnitTally(dict(self.counts), self.unit, len(self._mixed), notes)


def tally_units(records: Iterable[tuple[str, str]], unit: Unit) -> UnitTally:
    """Count ``(version, connection_id)`` records per version, by request or by connection.

    When a split is decided per connection, requests on one connection are not independent and a
    request-level SRM test raises false alarms; count connections instead.  A connection served by
    several versions means routing is really per request: each (connection, version) pair is then
    counted once and a note says so.  A missing/empty version is counted as "unknown".
    """
    running = RunningTally(unit)
    running.add(records)
    return running.tally()


def counts_by_unit(records: Iterable[tuple[str, str]], unit: Unit) -> dict[str, int]:
    """Counts per version, by request or by connection; see :func:`tally_units` for the rules."""
    return tally_units(records, unit).counts
