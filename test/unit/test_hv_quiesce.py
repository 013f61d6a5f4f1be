"""Hypervisor.quiesce: QMP stop/cont on a real qemu (no guest), SIGSTOP for the process
hypervisor, nothing for the fake one; the guest always runs again afterwards."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ganeti import errors
from ganeti.hypervisor import base, guest_sim, hv_kvm, procutil
from ganeti.hypervisor.hv_fake import FakeHypervisor
from ganeti.hypervisor.hv_kvm import KvmHypervisor
from ganeti.hypervisor.hv_process import ProcessHypervisor
from ganeti.objects import Instance
from ganeti.pathutils import Paths

needs_qemu = pytest.mark.skipif(
    shutil.which(hv_kvm.QEMU_BINARY) is None,
    reason=f"{hv_kvm.QEMU_BINARY} is not installed (Debian package qemu-system-x86)")


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.for_root(tmp_path / "node")


@pytest.fixture
def make_disk(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "disk0.img", size: int = 4 << 20) -> Path:
        path = tmp_path / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        return path
    return make


def instance(name: str, hypervisor: str, **hvparams: object) -> Instance:
    return Instance(name=name, primary_node="node1", hypervisor=hypervisor,
                    hvparams=hvparams, beparams={"maxmem": 64, "vcpus": 1})


@pytest.fixture
def kvm(paths: Paths) -> Iterator[KvmHypervisor]:
    hyp = KvmHypervisor(paths)
    yield hyp
    for name in hyp.list_instances():
        hyp.stop_instance(name, timeout=0, force=True)
    assert procutil.find_processes(str(paths.root)) == [], "qemu processes leaked"


def qmp_status(hv: KvmHypervisor, name: str) -> str:
    """What QEMU itself says (the held quiesce session while paused, else a new one)."""
    held = hv.quiesce_session(name)
    if held is not None:
        return str(held.execute("query-status")["status"])
    with hv.qmp(name) as client:
        return str(client.execute("query-status")["status"])


@needs_qemu
@pytest.mark.parametrize("kvm_flag", ["", "disabled"], ids=["auto", "tcg"])
def test_kvm_stop_and_cont(kvm: KvmHypervisor, make_disk: Callable[..., Path],
                           kvm_flag: str) -> None:
    inst = instance("vm1", "kvm", kvm_flag=kvm_flag)
    kvm.start_instance(inst, [make_disk()])
    assert qmp_status(kvm, "vm1") == "running"
    with kvm.quiesce("vm1") as held:
        assert qmp_status(kvm, "vm1") == "paused"
    assert qmp_status(kvm, "vm1") == "running"
    assert held.level == base.LEVEL_CRASH and held.frozen_ms is None
    assert 0 < held.pause_ms < 60_000
    # QEMU's own clock (STOP to RESUME events): never longer than the measured window
    assert held.stopped_ms is not None and 0 < held.stopped_ms <= held.pause_ms
    # qemu was started with the agent channel, but no agent runs in it
    assert held.notes == [f"no guest agent answered within {hv_kvm.AGENT_TIMEOUT:g}s"]
    print(f"\nkvm_flag={kvm_flag or 'auto'}: QMP stop/cont pause {held.pause_ms:.2f} ms"
          f" (QEMU: {held.stopped_ms:.2f} ms)")


@needs_qemu
def test_kvm_resumes_when_the_snapshot_fails(kvm: KvmHypervisor,
                                             make_disk: Callable[..., Path]) -> None:
    kvm.start_instance(instance("vm2", "kvm"), [make_disk()])
    with pytest.raises(RuntimeError, match="snapshot failed"), kvm.quiesce("vm2"):
        assert qmp_status(kvm, "vm2") == "paused"
        raise RuntimeError("snapshot failed")
    assert qmp_status(kvm, "vm2") == "running"
    assert kvm.quiesce_session("vm2") is None
    assert kvm.instance_info("vm2").state == base.STATE_RUNNING  # type: ignore[union-attr]


@needs_qemu
def test_kvm_paused_instance_stays_paused(kvm: KvmHypervisor,
                                          make_disk: Callable[..., Path]) -> None:
    kvm.start_instance(instance("vm3", "kvm"), [make_disk()], startup_paused=True)
    with kvm.quiesce("vm3") as held:
        pass
    assert qmp_status(kvm, "vm3") == "prelaunch"
    assert "the instance was paused already; it stays paused" in held.notes


@needs_qemu
def test_kvm_killed_while_paused_is_an_error(kvm: KvmHypervisor,
                                             make_disk: Callable[..., Path]) -> None:
    kvm.start_instance(instance("vm4", "kvm"), [make_disk()])
    record = kvm._own_record("vm4")
    assert record is not None and record.pid is not None
    with pytest.raises(errors.HypervisorError, match="QMP"), kvm.quiesce("vm4"):
        os.kill(record.pid, signal.SIGKILL)
        procutil.wait_gone(record.pid, 30.0)
    assert kvm.instance_info("vm4") is None


def test_not_running_is_refused(paths: Paths) -> None:
    for hv in (KvmHypervisor(paths), ProcessHypervisor(paths), FakeHypervisor(paths)):
        with pytest.raises(errors.HypervisorError, match="not running"), \
                hv.quiesce("nosuch"):
            raise AssertionError("must not get here")


def test_process_guest_stops_writing_while_paused(paths: Paths,
                                                  make_disk: Callable[..., Path]) -> None:
    hv = ProcessHypervisor(paths)
    disk = make_disk()
    hv.start_instance(instance("p1", "process", write_interval_ms=1, blocks=64), [disk])
    try:
        record = hv._own_record("p1")
        assert record is not None and record.pid is not None
        with hv.quiesce("p1") as held:
            stat = procutil.read_stat(record.pid)
            assert stat is not None and stat.state in ("T", "t")
            before = disk.read_bytes()
            assert hv.instance_info("p1").state == base.STATE_PAUSED  # type: ignore[union-attr]
            assert disk.read_bytes() == before       # nothing written while paused
        assert hv.instance_info("p1").state == base.STATE_RUNNING  # type: ignore[union-attr]
        assert held.level == base.LEVEL_CRASH and held.pause_ms > 0
        assert held.stopped_ms is None
    finally:
        hv.stop_instance("p1", timeout=10)
    assert guest_sim.verify_disk(disk).clean


def test_process_resumes_when_the_body_fails(paths: Paths,
                                             make_disk: Callable[..., Path]) -> None:
    hv = ProcessHypervisor(paths)
    hv.start_instance(instance("p2", "process"), [make_disk()])
    try:
        with pytest.raises(ValueError), hv.quiesce("p2"):
            raise ValueError("boom")
        assert hv.instance_info("p2").state == base.STATE_RUNNING  # type: ignore[union-attr]
    finally:
        hv.stop_instance("p2", timeout=10)


def test_fake_quiesce_is_a_no_op(paths: Paths) -> None:
    hv = FakeHypervisor(paths)
    hv.start_instance(instance("f1", "fake"), [])
    with hv.quiesce("f1") as held:
        assert hv.instance_info("f1").state == base.STATE_RUNNING  # type: ignore[union-attr]
    assert held.level == base.LEVEL_CRASH and held.notes == []
