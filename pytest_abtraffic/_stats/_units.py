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


def tally_units(records: Iterable[tuple[str, str]], unit: Unit) -> UnitTally:
    """Count ``(version, connection_id)`` records per version, by request or by connection.

    When a split is decided per connection, requests on one connection are not independent and a
    request-level SRM test raises false alarms; count connections instead.  A connection served by
    several versions means routing is really per request: each (connection, version) pair is then
    counted once and a note says so.  A missing/empty version is counted as "unknown".
    """
    _check_unit(unit)
    counts: dict[str, int] = {}
    if unit == "requests":
        for version, _conn in records:
            v = version or _UNKNOWN
            counts[v] = counts.get(v, 0) + 1
        return UnitTally(counts, unit)
    seen: dict[str, str] = {}  # connection -> first version
    pairs: set[tuple[str, str]] = set()
    mixed: set[str] = set()
    for version, conn in records:
        v = version or _UNKNOWN
        if (conn, v) in pairs:
            continue
        pairs.add((conn, v))
        counts[v] = counts.get(v, 0) + 1
        first = seen.setdefault(conn, v)
        if first != v:
            mixed.add(conn)
    notes: tuple[str, ...] = ()
    if mixed:
        notes = (
            f"{len(mixed):,} of {len(seen):,} connections were served by more than one version: routing "
            "looks per request, not per connection; each (connection, version) pair was counted once",
        )
    return UnitTally(counts, unit, len(mixed), notes)


def counts_by_unit(records: Iterable[tuple[str, str]], unit: Unit) -> dict[str, int]:
    """Counts per version, by request or by connection; see :func:`tally_units` for the rules."""
    return tally_units(records, unit).counts
