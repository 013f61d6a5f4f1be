"""Cluster maintenance LUs run by the watcher: remove leftovers of interrupted work.

A master killed during an export leaves a disk snapshot on the primary node,
a staging directory on the target node and transfer entries in both node
daemons.  Such an object is a leftover when no running job uses it.  Instead
of guessing that from job lists (racy), the cleanup is itself an opcode that
takes every instance lock *opportunistically and shared*: an export holds its
instance exclusively, so an instance we obtain has no export running, and an
instance we do not obtain is simply skipped until the next watcher run.
Node-wide objects (staging dirs, transfers) are only touched when every
instance lock was obtained, i.e. when nothing at all can be exporting.
"""

from __future__ import annotations

from typing import Any

from ganeti import locking, opcodes
from ganeti.cmdlib.base import FeedbackFn, NoHooksLU
from ganeti.constants import SNAP_MARKER

# snapshots made by LUBackupExport are named "<disk>.snap-export-<stamp>"
EXPORT_SNAP_TAG = SNAP_MARKER + "export-"


class LUClusterCleanupLeftovers(NoHooksLU):
    REQ_BGL = False
    op: opcodes.OpClusterCleanupLeftovers

    def ExpandNames(self) -> None:
        self.needed_locks = {locking.LEVEL_INSTANCE: locking.ALL_SET,
                             locking.LEVEL_NODE: locking.ALL_SET}
        self.share_locks[locking.LEVEL_INSTANCE] = True
        self.share_locks[locking.LEVEL_NODE] = True
        self.opportunistic_locks[locking.LEVEL_INSTANCE] = True

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        owned = self.owned_locks(locking.LEVEL_INSTANCE)
        snap = self.cfg.snapshot()
        instances = list(snap.get_all_instances_info().values())
        busy = sorted(i.name for i in instances if i.name not in owned)
        nodes = sorted(n.name for n in snap.get_all_nodes_info().values()
                       if not n.offline)
        report: dict[str, Any] = {"busy_instances": busy, "snapshots": [],
                                  "staging": {}, "transfers": {}, "complete": not busy}
        # streams first (they may read a snapshot or write a staging dir), then files
        if not busy:
            report["transfers"] = self._clean_transfers(nodes, feedback_fn)
        for inst in instances:
            if inst.name in owned:
                report["snapshots"] += self._clean_snapshots(inst, feedback_fn)
        if busy:
            feedback_fn(f"Instances with running jobs, not cleaned now: {', '.join(busy)}")
            return report
        for node, res in self.rpc.call_export_cleanup(nodes).items():
            if res.fail_msg:
                self.LogWarning("Export cleanup on %s failed: %s", node, res.fail_msg)
            elif res.payload:
                report["staging"][node] = list(res.payload)
                feedback_fn(f"Removed export leftovers on {node}: {', '.join(res.payload)}")
        return report

    def _clean_transfers(self, nodes: list[str], feedback_fn: FeedbackFn
                         ) -> dict[str, list[str]]:
        cleaned: dict[str, list[str]] = {}
        for node, res in self.rpc.call_transfer_list(nodes).items():
            if res.fail_msg or not res.payload:
                continue
            done = self.rpc.call_transfer_cleanup([node], sorted(res.payload))[node]
            if done.fail_msg:
                self.LogWarning("Transfer cleanup on %s failed: %s", node, done.fail_msg)
            else:
                cleaned[node] = list(done.payload)
                feedback_fn(f"Forgot {len(done.payload)} stale transfer(s) on {node}")
        return cleaned

    def _clean_snapshots(self, inst: Any, feedback_fn: FeedbackFn) -> list[str]:
        node = self.cfg.get_node_info(inst.primary_node)
        if node is None or node.offline:
            return []
        removed = []
        for idx, disk in enumerate(inst.disks):
            res = self.rpc.call_blockdev_list_snapshots(node.name, disk.dev_type,
                                                        disk.logical_id)
            if res.fail_msg:
                self.LogWarning("Cannot list snapshots of disk/%d of %s: %s", idx,
                                inst.name, res.fail_msg)
                continue
            for snap in res.payload or []:
                if not any(isinstance(p, str) and EXPORT_SNAP_TAG in p for p in snap):
                    continue
                rem = self.rpc.call_blockdev_remove_snapshot(node.name, disk.dev_type, snap)
                if rem.fail_msg:
                    self.LogWarning("Cannot remove snapshot %s: %s", snap, rem.fail_msg)
                else:
                    removed.append(str(snap[-1]))
                    feedback_fn(f"Removed leftover snapshot of disk/{idx} of {inst.name}"
                                f" on {node.name}")
        return removed
