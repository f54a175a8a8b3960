"""The one input boundary: request bytes -> a JSON value, or a 400 naming what is wrong
(SPEC 5: bad input is a 4xx naming the field, never a 500).

Refused, beyond what JSON itself refuses: bytes that are not UTF-8; nesting deeper than a limit;
a key repeated in one object (parsers disagree on which one wins, so a body that means two
things is refused rather than guessed at); ``NaN`` / ``Infinity`` and numbers too large for a
double, anywhere. Both the Quart routes (`service.app.SonaRequest`) and the fast path use it.
What a field may hold (e.g. no NUL in a stored string: PostgreSQL text cannot hold it) is the
field's type, in `service.schemas`, where the OpenAPI document states it too.

The walk that finds a non-finite number runs only when a cheap scan of the text says one may
be present, so a well-formed request pays for one `json.loads`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from service.errors import ApiError

# Non-finite numbers come in as NaN / Infinity literals, exponents of three digits and more,
# or 300 digits and more.
_SUSPECT = re.compile(r"NaN|Infinity|[eE][+]?0*[1-9]\d{2,}|\d{300}")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]")
_INNERMOST = re.compile(r"\[\]|\{\}")


def invalid_body(message: str, field: str = "body") -> ApiError:
    return ApiError(400, "invalid_body", f"{field}: {message}", {"field": field})


def parse_json(raw: bytes, max_depth: int) -> Any:
    """The JSON value of ``raw``; raises `ApiError` (400) naming the field or the byte."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid_body(f"not valid UTF-8 (byte {error.start})") from None
    if text.count("[") + text.count("{") > max_depth and _depth(text, max_depth) > max_depth:
        raise invalid_body(f"JSON nested deeper than {max_depth} levels")
    try:
        value = _DECODER.decode(text)
    except _DuplicateKey as duplicate:
        raise invalid_body(f"duplicate key {duplicate.key!r} in one object") from None
    except (ValueError, RecursionError) as error:
        raise invalid_body(f"malformed JSON ({error})") from None
    if _SUSPECT.search(text):
        problem = _first_problem(value, [])
        if problem is not None:
            path, why = problem
            raise invalid_body(why, ".".join(map(str, path)) or "body")
    return value


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)  # one, not one per request


def _depth(text: str, limit: int) -> int:
    """How deep the brackets of ``text`` nest (outside strings), counted up to ``limit + 1``:
    each pass removes the innermost empty pairs, in C."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub('""', text))
    depth = 0
    while brackets and depth <= limit:
        reduced = _INNERMOST.sub("", brackets)
        if reduced == brackets:  # unbalanced: json.loads words the error
            return depth
        brackets, depth = reduced, depth + 1
    return depth


def _first_problem(value: Any, path: list) -> tuple[list, str] | None:
    """Where the first non-finite number is, and why."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "numbers must be finite")
    if isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            found = _first_problem(item, [*path, key])
            if found:
                return found
    return None
