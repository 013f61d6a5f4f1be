"""LUBackupExport records its outcome in the export statistics (local and remote mode).

Loopback harness (test/support/loopback.py): real LUs, node procedures and TLS
streams, failures injected at the RPC boundary.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from support.loopback import (
    Env,
    Import,
    certified_env,
    fill_source,
    remote_export_op,
    remote_pair,
)

from ganeti import errors, opcodes, query
from ganeti.backup.export_stats import ExportRecord, ExportStats

MIB = 1 << 20
# 300,000 random bytes at the start of each of the 2 disks: the allocated 4 KiB
# blocks are what is sent
DATA = 2 * -(-300_000 // 4096) * 4096


def record(env: Env, name: str = "inst1") -> ExportRecord | None:
    return ExportStats.for_paths(env.ctx.paths).get(env.inst(name).uuid)


def export(env: Env, **fields: Any) -> Any:
    return env.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3",
                                                 **fields))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    env = certified_env(tmp_path)
    env.create("inst1", start=False)
    for disk in env.inst("inst1").disks:
        with open(disk.logical_id[1], "r+b") as handle:
            handle.write(os.urandom(300_000))
    return env


def test_success_failures_reset(env: Env) -> None:
    assert record(env) is None
    before = time.time()
    assert export(env) == (True, [True, True])
    rec = record(env)
    assert rec is not None and before <= (rec.last_success or 0) <= time.time()
    assert rec.failures == 0 and rec.target == "node3"
    assert rec.data_bytes == DATA and (rec.wire_bytes or 0) >= DATA
    assert rec.disk_bytes == 6 * MIB and (rec.duration or 0) > 0
    first = rec.last_success
    # Exec fails (the target's answer to finalize is lost): one failure
    env.rpc.fail["export_finalize"] = "injected: finalize failed"
    with pytest.raises(errors.OpExecError):
        export(env)
    del env.rpc.fail["export_finalize"]
    # CheckPrereq refuses (offline target): another
    env.set_offline("node3", True)
    with pytest.raises(errors.OpPrereqError):
        export(env)
    # a dry run is no attempt
    with pytest.raises(errors.OpPrereqError):
        export(env, dry_run=True)
    env.set_offline("node3", False)
    rec = record(env)
    assert rec is not None and rec.failures == 2 and rec.last_success == first
    assert rec.last_error is not None and "offline" in rec.last_error
    assert export(env) == (True, [True, True])
    rec = record(env)
    assert rec is not None and rec.failures == 0 and (rec.last_success or 0) > (first or 0)


def test_query_fields(env: Env) -> None:
    from ganeti.query_resources import instance as qinstance

    fields = ["name", "export.last_success", "export.failures", "export.target"]

    def rows() -> list[list[Any]]:
        qinstance.register()
        source = type("Source", (), {"context": env.ctx})()
        answer = query.query(query.RESOURCE_INSTANCE, fields, source=source)
        return [[value for _, value in row] for row in answer["data"]]

    assert rows() == [["inst1", None, 0, None]]
    export(env)
    ((name, last, failures, target),) = rows()
    assert (name, failures, target) == ("inst1", 0, "node3") and last
    # OpInstanceQuery reads the same store
    assert env.run(opcodes.OpInstanceQuery.create(
        output_fields=["export.failures", "export.target"], names=["inst1"])) == [
            [0, "node3"]]


def test_unwritable_store_never_fails_the_export(env: Env) -> None:
    # a directory where the store's file should be: every write fails
    path = env.ctx.paths.data_dir / "export-stats.json"
    path.mkdir(parents=True)
    assert export(env) == (True, [True, True])
    assert any("export statistics" in str(m) for m in env.cbs.log)


def test_remote_export_is_recorded(tmp_path: Path) -> None:
    src, dst = remote_pair(tmp_path)
    fill_source(src)
    prepared = src.run(opcodes.OpBackupPrepare.create(instance_name="inst1", mode="remote"))
    imp = Import(src, dst, prepared)
    entry = imp.endpoints()
    assert src.run(remote_export_op(prepared, entry)) == (True, [True, True])
    assert imp.join() == ["node3"]
    rec = record(src)
    assert rec is not None and rec.failures == 0 and rec.target == "remote"
    # the one-sided sender's counters (wire bytes too)
    assert rec.data_bytes == DATA and (rec.wire_bytes or 0) >= DATA
