"""Schedule semantics shared by the LUs, the CLI and the runner.

Cron expressions are evaluated by ``cronsim`` (standard 5-field syntax) in
UTC.  A schedule is due when a cron slot fell after its last run (or its
creation) and at or before "now": however many slots were missed while
nothing ran, one run catches them all up.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsim import CronSim, CronSimError

from ganeti import errors
from ganeti.backup import retention

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NODE_POLICIES = ("fixed", "primary", "other")
SHUTDOWN_MODES = ("shutdown", "snapshot")


def _field_error(field_name: str, message: str) -> errors.OpPrereqError:
    return errors.OpPrereqError(f"Schedule field '{field_name}': {message}",
                                errors.ECODE_INVAL)


def check_cron(expr: str) -> str:
    """Normalised expression, or OpPrereqError naming the ``cron`` field."""
    text = " ".join(expr.split())
    if len(text.split(" ")) != 5:
        raise _field_error("cron", f"expected 5 fields (minute hour day month weekday),"
                                   f" got {expr!r}")
    try:
        CronSim(text, datetime.now(UTC))
    except CronSimError as err:
        raise _field_error("cron", f"{err} in {expr!r}") from None
    return text


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise _field_error("name", f"invalid schedule name {name!r} (letters, digits,"
                                   " '.', '_', '-'; up to 64)")
    return name


def check_retention(policy: dict[str, Any]) -> dict[str, int]:
    try:
        return retention.check_policy(policy)
    except retention.PolicyError as err:
        raise _field_error(err.field, str(err).split(": ", 1)[1]) from None


def check_target(node_policy: str, target_node: str | None) -> None:
    if node_policy not in NODE_POLICIES:
        raise _field_error("node_policy", f"unknown policy {node_policy!r} (choose from"
                                          f" {', '.join(NODE_POLICIES)})")
    if node_policy == "fixed" and not target_node:
        raise _field_error("target_node", "a target node is needed with node_policy fixed")
    if node_policy != "fixed" and target_node:
        raise _field_error("target_node", f"must be empty with node_policy {node_policy}")


def check_selection(instances: list[str], tags: list[str], all_instances: bool) -> None:
    if all_instances and (instances or tags):
        raise _field_error("all_instances", "cannot be combined with instances or tags")
    if not (all_instances or instances or tags):
        raise _field_error("instances", "select instances by name, by tag or all of them")


def next_slot(cron: str, after: float) -> float:
    """First slot strictly after ``after`` (epoch seconds)."""
    start = datetime.fromtimestamp(after, UTC)
    return next(CronSim(cron, start)).timestamp()


def last_slot(cron: str, at_or_before: float) -> float:
    """Latest slot at or before ``at_or_before``."""
    minute = datetime.fromtimestamp(at_or_before, UTC).replace(second=0, microsecond=0)
    # reverse iteration yields slots strictly before its start: start one minute later
    return next(CronSim(cron, minute + timedelta(minutes=1), reverse=True)).timestamp()


def is_due(cron: str, last_run: float, now: float) -> bool:
    """A slot in (last_run, now]: catch-up runs once, however many slots were missed."""
    return next_slot(cron, last_run) <= now


def selects(schedule: dict[str, Any], name: str, tags: list[str]) -> bool:
    if schedule.get("all_instances"):
        return True
    return name in schedule.get("instances", []) or bool(
        set(tags) & set(schedule.get("tags", [])))
