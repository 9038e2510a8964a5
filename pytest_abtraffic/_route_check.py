"""The header-route verdict: traffic a rule matches must all reach its backend.

The load marks each request with its cohort (the header lines it carried, ``load.cohorts``). Which
rule should serve a cohort is decided here with the same matching and precedence the local proxy
uses (``_routes.select_rule``: the load's path, ``POST``, the cohort's headers plus the
locustfile's own ``Content-Type``/``Accept``). Per rule, every successful response must come from
the rule's backend: one stray response fails the rule, naming it and the version that answered
(no statistics: a match is deterministic routing, not a weighted draw). Requests no rule matches
belong to the weighted default rule and go to the ordinary split verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import RouteMismatchError
from ._routes import Cohort, RouteRule, header_map, select_rule

if TYPE_CHECKING:
    from ._load import RequestRecord

# The built-in locustfile sends these with every request; a rule may match on them too.
LOAD_HEADERS: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"), ("Accept", "application/json"))
LOAD_METHOD = "POST"


def rule_of_cohort(rules: Sequence[RouteRule], cohort_label: str, path: str) -> int | None:
    """Index of the rule serving requests of this cohort ("" = no cohort headers), None: the default rule."""
    pairs = list(LOAD_HEADERS)
    if cohort_label:
        pairs = [*(_parse_label(cohort_label)), *pairs]  # the cohort's own headers come first
    return select_rule(rules, LOAD_METHOD, path, header_map(pairs))


def _parse_label(label: str) -> list[tuple[str, str]]:
    return [(n.strip(), v.strip()) for n, _, v in (part.partition(":") for part in label.split(";"))]


def default_rule_share(rules: Sequence[RouteRule], cohorts: Sequence[Cohort], path: str) -> float:
    """The share of the load that the weighted default rule should serve."""
    routed = sum(c.share for c in cohorts if rule_of_cohort(rules, c.label, path) is not None)
    no_cohort = 1.0 - sum(c.share for c in cohorts)
    if rule_of_cohort(rules, "", path) is not None:
        routed += no_cohort  # a rule matching every request of the load (e.g. on the path alone)
    return max(0.0, 1.0 - routed)


@dataclass(frozen=True)
class RuleCheck:
    """One header rule's verdict."""

    rule: str
    backend: str
    match: str
    cohorts: tuple[str, ...]
    by_version: Mapping[str, int] = field(default_factory=dict)  # successful responses per version

    @property
    def requests(self) -> int:
        return sum(self.by_version.values())

    @property
    def stray(self) -> dict[str, int]:
        return {v: n for v, n in sorted(self.by_version.items()) if v != self.backend}

    @property
    def ok(self) -> bool:
        return self.requests > 0 and not self.stray

    def message(self) -> str:
        head = f"rule {self.rule!r} ({self.match} -> {self.backend})"
        if self.requests == 0:
            sent = ", ".join(self.cohorts) or "none"
            return (f"{head}: no successful request of the load matched it (cohorts sent for it: {sent}), so "
                    "it is untested; add a cohort for it to load.cohorts")
        if self.stray:
            strays = ", ".join(f"{n:,} to {v or 'no version header'}" for v, n in self.stray.items())
            return (f"{head}: {sum(self.stray.values()):,} of {self.requests:,} matched responses came from "
                    f"another version ({strays}); the route's match was not applied")
        return f"{head}: all {self.requests:,} matched responses came from {self.backend}"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "backend": self.backend, "match": self.match, "cohorts": list(self.cohorts),
                "requests": self.requests, "by_version": dict(sorted(self.by_version.items())),
                "stray": self.stray, "ok": self.ok, "message": self.message()}


@dataclass(frozen=True)
class RouteReport:
    """Every header rule's verdict, and how many requests were left for the weighted split."""

    rules: tuple[RuleCheck, ...]
    default_requests: int

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rules)

    def lines(self) -> list[str]:
        out = [f"header routes: {'PASS' if self.ok else 'FAIL'}"]
        out += [f"  {'ok  ' if r.ok else 'FAIL'} {r.message()}" for r in self.rules]
        out.append(f"  {self.default_requests:,} requests matched no rule and were judged by the weighted split")
        return out

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise RouteMismatchError("\n".join(self.lines()))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rules": [r.to_dict() for r in self.rules], "default_requests": self.default_requests}


def split_by_rule(records: Sequence[RequestRecord], rules: Sequence[RouteRule], path: str,
                  ) -> tuple[list[list[RequestRecord]], list[RequestRecord]]:
    """Records per rule (in rule order) and the records of the default rule."""
    memo: dict[str, int | None] = {}
    per_rule: list[list[RequestRecord]] = [[] for _ in rules]
    default: list[RequestRecord] = []
    for r in records:
        if r.cohort not in memo:
            memo[r.cohort] = rule_of_cohort(rules, r.cohort, path)
        index = memo[r.cohort]
        (default if index is None else per_rule[index]).append(r)
    return per_rule, default


def check_routes(records: Sequence[RequestRecord], rules: Sequence[RouteRule], cohorts: Sequence[Cohort],
                 path: str) -> tuple[RouteReport, list[RequestRecord]]:
    """The per-rule verdict, and the default rule's records (for the split verdict)."""
    per_rule, default = split_by_rule(records, rules, path)
    checks = []
    for rule, matched in zip(rules, per_rule, strict=True):
        by_version: dict[str, int] = {}
        for r in matched:
            if r.ok:
                by_version[r.version] = by_version.get(r.version, 0) + 1
        sent = tuple(c.label for c in cohorts if rule_of_cohort(rules, c.label, path) == rules.index(rule))
        checks.append(RuleCheck(rule.name, rule.backend, rule.label, sent, by_version))
    return RouteReport(tuple(checks), len(default)), default


__all__ = ["RouteReport", "RuleCheck", "check_routes", "default_rule_share", "rule_of_cohort", "split_by_rule"]
