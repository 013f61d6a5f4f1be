"""Where an export goes: one strategy per OpBackupExport mode.

LUBackupExport keeps what every export shares (the instance lock, shutdown,
snapshots, restart, remove-instance); its target strategy, chosen once from
the opcode's mode, contributes the rest at fixed points:

========================  =====================================================
LU phase                  strategy
========================  =====================================================
CheckArguments            ``check_arguments``
ExpandNames/DeclareLocks  ``expand_names``, ``node_locks`` (extra node locks)
CheckPrereq               ``check_prereq`` (after the common checks)
BuildHooksNodes           ``hook_nodes`` (besides master and primary)
Exec                      ``begin`` (before the instance is touched), ``copy``
                          (disks and finalize), then ``abort`` on failure, or
                          ``commit`` and, after the optional removal, ``prune``
========================  =====================================================

A new mode is a subclass plus one entry in ``ganeti.cmdlib.backup.EXPORT_TARGETS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from ganeti import errors, opcodes
from ganeti.cmdlib.backup_common import failure_text
from ganeti.cmdlib.base import FeedbackFn, LogicalUnit
from ganeti.objects import Instance, Node
from ganeti.transfer.master.coordinator import TransferResult
from ganeti.transfer.master.policy import TransferLimits
from ganeti.transfer.master.policy import resolve as resolve_limits

TargetT = TypeVar("TargetT", opcodes.LocalTarget, opcodes.RemoteTarget)
# what a disk is read from: its logical id, or that of its snapshot
DiskSources = list[Any]
DiskDone = Callable[[int], None]


class ExportTarget(ABC, Generic[TargetT]):
    """One export's target; built in CheckArguments, used through Exec."""

    # the opcode's target type for this mode (OpBackupExport.target)
    TARGET: ClassVar[type[Any]]
    # whether the primary keeps each disk's snapshot as the base of the next
    # export to this target (doc/incremental-exports.md)
    KEEPS_BASE: ClassVar[bool] = False

    def __init__(self, lu: LogicalUnit, op: opcodes.OpBackupExport) -> None:
        target = op.target
        if not isinstance(target, self.TARGET):
            raise errors.ProgrammerError(f"{type(self).__name__} cannot export to"
                                         f" {type(target).__name__}")
        self.lu = lu
        self.op = op
        self.target: TargetT = target
        # set by the LU's CheckPrereq before check_prereq
        self.instance: Instance
        self.primary: Node
        # per disk, set by copy: the checksum of what was exported
        self.checksums: list[str | None] = []
        # set by copy: the generation name of the new export, when known
        self.generation: str | None = None
        # set by copy: what each disk's stream did (export statistics read the bytes)
        self.results: list[TransferResult] = []
        # set by the LU after a live snapshot: how it was taken ([ganeti-ng:export])
        self.snapshot_info: dict[str, str] = {}

    @staticmethod
    def prepare(lu: LogicalUnit, op: opcodes.OpBackupPrepare) -> Any:
        """OpBackupPrepare's result in this mode (None: nothing to prepare)."""
        return None

    def check_arguments(self) -> None:
        """Syntax-only checks of the mode's fields."""

    def expand_names(self) -> None:
        """Canonical names of what the target refers to, before locking."""

    def node_locks(self) -> list[str]:
        """Node names to lock (shared) besides the instance's primary."""
        return []

    @abstractmethod
    def check_prereq(self) -> None:
        """Check the target itself; ``instance`` and ``primary`` are set."""

    def hook_nodes(self) -> list[str]:
        """Nodes running the hooks besides the master and the primary."""
        return []

    def begin(self) -> None:
        """Get the target ready; runs before the instance is shut down."""

    @abstractmethod
    def copy(self, sources: DiskSources, disk_done: DiskDone,
             feedback_fn: FeedbackFn) -> tuple[bool, list[bool]]:
        """Copy every disk from ``sources`` and finalize: (finalize ok, per-disk ok).

        ``disk_done(idx)`` is called when disk ``idx`` no longer needs its source
        (its snapshot can go).
        """

    def abort(self) -> None:
        """Undo ``begin`` after a failure: nothing of the export may remain."""

    def failure_text(self, finalize_ok: bool, disks_ok: list[bool]) -> str:
        return failure_text(finalize_ok, disks_ok)

    def commit(self, feedback_fn: FeedbackFn) -> None:
        """Record the new export as current (before the instance may be removed)."""

    def prune(self, feedback_fn: FeedbackFn) -> None:
        """Remove what the new export replaces (after the instance may be removed)."""

    def limits(self, nodes: list[Node], feedback_fn: FeedbackFn) -> TransferLimits:
        """The opcode's limits, else the cluster's backup defaults; logged for the job."""
        op = self.op
        resolved = resolve_limits(op.bwlimit, op.ionice_class, op.ionice_level,
                                  self.lu.cfg.get_cluster_info().backup_defaults, nodes)
        feedback_fn(resolved.describe(len(self.instance.disks), [n.name for n in nodes]))
        return resolved
