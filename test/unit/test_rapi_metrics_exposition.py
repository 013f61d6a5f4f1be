"""/metrics writes the text prometheus_client's encoders write, byte for byte.

The exposition is written directly (the library builds an object per sample:
1.2 s for 10,000 instances); the library's encoders over the same families
are the reference, for both formats, with names that need escaping and
values of every shape Go formats differently from Python.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from ganeti import query
from ganeti.rapi.resources import metrics

NAMES = ["web1", 'we"ird', "back\\slash", "new\nline", "ünïcode", "inst.example.com"]
VALUES: list[Any] = [0, 1, 12.5, 1_700_000_000.123, 2**70, 1e-7, 3_000_000, 1e21,
                     123456789.0, 0.1, math.inf]


def _answer() -> dict[str, Any]:
    rows = []
    for idx in range(60):
        row: list[list[Any]] = [[query.RS_NORMAL, NAMES[idx % len(NAMES)] + str(idx)]]
        for col in range(len(metrics.INSTANCE_FIELDS) - 1):
            if (idx + col) % 4 == 0:
                row.append([query.RS_UNAVAIL, None])
            elif (idx + col) % 9 == 0:
                row.append([query.RS_NORMAL, None])
            else:
                row.append([query.RS_NORMAL, VALUES[(idx * 3 + col) % len(VALUES)]])
        rows.append(row)
    return {"fields": [{"name": f} for f in metrics.INSTANCE_FIELDS], "data": rows}


def _families() -> list[metrics.Family]:
    columns = metrics._answer_columns(_answer(), ("name", *metrics._METRIC_FIELDS))
    return [*metrics._instance_families(columns), *metrics._other_families(
        ["success", "error", "success", "made-up"],
        [{"kind": "local", "rate": 10.5}, {"kind": "remote-send", "rate": 2},
         {"kind": "other"}])]


def _library(families: list[metrics.Family], accept: str) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics._Snapshot(families))
    return encoder(registry), content_type


@pytest.mark.parametrize("accept", [
    "", "text/plain", "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    # the library's own encoders serve these
    "application/openmetrics-text; version=2.0.0", "text/plain; version=1.0.0",
])
def test_exposition_is_the_librarys(accept: str) -> None:
    families = _families()
    assert metrics._encode(families, accept) == _library(families, accept)


def test_the_families_hold_what_render_of_rows_holds() -> None:
    """The handler's one pass over the answer equals render() of the row dicts."""
    answer = _answer()
    by_rows = metrics.render(metrics._rows(answer), [], [])
    columns = metrics._answer_columns(answer, ("name", *metrics._METRIC_FIELDS))
    assert metrics._encode([*metrics._instance_families(columns),
                            *metrics._other_families([], [])], None) == by_rows
    text = by_rows[0].decode()
    assert 'instance_name="we\\"ird' in text and 'instance_name="new\\nline' in text
    assert "+Inf" in text and "1.1805916207174113e+21" in text
