"""The export query resource: one row per export and node, asked from the nodes.

Like Ganeti's: a node that cannot answer gets one row whose export is
unavailable (or offline), so a listing never silently drops a node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ganeti import query

if TYPE_CHECKING:
    from ganeti.config import ConfigStore
    from ganeti.rpc.client import RpcRunner

FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("node", "Node", query.QFT_TEXT, "Node holding the export"),
    ("export", "Export", query.QFT_TEXT, "Export name (the instance's name)"),
)
FIELD_NAMES = tuple(f[0] for f in FIELDS)


def export_rows(cfg: ConfigStore, rpc: RpcRunner) -> list[dict[str, Any]]:
    """Sorted by node, then export; offline nodes are not contacted."""
    nodes = sorted(cfg.snapshot().get_all_nodes_info().values(), key=lambda n: n.name)
    online = [n.name for n in nodes if not n.offline]
    answers = rpc.call_export_list(online) if rpc is not None and online else {}
    rows: list[dict[str, Any]] = []
    for node in nodes:
        if node.offline:
            rows.append({"node": node.name, "export": query.OFFLINE})
            continue
        res = answers.get(node.name)
        if res is None or res.fail_msg:
            rows.append({"node": node.name, "export": query.UNAVAIL})
            continue
        rows.extend({"node": node.name, "export": name} for name in sorted(res.payload))
    return rows


def _rows(source: Any) -> list[dict[str, Any]]:
    return export_rows(source.context.cfg, source.context.rpc)


def register() -> None:
    query.register(query.RESOURCE_EXPORT,
                   [query.FieldDef(name, title, kind, doc, query.item_getter(name))
                    for name, title, kind, doc in FIELDS],
                   _rows)
