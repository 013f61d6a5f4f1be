"""Decoding a big query answer: the depth limit without a walk of every list.

``serializer.load_json`` bounds the nesting of a message with more brackets
than the limit on a bracket skeleton of its text; the bound is never below
the true depth (a message it lets through is within the limit), and a message
it cannot clear still gets the exact walk and its error.
"""

from __future__ import annotations

import gc
import json
import random
from typing import Any

import pytest

from ganeti import errors, limits, serializer

MAX = limits.JSON_DEPTH.maximum


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _random_value(rng: random.Random, depth: int) -> Any:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([0, 1.5, None, True, "", "a[b", "}{", 'q"[', "\\", "\\[",
                           "\\\"]", "\n{", "x\\\\\"[[", "\u005b"])
    if rng.random() < 0.5:
        return [_random_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {f"k{i}[": _random_value(rng, depth - 1) for i in range(rng.randrange(4))}


def test_bound_is_never_below_the_depth() -> None:
    rng = random.Random(20)
    for _ in range(3000):
        value = _random_value(rng, rng.randrange(1, 12))
        text = json.dumps(value)
        bound = serializer._depth_bound(text, 1000)
        assert bound is not None and bound >= _depth(value), text


def test_big_shallow_answer_is_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [[[0, f"inst{i}[x]"], [3, None], [0, {"a": [1, "}"]}]] for i in range(5000)]
    text = json.dumps({"success": True, "result": {"data": rows}}, separators=(",", ":"))

    def walk(*_args: Any) -> Any:
        raise AssertionError("walked every list of a shallow answer")
    monkeypatch.setattr(limits, "json_depth_problem", walk)
    assert serializer.load_json(text.encode())["result"]["data"] == rows
    assert gc.isenabled()


def _nested(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("text", [
    "[" * (MAX + 1) + "]" * (MAX + 1),
    json.dumps([["x"] * 40, _nested(MAX, "deep")]),
    # deep, with many brackets in strings to confuse a text check
    json.dumps({"s": "[" * 200, "v": _nested(MAX + 3, 1)}),
])
def test_too_deep_is_still_refused(text: str) -> None:
    assert _depth(json.loads(text)) > MAX
    with pytest.raises(errors.ParseError, match=f"nested deeper than {MAX} levels"):
        serializer.load_json(text.encode())


def test_within_the_limit_with_many_brackets_passes() -> None:
    value = [[[["[" * 100]]] * 50, {"}": "]" * 70}]
    text = json.dumps(value)
    assert serializer.load_json(text.encode()) == value
    # non-ASCII text: the walk decides
    value.append("\u00fc")
    assert serializer.load_json(json.dumps(value, ensure_ascii=False).encode()) == value
