"""Backup logical units: prepare, export, query and remove exports.

Export (spec section 8) locks the instance exclusively and only its primary
node and the target node, shared: exports of different instances run in
parallel even when they share nodes.  Older exports elsewhere are found
through the export index (``ganeti.backup.index``), not by locking every node.
"""

from __future__ import annotations

import time
from typing import Any

from ganeti import constants, errors, limits, locking, opcodes
from ganeti.backup import exportconf, exportmeta
from ganeti.backup.index import ExportIndex
from ganeti.cmdlib import backup_remote
from ganeti.cmdlib import instance_utils as iu
from ganeti.cmdlib.base import LOCKS_REPLACE, FeedbackFn, LogicalUnit, NoHooksLU
from ganeti.objects import Instance, Node
from ganeti.transfer.master.coordinator import DiskTransfer, TransferResult, run_transfers
from ganeti.transfer.master.policy import TransferLimits
from ganeti.transfer.master.policy import resolve as resolve_limits

MIB = 1024 * 1024


def _node(lu: LogicalUnit, name: str) -> Node:
    node = lu.cfg.get_node_info_by_name(name)
    if node is None:
        raise errors.OpPrereqError(f"Node '{name}' not known", errors.ECODE_NOENT)
    return node


def checked_note(note: str) -> str:
    """The note as stored; a bad one is an OpPrereqError naming the field."""
    try:
        return exportmeta.check_note(note)
    except exportmeta.MetaError as err:
        raise errors.OpPrereqError(f"Invalid value for {err}", errors.ECODE_INVAL) from None


def unprotect_hint(instance: str, generation: str | None = None) -> str:
    target = instance if generation is None else f"{instance}@{generation}"
    return f"'gnt-backup unprotect {target}'"


def protected_newest(lu: LogicalUnit, nodes: list[str], instance_name: str
                     ) -> list[tuple[str, str]]:
    """(node, generation) of each protected newest export of the instance on ``nodes``."""
    found: list[tuple[str, str]] = []
    for node, res in sorted(lu.rpc.call_export_generations(nodes, [instance_name]).items()):
        if res.fail_msg:      # the node's own check still refuses to remove it
            continue
        found.extend((node, gen["generation"]) for gen in res.payload
                     if gen["newest"] and gen.get("protected"))
    return found


def failure_text(finalize_ok: bool, disks_ok: list[bool]) -> str:
    """Ganeti's wording, e.g. "errors in export finalization, disk export: disk(s) 0, 1"."""
    parts = []
    if not finalize_ok:
        parts.append("export finalization")
    bad = [str(idx) for idx, ok in enumerate(disks_ok) if not ok]
    if bad:
        parts.append(f"disk export: disk(s) {', '.join(bad)}")
    return "Export failed, errors in " + ", ".join(parts)


class LUBackupPrepare(NoHooksLU):
    """Local mode needs no preparation; remote mode creates the source's transfer key."""

    REQ_BGL = False
    op: opcodes.OpBackupPrepare

    def ExpandNames(self) -> None:
        self.expand_and_lock_instance(shared=True)

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        if self.op.mode == constants.EXPORT_MODE_REMOTE:
            return backup_remote.prepare(self)
        return None


class LUBackupExport(LogicalUnit):
    HPATH = "instance-export"
    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False
    op: opcodes.OpBackupExport

    # --- arguments and locks -----------------------------------------------------

    def CheckArguments(self) -> None:
        op = self.op
        if op.mode == constants.EXPORT_MODE_REMOTE:
            if op.note:
                raise errors.OpPrereqError("Field 'note': notes are kept with local exports"
                                           " only", errors.ECODE_INVAL)
            backup_remote.check_export_arguments(op)
            return
        if not isinstance(op.target_node, str):
            raise errors.OpPrereqError("In local mode target_node must be a node name",
                                       errors.ECODE_INVAL)
        if op.long_sleep and not op.shutdown:
            raise errors.OpPrereqError(
                "long_sleep keeps the instance down during the copy; it needs shutdown",
                errors.ECODE_INVAL)
        if op.note is not None:
            op.note = checked_note(op.note)

    def ExpandNames(self) -> None:
        if self.op.mode == constants.EXPORT_MODE_REMOTE:
            backup_remote.expand_export_names(self)
            return
        self.expand_and_lock_instance()
        assert isinstance(self.op.target_node, str) and self.needed_locks is not None
        self.op.target_node = self.expand_node_name(self.op.target_node)
        self.needed_locks[locking.LEVEL_NODE] = []
        self.recalculate_locks[locking.LEVEL_NODE] = LOCKS_REPLACE
        # shared: node-level changes (offline, remove) wait, other exports do not
        self.share_locks[locking.LEVEL_NODE] = True

    def DeclareLocks(self, level: int) -> None:
        if level == locking.LEVEL_NODE:
            self.lock_instances_nodes(primary_only=True)
            if self.op.mode == constants.EXPORT_MODE_REMOTE:
                return
            assert self.needed_locks is not None and isinstance(self.op.target_node, str)
            self.needed_locks[level] = sorted({*self.needed_locks[level],
                                               self.op.target_node})

    # --- prerequisites ---------------------------------------------------------------

    def CheckPrereq(self) -> None:
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
        if op.mode == constants.EXPORT_MODE_REMOTE:
            backup_remote.check_export_prereq(self)
        else:
            self._check_target_node()
            self.keep_generations = self._keep_generations()
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
        if self.was_running and not op.remove_instance and inst.disks:
            unsupported = [str(idx) for idx in iu.disks_without_snapshots(self, inst)]
            self.use_snapshots = not unsupported
            if unsupported and not op.shutdown:
                raise errors.OpPrereqError(
                    f"Instance {inst.name} is running and disk(s) {', '.join(unsupported)}"
                    " cannot be snapshotted on this storage; a live export (no shutdown) is"
                    " impossible", errors.ECODE_STATE)
            if unsupported and not op.long_sleep:
                raise errors.OpPrereqError(
                    f"Disk(s) {', '.join(unsupported)} of instance {inst.name} cannot be"
                    " snapshotted, so the instance would stay down for the whole copy;"
                    " confirm this with long_sleep (--long-sleep)", errors.ECODE_STATE)

    def _check_target_node(self) -> None:
        assert isinstance(self.op.target_node, str)
        self.target = _node(self, self.op.target_node)
        if self.target.offline:
            raise errors.OpPrereqError(f"Target node {self.target.name} is offline",
                                       errors.ECODE_STATE)
        if self.target.drained:
            raise errors.OpPrereqError(f"Target node {self.target.name} is drained",
                                       errors.ECODE_STATE)

    def _keep_generations(self) -> bool:
        """A protected export is never deleted by the export replacing it.

        It is kept as an older generation instead, as --keep-generations would.
        """
        if self.op.keep_generations:
            return True
        kept = protected_newest(self, [self.target.name], self.instance.name)
        if kept:
            self.LogInfo("The current export %s@%s on %s is protected: it is kept as an"
                         " older generation", self.instance.name, kept[0][1],
                         self.target.name)
        return bool(kept)

    # --- hooks -----------------------------------------------------------------------

    def BuildHooksEnv(self) -> dict[str, Any]:
        env = {
            "EXPORT_MODE": self.op.mode,
            "EXPORT_NODE": self.op.target_node,
            "EXPORT_DO_SHUTDOWN": self.op.shutdown,
            "SHUTDOWN_TIMEOUT": self.op.shutdown_timeout,
            "REMOVE_INSTANCE": int(self.op.remove_instance),
        }
        inst = self.cfg.get_instance_info_by_name(self.op.instance_name) or self.instance
        return {**env, **iu.instance_hook_env(self.cfg, inst, None)}

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        nodes = [self.cfg.get_master_node_name(), self.primary.name]
        if self.op.mode != constants.EXPORT_MODE_REMOTE:
            nodes.append(self.target.name)
        unique = list(dict.fromkeys(nodes))
        return unique, unique

    # --- execution -------------------------------------------------------------------

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        if self.op.mode == constants.EXPORT_MODE_REMOTE:
            return backup_remote.export_exec(self, feedback_fn)
        inst, op = self.instance, self.op
        # the target must accept the export before the instance is touched
        res = self.rpc.call_export_prepare(self.target.name, inst.name)
        res.raise_on_failure(f"Cannot prepare the export directory on {self.target.name}")
        self.staging = str(res.payload)
        try:
            finalize_ok, disks_ok = self._shutdown_copy_restart(feedback_fn)
        except BaseException:
            self._abort_staging()
            raise
        if not (finalize_ok and all(disks_ok)):
            self._abort_staging()
            raise errors.OpExecError(failure_text(finalize_ok, disks_ok))
        index = ExportIndex.for_paths(self.context.paths)
        older = [n for n in self._export_nodes(index) if n != self.target.name]
        # keeping generations keeps other nodes' exports too: each node's newest
        # export heads its own history there (another schedule's target, say)
        remove_older = bool(older) and not (op.keep_generations or
                                            self.cfg.get_cluster_info().shared_export_dir)
        index.set_nodes(inst.name, [self.target.name] + (older if op.keep_generations
                                                         else []))
        if op.remove_instance:
            self._remove_instance(feedback_fn)
        if remove_older:
            self._remove_older_exports(older, index, feedback_fn)
        return finalize_ok, disks_ok

    def transfer_limits(self, nodes: list[Node], feedback_fn: FeedbackFn
                        ) -> TransferLimits:
        """The opcode's limits, else the cluster's backup defaults; logged for the job."""
        op = self.op
        resolved = resolve_limits(op.bwlimit, op.ionice_class, op.ionice_level,
                                  self.cfg.get_cluster_info().backup_defaults, nodes)
        feedback_fn(resolved.describe(len(self.instance.disks), [n.name for n in nodes]))
        return resolved

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
                snapshots = self._snapshot_disks(feedback_fn)
                if stopped:
                    feedback_fn(f"Starting instance {inst.name} again; copying from"
                                " snapshots")
                    iu.start_instance(self, inst)
                    stopped = False
            finalize_ok, disks_ok = self._copy_and_finalize(snapshots, feedback_fn)
            exported = finalize_ok and all(disks_ok)
        finally:
            for idx in sorted(snapshots):
                self._remove_snapshot(idx, snapshots, feedback_fn)
            # an instance about to be removed stays down, unless the export failed
            if stopped and not (op.remove_instance and exported):
                feedback_fn(f"Starting instance {inst.name} again")
                iu.start_instance(self, inst)
        return finalize_ok, disks_ok

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

    def _copy_and_finalize(self, snapshots: dict[int, list[Any]],
                           feedback_fn: FeedbackFn) -> tuple[bool, list[bool]]:
        if self.op.mode == constants.EXPORT_MODE_REMOTE:
            return backup_remote.copy_to_remote(self, snapshots, feedback_fn)
        inst, target, staging = self.instance, self.target, self.staging
        transfers = [
            DiskTransfer(
                label=f"disk/{idx}", source_node=self.primary.name,
                source={"kind": "disk", "dev_type": disk.dev_type,
                        "logical_id": snapshots.get(idx, disk.logical_id)},
                dest_node=target.name,
                dest={"kind": "file", "path": f"{staging}/{exportconf.dump_name(idx)}"},
                size=disk.size * MIB, compress=self.op.compress,
                dest_address=target.primary_ip)
            for idx, disk in enumerate(inst.disks)]

        def disk_done(idx: int, _result: TransferResult) -> None:
            self._remove_snapshot(idx, snapshots, feedback_fn)

        # a failed disk is reported once, by run_transfers ("disk/0 failed: ...")
        xfer_limits = self.transfer_limits([self.primary, target], feedback_fn)
        results = run_transfers(self.rpc, transfers, feedback_fn, on_done=disk_done,
                                limits=xfer_limits)
        disks_ok = [r.success for r in results]
        if not all(disks_ok):
            return False, disks_ok
        info = exportconf.from_instance(inst, self.cfg.get_cluster_info(), self.primary.name,
                                        [r.checksum for r in results])
        fin = self.rpc.call_export_finalize(target.name, inst.name, exportconf.render(info),
                                             self.keep_generations)
        if fin.fail_msg:
            self.LogWarning("Finalizing the export on %s failed: %s", target.name,
                            fin.fail_msg)
            return False, disks_ok
        for warning in (fin.payload or {}).get("warnings", []):
            self.LogWarning("Export of %s on %s: %s", inst.name, target.name, warning)
        feedback_fn(f"Export of {inst.name} finalized on {target.name}")
        if self.op.note:
            self._set_note(feedback_fn)
        return True, disks_ok

    def _set_note(self, feedback_fn: FeedbackFn) -> None:
        """The export is complete already: a note that cannot be stored is a warning."""
        res = self.rpc.call_export_generation_modify(self.target.name, self.instance.name,
                                                     None, None, self.op.note)
        if res.fail_msg:
            self.LogWarning("The export is complete, but its note could not be stored on"
                            " %s: %s (set it with 'gnt-backup modify %s --note ...')",
                            self.target.name, res.fail_msg, self.instance.name)
        else:
            feedback_fn(f"Note stored with the export of {self.instance.name}")

    def _abort_staging(self) -> None:
        res = self.rpc.call_export_abort(self.target.name, self.instance.name)
        if res.fail_msg:
            self.LogWarning("Could not remove the unfinished export on %s: %s",
                            self.target.name, res.fail_msg)

    def _export_nodes(self, index: ExportIndex) -> list[str]:
        if index.exists():
            return index.nodes(self.instance.name)
        return [node for node, names in query_exports(self, online_node_names(self)).items()
                if names and self.instance.name in names]

    def _remove_instance(self, feedback_fn: FeedbackFn) -> None:
        inst = self.instance
        feedback_fn(f"Removing instance {inst.name}")
        failures = iu.remove_disks(self, inst, warn=self.LogWarning)
        if failures and not self.op.ignore_remove_failures:
            raise errors.OpExecError(
                f"Export succeeded, but removing instance {inst.name} failed:"
                f" {'; '.join(failures)}")
        self.context.remove_instance(inst)

    def _remove_older_exports(self, nodes: list[str], index: ExportIndex,
                              feedback_fn: FeedbackFn) -> None:
        inst = self.instance
        left = []
        for node in nodes:
            if self.cfg.get_node_info_by_name(node) is None:
                continue
            res = self.rpc.call_export_remove(node, inst.name)
            if res.fail_msg:
                left.append(node)      # e.g. protected: still there, still indexed
                self.LogWarning("Could not remove the older export of %s on %s: %s",
                                inst.name, node, res.fail_msg)
            else:
                feedback_fn(f"Removed the older export of {inst.name} on {node}")
        if left:
            index.set_nodes(inst.name, [self.target.name, *left])


def online_node_names(lu: LogicalUnit) -> list[str]:
    return sorted(n.name for n in lu.cfg.get_all_nodes_info().values() if not n.offline)


def query_exports(lu: LogicalUnit, nodes: list[str]) -> dict[str, list[str] | None]:
    """``{node: [instance names] or None when the node did not answer}``."""
    answers: dict[str, list[str] | None] = {}
    for node, res in lu.rpc.call_export_list(nodes).items():
        answers[node] = None if res.fail_msg else list(res.payload)
    return answers


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
