"""Prediction agreement (``disagreement<=``): JSON pointers, prediction events in the records, the
per-payload answers and the verdict with its Clopper-Pearson interval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from scipy import stats

from pytest_abtraffic._agreement import Agreement, disagreement_interval, min_inputs, payload_answers
from pytest_abtraffic._compare import (
    CompareSpec,
    check_compare,
    compare_min_requests,
    judge_disagreement,
    parse_compare,
)
from pytest_abtraffic._errors import ComparisonError, SpecError
from pytest_abtraffic._load import LoadPlan, LoadResult, RequestRecord
from pytest_abtraffic._load import _protocol as proto
from pytest_abtraffic._load._logparse import merge_results, result_from_lines
from pytest_abtraffic._load.incluster import record_lines
from pytest_abtraffic._pointer import DEFAULT_PREDICTION_FIELD, PointerMiss, parse_pointer, resolve_pointer
from pytest_abtraffic._report._json import validate_result_json
from pytest_abtraffic._spec import spec_from_mapping

# ---------------------------------------------------------------------------------------------
# JSON pointers

RFC_DOC = {"foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4, "i\\j": 5, 'k"l': 6, " ": 7,
           "m~n": 8}


@pytest.mark.parametrize(("pointer", "value"), [
    # RFC 6901 section 5, every example
    ("", RFC_DOC), ("/foo", ["bar", "baz"]), ("/foo/0", "bar"), ("/", 0), ("/a~1b", 1), ("/c%d", 2), ("/e^f", 3),
    ("/g|h", 4), ("/i\\j", 5), ('/k"l', 6), ("/ ", 7), ("/m~0n", 8),
])
def test_pointer_resolves_the_rfc_6901_examples(pointer: str, value: object) -> None:
    assert resolve_pointer(RFC_DOC, parse_pointer(pointer)) == value


def test_star_maps_over_an_array_and_is_a_plain_key_on_an_object() -> None:
    body = {"predictions": [{"label": "setosa", "class": 0}, {"label": "virginica", "class": 2}], "*": "star"}
    assert resolve_pointer(body, parse_pointer(DEFAULT_PREDICTION_FIELD)) == ["setosa", "virginica"]
    assert resolve_pointer(body, parse_pointer("/*")) == "star"
    assert resolve_pointer({"p": [[1, 2], [3]]}, parse_pointer("/p/*/0")) == [1, 3]


@pytest.mark.parametrize(("doc", "pointer"), [
    ({"a": 1}, "/b"), ({"a": [1]}, "/a/1"), ({"a": [1]}, "/a/01"), ({"a": [1]}, "/a/-"), ({"a": 1}, "/a/b"),
    ({"a": [1, 2]}, "/a/²"), ({"p": [{"label": "x"}, {}]}, "/p/*/label"),
])
def test_a_missing_value_is_a_pointer_miss(doc: object, pointer: str) -> None:
    with pytest.raises(PointerMiss):
        resolve_pointer(doc, parse_pointer(pointer))


@pytest.mark.parametrize("bad", ["predictions", "/a~", "/a~2", 7])
def test_bad_pointers_are_refused_up_front(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_pointer(bad)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"load\.prediction_field"):
        LoadPlan(prediction_field=bad)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"load\.prediction_field"):
        spec_from_mapping({"load": {"prediction_field": bad}})


def test_spec_and_plan_carry_the_prediction_field() -> None:
    spec = spec_from_mapping({"load": {"prediction_field": "/predictions/0/class"}})
    assert spec.load.prediction_field == "/predictions/0/class"
    plan = LoadPlan.from_spec(spec)
    assert plan.prediction_field == "/predictions/0/class"
    assert LoadPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan  # the in-cluster --plan
    assert LoadPlan.from_spec(spec_from_mapping({})).prediction_field is None


# ---------------------------------------------------------------------------------------------
# records: the prediction events


def test_prediction_events_are_parsed_once_per_distinct_answer() -> None:
    lines = [proto.encode_event(start=100.0, pid=1),
             proto.encode_record(0.1, "v1", 200, 3.0, "u1", ""),
             proto.encode_event(prediction=[0, "v1", ["setosa"]]),
             proto.encode_event(prediction=[0, "v1", ["setosa"]]),  # e.g. from a second load process
             proto.encode_event(prediction=[1, "v2", {"b": 1, "a": 2}]),
             proto.encode_event(prediction=[2, "v2", None]),
             proto.encode_event(prediction=["x", "v2", 1]),  # malformed: skipped
             proto.encode_event(stop="budget")]
    parsed = proto.parse_lines(lines)
    assert len(parsed.rows) == 1 and parsed.stop == "budget"
    assert parsed.predictions == {(0, "v1", '["setosa"]'), (1, "v2", '{"a":2,"b":1}'), (2, "v2", None)}


def test_predictions_survive_the_pod_stream_the_json_form_and_merging() -> None:
    records = (RequestRecord(0.1, "v1", 200, 3.0, "u1"), RequestRecord(0.2, "v2", 200, 3.0, "u2"))
    notes = ((0, "v1", '["setosa"]'), (0, "v2", '["virginica"]'), (1, "v2", None))
    result = LoadResult(records=records, duration_s=1.0, stopped_early=False, stop_reason="budget",
                        predictions=notes)
    back = result_from_lines(list(record_lines(result)))
    assert back.predictions == notes and back.records == records
    assert LoadResult.from_dict(json.loads(json.dumps(result.to_dict()))).predictions == notes
    other = LoadResult(records=records, duration_s=1.0, stopped_early=False, stop_reason="budget",
                       predictions=((0, "v1", '["setosa"]'), (3, "v1", '["setosa"]')))
    assert merge_results([result, other]).predictions == (*notes[:2], notes[2], (3, "v1", '["setosa"]'))
    assert result.window(0.0, 0.15).predictions == notes


# ---------------------------------------------------------------------------------------------
# per-payload answers


def _notes(answers: dict[int, dict[str, list[object]]]) -> list[tuple[int, str, str | None]]:
    return [(i, v, None if a is None else proto.canonical_answer(a))
            for i, by in answers.items() for v, items in by.items() for a in items]


def test_payload_answers_name_differing_unanswered_and_unstable_payloads() -> None:
    notes = _notes({0: {"v1": ["a"], "v2": ["a"]}, 1: {"v1": ["a"], "v2": ["b"]}, 2: {"v1": ["a"]},
                    3: {"v1": ["a"], "v2": ["a", "b"]}, 4: {"v1": ["a"], "v2": [None]}})
    bodies = [{"instances": [[float(i)]]} for i in range(6)]
    agreement = Agreement(("v1", "v2"), "v1", payload_answers(notes, bodies), "/p")
    assert [p.payload for p in agreement.compared("v2")] == [0, 1, 3]
    assert [p.payload for p in agreement.differing("v2")] == [1, 3]
    assert agreement.unanswered("v2") == [2, 4, 5] and agreement.unanswered("v1") == [5]
    assert agreement.unstable("v2") == [3]
    notes_text = "\n".join(agreement.notes(["v2"]))
    assert 'payload 1 {"instances":[[1.0]]}: v1 answered "a", v2 answered "b"' in notes_text
    assert "v2 never answered payloads 2, 4, 5" in notes_text and "v1 never answered payload 5" in notes_text
    assert "v2 gave more than one answer to (unstable) payload 3" in notes_text
    header, rows = agreement.rows()
    assert header == ("payload", "input", "v1", "v2", "agree")
    assert rows[1][-1] == "no" and rows[0][-1] == "yes" and rows[4][3] == "(no value)" and rows[5][2] == \
        "(never answered)"
    doc = agreement.to_dict()
    assert doc["payloads"][3]["answers"]["v2"] == ["a", "b"] and doc["payloads"][2]["differs"] == {"v2": None}


# ---------------------------------------------------------------------------------------------
# the verdict


def test_parse_compare_with_disagreement() -> None:
    spec = parse_compare("baseline=v1,disagreement<=0.05")
    assert spec == CompareSpec("v1", disagreement=0.05) and spec.label == "baseline=v1,disagreement<=0.05"
    assert parse_compare({"baseline": "v1", "disagreement": 0}) == CompareSpec("v1", disagreement=0)
    with pytest.raises(SpecError, match="fraction"):
        parse_compare("baseline=v1,disagreement<=1")


@pytest.mark.parametrize(("x", "n", "conf"), [(0, 1, 0.95), (0, 50, 0.999), (4, 50, 0.999), (50, 50, 0.95),
                                              (7, 150, 0.95), (1, 3, 0.9)])
def test_interval_is_the_clopper_pearson_one(x: int, n: int, conf: float) -> None:
    lo, hi = disagreement_interval(x, n, conf)
    tail = (1 - conf) / 2
    assert lo == pytest.approx(0.0 if x == 0 else stats.beta.ppf(tail, x, n - x + 1), abs=1e-9)
    assert hi == pytest.approx(1.0 if x == n else stats.beta.ppf(1 - tail, x + 1, n - x), abs=1e-9)


def test_disagreement_statuses_and_messages() -> None:
    fail = judge_disagreement(4, 50, 0.0, 0.999, "v2", "v1")
    assert fail.status == "fail" and fail.observed == pytest.approx(0.08)
    assert fail.describe(0.999) == ("v2 vs v1 disagreement <= 0: violated; v2 and v1 answer differently on 4 of 50 "
                                    "inputs (8.0%), 99.9% interval [0.73%, 27.9%]")
    assert judge_disagreement(4, 50, 0.3, 0.999).status == "pass"
    unclear = judge_disagreement(4, 50, 0.1, 0.999, "v2", "v1")
    assert unclear.status == "inconclusive" and not unclear.ok
    assert "not enough inputs to tell" in unclear.describe(0.999)
    assert f"with none answered differently, passing takes at least {min_inputs(0.1, 0.999):,}" in \
        unclear.describe(0.999)
    zero = judge_disagreement(0, 1000, 0.0, 0.999)
    assert zero.status == "inconclusive" and "a limit of 0 can never be shown" in zero.describe(0.999)
    nodata = judge_disagreement(0, 0, 0.1, 0.999, "v2", "v1")
    assert nodata.status == "nodata" and "no payload was answered by both versions" in nodata.describe(0.999)


def test_min_inputs_is_where_zero_disagreements_first_pass() -> None:
    for limit in (0.01, 0.05, 0.2):
        need = min_inputs(limit, 0.95)
        assert need is not None
        assert judge_disagreement(0, need, limit, 0.95).status == "pass"
        assert judge_disagreement(0, need - 1, limit, 0.95).status == "inconclusive"
    assert min_inputs(0.0, 0.95) is None


@dataclass(frozen=True)
class Rec:
    t: float
    version: str
    latency_ms: float = 5.0
    ok: bool = True


def test_check_compare_judges_each_candidate_and_reports_every_payload() -> None:
    answers = {i: {"v1": ["setosa"], "v2": ["setosa" if i % 10 else "virginica"], "v3": ["setosa"]}
               for i in range(60)}
    spec = parse_compare("baseline=v1,disagreement<=0")
    assert spec is not None
    report = check_compare([Rec(0.1, "v1"), Rec(0.2, "v2"), Rec(0.3, "v3")], spec, confidence=0.95,
                           candidates=["v2", "v3"], predictions=_notes(answers), payloads=[{"x": i} for i in range(60)],
                           prediction_field="/predictions/*/label")
    v2, v3 = report.checks
    assert (v2.candidate, v2.status, v2.differing, v2.n_candidate) == ("v2", "fail", 6, 60)
    assert v3.status == "inconclusive" and not report.ok
    assert report.verdict.startswith("comparison violated: v2 vs v1 disagreement <= 0: violated; v2 and v1 answer "
                                     "differently on 6 of 60 inputs (10.0%), 95% interval [")
    table = report.table()
    assert "v2         disagreement <= 0  6 of 60 inputs differ" in table
    assert table.count("note: payload ") == 5 and "and 1 more payloads on which v2 and v1 disagree" in table
    with pytest.raises(ComparisonError, match="v2 vs v1 disagreement <= 0: violated"):
        report.raise_if_failed()
    assert report.to_dict()["agreement"]["field"] == "/predictions/*/label"
    assert len(report.to_dict()["agreement"]["payloads"]) == 60


def test_result_json_with_agreement_validates() -> None:
    from pytest_abtraffic._report._html import render_html
    from pytest_abtraffic._result import ExperimentResult

    records = tuple(RequestRecord(i / 100, "v1" if i % 2 else "v2", 200, 5.0, f"c{i % 4}") for i in range(200))
    notes = tuple(_notes({0: {"v1": [["setosa"]], "v2": [["virginica"]]}, 1: {"v1": [["a"]], "v2": [None]}}))
    load = LoadResult(records=records, duration_s=2.0, stopped_early=False, stop_reason="budget", predictions=notes)
    spec = parse_compare("baseline=v1,disagreement<=0.5,error_rate_delta<=0.05")
    assert spec is not None
    result = ExperimentResult(
        name="x", backend="local", namespace="ns", variants=("v1", "v2"), expected_shares={"v1": 0.5, "v2": 0.5},
        split_api="httproute", load=load,
        compare=check_compare(records, spec, confidence=0.999, candidates=["v2"], predictions=notes,
                              payloads=[{"i": 0}, {"i": 1}]))
    data = result.to_dict()
    assert validate_result_json(data) == [] and validate_result_json(data, engine="builtin") == []
    assert data["compare"]["checks"][1]["metric"] == "disagreement"
    assert data["load"]["predictions"][0] == [0, "v1", '["setosa"]']
    html = render_html(result)
    assert 'data-testid="compare-answers"' in html and "(no value)" in html and "virginica" in html


def test_disagreement_asks_for_every_payload_to_reach_every_version() -> None:
    spec = CompareSpec("v1", disagreement=0.1)
    assert compare_min_requests(spec, 0.999, payloads=50) == 500
    assert compare_min_requests(CompareSpec("v1", error_rate_delta=0.5), 0.999, payloads=50) < 500


def test_the_readme_example_parses() -> None:
    """README's iris.yaml and its `abtraffic verify ... disagreement<=` line are valid input."""
    import re
    import shlex

    import yaml

    from pytest_abtraffic import _cli

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n# iris\.yaml[^\n]*\n(.*?)```", readme, re.S)
    assert block is not None
    spec = spec_from_mapping(yaml.safe_load(block[1]))
    assert spec.load.prediction_field == DEFAULT_PREDICTION_FIELD and len(spec.load.payloads or ()) == 3
    (line,) = [ln.split("#")[0] for ln in readme.splitlines() if ln.startswith("abtraffic verify") and
               "disagreement<=" in ln]
    args = _cli.build_parser().parse_args(shlex.split(line)[1:])
    assert args.spec == "iris.yaml" and parse_compare(args.compare) == CompareSpec("v1", disagreement=0.05)


_NOTES_SCRIPT = r"""
import json, os, sys
from pytest_abtraffic._load import locust_support as ls

ls.record_version()
notes = ls.prediction_notes()
assert notes is not None

class Resp:
    def __init__(self, status, body):
        self.status_code, self.content = status, body

def body(*labels):
    return json.dumps({"predictions": [{"label": x, "probabilities": [0.5]} for x in labels]}).encode()

notes.note(0, "v1", Resp(200, body("setosa")))
notes.note(0, "v1", Resp(200, body("setosa")))                 # same body: skipped before parsing
notes.note(0, "v1", Resp(200, body("setosa").replace(b"0.5", b"0.6")))  # new body, same answer: no new event
notes.note(0, "v2", Resp(200, body("virginica")))
notes.note(1, "v2", Resp(200, b'{"error": "no predictions"}'))  # no value at the pointer
notes.note(1, "v2", Resp(200, b"not json"))                     # neither: still one null event
notes.note(2, "v2", Resp(503, body("setosa")))                  # failed: not an answer
notes.note(3, "v1", Resp(200, body("setosa", "virginica")))
ls._recorder.flush()
"""


def test_the_locust_side_writes_one_event_per_distinct_answer(tmp_path: Path) -> None:
    """PredictionNotes in a process of its own (importing locust patches the process with gevent)."""
    records = tmp_path / "records.jsonl"
    env = {**os.environ, proto.ENV_RECORDS: str(records), proto.ENV_PREDICTION_FIELD: DEFAULT_PREDICTION_FIELD}
    subprocess.run([sys.executable, "-c", _NOTES_SCRIPT], env=env, check=True, timeout=60, capture_output=True)
    events = [json.loads(line)["prediction"] for line in records.read_text().splitlines()]
    assert events == [[0, "v1", ["setosa"]], [0, "v2", ["virginica"]], [1, "v2", None],
                      [3, "v1", ["setosa", "virginica"]]]
    assert proto.parse_lines(records.read_text().splitlines()).predictions == {
        (0, "v1", '["setosa"]'), (0, "v2", '["virginica"]'), (1, "v2", None), (3, "v1", '["setosa","virginica"]')}
    env.pop(proto.ENV_PREDICTION_FIELD)
    off = subprocess.run([sys.executable, "-c", "from pytest_abtraffic._load import locust_support as ls; "
                          "print(ls.prediction_notes())"], env=env, check=True, timeout=60, capture_output=True,
                         text=True)
    assert off.stdout.strip() == "None"  # nothing is parsed unless asked
