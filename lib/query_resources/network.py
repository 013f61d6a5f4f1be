"""The network query resource: one row per network, from the configuration.

Networks here are labels with an address range that NICs refer to; there is
no address pool (no reservations) and no connection to node groups, so
``group_list`` is always empty.
"""

from __future__ import annotations

from typing import Any, Final

from ganeti import query

RESOURCE_NETWORK: Final = "network"

# (name, title, kind, doc): the fields of ``Query("network")`` and QueryNetworks
FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("name", "Network", query.QFT_TEXT, "Network name"),
    ("uuid", "UUID", query.QFT_TEXT, "Network UUID"),
    ("network", "Subnet", query.QFT_TEXT, "IPv4 subnet"),
    ("gateway", "Gateway", query.QFT_TEXT, "IPv4 gateway"),
    ("mac_prefix", "MacPrefix", query.QFT_TEXT, "MAC address prefix"),
    ("group_list", "GroupList", query.QFT_OTHER,
     "Node groups connected to the network (always empty: networks are not connected)"),
    ("inst_list", "InstanceList", query.QFT_OTHER, "Instances with a NIC on the network"),
    ("tags", "Tags", query.QFT_OTHER, "Tags"),
    ("serial_no", "SerialNo", query.QFT_NUMBER, "Modification serial number"),
    ("ctime", "CTime", query.QFT_TIMESTAMP, "Creation time"),
    ("mtime", "MTime", query.QFT_TIMESTAMP, "Modification time"),
)


def network_rows(cfg: Any) -> list[dict[str, Any]]:
    """One dict per network with every field of FIELDS, sorted by name."""
    snap = cfg.snapshot()  # shared objects, read only
    networks = snap.get_networks()
    instances = snap.get_all_instances_info().values() if networks else ()
    rows = []
    for net in sorted(networks.values(), key=lambda n: n.name):
        users = sorted(i.name for i in instances
                       if any(nic.network in (net.uuid, net.name) for nic in i.nics))
        rows.append({
            "name": net.name, "uuid": net.uuid, "network": net.network or "",
            "gateway": net.gateway or "", "mac_prefix": net.mac_prefix or "",
            "group_list": [], "inst_list": users, "tags": sorted(net.tags),
            "serial_no": net.serial_no, "ctime": net.ctime, "mtime": net.mtime,
        })
    return rows


def _rows(source: Any) -> list[dict[str, Any]]:
    return network_rows(source.context.cfg)


def register() -> None:
    query.register(RESOURCE_NETWORK,
                   [query.FieldDef(name, title, kind, doc, query.item_getter(name))
                    for name, title, kind, doc in FIELDS],
                   _rows)
