"""gnt-node: add, remove, list, inspect and modify nodes."""

from __future__ import annotations

import argparse

from ganeti import cli
from ganeti.client import tags

LIST_DEFAULT_FIELDS = ("name", "pip", "port", "role", "group", "pinst_cnt")


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got '{value}'")


def _bwlimit(value: str) -> int:
    """KiB/s, or "none" (0) to remove the limit."""
    if value.lower() == "none":
        return 0
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise argparse.ArgumentTypeError(
            f"backup_bwlimit: expected KiB/s (a whole number, 0 or more) or none,"
            f" got '{value}'")
    return limit


def add(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    op = opcodes.OpNodeAdd.create(
        node_name=opts.node, primary_ip=opts.primary_ip, secondary_ip=opts.secondary_ip,
        readd=opts.readd, port=opts.port, ssh_user=opts.ssh_user, ssh_port=opts.ssh_port,
        master_capable=opts.master_capable, vm_capable=opts.vm_capable)
    cli.submit_opcode(op, opts)
    return cli.EXIT_SUCCESS


def remove(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    cli.submit_opcode(opcodes.OpNodeRemove.create(node_name=opts.node), opts)
    return cli.EXIT_SUCCESS


def list_nodes(opts: argparse.Namespace) -> int:
    fields = cli.parse_fields(opts.output, LIST_DEFAULT_FIELDS)
    with cli.get_client() as cl:
        return cli.generic_list(cl, "node", fields, cli.list_filter(opts, opts.nodes), opts)


def info(opts: argparse.Namespace) -> int:
    fields = ["name", "uuid", "pip", "sip", "port", "role", "offline", "drained",
              "master_candidate", "master_capable", "vm_capable", "group", "pinst_list",
              "tags", "backup_bwlimit", "serial_no", "ctime", "mtime"]
    with cli.get_client() as cl:
        rows = cli.query_items(cl, "node", fields, opts.nodes)
    for values in rows:
        print(f"Node name: {values['name']}")
        for field in fields[1:]:
            value = values[field]
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value)
            elif field in ("ctime", "mtime") and value is not None:
                value = cli.format_timestamp(value)
            elif field == "backup_bwlimit":
                value = f"{value} KiB/s" if value else "none"
            print(f"  {field}: {value}")
    return cli.EXIT_SUCCESS


def modify(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    op = opcodes.OpNodeSetParams.create(node_name=opts.node, offline=opts.offline,
                                        drained=opts.drained,
                                        master_candidate=opts.master_candidate,
                                        backup_bwlimit=opts.backup_bwlimit)
    for name, value in cli.submit_opcode(op, opts) or []:
        print(f"Modified node {opts.node}: {name} -> {value}")
    return cli.EXIT_SUCCESS


_ADD_OPTS = (
    cli.Option(("-s", "--secondary-ip"), {"default": None,
                                          "help": "Secondary (replication) address"}),
    cli.Option(("--primary-ip",), {"default": None,
                                   "help": "Node address (default: resolve the name)"}),
    cli.Option(("--port",), {"type": int, "default": None,
                             "help": "Node daemon port if not the cluster's"}),
    cli.Option(("--readd",), {"action": "store_true", "default": False,
                              "help": "Re-add a node that is already in the config"}),
    cli.Option(("--ssh-user",), {"default": None,
                                 "help": "Install the node over SSH as this user first"}),
    cli.Option(("--ssh-port",), {"type": int, "default": None,
                                 "help": "SSH port of the new node (with --ssh-user)"}),
    cli.Option(("--master-capable",), {"type": _bool, "default": None, "metavar": "yes|no",
                                       "help": "Whether the node may become master"
                                               " (candidate)"}),
    cli.Option(("--vm-capable",), {"type": _bool, "default": None, "metavar": "yes|no",
                                   "help": "Whether the node may run instances"}),
)
_MODIFY_OPTS = (
    cli.Option(("-O", "--offline"), {"type": _bool, "default": None, "metavar": "yes|no",
                                     "help": "Mark the node offline (no RPC is sent to it)"
                                             " or back online"}),
    cli.Option(("-D", "--drained"), {"type": _bool, "default": None, "metavar": "yes|no",
                                     "help": "Drain the node (no new instances on it) or"
                                             " undrain it"}),
    cli.Option(("-C", "--master-candidate"), {"type": _bool, "default": None,
                                              "metavar": "yes|no",
                                              "help": "Make the node a master candidate"
                                                      " (it gets the configuration) or not"}),
    cli.Option(("--backup-bwlimit",), {
        "type": _bwlimit, "default": None, "metavar": "KIB_PER_S|none",
        "help": "Bandwidth limit in KiB/s shared by every export stream the node sends or"
                " receives (none: no limit); applies to streams started afterwards"}),
)

COMMANDS: dict[str, cli.Command] = {
    "add": cli.Command(add, (cli.Arg("node"),), (*_ADD_OPTS, *cli.SUBMIT_OPTS),
                       "Add a node to the cluster"),
    "remove": cli.Command(remove, (cli.Arg("node"),), cli.SUBMIT_OPTS,
                          "Remove a node from the cluster"),
    "list": cli.Command(list_nodes, (cli.names_arg("nodes"),),
                        (*cli.LIST_OPTS, cli.UNITS_OPT), "List nodes"),
    "info": cli.Command(info, (cli.Arg("nodes", min=0, max=None),), (),
                        "Show node details"),
    "modify": cli.Command(modify, (cli.Arg("node"),), (*_MODIFY_OPTS, *cli.SUBMIT_OPTS),
                          "Change a node's offline, drained or master-candidate flag,"
                          " or its backup bandwidth limit"),
    "list-fields": cli.list_fields_command("node", "list"),
    **tags.NODE,
}


def main(argv: list[str] | None = None) -> int:
    return cli.generic_main("gnt-node", COMMANDS, argv)
