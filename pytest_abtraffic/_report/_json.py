"""The JSON form of a result: its schema (``RESULT_SCHEMA``), a validator and the writer.

The schema is the contract for anything that reads ``<report-dir>/<experiment>.json`` (dashboards,
CI gates); docs/reports.md documents it field by field. It is strict (no unknown fields) so that a
change of ``to_dict()`` anywhere in the kit shows up as a failing schema test, not as a silent
change for consumers: bump ``SCHEMA_VERSION`` when a field changes meaning or disappears.

``validate_result_json`` uses the ``jsonschema`` package when it is installed and otherwise a
small built-in validator for exactly the keywords this schema uses; both report problems as
``"$.path.to.field: message"`` strings. It also checks what a schema cannot say (e.g. the shares
of ``expected_shares`` sum to 1, ``ok`` agrees with the split and the fallback).
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._files import report_path, write_text_atomic

if TYPE_CHECKING:
    from .._result import ExperimentResult

SCHEMA_VERSION = 1
SCHEMA_ID = "urn:pytest-abtraffic:experiment-result:1"

# Kept literal (not imported) on purpose: the schema is a published contract; tests compare these
# with the kit's own constants so a change on either side is noticed.
SPLIT_API_VALUES: tuple[str, ...] = ("smi-v1alpha1", "smi-v1alpha2", "httproute")
STOP_REASON_VALUES: tuple[str, ...] = ("budget", "duration", "verdict", "observer", "exited")
RECORD_FIELD_NAMES: tuple[str, ...] = ("t", "version", "status", "latency_ms", "connection", "error")
LOAD_FORMAT = "abtraffic-load/1"

_ISO_OR_EMPTY = r"^(|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)$"


def _obj(properties: Mapping[str, Any], *, required: Sequence[str] | None = None, description: str = "",
         additional: bool | Mapping[str, Any] = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object"}
    if description:
        out["description"] = description
    out["properties"] = dict(properties)
    out["required"] = list(properties) if required is None else list(required)
    out["additionalProperties"] = additional if isinstance(additional, bool) else dict(additional)
    return out


def _d(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


# A cohort's header line in a record: "x-cohort: beta", several joined by "; ".
_HEADER_LINE = "[!#$%&'*+.^_`|~0-9A-Za-z-]+: *[^;]+"

_REF = {name: {"$ref": f"#/$defs/{name}"} for name in (
    "share", "count", "seconds", "nullable_seconds", "p_value", "status_counts", "named_counts", "strings", "split",
    "split_row", "srm", "sequential", "fallback", "check", "timeline_row", "fault_window", "mesh_counters", "load",
    "record", "locust_stats", "json_value", "routes", "route_rule",
    "record", "locust_stats", "json_value", "slo", "compare",
)}

_DEFS: dict[str, Any] = {
    "share": {"type": "number", "minimum": 0, "maximum": 1, "description": "A fraction between 0 and 1."},
    "count": {"type": "integer", "minimum": 0},
    "seconds": {"type": "number", "minimum": 0},
    "nullable_seconds": {"type": ["number", "null"], "minimum": 0},
    "p_value": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "strings": {"type": "array", "items": {"type": "string"}},
    "status_counts": {
        "type": "object",
        "description": "HTTP status (as a string; \"0\" = connection error) -> count.",
        "propertyNames": {"pattern": "^[0-9]{1,3}$"},
        "additionalProperties": {"$ref": "#/$defs/count"},
    },
    "named_counts": {"type": "object", "additionalProperties": {"$ref": "#/$defs/count"}},
    "json_value": {"description": "Any JSON value (scenario-specific observations)."},
    "srm": _obj({
        "method": {"enum": ["chi2", "g", "binomial"]},
        "statistic": {"type": ["number", "null"]},
        "p_value": _REF["p_value"],
        "dof": _REF["count"],
        "note": {"type": "string"},
    }, description="Sample ratio mismatch test of the configured variants' counts against their weights."),
    "split_row": _obj({
        "name": {"type": "string"},
        "weight": _REF["share"],
        "count": _REF["count"],
        "share": _REF["share"],
        "ci_low": _REF["share"],
        "ci_high": _REF["share"],
        "p_value": _REF["p_value"],
        "within_tolerance": {"type": "boolean"},
        "expected": {"type": "boolean"},
        "status": {"enum": ["yes", "no", "unclear"]},
    }),
    "split": _obj({
        "ok": {"type": "boolean"},
        "verdict": {"type": "string"},
        "total": _REF["count"],
        "unit": {"enum": ["requests", "connections"]},
        "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tolerance": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "srm_ok": {"type": "boolean"},
        "tolerance_ok": {"type": "boolean"},
        "srm": _REF["srm"],
        "rows": {"type": "array", "items": _REF["split_row"]},
        "unexpected": _REF["strings"],
        "notes": _REF["strings"],
        "zero_weight_traffic": _d(_REF["strings"], "Variants configured at weight 0 that served units anyway."),
    }, required=["ok", "verdict", "total", "unit", "alpha", "tolerance", "confidence", "srm_ok", "tolerance_ok",
                 "srm", "rows", "unexpected", "notes"]),
    "slo": _obj({
        "ok": {"type": "boolean"},
        "verdict": {"type": "string"},
        "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "limits": {"type": "array", "items": _obj({"metric": {"enum": ["p50_ms", "p90_ms", "p95_ms", "p99_ms",
                                                                        "error_rate"]},
                                                   "limit": {"type": "number"}})},
        "checks": {"type": "array", "items": _obj({
            "scope": _d({"type": "string"}, "A version, or \"overall\" for all traffic."),
            "metric": {"enum": ["p50_ms", "p90_ms", "p95_ms", "p99_ms", "error_rate"]},
            "limit": {"type": "number"},
            "n": _REF["count"],
            "observed": {"type": ["number", "null"]},
            "low": _d({"type": ["number", "null"]}, "Lower bound at the run's confidence; null: needs more data."),
            "high": _d({"type": ["number", "null"]}, "Upper bound at the run's confidence; null: needs more data."),
            "status": {"enum": ["pass", "fail", "inconclusive", "nodata"]},
            "needed": {"type": ["integer", "null"], "minimum": 0},
        })},
    }, description="Per-version SLO checks (docs/judgments.md)."),
    "compare": _obj({
        "ok": {"type": "boolean"},
        "verdict": {"type": "string"},
        "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "spec": {"type": "string"},
        "baseline": {"type": "string"},
        "excluded": _REF["count"],
        "checks": {"type": "array", "items": _obj({
            "candidate": {"type": "string"},
            "baseline": {"type": "string"},
            "metric": {"type": "string", "pattern": "^(latency_p(50|90|95|99)_ratio|error_rate_delta)$"},
            "limit": {"type": "number"},
            "observed": {"type": ["number", "null"]},
            "low": {"type": ["number", "null"]},
            "high": {"type": ["number", "null"]},
            "status": {"enum": ["pass", "fail", "inconclusive", "nodata"]},
            "candidate_value": {"type": ["number", "null"]},
            "baseline_value": {"type": ["number", "null"]},
            "n_candidate": _REF["count"],
            "n_baseline": _REF["count"],
            "effect_size": _d({"type": ["number", "null"]}, "Mann-Whitney: P(candidate slower), ties half."),
        })},
    }, description="Candidate vs baseline checks (docs/judgments.md)."),
    "sequential": _obj({
        "n": _REF["count"],
        "verdict": {"enum": ["mismatch", "holds", "undecided"]},
        "log_bayes_factor": {"type": ["number", "null"], "description": "null when infinite (stray versions)."},
        "p_anytime": _REF["p_value"],
        "decided": {"type": "boolean"},
        "decided_at": {"type": ["integer", "null"], "minimum": 0},
        "reason": {"type": "string"},
    }),
    "check": _obj({
        "name": {"type": "string", "minLength": 1},
        "ok": {"type": "boolean"},
        "observed": _REF["json_value"],
        "expected": {"type": "string"},
        "detail": {"type": "string"},
        "unit": {"enum": ["", "s", "ms", "share"]},
    }),
    "timeline_row": _obj({
        "second": _REF["count"],
        "total": _REF["count"],
        "served": _REF["named_counts"],
        "errors": _REF["status_counts"],
        "markers": _REF["strings"],
        "in_fault": {"type": "boolean"},
    }),
    "fallback": _obj({
        "scenario": {"type": "string", "minLength": 1},
        "ok": {"type": "boolean"},
        "checks": {"type": "array", "items": _REF["check"]},
        "time_to_fallback_s": _REF["nullable_seconds"],
        "time_to_recover_s": _REF["nullable_seconds"],
        "error_rate_during_fault": _REF["share"],
        "errors_by_status_during_fault": _REF["status_counts"],
        "healthy_share_during_fault": _REF["share"],
        "failed_share_during_fault": _REF["share"],
        "requests_during_fault": _REF["count"],
        "post_recovery_split": {"anyOf": [{"type": "null"}, _REF["split"]]},
        "failed_variants": _REF["strings"],
        "healthy_variants": _REF["strings"],
        "fault_start_s": {"type": ["number", "null"]},
        "fault_end_s": {"type": ["number", "null"]},
        "bucket_s": {"type": "number", "exclusiveMinimum": 0},
        "windows": {"type": "array", "items": _REF["fault_window"]},
        "timeline": {"type": "array", "items": _REF["timeline_row"]},
        "expectation": {"anyOf": [{"type": "null"}, {"type": "object"}],
                        "description": "The thresholds the checks used (FallbackExpectation fields)."},
        "notes": _REF["strings"],
    }),
    "route_rule": _obj({
        "rule": {"type": "string", "minLength": 1},
        "backend": {"type": "string", "minLength": 1},
        "match": {"type": "string"},
        "cohorts": _REF["strings"],
        "requests": _REF["count"],
        "by_version": _REF["named_counts"],
        "stray": _d(_REF["named_counts"], "Matched responses from a version other than the rule's backend."),
        "ok": {"type": "boolean"},
        "message": {"type": "string"},
    }),
    "routes": _obj({
        "ok": {"type": "boolean"},
        "rules": {"type": "array", "items": _REF["route_rule"]},
        "default_requests": _d(_REF["count"], "Requests no header rule matched: the weighted split's input."),
    }, description="Header (cohort) route verdict: per rule, matched traffic must all reach its backend."),
    "fault_window": _obj({
        "label": {"type": "string"},
        "start_s": {"type": "number"},
        "end_s": {"type": ["number", "null"], "description": "null: still active when load ended."},
    }),
    "mesh_counters": _obj({
        "requests": _REF["count"],
        "responses_by_status": _REF["status_counts"],
        "proxy_errors": _REF["named_counts"],
    }),
    "record": {
        "type": "array",
        "description": "[t (s since load start), version (\"\" = no version header), status (0 = connection "
                       "error), latency_ms, connection id, error text, and only for a request of a load.cohorts "
                       "cohort: the header lines it carried]",
        "prefixItems": [
            {"type": "number"},
            {"type": "string"},
            {"type": "integer", "minimum": 0, "maximum": 999},
            {"type": "number", "minimum": 0},
            {"type": "string"},
            {"type": "string"},
            {"type": "string", "pattern": f"^{_HEADER_LINE}(; *{_HEADER_LINE})*$"},
        ],
        "minItems": 6,
        "items": False,
    },
    "locust_stats": {
        "anyOf": [
            {"type": "null"},
            _obj({
                "entries": {"type": "array", "items": {"type": "object"}},
                "exit_code": {"type": ["integer", "null"]},
            }, required=[], additional=True),
        ],
    },
    "load": _obj({
        "format": {"const": LOAD_FORMAT},
        "duration_s": _REF["seconds"],
        "stopped_early": {"type": "boolean"},
        "stop_reason": {"enum": list(STOP_REASON_VALUES)},
        "requests": _REF["count"],
        "counts": _REF["named_counts"],
        "failures": {"type": "object", "additionalProperties": _REF["status_counts"]},
        "fields": {"const": list(RECORD_FIELD_NAMES)},
        "records": {"type": "array", "items": _REF["record"]},
        "locust_stats": _REF["locust_stats"],
    }),
}

RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "pytest-abtraffic experiment result",
    "description": "One verification run: configuration, the load it drove, and every judgement made on it. "
                   "Written by --abtraffic-report-dir as <experiment>.json; see docs/reports.md.",
    **_obj({
        "schema_version": {"const": SCHEMA_VERSION},
        "name": _d({"type": "string", "minLength": 1}, "Experiment name (the test's, or fallback:<scenario>)."),
        "backend": _d({"type": "string", "minLength": 1}, "Where it ran: local, kind or existing."),
        "namespace": {"type": "string"},
        "variants": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                     "uniqueItems": True},
        "expected_shares": {"type": "object", "additionalProperties": _REF["share"]},
        "split_api": {"enum": list(SPLIT_API_VALUES)},
        "ok": {"type": "boolean"},
        "started_at": _d({"type": "string", "pattern": _ISO_OR_EMPTY}, "ISO 8601 UTC start time, or \"\"."),
        "duration_s": _REF["seconds"],
        "split": {"anyOf": [{"type": "null"}, _REF["split"]]},
        "sequential": {"anyOf": [{"type": "null"}, _REF["sequential"]]},
        "fallback": {"anyOf": [{"type": "null"}, _REF["fallback"]]},
        "routes": {"anyOf": [{"type": "null"}, _REF["routes"]]},
        "fault_windows": {"type": "array", "items": _REF["fault_window"]},
        "mesh_counters": {"type": "object", "additionalProperties": _REF["mesh_counters"]},
        "load": _REF["load"],
        "notes": _REF["strings"],
        "weights": _d({"anyOf": [{"type": "null"}, _obj({
            "declared": _d({"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
                           "Weights the split objects declare."),
            "programmed": _d({"anyOf": [{"type": "null"},
                                        {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}}]},
                             "Weights the mesh serves (control plane policy, or the local proxy), null if unknown."),
            "source": {"type": "string"},
            "converged_after_s": {"anyOf": [{"type": "null"}, _REF["seconds"]]},
            "observed": _d({"type": "object", "additionalProperties": _REF["share"]},
                           "Share of successful responses per version."),
        })]}, "Declared vs programmed vs observed weights (null when the backend cannot tell)."),
        "slo": {"anyOf": [{"type": "null"}, _REF["slo"]]},
        "compare": {"anyOf": [{"type": "null"}, _REF["compare"]]},
    }, required=["schema_version", "name", "backend", "namespace", "variants", "expected_shares", "split_api", "ok",
                 "started_at", "duration_s", "split", "sequential", "fallback", "fault_windows", "mesh_counters",
                 "load", "notes", "routes", "weights"]),
    "$defs": _DEFS,
}


# --------------------------------------------------------------------------------------------
# a validator for the keywords RESULT_SCHEMA uses (when jsonschema is not installed)

_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples", "$defs"})
_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list | tuple),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def _json_equal(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"{parent}[{json.dumps(key)}]"


class _MiniValidator:
    """Draft 2020-12 semantics for: type, enum, const, properties, required, additionalProperties,
    propertyNames, items, prefixItems, minItems, uniqueItems, minimum, maximum, exclusiveMinimum,
    exclusiveMaximum, minLength, pattern, anyOf, $ref (local). Unknown keywords are an error, so the
    schema cannot quietly grow past what this validator checks."""

    KEYWORDS = frozenset({
        "type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames", "items",
        "prefixItems", "minItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "minLength", "pattern", "anyOf", "$ref",
    })

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node  # type: ignore[no-any-return]

    def errors(self, value: object, schema: Mapping[str, Any] | bool, path: str = "$") -> Iterator[str]:
        if schema is True:
            return
        if schema is False:
            yield f"{path}: no value is allowed here"
            return
        assert isinstance(schema, Mapping)
        unknown = set(schema) - self.KEYWORDS - _ANNOTATIONS
        if unknown:
            raise ValueError(f"schema keyword(s) {sorted(unknown)} are not supported by the built-in validator")
        if "$ref" in schema:
            yield from self.errors(value, self.resolve(schema["$ref"]), path)
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_TYPES[t](value) for t in types):
                yield f"{path}: {_short(value)} is not of type {' or '.join(types)}"
                return
        if "const" in schema and not _json_equal(value, schema["const"]):
            yield f"{path}: {_short(value)} was expected to be {_short(schema['const'])}"
        if "enum" in schema and not any(_json_equal(value, option) for option in schema["enum"]):
            yield f"{path}: {_short(value)} is not one of {_short(schema['enum'])}"
        if "anyOf" in schema:
            branches = [list(self.errors(value, sub, path)) for sub in schema["anyOf"]]
            if all(branches):
                # Like jsonschema's best match: the branch whose type fits tells what is wrong inside.
                fitting = [b for b in branches if not (len(b) == 1 and b[0].startswith(f"{path}: ")
                                                       and " is not of type " in b[0])]
                if len(fitting) == 1:
                    yield from fitting[0]
                else:
                    yield f"{path}: {_short(value)} is not valid under any of the allowed forms"
        if isinstance(value, Mapping):
            yield from self._object(value, schema, path)
        elif isinstance(value, list | tuple):
            yield from self._array(value, schema, path)
        elif isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                yield f"{path}: {_short(value)} is shorter than {schema['minLength']} characters"
            if "pattern" in schema and re.search(schema["pattern"], value) is None:
                yield f"{path}: {_short(value)} does not match {schema['pattern']!r}"
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield from self._number(value, schema, path)

    def _object(self, value: Mapping[Any, Any], schema: Mapping[str, Any], path: str) -> Iterator[str]:
        for name in schema.get("required", ()):
            if name not in value:
                yield f"{path}: {name!r} is a required property"
        properties = schema.get("properties", {})
        for key, item in value.items():
            if not isinstance(key, str):
                yield f"{path}: key {key!r} is not a string"
                continue
            if "propertyNames" in schema:
                for problem in self.errors(key, schema["propertyNames"], _path(path, key)):
                    yield f"{problem} (property name)"
            if key in properties:
                yield from self.errors(item, properties[key], _path(path, key))
            elif "additionalProperties" in schema:
                extra = schema["additionalProperties"]
                if extra is False:
                    yield f"{path}: additional property {key!r} is not allowed"
                else:
                    yield from self.errors(item, extra, _path(path, key))

    def _array(self, value: Sequence[Any], schema: Mapping[str, Any], path: str) -> Iterator[str]:
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield f"{path}: has {len(value)} items, fewer than {schema['minItems']}"
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            if i < len(prefix):
                yield from self.errors(item, prefix[i], _path(path, i))
            elif "items" in schema:
                if schema["items"] is False:
                    yield f"{path}: has {len(value)} items, more than the {len(prefix)} allowed"
                    break
                yield from self.errors(item, schema["items"], _path(path, i))
        if schema.get("uniqueItems"):
            seen: list[Any] = []
            for item in value:
                if any(_json_equal(item, other) for other in seen):
                    yield f"{path}: has non-unique items ({_short(item)})"
                    break
                seen.append(item)

    def _number(self, value: float, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        if isinstance(value, float) and math.isnan(value):
            return  # NaN compares false with everything; the JSON writer turns it into null anyway
        if "minimum" in schema and value < schema["minimum"]:
            yield f"{path}: {value!r} is less than the minimum of {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            yield f"{path}: {value!r} is greater than the maximum of {schema['maximum']}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            yield f"{path}: {value!r} is not greater than {schema['exclusiveMinimum']}"
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            yield f"{path}: {value!r} is not less than {schema['exclusiveMaximum']}"


def _short(value: object, limit: int = 60) -> str:
    try:
        text = json.dumps(value, default=str)
    except ValueError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _schema_errors(data: object, engine: str) -> list[str]:
    if engine == "jsonschema":
        # Optional dependency (the "test" extra), imported by name: it ships no type stubs.
        jsonschema = importlib.import_module("jsonschema")
        validator = jsonschema.Draft202012Validator(RESULT_SCHEMA)
        return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(data)]
    return list(_MiniValidator(RESULT_SCHEMA).errors(data, RESULT_SCHEMA))


def _consistency_errors(data: Mapping[str, Any]) -> list[str]:
    """Relations between fields that a JSON Schema cannot express."""
    problems: list[str] = []
    variants = data.get("variants")
    shares = data.get("expected_shares")
    if isinstance(variants, list) and isinstance(shares, Mapping):
        if set(shares) != set(variants):
            problems.append(f"$.expected_shares: keys {sorted(shares)} differ from variants {sorted(variants)}")
        values = [v for v in shares.values() if _TYPES["number"](v)]
        if values and len(values) == len(shares) and not math.isclose(math.fsum(values), 1.0, abs_tol=1e-6):
            problems.append(f"$.expected_shares: shares sum to {math.fsum(values):.6g}, not 1")
    parts = [data.get("split"), data.get("fallback"), data.get("routes"), data.get("slo"), data.get("compare")]
    parts_ok = [p.get("ok") for p in parts if isinstance(p, Mapping)]
    if isinstance(data.get("ok"), bool) and all(isinstance(o, bool) for o in parts_ok):
        expected_ok = all(parts_ok)
        if data["ok"] != expected_ok:
            problems.append(f"$.ok: is {str(data['ok']).lower()} but split/fallback/routes say "
                            f"{str(expected_ok).lower()}")
    load = data.get("load")
    if (isinstance(load, Mapping) and isinstance(load.get("records"), list) and isinstance(load.get("requests"), int)
            and load["requests"] != len(load["records"])):
            problems.append(f"$.load.requests: {load['requests']} but {len(load['records'])} records")
    for i, window in enumerate(data.get("fault_windows") or []):
        if isinstance(window, Mapping):
            start, end = window.get("start_s"), window.get("end_s")
            if isinstance(start, int | float) and isinstance(end, int | float) and end < start:
                problems.append(f"$.fault_windows[{i}]: ends ({end}) before it starts ({start})")
    return problems


def schema_engine() -> str:
    """``"jsonschema"`` when that package is importable, else ``"builtin"``."""
    try:
        importlib.import_module("jsonschema")
    except ImportError:
        return "builtin"
    return "jsonschema"


def validate_result_json(data: object, *, engine: str | None = None) -> list[str]:
    """Problems with a result document (``ExperimentResult.to_dict()`` or its parsed JSON); [] when valid.

    ``engine``: ``"jsonschema"``, ``"builtin"`` or None (jsonschema when installed).
    """
    chosen = engine or schema_engine()
    if chosen not in ("jsonschema", "builtin"):
        raise ValueError(f"engine must be 'jsonschema' or 'builtin', got {engine!r}")
    problems = _schema_errors(data, chosen)
    if isinstance(data, Mapping):
        problems.extend(_consistency_errors(data))
    return problems


def _finite_only(value: Any) -> Any:
    """JSON has no NaN/Infinity: such numbers become null (documented per field)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_only(v) for v in value]
    return value


def _finite_row(row: list[Any]) -> list[Any]:
    # A record row's only numbers that can be non-finite are t and latency_ms (status is an int):
    # checking those two keeps the walk off the tens of thousands of rows of a run.
    if math.isfinite(row[0]) and math.isfinite(row[3]):
        return row
    fixed: list[Any] = _finite_only(row)
    return fixed


def result_document(result: ExperimentResult) -> dict[str, Any]:
    """``result.to_dict()`` made strictly JSON-compatible (non-finite numbers as null)."""
    raw = result.to_dict()
    records = raw["load"].pop("records")
    doc: dict[str, Any] = _finite_only(raw)
    doc["load"]["records"] = [_finite_row(row) for row in records]
    return doc


# One encoder for every row: json.dumps with options builds a new one per call.
_encode_row = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
_RECORDS_PLACEHOLDER = "\u0000abtraffic-records\u0000"


def dumps_result(result: ExperimentResult) -> str:
    """Indented JSON, except the request records: one compact row per line (a run has thousands)."""
    doc = result_document(result)
    records = doc["load"]["records"]
    doc["load"]["records"] = _RECORDS_PLACEHOLDER
    text = json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=False)
    rows = ",\n  ".join(_encode_row(row) for row in records)
    placeholder = json.dumps(_RECORDS_PLACEHOLDER)
    if text.count(placeholder) != 1:  # pragma: no cover - the placeholder cannot occur in user text
        return json.dumps(result_document(result), indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    return text.replace(placeholder, f"[\n  {rows}\n ]" if rows else "[]") + "\n"


def write_json(result: ExperimentResult, report_dir: str | Path, *, stem: str | None = None) -> Path:
    """Write ``<report_dir>/<experiment>.json`` (created if missing) and return its path."""
    path = report_path(result.name, report_dir, ".json", stem=stem)
    write_text_atomic(path, dumps_result(result))
    return path


__all__ = [
    "RESULT_SCHEMA",
    "SCHEMA_ID",
    "SCHEMA_VERSION",
    "dumps_result",
    "result_document",
    "schema_engine",
    "validate_result_json",
    "write_json",
]
