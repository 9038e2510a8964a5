"""Slow models: the user sizing rule, the up-front budget warning, and the new load options' checks."""

from __future__ import annotations

import pytest

from pytest_abtraffic import SpecError
from pytest_abtraffic._load import LoadPlan, LoadSnapshot, RequestRecord
from pytest_abtraffic._load import _protocol as proto
from pytest_abtraffic._load._sizing import (
    SETTLE_S,
    WINDOW_S,
    Sizer,
    SizingStep,
    Window,
    budget_time_warning,
    is_flat,
    next_users,
)
from pytest_abtraffic._runner import VerifySettings, _SplitObserver
from pytest_abtraffic._spec import spec_from_mapping

TWO = [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}]


def window(users: int, p50_ms: float, requests: int = 200, errors: int = 0) -> Window:
    return Window(users=users, requests=requests, errors=errors, p50_ms=p50_ms, seconds=1.0)


# -- the sizing rule -----------------------------------------------------------------------------

def test_ramps_by_littles_law_at_most_doubling() -> None:
    # 10 users at 50 ms: ~200 rps; 1000 rps needs 50 users; one step at most doubles.
    users, reason, settled = next_users(window(10, 50.0), None, 10, target_rps=1000, max_users=100)
    assert (users, settled) == (20, False)
    assert "needs ~50 users" in reason
    users, _, settled = next_users(window(40, 50.0), window(10, 50.0), 40, target_rps=1000, max_users=100)
    assert (users, settled) == (50, False)


def test_target_reached_settles() -> None:
    users, reason, settled = next_users(window(50, 50.0, requests=980), window(10, 50.0), 50, target_rps=1000,
                                        max_users=100)
    assert (users, settled) == (50, True)
    assert "reached" in reason


def test_cap_settles() -> None:
    users, reason, settled = next_users(window(100, 50.0), window(10, 50.0), 100, target_rps=10_000,
                                        max_users=100)
    assert (users, settled) == (100, True)
    assert "max_users=100" in reason
    assert next_users(window(80, 50.0), window(10, 50.0), 80, target_rps=10_000, max_users=100)[0] == 100


def test_rising_latency_steps_back_to_the_last_flat_count() -> None:
    base = window(10, 50.0)
    assert is_flat(window(40, 74.0), base)
    assert not is_flat(window(40, 76.0), base)
    users, reason, settled = next_users(window(40, 90.0), base, 20, target_rps=1000, max_users=100)
    assert (users, settled) == (20, True)
    assert "not flat" in reason


def test_rising_errors_step_back() -> None:
    base = window(10, 50.0, errors=0)
    users, _, settled = next_users(window(40, 50.0, requests=200, errors=10), base, 20, target_rps=1000,
                                   max_users=100)
    assert (users, settled) == (20, True)


def test_too_few_requests_judges_nothing() -> None:
    assert next_users(window(10, 50.0, requests=2), None, 10, target_rps=1000, max_users=100) == (
        10, "only 2 requests in the window, looking again", False)


def test_wait_time_counts_in_littles_law() -> None:
    # 1000 rps at 50 ms + 50 ms of wait needs 100 users.
    assert "~100 users" in next_users(window(10, 50.0), None, 10, target_rps=1000, max_users=500, wait_s=0.05)[1]


def records(t0: float, n: int, latency_ms: float, status: int = 200) -> list[RequestRecord]:
    """``n`` requests started within one sizing window from ``t0``."""
    return [RequestRecord(t0 + i / n * WINDOW_S * 0.99, "v1", status, latency_ms, f"u{i % 10}") for i in range(n)]


def test_sizer_windows_by_start_time_and_keeps_the_steps() -> None:
    sizer = Sizer(10, target_rps=1000, max_users=100)
    sizer.add([RequestRecord(SETTLE_S * i / 40, "v1", 200, 5.0, "u1") for i in range(30)])  # start-up: not judged
    sizer.add(records(SETTLE_S, 100, 50.0))
    assert not sizer.due(SETTLE_S + WINDOW_S)  # its slowest requests may still be on their way
    assert sizer.due(SETTLE_S + WINDOW_S + 0.5)
    step = sizer.decide(2.0)
    assert (step.users_before, step.users, step.settled) == (10, 20, False)
    assert step.rate_rps == 100 / WINDOW_S and step.p50_ms == 50.0
    # At 20 users the latency doubles: back to 10, settled; nothing more is judged.
    sizer.add(records(2.0 + SETTLE_S, 100, 100.0))
    step = sizer.decide(4.0)
    assert (step.users_before, step.users, step.settled) == (20, 10, True)
    assert not sizer.due(100.0)
    assert [s.to_json()["users"] for s in sizer.steps] == [20, 10]
    assert "20 -> 10 users (settled)" in step.describe()


# -- the up-front warning ------------------------------------------------------------------------

def test_budget_warning_text() -> None:
    assert budget_time_warning(200.0, 32_000) is None  # 160 s
    text = budget_time_warning(100.0, 32_000)
    assert text is not None
    assert "100 requests/s" in text and "32,000 requests" in text and "~5.3 min (320 s)" in text
    for advice in ("load.users", "load.target_rps", "load.path", "load.prediction_share", "--tolerance"):
        assert advice in text
    assert budget_time_warning(1000.0, 32_000) is None
    assert "forever" in (budget_time_warning(0.0, 10) or "")


# -- plan and spec checks (refused before anything starts) ----------------------------------------

@pytest.mark.parametrize(("changes", "field"), [
    ({"target_rps": 0}, "load.target_rps"),
    ({"target_rps": float("nan")}, "load.target_rps"),
    ({"target_rps": 100, "users": 20, "max_users": 10}, "load.max_users"),
    ({"max_users": 0}, "load.max_users"),
    ({"target_rps": 100, "locustfile": "mine.py"}, "load.target_rps"),
    ({"target_rps": 100, "workers": 2, "worker_mode": "pods"}, "load.target_rps"),
    ({"prediction_share": 1.0, "path": "/healthz"}, "load.prediction_share"),
    ({"prediction_share": 0.1}, "load.prediction_share"),  # path == prediction_path
    ({"prediction_share": 0.1, "path": "/healthz", "prediction_path": "predict"}, "load.prediction_path"),
])
def test_plan_refuses(changes: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        LoadPlan(**changes)  # type: ignore[arg-type]


def test_plan_from_spec_carries_the_options() -> None:
    spec = spec_from_mapping({"variants": TWO, "load": {"target_rps": 500, "max_users": 80, "path": "/healthz",
                                                        "prediction_share": 0.1}})
    plan = LoadPlan.from_spec(spec)
    assert (plan.target_rps, plan.max_users, plan.path, plan.prediction_path, plan.prediction_share) == (
        500, 80, "/healthz", "/predict", 0.1)
    assert LoadPlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize(("load", "field"), [
    ({"target_rps": -1}, "load.target_rps"),
    ({"target_rps": 100, "users": 20, "max_users": 10}, "load.max_users"),
    ({"prediction_share": 0.1}, "load.prediction_share"),
    ({"prediction_share": 1, "path": "/healthz"}, "load.prediction_share"),
    ({"max_users": 0}, "load.max_users"),
    ({"target_rps": 100, "locustfile": "mine.py"}, "load.target_rps"),
    ({"prediction_share": 0.1, "path": "/healthz", "locustfile": "mine.py"}, "load.prediction_share"),
])
def test_spec_refuses(load: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        spec_from_mapping({"variants": TWO, "load": load})


def test_cheap_path_must_share_the_route_rule() -> None:
    routes = [{"name": "probes", "backend": "v1", "matches": [{"path": "/healthz"}]}]
    with pytest.raises(SpecError, match=r"same route rule.*GET /healthz -> rule 'probes'"):
        spec_from_mapping({"variants": TWO, "routes": routes,
                           "load": {"path": "/healthz", "prediction_share": 0.1}})
    # /info is served by the weighted default rule, as /predict is: fine.
    spec = spec_from_mapping({"variants": TWO, "routes": routes, "load": {"path": "/info", "prediction_share": 0.1}})
    assert spec.load.path == "/info"
    # A cohort routed by header: its cheap and prediction requests both go to that rule, fine too.
    cohort_routes = [{"name": "beta", "backend": "v2", "matches": [{"headers": {"x-cohort": "beta"}}]}]
    spec_from_mapping({"variants": TWO, "routes": cohort_routes,
                       "load": {"path": "/info", "prediction_share": 0.1, "cohorts": {"x-cohort: beta": 0.2}}})
    # ... unless a method rule sends the cheap GET elsewhere.
    get_routes = [{"name": "gets", "backend": "v1", "matches": [{"method": "GET"}]}]
    with pytest.raises(SpecError, match="same route rule"):
        spec_from_mapping({"variants": TWO, "routes": get_routes,
                           "load": {"path": "/info", "prediction_share": 0.1}})


# -- the records say which path a sampled request took --------------------------------------------

def test_records_carry_the_path_only_when_sampling() -> None:
    plain = proto.encode_record(0.5, "v1", 200, 50.0, "u1", "")
    sampled = proto.encode_record(0.5, "v1", 200, 50.0, "u1", "", "", "/predict")
    with_cohort = proto.encode_record(0.5, "v1", 200, 50.0, "u1", "", "x-cohort: beta", "/healthz")
    rows = proto.parse_lines([plain, sampled, with_cohort]).rows
    assert [RequestRecord(*row).path for row in rows] == ["", "/predict", "/healthz"]
    assert RequestRecord(*rows[2]).cohort == "x-cohort: beta"
    assert len(rows[0]) == 6
    # The result document's rows keep their schema (abtraffic-load/1): no path column there.
    assert RequestRecord(*rows[1]).as_row() == [0.5, "v1", 200, 50.0, "u1", ""]


# -- the documented examples are specs the kit accepts --------------------------------------------

def test_documented_specs_parse() -> None:
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "slow-models.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    sized, cheap = (spec_from_mapping(yaml.safe_load(block)) for block in blocks)
    assert (sized.load.target_rps, sized.load.max_users, sized.load.users) == (2000, 200, 10)
    assert all(v.extra_latency_ms == 50 for v in sized.variants)
    assert (cheap.load.path, cheap.load.prediction_share, cheap.load.prediction_path) == ("/healthz", 0.05, "/predict")
    assert LoadPlan.from_spec(sized).target_rps == 2000 and LoadPlan.from_spec(cheap).prediction_share == 0.05


# -- the split observer: when the warning is measured ---------------------------------------------

def _observer(sizing: bool, lines: list[str]) -> _SplitObserver:
    return _SplitObserver({"v1": 0.5, "v2": 0.5}, VerifySettings(), "requests", ["v1", "v2"], lines.append,
                          budget=30_000, sizing=sizing)


def _tick(observer: _SplitObserver, elapsed: float, requests: int) -> None:
    observer.on_progress(LoadSnapshot(elapsed_s=elapsed, requests=requests, counts={}, failures=0, rps=0.0), ())


def test_warning_after_warm_up_at_the_rate_then() -> None:
    lines: list[str] = []
    obs = _observer(False, lines)
    _tick(obs, 0.5, 10)
    _tick(obs, 1.0, 100)  # warm-up over: the rate is measured from here
    _tick(obs, 1.5, 150)
    assert obs.slow_warning is None
    _tick(obs, 2.0, 200)  # 100 rps: 30,000 requests take 300 s
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 1 and "100 requests/s" in warnings[0] and "30,000 requests" in warnings[0]
    _tick(obs, 3.0, 300)
    assert len([line for line in lines if line.startswith("WARNING")]) == 1  # once


def test_warning_waits_for_sizing_to_settle() -> None:
    lines: list[str] = []
    obs = _observer(True, lines)
    for t in (1.0, 2.0, 3.0):
        _tick(obs, t, int(100 * t))  # 100 rps while ramping: no verdict on the rate yet
    assert obs.slow_warning is None
    obs.on_sizing(SizingStep(3.2, 10, 20, 1000.0, 20.0, 0.0, "target 1,000 rps reached", True))
    _tick(obs, 3.5, 400)
    _tick(obs, 4.5, 1400)  # 1,000 rps after sizing: 30 s for the budget, no warning
    assert obs.slow_warning == ""
    assert any(line.startswith("user sizing at") for line in lines)


def test_warning_after_a_while_even_without_sizing_steps() -> None:
    lines: list[str] = []
    obs = _observer(True, lines)  # e.g. an observer in front that forwards no steps
    for t in (1.0, 19.0, 20.0, 21.0):
        _tick(obs, t, int(100 * t))
    assert obs.slow_warning and "100 requests/s" in obs.slow_warning


def test_marker_override_sets_the_target_rate() -> None:
    from pytest_abtraffic._spec import default_spec
    from pytest_abtraffic.plugin import apply_overrides

    assert apply_overrides(default_spec(), {"target_rps": 1500}).load.target_rps == 1500
    with pytest.raises(SpecError, match=r"load\.target_rps"):
        apply_overrides(default_spec(), {"target_rps": 0})


def test_latency_judgments_see_only_the_prediction_sample() -> None:
    from pytest_abtraffic._runner import _prediction_records

    recs = [RequestRecord(0.1, "v1", 200, 1.0, "u1", "", "", "/healthz"),
            RequestRecord(0.2, "v1", 200, 55.0, "u1", "", "", "/predict")]
    sampled = LoadPlan(path="/healthz", prediction_share=0.1)
    assert [r.latency_ms for r in _prediction_records(recs, sampled)] == [55.0]
    assert len(_prediction_records(recs, LoadPlan())) == 2  # no sample: every request is a prediction
