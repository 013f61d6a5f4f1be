"""instance_snapshot_disks (node side, called directly): every disk in one pause.

On a reflink filesystem all disks are cloned while the guest is paused; any
failure resumes the guest and removes the snapshots made so far (a clone that
was not ours stays). Real qemu (no guest) and real guest_sim processes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ganeti import constants, pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.backend import instance as bk
from ganeti.backend import storage as bs
from ganeti.hypervisor import base, get_hypervisor, guest_sim, hv_kvm, procutil
from ganeti.objects import Disk, Instance
from ganeti.storage.base import snapshot_name_of

SNAP = "export-20260101000000"

needs_qemu = pytest.mark.skipif(
    shutil.which(hv_kvm.QEMU_BINARY) is None,
    reason=f"{hv_kvm.QEMU_BINARY} is not installed (Debian package qemu-system-x86)")


def _ctx(root: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(root / "node"), hooks_timeout=30)


def _instance(ctx: NodeContext, hv: str, **hvparams: Any) -> Instance:
    inst = Instance(name="live1", primary_node="node-uuid", hypervisor=hv,
                    disk_template=constants.DT_FILE, hvparams=hvparams,
                    beparams={"maxmem": 64, "vcpus": 1})
    for idx in range(2):
        disk = Disk(size=4, dev_type=constants.DT_FILE, iv_name=f"disk/{idx}")
        disk.logical_id = bs.blockdev_create(ctx, inst.name, disk.to_dict())
        inst.disks.append(disk)
    return inst


def _snap_files(inst: Instance) -> list[Path]:
    return sorted({p for d in inst.disks for p in Path(d.logical_id[1]).parent.glob(
        "*" + constants.SNAP_MARKER + "*")})


@pytest.fixture(params=[constants.HT_PROCESS,
                        pytest.param(constants.HT_KVM, marks=needs_qemu)])
def running(request: pytest.FixtureRequest, reflink_dir: Path
            ) -> Iterator[tuple[NodeContext, Instance]]:
    ctx = _ctx(reflink_dir)
    params = {"write_interval_ms": 1, "blocks": 64} if request.param == "process" else {}
    inst = _instance(ctx, request.param, **params)
    bk.instance_start(ctx, inst.to_dict())
    try:
        yield ctx, inst
    finally:
        bk.instance_shutdown(ctx, inst.name, inst.hypervisor, 10)
        assert procutil.find_processes(str(ctx.paths.root)) == []


def _state(ctx: NodeContext, inst: Instance) -> str:
    info = bk.instance_info(ctx, inst.name, inst.hypervisor)
    assert info is not None
    return str(info["state"])


def test_all_disks_in_one_pause(running: tuple[NodeContext, Instance]) -> None:
    ctx, inst = running
    result = bk.instance_snapshot_disks(ctx, inst.to_dict(), SNAP)
    assert result["level"] == base.LEVEL_CRASH
    assert result["pause_ms"] > 0 and result["frozen_ms"] is None
    if inst.hypervisor == constants.HT_KVM:     # QEMU's own clock agrees
        assert result["stopped_ms"] is not None
        assert 0 < result["stopped_ms"] <= result["pause_ms"]
    expected = [["file", str(Path(d.logical_id[1]).with_name(
        snapshot_name_of(Path(d.logical_id[1]).name, SNAP)))] for d in inst.disks]
    assert result["snapshots"] == expected
    assert _snap_files(inst) == sorted(Path(s[1]) for s in expected)
    assert _state(ctx, inst) == base.STATE_RUNNING
    if inst.hypervisor == constants.HT_PROCESS:
        # one point in time across both disks: the same last generation in each
        reports = [guest_sim.verify_disk(Path(s[1])) for s in expected]
        assert all(r.invalid_blocks == 0 for r in reports)
    for snap in result["snapshots"]:
        bs.blockdev_remove_snapshot(ctx, "file", snap)
    print(f"\n{inst.hypervisor}: paused {result['pause_ms']:.2f} ms for 2 disks")


def test_failing_snapshot_resumes_and_removes_what_it_made(
        running: tuple[NodeContext, Instance]) -> None:
    ctx, inst = running
    # disk/1's snapshot name is taken (not by us): its clone fails after disk/0's
    path1 = Path(inst.disks[1].logical_id[1])
    foreign = path1.with_name(snapshot_name_of(path1.name, SNAP))
    foreign.write_bytes(b"not ours")
    with pytest.raises(RpcFail, match=r"Cannot snapshot disk/1 of live1.*already exists"):
        bk.instance_snapshot_disks(ctx, inst.to_dict(), SNAP)
    assert _snap_files(inst) == [foreign]            # disk/0's snapshot is gone again
    assert foreign.read_bytes() == b"not ours"
    assert _state(ctx, inst) == base.STATE_RUNNING
    if inst.hypervisor == constants.HT_KVM:
        hv = get_hypervisor(constants.HT_KVM, ctx.paths)
        assert isinstance(hv, hv_kvm.KvmHypervisor)
        with hv.qmp(inst.name) as client:
            assert client.execute("query-status")["status"] == "running"


def test_without_reflink_nothing_is_left_and_the_guest_runs(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    inst = _instance(ctx, constants.HT_PROCESS)
    bk.instance_start(ctx, inst.to_dict())
    try:
        with pytest.raises(RpcFail, match="reflink"):
            bk.instance_snapshot_disks(ctx, inst.to_dict(), SNAP)
        assert _snap_files(inst) == []
        assert _state(ctx, inst) == base.STATE_RUNNING
    finally:
        bk.instance_shutdown(ctx, inst.name, inst.hypervisor, 10)


def test_stopped_instance_is_refused(reflink_dir: Path) -> None:
    ctx = _ctx(reflink_dir)
    inst = _instance(ctx, constants.HT_PROCESS)
    with pytest.raises(RpcFail, match="live1 is not running"):
        bk.instance_snapshot_disks(ctx, inst.to_dict(), SNAP)
    assert _snap_files(inst) == []
