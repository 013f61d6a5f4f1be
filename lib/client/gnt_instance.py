"""gnt-instance: add, list, inspect, start, stop, reboot, modify and remove instances."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from ganeti import cli, constants, errors
from ganeti.client import tags

LIST_DEFAULT_FIELDS = ("name", "hypervisor", "os", "pnode", "status", "oper_ram")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mMgGtT]?)\s*$")
_SIZE_FACTOR = {"": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
# backend parameters given in MiB (accept units)
_SIZE_PARAMS = frozenset({"maxmem", "minmem", "memory"})


def parse_size(value: str) -> int:
    """MiB from ``512``, ``512M``, ``1G``, ``1.5G`` or ``2T``."""
    from decimal import Decimal
    match = _SIZE_RE.match(value)
    if not match:
        raise errors.OpPrereqError(f"Invalid size '{value}' (use e.g. 512M, 1G, 2T)",
                                   errors.ECODE_INVAL)
    # exact decimal arithmetic: a float would overflow on 400 digits and round 2^63+1
    mib = Decimal(match.group(1)) * _SIZE_FACTOR[match.group(2).lower()]
    if mib <= 0 or mib != int(mib):
        raise errors.OpPrereqError(f"Invalid size '{value}': must be a positive whole"
                                   " number of MiB", errors.ECODE_INVAL)
    return int(mib)


def parse_value(value: str) -> Any:
    """Typed parameter values: booleans and integers, everything else a string."""
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def parse_keyval(text: str, what: str) -> dict[str, str]:
    """``a=1,b=2`` -> {"a": "1", "b": "2"}; ``no_x`` / ``-x`` are not supported."""
    result: dict[str, str] = {}
    if not text:
        return result
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise errors.OpPrereqError(f"Invalid {what} parameter '{item}': expected"
                                       " key=value", errors.ECODE_INVAL)
        result[key] = value
    return result


def parse_indexed(specs: list[str], what: str) -> list[dict[str, str]]:
    """``--disk 0:size=1G,mode=rw`` options into a list ordered by index."""
    by_index: dict[int, dict[str, str]] = {}
    for spec in specs:
        index_text, sep, rest = spec.partition(":")
        if not index_text.isdigit():
            raise errors.OpPrereqError(f"Invalid {what} specification '{spec}': expected"
                                       f" N:key=value,...", errors.ECODE_INVAL)
        index = int(index_text)
        if index in by_index:
            raise errors.OpPrereqError(f"{what} {index} given twice", errors.ECODE_INVAL)
        by_index[index] = parse_keyval(rest, what) if sep else {}
    if sorted(by_index) != list(range(len(by_index))):
        raise errors.OpPrereqError(f"{what} indices must be 0, 1, ... without gaps",
                                   errors.ECODE_INVAL)
    return [by_index[i] for i in range(len(by_index))]


def disks_from_opts(disk_specs: list[str], size: str | None) -> list[dict[str, Any]]:
    from ganeti import opcodes
    if size is not None and disk_specs:
        raise errors.OpPrereqError("Use either -s/--os-size or --disk, not both",
                                   errors.ECODE_INVAL)
    if size is not None:
        return [{"size": parse_size(size)}]
    disks = []
    for idx, raw in enumerate(parse_indexed(disk_specs, "disk")):
        unknown = sorted(set(raw) - set(opcodes.DiskSpec.model_fields))
        if unknown:
            raise errors.OpPrereqError(f"Disk {idx}: unknown parameter(s)"
                                       f" {', '.join(unknown)}", errors.ECODE_INVAL)
        if "size" not in raw:
            raise errors.OpPrereqError(f"Disk {idx}: missing size", errors.ECODE_INVAL)
        disk: dict[str, Any] = {"size": parse_size(raw["size"])}
        if "mode" in raw:
            disk["mode"] = raw["mode"]
        if raw.get("name"):
            disk["name"] = raw["name"]
        disks.append(disk)
    return disks


def beparams_from_opt(text: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in parse_keyval(text or "", "backend").items():
        result[key] = parse_size(value) if key in _SIZE_PARAMS and value != "default" \
            else parse_value(value)
    return result


def hv_from_opt(text: str | None) -> tuple[str | None, dict[str, Any]]:
    """``-H process:blocks=64`` -> ("process", {"blocks": 64}); ``-H blocks=64`` keeps hv."""
    if not text:
        return None, {}
    name, sep, rest = text.partition(":")
    if not sep and "=" in name:
        name, rest = "", text
    params = {k: parse_value(v) for k, v in parse_keyval(rest, "hypervisor").items()}
    return name or None, params


def _allocator(value: str) -> str:
    if value not in (constants.IALLOCATOR_HAIL, constants.DEFAULT_IALLOCATOR_SHORTCUT):
        raise argparse.ArgumentTypeError(
            f"unknown allocator '{value}' (built in: {constants.IALLOCATOR_HAIL};"
            f" '{constants.DEFAULT_IALLOCATOR_SHORTCUT}': the cluster's default)")
    return value


def create_fields(opts: argparse.Namespace, default_nic: bool = True) -> dict[str, Any]:
    """OpInstanceCreate fields from the add options (shared with gnt-backup import)."""
    hv_name, hvparams = hv_from_opt(opts.hypervisor)
    if opts.no_nics and opts.nics:
        raise errors.OpPrereqError("Use either --net or --no-nics, not both",
                                   errors.ECODE_INVAL)
    # like Ganeti: one NIC with a generated MAC unless told otherwise
    nics: list[dict[str, Any]] = [] if opts.no_nics else \
        [dict(nic) for nic in parse_indexed(opts.nics, "NIC")] or ([{}] if default_nic else [])
    pnode = opts.node.split(":", 1)[0] if opts.node else None
    fields: dict[str, Any] = {
        "instance_name": opts.instance, "disks": disks_from_opts(opts.disks, opts.size),
        "nics": nics, "beparams": beparams_from_opt(opts.backend),
        "hvparams": hvparams, "hypervisor": hv_name, "pnode": pnode,
        "start": opts.start, "no_install": opts.no_install, "os_type": opts.os,
        "tags": [t for t in (opts.tags or "").split(",") if t],
    }
    if opts.disk_template:
        fields["disk_template"] = opts.disk_template
    if opts.iallocator is not None:
        if pnode:
            raise errors.OpPrereqError("Use either -n/--node or -I/--iallocator, not both",
                                       errors.ECODE_INVAL)
        fields["iallocator"] = opts.iallocator
    if opts.ip_check and not opts.name_check:
        raise errors.OpPrereqError("--ip-check needs --name-check (the IP is the one the"
                                   " name resolves to)", errors.ECODE_INVAL)
    fields.update(no_nics=opts.no_nics, ignore_ipolicy=opts.ignore_ipolicy,
                  name_check=opts.name_check, ip_check=opts.ip_check)
    return fields


def add(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    result = cli.submit_opcode(opcodes.OpInstanceCreate.create(**create_fields(opts)), opts)
    if opts.dry_run and result:  # the LU's dry-run result: the nodes it chose
        print(f"Primary node: {result[0]}")
    return cli.EXIT_SUCCESS


def list_instances(opts: argparse.Namespace) -> int:
    fields = cli.parse_fields(opts.output, LIST_DEFAULT_FIELDS)
    with cli.get_client() as cl:
        return cli.generic_list(cl, "instance", fields,
                                cli.list_filter(opts, opts.instances), opts)


def _format_params(actual: dict[str, Any], own: dict[str, Any]) -> list[str]:
    return [f"    {key}: {'default (' + str(value) + ')' if key not in own else value}"
            for key, value in sorted(actual.items())]


def info(opts: argparse.Namespace) -> int:
    # a read-only query, sent as a dict the master validates (OpInstanceQueryData):
    # building the opcode object would make "info" import pydantic
    op = {"OP_ID": "OP_INSTANCE_QUERY_DATA", "instances": list(opts.instances),
          "static": opts.static}
    result = cli.submit_opcode(op, opts, feedback_fn=lambda _entry: None)
    for name in sorted(result):
        data = result[name]
        print(f"Instance name: {name}")
        print(f"UUID: {data['uuid']}")
        print(f"Serial number: {data['serial_no']}")
        print(f"Creation time: {cli.format_timestamp(data['ctime'])}")
        print(f"Modification time: {cli.format_timestamp(data['mtime'])}")
        # Ganeti's wording; the actual state only when it is known (not with --static)
        state = f"configured to be {data['config_state']}"
        if data["run_state"]:
            state += f", actual state is {data['run_state']}"
        print(f"State: {state}")
        print("  Nodes:")
        print(f"    - primary: {data['pnode']}")
        print(f"    - secondaries: {', '.join(data['snodes'])}")
        print(f"  Operating system: {data['os'] or '(none)'}")
        print(f"  Disk template: {data['disk_template']}")
        print(f"  Hypervisor: {data['hypervisor']}")
        if data.get("accel"):  # a running kvm instance: hardware (kvm) or emulation (tcg)
            print(f"  Accelerator: {data['accel']}")
        print("  Hypervisor parameters:")
        print("\n".join(_format_params(data["hv_actual"], data["hv_instance"])))
        print("  Back-end parameters:")
        print("\n".join(_format_params(data["be_actual"], data["be_instance"])))
        print("  NICs:")
        # Ganeti's NIC tuples: name, uuid, ip, mac, mode, link, vlan, network, netinfo
        for idx, (_, _, ip, mac, mode, link, *_) in enumerate(data["nics"]):
            print(f"    - nic/{idx}: MAC: {mac}, IP: {ip}, mode: {mode}, link: {link}")
        print("  Disks:")
        for disk in data["disks"]:
            label = f" ({disk['name']})" if disk["name"] else ""
            print(f"    - {disk['iv_name']}{label}: {disk['dev_type']}, size"
                  f" {cli.format_unit(disk['size'], 'h')}, mode {disk['mode']},"
                  f" logical_id {disk['logical_id']}")
        print(f"  Tags: {', '.join(data['tags'])}")
    return cli.EXIT_SUCCESS


def start(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    _, hvparams = hv_from_opt(opts.hypervisor)
    op = opcodes.OpInstanceStartup.create(
        instance_name=opts.instance, force=opts.force, beparams=beparams_from_opt(opts.backend),
        hvparams=hvparams, startup_paused=opts.paused, no_remember=opts.no_remember,
        ignore_offline_nodes=opts.ignore_offline)
    cli.submit_opcode(op, opts)
    _done(opts, "paused" if opts.paused else "started")
    return cli.EXIT_SUCCESS


def _done(opts: argparse.Namespace, what: str) -> None:
    """start, stop and reboot confirm success in one short line (not for --dry-run,
    which generic_main reports)."""
    if not opts.dry_run:
        print(f"Instance {opts.instance} {what}.")


def stop(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    op = opcodes.OpInstanceShutdown.create(
        instance_name=opts.instance, force=opts.force, timeout=opts.timeout,
        no_remember=opts.no_remember, ignore_offline_nodes=opts.ignore_offline)
    cli.submit_opcode(op, opts)
    _done(opts, "stopped")
    return cli.EXIT_SUCCESS


def reboot(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    op = opcodes.OpInstanceReboot.create(
        instance_name=opts.instance, reboot_type=opts.type,
        shutdown_timeout=opts.shutdown_timeout, ignore_secondaries=opts.ignore_secondaries)
    cli.submit_opcode(op, opts)
    _done(opts, f"rebooted ({opts.type})")
    return cli.EXIT_SUCCESS


def _confirm(question: str) -> bool:
    print(f"{question}\ny/[n]? ", end="", flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def remove(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    if not opts.force and not _confirm(
            f"This will remove the volumes of the instance {opts.instance} (including"
            " mirrors), thus removing all the data of the instance. Continue?"):
        print("Aborted, nothing was removed.", file=sys.stderr)
        return cli.EXIT_FAILURE
    op = opcodes.OpInstanceRemove.create(
        instance_name=opts.instance, ignore_failures=opts.ignore_failures,
        shutdown_timeout=opts.shutdown_timeout)
    cli.submit_opcode(op, opts)
    return cli.EXIT_SUCCESS


def modify(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    _, hvparams = hv_from_opt(opts.hypervisor)
    op = opcodes.OpInstanceSetParams.create(
        instance_name=opts.instance, beparams=beparams_from_opt(opts.backend),
        hvparams=hvparams, force=opts.force)
    changes = cli.submit_opcode(op, opts) or []
    if changes:
        print(f"Modified instance {opts.instance}")
        for name, value in changes:
            print(f" - {name} -> {value}")
    return cli.EXIT_SUCCESS


def _timeout(value: str) -> int:
    try:
        return cli.parse_time_spec(value)
    except errors.OpPrereqError as err:
        raise argparse.ArgumentTypeError(str(err.args[0])) from None


_BACKEND_OPT = cli.Option(("-B", "--backend-parameters"), {
    "dest": "backend", "default": None, "metavar": "maxmem=..,vcpus=..",
    "help": "Backend parameters (memory sizes accept M/G/T units)"})
_HV_OPT = cli.Option(("-H", "--hypervisor-parameters"), {
    "dest": "hypervisor", "default": None, "metavar": "HV[:param=value,...]",
    "help": "Hypervisor and its parameters"})
_FORCE_OPT = cli.Option(("-f", "--force"), {
    "action": "store_true", "default": False,
    "help": "remove: do not ask for confirmation; start, modify: go ahead where checks"
            " advise against it; stop: succeed with a warning if the stop fails"})
_NO_REMEMBER_OPT = cli.Option(("--no-remember",), {
    "action": "store_true", "default": False,
    "help": "Do not record the change in the configuration"})
_IGNORE_OFFLINE_OPT = cli.Option(("--ignore-offline",), {
    "action": "store_true", "default": False,
    "help": "Only record the new state if the primary node is offline"})
_SHUTDOWN_TIMEOUT_OPT = cli.Option(("--shutdown-timeout",), {
    "type": _timeout, "default": constants.DEFAULT_SHUTDOWN_TIMEOUT, "metavar": "SECONDS",
    "help": "How long to wait for a clean shutdown before killing the instance"})

ADD_OPTS = (
    cli.Option(("-t", "--disk-template"), {"default": None, "metavar": "TEMPLATE",
                                           "help": "Disk template (file, plain, diskless)"}),
    cli.Option(("-n", "--node"), {"default": None, "metavar": "NODE",
                                  "help": "Primary node (default: the least used one)"}),
    cli.Option(("-I", "--iallocator"), {
        "default": None, "metavar": "NAME", "type": _allocator,
        "help": f"Let the allocator NAME choose the primary node instead of -n:"
                f" {constants.IALLOCATOR_HAIL} (built in, as Ganeti's hail for one"
                f" instance: the usable node with the most free memory and disk left after"
                f" the placement) or '{constants.DEFAULT_IALLOCATOR_SHORTCUT}' (the"
                f" cluster's default, {constants.IALLOCATOR_HAIL})"}),
    cli.Option(("--ignore-ipolicy",), {
        "action": "store_true", "default": False,
        "help": "Ignore instance policy violations (Ganeti's option; the policy here has no"
                " limits and only the enabled disk templates, which are required anyway,"
                " so nothing is refused by it)"}),
    cli.Option(("--name-check",), {
        "dest": "name_check", "action": "store_true", "default": False,
        "help": "Check that the instance name resolves (DNS or /etc/hosts); off by"
                " default here, unlike Ganeti, as local clusters' names rarely resolve"}),
    cli.Option(("--no-name-check",), {
        "dest": "name_check", "action": "store_false",
        "help": "Do not check that the name resolves (the default here; the IP check"
                " needs it)"}),
    cli.Option(("--ip-check",), {
        "dest": "ip_check", "action": "store_true", "default": False,
        "help": "With --name-check: refuse the name when something already answers at the"
                " address it resolves to"}),
    cli.Option(("--no-ip-check",), {
        "dest": "ip_check", "action": "store_false",
        "help": "Do not check whether the instance's IP is in use (the default here)"}),
    cli.Option(("--disk",), {"dest": "disks", "action": "append", "default": [],
                             "metavar": "N:size=SIZE[,mode=rw,name=X]",
                             "help": "Disk N (0, 1, ...): its size (M/G/T units), access"
                                     " mode and name; repeat for more disks"}),
    cli.Option(("-s", "--os-size"), {"dest": "size", "default": None, "metavar": "SIZE",
                                     "help": "Size of a single disk (e.g. 1G)"}),
    cli.Option(("--net",), {"dest": "nics", "action": "append", "default": [],
                            "metavar": "N:mac=..,link=..,mode=..,ip=..",
                            "help": "Network interface N (0, 1, ...): MAC address, link,"
                                    " mode and IP; repeat for more NICs"}),
    _BACKEND_OPT, _HV_OPT,
    cli.Option(("--no-nics",), {"action": "store_true", "default": False,
                                "help": "Create the instance without network interfaces"
                                        " (an import: without the export's)"}),
    cli.Option(("--no-start",), {"dest": "start", "action": "store_false", "default": True,
                                 "help": "Do not start the instance once it is created"}),
    cli.Option(("--no-install",), {"action": "store_true", "default": None,
                                   "help": "Do not run the OS install scripts on the disks"}),
    cli.Option(("-o", "--os-type"), {"dest": "os", "default": None, "metavar": "OS",
                                     "help": "Operating system definition to install"}),
    cli.Option(("--tags",), {"default": None, "metavar": "TAG,TAG",
                             "help": "Tags to give the new instance (comma-separated)"}),
)

COMMANDS: dict[str, cli.Command] = {
    "add": cli.Command(add, (cli.Arg("instance"),), (*ADD_OPTS, *cli.SUBMIT_OPTS),
                       "Create an instance"),
    "list": cli.Command(list_instances, (cli.names_arg("instances"),),
                        (*cli.LIST_OPTS, cli.UNITS_OPT), "List instances"),
    "info": cli.Command(info, (cli.Arg("instances", min=0, max=None),),
                        (cli.Option(("-s", "--static"), {"action": "store_true",
                                                         "default": False,
                                                         "help": "Only the configuration:"
                                                                 " do not ask the nodes for"
                                                                 " the live state"}),),
                        "Show instance details"),
    "start": cli.Command(start, (cli.Arg("instance"),),
                         (_FORCE_OPT, _BACKEND_OPT, _HV_OPT, _NO_REMEMBER_OPT,
                          _IGNORE_OFFLINE_OPT,
                          cli.Option(("--paused",), {"action": "store_true",
                                                     "default": False,
                                                     "help": "Start with the CPUs paused"}),
                          *cli.SUBMIT_OPTS), "Start an instance"),
    "stop": cli.Command(stop, (cli.Arg("instance"),),
                        (_FORCE_OPT, _NO_REMEMBER_OPT, _IGNORE_OFFLINE_OPT,
                         cli.Option(("--timeout",), {
                             "type": _timeout, "default": constants.DEFAULT_SHUTDOWN_TIMEOUT,
                             "metavar": "SECONDS",
                             "help": "How long to wait for a clean shutdown before killing"
                                     " the instance"}),
                         *cli.SUBMIT_OPTS), "Stop an instance"),
    "reboot": cli.Command(reboot, (cli.Arg("instance"),),
                          (_SHUTDOWN_TIMEOUT_OPT,
                           cli.Option(("-t", "--type"), {"default": "hard",
                                                         "choices": ["soft", "hard", "full"],
                                                         "help": "soft (inside the guest),"
                                                                 " hard (hypervisor restart,"
                                                                 " the default) or full"
                                                                 " (stop, then start)"}),
                           cli.Option(("--ignore-secondaries",), {"action": "store_true",
                                                                  "default": False,
                                                                  "help": "Ignore errors on"
                                                                          " the secondary"
                                                                          " nodes"}),
                           *cli.SUBMIT_OPTS), "Reboot an instance"),
    "remove": cli.Command(remove, (cli.Arg("instance"),),
                          (_FORCE_OPT, _SHUTDOWN_TIMEOUT_OPT,
                           cli.Option(("--ignore-failures",), {"action": "store_true",
                                                               "default": False,
                                                               "help": "Remove the instance"
                                                                       " from the config even"
                                                                       " if removing its"
                                                                       " disks fails"}),
                           *cli.SUBMIT_OPTS), "Remove an instance and its disks"),
    "modify": cli.Command(modify, (cli.Arg("instance"),),
                          (_BACKEND_OPT, _HV_OPT, _FORCE_OPT, *cli.SUBMIT_OPTS),
                          "Change an instance's parameters (applied at the next start)"),
    "list-fields": cli.list_fields_command("instance", "list"),
    **tags.INSTANCE,
}


def main(argv: list[str] | None = None) -> int:
    return cli.generic_main("gnt-instance", COMMANDS, argv)
