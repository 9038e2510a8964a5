"""Per-connection diagnosis (issue 15 item 6): fires on sticky connections, silent on a per-request split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pytest_abtraffic._connections import diagnose_connections


@dataclass(frozen=True)
class Rec:
    version: str
    connection: str
    status: int = 200

    @property
    def ok(self) -> bool:
        return self.status < 400


def per_request(rng: np.random.Generator, users: int, each: int, p: float = 0.5) -> list[Rec]:
    picks = rng.random((users, each)) < p
    return [Rec("v2" if picks[u, i] else "v1", f"u{u}") for u in range(users) for i in range(each)]


def test_fires_when_each_connection_saw_one_version() -> None:
    sticky = [Rec("v1" if u % 2 else "v2", f"u{u}") for u in range(20) for _ in range(500)]
    diagnosis = diagnose_connections(sticky, ["v1", "v2"])
    assert diagnosis is not None and diagnosis.per_connection and diagnosis.fired
    assert "the split is per connection: is the client meshed?" in diagnosis.message
    assert "each of the 20 connections saw only one version" in diagnosis.message


def test_fires_on_partly_sticky_routing() -> None:
    rng = np.random.default_rng(71)
    mixed = per_request(rng, 10, 300, 0.5) + [Rec("v1", f"s{u}") for u in range(5) for _ in range(300)]
    mixed += [Rec("v2", "s0")]  # one connection with both: not "every connection one version"
    diagnosis = diagnose_connections(mixed, ["v1", "v2"])
    assert diagnosis is not None and not diagnosis.per_connection and diagnosis.fired
    assert "differs across the 15 connections" in diagnosis.message


def test_silent_on_a_correct_per_request_split() -> None:
    """Seeded: 2,000 runs of 10 connections x 200 requests, per-request 50/50 and 90/10, alpha 0.001."""
    rng = np.random.default_rng(72)
    runs = 2_000
    fired = 0
    for i in range(runs):
        d = diagnose_connections(per_request(rng, 10, 200, 0.5 if i % 2 else 0.1), ["v1", "v2"])
        assert d is not None
        fired += d.fired
    print(f"per-connection diagnosis on per-request splits: fired {fired}/{runs}")
    assert fired <= int(stats.binom.ppf(1 - 1e-4, runs, 0.001))


def test_nothing_to_say_without_repeat_connections_or_a_second_version() -> None:
    close_mode = [Rec("v1" if i % 2 else "v2", f"c{i}") for i in range(1000)]  # Connection: close
    assert diagnose_connections(close_mode, ["v1", "v2"]) is None
    assert diagnose_connections([Rec("v1", f"u{u % 3}") for u in range(90)], ["v1", "v2"]) is None
    failed = [Rec("v1", "u0"), Rec("v2", "u1", 503), Rec("v2", "u1", 503), Rec("v1", "u0")]
    assert diagnose_connections(failed, ["v1", "v2"]) is None
