"""Decoding JSON from peers (LUXI clients, node daemons) without internal exceptions.

``json.loads`` accepts NaN and Infinity (not JSON), turns 1e999 into inf,
raises RecursionError on deep nesting and UnicodeDecodeError on bad bytes;
every such case becomes one ParseError here, so daemons answer with a typed
error that says what was wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from ganeti import errors, gc_pause, limits


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# one decoder for every call: json.loads with hooks would build a new one each time
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


class _Brackets(dict[int, int | None]):
    """str.translate table keeping only quotes and brackets (ASCII text: the
    translation caches the 128 answers, so this runs at C speed)."""

    def __missing__(self, char: int) -> int | None:
        return char if chr(char) in '"[]{}' else None


_BRACKETS = _Brackets()
# decoded with the collector paused from this length on (characters)
_BIG = 64 * 1024
_QUOTED = re.compile(r'"[^"]*"')


def _depth_bound(text: str, maximum: int) -> int | None:
    """A bound on the nesting of valid JSON ``text`` (never below the true depth),
    or None when the bound exceeds ``maximum`` (then only a walk can tell).

    The strings go (escaped backslashes and quotes first), then everything but
    brackets; each pass then drops the innermost empty pairs of one kind, and a
    container goes only in a pass after its children, so the passes that dropped
    something are at least as many as the levels.
    """
    skeleton = _QUOTED.sub("", text.replace("\\\\", "").replace('\\"', "")
                           .translate(_BRACKETS))
    passes = 0
    while skeleton:
        before = len(skeleton)
        for pair in ("[]", "{}"):
            shorter = skeleton.replace(pair, "")
            if len(shorter) != len(skeleton):
                passes += 1
                if passes > maximum:
                    return None
                skeleton = shorter
        if len(skeleton) == before:  # not what valid JSON leaves: let the walk judge
            return None
    return passes


def load_json(raw: bytes | str, what: str = "message") -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, at most limits.JSON_DEPTH levels deep."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) \
            else raw
        if len(text) < _BIG:
            value = _DECODER.decode(text)
        else:  # a query's rows: see ganeti.gc_pause
            with gc_pause.paused():
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
    # big answers (a query of 10,000 instances): a bound from the text, no walk
    if text.isascii() and _depth_bound(text, limits.JSON_DEPTH.maximum) is not None:
        return value
    problem = limits.json_depth_problem(value)
    if problem is not None:
        raise errors.ParseError(f"Invalid JSON in {what}: {problem}")
    return value
