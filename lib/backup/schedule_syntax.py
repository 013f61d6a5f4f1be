"""Syntax of the schedule fields that need more than a type: name, cron, exclusions.

A leaf module (no ganeti imports) so that the one schedule model in
``ganeti.objects`` can use these checks as field validators; they raise
ValueError naming the schedule field (``Schedule field 'cron': ...``), which
pydantic reports with the field's path and the LUs as OpPrereqError.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime

from cronsim import CronSim, CronSimError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# cron's @-shortcuts (@reboot has no meaning here)
SHORTCUTS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
EXCLUDE_TAG_PREFIX = "tag:"


def field_error(field_name: str, message: str) -> ValueError:
    return ValueError(f"Schedule field '{field_name}': {message}")


def name(value: str) -> str:
    if not NAME_RE.match(value):
        raise field_error("name", f"invalid schedule name {value!r} (letters, digits, '.',"
                                  " '_', '-'; up to 64)")
    return value


def cron(expr: str) -> str:
    """The normalised expression (single spaces, lower-case shortcut)."""
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text.lower() not in SHORTCUTS:
            raise field_error("cron", f"unknown shortcut {expr!r} (choose from"
                                      f" {', '.join(SHORTCUTS)})")
        return text.lower()
    if len(text.split(" ")) != 5:
        raise field_error("cron", f"expected 5 fields (minute hour day month weekday) or a"
                                  f" shortcut such as @daily, got {expr!r}")
    try:
        CronSim(text, datetime.now(zoneinfo.ZoneInfo("UTC")))
    except CronSimError as err:
        raise field_error("cron", f"{err} in {expr!r}") from None
    return text


def exclude_item(value: str) -> str:
    if value == EXCLUDE_TAG_PREFIX:
        raise field_error("exclude", "'tag:' needs a tag name")
    return value
