"""gnt-cluster modify: backup defaults through the real processor, options from the model."""

from __future__ import annotations

from typing import Any

import pytest
from support.loopback import Env

from ganeti import errors, objects, opcodes
from ganeti.client import gnt_cluster


@pytest.fixture
def env(tmp_path: Any) -> Env:
    return Env(tmp_path)


def defaults(env: Env) -> dict[str, Any]:
    return env.run(opcodes.OpClusterQuery.create())["backup_defaults"]


def test_set_and_clear_backup_defaults(env: Env) -> None:
    assert defaults(env)["notify"] == "failure"
    env.run(opcodes.OpClusterSetParams.create(backup_defaults={
        "bwlimit": 10240, "timezone": "Europe/Berlin", "mail_to": ["root@localhost"]}))
    got = defaults(env)
    assert (got["bwlimit"], got["timezone"], got["mail_to"]) == (
        10240, "Europe/Berlin", ["root@localhost"])
    env.run(opcodes.OpClusterSetParams.create(backup_defaults={"bwlimit": None}))
    got = defaults(env)
    assert (got["bwlimit"], got["timezone"]) == (None, "Europe/Berlin")


@pytest.mark.parametrize(("change", "field"), [
    ({"timezone": "Mars/Olympus"}, "backup_defaults"),
    ({"bwlimit": -1}, "backup_defaults.bwlimit"),
    ({"ionice_level": 8}, "backup_defaults.ionice_level"),
    ({"notify": "sometimes"}, "backup_defaults.notify"),
    ({"nosuch": 1}, "backup_defaults.nosuch"),
])
def test_bad_defaults_name_the_field(env: Env, change: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.OpPrereqError) as info:
        env.run(opcodes.OpClusterSetParams.create(backup_defaults=change))
    assert info.value.ecode == errors.ECODE_INVAL
    assert field in str(info.value)
    assert defaults(env) == objects.BackupDefaults().model_dump(mode="json")


def test_nothing_to_change(env: Env) -> None:
    with pytest.raises(errors.OpPrereqError, match="Nothing to change"):
        env.run(opcodes.OpClusterSetParams.create())


def test_cli_options_are_derived_from_the_model() -> None:
    parser_opts = {flag for opt in gnt_cluster.COMMANDS["modify"].options for flag in opt.flags}
    for name in objects.BackupDefaults.model_fields:
        assert f"--backup-{name.replace('_', '-')}" in parser_opts
    from ganeti import cli
    opts = cli.parse_command_line("gnt-cluster", gnt_cluster.COMMANDS, [
        "modify", "--backup-bwlimit", "512", "--backup-mail-to", "a@x,b@y",
        "--backup-ionice-class", "none"])
    assert cli.model_values(opts, objects.BackupDefaults, "backup_default_") == {
        "bwlimit": 512, "mail_to": ["a@x", "b@y"], "ionice_class": None}
    with pytest.raises(SystemExit):
        cli.parse_command_line("gnt-cluster", gnt_cluster.COMMANDS,
                               ["modify", "--backup-notify", "sometimes"])
