"""Header (cohort) routes: HTTPRoute rules with matches, placed before the weighted default rule.

A leaf module shared by every room that deals with them: the spec parses them, the manifests
render them, the local proxy routes by them, the load sends cohorts at them and the judge decides,
for each cohort, which rule should have served it. Matching and precedence follow the Gateway
API (gateway-api v1.2.1, ``apis/v1/httproute_types.go``, the doc comment of
``HTTPRouteRule.Matches``): across rules, the match with an Exact path wins, then the longest
PathPrefix, then a method match, then the largest number of header matches (then query params,
which the kit does not take); remaining ties go to the first rule in list order. The weighted
default rule has no matches, which the Gateway API reads as ``PathPrefix /``; it takes part in the
same ranking, last in order. See docs/local-backend.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import SpecError

HEADER_MATCH_TYPES: tuple[str, ...] = ("Exact", "RegularExpression")
PATH_MATCH_TYPES: tuple[str, ...] = ("Exact", "PathPrefix")
METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
# Gateway API limits (httproute_types.go): 16 header matches per match, 64 matches per rule.
MAX_HEADER_MATCHES = 16
MAX_MATCHES = 64
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_RULE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_RULE = "default"


@dataclass(frozen=True)
class HeaderMatch:
    """One header condition; names compare case-insensitively, values exactly (or as a full regex)."""

    name: str
    value: str
    type: str = "Exact"

    def matches(self, headers: Mapping[str, str]) -> bool:
        """``headers``: lower-cased names (``header_map``)."""
        got = headers.get(self.name.lower())
        if got is None:
            return False
        if self.type == "Exact":
            return got == self.value
        return re.fullmatch(self.value, got) is not None

    def to_manifest(self) -> dict[str, str]:
        return {"type": self.type, "name": self.name, "value": self.value}


@dataclass(frozen=True)
class RouteMatch:
    """One HTTPRouteMatch: every condition must hold (AND). ``path=None`` is the default ``PathPrefix /``."""

    headers: tuple[HeaderMatch, ...] = ()
    path: str | None = None
    path_type: str = "PathPrefix"
    method: str | None = None

    def matches(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        if self.method is not None and method.upper() != self.method:
            return False
        if not _path_matches(self.path_type, self.path or "/", path.split("?", 1)[0]):
            return False
        return all(h.matches(headers) for h in self.headers)

    def precedence(self) -> tuple[int, int, int, int]:
        """Sort key, larger wins: Exact path, PathPrefix length, method match, number of header matches."""
        value = self.path or "/"
        exact = 1 if self.path_type == "Exact" else 0
        prefix = len(value) if self.path_type == "PathPrefix" else 0
        return (exact, prefix, 1 if self.method is not None else 0, len(self.headers))

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.path is not None:
            out["path"] = {"type": self.path_type, "value": self.path}
        if self.headers:
            out["headers"] = [h.to_manifest() for h in self.headers]
        if self.method is not None:
            out["method"] = self.method
        return out

    @property
    def label(self) -> str:
        parts = [f"{h.name}: {h.value}" if h.type == "Exact" else f"{h.name} ~ {h.value}" for h in self.headers]
        if self.path is not None:
            parts.append(f"path {'=' if self.path_type == 'Exact' else 'prefix'} {self.path}")
        if self.method is not None:
            parts.append(f"method {self.method}")
        return " and ".join(parts) or "any request"


@dataclass(frozen=True)
class RouteRule:
    """A rule before the weighted default: requests matching any of ``matches`` all go to ``backend``."""

    name: str
    matches: tuple[RouteMatch, ...]
    backend: str

    @property
    def label(self) -> str:
        return " or ".join(m.label for m in self.matches)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "matches": [m.to_manifest() for m in self.matches]}


def _path_matches(path_type: str, value: str, path: str) -> bool:
    if path_type == "Exact":
        return path == value
    # PathPrefix matches element-wise: /foo matches /foo and /foo/bar, not /foobar; a trailing / is ignored.
    prefix = value.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def select_rule(rules: Sequence[RouteRule], method: str, path: str, headers: Mapping[str, str]) -> int | None:
    """Index of the rule that serves the request, or None for the weighted default rule.

    The best-ranked matching match wins across all rules, the default rule (``PathPrefix /``)
    included and ranked last; ties go to the earlier rule.
    """
    best_key = RouteMatch().precedence()  # the default rule always matches
    best: int | None = None
    for i, rule in enumerate(rules):
        for m in rule.matches:
            key = m.precedence()
            # A tie with the default rule goes to this rule (earlier in order), a tie with an
            # earlier rule stays with that one.
            outranks = key > best_key or (key == best_key and best is None)
            if outranks and m.matches(method, path, headers):
                best_key, best = key, i
    return best


def _normal(match: RouteMatch) -> tuple[Any, ...]:
    headers = frozenset((h.name.lower(), h.type, h.value) for h in match.headers)
    return (match.path_type, match.path or "/", match.method, headers)


def shadowed_rules(rules: Sequence[RouteRule]) -> list[tuple[int, list[int]]]:
    """(rule, earlier rules) for each rule whose every match an earlier rule has: on equal
    precedence the earlier rule wins, so such a rule never matches a request."""
    seen: dict[tuple[Any, ...], int] = {}
    out = []
    for i, rule in enumerate(rules):
        keys = [_normal(m) for m in rule.matches]
        earlier = sorted({seen[k] for k in keys if k in seen})
        if all(k in seen for k in keys):
            out.append((i, earlier))
        for k in keys:
            seen.setdefault(k, i)
    return out


def header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names; the first value of a repeated header wins (implementation-specific in the
    Gateway API, httproute_types.go ``HTTPHeaderMatch.Name``)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name.lower(), value)
    return out


# ---------------------------------------------------------------------------------------------
# parsing (spec ``routes:`` and ``load.cohorts``)


def _mapping(value: object, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(where, f"must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise SpecError(where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return value


def _list(value: object, where: str) -> Sequence[Any]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise SpecError(where, "must be a list")
    return value


def _header(item: object, where: str) -> HeaderMatch:
    raw = _mapping(item, where, {"name", "value", "type"})
    name, value, kind = raw.get("name"), raw.get("value"), raw.get("type", "Exact")
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        raise SpecError(f"{where}.name", f"{name!r} is not a valid HTTP header name")
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise SpecError(f"{where}.value", f"must be a non-empty string, got {value!r}")
    if kind not in HEADER_MATCH_TYPES:
        raise SpecError(f"{where}.type", f"must be one of {', '.join(HEADER_MATCH_TYPES)}, got {kind!r}")
    if kind == "RegularExpression":
        try:
            re.compile(value)
        except re.error as exc:
            raise SpecError(f"{where}.value", f"invalid regular expression: {exc}") from None
    return HeaderMatch(name, value, kind)


def _match(item: object, where: str) -> RouteMatch:
    raw = _mapping(item, where, {"headers", "path", "method", "queryParams"})
    if "queryParams" in raw:
        raise SpecError(f"{where}.queryParams", "query parameter matches are not supported by the kit "
                        "(the local proxy could not emulate them faithfully); match on headers, path or method")
    headers_raw = raw.get("headers", [])
    if isinstance(headers_raw, Mapping):  # shorthand: {x-cohort: beta}
        headers_raw = [{"name": k, "value": v} for k, v in headers_raw.items()]
    headers = tuple(_header(h, f"{where}.headers[{i}]") for i, h in enumerate(_list(headers_raw, f"{where}.headers")))
    if len(headers) > MAX_HEADER_MATCHES:
        raise SpecError(f"{where}.headers", f"at most {MAX_HEADER_MATCHES} header matches (Gateway API)")
    names = [h.name.lower() for h in headers]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}.headers", "a header name appears twice; the Gateway API considers only the first")
    path, path_type = None, "PathPrefix"
    if "path" in raw:
        p = raw["path"]
        if isinstance(p, str):
            p = {"type": "PathPrefix", "value": p}
        praw = _mapping(p, f"{where}.path", {"type", "value"})
        path_type = praw.get("type", "PathPrefix")
        path = praw.get("value", "/")
        if path_type not in PATH_MATCH_TYPES:
            raise SpecError(f"{where}.path.type", f"must be one of {', '.join(PATH_MATCH_TYPES)}, got {path_type!r}")
        if not isinstance(path, str) or not path.startswith("/"):
            raise SpecError(f"{where}.path.value", f"must be a path starting with '/', got {path!r}")
    method = raw.get("method")
    if method is not None and method not in METHODS:
        raise SpecError(f"{where}.method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    match = RouteMatch(headers, path, path_type, method)
    if not match.to_manifest():
        raise SpecError(where, "an empty match matches every request; give headers, a path or a method")
    return match


def parse_routes(value: object, where: str = "routes") -> tuple[RouteRule, ...]:
    """``routes:`` of a spec: ``[{name?, backend, matches: [{headers, path?, method?}]}]``."""
    rules: list[RouteRule] = []
    names: set[str] = set()
    for i, item in enumerate(_list(value, where)):
        at = f"{where}[{i}]"
        raw = _mapping(item, at, {"name", "backend", "matches"})
        backend = raw.get("backend")
        if not isinstance(backend, str) or not backend:
            raise SpecError(f"{at}.backend", "is required: the variant that serves matching requests")
        name = raw.get("name", f"rule-{i}")
        if not isinstance(name, str) or not _RULE_NAME.match(name) or name == DEFAULT_RULE or name in names:
            raise SpecError(f"{at}.name", f"must be a unique DNS-1123 label other than {DEFAULT_RULE!r}, got {name!r}")
        names.add(name)
        items = _list(raw.get("matches"), f"{at}.matches")
        matches = tuple(_match(m, f"{at}.matches[{j}]") for j, m in enumerate(items))
        if not matches or len(matches) > MAX_MATCHES:
            raise SpecError(f"{at}.matches", f"needs 1 to {MAX_MATCHES} matches")
        rules.append(RouteRule(name, matches, backend))
    return tuple(rules)


@dataclass(frozen=True)
class Cohort:
    """A share of the load that sends ``headers`` with every request."""

    headers: tuple[tuple[str, str], ...]
    share: float

    @property
    def label(self) -> str:
        return "; ".join(f"{n}: {v}" for n, v in self.headers)


def parse_cohorts(value: object, where: str = "load.cohorts") -> tuple[Cohort, ...]:
    """``load.cohorts``: ``{"x-cohort: beta": 0.2, "x-cohort: alpha; x-tier: gold": 0.1}``: header
    lines (``;`` between headers) to the share of requests that carry them; the rest carries none."""
    if not isinstance(value, Mapping) or not value:
        raise SpecError(where, 'must map header lines to shares, e.g. {"x-cohort: beta": 0.2}')
    cohorts: list[Cohort] = []
    for key, share in value.items():
        at = f"{where}[{key!r}]"
        pairs: list[tuple[str, str]] = []
        for part in str(key).split(";"):
            name, sep, val = part.partition(":")
            name, val = name.strip(), val.strip()
            if not sep or not _HEADER_NAME.match(name) or not val:
                raise SpecError(at, f"{part.strip()!r} is not a header line like 'x-cohort: beta'")
            pairs.append((name, val))
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise SpecError(at, f"share must be a number in (0, 1], got {share!r}")
        cohorts.append(Cohort(tuple(pairs), float(share)))
    total = sum(c.share for c in cohorts)
    if total > 1.0 + 1e-9:
        raise SpecError(where, f"shares add up to {total:g}, more than 1")
    return tuple(cohorts)


__all__ = [
    "DEFAULT_RULE",
    "Cohort",
    "HeaderMatch",
    "RouteMatch",
    "RouteRule",
    "header_map",
    "parse_cohorts",
    "parse_routes",
    "select_rule",
    "shadowed_rules",
]
