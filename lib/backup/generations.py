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
    """One row per generation: node, instance, generation, timestamp, keep, reasons."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for gen in generations:
        groups.setdefault((str(gen["node"]), str(gen["instance"])), []).append(gen)
    rows: list[dict[str, Any]] = []
    for (node, instance), gens in sorted(groups.items()):
        # the newest export first among equal timestamps (same-second exports)
        gens.sort(key=lambda g: (-float(g["timestamp"]), not g.get("newest")))
        for decision in retention.plan([float(g["timestamp"]) for g in gens], policy):
            gen = gens[decision.index]
            # the newest is the Ganeti-visible export: never pruned
            newest = bool(gen.get("newest"))
            keep = decision.keep or newest
            reasons = decision.reasons if decision.keep else (
                ["newest export"] if newest else decision.reasons)
            rows.append({"node": node, "instance": instance,
                         "generation": gen["generation"], "timestamp": gen["timestamp"],
                         "newest": newest, "keep": keep, "reasons": list(reasons)})
    return rows
