"""LUClusterCleanupLeftovers through the real processor (loopback RPC, no daemons)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.loopback import Env

from ganeti import locking, opcodes
from ganeti.backend import export as bk_export


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def _leftovers(env: Env) -> tuple[Path, Path, Path]:
    env.create("inst1", disks=[{"size": 1}])
    disk = Path(env.inst().disks[0].logical_id[1])
    export_snap = disk.with_name(disk.name + ".snap-export-20260101000000")
    export_snap.write_bytes(b"x")
    other_snap = disk.with_name(disk.name + ".snap-manual")   # not made by an export
    other_snap.write_bytes(b"y")
    bk_export.export_prepare(env.roots["node3"], "inst1")
    staging = env.roots["node3"].paths.export_dir / ".staging" / "inst1"
    assert staging.is_dir()
    return export_snap, other_snap, staging


def test_removes_export_leftovers_of_idle_instances(env: Env) -> None:
    export_snap, other_snap, staging = _leftovers(env)
    report = env.run(opcodes.OpClusterCleanupLeftovers.create())
    assert report["complete"] is True and report["busy_instances"] == []
    assert report["snapshots"] == [str(export_snap)]
    assert report["staging"] == {"node3": [".staging/inst1"]}
    assert not export_snap.exists() and not staging.exists()
    assert other_snap.exists()
    # idempotent: a second run finds nothing
    again = env.run(opcodes.OpClusterCleanupLeftovers.create())
    assert (again["snapshots"], again["staging"], again["transfers"]) == ([], {}, {})


def test_skips_instances_whose_lock_a_running_job_holds(env: Env) -> None:
    export_snap, _other, staging = _leftovers(env)
    glm = env.ctx.glm
    held, done = threading.Event(), threading.Event()

    def export_like_job() -> None:
        glm.acquire(locking.LEVEL_CLUSTER, [locking.BGL], shared=True)
        glm.acquire(locking.LEVEL_INSTANCE, ["inst1"])
        held.set()
        done.wait(30)
        glm.release(locking.LEVEL_INSTANCE)
        glm.release(locking.LEVEL_CLUSTER)

    thread = threading.Thread(target=export_like_job)
    thread.start()
    try:
        assert held.wait(30)
        report = env.run(opcodes.OpClusterCleanupLeftovers.create())
    finally:
        done.set()
        thread.join()
    assert report["complete"] is False and report["busy_instances"] == ["inst1"]
    assert export_snap.exists() and staging.exists()   # in use: untouched
    assert report["staging"] == {} and report["snapshots"] == []
