"""Query resources backed by the cluster configuration (node; more areas add theirs).

Imported by the master context so that LUXI ``Query("node", ...)`` works.
"""

from __future__ import annotations

from typing import Any

from ganeti import query
from ganeti.cmdlib.node import node_rows

_NODE_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("name", "Node", query.QFT_TEXT, "Node name"),
    ("uuid", "UUID", query.QFT_TEXT, "Node UUID"),
    ("pip", "PrimaryIP", query.QFT_TEXT, "Primary IP address"),
    ("sip", "SecondaryIP", query.QFT_TEXT, "Secondary IP address"),
    ("port", "Port", query.QFT_NUMBER, "Node daemon port"),
    ("offline", "Offline", query.QFT_BOOL, "Whether the node is marked offline"),
    ("drained", "Drained", query.QFT_BOOL, "Whether the node is drained"),
    ("master_candidate", "MasterC", query.QFT_BOOL, "Whether the node holds the config"),
    ("master_capable", "MasterCapable", query.QFT_BOOL, "Whether it can become master"),
    ("vm_capable", "VMCapable", query.QFT_BOOL, "Whether it can host instances"),
    ("role", "Role", query.QFT_TEXT,
     "M=master, C=candidate, R=regular, D=drained, O=offline"),
    ("group", "Group", query.QFT_TEXT, "Node group"),
    ("pinst_cnt", "Pinst", query.QFT_NUMBER, "Number of primary instances"),
    ("pinst_list", "PriInstances", query.QFT_OTHER, "Primary instances"),
    ("tags", "Tags", query.QFT_OTHER, "Tags"),
    ("serial_no", "SerialNo", query.QFT_NUMBER, "Modification serial number"),
    ("ctime", "CTime", query.QFT_TIMESTAMP, "Creation time"),
    ("mtime", "MTime", query.QFT_TIMESTAMP, "Modification time"),
)


def _nodes(source: Any) -> list[dict[str, Any]]:
    return node_rows(source.context.cfg)


query.register(query.RESOURCE_NODE,
               [query.FieldDef(name, title, kind, doc, query.item_getter(name))
                for name, title, kind, doc in _NODE_FIELDS],
               _nodes)
