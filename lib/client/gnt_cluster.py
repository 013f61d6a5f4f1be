"""gnt-cluster: create, inspect, verify and destroy the cluster."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from typing import Any

from ganeti import cli, constants, errors, pathutils
from ganeti.client import cluster_crypto, tags


def _split(value: str | None) -> list[str] | None:
    return [v for v in value.split(",") if v] if value else None


def init(opts: argparse.Namespace) -> int:
    from ganeti import bootstrap
    master = opts.master_node or socket.getfqdn()
    primary_ip = opts.primary_ip
    if primary_ip is None:
        try:
            primary_ip = socket.gethostbyname(master)
        except OSError as err:
            raise errors.OpPrereqError(f"Cannot resolve {master}: {err}; give --primary-ip",
                                       errors.ECODE_RESOLVER) from None
    paths = pathutils.current()
    bootstrap.init_cluster(
        paths, opts.cluster_name, master, primary_ip, noded_port=opts.noded_port,
        master_port=opts.master_port, master_ip=opts.master_ip,
        enabled_hypervisors=_split(opts.enabled_hypervisors),
        enabled_disk_templates=_split(opts.enabled_disk_templates),
        compression_tools=_split(opts.compression_tools),
        shared_export_dir=opts.shared_export_dir)
    print(f"Cluster {opts.cluster_name} initialised; master node {master} ({primary_ip}).")
    print(f"Start {constants.NODED} and {constants.MASTERD} on this node next.")
    return cli.EXIT_SUCCESS


def _joined(values: Any) -> str:
    return ", ".join(str(v) for v in values) if values else "(none)"


def _params(groups: dict[str, Any]) -> dict[str, Any]:
    """Grouped parameters ({group: {param: value}}) with plain values as text."""
    return {key: _params(value) if isinstance(value, dict) else value
            for key, value in groups.items()}


def cluster_info_layout(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """``gnt-cluster info`` in Ganeti's order and wording (its ShowClusterConfig), with
    the settings we have and Ganeti does not (backup defaults, ports) after them."""
    backup = dict(data.get("backup_defaults") or {})
    return [
        ("Cluster name", data["name"]),
        ("Cluster UUID", data["uuid"]),
        ("Creation time", cli.format_time(data.get("ctime"))),
        ("Modification time", cli.format_time(data.get("mtime"))),
        ("Master node", data["master"]),
        ("Architecture (this node)",
         f"{data['architecture'][0]} ({data['architecture'][1]})"),
        ("Tags", _joined(sorted(data.get("tags") or []))),
        ("Default hypervisor", data["default_hypervisor"]),
        ("Enabled hypervisors", _joined(data["enabled_hypervisors"])),
        ("Hypervisor parameters", _params(data.get("hvparams") or {})),
        ("OS parameters", _params(data.get("osparams") or {})),
        ("Cluster parameters", [
            ("candidate pool size", data["candidate_pool_size"]),
            ("maximal number of jobs running simultaneously", data["max_running_jobs"]),
            ("maximal number of jobs simultaneously tracked by the scheduler",
             data["max_tracked_jobs"]),
            ("mac prefix", data["mac_prefix"]),
            ("master IP address", data.get("master_ip") or "(none)"),
            ("node daemon port", data["noded_port"]),
            ("lvm volume group", data["volume_group_name"] or "(none)"),
            ("file storage path", data["file_storage_dir"] or "(none)"),
            ("shared export directory", data.get("shared_export_dir", False)),
            ("hooks timeout", f"{data['hooks_timeout']}s"),
            ("primary ip version", data["primary_ip_version"]),
            ("enabled disk templates", _joined(data["enabled_disk_templates"])),
            ("compression tools", _joined(data["compression_tools"])),
        ]),
        ("Default node parameters", _params(data.get("ndparams") or {})),
        ("Default instance parameters", {"default": _params(data.get("beparams") or {})}),
        ("Backup defaults", _params(backup) if backup else "(none)"),
        ("Versions", [
            ("software", data["software_version"]),
            ("protocol", data["protocol_version"]),
            ("configuration", data["config_version"]),
            ("export", data["export_version"]),
        ]),
    ]


def info(opts: argparse.Namespace) -> int:
    with cli.get_client() as cl:
        data: dict[str, Any] = cl.query_cluster_info()
    for line in cli.format_generic_info(cluster_info_layout(data)):
        print(line)
    return cli.EXIT_SUCCESS


_BACKUP_DEST = "backup_default_"
_BACKUP_OPTS = cli.lazy_model_options("ganeti.objects:BackupDefaults", "backup", _BACKUP_DEST)


def modify(opts: argparse.Namespace) -> int:
    from ganeti import objects, opcodes
    changes = cli.model_values(opts, objects.BackupDefaults, _BACKUP_DEST)
    if not changes:
        raise errors.OpPrereqError("Nothing to change: give at least one option"
                                   " (see 'gnt-cluster modify --help')", errors.ECODE_INVAL)
    cli.submit_opcode(opcodes.OpClusterSetParams.create(backup_defaults=changes), opts)
    return cli.EXIT_SUCCESS


def verify(opts: argparse.Namespace) -> int:
    """Follow the group-verify jobs OpClusterVerify submits (as Ganeti's client does);
    exit 1 unless every one succeeded and found nothing wrong."""
    from ganeti import opcodes
    with cli.get_client() as cl:
        op = opcodes.OpClusterVerify.create(
            group_name=opts.node_group, error_codes=opts.error_codes,
            skip_checks=[constants.VERIFY_NPLUSONE_MEM] if opts.no_nplus1_mem else [])
        result = cli.submit_opcode(op, opts, cl=cl)
        if opts.dry_run:  # the group jobs were not submitted
            return cli.EXIT_SUCCESS
        bad_jobs = bad_results = 0
        for ok, job_id in result["jobs"]:
            if not ok:
                print(f"Cannot submit a verify job: {job_id}", file=sys.stderr)
                bad_jobs += 1
                continue
            try:
                group_results = cli.poll_job(job_id, cl)
            except errors.GenericError as err:
                print(f"Job {job_id}: {cli.format_error(err)}", file=sys.stderr)
                bad_jobs += 1
                continue
            if not (group_results and group_results[0]):
                bad_results += 1
    if bad_jobs:
        print(f"{bad_jobs} job(s) failed while verifying the cluster.")
    return cli.EXIT_SUCCESS if not bad_jobs and not bad_results else cli.EXIT_FAILURE


def master_ping(opts: argparse.Namespace) -> int:
    """Exit 0 when the master daemon answers (for monitoring and scripts)."""
    try:
        with cli.get_client(timeout=opts.timeout) as cl:
            cl.query_cluster_info()
    except errors.GenericError as err:
        print(f"Master daemon does not answer: {errors.format_error(err)}", file=sys.stderr)
        return cli.EXIT_FAILURE
    return cli.EXIT_SUCCESS


def destroy(opts: argparse.Namespace) -> int:
    from ganeti import daemon, opcodes
    if not opts.yes_do_it:
        raise errors.OpPrereqError(
            "Destroying a cluster is irreversible; pass --yes-do-it to confirm",
            errors.ECODE_INVAL)
    cli.submit_opcode(opcodes.OpClusterDestroy.create(), opts)
    paths = pathutils.current()
    for name in (constants.MASTERD, constants.NODED):
        pid = daemon.read_pid(paths.pid_file(name))
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    print("Cluster destroyed; daemons on this node were asked to stop.")
    return cli.EXIT_SUCCESS


_INIT_OPTS = (
    cli.Option(("--master-node",), {"default": None, "help": "Name of the master node"
                                                              " (default: this host's FQDN)"}),
    cli.Option(("--primary-ip",), {"default": None, "help": "IP address of the master node"}),
    cli.Option(("--master-ip",), {"default": None, "help": "Floating master IP address"}),
    cli.Option(("--noded-port",), {"type": int, "default": constants.DEFAULT_NODED_PORT,
                                   "help": "Port of the node daemons"}),
    cli.Option(("--master-port",), {"type": int, "default": None,
                                    "help": "Node daemon port of the master node if it"
                                            " differs from --noded-port"}),
    cli.Option(("--enabled-hypervisors",), {"default": None, "metavar": "HV,...",
                                            "help": "Enabled hypervisors (default: process)"}),
    cli.Option(("--enabled-disk-templates",), {"default": None, "metavar": "DT,...",
                                               "help": "Enabled disk templates"
                                                       " (default: file)"}),
    cli.Option(("--compression-tools",), {"default": None, "metavar": "TOOL,...",
                                          "help": "Allowed export compression tools"}),
    cli.Option(("--shared-export-dir",), {"action": "store_true", "default": False,
                                          "help": "The export directory is shared between"
                                                  " nodes (older exports are then kept)"}),
)

_VERIFY_OPTS = (
    cli.Option(("--error-codes",), {
        "action": "store_true", "default": False,
        "help": "Print each problem in Ganeti's machine-parsable form"
                " ERROR:CODE:TYPE:ITEM:MESSAGE (e.g. ERROR:ENODEVERSION:node:node3:...)"}),
    cli.Option(("--node-group",), {
        "default": None, "metavar": "GROUP",
        "help": "Verify only this node group (default: every group)"}),
    cli.Option(("--no-nplus1-mem",), {
        "action": "store_true", "default": False,
        "help": "Skip the N+1 memory redundancy check (whether each node could take"
                " the instances it is secondary for)"}),
)

COMMANDS: dict[str, cli.Command] = {
    "init": cli.Command(init, (cli.Arg("cluster_name"),), _INIT_OPTS,
                        "Create a new cluster with this node as master"),
    "info": cli.Command(info, (), (), "Show cluster configuration"),
    "modify": cli.Command(modify, (), (_BACKUP_OPTS, *cli.SUBMIT_OPTS),
                          "Change cluster settings (the defaults of backup jobs)"),
    "verify": cli.Command(verify, (), (*_VERIFY_OPTS, *cli.SUBMIT_OPTS),
                          "Check that every node answers with a compatible daemon;"
                          " run the cluster-verify hooks"),
    "master-ping": cli.Command(
        master_ping, (), (cli.Option(("--timeout",), {
            "type": float, "default": 10.0,
            "help": "How long to wait for the master daemon's answer"}),),
        "Exit 0 if the master daemon answers"),
    "destroy": cli.Command(
        destroy, (), (cli.Option(("--yes-do-it",), {"action": "store_true",
                                                     "default": False,
                                                     "help": "Confirm: the cluster cannot"
                                                             " be restored"}),),
        "Destroy a cluster that has only the master node left"),
    "renew-crypto": cluster_crypto.COMMAND,
    **tags.CLUSTER,
}


def main(argv: list[str] | None = None) -> int:
    return cli.generic_main("gnt-cluster", COMMANDS, argv)
