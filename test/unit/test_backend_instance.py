"""Node-side instance and block device procedures, called directly (no transport)."""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ganeti import constants, pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.backend import instance as bk
from ganeti.backend import storage as bs
from ganeti.hypervisor import guest_sim
from ganeti.hypervisor.hv_process import ProcessHypervisor
from ganeti.objects import Disk, Instance
from ganeti.rpc import defs
from ganeti.server import noded

MIB = 1024 * 1024


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(tmp_path / "node"), hooks_timeout=30)


def _disk(size: int = 4, idx: int = 0) -> Disk:
    return Disk(size=size, dev_type=constants.DT_FILE, iv_name=f"disk/{idx}")


def _instance(ctx: NodeContext, hv: str = constants.HT_FAKE, disks: int = 1,
              name: str = "inst1.example.com", **be: Any) -> Instance:
    inst = Instance(name=name, primary_node="node-uuid", hypervisor=hv,
                    disk_template=constants.DT_FILE,
                    beparams={"maxmem": 64, "vcpus": 2, **be})
    for idx in range(disks):
        disk = _disk(4 + idx, idx)
        disk.logical_id = bs.blockdev_create(ctx, inst.name, disk.to_dict())
        inst.disks.append(disk)
    return inst


def test_blockdev_create_grow_remove(ctx: NodeContext) -> None:
    disk = _disk(8)
    lid = bs.blockdev_create(ctx, "inst1", disk.to_dict())
    path = Path(lid[1])
    assert lid[0] == "file"
    assert ctx.paths.file_storage_dir in path.parents
    assert path.stat().st_size == 8 * MIB
    assert bs.blockdev_exists(ctx, "file", lid) is True
    bs.blockdev_grow(ctx, "file", lid, 16)
    assert path.stat().st_size == 16 * MIB
    with pytest.raises(RpcFail, match="shrink"):
        bs.blockdev_grow(ctx, "file", lid, 4)
    bs.blockdev_remove(ctx, "file", lid)
    assert not path.exists()
    assert bs.blockdev_exists(ctx, "file", lid) is False
    bs.blockdev_remove(ctx, "file", lid)  # idempotent


def test_blockdev_create_twice_fails_clearly(ctx: NodeContext) -> None:
    disk = _disk()
    lid = bs.blockdev_create(ctx, "inst1", disk.to_dict())
    disk.logical_id = lid
    with pytest.raises(RpcFail, match="already exists"):
        bs.blockdev_create(ctx, "inst1", disk.to_dict())


@pytest.mark.parametrize("bad", [{"size": 1}, {"size": -1, "dev_type": "file"}, "x", None])
def test_blockdev_create_rejects_bad_disk(ctx: NodeContext, bad: Any) -> None:
    with pytest.raises(RpcFail, match="Invalid Disk"):
        bs.blockdev_create(ctx, "inst1", bad)


def test_paths_outside_the_storage_dir_are_refused(ctx: NodeContext, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for lid in (["file", str(victim)],
                ["file", str(ctx.paths.file_storage_dir / ".." / "victim")],
                ["file", "relative/path"]):
        with pytest.raises(RpcFail, match="Cannot remove disk"):
            bs.blockdev_remove(ctx, "file", lid)
    assert victim.read_text() == "keep me"
    # wrong types are refused at the daemon's boundary (the procedure's signature)
    with pytest.raises(RpcFail, match=r"argument 'logical_id'.*valid list"):
        noded.TABLE["blockdev_remove"].run(ctx, ["file", "not-a-list"])
    with pytest.raises(RpcFail, match="Unsupported disk template"):
        bs.blockdev_remove(ctx, "floppy", ["a", "b"])
    with pytest.raises(RpcFail, match=r"argument 'new_size'.*valid integer"):
        noded.TABLE["blockdev_grow"].run(ctx, ["file", ["file", str(victim)], True])
    with pytest.raises(RpcFail, match="Invalid disk size"):
        bs.blockdev_grow(ctx, "file", ["file", str(victim)], 0)


def test_snapshot_procedures(ctx: NodeContext) -> None:
    lid = bs.blockdev_create(ctx, "inst1", _disk().to_dict())
    Path(lid[1]).write_bytes(b"x" * 4096)
    assert bs.blockdev_list_snapshots(ctx, "file", lid) == []
    if bs.blockdev_can_snapshot(ctx, "file", lid):
        snap = bs.blockdev_snapshot(ctx, "file", lid, "exp1")
        assert Path(snap[1]).read_bytes() == b"x" * 4096
        assert bs.blockdev_list_snapshots(ctx, "file", lid) == [snap]
        bs.blockdev_remove_snapshot(ctx, "file", snap)
        assert not Path(snap[1]).exists()
    else:  # no reflink on this filesystem: a clear refusal, nothing left behind
        with pytest.raises(RpcFail, match="Cannot snapshot"):
            bs.blockdev_snapshot(ctx, "file", lid, "exp1")
    assert bs.blockdev_list_snapshots(ctx, "file", lid) == []
    # a disk is never removed through the snapshot call
    with pytest.raises(RpcFail, match="not a snapshot"):
        bs.blockdev_remove_snapshot(ctx, "file", lid)
    assert Path(lid[1]).exists()
    with pytest.raises(RpcFail, match="Invalid snapshot name"):
        bs.blockdev_snapshot(ctx, "file", lid, "../x")


def test_fake_instance_life_cycle(ctx: NodeContext) -> None:
    inst = _instance(ctx)
    assert bk.instance_info(ctx, inst.name, "fake") is None
    bk.instance_start(ctx, inst.to_dict(), False)
    info = bk.instance_info(ctx, inst.name, "fake")
    assert info is not None
    assert (info["state"], info["memory"], info["vcpus"]) == ("running", 64, 2)
    assert set(bk.all_instances_info(ctx, ["fake", "process"])) == {inst.name}
    with pytest.raises(RpcFail, match="already running"):
        bk.instance_start(ctx, inst.to_dict(), False)
    bk.instance_reboot(ctx, inst.to_dict(), "hard", 5)
    assert bk.instance_info(ctx, inst.name, "fake") is not None
    bk.instance_shutdown(ctx, inst.name, "fake", 5)
    assert bk.instance_info(ctx, inst.name, "fake") is None
    assert bk.all_instances_info(ctx, ["fake"]) == {}
    bk.instance_shutdown(ctx, inst.name, "fake", 5)  # stopping a stopped one is fine


def test_start_paused_reports_paused(ctx: NodeContext) -> None:
    inst = _instance(ctx)
    bk.instance_start(ctx, inst.to_dict(), True)
    info = bk.instance_info(ctx, inst.name, "fake")
    assert info is not None and info["state"] == "paused"


def test_start_refuses_bad_input(ctx: NodeContext, tmp_path: Path) -> None:
    inst = _instance(ctx)
    data = inst.to_dict()
    with pytest.raises(RpcFail, match="Invalid Instance"):
        bk.instance_start(ctx, {**data, "bogus": 1}, False)
    with pytest.raises(RpcFail, match="Unknown hypervisor"):
        bk.instance_start(ctx, {**data, "hypervisor": "xen"}, False)
    outside = dict(data)
    outside["disks"] = [{**data["disks"][0], "logical_id": ["file", str(tmp_path / "x")]}]
    with pytest.raises(RpcFail, match="not inside the file storage directory"):
        bk.instance_start(ctx, outside, False)
    with pytest.raises(RpcFail, match="Invalid maxmem"):
        bk.instance_start(ctx, {**data, "beparams": {"maxmem": -1}}, False)
    assert bk.all_instances_info(ctx, ["fake"]) == {}
    with pytest.raises(RpcFail, match="Invalid shutdown timeout"):
        bk.instance_shutdown(ctx, inst.name, "fake", -1)
    with pytest.raises(RpcFail, match="Invalid reboot type"):
        bk.instance_reboot(ctx, data, "warm", 5)
    with pytest.raises(RpcFail, match="Invalid instance name"):
        bk.instance_shutdown(ctx, "../etc", "fake", 5)


def test_verify_procedures(ctx: NodeContext) -> None:
    inst = _instance(ctx, disks=2)
    assert bk.instance_verify(ctx, inst.to_dict()) == []
    os.unlink(inst.disks[1].logical_id[1])
    problems = bk.instance_verify(ctx, inst.to_dict())
    assert len(problems) == 1 and problems[0].startswith("disk/1")
    assert bk.hypervisor_verify(ctx, ["fake", "process"]) == {"fake": [], "process": []}
    with pytest.raises(RpcFail, match="Unknown hypervisor"):
        bk.hypervisor_verify(ctx, ["xen"])


def test_process_guest_writes_and_stops_cleanly(ctx: NodeContext) -> None:
    inst = _instance(ctx, hv=constants.HT_PROCESS, disks=2)
    inst.hvparams = {"write_interval_ms": 2, "blocks": 64}
    bk.instance_start(ctx, inst.to_dict(), False)
    try:
        info = bk.instance_info(ctx, inst.name, "process")
        assert info is not None and info["pid"] and info["state"] == "running"
        hv = ProcessHypervisor(ctx.paths)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the guest reports its progress in a file
            status = hv.guest_status(inst.name)
            if status is not None and status.generation >= 3:
                break
            time.sleep(0.01)
        assert status is not None and status.generation >= 3
    finally:
        bk.instance_shutdown(ctx, inst.name, "process", 30)
    assert bk.instance_info(ctx, inst.name, "process") is None
    for disk in inst.disks:
        report = guest_sim.verify_disk(disk.logical_id[1])
        assert report.clean and report.invalid_blocks == 0 and report.consistent
        assert report.max_generation >= 3


def test_every_instance_call_has_a_matching_procedure() -> None:
    for call in defs.CALLS.values():
        if not call.name.startswith(("blockdev_", "instance_")):
            continue
        func = noded.PROCEDURES[call.procedure]
        params = list(inspect.signature(func).parameters)[1:]
        assert len(params) == len(call.args), call.name
