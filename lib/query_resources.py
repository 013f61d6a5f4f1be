"""Query resources backed by the cluster configuration (node, instance; more areas add theirs).

Imported by the master context so that LUXI ``Query("node", ...)`` works.
"""

from __future__ import annotations

from typing import Any

from ganeti import query
from ganeti.cmdlib.instance import LIVE_FIELDS, instance_rows
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
    ("backup_bwlimit", "BackupBwLimit", query.QFT_NUMBER,
     "KiB/s shared by the node's export streams (0: no limit)"),
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


_INSTANCE_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("name", "Instance", query.QFT_TEXT, "Instance name"),
    ("uuid", "UUID", query.QFT_TEXT, "Instance UUID"),
    ("os", "OS", query.QFT_TEXT, "Operating system"),
    ("pnode", "Primary_node", query.QFT_TEXT, "Primary node"),
    ("snodes", "Secondary_Nodes", query.QFT_OTHER, "Secondary nodes"),
    ("hypervisor", "Hypervisor", query.QFT_TEXT, "Hypervisor name"),
    ("disk_template", "Disk_template", query.QFT_TEXT, "Disk template"),
    ("admin_state", "InstanceState", query.QFT_TEXT, "Desired state (up, down, offline)"),
    ("status", "Status", query.QFT_TEXT,
     "running, ADMIN_down, ERROR_down, ERROR_up, ERROR_nodeoffline, ERROR_nodedown"),
    ("oper_state", "Running", query.QFT_BOOL, "Whether the instance really runs"),
    ("oper_ram", "Memory", query.QFT_UNIT, "Memory the running instance uses (MiB)"),
    ("oper_vcpus", "VCPUs", query.QFT_NUMBER, "VCPUs of the running instance"),
    ("be/maxmem", "ConfigMaxMem", query.QFT_UNIT, "Configured maximum memory (MiB)"),
    ("be/minmem", "ConfigMinMem", query.QFT_UNIT, "Configured minimum memory (MiB)"),
    ("be/vcpus", "ConfigVCPUs", query.QFT_NUMBER, "Configured VCPUs"),
    ("disk.count", "Disks", query.QFT_NUMBER, "Number of disks"),
    ("disk.sizes", "Disk_sizes", query.QFT_OTHER, "Disk sizes (MiB)"),
    ("disk_usage", "DiskUsage", query.QFT_UNIT, "Total disk space used (MiB)"),
    ("nic.count", "NICs", query.QFT_NUMBER, "Number of network interfaces"),
    ("nic.macs", "NIC_MACs", query.QFT_OTHER, "MAC addresses"),
    ("tags", "Tags", query.QFT_OTHER, "Tags"),
    ("ctime", "CTime", query.QFT_TIMESTAMP, "Creation time"),
    ("mtime", "MTime", query.QFT_TIMESTAMP, "Modification time"),
    ("serial_no", "SerialNo", query.QFT_NUMBER, "Modification serial number"),
)


def _instances(source: Any, needed: frozenset[str]) -> list[dict[str, Any]]:
    # nodes are only contacted when a live field is selected or filtered on
    context = source.context
    return instance_rows(context.cfg, context.rpc, live=bool(needed & LIVE_FIELDS))


query.register(query.RESOURCE_INSTANCE,
               [query.FieldDef(name, title, kind, doc, query.item_getter(name))
                for name, title, kind, doc in _INSTANCE_FIELDS],
               _instances, wants_fields=True)
