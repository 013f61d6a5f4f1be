"""KVM/QEMU instances: ``qemu-system-x86_64 -daemonize`` with a QMP socket per instance.

``-daemonize`` makes qemu's first process exit only once the VM is set up,
which gives ``start_instance`` its "really running" point without polling.
qemu is started in the instance's runtime directory and given relative socket
and log paths, so deep node roots never hit the unix socket path limit.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ganeti import errors
from ganeti.hypervisor import base, detached, procutil
from ganeti.hypervisor.base import Quiesce, RuntimeRecord
from ganeti.hypervisor.qga import AgentUnavailable, QgaClient
from ganeti.hypervisor.qmp import QmpClient
from ganeti.objects import Instance
from ganeti.pathutils import Paths

QEMU_BINARY = "qemu-system-x86_64"
KVM_DEVICE = "/dev/kvm"
QMP_SOCKET = "qmp.sock"
# QEMU's end of the guest agent's virtio-serial port (org.qemu.guest_agent.0)
QGA_SOCKET = "qga.sock"
QGA_PORT_NAME = "org.qemu.guest_agent.0"
# no agent answers within this: the snapshot is crash-consistent, not frozen
AGENT_TIMEOUT = 1.0
FREEZE_TIMEOUT = 30.0
PID_FILE = "qemu.pid"
SERIAL_LOG = "serial.log"
START_TIMEOUT = 60.0
QMP_TIMEOUT = 10.0

KVM_FLAG_AUTO = ""
KVM_FLAG_ENABLED = "enabled"
KVM_FLAG_DISABLED = "disabled"
# "default": cache=none (O_DIRECT, no double caching) when the disk supports it
CACHE_CHOICES = ("default", "none", "writethrough", "writeback", "directsync", "unsafe")
# Ganeti's disk_aio; "native" needs O_DIRECT (cache none or directsync)
AIO_CHOICES = ("threads", "native", "io_uring")
_DIRECT_CACHES = ("none", "directsync")

_STATUS_MAP = {
    "running": base.STATE_RUNNING,
    "paused": base.STATE_PAUSED,
    "prelaunch": base.STATE_PAUSED,
    "suspended": base.STATE_PAUSED,
    "inmigrate": base.STATE_PAUSED,
    "postmigrate": base.STATE_PAUSED,
    "finish-migrate": base.STATE_PAUSED,
    "save-vm": base.STATE_PAUSED,
    "restore-vm": base.STATE_PAUSED,
    "debug": base.STATE_PAUSED,
    "watchdog": base.STATE_PAUSED,
    "shutdown": base.STATE_SHUTDOWN,
    "internal-error": base.STATE_CRASHED,
    "io-error": base.STATE_CRASHED,
    "guest-panicked": base.STATE_CRASHED,
}


def kvm_usable() -> bool:
    """Whether hardware virtualization can be used (the device opens read-write)."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def direct_io_supported(path: Path) -> bool:
    """cache=none needs O_DIRECT, which e.g. tmpfs refuses."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def disk_cache_mode(choice: str, disk: Path) -> str:
    """The cache= of a disk: "default" is none (O_DIRECT) where the file allows it.

    Any mode gives a snapshot taken while paused every write the guest saw
    complete (doc/kvm.md, "Live export"); none also keeps QEMU and the guest
    from caching the same data twice.
    """
    if choice == "default":
        return "none" if direct_io_supported(disk) else "writeback"
    return choice


def _path_param() -> base.Param:
    """A file on the node: empty (unused) or an absolute path, as Ganeti's kernel_path."""
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        if value and not os.path.isabs(value):
            return "must be an absolute path (or empty)"
        return None
    return base.Param("", check)


def _opt(value: str) -> str:
    """Escape a value inside a qemu option list (a literal comma is doubled)."""
    return value.replace(",", ",,")


class KvmHypervisor(detached.DetachedHypervisor):
    """Full virtual machines; KVM acceleration when available, TCG otherwise."""

    name = "kvm"
    PARAMETERS = {
        "kvm_path": base.str_param(""),
        "kvm_flag": base.choice_param(KVM_FLAG_AUTO,
                                      (KVM_FLAG_AUTO, KVM_FLAG_ENABLED, KVM_FLAG_DISABLED)),
        "disk_cache": base.choice_param("default", CACHE_CHOICES),
        "disk_aio": base.choice_param("threads", AIO_CHOICES),
        "machine_version": base.str_param(""),
        # Ganeti's direct kernel boot: -kernel/-initrd/-append; initrd_path and kernel_args
        # are used only with a kernel_path (empty: boot from the disks as before)
        "kernel_path": _path_param(),
        "initrd_path": _path_param(),
        "kernel_args": base.str_param(""),
    }

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths)
        # sessions kept across one quiesce (per instance; its lock is held meanwhile)
        self._quiesce_qmp: dict[str, QmpClient] = {}
        self._quiesce_qga: dict[str, QgaClient] = {}

    def qmp_socket(self, instance_name: str) -> Path:
        return self.instance_dir(instance_name) / QMP_SOCKET

    def qmp(self, instance_name: str, timeout: float = QMP_TIMEOUT) -> QmpClient:
        """A QMP session to a running instance (a context manager)."""
        return QmpClient(self.qmp_socket(instance_name), timeout)

    def verify(self) -> list[str]:
        binary = self._binary(self.fill_parameters({}))
        if binary is None:
            return [f"The qemu binary ({QEMU_BINARY}) is not installed on this node"]
        try:
            result = subprocess.run([binary, "--version"], stdin=subprocess.DEVNULL,
                                    capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return [f"The qemu binary {binary} cannot be run: {err}"]
        if result.returncode != 0:
            text = result.stderr.decode("utf-8", "replace").strip()
            return [f"The qemu binary {binary} does not work: {text}"]
        return []

    @staticmethod
    def _binary(hvparams: dict[str, Any]) -> str | None:
        path = hvparams.get("kvm_path") or QEMU_BINARY
        return shutil.which(path)

    @staticmethod
    def _accelerator(kvm_flag: str) -> str:
        if kvm_flag == KVM_FLAG_DISABLED:
            return "tcg"
        if kvm_usable():
            return "kvm"
        if kvm_flag == KVM_FLAG_ENABLED:
            raise errors.HypervisorError(
                f"KVM acceleration was requested but {KVM_DEVICE} cannot be opened")
        return "tcg"

    def build_command(self, instance: Instance, disks: list[Path], startup_paused: bool,
                      inst_dir: Path, hvparams: dict[str, Any], memory: int,
                      vcpus: int, accel: str) -> list[str]:
        """The qemu command line; paths inside the runtime dir are relative to it."""
        binary = self._binary(hvparams)
        if binary is None:
            raise errors.HypervisorError(
                f"Cannot start instance {instance.name}: qemu binary "
                f"{hvparams.get('kvm_path') or QEMU_BINARY} not found")
        machine = hvparams["machine_version"]
        args = [binary, "-name", instance.name, "-no-user-config", "-nodefaults"]
        args += ["-enable-kvm"] if accel == "kvm" else ["-accel", accel]
        if machine:
            args += ["-machine", _opt(machine)]
        args += ["-m", str(memory), "-smp", str(vcpus), "-display", "none",
                 "-chardev", f"file,id=serial0,path={SERIAL_LOG}", "-serial", "chardev:serial0",
                 "-chardev", f"socket,id=qmp,path={QMP_SOCKET},server=on,wait=off",
                 "-mon", "chardev=qmp,mode=control",
                 # the guest agent's channel; nobody has to answer on it (see quiesce)
                 "-device", "virtio-serial-pci,id=vser0",
                 "-chardev", f"socket,id=qga0,path={QGA_SOCKET},server=on,wait=off",
                 "-device", f"virtserialport,bus=vser0.0,chardev=qga0,name={QGA_PORT_NAME}",
                 "-pidfile", str(inst_dir / PID_FILE), "-daemonize"]
        for index, disk in enumerate(disks):
            cache = disk_cache_mode(hvparams["disk_cache"], disk)
            aio = hvparams["disk_aio"]
            if aio == "native" and cache not in _DIRECT_CACHES:
                raise errors.HypervisorError(
                    f"Cannot start instance {instance.name}: disk_aio=native needs"
                    f" disk_cache none or directsync (O_DIRECT), not {cache}")
            args += ["-drive", f"file={_opt(str(disk))},format=raw,if=virtio,"
                               f"index={index},cache={cache},aio={aio}"]
        args += self._boot_args(instance, hvparams)
        if startup_paused:
            args.append("-S")
        return args

    @staticmethod
    def _boot_args(instance: Instance, hvparams: dict[str, Any]) -> list[str]:
        """Direct kernel boot (kernel_path, initrd_path, kernel_args), checked on the node."""
        kernel = hvparams.get("kernel_path") or ""
        if not kernel:
            return []
        args = []
        for key, option in (("kernel_path", "-kernel"), ("initrd_path", "-initrd")):
            path = hvparams.get(key) or ""
            if not path:
                continue
            if not os.path.isfile(path):
                raise errors.HypervisorError(
                    f"Cannot start instance {instance.name}: {key} {path} is not a file"
                    " on this node")
            args += [option, path]
        if hvparams.get("kernel_args"):
            args += ["-append", str(hvparams["kernel_args"])]
        return args

    def _launch(self, instance: Instance, disks: list[Path], startup_paused: bool,
                inst_dir: Path, hvparams: dict[str, Any], memory: int, vcpus: int) -> None:
        accel = self._accelerator(hvparams["kvm_flag"])
        args = self.build_command(instance, disks, startup_paused, inst_dir, hvparams,
                                  memory, vcpus, accel)
        pid_file = inst_dir / PID_FILE
        started_at = time.time()
        with open(inst_dir / detached.LOG_FILE, "ab") as log:
            try:
                launcher = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=log, cwd=inst_dir, start_new_session=True)
            except OSError as err:
                raise errors.HypervisorError(
                    f"Cannot start instance {instance.name}: {err}") from None
        try:
            code = launcher.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
            self._kill_from_pid_file(pid_file)
            raise errors.HypervisorError(
                f"Failed to start instance {instance.name}: qemu did not finish "
                f"starting within {START_TIMEOUT:.0f}s") from None
        if code != 0:
            raise errors.HypervisorError(
                f"Failed to start instance {instance.name}: qemu exited with code {code}: "
                f"{self.log_tail(instance.name) or 'no output'}")
        pid = _read_pid(pid_file)
        if pid is None:
            raise errors.HypervisorError(
                f"Failed to start instance {instance.name}: qemu wrote no pid file")
        try:
            record = self._new_record(instance, pid, [str(pid_file)], started_at, disks,
                                      hvparams, memory, vcpus, extra={"accel": accel})
        except BaseException:  # unrecorded, nobody could find it again
            self._kill_from_pid_file(pid_file)
            raise
        state = self._guest_state(record)
        expected = base.STATE_PAUSED if startup_paused else base.STATE_RUNNING
        if state != expected:
            raise errors.HypervisorError(
                f"Instance {instance.name} started but is {state}, not {expected}")

    def instance_info(self, instance_name: str) -> base.InstanceInfo | None:
        """As for every detached instance, plus the accelerator it was started with."""
        info = super().instance_info(instance_name)
        record = self._own_record(instance_name) if info is not None else None
        if info is None or record is None:
            return info
        return dataclasses.replace(info, accel=str(record.extra.get("accel") or "") or None)

    def _kill_from_pid_file(self, pid_file: Path) -> None:
        pid = _read_pid(pid_file)
        if pid is not None:
            procutil.kill_and_wait(pid, None, [str(pid_file)], detached.KILL_WAIT)

    def _request_shutdown(self, record: RuntimeRecord) -> bool:
        with self.qmp(record.name) as client:
            client.execute("system_powerdown")
        return True

    def _guest_state(self, record: RuntimeRecord) -> str:
        try:
            with self.qmp(record.name) as client:
                status = client.execute("query-status")
        except errors.HypervisorError:
            return base.STATE_UNKNOWN
        raw = status.get("status") if isinstance(status, dict) else None
        return _STATUS_MAP.get(str(raw), base.STATE_UNKNOWN)

    def _resume(self, record: RuntimeRecord) -> None:
        with self.qmp(record.name) as client:
            client.execute("cont")

    # -- quiesce (doc/kvm.md, "Live export") ------------------------------

    def qga_socket(self, instance_name: str) -> Path:
        return self.instance_dir(instance_name) / QGA_SOCKET

    def quiesce_session(self, instance_name: str) -> QmpClient | None:
        """The QMP session a running quiesce holds; QEMU serves one at a time, so
        other QMP clients wait for the pause to end."""
        return self._quiesce_qmp.get(instance_name)

    def _prepare_pause(self, record: RuntimeRecord) -> None:
        # connected before the window and kept for cont: the pause is two round trips
        client = self.qmp(record.name)
        client.connect()
        self._quiesce_qmp[record.name] = client

    def _pause_vcpus(self, record: RuntimeRecord) -> None:
        # "stop" returns after vm_stop: vCPUs paused, bdrv_drain_all, bdrv_flush_all
        client = self._quiesce_qmp.get(record.name)
        if client is None:
            raise errors.HypervisorError(f"No QMP session to pause {record.name}")
        client.execute("stop")

    def _resume_vcpus(self, record: RuntimeRecord) -> float | None:
        client = self._quiesce_qmp.pop(record.name, None)
        if client is None:   # "stop" never got a session; a fresh one to be sure
            self._resume(record)
            return None
        try:
            client.execute("cont")
        finally:
            client.close()
        # QEMU sends STOP once the vCPUs are paused and RESUME before "cont" answers
        stamps: dict[str, Any] = {e["event"]: e.get("timestamp") for e in client.events
                                  if e.get("event") in ("STOP", "RESUME")}
        try:
            stop, resume = (float(stamps[k]["seconds"]) + float(stamps[k]["microseconds"])
                            / 1e6 for k in ("STOP", "RESUME"))
        except (KeyError, TypeError, ValueError):
            return None
        return round((resume - stop) * 1000.0, 3)

    def _freeze(self, record: RuntimeRecord, result: Quiesce) -> bool:
        path = self.qga_socket(record.name)
        if not path.exists():
            result.notes.append("no guest agent channel (instance started without one)")
            return False
        agent = QgaClient(path, AGENT_TIMEOUT)
        try:
            agent.connect()
        except AgentUnavailable:
            result.notes.append(f"no guest agent answered within {AGENT_TIMEOUT:g}s")
            return False
        try:
            count = agent.execute("guest-fsfreeze-freeze", timeout=FREEZE_TIMEOUT)
        except errors.HypervisorError as err:
            result.notes.append(f"guest agent could not freeze: {err}")
            self._thaw_with(agent, result)
            agent.close()
            return False
        if not isinstance(count, int) or count <= 0:
            result.notes.append("guest agent froze no filesystem")
            self._thaw_with(agent, result)
            agent.close()
            return False
        self._quiesce_qga[record.name] = agent
        return True

    def _thaw(self, record: RuntimeRecord, result: Quiesce) -> None:
        agent = self._quiesce_qga.pop(record.name, None)
        if agent is not None:
            try:
                self._thaw_with(agent, result)
            finally:
                agent.close()

    @staticmethod
    def _thaw_with(agent: QgaClient, result: Quiesce) -> None:
        try:
            agent.execute("guest-fsfreeze-thaw", timeout=FREEZE_TIMEOUT)
        except errors.HypervisorError as err:
            result.notes.append(f"guest agent could not thaw: {err}")


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
