"""gnt-node modify --backup-bwlimit through the real processor; gnt-backup export options."""

from __future__ import annotations

from typing import Any

import pytest
from support.loopback import Env

from ganeti import cli, errors, locking, objects, opcodes
from ganeti.client import gnt_backup, gnt_node
from ganeti.cmdlib.node import LUNodeSetParams


@pytest.fixture
def env(tmp_path: Any) -> Env:
    return Env(tmp_path)


def limit_of(env: Env, name: str) -> Any:
    node = env.cfg.get_node_info_by_name(name)
    assert node is not None
    return node.backup_bwlimit


def test_set_and_remove_a_node_limit(env: Env) -> None:
    changes = env.run(opcodes.OpNodeSetParams.create(node_name="node2", backup_bwlimit=4096))
    assert changes == [("backup_bwlimit", 4096)]
    assert limit_of(env, "node2") == 4096
    rows = env.run(opcodes.OpNodeQuery.create(output_fields=["name", "backup_bwlimit"]))
    assert ["node2", 4096] in rows and ["node3", 0] in rows
    changes = env.run(opcodes.OpNodeSetParams.create(node_name="node2", backup_bwlimit=0))
    assert changes == [("backup_bwlimit", "none")]
    assert limit_of(env, "node2") is None


def test_a_limit_alone_locks_the_node_shared(env: Env) -> None:
    op = opcodes.OpNodeSetParams.create(node_name="node2", backup_bwlimit=10)
    lu = LUNodeSetParams(env.ctx, op, lambda *_a: None)
    lu.ExpandNames()
    assert lu.share_locks[locking.LEVEL_NODE] is True
    lu = LUNodeSetParams(env.ctx, opcodes.OpNodeSetParams.create(
        node_name="node2", backup_bwlimit=10, drained=True), lambda *_a: None)
    lu.ExpandNames()
    assert lu.share_locks[locking.LEVEL_NODE] is False


def test_negative_limit_names_the_field(env: Env) -> None:
    with pytest.raises(errors.OpPrereqError, match="backup_bwlimit"):
        opcodes.OpNodeSetParams.create(node_name="node2", backup_bwlimit=-1)
    with pytest.raises(errors.OpPrereqError, match="at least one modification"):
        env.run(opcodes.OpNodeSetParams.create(node_name="node2"))


def test_cli_parses_limits() -> None:
    opts = cli.parse_command_line("gnt-node", gnt_node.COMMANDS,
                                  ["modify", "--backup-bwlimit", "none", "node2"])
    assert opts.backup_bwlimit == 0
    opts = cli.parse_command_line("gnt-node", gnt_node.COMMANDS,
                                  ["modify", "--backup-bwlimit", "2048", "node2"])
    assert opts.backup_bwlimit == 2048
    with pytest.raises(SystemExit):
        cli.parse_command_line("gnt-node", gnt_node.COMMANDS,
                               ["modify", "--backup-bwlimit", "-3", "node2"])
    opts = cli.parse_command_line("gnt-backup", gnt_backup.COMMANDS, [
        "export", "-n", "node3", "--bwlimit", "0", "--ionice-class", "idle", "inst1"])
    assert cli.model_values(opts, objects.BackupDefaults, "limit_") == {
        "bwlimit": 0, "ionice_class": "idle"}
    opts = cli.parse_command_line("gnt-backup", gnt_backup.COMMANDS,
                                  ["export", "-n", "node3", "inst1"])
    assert cli.model_values(opts, objects.BackupDefaults, "limit_") == {}
