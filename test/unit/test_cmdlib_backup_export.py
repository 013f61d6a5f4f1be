"""LUBackupExport (local mode) and the local import mode, on the loopback RPC harness.

Real node procedures on per-node roots under tmp_path, real TLS streams on
127.0.0.x, the fake hypervisor; no daemon.  Failures are injected at the RPC
boundary (``LoopbackRpc.fail`` / ``fail_after``) or in the node's finalize
transaction (``ganeti.backend.export.FAULT_HOOK``), and each test checks what
the LU left behind: the instance's state, staging directories, snapshots and
the previous export.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env, certified_env

from ganeti import errors, locking, opcodes
from ganeti.backend import export as ex
from ganeti.backend import export_layout
from ganeti.backend import instance as bk
from ganeti.backup import exportconf
from ganeti.cmdlib.export_local import LocalExport
from ganeti.storage import reflink
from ganeti.storage.base import SNAP_MARKER


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """An Env with the cluster certificates exports use."""
    return certified_env(tmp_path)


def _fill(harness: Env, seed: bytes) -> None:
    for idx, disk in enumerate(harness.inst("inst1").disks):
        with open(disk.logical_id[1], "r+b") as handle:
            handle.write(hashlib.sha256(seed + bytes([idx])).digest() * 1000)


def _tree(path: Path) -> dict[str, str]:
    """Every file below ``path``: relative name -> sha256 (config.ini and dumps)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _dumps(harness: Env, count: int = 2) -> list[str]:
    """sha256 of each disk dump of the current export on node3, by disk index."""
    path = _export_dir(harness) / "inst1"
    return [hashlib.sha256((path / exportconf.dump_name(idx)).read_bytes()).hexdigest()
            for idx in range(count)]


def _digests(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def _export_dir(harness: Env) -> Path:
    return harness.roots["node3"].paths.export_dir


def _staging(harness: Env) -> Path:
    return ex.staging_path(harness.roots["node3"], "inst1")


def _snapshots(harness: Env) -> list[Path]:
    """Snapshots an export left behind (not the export bases it keeps on purpose)."""
    return [p for p in harness.disk_files()
            if SNAP_MARKER in p.name and not p.name.endswith(".snap-backup-base")]


def _bases(harness: Env) -> list[Path]:
    return [p for p in harness.disk_files() if p.name.endswith(".snap-backup-base")]


def _export(harness: Env, **fields: Any) -> Any:
    return harness.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3",
                                                 **fields))


@pytest.fixture
def running(env: Env) -> Env:
    """inst1 running on node2, with a good export on node3 already."""
    env.create("inst1")
    assert env.live() is not None
    _fill(env, b"first")
    # file storage on tmp_path has no reflinks: the instance is down for the copy
    assert _export(env, long_sleep=True) == (True, [True, True])
    assert env.live() is not None
    _fill(env, b"second")
    return env


@pytest.fixture
def snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reflink snapshots on any filesystem: a full copy stands in for the clone."""
    monkeypatch.setattr(reflink, "supports_reflink", lambda _directory: True)
    monkeypatch.setattr(reflink, "clone_file", shutil.copyfile)


def test_export_locks_and_hooks_the_target_node(running: Env) -> None:
    hooks = [h for h in running.rpc.hooks if h["hpath"] == "instance-export"]
    assert {h["node"] for h in hooks} == {"node1", "node2", "node3"}
    assert all(h["env"]["GANETI_EXPORT_MODE"] == "local"
               and h["env"]["GANETI_EXPORT_NODE"] == "node3" for h in hooks)
    assert hooks[0]["locks"][locking.LEVEL_INSTANCE] == ["inst1"]
    assert hooks[0]["locks"][locking.LEVEL_NODE] == ["node2", "node3"]
    assert running.ctx.glm.names(locking.LEVEL_INSTANCE) == {"inst1"}
    assert _tree(_export_dir(running) / "inst1") and not _staging(running).exists()


@pytest.mark.parametrize("where", ["rpc", "node"])
def test_failed_finalize_aborts_staging_restarts_and_keeps_the_previous_export(
        running: Env, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    previous = _tree(_export_dir(running) / "inst1")
    if where == "rpc":      # the target node's answer is lost
        running.rpc.fail["export_finalize"] = "injected: finalize failed"
    else:                   # the swap into place fails inside the node's transaction

        def fault(op: str, _paths: tuple[Path, ...]) -> None:
            if op == "exchange":
                raise OSError(5, "injected: I/O error")
        monkeypatch.setattr(export_layout, "FAULT_HOOK", fault)
    with pytest.raises(errors.OpExecError,
                       match=r"Export failed, errors in export finalization$"):
        _export(running, long_sleep=True)
    assert running.live() is not None, "the instance was not started again"
    assert not _staging(running).exists(), "the staging directory was not aborted"
    assert _tree(_export_dir(running) / "inst1") == previous
    assert running.inst().admin_state == "up"
    assert running.ctx.glm.names(locking.LEVEL_INSTANCE) == {"inst1"}


def test_failed_disk_copy_aborts_staging_and_restarts(running: Env) -> None:
    previous = _tree(_export_dir(running) / "inst1")
    running.rpc.fail["transfer_receive_start"] = "injected: no receiver"
    with pytest.raises(errors.OpExecError, match=r"disk export: disk\(s\) 0, 1"):
        _export(running, long_sleep=True)
    assert running.live() is not None
    assert not _staging(running).exists()
    assert _tree(_export_dir(running) / "inst1") == previous


@pytest.mark.usefixtures("snapshots")
def test_live_export_copies_from_snapshots_and_keeps_them_as_bases(running: Env) -> None:
    expected = _digests([Path(d.logical_id[1]) for d in running.inst().disks])
    running.rpc.calls.clear()
    assert _export(running, shutdown=False) == (True, [True, True])
    assert ("instance_shutdown", "node2") not in running.rpc.calls
    # a running instance: every disk in one pause of the guest, one RPC
    snaps = ("blockdev_snapshot", "instance_snapshot_disks")
    assert [c for c in running.rpc.calls if c[0] in snaps] == [
        ("instance_snapshot_disks", "node2")]
    assert any(str(m).startswith("guest paused ") and
               str(m).endswith(" ms for the snapshot of 2 disks (crash-consistent)")
               for m in running.cbs.log), running.cbs.log
    assert _snapshots(running) == []
    info = exportconf.parse((_export_dir(running) / "inst1" / "config.ini").read_text())
    assert info.snapshot["consistency"] == "crash-consistent"
    assert float(info.snapshot["pause_ms"]) >= 0 and "frozen_ms" not in info.snapshot
    assert len(_bases(running)) == 2       # the next export's bases
    assert _dumps(running) == expected


@pytest.mark.usefixtures("snapshots")
def test_instance_dying_during_a_live_copy_is_reported(
        running: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its snapshot was taken while it ran: the export completes from it, and says so."""
    expected = _digests([Path(d.logical_id[1]) for d in running.inst().disks])
    real_copy = LocalExport.copy

    def copy_while_it_dies(self: LocalExport, *args: Any) -> Any:
        bk.instance_shutdown(running.roots["node2"], "inst1", "fake", 0)
        return real_copy(self, *args)
    monkeypatch.setattr(LocalExport, "copy", copy_while_it_dies)
    assert _export(running, shutdown=False) == (True, [True, True])
    assert running.live() is None
    assert any("stopped running during the export" in str(m) for m in running.cbs.log)
    assert _dumps(running) == expected and _snapshots(running) == []
    assert running.inst().admin_state == "up"       # the watcher starts it again


@pytest.mark.usefixtures("snapshots")
@pytest.mark.parametrize("shutdown", [True, False])
def test_failed_snapshot_cleans_up(running: Env, shutdown: bool,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    previous = _tree(_export_dir(running) / "inst1")
    if shutdown:    # stopped for the snapshot: one RPC per disk
        running.rpc.fail_after["blockdev_snapshot"] = 1  # disk/0 snapshotted, disk/1 fails
        message = "Could not snapshot disk/1 of inst1"
    else:           # live: the node fails disk/1's clone while the guest is paused
        clones: list[str] = []

        def clone(src: Any, dst: Any) -> None:
            clones.append(str(dst))
            if len(clones) == 2:
                raise OSError(28, "injected: no space left")
            shutil.copyfile(src, dst)
        monkeypatch.setattr(reflink, "clone_file", clone)
        message = r"Cannot snapshot disk/1 of inst1: \[Errno 28\] injected: no space left"
    with pytest.raises(errors.OpExecError, match=message):
        _export(running, shutdown=shutdown)
    if shutdown:
        assert ("blockdev_remove_snapshot", "node2") in running.rpc.calls
    else:
        assert len(clones) == 2 and not Path(clones[0]).exists()
    assert _snapshots(running) == [], "a snapshot was left on the primary"
    assert running.live() is not None, "the instance is not running again"
    assert not _staging(running).exists(), "the staging directory was left"
    assert _tree(_export_dir(running) / "inst1") == previous


def test_remove_instance_only_after_a_successful_export(running: Env) -> None:
    disks = running.disk_files()
    running.rpc.fail["export_finalize"] = "injected: finalize failed"
    with pytest.raises(errors.OpExecError, match="export finalization"):
        _export(running, remove_instance=True)
    # not removed: still configured, its disks intact, running again
    assert running.cfg.get_instance_info_by_name("inst1") is not None
    assert running.disk_files() == disks and running.live() is not None
    del running.rpc.fail["export_finalize"]
    data = _digests([Path(d.logical_id[1]) for d in running.inst().disks])
    assert _export(running, remove_instance=True) == (True, [True, True])
    assert running.cfg.get_instance_info_by_name("inst1") is None
    assert running.disk_files() == [] and running.live() is None
    assert "inst1" not in running.ctx.glm.names(locking.LEVEL_INSTANCE)
    assert _dumps(running) == data


def test_running_instance_is_not_removed_without_shutdown(running: Env) -> None:
    running.rpc.calls.clear()
    with pytest.raises(errors.OpPrereqError, match="without shutting it down"):
        _export(running, remove_instance=True, shutdown=False)
    assert not {p for p, _n in running.rpc.calls} & {"export_prepare", "instance_shutdown"}
    assert running.cfg.get_instance_info_by_name("inst1") is not None


def test_note_is_stored_with_the_new_export_and_checked(running: Env) -> None:
    assert _export(running, long_sleep=True, note="before the upgrade") == (True,
                                                                          [True, True])
    gens = running.rpc.call_export_generations(["node3"], ["inst1"])["node3"].payload
    assert [g.get("note") for g in gens if g["newest"]] == ["before the upgrade"]
    running.rpc.calls.clear()
    with pytest.raises(errors.OpPrereqError, match="note"):
        _export(running, long_sleep=True, note="x" * 100_000)
    assert running.rpc.calls == []      # refused before the cluster is asked anything


def test_target_node_kind_follows_the_mode() -> None:
    op = opcodes.OpBackupExport(instance_name="i", target_node="n")
    assert op.target == opcodes.LocalTarget("n")
    disk = ("127.0.0.9", 1, "m", "d", "s")
    op = opcodes.OpBackupExport(instance_name="i", mode="remote", target_node=[disk],
                                x509_key_name=["k", "h", "s"])
    assert op.target == opcodes.RemoteTarget((disk,), ["k", "h", "s"], None)
    assert opcodes.from_dict(op.to_dict()).to_dict() == op.to_dict()
    with pytest.raises(errors.OpPrereqError, match="target_node: in local mode"):
        opcodes.OpBackupExport.create(instance_name="i", target_node=[disk])
    with pytest.raises(errors.OpPrereqError, match="target_node: in remote mode"):
        opcodes.OpBackupExport.create(instance_name="i", mode="remote", target_node="n")


def _import(harness: Env, name: str, **fields: Any) -> Any:
    return harness.run(opcodes.OpInstanceCreate.create(
        instance_name=name, mode="import", src_path="inst1", pnode="node1", start=False,
        **fields))


def test_local_import_finds_the_export_and_restores_its_disks(running: Env) -> None:
    dumps = _dumps(running)
    running.rpc.hooks.clear()
    assert _import(running, "copy1") == ["node1"]
    copy = running.inst("copy1")
    assert _digests([Path(d.logical_id[1]) for d in copy.disks]) == dumps
    assert [d.size for d in copy.disks] == [4, 2] and copy.hypervisor == "fake"
    add = [h for h in running.rpc.hooks if h["hpath"] == "instance-add"]
    assert add and all(h["env"]["GANETI_SRC_NODE"] == "node3"
                       and h["env"]["GANETI_ADD_MODE"] == "import" for h in add)
    assert add[0]["locks"][locking.LEVEL_NODE] == ["node1", "node3"]


def test_local_import_of_a_corrupt_dump_leaves_nothing(running: Env) -> None:
    dump = _export_dir(running) / "inst1" / exportconf.dump_name(1)
    data = bytearray(dump.read_bytes())
    data[100] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(errors.OpExecError, match="disk/1: checksum mismatch"):
        _import(running, "copy2")
    assert running.cfg.get_instance_info_by_name("copy2") is None
    assert running.disk_files("node1") == []
