"""The transfer query resource: disk streams the master drives right now.

Rows come from the master's coordinators (``ganeti.transfer.master.coordinator.
in_flight``: exports, imports, remote exports and imports of this cluster); a
finished stream is gone.  RAPI's ``/metrics`` counts them.
"""

from __future__ import annotations

from typing import Any

from ganeti import query
from ganeti.transfer.master.coordinator import in_flight

FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("id", "ID", query.QFT_TEXT, "Stream id (as the node daemons know it)"),
    ("kind", "Kind", query.QFT_TEXT,
     "local (both ends in this cluster), remote-send or remote-receive"),
    ("label", "Label", query.QFT_TEXT, "What is copied (disk/N)"),
    ("source_node", "Source", query.QFT_TEXT, "Sending node (unavailable: another cluster)"),
    ("dest_node", "Destination", query.QFT_TEXT,
     "Receiving node (unavailable: another cluster)"),
    ("bytes", "Sent", query.QFT_NUMBER, "Data bytes sent so far"),
    ("total", "Total", query.QFT_NUMBER, "Data bytes to send (0: not known yet)"),
    ("rate", "Rate", query.QFT_NUMBER, "Current rate (bytes per second)"),
    ("elapsed", "Elapsed", query.QFT_NUMBER, "Seconds since the stream was started"),
)
FIELD_NAMES = tuple(f[0] for f in FIELDS)


def _value(name: str) -> query.Getter:
    def get(_source: Any, row: dict[str, Any]) -> Any:
        value = row[name]
        return query.UNAVAIL if value is None else value
    return get


def _rows(_source: Any) -> list[dict[str, Any]]:
    return sorted(in_flight(), key=lambda row: str(row["id"]))


def register() -> None:
    query.register(query.RESOURCE_TRANSFER,
                   [query.FieldDef(n, t, k, d, _value(n)) for n, t, k, d in FIELDS], _rows)
