"""Header (cohort) routes: parsing, Gateway API match precedence, rendering, lint and the per-rule verdict.

Precedence source: kubernetes-sigs/gateway-api v1.2.1, apis/v1/httproute_types.go, doc comment of
``HTTPRouteRule.Matches``: Exact path > longest PathPrefix > method match > most header matches >
most query params; remaining ties to the first rule in list order.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_abtraffic._errors import RouteMismatchError, SpecError
from pytest_abtraffic._lint import lint_objects
from pytest_abtraffic._load import RequestRecord
from pytest_abtraffic._load._protocol import ParsedLines, encode_record, iter_rows
from pytest_abtraffic._load._results import LoadResult
from pytest_abtraffic._manifests import render_experiment, validate_objects
from pytest_abtraffic._report import format_experiment, render_html
from pytest_abtraffic._report._json import validate_result_json
from pytest_abtraffic._result import ExperimentResult
from pytest_abtraffic._route_check import check_routes, default_rule_share, rule_of_cohort
from pytest_abtraffic._routes import header_map, parse_cohorts, parse_routes, select_rule
from pytest_abtraffic._spec import spec_from_mapping


def rules(*items: dict[str, Any]) -> Any:
    return parse_routes(list(items))


def pick(rs: Any, headers: dict[str, str], path: str = "/predict", method: str = "POST") -> str:
    i = select_rule(rs, method, path, header_map(headers.items()))
    return "default" if i is None else rs[i].name


def test_header_rule_beats_the_weighted_default_and_names_are_case_insensitive() -> None:
    rs = rules({"name": "beta", "backend": "v2", "matches": [{"headers": {"x-cohort": "beta"}}]})
    assert pick(rs, {"X-Cohort": "beta"}) == "beta"
    assert pick(rs, {"x-cohort": "Beta"}) == "default"  # values compare exactly
    assert pick(rs, {}) == "default"


def test_precedence_follows_the_gateway_api_order() -> None:
    rs = rules(
        {"name": "two-headers", "backend": "v1", "matches": [{"headers": {"a": "1", "b": "2"}}]},
        {"name": "one-header", "backend": "v2", "matches": [{"headers": {"a": "1"}}]},
        {"name": "method", "backend": "v2", "matches": [{"method": "POST", "headers": {"c": "3"}}]},
        {"name": "prefix-long", "backend": "v1", "matches": [{"path": "/predict", "headers": {"d": "4"}}]},
        {"name": "exact", "backend": "v2", "matches": [{"path": {"type": "Exact", "value": "/predict"},
                                                          "headers": {"e": "5"}}]},
        {"name": "first", "backend": "v1", "matches": [{"headers": {"f": "6"}}]},
        {"name": "second", "backend": "v2", "matches": [{"headers": {"g": "7"}}]},
    )
    assert pick(rs, {"a": "1"}) == "one-header"
    assert pick(rs, {"a": "1", "b": "2"}) == "two-headers"  # more header matches
    assert pick(rs, {"a": "1", "b": "2", "c": "3"}) == "method"  # a method match outranks header count
    assert pick(rs, {"a": "1", "c": "3", "d": "4"}) == "prefix-long"  # a longer prefix outranks a method
    assert pick(rs, {"c": "3", "d": "4", "e": "5"}) == "exact"  # Exact path outranks any prefix
    assert pick(rs, {"f": "6", "g": "7"}) == "first"  # a tie goes to the earlier rule
    assert pick(rs, {"d": "4"}, path="/predictions") == "default"  # prefixes match whole path segments
    assert pick(rs, {"d": "4"}, path="/predict/x") == "prefix-long"
    assert pick(rs, {"c": "3"}, method="GET") == "default"


def test_regular_expression_header_match_is_a_full_match() -> None:
    rs = rules({"name": "re", "backend": "v2", "matches": [{"headers": [
        {"name": "x-cohort", "type": "RegularExpression", "value": "beta-[0-9]+"}]}]})
    assert pick(rs, {"x-cohort": "beta-17"}) == "re"
    assert pick(rs, {"x-cohort": "beta-17x"}) == "default"


@pytest.mark.parametrize(("routes", "field"), [
    ([{"matches": [{"headers": {"x": "1"}}]}], "routes[0].backend"),
    ([{"backend": "v2", "matches": [{}]}], "routes[0].matches[0]"),
    ([{"backend": "v2", "matches": [{"queryParams": [{"name": "a", "value": "b"}]}]}],
     "routes[0].matches[0].queryParams"),
    ([{"backend": "v2", "matches": [{"headers": {"bad header": "1"}}]}], "routes[0].matches[0].headers[0].name"),
    ([{"backend": "v2", "matches": [{"method": "FETCH"}]}], "routes[0].matches[0].method"),
    ([{"backend": "v3", "matches": [{"headers": {"x": "1"}}]}], "routes[0].backend"),
    ([{"name": "a", "backend": "v2", "matches": [{"headers": {"x": "1"}}]},
      {"name": "b", "backend": "v1", "matches": [{"headers": {"X": "1"}}]}], "routes[1].matches"),
])
def test_bad_routes_are_refused_at_load_naming_the_field(routes: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_mapping({"routes": routes})
    assert info.value.field == field


@pytest.mark.parametrize("api", ["smi-v1alpha1", "smi-v1alpha2"])
def test_smi_split_with_header_routes_is_refused(api: str) -> None:
    with pytest.raises(SpecError, match="no matches") as info:
        weight = 1 if api.endswith("2") else "500m"
        spec_from_mapping({"split": {"api": api}, "variants": [{"name": "v1", "weight": weight},
                                                              {"name": "v2", "weight": weight}],
                           "routes": [{"backend": "v2", "matches": [{"headers": {"x-cohort": "beta"}}]}]})
    assert info.value.field == "routes"


def _route_spec(group: str = "gateway.networking.k8s.io") -> Any:
    return spec_from_mapping({"split": {"api": "httproute", "route_group": group},
                              "routes": [{"name": "beta", "backend": "v2",
                                          "matches": [{"headers": {"x-cohort": "beta"}, "path": "/predict"}]}],
                              "load": {"cohorts": {"x-cohort: beta": 0.2}}})


@pytest.mark.parametrize("group", ["gateway.networking.k8s.io", "policy.linkerd.io"])
def test_rules_render_before_the_weighted_rule_for_both_route_groups(group: str) -> None:
    objects = render_experiment(_route_spec(group))
    assert validate_objects(objects) == []  # against the bundled HTTPRoute CRD schemas
    route = next(o for o in objects if o["kind"] == "HTTPRoute")
    first, default = route["spec"]["rules"]
    assert first["matches"] == [{"path": {"type": "PathPrefix", "value": "/predict"},
                                 "headers": [{"type": "Exact", "name": "x-cohort", "value": "beta"}]}]
    assert first["backendRefs"] == [{"name": "ai-model-service-v2", "port": 80}]
    assert "matches" not in default and [b["weight"] for b in default["backendRefs"]] == [50, 50]
    assert lint_objects([("route.yaml", o) for o in objects]) == []


def test_lint_finds_a_rule_naming_a_missing_service_and_a_shadowed_rule() -> None:
    objects = render_experiment(_route_spec())
    route = next(o for o in objects if o["kind"] == "HTTPRoute")
    beta = route["spec"]["rules"][0]
    route["spec"]["rules"].insert(1, {"matches": [dict(beta["matches"][0])],
                                      "backendRefs": [{"name": "ai-model-service-v3", "port": 80}]})
    codes = [f.code for f in lint_objects([("route.yaml", o) for o in objects])]
    assert codes.count("missing-backend-service") == 1
    assert codes.count("unreachable-route-rule") == 1


def test_cohorts_parse_and_the_default_share_is_what_no_rule_takes() -> None:
    spec = _route_spec()
    assert [(c.label, c.share) for c in spec.load.cohorts] == [("x-cohort: beta", 0.2)]
    assert default_rule_share(spec.routes, spec.load.cohorts, "/predict") == pytest.approx(0.8)
    assert rule_of_cohort(spec.routes, "x-cohort: beta", "/predict") == 0
    assert rule_of_cohort(spec.routes, "x-cohort: beta", "/other") is None  # the rule also needs its path
    with pytest.raises(SpecError):
        parse_cohorts({"x-cohort: beta": 0.7, "x-cohort: alpha": 0.5})
    with pytest.raises(SpecError):
        parse_cohorts({"no colon": 0.1})


def test_records_carry_the_cohort_through_the_records_file() -> None:
    lines = [encode_record(0.5, "v2", 200, 1.0, "u1", "", "x-cohort: beta"),
             encode_record(0.6, "v1", 200, 1.0, "u1", "")]
    rows = list(iter_rows(lines, ParsedLines(rows=[])))
    assert [RequestRecord(*row).cohort for row in rows] == ["x-cohort: beta", ""]
    assert RequestRecord(*rows[1]).as_row() == [0.6, "v1", 200, 1.0, "u1", ""]  # no 7th column without a cohort


def _records(beta_versions: list[str], plain: int) -> list[RequestRecord]:
    out = [RequestRecord(i * 0.01, v, 200, 1.0, "u1", "", "x-cohort: beta") for i, v in enumerate(beta_versions)]
    out += [RequestRecord(i * 0.01, "v1" if i % 2 else "v2", 200, 1.0, "u2") for i in range(plain)]
    return out


def test_matched_traffic_all_to_its_backend_passes_and_one_stray_fails_naming_rule_and_version() -> None:
    spec = _route_spec()
    report, default = check_routes(_records(["v2"] * 50, 200), spec.routes, spec.load.cohorts, "/predict")
    assert report.ok and len(default) == 200 and report.rules[0].requests == 50
    report.raise_if_failed()
    report, _ = check_routes(_records(["v2"] * 49 + ["v1"], 200), spec.routes, spec.load.cohorts, "/predict")
    assert not report.ok
    with pytest.raises(RouteMismatchError, match=r"rule 'beta'.*1 of 50 matched responses.*1 to v1"):
        report.raise_if_failed()
    report, _ = check_routes(_records([], 200), spec.routes, spec.load.cohorts, "/predict")
    assert not report.ok and "untested" in report.rules[0].message()


def test_the_route_verdict_fails_the_result_and_validates_in_the_json_schema() -> None:
    spec = _route_spec()
    records = _records(["v2"] * 9 + ["v1"], 20)
    report, _ = check_routes(records, spec.routes, spec.load.cohorts, "/predict")
    load = LoadResult(records=tuple(records), duration_s=1.0, stopped_early=False, stop_reason="budget")
    result = ExperimentResult(name="split", backend="local", namespace="ns", variants=("v1", "v2"),
                              expected_shares={"v1": 0.5, "v2": 0.5}, split_api="httproute", load=load, routes=report)
    assert not result.ok
    doc = result.to_dict()
    assert doc["routes"]["rules"][0]["stray"] == {"v1": 1}
    assert validate_result_json(doc) == []
    text = format_experiment(result)
    assert "header routes: FAIL" in text and "1 of 10 matched responses came from another version (1 to v1)" in text
    html = render_html(result)
    assert 'id="route-rules"' in html and "v1: 1" in html
