"""Export limits resolved by the LUs and applied by the (in-process) node procedures.

The job log names the effective values (opcode, else cluster default; node
limits) and then what each node procedure reports it applies to its side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env, Import, certified_env, fill_source, remote_export_op, remote_pair

from ganeti import opcodes


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return certified_env(tmp_path)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Env, Env]:
    return remote_pair(tmp_path)


def messages(log: list[Any]) -> str:
    return "\n".join(str(m) for m in log)


def test_local_export_uses_cluster_defaults_and_node_limits(env: Env) -> None:
    fill_source(env)
    env.run(opcodes.OpClusterSetParams.create(backup_defaults={
        "bwlimit": 51200, "ionice_class": "idle"}))
    env.run(opcodes.OpNodeSetParams.create(node_name="node3", backup_bwlimit=40960))
    assert env.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3")
                   ) == (True, [True, True])
    log = messages(env.cbs.log)
    assert ("Bandwidth limit 51200 KiB/s (50.0 MiB/s) for the whole export (shared by its 2"
            " disk streams); node limits: node2 none, node3 40960 KiB/s (40.0 MiB/s);"
            " I/O priority: idle") in log
    for disk in ("disk/0", "disk/1"):
        assert (f"{disk} sender on node2: export limit 51200 KiB/s (50.0 MiB/s), I/O"
                " priority idle") in log
        assert (f"{disk} receiver on node3: node limit 40960 KiB/s (40.0 MiB/s), I/O"
                " priority idle") in log


def test_export_values_override_the_defaults(env: Env) -> None:
    fill_source(env)
    env.run(opcodes.OpClusterSetParams.create(backup_defaults={
        "bwlimit": 51200, "ionice_class": "idle"}))
    env.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3",
                                          bwlimit=0, ionice_level=2))
    log = messages(env.cbs.log)
    assert ("Bandwidth limit none; node limits: node2 none, node3 none; I/O priority:"
            " idle") in log  # a level alone keeps the default class; idle has no levels
    assert "export limit" not in log and "node limit " not in log


def test_remote_export_limits_each_cluster_on_its_side(pair: tuple[Env, Env]
                                                       ) -> None:
    src, dst = pair
    fill_source(src)
    dst.run(opcodes.OpNodeSetParams.create(node_name="node3", backup_bwlimit=30720))
    prepared = src.run(opcodes.OpBackupPrepare.create(instance_name="inst1", mode="remote"))
    imp = Import(src, dst, prepared)
    entry = imp.endpoints()
    assert src.run(remote_export_op(prepared, entry, bwlimit=20480, ionice_class="best-effort",
                           ionice_level=6)) == (True, [True, True])
    assert imp.join() == ["node3"]
    sent = messages(src.cbs.log)
    assert ("Bandwidth limit 20480 KiB/s (20.0 MiB/s) for the whole export (shared by its 2"
            " disk streams); node limits: node2 none; I/O priority: best-effort level 6"
            ) in sent
    assert ("disk/0 on node2: export limit 20480 KiB/s (20.0 MiB/s), I/O priority"
            " best-effort level 6") in sent
    received = messages(imp.cbs.log)
    assert "node limits: node3 30720 KiB/s (30.0 MiB/s)" in received
    assert "disk/1 on node3: node limit 30720 KiB/s (30.0 MiB/s)" in received
