"""The built-in instance allocator ``hail``: a primary node for one new instance.

Ganeti runs allocator scripts (its ``hail`` from htools); here the one allocator
is built in and does what hail does in the simple case of one instance without
a secondary: drop the nodes that cannot take it (offline, drained, not
vm-capable, silent, or short of free memory or disk), then take the one left
with the most room after the placement (the smaller of its free memory and free
disk shares, in steps of 5%), fewer primary instances and the name breaking ties.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ganeti import constants, errors

if TYPE_CHECKING:
    from ganeti.config import ConfigSnapshot, ConfigStore
    from ganeti.rpc.client import RpcRunner

HAIL = constants.IALLOCATOR_HAIL
# the granularity of "more room" (a share of the node's memory or disk)
ROOM_STEP = 0.05


@dataclass(frozen=True)
class Request:
    """What the new instance needs (MiB)."""

    memory: int
    disk: int


@dataclass(frozen=True)
class NodeRoom:
    """One usable node as the allocator sees it (MiB; instances: its primaries)."""

    name: str
    memory_free: int
    memory_total: int
    disk_free: int
    disk_total: int
    instances: int = 0

    def share_left(self, request: Request) -> float:
        """The smaller of the memory and disk shares still free after the placement."""
        mem = (self.memory_free - request.memory) / max(self.memory_total, 1)
        disk = (self.disk_free - request.disk) / max(self.disk_total, 1)
        return min(mem, disk)


def allocate(request: Request, nodes: Sequence[NodeRoom],
             refused: Iterable[str] = ()) -> str:
    """The chosen node's name; OpPrereqError (ECODE_NORES) saying why none fits.

    ``refused`` are reasons for nodes left out before (offline, silent, ...).
    """
    reasons = list(refused)
    fitting = []
    for node in nodes:
        if node.memory_free < request.memory:
            reasons.append(f"{node.name}: {node.memory_free} MiB memory free")
        elif node.disk_free < request.disk:
            reasons.append(f"{node.name}: {node.disk_free} MiB disk free")
        else:
            fitting.append(node)
    if not fitting:
        raise errors.OpPrereqError(
            f"Allocator {HAIL} found no node for an instance needing {request.memory} MiB"
            f" of memory and {request.disk} MiB of disk ({'; '.join(reasons) or 'no nodes'})",
            errors.ECODE_NORES)
    # shares within 5% count as equal: nodes sharing a machine (or alike) report
    # the same room a little apart, and then the fewer primaries win
    best = min(fitting, key=lambda n: (-round(n.share_left(request) / ROOM_STEP),
                                       n.instances, n.name))
    return best.name


def primary_counts(snap: ConfigSnapshot) -> dict[str, int]:
    """Node uuid -> number of instances it is the primary of (one pass, no copies)."""
    counts: dict[str, int] = {}
    for inst in snap.get_all_instances_info().values():
        counts[inst.primary_node] = counts.get(inst.primary_node, 0) + 1
    return counts


def node_rooms(cfg: ConfigStore, rpc: RpcRunner) -> tuple[list[NodeRoom], list[str]]:
    """The usable nodes with their live free memory and disk, and why others are not."""
    snap = cfg.snapshot()  # shared objects, read only: no copy of every instance
    counts = primary_counts(snap)
    refused = []
    usable = {}
    for node in sorted(snap.get_all_nodes_info().values(), key=lambda n: n.name):
        why = ("offline" if node.offline else "drained" if node.drained
               else "not vm-capable" if not node.vm_capable else "")
        if why:
            refused.append(f"{node.name}: {why}")
        else:
            usable[node.name] = node.uuid
    answers = rpc.call_node_info(sorted(usable)) if usable else {}
    rooms = []
    for name, uuid in usable.items():
        res = answers.get(name)
        if res is None or res.fail_msg or not isinstance(res.payload, dict):
            refused.append(f"{name}: did not answer")
            continue
        info = res.payload
        rooms.append(NodeRoom(name, int(info["memory_free"]), int(info["memory_total"]),
                              int(info["disk_free"]), int(info["disk_total"]),
                              counts.get(uuid, 0)))
    return rooms, refused
