"""Header (cohort) routes on the local backend: the proxy routes by the match, the verdict is per rule.

The load sends 20% of its requests with ``x-cohort: beta``; the spec's rule sends those to v2 only,
the rest is split 50/50 by the weighted default rule. A proxy that ignores the match (a test-only
flag of the local proxy, ``ignore_route_matches``) must be caught by the per-rule verdict, naming the
rule and the stray version.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_abtraffic._errors import RouteMismatchError
from pytest_abtraffic._local import LocalBackend
from pytest_abtraffic._runner import VerifySettings, verify_split
from pytest_abtraffic._spec import ExperimentSpec, spec_from_mapping

SETTINGS = VerifySettings(tolerance=0.05, users=8)


def header_route_spec() -> ExperimentSpec:
    return spec_from_mapping({
        "split": {"api": "httproute"},
        "variants": [{"name": "v1", "reference": True, "weight": 50}, {"name": "v2", "reference": True, "weight": 50}],
        "routes": [{"name": "beta", "backend": "v2", "matches": [{"headers": {"x-cohort": "beta"}}]}],
        "load": {"cohorts": {"x-cohort: beta": 0.2}},
    })


@pytest.fixture
def backend() -> Iterator[LocalBackend]:
    b = LocalBackend(seed=17, teardown_grace_s=0.2)
    yield b
    b.close()


def test_cohort_traffic_all_reaches_its_backend_and_the_rest_holds_the_weights(backend: LocalBackend) -> None:
    dep = backend.deploy(header_route_spec())
    result = verify_split(dep, settings=SETTINGS)
    assert result.routes is not None
    rule = result.routes.rules[0]
    assert rule.ok and rule.stray == {} and rule.requests > 100, rule.message()
    assert set(rule.by_version) == {"v2"}
    # The split is judged on the requests no rule matched, and they hold 50/50 (with the cohort's
    # all-v2 traffic counted in, v2 would be near 60%, outside the 5-point tolerance).
    assert result.split is not None and result.split.ok, result.split.message if result.split else None
    # (the sequential test may decide before the last default-rule responses arrive)
    assert 0 < result.split.total <= result.routes.default_requests
    cohort_share = sum(1 for r in result.load.records if r.cohort) / len(result.load.records)
    assert 0.15 < cohort_share < 0.25
    assert result.ok


def test_a_proxy_that_ignores_the_match_is_caught_naming_rule_and_version() -> None:
    backend = LocalBackend(seed=17, teardown_grace_s=0.2, ignore_route_matches=True)
    try:
        dep = backend.deploy(header_route_spec())
        result = verify_split(dep, settings=SETTINGS)
    finally:
        backend.close()
    assert result.routes is not None and not result.routes.ok and not result.ok
    rule = result.routes.rules[0]
    assert set(rule.stray) == {"v1"} and rule.stray["v1"] > 10
    with pytest.raises(RouteMismatchError, match=r"rule 'beta' \(x-cohort: beta -> v2\).* to v1"):
        result.routes.raise_if_failed()
