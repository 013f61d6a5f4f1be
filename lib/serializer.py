"""Decoding JSON from peers (LUXI clients, node daemons) without internal exceptions.

``json.loads`` accepts NaN and Infinity (not JSON), turns 1e999 into inf,
raises RecursionError on deep nesting and UnicodeDecodeError on bad bytes;
every such case becomes one ParseError here, so daemons answer with a typed
error that says what was wrong.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from ganeti import errors, limits


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# one decoder for every call: json.loads with hooks would build a new one each time
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def load_json(raw: bytes | str, what: str = "message") -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, at most limits.JSON_DEPTH levels deep."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) \
            else raw
        value = _DECODER.decode(text)
    except UnicodeDecodeError as err:
        raise errors.ParseError(f"Invalid JSON in {what}: not UTF-8 ({err.reason} at"
                                f" byte {err.start})") from None
    except RecursionError:
        raise errors.ParseError(f"Invalid JSON in {what}: nested deeper than"
                                f" {limits.JSON_DEPTH.maximum} levels") from None
    except ValueError as err:
        raise errors.ParseError(f"Invalid JSON in {what}: {err}") from None
    # nesting never exceeds the number of brackets: most messages need no walk
    if text.count("[") + text.count("{") <= limits.JSON_DEPTH.maximum:
        return value
    problem = limits.json_depth_problem(value)
    if problem is not None:
        raise errors.ParseError(f"Invalid JSON in {what}: {problem}")
    return value
