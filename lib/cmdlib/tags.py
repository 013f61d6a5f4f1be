"""Tag logical units (OpTagsGet, OpTagsSet, OpTagsDel), as Ganeti's cmdlib/tags.

Tags live in each object's own ``tags`` list in the configuration.  The LU
locks the object it tags (instance, node or node group; shared for a read),
so a tag change never races another change of that object.  The cluster has
no lock below the BGL, which these LUs hold shared: the read-modify-write of
the cluster object is serialised by a process lock here instead (LUs that
change the cluster otherwise hold the BGL exclusively, so they cannot run
meanwhile).  Each tag's syntax is the opcode's (``opcodes.ValidTag``); the
count per object is checked against the object's existing tags here.
"""

from __future__ import annotations

import threading
from typing import Any

from ganeti import constants, errors, limits, locking, opcodes
from ganeti.cmdlib.base import FeedbackFn, NoHooksLU
from ganeti.objects import Cluster, Instance, Network, Node, NodeGroup

Taggable = Cluster | Instance | Node | NodeGroup | Network

# serialises read-modify-write of the tagged objects (see the module docstring)
_CHANGE_LOCK = threading.Lock()


class TagsLU(NoHooksLU):
    """Resolves ``op.kind``/``op.name`` to one object and locks it."""

    REQ_BGL = False
    op: opcodes.OpTagsGet | opcodes.OpTagsSet | opcodes.OpTagsDel
    SHARED = False

    def ExpandNames(self) -> None:
        op = self.op
        self.needed_locks = {}
        if op.kind == constants.TAG_CLUSTER:
            return
        if not op.name:
            raise errors.OpPrereqError(
                f"name: the {op.kind}'s name is needed for its tags", errors.ECODE_INVAL)
        if op.kind == constants.TAG_INSTANCE:
            op.name = self.expand_instance_name(op.name)
            level = locking.LEVEL_INSTANCE
        elif op.kind == constants.TAG_NODE:
            op.name = self.expand_node_name(op.name)
            level = locking.LEVEL_NODE
        elif op.kind == constants.TAG_NODEGROUP:
            self._find(op.name)
            level = locking.LEVEL_NODEGROUP
        else:
            self._find(op.name)
            level = locking.LEVEL_NETWORK
        if getattr(op, "use_locking", True):
            self.needed_locks[level] = [op.name]
            self.share_locks[level] = self.SHARED

    def _find(self, name: str | None) -> Taggable:
        """The current copy of the tagged object (OpPrereqError ECODE_NOENT if gone)."""
        kind = self.op.kind
        found: Taggable | None
        if kind == constants.TAG_CLUSTER:
            return self.cfg.get_cluster_info()
        if kind == constants.TAG_INSTANCE:
            found = self.cfg.get_instance_info_by_name(name or "")
            title = "Instance"
        elif kind == constants.TAG_NODE:
            found = self.cfg.get_node_info_by_name(name or "")
            title = "Node"
        elif kind == constants.TAG_NODEGROUP:
            found = next((g for g in self.cfg.get_all_nodegroups_info().values()
                          if g.name == name), None)
            title = "Node group"
        else:
            shared = next((n for n in self.cfg.snapshot().get_networks().values()
                           if n.name == name), None)
            found = shared.model_copy(deep=True) if shared is not None else None
            title = "Network"
        if found is None:
            raise errors.OpPrereqError(f"{title} '{name}' not known", errors.ECODE_NOENT)
        return found

    def CheckPrereq(self) -> None:
        self.target = self._find(self.op.name)

    def _describe(self) -> str:
        return "the cluster" if self.op.kind == constants.TAG_CLUSTER \
            else f"{self.op.kind} {self.op.name}"


class LUTagsGet(TagsLU):
    SHARED = True
    op: opcodes.OpTagsGet

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        return sorted(self.target.tags)


class _TagsChangeLU(TagsLU):
    """Set or delete: a new tag list computed from the current one, then stored."""

    op: opcodes.OpTagsSet | opcodes.OpTagsDel

    def CheckPrereq(self) -> None:
        super().CheckPrereq()
        if isinstance(self.target, Network):
            raise errors.OpPrereqError(
                f"kind: tags of networks cannot be changed here (network {self.op.name}"
                " comes from an imported configuration and is read-only)",
                errors.ECODE_INVAL)
        self._new_tags(self.target)

    def _new_tags(self, target: Taggable) -> list[str]:
        raise NotImplementedError

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        with _CHANGE_LOCK:
            # a fresh copy: another tag change of the cluster may have been stored
            target = self._find(self.op.name)
            assert not isinstance(target, Network)
            target.tags = self._new_tags(target)
            self.cfg.update(target)
        return None


class LUTagsSet(_TagsChangeLU):
    op: opcodes.OpTagsSet

    def _new_tags(self, target: Taggable) -> list[str]:
        tags = sorted(set(target.tags) | set(self.op.tags))
        if len(tags) > limits.TAGS.maximum:
            raise errors.OpPrereqError(
                f"tags: {self._describe()} would have {len(tags)} tags, more than the"
                f" limit of {limits.TAGS.maximum} per object", errors.ECODE_INVAL)
        return tags


class LUTagsDel(_TagsChangeLU):
    op: opcodes.OpTagsDel

    def _new_tags(self, target: Taggable) -> list[str]:
        missing = sorted(set(self.op.tags) - set(target.tags))
        if missing:
            raise errors.OpPrereqError(
                f"tags: tag(s) {', '.join(repr(t) for t in missing)} not found on"
                f" {self._describe()}", errors.ECODE_NOENT)
        gone = set(self.op.tags)
        return [t for t in target.tags if t not in gone]
