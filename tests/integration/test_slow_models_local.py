"""Slow models on the local backend: reference servers with 50 ms added on /predict.

User sizing reaches more users and more requests than fixed users in the same load duration; the
cheap ratio path sends both kinds of request through the split; the up-front warning fires when
the budget would take minutes. Counts and users only, never wall-clock times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from pytest_abtraffic import default_spec
from pytest_abtraffic._backend import Deployment
from pytest_abtraffic._load import LoadPlan
from pytest_abtraffic._local import LocalBackend
from pytest_abtraffic._runner import VerifySettings, verify_split


@pytest.fixture(scope="module")
def slow() -> Iterator[Deployment]:
    spec = default_spec()
    spec = spec.replace(variants=tuple(dataclasses.replace(v, extra_latency_ms=50) for v in spec.variants))
    backend = LocalBackend(teardown_grace_s=0.2)
    try:
        yield backend.deploy(spec)
    finally:
        backend.close()


class _Steps:
    def __init__(self) -> None:
        self.steps: list[object] = []

    def on_start(self) -> None:
        pass

    def on_progress(self, snapshot: object, records: object) -> bool:
        return False

    def on_sizing(self, step: object) -> None:
        self.steps.append(step)


def test_sizing_raises_the_rate_over_fixed_users(slow: Deployment) -> None:
    fixed = slow.run_load(LoadPlan(users=5, duration_s=4.0))
    observer = _Steps()
    sized = slow.run_load(LoadPlan(users=5, duration_s=4.0, target_rps=2000, max_users=60), observer)
    assert sized.sizing, "sizing steps are in the result"
    assert [s["users"] for s in sized.sizing] == [getattr(s, "users", None) for s in observer.steps]
    reached = max(s["users"] for s in sized.sizing)
    assert reached >= 20  # 5 -> 10 -> 20 at least in 4 s (one step every ~1 s)
    # Each user sends ~1 request per 50 ms whatever the count: more users, more requests.
    assert len(sized.records) > 1.5 * len(fixed.records)
    assert not fixed.sizing
    assert sum(1 for r in sized.records if not r.ok) == 0


def test_cheap_path_and_prediction_sample(slow: Deployment) -> None:
    load = slow.run_load(LoadPlan(users=5, duration_s=2.0, path="/healthz", prediction_share=0.2))
    by_path: dict[str, dict[str, int]] = {}
    for r in load.records:
        assert r.ok, r
        by_path.setdefault(r.path, {}).setdefault(r.version, 0)
        by_path[r.path][r.version] += 1
    assert set(by_path) == {"/healthz", "/predict"}
    assert all(set(counts) == {"v1", "v2"} for counts in by_path.values())
    predictions = sum(by_path["/predict"].values())
    assert 0.05 < predictions / len(load.records) < 0.5  # the sample is a minority of the requests
    slow_p50 = sorted(r.latency_ms for r in load.records if r.path == "/predict")[predictions // 2]
    assert slow_p50 >= 50.0  # only predictions carry the added latency


def test_warns_up_front_when_the_budget_would_take_minutes(slow: Deployment) -> None:
    lines: list[str] = []
    result = verify_split(slow, settings=VerifySettings(users=2, duration_s=3.0), progress=lines.append)
    warnings = [line for line in lines if line.startswith("WARNING: slow load")]
    assert len(warnings) == 1, lines
    assert "load.target_rps" in warnings[0] and "requests/s" in warnings[0]
    assert any(note.startswith("slow load") for note in result.notes)


def test_sized_and_sampled_split_verdict_and_its_report(slow: Deployment) -> None:
    from pytest_abtraffic._report._json import result_document, validate_result_json

    plan = LoadPlan.from_spec(slow.spec, path="/healthz", prediction_share=0.2, target_rps=2000, max_users=40)
    lines: list[str] = []
    result = verify_split(slow, settings=VerifySettings(tolerance=0.05), plan=plan,
                          progress=lines.append)
    assert result.ok, result.notes
    assert any(line.startswith("user sizing at") for line in lines)
    assert any(note.startswith("prediction sample:") for note in result.notes)
    assert any(note.startswith("user sizing toward 2,000 rps") for note in result.notes)
    assert validate_result_json(result_document(result)) == []
