"""Remote (inter-cluster) export and import (doc/remote-export.md).

The source side is the ``remote`` export target (:class:`RemoteExport`:
OpBackupPrepare creates the source key; OpBackupExport verifies every signed
piece, then streams to the other cluster); the destination side is the
remote-import mode of LUInstanceCreate (verify the source, listen per disk,
publish the signed endpoints in the job log).  The signing formats are in
:mod:`ganeti.backup.remote`.
"""

from __future__ import annotations

import secrets
from typing import Any, TypeVar

from ganeti import constants, errors, opcodes
from ganeti.backup import remote
from ganeti.cmdlib.base import FeedbackFn, LogicalUnit
from ganeti.cmdlib.export_target import DiskDone, DiskSources, ExportTarget
from ganeti.cmdlib.import_mode import CreateSpecs, ImportMode
from ganeti.objects import Instance, Node
from ganeti.transfer.master.coordinator import TransferResult
from ganeti.transfer.master.oneside import OneSide

T = TypeVar("T")
# How long a destination waits for the source to connect, plus the source's
# shutdown timeout (the source may stop the instance first)
CONNECT_TIMEOUT = 180


def _required(value: T | None, field: str, why: str) -> T:
    if not value:
        raise errors.OpPrereqError(f"{field} is required {why}", errors.ECODE_INVAL)
    return value


# --- source: prepare and export -----------------------------------------------------


class RemoteExport(ExportTarget[opcodes.RemoteTarget]):
    """Stream every disk to the other cluster; its destination owns the data then."""

    TARGET = opcodes.RemoteTarget

    @staticmethod
    def prepare(lu: LogicalUnit, op: opcodes.OpBackupPrepare) -> dict[str, Any]:
        """Key and certificate on the primary node; everything signed for the destination."""
        inst = lu.cfg.get_instance_info_by_name(op.instance_name)
        assert inst is not None
        node = lu.cfg.get_node_info(inst.primary_node)
        assert node is not None
        if node.offline:
            raise errors.OpPrereqError(f"Primary node {node.name} of instance {inst.name} is"
                                       " offline", errors.ECODE_STATE)
        secret = remote.read_domain_secret(lu.context.paths)
        res = lu.rpc.call_x509_cert_create(node.name, remote.CERT_VALIDITY)
        res.raise_on_failure(f"Cannot create the transfer certificate on {node.name}")
        name, cert_pem = res.payload
        return {"handshake": remote.compute_handshake(secret),
                "x509_key_name": remote.sign_key_name(secret, name),
                "x509_ca": remote.sign_certificate(secret, cert_pem)}

    def check_arguments(self) -> None:
        if self.op.note:
            raise errors.OpPrereqError("Field 'note': notes are kept with local exports"
                                       " only", errors.ECODE_INVAL)
        why = ("in remote mode (from OpBackupPrepare and the destination's remote-import"
               " entry)")
        self.signed_key_name = _required(self.target.x509_key_name, "x509_key_name", why)
        self.signed_ca = _required(self.target.destination_x509_ca, "destination_x509_ca",
                                   why)

    def check_prereq(self) -> None:
        """Verify key name, destination certificate and every disk's endpoint."""
        target = self.target
        secret = remote.read_domain_secret(self.lu.context.paths)
        self.key_name = remote.check_key_name(secret, self.signed_key_name)
        self.ca_pem, _ = remote.load_signed_certificate(secret, self.signed_ca,
                                                        "destination_x509_ca")
        disks = self.instance.disks
        if len(target.disks) != len(disks):
            raise errors.OpPrereqError(
                f"target_node: {len(target.disks)} destination(s) given, instance"
                f" {self.instance.name} has {len(disks)} disk(s)", errors.ECODE_INVAL)
        self.endpoints = [remote.check_disk_info(secret, idx, info)
                          for idx, info in enumerate(target.disks)]
        self.errors: list[str] = []

    def copy(self, sources: DiskSources, disk_done: DiskDone,
             feedback_fn: FeedbackFn) -> tuple[bool, list[bool]]:
        """Stream every disk to the other cluster with the per-transfer certificates."""
        inst, primary = self.instance, self.primary
        side = OneSide(self.lu.rpc, feedback_fn, {"x509_key_name": self.key_name,
                                                  "x509_peer_ca": self.ca_pem}, "sent",
                       self.limits([primary], feedback_fn))
        try:
            for idx, disk in enumerate(inst.disks):
                host, port, magic = self.endpoints[idx]
                feedback_fn(f"Sending disk/{idx} to {host}:{port}")
                side.start_send(f"disk/{idx}", primary.name,
                                {"kind": "disk", "dev_type": disk.dev_type,
                                 "logical_id": sources[idx]},
                                host, port, magic, self.op.compress)
            results = side.wait(on_done=lambda idx, _res: disk_done(idx))
        finally:
            side.cleanup()
        self.results = results
        # each failed disk was reported once already, by OneSide ("disk/0 failed: ...")
        self.errors.extend(str(r.error) for r in results if not r.success)
        # nothing to finalize here: the destination owns the data now
        return True, [r.success for r in results]

    def failure_text(self, finalize_ok: bool, disks_ok: list[bool]) -> str:
        reasons = "".join(f"; {reason}" for reason in self.errors)
        return super().failure_text(finalize_ok, disks_ok) + reasons


# --- destination: import ----------------------------------------------------------


class RemoteImport(ImportMode):
    """Mode "remote-import": verify the source, listen per disk, receive its data."""

    def check_arguments(self) -> None:
        op = self.op
        why = "in remote-import mode (from the source's OpBackupPrepare)"
        self.handshake = _required(op.source_handshake, "source_handshake", why)
        self.signed_ca = _required(op.source_x509_ca, "source_x509_ca", why)
        _required(op.source_instance_name, "source_instance_name", why)
        if op.disk_template != constants.DT_DISKLESS and not op.disks:
            raise errors.OpPrereqError(
                "disks: a remote import needs the disk sizes of the source instance",
                errors.ECODE_INVAL)
        if op.src_node or op.src_path:
            raise errors.OpPrereqError("src_node/src_path: not used in remote-import mode",
                                       errors.ECODE_INVAL)

    def check_prereq(self, specs: CreateSpecs) -> None:
        """The handshake and the signed source certificate; the specs are the opcode's."""
        self.secret = remote.read_domain_secret(self.lu.context.paths)
        remote.check_handshake(self.secret, self.handshake)
        self.source_ca_pem, _ = remote.load_signed_certificate(
            self.secret, self.signed_ca, "source_x509_ca")

    def fill_disks(self, instance: Instance, pnode: Node, feedback_fn: FeedbackFn) -> None:
        """Listen per disk, publish the signed endpoints, wait for the source's data."""
        lu, op = self.lu, self.op
        res = lu.rpc.call_x509_cert_create(pnode.name, remote.CERT_VALIDITY)
        res.raise_on_failure(f"Cannot create the transfer certificate on {pnode.name}")
        key_name, cert_pem = res.payload
        try:
            side = OneSide(lu.rpc, feedback_fn, {
                "x509_key_name": key_name, "x509_peer_ca": self.source_ca_pem,
                "listen_timeout": CONNECT_TIMEOUT + op.source_shutdown_timeout}, "received",
                self.limits(instance, [pnode], feedback_fn))
            try:
                results = self._receive(side, instance, pnode, cert_pem, feedback_fn)
            finally:
                side.cleanup()
        finally:
            rm = lu.rpc.call_x509_cert_remove(pnode.name, key_name)
            if rm.fail_msg:
                lu.LogWarning("Could not remove the transfer certificate %s on %s: %s",
                              key_name, pnode.name, rm.fail_msg)
        problems = [str(r.error) for r in results if not r.success]
        if problems:
            raise errors.OpExecError(f"Remote import of {op.source_instance_name} failed: "
                                     + "; ".join(problems))
        feedback_fn(f"All {len(instance.disks)} disk(s) received and verified")

    def _receive(self, side: OneSide, instance: Instance, pnode: Node, cert_pem: str,
                 feedback_fn: FeedbackFn) -> list[TransferResult]:
        endpoints = []
        for idx, disk in enumerate(instance.disks):
            magic = secrets.token_hex(16)
            host, port = side.start_receive(
                f"disk/{idx}", pnode.name,
                {"kind": "disk", "dev_type": disk.dev_type, "logical_id": disk.logical_id},
                magic, constants.IEC_NONE, bind=pnode.primary_ip)
            endpoints.append(remote.sign_disk_info(self.secret, idx, host, port, magic))
        self.lu.log_structured(constants.ELOG_REMOTE_IMPORT, {
            "disks": endpoints, "x509_ca": remote.sign_certificate(self.secret, cert_pem)})
        feedback_fn(f"Listening for {len(endpoints)} disk(s) of"
                    f" {self.op.source_instance_name} on {pnode.name}")
        return side.wait()
