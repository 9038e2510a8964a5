"""The observers' running counts agree with a full recount at every poll (issue 16: the main job's
observers counted every record again at each poll, CPU taken from the load on a 2-core box)."""

from __future__ import annotations

import random

import pytest

from pytest_abtraffic._load import RequestRecord
from pytest_abtraffic._runner import _RunningCounts, _successful_counts


def _records(n: int, seed: int) -> list[RequestRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        status = rng.choice([200, 200, 200, 200, 504, 0, 302])
        version = "" if status in (0, 504) else rng.choice(["v1", "v2", "v2", ""])
        out.append(RequestRecord(t=i / 1000, version=version, status=status, latency_ms=1.0,
                                 connection=f"u{rng.randrange(12)}"))
    return out


@pytest.mark.parametrize("unit", ["requests", "connections"])
def test_running_counts_equal_a_full_recount_at_every_poll(unit: str) -> None:
    records = _records(3_000, seed=5)
    running = _RunningCounts(unit, ["v1", "v2"])
    rng = random.Random(9)
    end = 0
    while end < len(records):
        end = min(len(records), end + rng.randrange(0, 400))
        prefix = tuple(records[:end])
        assert running.update(prefix) == _successful_counts(prefix, unit, ["v1", "v2"])


def test_running_counts_start_again_when_given_a_shorter_stream() -> None:
    records = _records(500, seed=2)
    running = _RunningCounts("requests", ["v1", "v2"])
    running.update(records)
    shorter = records[:100]
    assert running.update(shorter) == _successful_counts(shorter, "requests", ["v1", "v2"])


def test_known_variants_appear_with_zero_before_any_answer() -> None:
    assert _RunningCounts("requests", ["v1", "v2"]).update(()) == {"v1": 0, "v2": 0}
