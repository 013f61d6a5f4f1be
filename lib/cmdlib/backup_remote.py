"""Remote (inter-cluster) export and import (spec section 10).

The existing LUs call in here at small branches: LUBackupPrepare (create the
source key), LUBackupExport in mode "remote" (verify every signed piece, then
stream to the other cluster) and LUInstanceCreate in mode "remote-import"
(verify the source, listen per disk, publish the signed endpoints in the job
log).  The signing formats are in :mod:`ganeti.backup.remote`.
"""

from __future__ import annotations

import secrets
from typing import Any

from ganeti import constants, errors, locking
from ganeti.backup import remote
from ganeti.cmdlib.base import LOCKS_REPLACE, FeedbackFn, LogicalUnit
from ganeti.transfer.master.oneside import OneSide
from ganeti.transfer.master.policy import TransferLimits
from ganeti.transfer.master.policy import resolve as resolve_limits

MIB = 1024 * 1024
# How long a destination waits for the source to connect, plus the source's
# shutdown timeout (the source may stop the instance first)
CONNECT_TIMEOUT = 180


def _required(value: Any, field: str, why: str) -> None:
    if not value:
        raise errors.OpPrereqError(f"{field} is required {why}", errors.ECODE_INVAL)


# --- source: prepare --------------------------------------------------------------


def prepare(lu: LogicalUnit) -> dict[str, Any]:
    """Key and certificate on the primary node; everything signed for the destination."""
    op: Any = lu.op
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


# --- source: export ---------------------------------------------------------------


def check_export_arguments(op: Any) -> None:
    why = "in remote mode (from OpBackupPrepare and the destination's remote-import entry)"
    _required(op.x509_key_name, "x509_key_name", why)
    _required(op.destination_x509_ca, "destination_x509_ca", why)
    if not isinstance(op.target_node, list):
        raise errors.OpPrereqError(
            "target_node: in remote mode it must be a list of per-disk destinations"
            " [host, port, magic, hmac, salt]", errors.ECODE_INVAL)
    if op.long_sleep and not op.shutdown:
        raise errors.OpPrereqError(
            "long_sleep keeps the instance down during the copy; it needs shutdown",
            errors.ECODE_INVAL)


def expand_export_names(lu: LogicalUnit) -> None:
    """The instance and its primary node; there is no target node in this cluster."""
    lu.expand_and_lock_instance()
    assert lu.needed_locks is not None
    lu.needed_locks[locking.LEVEL_NODE] = []
    lu.recalculate_locks[locking.LEVEL_NODE] = LOCKS_REPLACE
    lu.share_locks[locking.LEVEL_NODE] = True


def check_export_prereq(lu: Any) -> None:
    """Verify key name, destination certificate and every disk's endpoint."""
    op = lu.op
    secret = remote.read_domain_secret(lu.context.paths)
    lu.remote_key_name = remote.check_key_name(secret, op.x509_key_name)
    lu.remote_ca_pem, _ = remote.load_signed_certificate(
        secret, op.destination_x509_ca, "destination_x509_ca")
    disks = lu.instance.disks
    if len(op.target_node) != len(disks):
        raise errors.OpPrereqError(
            f"target_node: {len(op.target_node)} destination(s) given, instance"
            f" {lu.instance.name} has {len(disks)} disk(s)", errors.ECODE_INVAL)
    lu.remote_disks = [remote.check_disk_info(secret, idx, info)
                       for idx, info in enumerate(op.target_node)]


def export_exec(lu: Any, feedback_fn: FeedbackFn) -> tuple[bool, list[bool]]:
    from ganeti.cmdlib.backup import failure_text

    lu.remote_errors = []
    finalize_ok, disks_ok = lu._shutdown_copy_restart(feedback_fn)
    if not (finalize_ok and all(disks_ok)):
        reasons = "".join(f"; {reason}" for reason in lu.remote_errors)
        raise errors.OpExecError(failure_text(finalize_ok, disks_ok) + reasons)
    if lu.op.remove_instance:
        lu._remove_instance(feedback_fn)
    return finalize_ok, disks_ok


def copy_to_remote(lu: Any, snapshots: dict[int, list[Any]],
                   feedback_fn: FeedbackFn) -> tuple[bool, list[bool]]:
    """Stream every disk to the other cluster with the per-transfer certificates."""
    inst, primary = lu.instance, lu.primary
    side = OneSide(lu.rpc, feedback_fn, {"x509_key_name": lu.remote_key_name,
                                         "x509_peer_ca": lu.remote_ca_pem}, "sent",
                   lu.transfer_limits([primary], feedback_fn))
    try:
        for idx, disk in enumerate(inst.disks):
            host, port, magic = lu.remote_disks[idx]
            feedback_fn(f"Sending disk/{idx} to {host}:{port}")
            side.start_send(f"disk/{idx}", primary.name,
                            {"kind": "disk", "dev_type": disk.dev_type,
                             "logical_id": snapshots.get(idx, disk.logical_id)},
                            host, port, magic, lu.op.compress)
        results = side.wait(
            on_done=lambda idx, _res: lu._remove_snapshot(idx, snapshots, feedback_fn))
    finally:
        side.cleanup()
    # each failed disk was reported once already, by OneSide ("disk/0 failed: ...")
    lu.remote_errors.extend(str(r.error) for r in results if not r.success)
    # nothing to finalize here: the destination owns the data now
    return True, [r.success for r in results]


# --- destination: import ----------------------------------------------------------


def import_limits(lu: Any, nodes: list[Any], feedback_fn: FeedbackFn) -> TransferLimits:
    """Imports: the nodes' limits and the cluster's I/O priority (no export limit)."""
    defaults = lu.cfg.get_cluster_info().backup_defaults
    limits = resolve_limits(0, defaults.ionice_class, defaults.ionice_level, defaults,
                            nodes)
    if any(limits.node_bwlimits.values()) or limits.io_priority is not None:
        feedback_fn(limits.describe(len(lu.instance.disks), [n.name for n in nodes]))
    return limits


def check_import_arguments(op: Any) -> None:
    why = "in remote-import mode (from the source's OpBackupPrepare)"
    _required(op.source_handshake, "source_handshake", why)
    _required(op.source_x509_ca, "source_x509_ca", why)
    _required(op.source_instance_name, "source_instance_name", why)
    if op.disk_template != constants.DT_DISKLESS and not op.disks:
        raise errors.OpPrereqError(
            "disks: a remote import needs the disk sizes of the source instance",
            errors.ECODE_INVAL)
    if op.src_node or op.src_path:
        raise errors.OpPrereqError("src_node/src_path: not used in remote-import mode",
                                   errors.ECODE_INVAL)


class RemoteImport:
    """Verified source data (CheckPrereq) and the receiving end of the copy (Exec)."""

    def __init__(self, lu: LogicalUnit) -> None:
        op: Any = lu.op
        self.secret = remote.read_domain_secret(lu.context.paths)
        remote.check_handshake(self.secret, op.source_handshake)
        self.source_ca_pem, _ = remote.load_signed_certificate(
            self.secret, op.source_x509_ca, "source_x509_ca")

    def copy_into(self, lu: Any, feedback_fn: FeedbackFn) -> None:
        """Listen per disk, publish the signed endpoints, wait for the source's data."""
        inst, pnode, op = lu.instance, lu.pnode, lu.op
        res = lu.rpc.call_x509_cert_create(pnode.name, remote.CERT_VALIDITY)
        res.raise_on_failure(f"Cannot create the transfer certificate on {pnode.name}")
        key_name, cert_pem = res.payload
        try:
            side = OneSide(lu.rpc, feedback_fn, {
                "x509_key_name": key_name, "x509_peer_ca": self.source_ca_pem,
                "listen_timeout": CONNECT_TIMEOUT + op.source_shutdown_timeout}, "received",
                import_limits(lu, [pnode], feedback_fn))
            try:
                results = self._receive(lu, side, cert_pem, feedback_fn)
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
        feedback_fn(f"All {len(inst.disks)} disk(s) received and verified")

    def _receive(self, lu: Any, side: OneSide, cert_pem: str,
                 feedback_fn: FeedbackFn) -> list[Any]:
        inst, pnode = lu.instance, lu.pnode
        endpoints = []
        for idx, disk in enumerate(inst.disks):
            magic = secrets.token_hex(16)
            host, port = side.start_receive(
                f"disk/{idx}", pnode.name,
                {"kind": "disk", "dev_type": disk.dev_type, "logical_id": disk.logical_id},
                magic, constants.IEC_NONE, bind=pnode.primary_ip)
            endpoints.append(remote.sign_disk_info(self.secret, idx, host, port, magic))
        lu.log_structured(constants.ELOG_REMOTE_IMPORT, {
            "disks": endpoints, "x509_ca": remote.sign_certificate(self.secret, cert_pem)})
        feedback_fn(f"Listening for {len(endpoints)} disk(s) of"
                    f" {lu.op.source_instance_name} on {pnode.name}")
        return side.wait()
