"""Local backend: declared weights (the spec), programmed weights (the local proxy's control API,
``GET /state``) and observed shares reach the result and both reports; a proxy serving other
weights than declared is its own failure, before any load."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_abtraffic._errors import ProgrammedWeightsError
from pytest_abtraffic._local import LocalBackend
from pytest_abtraffic._report import render_html, write_json
from pytest_abtraffic._report._json import validate_result_json
from pytest_abtraffic._runner import VerifySettings, verify_split
from pytest_abtraffic._spec import default_spec


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalBackend]:
    b = LocalBackend(seed=11, teardown_grace_s=0.2)
    yield b
    b.close()


def test_result_and_reports_carry_declared_programmed_and_observed(backend: LocalBackend, tmp_path: Path) -> None:
    dep = backend.deploy(default_spec().with_weights({"v1": 80, "v2": 20}))
    try:
        served = dep.served_weights()
        assert served.declared == {"v1": 80.0, "v2": 20.0} and served.programmed == {"v1": 80.0, "v2": 20.0}
        result = verify_split(dep, settings=VerifySettings(tolerance=0.08, requests=800))
    finally:
        dep.teardown()
    doc = json.loads(write_json(result, tmp_path).read_text())
    assert validate_result_json(doc) == []
    weights = doc["weights"]
    assert weights["declared"] == {"v1": 80.0, "v2": 20.0} and weights["programmed"] == {"v1": 80.0, "v2": 20.0}
    assert weights["source"].startswith("local proxy control API")
    assert set(weights["observed"]) == {"v1", "v2"} and abs(sum(weights["observed"].values()) - 1) < 1e-9
    html = render_html(result)
    assert 'id="weights"' in html and "local proxy control API" in html


def test_proxy_serving_other_weights_than_declared_fails_before_any_load(backend: LocalBackend) -> None:
    dep = backend.deploy(default_spec().with_weights({"v1": 90, "v2": 10}))
    try:
        # Behind the spec's back: the proxy (the "mesh") now routes 50/50 while the objects say 90/10.
        dep.proxy.set_weights({"v1": 50.0, "v2": 50.0})
        assert dep.spec.shares() == {"v1": 0.9, "v2": 0.1}
        before = dep.proxy.counters()
        with pytest.raises(ProgrammedWeightsError) as info:
            verify_split(dep)
        assert dep.proxy.counters() == before  # no request was sent
    finally:
        dep.teardown()
    text = str(info.value)
    assert "declared:   v1=90, v2=10" in text and "programmed: v1=50, v2=50" in text
    assert info.value.declared == {"v1": 90.0, "v2": 10.0} and info.value.programmed == {"v1": 50.0, "v2": 50.0}
