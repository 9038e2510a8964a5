"""The JSON report: the schema accepts what the kit writes and rejects what it must not."""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_abtraffic._load import LoadResult
from pytest_abtraffic._load._results import RECORD_FIELDS, STOP_REASONS
from pytest_abtraffic._report import RESULT_SCHEMA, SCHEMA_VERSION, validate_result_json, write_json
from pytest_abtraffic._report._json import (
    LOAD_FORMAT,
    RECORD_FIELD_NAMES,
    SPLIT_API_VALUES,
    STOP_REASON_VALUES,
    _MiniValidator,
    dumps_result,
)
from pytest_abtraffic._result import ExperimentResult
from pytest_abtraffic._spec import SPLIT_APIS

ENGINES = ["builtin", "jsonschema"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "reports.md"


@pytest.fixture(scope="module")
def split_doc(split_result: ExperimentResult) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(dumps_result(split_result))
    return doc


@pytest.fixture(scope="module")
def fallback_doc(fallback_result: ExperimentResult) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(dumps_result(fallback_result))
    return doc


def _engine(name: str) -> str:
    if name == "jsonschema":
        pytest.importorskip("jsonschema", reason="jsonschema is in the 'test' extra: pip install -e '.[test]'")
    return name


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the 'test' extra")
    jsonschema.Draft202012Validator.check_schema(RESULT_SCHEMA)
    assert RESULT_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert RESULT_SCHEMA["properties"]["schema_version"] == {"const": SCHEMA_VERSION}


def test_schema_constants_match_the_kit() -> None:
    # The schema spells these out (it is a published contract); the kit must not drift from them.
    assert tuple(SPLIT_APIS) == SPLIT_API_VALUES
    assert tuple(STOP_REASONS) == STOP_REASON_VALUES
    assert tuple(RECORD_FIELDS) == RECORD_FIELD_NAMES
    assert LoadResult((), 0.0, False, "budget").to_dict()["format"] == LOAD_FORMAT


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("which", ["split", "fallback"])
def test_realistic_results_are_valid(engine: str, which: str, split_doc: dict[str, Any],
                                     fallback_doc: dict[str, Any]) -> None:
    doc = split_doc if which == "split" else fallback_doc
    assert validate_result_json(doc, engine=_engine(engine)) == []


def test_in_memory_to_dict_is_valid_too(fallback_result: ExperimentResult, split_result: ExperimentResult) -> None:
    # to_dict() (tuples, int keys already stringified) validates as well as the parsed file.
    assert validate_result_json(split_result.to_dict(), engine="builtin") == []
    assert validate_result_json(fallback_result.to_dict(), engine="builtin") == []


def test_realistic_documents_exercise_every_optional_part(split_doc: dict[str, Any],
                                                          fallback_doc: dict[str, Any]) -> None:
    # Guard the guards: a "valid" verdict means little if the sample leaves the nested parts out.
    assert split_doc["split"]["rows"] and split_doc["sequential"] is not None
    assert fallback_doc["fallback"]["checks"] and fallback_doc["fallback"]["post_recovery_split"] is not None
    assert fallback_doc["fault_windows"] and fallback_doc["mesh_counters"]
    assert any(row[2] != 200 for row in fallback_doc["load"]["records"])


def _small(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with only its first records (the mutation tests copy it many times)."""
    out = dict(doc)
    out["load"] = {**doc["load"], "records": doc["load"]["records"][:40], "requests": 40}
    return copy.deepcopy(out)


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """``path`` like ``split.rows.0.share``; value ``_DELETE`` removes the key."""
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

# (document, path, new value, fragment the problem must mention)
BROKEN = [
    ("split", "name", _DELETE, "name"),
    ("split", "name", "", "name"),
    ("split", "schema_version", 2, "schema_version"),
    ("split", "surprise", 1, "surprise"),
    ("split", "split_api", "istio", "split_api"),
    ("split", "started_at", "yesterday", "started_at"),
    ("split", "variants", [], "variants"),
    ("split", "variants", ["v1", "v1"], "variants"),
    ("split", "duration_s", -1.0, "duration_s"),
    ("split", "ok", "yes", "ok"),
    ("split", "split.rows.0.share", 1.5, "share"),
    ("split", "split.rows.0.status", "maybe", "status"),
    ("split", "split.unit", "bytes", "unit"),
    ("split", "split.srm.p_value", -0.1, "p_value"),
    ("split", "split.alpha", 0.0, "alpha"),
    ("split", "split.total", 3.5, "total"),
    ("split", "sequential.verdict", "maybe", "verdict"),
    ("split", "load.format", "other/2", "format"),
    ("split", "load.stop_reason", "tired", "stop_reason"),
    ("split", "load.records.0", [0.1, "v1", 200, 3.0, "u1"], "records"),
    ("split", "load.records.0", [0.1, "v1", "200", 3.0, "u1", ""], "records"),
    ("split", "load.records.0", [0.1, "v1", 200, -3.0, "u1", ""], "records"),
    ("split", "load.records.0", [0.1, "v1", 200, 3.0, "u1", "", "extra"], "records"),
    ("split", "load.fields", ["t", "version"], "fields"),
    ("split", "mesh_counters.v1.responses_by_status", {"OK": 3}, "responses_by_status"),
    ("split", "mesh_counters.v1.requests", -1, "requests"),
    ("split", "expected_shares.v1", 1.2, "expected_shares"),
    ("fallback", "fallback.checks.0.name", "", "name"),
    ("fallback", "fallback.checks.0.ok", None, "ok"),
    ("fallback", "fallback.errors_by_status_during_fault", {"504": "many"}, "errors_by_status_during_fault"),
    ("fallback", "fallback.time_to_fallback_s", -2.0, "time_to_fallback_s"),
    ("fallback", "fallback.healthy_share_during_fault", 2.0, "healthy_share_during_fault"),
    ("fallback", "fault_windows.0.end_s", "soon", "end_s"),
    ("fallback", "fault_windows.0.label", _DELETE, "label"),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("which", "path", "value", "mentions"), BROKEN,
                         ids=[f"{w}:{p}" for w, p, *_ in BROKEN])
def test_broken_documents_are_rejected(engine: str, which: str, path: str, value: Any, mentions: str,
                                       split_doc: dict[str, Any], fallback_doc: dict[str, Any]) -> None:
    doc = _small(split_doc if which == "split" else fallback_doc)
    assert validate_result_json(doc, engine=_engine(engine)) == []
    _set(doc, path, value)
    problems = validate_result_json(doc, engine=_engine(engine))
    assert problems, f"{path} = {value!r} was accepted"
    assert any(mentions in p for p in problems), problems


@pytest.mark.parametrize("engine", ENGINES)
def test_relations_a_schema_cannot_express_are_checked(engine: str, split_doc: dict[str, Any],
                                                       fallback_doc: dict[str, Any]) -> None:
    shares = _small(split_doc)
    shares["expected_shares"] = {"v1": 0.9, "v2": 0.2}
    assert any("sum to" in p for p in validate_result_json(shares, engine=_engine(engine)))

    keys = _small(split_doc)
    keys["expected_shares"] = {"v1": 0.9, "v3": 0.1}
    assert any("differ from variants" in p for p in validate_result_json(keys, engine=engine))

    verdict = _small(fallback_doc)
    verdict["ok"] = not verdict["fallback"]["ok"]
    assert any(p.startswith("$.ok") for p in validate_result_json(verdict, engine=engine))

    count = _small(split_doc)
    count["load"]["requests"] += 1
    assert any("records" in p for p in validate_result_json(count, engine=engine))

    window = _small(fallback_doc)
    window["fault_windows"][0]["end_s"] = window["fault_windows"][0]["start_s"] - 1
    assert any("before it starts" in p for p in validate_result_json(window, engine=engine))


def test_not_an_object_is_rejected() -> None:
    assert validate_result_json([1, 2, 3], engine="builtin")
    with pytest.raises(ValueError, match="engine"):
        validate_result_json({}, engine="xmllint")


def test_builtin_validator_refuses_keywords_it_does_not_check() -> None:
    # Otherwise a new keyword in RESULT_SCHEMA would silently be ignored without jsonschema.
    schema = {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}
    with pytest.raises(ValueError, match="format"):
        list(_MiniValidator(schema).errors({"a": "x"}, schema))


def test_write_json_writes_a_parseable_file_that_round_trips(tmp_path: Path, fallback_result: ExperimentResult) -> None:
    path = write_json(fallback_result, tmp_path / "reports")
    assert path == tmp_path / "reports" / "fallback-kill-v2.json"
    text = path.read_text(encoding="utf-8")

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    doc = json.loads(text, parse_constant=no_constants)
    assert validate_result_json(doc, engine="builtin") == []
    loaded = LoadResult.from_dict(doc["load"])
    assert loaded.records == fallback_result.load.records
    # one compact line per record keeps big runs readable and small
    assert len(text.splitlines()) > len(fallback_result.load.records)
    assert not list(tmp_path.glob("reports/.*.tmp"))


def test_write_json_stem_and_unsafe_names(tmp_path: Path, split_result: ExperimentResult) -> None:
    odd = replace(split_result, name="../../etc/passwd <x>")
    path = write_json(odd, tmp_path)
    assert path.parent == tmp_path and path.name == "etc-passwd-x.json"
    assert write_json(split_result, tmp_path, stem="custom").name == "custom.json"


def test_non_finite_numbers_become_null(tmp_path: Path, split_result: ExperimentResult) -> None:
    assert split_result.sequential is not None
    load = split_result.load
    small = replace(load, records=load.records[:50])
    odd = replace(split_result, sequential=replace(split_result.sequential, log_bayes_factor=math.inf), load=small)
    doc = json.loads(write_json(odd, tmp_path).read_text(encoding="utf-8"))
    assert doc["sequential"]["log_bayes_factor"] is None
    assert validate_result_json(doc) == []
    # Record rows take a shortcut past the walk; a row with a non-finite time or latency still gets it.
    rows = (replace(load.records[0], latency_ms=math.nan), replace(load.records[1], t=math.inf), load.records[2])
    odd_rows = replace(split_result, load=replace(load, records=rows))
    doc = json.loads(write_json(odd_rows, tmp_path, stem="rows").read_text(encoding="utf-8"))
    assert doc["load"]["records"][0][3] is None
    assert doc["load"]["records"][1][0] is None
    assert doc["load"]["records"][2] == load.records[2].as_row()


def _schema_property_names(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            out.add(key)
            _schema_property_names(value, out)
        for key, value in node.items():
            if key != "properties":
                _schema_property_names(value, out)
    elif isinstance(node, list):
        for item in node:
            _schema_property_names(item, out)
    return out


def test_docs_document_every_schema_field() -> None:
    text = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_0-9]+)`", text))
    missing = sorted(_schema_property_names(RESULT_SCHEMA, set()) - documented)
    assert not missing, f"docs/reports.md does not mention: {missing}"
