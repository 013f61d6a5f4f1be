"""Helpers shared by the backup LUs, the export targets and the import modes.

This module imports no other backup LU module, so every one of them can use
it without an import cycle.
"""

from __future__ import annotations

from ganeti import errors
from ganeti.backup import exportmeta
from ganeti.cmdlib.base import LogicalUnit
from ganeti.objects import Node

MIB = 1024 * 1024


def node_by_name(lu: LogicalUnit, name: str) -> Node:
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


def online_node_names(lu: LogicalUnit) -> list[str]:
    return sorted(n.name for n in lu.cfg.snapshot().get_all_nodes_info().values()
                  if not n.offline)


def query_exports(lu: LogicalUnit, nodes: list[str]) -> dict[str, list[str] | None]:
    """``{node: [instance names] or None when the node did not answer}``."""
    answers: dict[str, list[str] | None] = {}
    for node, res in lu.rpc.call_export_list(nodes).items():
        answers[node] = None if res.fail_msg else list(res.payload)
    return answers
