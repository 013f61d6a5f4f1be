"""The kvm hypervisor: command line and failures always; real qemu VMs when installed."""

from __future__ import annotations

import os
import shutil
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ganeti import errors
from ganeti.hypervisor import base, hv_kvm, procutil
from ganeti.hypervisor.hv_kvm import KvmHypervisor
from ganeti.objects import Instance
from ganeti.pathutils import Paths

WAIT = 60.0
needs_qemu = pytest.mark.skipif(
    shutil.which(hv_kvm.QEMU_BINARY) is None,
    reason=f"{hv_kvm.QEMU_BINARY} is not installed (Debian package qemu-system-x86)")


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.for_root(tmp_path / "node")


@pytest.fixture
def hv(paths: Paths) -> Iterator[KvmHypervisor]:
    hyp = KvmHypervisor(paths)
    yield hyp
    for name in hyp.list_instances():
        hyp.stop_instance(name, timeout=0, force=True)
    assert procutil.find_processes(str(paths.root)) == [], "qemu processes leaked"


@pytest.fixture
def make_disk(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "disk0.img", size: int = 16 << 20) -> Path:
        path = tmp_path / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        return path
    return make


def instance(name: str = "vm1.example.com", **hvparams: object) -> Instance:
    return Instance(name=name, primary_node="node1", hypervisor="kvm", hvparams=hvparams,
                    beparams={"maxmem": 64, "vcpus": 2})


def fake_qemu(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-qemu"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_command_line(hv: KvmHypervisor, tmp_path: Path,
                      make_disk: Callable[..., Path]) -> None:
    comma_disk = make_disk("odd,name.img")
    inst = instance(kvm_path="/bin/true", disk_cache="default")
    params = hv.fill_parameters(inst.hvparams)
    inst_dir = hv.instance_dir(inst.name)
    args = hv.build_command(inst, [comma_disk], False, inst_dir, params, 64, 2, "tcg")
    assert args[0] == "/bin/true"
    joined = " ".join(args)
    assert "-m 64 -smp 2" in joined and "-accel tcg" in joined and "-enable-kvm" not in args
    assert "-daemonize" in args and "-S" not in args
    assert args[args.index("-pidfile") + 1] == str(inst_dir / hv_kvm.PID_FILE)
    assert "socket,id=qmp,path=qmp.sock,server=on,wait=off" in args
    drive = args[args.index("-drive") + 1]
    assert drive.startswith(f"file={tmp_path}/odd,,name.img,format=raw,if=virtio")
    expected_cache = "none" if hv_kvm.direct_io_supported(comma_disk) else "writeback"
    assert drive.endswith(f"cache={expected_cache},aio=threads")

    paused = hv.build_command(inst, [], True, inst_dir,
                              {**params, "machine_version": "q35"}, 64, 2, "kvm")
    assert "-S" in paused and "-enable-kvm" in paused and "-drive" not in paused
    assert paused[paused.index("-machine") + 1] == "q35"
    written = hv.build_command(inst, [comma_disk], False, inst_dir,
                               {**params, "disk_cache": "writethrough"}, 64, 2, "kvm")
    assert written[written.index("-drive") + 1].endswith("cache=writethrough,aio=threads")
    # the guest agent's channel is always there (quiesce asks it to freeze)
    assert f"socket,id=qga0,path={hv_kvm.QGA_SOCKET},server=on,wait=off" in written
    assert f"virtserialport,bus=vser0.0,chardev=qga0,name={hv_kvm.QGA_PORT_NAME}" in written
    native = hv.build_command(inst, [comma_disk], False, inst_dir,
                              {**params, "disk_cache": "none", "disk_aio": "native"},
                              64, 2, "kvm")
    assert native[native.index("-drive") + 1].endswith("cache=none,aio=native")
    with pytest.raises(errors.HypervisorError, match="disk_aio=native needs disk_cache"):
        hv.build_command(inst, [comma_disk], False, inst_dir,
                         {**params, "disk_cache": "writeback", "disk_aio": "native"},
                         64, 2, "kvm")


def test_failing_qemu_gives_its_message(hv: KvmHypervisor, tmp_path: Path,
                                        make_disk: Callable[..., Path]) -> None:
    qemu = fake_qemu(tmp_path, 'echo "could not open disk image: Permission denied" >&2\nexit 1')
    with pytest.raises(errors.HypervisorError, match="could not open disk image"):
        hv.start_instance(instance(kvm_path=str(qemu)), [make_disk()])
    assert not hv.instance_dir("vm1.example.com").exists()
    assert hv.list_instances() == []


def test_missing_binary(hv: KvmHypervisor, make_disk: Callable[..., Path],
                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.HypervisorError, match="not found"):
        hv.start_instance(instance(kvm_path=str(tmp_path / "no-qemu")), [make_disk()])
    monkeypatch.setenv("PATH", str(tmp_path))
    problems = hv.verify()
    assert len(problems) == 1 and "not installed" in problems[0]


def test_kvm_required_but_unusable(hv: KvmHypervisor, make_disk: Callable[..., Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hv_kvm, "kvm_usable", lambda: False)
    with pytest.raises(errors.HypervisorError, match="cannot be opened"):
        hv.start_instance(instance(kvm_path="/bin/true", kvm_flag="enabled"), [make_disk()])
    assert hv.list_instances() == []


@needs_qemu
def test_start_status_and_stop_falls_back_to_kill(hv: KvmHypervisor, paths: Paths,
                                                  make_disk: Callable[..., Path]) -> None:
    assert hv.verify() == []
    hv.start_instance(instance(), [make_disk()])
    info = hv.instance_info("vm1.example.com")
    assert info is not None
    assert (info.state, info.memory, info.vcpus) == (base.STATE_RUNNING, 64, 2)
    assert info.pid is not None
    assert os.path.basename(procutil.read_cmdline(info.pid)[0]) == hv_kvm.QEMU_BINARY
    with hv.qmp("vm1.example.com") as client:
        assert client.execute("query-status")["status"] == "running"
    assert hv.list_instances() == ["vm1.example.com"]
    # a new driver object (a restarted node daemon) finds the VM again
    again = KvmHypervisor(paths).instance_info("vm1.example.com")
    assert again is not None and (again.pid, again.state) == (info.pid, base.STATE_RUNNING)
    with pytest.raises(errors.HypervisorError, match="already running"):
        hv.start_instance(instance(), [make_disk("other.img")])

    # no OS answers the ACPI power button: the stop ends in a kill after the timeout
    hv.stop_instance("vm1.example.com", timeout=1.0)
    assert procutil.wait_gone(info.pid, 0)
    assert hv.instance_info("vm1.example.com") is None
    assert hv.list_instances() == []
    assert not hv.instance_dir("vm1.example.com").exists()


@needs_qemu
def test_paused_start_resume_and_forced_stop(hv: KvmHypervisor,
                                             make_disk: Callable[..., Path]) -> None:
    hv.start_instance(instance(), [make_disk()], startup_paused=True)
    assert hv.instance_info("vm1.example.com").state == base.STATE_PAUSED  # type: ignore[union-attr]
    hv.resume_instance("vm1.example.com")
    assert hv.instance_info("vm1.example.com").state == base.STATE_RUNNING  # type: ignore[union-attr]
    hv.stop_instance("vm1.example.com", timeout=WAIT, force=True)
    assert hv.list_instances() == []


@needs_qemu
def test_software_emulation(hv: KvmHypervisor, make_disk: Callable[..., Path]) -> None:
    hv.start_instance(instance(kvm_flag="disabled"), [make_disk()])
    record = hv._own_record("vm1.example.com")
    assert record is not None and record.extra["accel"] == "tcg"
    cmdline = procutil.read_cmdline(record.pid)  # type: ignore[arg-type]
    assert cmdline[cmdline.index("-accel") + 1] == "tcg" and "-enable-kvm" not in cmdline
    assert hv.instance_info("vm1.example.com").state == base.STATE_RUNNING  # type: ignore[union-attr]
    hv.stop_instance("vm1.example.com", timeout=0.5)
    assert hv.list_instances() == []


@needs_qemu
def test_killed_vm_leaves_stale_state(hv: KvmHypervisor, make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk])
    pid = hv.instance_info("vm1.example.com").pid  # type: ignore[union-attr]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert procutil.wait_gone(pid, WAIT)
    assert hv.instance_info("vm1.example.com") is None
    assert hv.list_instances() == []
    hv.start_instance(instance(), [disk])
    assert hv.instance_info("vm1.example.com").pid != pid  # type: ignore[union-attr]
    hv.stop_instance("vm1.example.com", timeout=0.5)
