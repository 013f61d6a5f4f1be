"""How an instance is filled from an export: one strategy per OpInstanceCreate import mode.

LUInstanceCreate creates the disks, adds and starts the instance as in mode
"create"; its import mode, chosen once in CheckArguments from
``ganeti.cmdlib.backup_import.IMPORT_MODES``, contributes the rest:
``check_arguments``, ``source_nodes`` (extra node locks), ``check_prereq``
(read and verify the source, default the new instance's specs from it),
``hook_env`` and ``fill_disks`` (the copy into the new, empty disks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from ganeti import opcodes
from ganeti.cmdlib.base import FeedbackFn, LogicalUnit
from ganeti.objects import Instance, Node
from ganeti.transfer.master.policy import TransferLimits
from ganeti.transfer.master.policy import resolve as resolve_limits


class CreateSpecs(Protocol):
    """What an import may default from its source: LUInstanceCreate's checked specs."""

    disk_specs: list[opcodes.DiskSpec]
    nic_specs: list[opcodes.NicSpec]
    beparams: dict[str, Any]


class ImportMode(ABC):
    """One import's source; built in CheckArguments, used through Exec."""

    def __init__(self, lu: LogicalUnit, op: opcodes.OpInstanceCreate) -> None:
        self.lu = lu
        self.op = op

    @abstractmethod
    def check_arguments(self) -> None:
        """Syntax-only checks of the mode's fields."""

    def source_nodes(self) -> list[str]:
        """Nodes of this cluster to lock besides the new primary."""
        return []

    @abstractmethod
    def check_prereq(self, specs: CreateSpecs) -> None:
        """Read and verify the source; fill what the opcode left open in ``specs``."""

    def hook_env(self) -> dict[str, Any]:
        """Hook variables of the mode besides ADD_MODE (Ganeti: only "import" has any)."""
        return {}

    @abstractmethod
    def fill_disks(self, instance: Instance, pnode: Node, feedback_fn: FeedbackFn) -> None:
        """Copy the source into the new, empty disks; any failure raises."""

    def limits(self, instance: Instance, nodes: list[Node], feedback_fn: FeedbackFn
               ) -> TransferLimits:
        """Imports: the nodes' limits and the cluster's I/O priority (no export limit)."""
        defaults = self.lu.cfg.get_cluster_info().backup_defaults
        limits = resolve_limits(0, defaults.ionice_class, defaults.ionice_level, defaults,
                                nodes)
        if any(limits.node_bwlimits.values()) or limits.io_priority is not None:
            feedback_fn(limits.describe(len(instance.disks), [n.name for n in nodes]))
        return limits


def import_hook_env(src_node: str, src_path: str,
                    dumps: Sequence[str | None]) -> dict[str, Any]:
    """Ganeti's import variables: SRC_IMAGES is the Python list text of the dump
    paths, False where a disk has no dump (Ganeti formats it with ``str()``)."""
    images: list[str | bool] = [f"{src_path}/{dump}" if dump else False for dump in dumps]
    return {"SRC_NODE": src_node, "SRC_PATH": src_path, "SRC_IMAGES": str(images)}
