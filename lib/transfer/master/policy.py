"""Master side of bandwidth limits and I/O priority: resolve once, pass to both ends.

The job resolves the effective values (the opcode's, else the cluster's
backup defaults; each node's ``backup_bwlimit``) into :class:`TransferLimits`;
the coordinators turn them into the transfer RPC options of each side:

* ``bwlimit`` (KiB/s) and ``bwlimit_group`` go to the senders: the export's
  disk streams share one bucket in the sending node daemon, so the limit is
  for the whole export, and a stream that finishes early leaves its share to
  the others;
* ``node_bwlimit`` goes to every side that counts against its node's limit
  (a stream whose both ends are on one node counts once, at the sender);
* ``ionice_class``/``ionice_level`` go to both sides.

Limits count wire bytes (after compression, with framing): what the network
carries.  The disk side is governed by the I/O priority.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ganeti.transfer.priority import IoPriority


def format_rate(kib_per_s: int) -> str:
    """"10240 KiB/s (10.0 MiB/s)"; 0: "none"."""
    if not kib_per_s:
        return "none"
    if kib_per_s < 1024:
        return f"{kib_per_s} KiB/s"
    return f"{kib_per_s} KiB/s ({kib_per_s / 1024:.1f} MiB/s)"


@dataclass(frozen=True)
class TransferLimits:
    """Effective limits of one job's streams; KiB/s, 0: no limit."""

    bwlimit: int = 0
    node_bwlimits: Mapping[str, int] = field(default_factory=dict)
    ionice_class: str | None = None
    ionice_level: int | None = None

    @property
    def io_priority(self) -> IoPriority | None:
        return IoPriority.create(self.ionice_class, self.ionice_level)

    def _priority_options(self) -> dict[str, Any]:
        prio = self.io_priority
        if prio is None:
            return {}
        return {"ionice_class": prio.klass, "ionice_level": prio.level}

    def send_options(self, node: str, group: str) -> dict[str, Any]:
        options = {"node_bwlimit": self.node_bwlimits.get(node, 0),
                   **self._priority_options()}
        if self.bwlimit:
            options.update(bwlimit=self.bwlimit, bwlimit_group=group)
        return options

    def receive_options(self, node: str, counted: bool = True) -> dict[str, Any]:
        """``counted`` False: the sender on the same node already counts the stream."""
        options = self._priority_options()
        if counted:
            options["node_bwlimit"] = self.node_bwlimits.get(node, 0)
        return options

    def describe(self, streams: int, nodes: Iterable[str]) -> str:
        """The job log line naming what applies."""
        parts = [f"Bandwidth limit {format_rate(self.bwlimit)}"]
        if self.bwlimit and streams > 1:
            parts[0] += f" for the whole export (shared by its {streams} disk streams)"
        node_limits = [f"{node} {format_rate(self.node_bwlimits.get(node, 0))}"
                       for node in dict.fromkeys(nodes)]
        parts.append(f"node limits: {', '.join(node_limits)}")
        prio = self.io_priority
        parts.append(f"I/O priority: {prio if prio is not None else 'unchanged'}")
        return "; ".join(parts)


def resolve(op_bwlimit: int | None, op_class: str | None, op_level: int | None,
            defaults: Any, nodes: Iterable[Any]) -> TransferLimits:
    """The opcode's values, else the cluster's backup defaults; nodes' own limits."""
    bwlimit = op_bwlimit if op_bwlimit is not None else (defaults.bwlimit or 0)
    klass = op_class if op_class is not None else defaults.ionice_class
    level = op_level if op_level is not None else defaults.ionice_level
    return TransferLimits(
        bwlimit=bwlimit,
        node_bwlimits={node.name: node.backup_bwlimit or 0 for node in nodes},
        ionice_class=klass, ionice_level=level)


def describe_status(status: Mapping[str, Any]) -> str | None:
    """What a node reports it applies to one side, or None when nothing is limited."""
    parts = []
    if status.get("bwlimit"):
        parts.append(f"export limit {format_rate(int(status['bwlimit']))}")
    if status.get("node_bwlimit"):
        parts.append(f"node limit {format_rate(int(status['node_bwlimit']))}")
    if status.get("ionice"):
        parts.append(f"I/O priority {status['ionice']}")
    return ", ".join(parts) or None
