"""Backup logical units: prepare, export, query and remove exports.

Export (doc/design.md, "Request flow") locks the instance exclusively and only
its primary node and the target's nodes, shared: exports of different
instances run in parallel even when they share nodes. Older exports elsewhere
are found through the export index (``ganeti.backup.index``), not by locking
every node. Where the export goes is the job of its target strategy
(``EXPORT_TARGETS``, one per mode; see ``ganeti.cmdlib.export_target``); this
module keeps what every export shares.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ganeti import constants, errors, limits, locking, opcodes
from ganeti.backup.export_stats import ExportStats
from ganeti.backup.index import ExportIndex
from ganeti.cmdlib import instance_utils as iu
from ganeti.cmdlib.backup_common import (
    MIB,
    online_node_names,
    protected_newest,
    query_exports,
    unprotect_hint,
)
from ganeti.cmdlib.backup_remote import RemoteExport
from ganeti.cmdlib.base import LOCKS_REPLACE, FeedbackFn, LogicalUnit, NoHooksLU
from ganeti.cmdlib.export_local import LocalExport
from ganeti.cmdlib.export_target import ExportTarget
from ganeti.objects import Instance, Node

# OpBackupExport/OpBackupPrepare mode -> its target strategy
EXPORT_TARGETS: dict[str, type[ExportTarget[Any]]] = {
    constants.EXPORT_MODE_LOCAL: LocalExport,
    constants.EXPORT_MODE_REMOTE: RemoteExport,
}


class LUBackupPrepare(NoHooksLU):
    """Local mode needs no preparation; remote mode creates the source's transfer key."""

    REQ_BGL = False
    op: opcodes.OpBackupPrepare

    def ExpandNames(self) -> None:
        self.expand_and_lock_instance(shared=True)

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        return EXPORT_TARGETS[self.op.mode].prepare(self, self.op)


class LUBackupExport(LogicalUnit):
    HPATH = "instance-export"
    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False
    op: opcodes.OpBackupExport

    # --- arguments and locks -----------------------------------------------------

    def CheckArguments(self) -> None:
        op = self.op
        self.target = EXPORT_TARGETS[op.mode](self, op)
        self.target.check_arguments()
        if op.long_sleep and not op.shutdown:
            raise errors.OpPrereqError(
                "long_sleep keeps the instance down during the copy; it needs shutdown",
                errors.ECODE_INVAL)

    def ExpandNames(self) -> None:
        self.expand_and_lock_instance()
        self.target.expand_names()
        assert self.needed_locks is not None
        self.needed_locks[locking.LEVEL_NODE] = []
        self.recalculate_locks[locking.LEVEL_NODE] = LOCKS_REPLACE
        # shared: node-level changes (offline, remove) wait, other exports do not
        self.share_locks[locking.LEVEL_NODE] = True

    def DeclareLocks(self, level: int) -> None:
        if level == locking.LEVEL_NODE:
            self.lock_instances_nodes(primary_only=True)
            extra = self.target.node_locks()
            if extra:
                assert self.needed_locks is not None
                self.needed_locks[level] = sorted({*self.needed_locks[level], *extra})

    # --- prerequisites ---------------------------------------------------------------

    def CheckPrereq(self) -> None:
        try:
            self._check_prereq()
        except errors.OpPrereqError as err:
            self._record_failure(err)  # no backup either: the alert must know
            raise

    def _check_prereq(self) -> None:
        op = self.op
        inst = self.cfg.get_instance_info_by_name(op.instance_name)
        assert inst is not None
        self.instance: Instance = inst
        primary = self.cfg.get_node_info(inst.primary_node)
        assert primary is not None
        self.primary: Node = primary
        if self.primary.offline:
            raise errors.OpPrereqError(f"Primary node {self.primary.name} of instance"
                                       f" {inst.name} is offline", errors.ECODE_STATE)
        # an export that import would refuse is refused now, before anything changes
        unrestorable = limits.instance_problems(
            inst, self.cfg.get_cluster_info().fill_beparams(inst))
        if unrestorable:
            raise errors.OpPrereqError(
                f"Instance {inst.name} could not be imported again, so it is not exported:"
                f" {'; '.join(unrestorable)}", errors.ECODE_INVAL)
        self.target.instance, self.target.primary = inst, primary
        self.target.check_prereq()
        cluster = self.cfg.get_cluster_info()
        if op.compress not in cluster.compression_tools:
            raise errors.OpPrereqError(
                f"Compression tool '{op.compress}' is not allowed in this cluster (allowed:"
                f" {', '.join(cluster.compression_tools)})", errors.ECODE_INVAL)
        self.was_running = iu.instance_running(self, inst)
        if op.remove_instance and self.was_running and not op.shutdown:
            raise errors.OpPrereqError(
                f"Instance {inst.name} is running: it cannot be removed after the export"
                " without shutting it down", errors.ECODE_STATE)
        self.use_snapshots = False
        # a stopped instance's disks are snapshotted too where the snapshots can
        # stay on the primary as the next export's base
        if (self.was_running or self.target.KEEPS_BASE) and not op.remove_instance \
                and inst.disks:
            unsupported = [str(idx) for idx in iu.disks_without_snapshots(self, inst)]
            self.use_snapshots = not unsupported
        else:
            unsupported = []
        self.keep_bases = self.use_snapshots and self.target.KEEPS_BASE
        if self.was_running and unsupported:
            if not op.shutdown:
                raise errors.OpPrereqError(
                    f"Instance {inst.name} is running and disk(s) {', '.join(unsupported)}"
                    " cannot be snapshotted on this storage; a live export (no shutdown) is"
                    " impossible", errors.ECODE_STATE)
            if not op.long_sleep:
                raise errors.OpPrereqError(
                    f"Disk(s) {', '.join(unsupported)} of instance {inst.name} cannot be"
                    " snapshotted, so the instance would stay down for the whole copy;"
                    f" confirm this with {errors.field_ref('long_sleep')}", errors.ECODE_STATE)

    # --- hooks -----------------------------------------------------------------------

    def BuildHooksEnv(self) -> dict[str, Any]:
        env = {
            "EXPORT_MODE": self.op.mode,
            "EXPORT_NODE": self.op.target_node,
            "EXPORT_DO_SHUTDOWN": self.op.shutdown,
            "SHUTDOWN_TIMEOUT": self.op.shutdown_timeout,
            "REMOVE_INSTANCE": str(bool(self.op.remove_instance)),
        }
        inst = self.cfg.get_instance_info_by_name(self.op.instance_name) or self.instance
        return {**env, **iu.instance_hook_env(self.cfg, inst, None)}

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        nodes = [self.cfg.get_master_node_name(), self.primary.name,
                 *self.target.hook_nodes()]
        unique = list(dict.fromkeys(nodes))
        return unique, unique

    # --- execution -------------------------------------------------------------------

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        target = self.target
        started = time.monotonic()
        try:
            target.begin()
            try:
                finalize_ok, disks_ok = self._shutdown_copy_restart(feedback_fn)
            except BaseException:
                target.abort()
                raise
            if not (finalize_ok and all(disks_ok)):
                target.abort()
                raise errors.OpExecError(target.failure_text(finalize_ok, disks_ok))
            target.commit(feedback_fn)
        except BaseException as err:
            self._record_failure(err)
            raise
        # committed: later steps (removal, prune) no longer decide whether it is a backup
        self._record_success(time.monotonic() - started)
        if self.op.remove_instance:
            self._remove_instance(feedback_fn)
        target.prune(feedback_fn)
        return finalize_ok, disks_ok

    # --- export statistics (ganeti.backup.export_stats; doc/metrics.md) -------------

    def _record_stats(self, record: Callable[[ExportStats, Instance], Any]) -> None:
        """Record the outcome; a store that cannot be written never fails the export."""
        inst = self.cfg.get_instance_info_by_name(self.op.instance_name)
        if inst is None or self.op.dry_run:
            return
        try:
            record(ExportStats.for_paths(self.context.paths), inst)
        except (OSError, ValueError) as err:
            self.LogWarning("Could not record the export statistics of %s: %s", inst.name,
                            err)

    def _record_success(self, duration: float) -> None:
        results = self.target.results
        self._record_stats(lambda stats, inst: stats.record_success(
            inst.uuid, inst.name, finished=time.time(), duration=duration,
            wire_bytes=sum(r.wire_bytes for r in results),
            data_bytes=sum(r.bytes for r in results),
            disk_bytes=sum(d.size for d in inst.disks) * MIB,
            target=self.op.target_node if isinstance(self.op.target_node, str)
            else self.op.mode, known=self.cfg.get_instance_list))

    def _record_failure(self, err: BaseException) -> None:
        self._record_stats(lambda stats, inst: stats.record_failure(
            inst.uuid, inst.name, when=time.time(),
            error=str(err) or type(err).__name__, known=self.cfg.get_instance_list))

    def _shutdown_copy_restart(self, feedback_fn: FeedbackFn) -> tuple[bool, list[bool]]:
        inst, op = self.instance, self.op
        stopped = False
        if op.shutdown and self.was_running:
            feedback_fn(f"Shutting down instance {inst.name}")
            msg = iu.shutdown_instance(self, inst, op.shutdown_timeout)
            if msg:
                raise errors.OpExecError(msg)
            stopped = True
        snapshots: dict[int, list[Any]] = {}
        exported = False
        try:
            if self.use_snapshots:
                snapshots = (self._snapshot_disks if stopped or not self.was_running
                             else self._snapshot_disks_live)(feedback_fn)
                if stopped:
                    feedback_fn(f"Starting instance {inst.name} again; copying from"
                                " snapshots")
                    iu.start_instance(self, inst)
                    stopped = False
            sources = [snapshots.get(idx, disk.logical_id)
                       for idx, disk in enumerate(inst.disks)]
            finalize_ok, disks_ok = self.target.copy(
                sources, lambda idx: None if self.keep_bases
                else self._remove_snapshot(idx, snapshots, feedback_fn), feedback_fn)
            exported = finalize_ok and all(disks_ok)
            if exported and self.keep_bases:
                self._keep_bases(snapshots)
        finally:
            for idx in sorted(snapshots):
                self._remove_snapshot(idx, snapshots, feedback_fn)
            # an instance about to be removed stays down, unless the export failed
            if stopped and not (op.remove_instance and exported):
                feedback_fn(f"Starting instance {inst.name} again")
                iu.start_instance(self, inst)
        if self.target.snapshot_info:
            self._check_still_running()
        return finalize_ok, disks_ok

    def _check_still_running(self) -> None:
        """Say so if the live instance died during the copy (only a definite answer).

        The export holds the disks as of the pause, from before it died: a good
        backup. The watcher starts the instance again (its admin state is up).
        """
        inst = self.instance
        res = self.rpc.call_instance_info(self.primary.name, inst.name, inst.hypervisor)
        if not res.fail_msg and res.payload is None:
            self.LogWarning("Instance %s stopped running during the export; the export"
                            " holds its disks as they were at the snapshot", inst.name)

    def _snapshot_disks(self, feedback_fn: FeedbackFn) -> dict[int, list[Any]]:
        inst = self.instance
        stamp = time.strftime("export-%Y%m%d%H%M%S")
        snapshots: dict[int, list[Any]] = {}
        try:
            for idx, disk in enumerate(inst.disks):
                res = self.rpc.call_blockdev_snapshot(self.primary.name, disk.dev_type,
                                                      disk.logical_id, stamp)
                res.raise_on_failure(f"Could not snapshot disk/{idx} of {inst.name}")
                snapshots[idx] = list(res.payload)
        except BaseException:
            for idx in sorted(snapshots):
                self._remove_snapshot(idx, snapshots, feedback_fn)
            raise
        feedback_fn(f"Snapshotted {len(snapshots)} disk(s) of {inst.name}")
        return snapshots

    def _snapshot_disks_live(self, feedback_fn: FeedbackFn) -> dict[int, list[Any]]:
        """All disks of the running instance in one pause of its guest (one RPC).

        The node resumes the guest and removes what it made if anything fails.
        """
        inst = self.instance
        stamp = time.strftime("export-%Y%m%d%H%M%S")
        res = self.rpc.call_instance_snapshot_disks(
            self.primary.name, iu.filled_instance(self.cfg, inst), stamp)
        res.raise_on_failure(f"Could not snapshot the disks of {inst.name} live")
        live = res.payload
        snapshots = {idx: list(snap) for idx, snap in enumerate(live["snapshots"])}
        self.target.snapshot_info = {
            "consistency": live["level"], "pause_ms": f"{live['pause_ms']:.3f}",
            **{key: f"{value:.3f}" for key, value in (("frozen_ms", live["frozen_ms"]),
                                                      ("stopped_ms", live["stopped_ms"]))
               if value is not None}}
        for note in live["notes"]:
            feedback_fn(f"Live snapshot of {inst.name}: {note}")
        feedback_fn(f"Snapshotted {len(snapshots)} disk(s) of {inst.name}")
        feedback_fn(f"guest paused {live['pause_ms']:.0f} ms for the snapshot of"
                    f" {len(snapshots)} disk{'s' if len(snapshots) != 1 else ''}"
                    f" ({live['level']})")
        return snapshots

    def _keep_bases(self, snapshots: dict[int, list[Any]]) -> None:
        """The exported snapshots replace the disks' export bases on the primary.

        Only after the export is final, so a base always matches a complete
        export on the target; one that cannot be kept is removed as usual.
        """
        inst, target = self.instance, self.target
        for idx in sorted(snapshots):
            disk = inst.disks[idx]
            checksum = target.checksums[idx] if idx < len(target.checksums) else None
            if checksum is None:
                continue
            record = {"checksum": checksum, "target": self.op.target_node,
                      "instance": inst.name, "generation": target.generation,
                      "size": disk.size * MIB, "created": int(time.time())}
            res = self.rpc.call_blockdev_keep_export_base(
                self.primary.name, disk.dev_type, disk.logical_id, snapshots[idx], record)
            if res.fail_msg:
                self.LogWarning("Could not keep the snapshot of disk/%d as the next export's"
                                " base on %s: %s", idx, self.primary.name, res.fail_msg)
            elif res.payload:
                del snapshots[idx]

    def _remove_snapshot(self, idx: int, snapshots: dict[int, list[Any]],
                         feedback_fn: FeedbackFn) -> None:
        snap = snapshots.pop(idx, None)
        if snap is None:
            return
        disk = self.instance.disks[idx]
        res = self.rpc.call_blockdev_remove_snapshot(self.primary.name, disk.dev_type, snap)
        if res.fail_msg:
            self.LogWarning("Could not remove the snapshot of disk/%d on %s: %s", idx,
                            self.primary.name, res.fail_msg)

    def _remove_instance(self, feedback_fn: FeedbackFn) -> None:
        inst = self.instance
        feedback_fn(f"Removing instance {inst.name}")
        failures = iu.remove_disks(self, inst, warn=self.LogWarning)
        if failures and not self.op.ignore_remove_failures:
            raise errors.OpExecError(
                f"Export succeeded, but removing instance {inst.name} failed:"
                f" {'; '.join(failures)}")
        self.context.remove_instance(inst)


class LUBackupQuery(NoHooksLU):
    REQ_BGL = False
    op: opcodes.OpBackupQuery

    def ExpandNames(self) -> None:
        self.op.nodes = [self.expand_node_name(n) for n in self.op.nodes]
        self.needed_locks = {}
        if self.op.use_locking:
            self.needed_locks[locking.LEVEL_NODE] = self.op.nodes or locking.ALL_SET
            self.share_locks[locking.LEVEL_NODE] = True

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        nodes = self.op.nodes or online_node_names(self)
        answers = query_exports(self, nodes)
        ExportIndex.for_paths(self.context.paths).update_from_query(answers)
        # Ganeti's format: False for a node that could not be asked
        return {node: (False if names is None else names)
                for node, names in sorted(answers.items())}


class LUBackupRemove(NoHooksLU):
    """Remove every export of an instance (which may no longer exist)."""

    REQ_BGL = False
    op: opcodes.OpBackupRemove

    def ExpandNames(self) -> None:
        uuid = self.cfg.expand_instance_name(self.op.instance_name)
        inst = None if uuid is None else self.cfg.get_instance_info(uuid)
        if inst is not None:
            self.op.instance_name = inst.name
            self.needed_locks = {locking.LEVEL_INSTANCE: [inst.name]}
        else:
            self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        name = self.op.instance_name
        answers = query_exports(self, online_node_names(self))
        index = ExportIndex.for_paths(self.context.paths)
        index.update_from_query(answers)
        holders = sorted(n for n, names in answers.items() if names and name in names)
        if not holders:
            unreachable = sorted(n for n, names in answers.items() if names is None)
            hint = f" (not asked: {', '.join(unreachable)})" if unreachable else ""
            raise errors.OpPrereqError(f"No export of {name} found on any node{hint}",
                                       errors.ECODE_NOENT)
        protected = protected_newest(self, holders, name)
        if protected:
            where = ", ".join(f"{gen} on {node}" for node, gen in protected)
            raise errors.OpPrereqError(
                f"The export of {name} is protected ({where}); unprotect it first with"
                f" {unprotect_hint(name)}", errors.ECODE_STATE)
        removed = []
        for node in holders:
            res = self.rpc.call_export_remove(node, name)
            if res.fail_msg:
                self.LogWarning("Could not remove the export of %s on %s: %s", name, node,
                                res.fail_msg)
            else:
                removed.append(node)
                feedback_fn(f"Removed the export of {name} on {node}")
        index.discard(name, removed)
        if not removed:
            raise errors.OpExecError(f"Could not remove any export of {name}")
        return removed
