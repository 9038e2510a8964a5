"""JSON pointers to a response's prediction (RFC 6901, plus ``*`` over an array's elements).

Import-light (``json`` and the kit's errors only): the locust side uses it before gevent has
patched the process.
"""

from __future__ import annotations

import json
from typing import Any

from ._errors import SpecError

#: The reference model server answers ``{"predictions": [{"label": ..., "class": ..., ...}, ...]}``.
DEFAULT_PREDICTION_FIELD = "/predictions/*/label"


_EACH = "*"


def parse_pointer(text: str) -> tuple[str, ...]:
    """The reference tokens of a JSON pointer (RFC 6901: ``""`` or ``/a/b``, ``~1`` is ``/``, ``~0``
    is ``~``); raises ValueError on anything else."""
    if not isinstance(text, str):
        raise ValueError(f"a JSON pointer must be a string, got {text!r}")
    if text == "":
        return ()
    if not text.startswith("/"):
        raise ValueError(f"a JSON pointer starts with '/', got {text!r}")
    tokens = text[1:].split("/")
    for token in tokens:
        if "~" in token.replace("~0", "").replace("~1", ""):
            raise ValueError(f"{text!r}: '~' must be followed by 0 or 1 (RFC 6901)")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def check_pointer(value: object, field_name: str) -> str:
    """``value`` if it is a JSON pointer, else a SpecError naming ``field_name`` (bad input, before
    any side effect)."""
    try:
        parse_pointer(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise SpecError(field_name, str(exc)) from None
    assert isinstance(value, str)
    return value


class PointerMiss(LookupError):
    """The document has no value at the pointer."""


def resolve_pointer(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at ``tokens`` in ``doc``.  On an array, ``*`` stands for every element (the result is
    the list of the rest of the pointer applied to each); on an object it is the key ``*``, as in RFC
    6901.  Raises PointerMiss when there is no such value."""
    for i, step in enumerate(tokens):
        if isinstance(doc, dict):
            if step not in doc:
                raise PointerMiss(f"no member {step!r}")
            doc = doc[step]
        elif isinstance(doc, list):
            if step == _EACH:
                return [resolve_pointer(item, tokens[i + 1:]) for item in doc]
            index = int(step) if step.isascii() and step.isdigit() and (step == "0" or step[0] != "0") else -1
            if not 0 <= index < len(doc):
                raise PointerMiss(f"no element {step!r} in an array of {len(doc)}")
            doc = doc[index]
        else:
            raise PointerMiss(f"{step!r} under a {type(doc).__name__}")
    return doc


def canonical_answer(value: Any) -> str:
    """One spelling per JSON value (sorted keys, compact), so equal answers compare equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


__all__ = ["DEFAULT_PREDICTION_FIELD", "PointerMiss", "canonical_answer", "check_pointer", "parse_pointer",
           "resolve_pointer"]
