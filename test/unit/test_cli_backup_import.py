"""gnt-backup import options, run through the client's command table into the real LU
(loopback RPC harness: real node procedures, per-node roots, the fake hypervisor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env, certified_env

from ganeti import cli, errors, locking, opcodes
from ganeti.client import gnt_backup
from ganeti.cmdlib import iallocator


@pytest.fixture
def exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """inst1 (one NIC, 64 MiB) on node2 with an export on node3; the client's jobs run
    in the harness."""
    env = certified_env(tmp_path)
    env.create("inst1", nics=[{}], beparams={"maxmem": 64}, start=False)
    assert env.run(opcodes.OpBackupExport.create(instance_name="inst1",
                                                 target_node="node3")) == (True, [True, True])

    def submit(op: opcodes.OpCode, opts: Any = None, cl: Any = None,
               feedback_fn: Any = None) -> Any:
        if opts is not None:
            cli.set_generic_opcode_opts(op, opts)
        return env.run(op)

    monkeypatch.setattr(cli, "submit_opcode", submit)
    return env


def _import(*argv: str) -> int:
    return gnt_backup.main(["import", "--src-node", "node3", "--src-dir", "inst1",
                            "--no-start", *argv])


def test_no_nics_gives_an_instance_without_nics(exported: Env) -> None:
    assert _import("-n", "node1", "--no-nics", "copy1") == cli.EXIT_SUCCESS
    assert exported.inst("copy1").nics == []
    # without it the export's NIC comes back (with a new MAC: the old one is in use)
    assert _import("-n", "node1", "copy2") == cli.EXIT_SUCCESS
    nics = exported.inst("copy2").nics
    assert len(nics) == 1 and nics[0].mac != exported.inst("inst1").nics[0].mac


def _pnode(env: Env, name: str) -> str:
    node = env.cfg.get_node_info(env.inst(name).primary_node)
    assert node is not None
    return str(node.name)


def _pre_hook_locks(env: Env, name: str) -> dict[int, list[str]]:
    hooks = [h for h in env.rpc.hooks if h["hpath"] == "instance-add" and h["phase"] == "pre"
             and h["env"].get("GANETI_INSTANCE_NAME") == name]
    return dict(hooks[0]["locks"])


def test_iallocator_hail_picks_the_emptier_usable_node_and_keeps_only_its_locks(
        exported: Env) -> None:
    # the harness's nodes share one machine (same free memory and disk): node2 holds
    # inst1, so node1 and node3 have more room by instance count; node1 is drained
    node1 = exported.cfg.get_node_info_by_name("node1")
    assert node1 is not None
    node1.drained = True
    exported.cfg.update(node1)
    assert _import("-I", "hail", "copy1") == cli.EXIT_SUCCESS
    assert _pnode(exported, "copy1") == "node3"
    locks = _pre_hook_locks(exported, "copy1")
    assert locks[locking.LEVEL_NODE] == ["node3"] and locks[locking.LEVEL_NODE_RES] == ["node3"]
    # '.': the cluster's default allocator, the same one; node3 has copy1 now
    node1.drained = False
    exported.cfg.update(node1)
    assert _import("-I", ".", "copy2") == cli.EXIT_SUCCESS
    assert _pnode(exported, "copy2") == "node1"
    locks = _pre_hook_locks(exported, "copy2")
    # the export's node stays locked for the copy
    assert locks[locking.LEVEL_NODE] == ["node1", "node3"]
    assert locks[locking.LEVEL_NODE_RES] == ["node1"]


def test_iallocator_without_room_names_the_need_and_creates_nothing(
        exported: Env, capsys: pytest.CaptureFixture[str]) -> None:
    before = exported.disk_files("node1") + exported.disk_files("node2")
    assert _import("-I", "hail", "--disk", "0:size=60T", "--disk", "1:size=2",
                   "copy1") == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "hail found no node" in err and "MiB of disk" in err and "node1:" in err
    assert exported.cfg.get_instance_info_by_name("copy1") is None
    assert exported.disk_files("node1") + exported.disk_files("node2") == before


def test_iallocator_option_errors_before_any_job(
        exported: Env, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    submitted: list[Any] = []
    monkeypatch.setattr(cli, "submit_opcode", lambda op, *a, **k: submitted.append(op))
    assert _import("-I", "hail", "-n", "node1", "copy1") == cli.EXIT_FAILURE
    assert "-n/--node or -I/--iallocator" in capsys.readouterr().err
    assert _import("-I", "hspace", "copy1") == cli.EXIT_USAGE
    assert "unknown allocator 'hspace'" in capsys.readouterr().err
    assert _import("--ip-check", "-n", "node1", "copy1") == cli.EXIT_FAILURE
    assert "--ip-check needs --name-check" in capsys.readouterr().err
    assert submitted == []


def test_allocator_prefers_room_then_fewer_instances() -> None:
    request = iallocator.Request(memory=512, disk=1024)
    rooms = [iallocator.NodeRoom("a", 1000, 4000, 90_000, 100_000, 0),
             iallocator.NodeRoom("b", 3000, 4000, 90_000, 100_000, 5),
             iallocator.NodeRoom("c", 3000, 4000, 90_000, 100_000, 2),
             iallocator.NodeRoom("d", 400, 4000, 99_000, 100_000, 0)]
    assert iallocator.allocate(request, rooms) == "c"
    # disk scarcer than memory: the share left is the smaller of the two
    rooms.append(iallocator.NodeRoom("e", 3900, 4000, 2000, 100_000, 0))
    assert iallocator.allocate(request, rooms) == "c"
    with pytest.raises(errors.OpPrereqError, match="d: 400 MiB memory free") as err:
        iallocator.allocate(request, rooms[3:4], ["x: offline"])
    assert err.value.ecode == errors.ECODE_NORES and "x: offline" in str(err.value)


def test_name_check_and_ip_check(exported: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert _import("-n", "node1", "--name-check", "nosuch.invalid") == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "'nosuch.invalid' does not resolve" in err and "--no-name-check" in err
    # localhost resolves; something always answers at 127.0.0.1 (a refusal is an answer)
    assert _import("-n", "node1", "--name-check", "--ip-check", "localhost") \
        == cli.EXIT_FAILURE
    assert "127.0.0.1 of instance localhost is already in use" in capsys.readouterr().err
    assert exported.cfg.get_instance_info_by_name("localhost") is None
    assert _import("-n", "node1", "--name-check", "--no-ip-check", "localhost") \
        == cli.EXIT_SUCCESS
    assert _pnode(exported, "localhost") == "node1"


def test_ignore_ipolicy_reaches_the_opcode(exported: Env,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    ops: list[Any] = []
    monkeypatch.setattr(cli, "submit_opcode", lambda op, *a, **k: ops.append(op))
    assert _import("-n", "node1", "--ignore-ipolicy", "--no-name-check", "--no-ip-check",
                   "copy1") == cli.EXIT_SUCCESS
    assert ops[0].ignore_ipolicy and not ops[0].name_check and not ops[0].ip_check
    assert opcodes.from_dict(ops[0].to_dict()).to_dict() == ops[0].to_dict()
