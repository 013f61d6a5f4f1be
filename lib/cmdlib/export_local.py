"""Local export: into a staging directory on a node of this cluster.

The target node prepares a staging directory before the instance is touched;
the dumps stream into it, finalize writes config.ini and renames it into
place (keeping or replacing the previous export), and any failure aborts the
staging directory, so the previous export stays intact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ganeti import errors, opcodes
from ganeti.backup import exportconf
from ganeti.backup.index import ExportIndex
from ganeti.cmdlib.backup_common import (
    MIB,
    checked_note,
    node_by_name,
    online_node_names,
    protected_newest,
    query_exports,
)
from ganeti.cmdlib.base import FeedbackFn
from ganeti.cmdlib.export_target import DiskDone, DiskSources, ExportTarget
from ganeti.objects import Disk, Node
from ganeti.rpc.payloads import DiskBase
from ganeti.transfer.master.coordinator import DiskTransfer, TransferResult, run_transfers


class LocalExport(ExportTarget[opcodes.LocalTarget]):
    TARGET = opcodes.LocalTarget
    KEEPS_BASE = True

    def check_arguments(self) -> None:
        if self.op.note is not None:
            self.op.note = checked_note(self.op.note)

    def expand_names(self) -> None:
        name = self.lu.expand_node_name(self.target.node)
        self.op.target_node = name
        self.target = dataclasses.replace(self.target, node=name)

    def node_locks(self) -> list[str]:
        return [self.target.node]

    # --- prerequisites ---------------------------------------------------------------

    def check_prereq(self) -> None:
        self.node: Node = node_by_name(self.lu, self.target.node)
        if self.node.offline:
            raise errors.OpPrereqError(f"Target node {self.node.name} is offline",
                                       errors.ECODE_STATE)
        if self.node.drained:
            raise errors.OpPrereqError(f"Target node {self.node.name} is drained",
                                       errors.ECODE_STATE)
        self.keep_generations = self._keep_generations()

    def _keep_generations(self) -> bool:
        """A protected export is never deleted by the export replacing it.

        It is kept as an older generation instead, as --keep-generations would.
        """
        if self.op.keep_generations:
            return True
        kept = protected_newest(self.lu, [self.node.name], self.instance.name)
        if kept:
            self.lu.LogInfo("The current export %s@%s on %s is protected: it is kept as an"
                            " older generation", self.instance.name, kept[0][1],
                            self.node.name)
        return bool(kept)

    def hook_nodes(self) -> list[str]:
        return [self.node.name]

    # --- execution -------------------------------------------------------------------

    def begin(self) -> None:
        # the target must accept the export before the instance is touched
        res = self.lu.rpc.call_export_prepare(self.node.name, self.instance.name)
        res.raise_on_failure(f"Cannot prepare the export directory on {self.node.name}")
        self.staging = str(res.payload)
        self.bases = self._choose_bases()

    def _choose_bases(self) -> list[DiskBase]:
        """Each disk's base on the target (doc/incremental-exports.md, "Choosing the base").

        A base that cannot be found out is no reason to fail: the disk goes in full.
        """
        disks = self.instance.disks
        self.base_generation: str | None = None
        if self.op.full:
            if disks:
                self.lu.LogInfo(f"Exporting every disk in full ({errors.field_ref('full')})")
            return [{"full": "--full"} for _ in disks]
        res = self.lu.rpc.call_export_base_info(self.node.name, self.instance.name,
                                                [disk.size * MIB for disk in disks])
        if res.fail_msg:
            self.lu.LogWarning("Cannot choose a base for an incremental export on %s (%s);"
                               " exporting in full", self.node.name, res.fail_msg)
            return [{"full": res.fail_msg} for _ in disks]
        choice = res.payload
        first = choice["generation"] is None
        for idx, base in enumerate(choice["disks"]):
            if "base" in base:
                continue
            if first:
                self.lu.LogInfo("disk/%d: exporting in full: %s", idx, base["full"])
            else:
                self.lu.LogWarning("disk/%d: exporting in full: %s", idx, base["full"])
        self.base_generation = choice["generation"]
        return list(choice["disks"])

    def copy(self, sources: DiskSources, disk_done: DiskDone,
             feedback_fn: FeedbackFn) -> tuple[bool, list[bool]]:
        inst, target = self.instance, self.node
        transfers = [self._transfer(idx, disk, sources[idx])
                     for idx, disk in enumerate(inst.disks)]

        def on_done(idx: int, _result: TransferResult) -> None:
            disk_done(idx)

        # a failed disk is reported once, by run_transfers ("disk/0 failed: ...")
        xfer_limits = self.limits([self.primary, target], feedback_fn)
        results = run_transfers(self.lu.rpc, transfers, feedback_fn, on_done=on_done,
                                limits=xfer_limits)
        self.results = results
        disks_ok = [r.success for r in results]
        self.checksums = [r.checksum for r in results]
        if not all(disks_ok):
            return False, disks_ok
        info = exportconf.from_instance(inst, self.lu.cfg.get_cluster_info(),
                                        self.primary.name, [r.checksum for r in results],
                                        snapshot=self.snapshot_info)
        fin = self.lu.rpc.call_export_finalize(target.name, inst.name,
                                                exportconf.render(info), self.keep_generations)
        if fin.fail_msg:
            self.lu.LogWarning("Finalizing the export on %s failed: %s", target.name,
                               fin.fail_msg)
            return False, disks_ok
        self.generation = (fin.payload or {}).get("generation")
        for warning in (fin.payload or {}).get("warnings", []):
            self.lu.LogWarning("Export of %s on %s: %s", inst.name, target.name, warning)
        feedback_fn(f"Export of {inst.name} finalized on {target.name}")
        if self.op.note:
            self._set_note(self.op.note, feedback_fn)
        return True, disks_ok

    def _transfer(self, idx: int, disk: Disk, source: Any) -> DiskTransfer:
        """One disk's stream: into a copy of its base when it has one."""
        src: dict[str, Any] = {"kind": "disk", "dev_type": disk.dev_type,
                               "logical_id": source}
        if source != disk.logical_id:  # a snapshot: its disk may keep an export base
            src["origin"] = disk.logical_id
        dest: dict[str, Any] = {"kind": "file",
                                "path": f"{self.staging}/{exportconf.dump_name(idx)}"}
        base: DiskBase = self.bases[idx] if idx < len(self.bases) else {}
        if "base" in base:
            dest["base"] = base["base"]
            dest["base_generation"] = self.base_generation
        return DiskTransfer(label=f"disk/{idx}", source_node=self.primary.name, source=src,
                            dest_node=self.node.name, dest=dest, size=disk.size * MIB,
                            compress=self.op.compress, dest_address=self.node.primary_ip,
                            incremental="base" in base)

    def _set_note(self, note: str, feedback_fn: FeedbackFn) -> None:
        """The export is complete already: a note that cannot be stored is a warning."""
        res = self.lu.rpc.call_export_generation_modify(self.node.name, self.instance.name,
                                                        None, None, note)
        if res.fail_msg:
            self.lu.LogWarning("The export is complete, but its note could not be stored"
                               " on %s: %s (set it with 'gnt-backup modify %s --note ...')",
                               self.node.name, res.fail_msg, self.instance.name)
        else:
            feedback_fn(f"Note stored with the export of {self.instance.name}")

    def abort(self) -> None:
        res = self.lu.rpc.call_export_abort(self.node.name, self.instance.name)
        if res.fail_msg:
            self.lu.LogWarning("Could not remove the unfinished export on %s: %s",
                               self.node.name, res.fail_msg)

    def commit(self, feedback_fn: FeedbackFn) -> None:
        op, name = self.op, self.instance.name
        self.index = ExportIndex.for_paths(self.lu.context.paths)
        self.older = [n for n in self._export_nodes() if n != self.node.name]
        # keeping generations keeps other nodes' exports too: each node's newest
        # export heads its own history there (another schedule's target, say)
        shared = self.lu.cfg.get_cluster_info().shared_export_dir
        self.remove_older = bool(self.older) and not (op.keep_generations or shared)
        self.index.set_nodes(name, [self.node.name] + (self.older if op.keep_generations
                                                       else []))

    def _export_nodes(self) -> list[str]:
        if self.index.exists():
            return self.index.nodes(self.instance.name)
        return [node for node, names in query_exports(self.lu,
                                                      online_node_names(self.lu)).items()
                if names and self.instance.name in names]

    def prune(self, feedback_fn: FeedbackFn) -> None:
        if not self.remove_older:
            return
        name = self.instance.name
        left = []
        for node in self.older:
            if self.lu.cfg.get_node_info_by_name(node) is None:
                continue
            res = self.lu.rpc.call_export_remove(node, name)
            if res.fail_msg:
                left.append(node)      # e.g. protected: still there, still indexed
                self.lu.LogWarning("Could not remove the older export of %s on %s: %s",
                                   name, node, res.fail_msg)
            else:
                feedback_fn(f"Removed the older export of {name} on {node}")
        if left:
            self.index.set_nodes(name, [self.node.name, *left])
