"""move-instance: move instances between two clusters sharing a domain secret.

Drives both masters over LUXI: OpBackupPrepare(remote) on the source,
OpInstanceCreate(remote-import) on the destination, then -- once the
destination has published its signed endpoints in the job log ("remote-import"
entry) -- OpBackupExport(remote) on the source.  Both jobs are followed to
their end with their progress printed; the exit code is 0 only when both
succeeded.  A move accepts downtime: the source instance is shut down for the
copy (``long_sleep``), as disks without snapshots need.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganeti import cli, constants, errors, luxi, opcodes, pathutils

POLL_TIMEOUT = 1.0
# How long to wait for the destination to publish its endpoints
ENDPOINT_TIMEOUT = 300.0

PrintFn = Callable[[str], Any]


def _socket_of(root: str | None, socket_path: str | None, side: str) -> str:
    if socket_path:
        return socket_path
    if root:
        return str(pathutils.Paths.for_root(root).master_socket)
    raise errors.OpPrereqError(f"--{side}-root or --{side}-socket is required",
                               errors.ECODE_INVAL)


@dataclass
class Job:
    """A submitted job followed by long polls; log entries go to ``out``."""

    client: luxi.Client
    job_id: int
    prefix: str
    out: PrintFn
    status: str = constants.OP_STATUS_QUEUED
    serial: int | None = None
    info: list[Any] | None = None
    structured: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in constants.JOBS_FINALIZED

    def poll(self, timeout: float = POLL_TIMEOUT) -> None:
        change = self.client.wait_for_job_change_once(self.job_id, ["status"], self.info,
                                                      self.serial, timeout)
        if change is None:
            raise errors.JobLost(f"{self.prefix} job {self.job_id} not found")
        if change == luxi.JOB_NOTCHANGED:
            return
        self.info, entries = change
        for serial, _ts, log_type, message in entries:
            self.serial = max(self.serial or 0, int(serial))
            if isinstance(message, str):
                self.out(f"[{self.prefix}] {message}")
            else:
                self.structured[log_type] = message
                self.out(f"[{self.prefix}] published {log_type} data")
        assert self.info is not None
        self.status = str(self.info[0])

    def result(self) -> Any:
        """The opcode's result; raises the job's own error when it failed."""
        rows = self.client.query_jobs([self.job_id], ["status", "opstatus", "opresult"])
        if not rows or rows[0] is None:
            raise errors.JobLost(f"{self.prefix} job {self.job_id} not found")
        status, opstatus, opresult = rows[0]
        if status == constants.OP_STATUS_SUCCESS:
            return opresult[0]
        raise luxi.job_failure(self.job_id, status, opstatus, opresult)


def _run_one(client: luxi.Client, op: opcodes.OpCode, prefix: str, out: PrintFn) -> Any:
    job = Job(client, client.submit_job([op]), prefix, out)
    while not job.finished:
        job.poll()
    return job.result()


def import_opcode(data: dict[str, Any], opts: argparse.Namespace, prepared: dict[str, Any],
                  source_name: str) -> opcodes.OpCode:
    """The destination's OpInstanceCreate, from the source instance's data."""
    disks = [{k: v for k, v in (("size", d["size"]), ("mode", d["mode"]),
                                ("name", d.get("name"))) if v is not None}
             for d in data["disks"]]
    # OpInstanceQueryData's NICs are Ganeti's tuples (name, uuid, ip, mac, mode, link, ...)
    nics = [{k: v for k, v in zip(("name", "ip", "mac", "mode", "link"),
                                  (nic[0], nic[2], nic[3], nic[4], nic[5]), strict=True)
             if v not in (None, "")} for nic in data["nics"]]
    start = opts.start if opts.start is not None else data["config_state"] == "up"
    return opcodes.OpInstanceCreate.create(
        instance_name=opts.dest_instance_name or source_name,
        mode=constants.INSTANCE_REMOTE_IMPORT, disk_template=data["disk_template"],
        disks=disks, nics=nics, os_type=data["os"] or None,
        beparams=dict(data["be_instance"]), hvparams=dict(data["hv_instance"]),
        osparams=dict(data["os_instance"]), hypervisor=data["hypervisor"],
        pnode=opts.dest_primary_node, start=start, tags=list(data["tags"]),
        source_handshake=prepared["handshake"], source_x509_ca=prepared["x509_ca"],
        source_instance_name=source_name, source_shutdown_timeout=opts.shutdown_timeout)


class Mover:
    """One instance moved from ``src`` to ``dest`` (two LUXI clients)."""

    def __init__(self, src: luxi.Client, dest: luxi.Client, opts: argparse.Namespace,
                 out: PrintFn = print) -> None:
        self.src, self.dest, self.opts, self.out = src, dest, opts, out

    def move(self, name: str) -> bool:
        opts, out = self.opts, self.out
        query = opcodes.OpInstanceQueryData.create(instances=[name], static=True)
        data = _run_one(self.src, query, "source", out).get(name)
        if data is None:
            raise errors.OpPrereqError(f"Instance {name} not found in the source cluster",
                                       errors.ECODE_NOENT)
        out(f"Preparing the export of {name} on the source cluster")
        prepared = _run_one(self.src, opcodes.OpBackupPrepare.create(
            instance_name=name, mode=constants.EXPORT_MODE_REMOTE), "source", out)
        create = import_opcode(data, opts, prepared, name)
        dest_job = Job(self.dest, self.dest.submit_job([create]), "destination", out)
        out(f"Destination job {dest_job.job_id}: import of {name} as"
            f" {create.instance_name}")  # type: ignore[attr-defined]
        endpoints = self._wait_for_endpoints(dest_job)
        if endpoints is None:
            return self._report(None, dest_job)
        export = opcodes.OpBackupExport.create(
            instance_name=name, mode=constants.EXPORT_MODE_REMOTE,
            target_node=endpoints["disks"], x509_key_name=prepared["x509_key_name"],
            destination_x509_ca=endpoints["x509_ca"], shutdown=True, long_sleep=True,
            shutdown_timeout=opts.shutdown_timeout,
            remove_instance=not opts.keep_source_instance, compress=opts.compress)
        src_job = Job(self.src, self.src.submit_job([export]), "source", out)
        out(f"Source job {src_job.job_id}: export of {name}")
        while not (src_job.finished and dest_job.finished):
            for job in (src_job, dest_job):
                if not job.finished:
                    job.poll()
            if src_job.finished and src_job.status != constants.OP_STATUS_SUCCESS \
                    and not dest_job.finished and not opts.wait_on_failure:
                out(f"Destination job {dest_job.job_id} still waits for data; it gives up"
                    " on its own after its connect timeout and removes what it created")
                break
        return self._report(src_job, dest_job)

    def _wait_for_endpoints(self, job: Job) -> dict[str, Any] | None:
        deadline = time.monotonic() + ENDPOINT_TIMEOUT
        while constants.ELOG_REMOTE_IMPORT not in job.structured:
            if job.finished:
                return None
            if time.monotonic() > deadline:
                self.out(f"Destination job {job.job_id} published no endpoints within"
                         f" {ENDPOINT_TIMEOUT:g}s")
                return None
            job.poll()
        entry = job.structured[constants.ELOG_REMOTE_IMPORT]
        if not isinstance(entry, dict) or "disks" not in entry or "x509_ca" not in entry:
            raise errors.OpExecError("Destination published an invalid"
                                     f" {constants.ELOG_REMOTE_IMPORT} entry: {entry!r:.200}")
        return entry

    def _report(self, src_job: Job | None, dest_job: Job) -> bool:
        ok = True
        for label, job in (("Export (source)", src_job), ("Import (destination)", dest_job)):
            if job is None:
                self.out(f"{label}: not started")
                ok = False
                continue
            if not job.finished:
                self.out(f"{label}: job {job.job_id} still running")
                ok = False
                continue
            try:
                job.result()
            except errors.GenericError as err:
                self.out(f"{label}: job {job.job_id} FAILED: {errors.format_error(err)}")
                ok = False
            else:
                self.out(f"{label}: job {job.job_id} succeeded")
        return ok


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="move-instance", description=__doc__)
    parser.add_argument("--src-root", help="GANETI_ROOT of the source master")
    parser.add_argument("--src-socket", help="LUXI socket of the source master")
    parser.add_argument("--dest-root", help="GANETI_ROOT of the destination master")
    parser.add_argument("--dest-socket", help="LUXI socket of the destination master")
    parser.add_argument("--dest-instance-name",
                        help="Name in the destination cluster (one instance only)")
    parser.add_argument("-n", "--dest-primary-node", help="Primary node at the destination")
    parser.add_argument("--keep-source-instance", action="store_true", default=False,
                        help="Keep the source instance (default: remove it after a"
                             " successful move)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--start", dest="start", action="store_true", default=None,
                       help="Start the moved instance (default: if the source was up)")
    start.add_argument("--no-start", dest="start", action="store_false")
    parser.add_argument("--compress", default=constants.IEC_NONE,
                        help="Stream compression: none, zstd or gzip")
    parser.add_argument("--shutdown-timeout", type=int,
                        default=constants.DEFAULT_SHUTDOWN_TIMEOUT,
                        help="Seconds allowed for the source instance's shutdown")
    parser.add_argument("--wait-on-failure", action="store_true", default=False,
                        help="After a failed export, wait until the destination job ends")
    parser.add_argument("instances", nargs="+", metavar="INSTANCE")
    return parser


def main(argv: Sequence[str] | None = None, out: PrintFn = print) -> int:
    opts = build_parser().parse_args(argv)
    try:
        if opts.dest_instance_name and len(opts.instances) > 1:
            raise errors.OpPrereqError("--dest-instance-name needs exactly one instance",
                                       errors.ECODE_INVAL)
        src_socket = _socket_of(opts.src_root, opts.src_socket, "src")
        dest_socket = _socket_of(opts.dest_root, opts.dest_socket, "dest")
        if Path(src_socket).resolve() == Path(dest_socket).resolve():
            raise errors.OpPrereqError("Source and destination are the same cluster",
                                       errors.ECODE_INVAL)
        failed = []
        with luxi.Client(src_socket) as src, luxi.Client(dest_socket) as dest:
            for name in opts.instances:
                if not Mover(src, dest, opts, out).move(name):
                    failed.append(name)
    except errors.GenericError as err:
        print(errors.format_error(err), file=sys.stderr)
        return cli.EXIT_FAILURE
    if failed:
        print(f"Moving failed for: {', '.join(failed)}", file=sys.stderr)
        return cli.EXIT_FAILURE
    out(f"Moved {len(opts.instances)} instance(s)")
    return cli.EXIT_SUCCESS
