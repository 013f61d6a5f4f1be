"""One schedule model: add, modify, the CLI and the config accept and refuse the same values.

Before ScheduleSpec the four had their own copies of the fields, and they had
drifted (the config took a negative keep count or an empty instance name, modify
an empty target node).  Each case here goes through all four entry points.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest

from ganeti import cli, errors, objects, opcodes
from ganeti.client import gnt_backup_schedule as gbs

BASE = {"instances": ["inst1"], "target_node": "node3", "cron": "0 3 * * *"}
BASE_ARGV = ["--instances", "inst1", "-n", "node3", "--cron", "0 3 * * *"]

# (fields for the opcodes and the config, the same as add/modify options)
GOOD: list[tuple[dict[str, Any], list[str]]] = [
    ({"cron": "@Daily"}, ["--cron", "@Daily"]),
    ({"cron": "*/5 1-3 * * 1-5"}, ["--cron", "*/5 1-3 * * 1-5"]),
    ({"retention": {"keep_daily": 0, "keep_last": 3}}, ["--keep-daily", "0", "--keep-last", "3"]),
    ({"exclude": ["tag:db", "inst2"]}, ["--exclude", "tag:db,inst2"]),
    ({"node_policy": "primary", "target_node": None}, ["--node-policy", "primary"]),
    ({"shutdown_mode": "snapshot"}, ["--shutdown-mode", "snapshot"]),
    ({"enabled": False}, ["--enabled", "no"]),
    ({"overrides": {"ionice_level": 7, "timezone": "Europe/Berlin"}},
     ["--ionice-level", "7", "--timezone", "Europe/Berlin"]),
]
BAD: list[tuple[str, dict[str, Any], list[str]]] = [
    ("cron", {"cron": "* * *"}, ["--cron", "* * *"]),
    ("cron", {"cron": "0 24 * * *"}, ["--cron", "0 24 * * *"]),
    ("cron", {"cron": "@reboot"}, ["--cron", "@reboot"]),
    ("keep_daily", {"retention": {"keep_daily": -1}}, ["--keep-daily", "-1"]),
    ("keep_daly", {"retention": {"keep_daly": 1}}, []),
    ("exclude", {"exclude": ["tag:"]}, ["--exclude", "tag:"]),
    ("instances", {"instances": [""]}, []),
    ("node_policy", {"node_policy": "random"}, ["--node-policy", "random"]),
    ("target_node", {"target_node": ""}, []),
    ("shutdown_mode", {"shutdown_mode": "pause"}, ["--shutdown-mode", "pause"]),
    ("overrides.ionice_level", {"overrides": {"ionice_level": 9}}, ["--ionice-level", "9"]),
    ("overrides.timezone", {"overrides": {"timezone": "Nowhere/Land"}},
     ["--timezone", "Nowhere/Land"]),
    ("overrides.colour", {"overrides": {"colour": "red"}}, []),
]
IDS = [f"{field}={next(iter(fields.values()))!r}" for field, fields, _argv in BAD]


def _parse(command: str, argv: list[str]) -> argparse.Namespace:
    return cli.parse_command_line("gnt-backup schedule", gbs.COMMANDS,
                                  [command, "nightly", *argv])


def _entry_points(fields: dict[str, Any], argv: list[str]
                  ) -> dict[str, Callable[[], Any] | None]:
    """Each way in, as a call that builds (and so checks) a schedule or a change."""
    base_argv = [a for a in BASE_ARGV if "target_node" not in fields or a not in ("-n", "node3")]
    return {
        "add": lambda: opcodes.OpBackupScheduleAdd.create(name="nightly", **{**BASE, **fields}),
        "modify": lambda: opcodes.OpBackupScheduleModify.create(name="nightly", **fields),
        "config": lambda: objects.BackupSchedule.from_dict(
            {"name": "nightly", **BASE, **fields}),
        "cli add": (lambda: gbs.add_opcode(_parse("add", [*base_argv, *argv])))
        if argv else None,
        "cli modify": (lambda: gbs.modify_opcode(_parse("modify", argv), {})) if argv else None,
    }


@pytest.mark.parametrize(("fields", "argv"), GOOD, ids=[a[1] for _f, a in GOOD])
def test_every_entry_point_accepts_the_same_values(fields: dict[str, Any],
                                                   argv: list[str]) -> None:
    built = {name: call() for name, call in _entry_points(fields, argv).items() if call}
    stored = built["config"].to_dict()
    add = built["add"].to_dict()
    for key in fields:
        assert add[key] == stored[key]
        assert built["cli add"].to_dict()[key] == stored[key], key
    # normalised once, by the model: the same stored form whichever way it came in
    if "cron" in fields:
        assert stored["cron"] == " ".join(fields["cron"].split()).replace("@Daily", "@daily")
    if "retention" in fields:
        assert stored["retention"] == {"keep_last": 3}


@pytest.mark.parametrize(("field", "fields", "argv"), BAD, ids=IDS)
def test_every_entry_point_refuses_the_same_values_naming_the_field(
        field: str, fields: dict[str, Any], argv: list[str]) -> None:
    for name, call in _entry_points(fields, argv).items():
        if call is None:
            continue
        with pytest.raises((errors.OpPrereqError, errors.ConfigurationError,
                            SystemExit)) as err:
            call()
        if isinstance(err.value, SystemExit):  # argparse refused the option value itself
            assert name.startswith("cli") and err.value.code == 2
            continue
        assert field.rsplit(".", 1)[-1] in str(err.value.args[0]), (name, err.value)
        if err.type is errors.OpPrereqError:
            assert err.value.args[1] == errors.ECODE_INVAL


def test_existing_config_schedules_still_load() -> None:
    """A schedule as written by the previous release (plain dicts) loads unchanged; fields
    added since take their defaults (verify: off)."""
    stored = {"uuid": "u1", "serial_no": 3, "ctime": 1.0, "mtime": 2.0, "name": "nightly",
              "instances": ["inst1"], "tags": [], "all_instances": False,
              "node_policy": "fixed", "target_node": "node3", "cron": "0 3 * * *",
              "compress": "none", "shutdown_mode": "shutdown",
              "retention": {"keep_daily": 7}, "enabled": True, "exclude": ["tag:db"],
              "overrides": {"notify": "always"}}
    schedule = objects.BackupSchedule.from_dict(stored)
    assert schedule.retention.rules() == {"keep_daily": 7}
    assert schedule.to_dict() == {**stored, "verify": False}
