"""Prediction agreement: on how many inputs do the candidate and the baseline answer differently?

The load records, per payload (request body) and version, every distinct answer found at
``load.prediction_field`` (``LoadResult.predictions``).  The payloads are taken as a sample of
the inputs the model will see, so the share of inputs on which the two versions disagree is a
binomial proportion over the inputs both answered: it is reported with its Clopper-Pearson (exact)
interval, and ``disagreement<=L`` is judged like every other limit: **pass** when the interval's
upper end is within ``L``, **fail** when its lower end is beyond it, **inconclusive** ("not
enough inputs to tell") otherwise.  More requests do not narrow that interval; more distinct
payloads do.

A version that gave two answers to the same payload is *unstable* (its answer sets differ from a
stable version's, so that input counts as a disagreement); a payload one version never answered
(or answered without a value at the pointer) is left out of the share and named.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._slo import clopper_pearson

Prediction = tuple[int, str, str | None]
#: Payloads listed in terminal notes before "and N more" (JSON and HTML list them all).
NOTE_CAP = 5
_ANSWER_CHARS = 60
INPUT_CHARS = 500


@functools.lru_cache(maxsize=4096)
def disagreement_interval(differing: int, compared: int, confidence: float) -> tuple[float, float]:
    """Clopper-Pearson (exact, two-sided) interval of the disagreement share; each side misses with
    at most (1 - confidence) / 2.  Cached: a run has few distinct (x, n) pairs."""
    if not 0 <= differing <= compared or compared < 1:
        raise ValueError(f"need 0 <= differing <= compared and compared >= 1, got {differing}, {compared}")
    return clopper_pearson(differing, compared, confidence)


def min_inputs(limit: float, confidence: float) -> int | None:
    """Fewest inputs on which ``disagreement<=limit`` can pass at all (every one agreeing); None if never."""
    if limit <= 0.0:
        return None
    if limit >= 1.0:
        return 1
    return math.ceil(math.log((1.0 - confidence) / 2.0) / math.log1p(-limit))


@dataclass(frozen=True)
class PayloadAnswers:
    """What each version answered to one payload (canonical JSON, each distinct answer once)."""

    payload: int
    answers: Mapping[str, tuple[str, ...]]  # version -> answers; a version absent never answered
    missing: tuple[str, ...] = ()  # versions whose responses had no value at the pointer
    input: str | None = None  # the request body, compact JSON cut at INPUT_CHARS (None: not known)

    def answered(self, version: str) -> bool:
        return bool(self.answers.get(version))

    def unstable(self, version: str) -> bool:
        return len(self.answers.get(version, ())) > 1

    def differs(self, a: str, b: str) -> bool | None:
        """True/False when both answered, None otherwise."""
        if not (self.answered(a) and self.answered(b)):
            return None
        return set(self.answers[a]) != set(self.answers[b])

    def shown(self, version: str) -> str:
        answers = self.answers.get(version, ())
        if not answers:
            return "(no value)" if version in self.missing else "(never answered)"
        text = " | ".join(answers)
        return text if len(text) <= _ANSWER_CHARS else text[: _ANSWER_CHARS - 3] + "..."

    def short_input(self, chars: int = _ANSWER_CHARS) -> str:
        text = self.input or "?"
        return text if len(text) <= chars else text[: chars - 3] + "..."

    def to_dict(self, baseline: str, candidates: Sequence[str]) -> dict[str, Any]:
        return {"payload": self.payload, "input": self.input,
                "answers": {v: [json.loads(a) for a in answers] for v, answers in self.answers.items()},
                "missing": list(self.missing), "differs": {c: self.differs(c, baseline) for c in candidates}}


def _compact(body: Any) -> str:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= INPUT_CHARS else text[: INPUT_CHARS - 3] + "..."


def payload_answers(predictions: Iterable[Prediction], payloads: Sequence[Any] | None = None
                    ) -> tuple[PayloadAnswers, ...]:
    """Per payload index (every index of the request bodies ``payloads`` when known), each version's
    answers."""
    answers: dict[int, dict[str, set[str]]] = {}
    missing: dict[int, set[str]] = {}
    for index, version, answer in predictions:
        if answer is None:
            missing.setdefault(index, set()).add(version)
        else:
            answers.setdefault(index, {}).setdefault(version, set()).add(answer)
    bodies = list(payloads or ())
    indexes = set(answers) | set(missing) | set(range(len(bodies)))
    return tuple(PayloadAnswers(i, {v: tuple(sorted(a)) for v, a in sorted(answers.get(i, {}).items())},
                                tuple(sorted(missing.get(i, set()) - set(answers.get(i, {})))),
                                _compact(bodies[i]) if i < len(bodies) else None)
                 for i in sorted(indexes))


@dataclass(frozen=True)
class Agreement:
    """The per-payload answers of a run and, per candidate, the payloads compared and differing."""

    versions: tuple[str, ...]
    baseline: str
    payloads: tuple[PayloadAnswers, ...]
    field: str = ""  # the JSON pointer the answers were read at

    def compared(self, candidate: str) -> list[PayloadAnswers]:
        return [p for p in self.payloads if p.differs(candidate, self.baseline) is not None]

    def differing(self, candidate: str) -> list[PayloadAnswers]:
        return [p for p in self.payloads if p.differs(candidate, self.baseline)]

    def unanswered(self, version: str) -> list[int]:
        return [p.payload for p in self.payloads if not p.answered(version)]

    def unstable(self, version: str) -> list[int]:
        return [p.payload for p in self.payloads if p.unstable(version)]

    def notes(self, candidates: Sequence[str]) -> list[str]:
        """Terminal lines: the disagreeing payloads (capped), unanswered and unstable ones."""
        out: list[str] = []
        b = self.baseline
        for cand in candidates:
            diff = self.differing(cand)
            for p in diff[:NOTE_CAP]:
                out.append(f"payload {p.payload} {p.short_input()}: {b} answered {p.shown(b)}, {cand} answered "
                           f"{p.shown(cand)}")
            if len(diff) > NOTE_CAP:
                out.append(f"and {len(diff) - NOTE_CAP} more payloads on which {cand} and {b} disagree "
                           "(all of them in the JSON and HTML reports)")
        for version in (b, *candidates):
            for what, items in (("never answered", self.unanswered(version)),
                                ("gave more than one answer to (unstable)", self.unstable(version))):
                if items:
                    out.append(f"{version} {what} payload{'s' if len(items) > 1 else ''} {_ids(items)}")
        return out

    def rows(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """Header and one row per payload (the HTML table)."""
        header = ("payload", "input", *self.versions, "agree")
        body = []
        for p in self.payloads:
            verdicts = [p.differs(v, self.baseline) for v in self.versions if v != self.baseline]
            agree = "-" if any(d is None for d in verdicts) else ("no" if any(verdicts) else "yes")
            body.append((str(p.payload), p.short_input(120), *(p.shown(v) for v in self.versions), agree))
        return header, body

    def to_dict(self) -> dict[str, Any]:
        candidates = [v for v in self.versions if v != self.baseline]
        return {"baseline": self.baseline, "field": self.field, "versions": list(self.versions),
                "payloads": [p.to_dict(self.baseline, candidates) for p in self.payloads]}


def _ids(items: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in items[:10])
    return shown + (f" and {len(items) - 10} more" if len(items) > 10 else "")


__all__ = ["NOTE_CAP", "Agreement", "PayloadAnswers", "disagreement_interval", "min_inputs", "payload_answers"]
