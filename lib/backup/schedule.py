"""Schedule semantics shared by the LUs, the CLI and the runner.

Cron expressions (standard 5 fields, or the shortcuts ``@hourly`` ...
``@yearly``) are evaluated by ``cronsim`` in the schedule's time zone (its
override, else the cluster's ``backup_defaults.timezone``).  A schedule is
due when a slot fell after its last run (or its creation) and at or before
"now": however many slots were missed while nothing ran, one run catches
them all up.  Across DST changes cronsim behaves as Debian's cron: a fixed
time that does not exist in spring runs once right after the jump, a fixed
time repeated in autumn runs once; wildcard hours follow real time.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, get_args

from cronsim import CronSim

from ganeti import errors, objects
from ganeti.backup import retention, schedule_syntax
from ganeti.backup.schedule_syntax import EXCLUDE_TAG_PREFIX, SHORTCUTS

NODE_POLICIES: tuple[str, ...] = get_args(objects.NodePolicy)
SHUTDOWN_MODES: tuple[str, ...] = get_args(objects.ShutdownMode)


def _field_error(field_name: str, message: str) -> errors.OpPrereqError:
    return errors.OpPrereqError(f"Schedule field '{field_name}': {message}",
                                errors.ECODE_INVAL)


def _checked(check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except ValueError as err:  # the message names the field already
        raise errors.OpPrereqError(str(err), errors.ECODE_INVAL) from None


def check_cron(expr: str) -> str:
    """Normalised expression, or OpPrereqError naming the ``cron`` field."""
    return _checked(schedule_syntax.cron, expr)


def expand(cron: str) -> str:
    """The 5-field form of an expression (shortcuts expanded)."""
    return SHORTCUTS.get(cron, cron)


def check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides of the backup defaults (None values dropped), checked by the model."""
    cleaned = {k: v for k, v in overrides.items() if v is not None}
    for key, value in sorted(cleaned.items()):
        problem = objects.override_problem(key, value)
        if problem:
            raise _field_error(f"overrides.{key}", problem)
    return cleaned


def check_exclude(exclude: list[str], instances: list[str]) -> list[str]:
    """Exclusions (names or tag:T); refuses one that contradicts a selection by name."""
    for item in exclude:
        _checked(schedule_syntax.exclude_item, item)
    named = sorted(set(exclude) & set(instances))
    if named:
        raise _field_error("exclude", f"{', '.join(named)} also selected by name")
    return sorted(set(exclude))


def check_name(name: str) -> str:
    return _checked(schedule_syntax.name, name)


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


def _zone(tz: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(tz)


def next_slot(cron: str, after: float, tz: str = "UTC") -> float:
    """First slot strictly after ``after`` (epoch seconds), the cron read in ``tz``."""
    slots = CronSim(expand(cron), datetime.fromtimestamp(after, _zone(tz)))
    while True:
        # in a repeated autumn hour cronsim may answer the first pass of a wall-clock time
        # from the second one: that slot already went by
        slot = next(slots).timestamp()
        if slot > after:
            return slot


def last_slot(cron: str, at_or_before: float, tz: str = "UTC") -> float:
    """Latest slot at or before ``at_or_before``."""
    minute = datetime.fromtimestamp(at_or_before, _zone(tz)).replace(second=0, microsecond=0)
    # reverse iteration yields slots strictly before its start: start one minute later
    return next(CronSim(expand(cron), minute + timedelta(minutes=1), reverse=True)).timestamp()


def is_due(cron: str, last_run: float, now: float, tz: str = "UTC") -> bool:
    """A slot in (last_run, now]: catch-up runs once, however many slots were missed."""
    return next_slot(cron, last_run, tz) <= now


def excluded(schedule: dict[str, Any], name: str, tags: list[str]) -> bool:
    rules = schedule.get("exclude", [])
    return name in rules or any(f"{EXCLUDE_TAG_PREFIX}{t}" in rules for t in tags)


def selects(schedule: dict[str, Any], name: str, tags: list[str]) -> bool:
    if excluded(schedule, name, tags):
        return False
    if schedule.get("all_instances"):
        return True
    return name in schedule.get("instances", []) or bool(
        set(tags) & set(schedule.get("tags", [])))


def settings(defaults: dict[str, Any], schedule: dict[str, Any]) -> objects.BackupDefaults:
    """A schedule's backup settings in effect (cluster defaults, then its overrides)."""
    return objects.backup_settings(objects.BackupDefaults.model_validate(defaults),
                                   dict(schedule.get("overrides") or {}))
