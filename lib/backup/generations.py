"""Prune plans over export generations as the nodes report them (pure, no I/O).

Generations are grouped per (node, instance): retention is applied to the
exports of one instance on one node, the set a finalize moved aside there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ganeti.backup import retention


def prune_plan(generations: Iterable[Mapping[str, Any]],
               policy: Mapping[str, int | None]) -> list[dict[str, Any]]:
    """One row per generation: node, instance, generation, timestamp, keep, reasons.

    Protected generations are kept with the reason "protected" and, as in
    Proxmox VE and PBS, take no keep-* slot and cover no period: the rules
    select among the unprotected ones as if the protected ones were not there.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for gen in generations:
        groups.setdefault((str(gen["node"]), str(gen["instance"])), []).append(gen)
    rows: list[dict[str, Any]] = []
    for (node, instance), gens in sorted(groups.items()):
        # the newest export first among equal timestamps (same-second exports)
        gens.sort(key=lambda g: (-float(g["timestamp"]), not g.get("newest")))
        candidates = [g for g in gens if not g.get("protected")]
        decisions = {id(candidates[d.index]): d for d in
                     retention.plan([float(g["timestamp"]) for g in candidates], policy)}
        for gen in gens:
            # the newest is the Ganeti-visible export: never pruned
            newest = bool(gen.get("newest"))
            decision = decisions.get(id(gen))
            if decision is None:
                keep, reasons = True, ["protected"]
            elif decision.keep:
                keep, reasons = True, decision.reasons
            else:
                keep, reasons = newest, ["newest export"] if newest else decision.reasons
            rows.append({"node": node, "instance": instance,
                         "generation": gen["generation"], "timestamp": gen["timestamp"],
                         "newest": newest, "protected": bool(gen.get("protected")),
                         "note": str(gen.get("note") or ""), "keep": keep,
                         "reasons": list(reasons)})
    return rows
