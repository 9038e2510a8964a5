"""Per-connection diagnosis: does the version mix differ across client connections?

A mesh balances per request, so every connection (a Locust user keeps one keep-alive connection)
should see the same mix.  When the split is decided per connection instead (an unmeshed client
behind kube-proxy, an L4 balancer, a TCP route), each connection sticks to one version and the
request-level SRM test raises false alarms (load-and-stats-facts: 20 sticky connections x 500
requests gave a 72% false SRM rate).  This module says which of the two a run looks like:

* every connection with at least two requests saw exactly one version (and more than one version
  was seen overall): "the split is per connection: is the client meshed?";
* otherwise a chi-square test of independence on the connection x version table; p < alpha says
  the mix differs across connections more than chance allows.

Connections with a single request carry no information about stickiness (``Connection: close``
gives one id per request) and are left out.  A diagnosis is a note, not a verdict: the split
verdict already fails when the per-connection split shows in the counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ._stats._common import _p_is
from ._stats._distributions import chi2_sf


class _Record(Protocol):
    @property
    def version(self) -> str: ...
    @property
    def connection(self) -> str: ...
    @property
    def ok(self) -> bool: ...


@dataclass(frozen=True)
class ConnectionDiagnosis:
    """What the connection x version table says; ``message`` is empty when nothing is wrong."""

    connections: int  # with at least two successful requests
    single_version: int  # of those, served by exactly one version
    statistic: float | None
    dof: int
    p_value: float | None
    per_connection: bool
    message: str

    @property
    def fired(self) -> bool:
        return bool(self.message)


def diagnose_connections(records: Iterable[_Record], versions: Sequence[str], *,
                         alpha: float = 0.001) -> ConnectionDiagnosis | None:
    """None when there is nothing to test (fewer than two connections or versions with traffic)."""
    known = set(versions)
    table: dict[str, dict[str, int]] = {}
    for r in records:
        if r.ok and r.version in known:
            row = table.setdefault(r.connection, {})
            row[r.version] = row.get(r.version, 0) + 1
    rows = {conn: row for conn, row in table.items() if sum(row.values()) >= 2}
    cols = sorted({v for row in rows.values() for v in row})
    if len(rows) < 2 or len(cols) < 2:
        return None
    single = sum(1 for row in rows.values() if len(row) == 1)
    if single == len(rows):
        return ConnectionDiagnosis(
            len(rows), single, None, 0, None, True,
            f"each of the {len(rows):,} connections saw only one version: the split is per connection: is the "
            "client meshed? (an unmeshed client or an L4 balancer picks a backend per connection; count by "
            "connection or make the client per-request)")
    total = sum(sum(row.values()) for row in rows.values())
    col_totals = {v: sum(row.get(v, 0) for row in rows.values()) for v in cols}
    stat = 0.0
    for row in rows.values():
        n_row = sum(row.values())
        for v in cols:
            expected = n_row * col_totals[v] / total
            stat += (row.get(v, 0) - expected) ** 2 / expected
    dof = (len(rows) - 1) * (len(cols) - 1)
    p = chi2_sf(stat, dof)
    message = ""
    if p < alpha:
        message = (f"the version mix differs across the {len(rows):,} connections more than chance allows "
                   f"(chi-square of connection x version {stat:.4g}, dof {dof}, {_p_is(p)} < {alpha:g}; "
                   f"{single:,} connections saw one version only): routing looks partly per connection")
    return ConnectionDiagnosis(len(rows), single, stat, dof, p, False, message)


__all__ = ["ConnectionDiagnosis", "diagnose_connections"]
