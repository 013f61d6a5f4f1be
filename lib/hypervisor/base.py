"""The hypervisor interface the node daemon programs against, and its runtime records.

Each node keeps one directory per instance under ``<run dir>/instances``; its
``runtime.json`` says which hypervisor runs the instance, with what pid and
which command-line markers identify that process.  Everything a hypervisor
knows about running instances is in these files, so a restarted node daemon
(or a second :class:`Hypervisor` object) finds the same instances again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ganeti import errors
from ganeti.hypervisor import procutil
from ganeti.objects import Instance
from ganeti.pathutils import Paths

STATE_RUNNING = "running"
STATE_PAUSED = "paused"
STATE_SHUTDOWN = "shutdown"
STATE_CRASHED = "crashed"
STATE_UNKNOWN = "unknown"

RUNTIME_FILE = "runtime.json"

# consistency of disks snapshotted inside Hypervisor.quiesce (doc/kvm.md, "Live export")
LEVEL_FROZEN = "frozen"                # the guest agent froze the guest's filesystems
LEVEL_CRASH = "crash-consistent"       # as after a power cut at the moment of the pause

DEFAULT_MEMORY = 128
DEFAULT_VCPUS = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


@dataclass(frozen=True)
class InstanceInfo:
    """What a node reports about one running instance."""

    name: str
    state: str
    pid: int | None
    memory: int  # MiB
    vcpus: int
    uptime: float  # seconds
    accel: str | None = None  # kvm: the accelerator it runs with ("kvm" or "tcg")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RuntimeRecord:
    """Contents of ``runtime.json``; ``pid`` is None for state-only (fake) instances."""

    name: str
    hypervisor: str
    pid: int | None
    start_ticks: int | None
    markers: list[str]
    started_at: float
    memory: int
    vcpus: int
    disks: list[str] = field(default_factory=list)
    hvparams: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RuntimeRecord:
        if not isinstance(data, dict):
            raise ValueError("runtime record is not an object")
        pid = data.get("pid")
        ticks = data.get("start_ticks")
        return cls(
            name=str(data["name"]), hypervisor=str(data["hypervisor"]),
            pid=int(pid) if pid is not None else None,
            start_ticks=int(ticks) if ticks is not None else None,
            markers=[str(m) for m in data.get("markers", [])],
            started_at=float(data["started_at"]), memory=int(data["memory"]),
            vcpus=int(data["vcpus"]), disks=[str(d) for d in data.get("disks", [])],
            hvparams=dict(data.get("hvparams", {})), extra=dict(data.get("extra", {})))

    def is_alive(self) -> bool:
        """A state-only record is alive while it exists; a process must really be ours."""
        if self.pid is None:
            return True
        return procutil.is_our_process(self.pid, self.start_ticks, self.markers)


@dataclass
class Quiesce:
    """What :meth:`Hypervisor.quiesce` got; the windows are known once it has resumed.

    ``pause_ms`` is an upper bound of the time the guest could not run: from
    before the pause request to after the resume returned.
    """

    instance: str
    level: str = LEVEL_CRASH
    pause_ms: float = 0.0
    frozen_ms: float | None = None     # filesystems frozen (level "frozen" only)
    # the stop as the hypervisor timed it itself (QEMU's STOP to RESUME events)
    stopped_ms: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_instance_name(name: str) -> str:
    """Instance names become directory names: refuse anything that could escape."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise errors.HypervisorError(f"Invalid instance name {name!r}")
    return name


def memory_and_vcpus(instance: Instance) -> tuple[int, int]:
    """Memory (beparams maxmem, MiB) and vcpus, validated."""
    memory = instance.beparams.get("maxmem", DEFAULT_MEMORY)
    vcpus = instance.beparams.get("vcpus", DEFAULT_VCPUS)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
        raise errors.HypervisorError(f"Invalid maxmem {memory!r} for instance {instance.name}")
    if isinstance(vcpus, bool) or not isinstance(vcpus, int) or vcpus <= 0:
        raise errors.HypervisorError(f"Invalid vcpus {vcpus!r} for instance {instance.name}")
    return memory, vcpus


@dataclass(frozen=True)
class Param:
    """One hypervisor parameter: its default and a check returning an error text or None."""

    default: Any
    check: Callable[[Any], str | None]


def int_param(default: int, minimum: int, maximum: int) -> Param:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if not minimum <= value <= maximum:
            return f"must be between {minimum} and {maximum}"
        return None
    return Param(default, check)


def bool_param(default: bool) -> Param:
    return Param(default, lambda v: None if isinstance(v, bool) else "must be a boolean")


def choice_param(default: str, choices: tuple[str, ...]) -> Param:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(map(repr, choices))}"
    return Param(default, check)


def str_param(default: str) -> Param:
    return Param(default, lambda v: None if isinstance(v, str) else "must be a string")


class Hypervisor(ABC):
    """A hypervisor driver bound to one node's directories."""

    name: ClassVar[str]
    PARAMETERS: ClassVar[dict[str, Param]] = {}

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.instances_dir = paths.run_dir / "instances"

    # -- the interface ---------------------------------------------------

    @abstractmethod
    def start_instance(self, instance: Instance, disk_paths: list[Path],
                       startup_paused: bool = False) -> None:
        """Start and return once it really runs; HypervisorError with the reason if not."""

    @abstractmethod
    def stop_instance(self, instance_name: str, timeout: float, force: bool = False) -> None:
        """Ask the guest to shut down, kill it after ``timeout``; return once it is gone."""

    @abstractmethod
    def resume_instance(self, instance_name: str) -> None:
        """Continue an instance that was started paused."""

    @abstractmethod
    def instance_info(self, instance_name: str) -> InstanceInfo | None:
        """None when the instance does not run here (or only stale state is left)."""

    def list_instances(self) -> list[str]:
        """Names of the instances of this hypervisor that really run on this node."""
        return sorted(rec.name for rec in self._records() if rec.is_alive())

    @abstractmethod
    def verify(self) -> list[str]:
        """Problems that keep this hypervisor from working on this node; [] if none."""

    @classmethod
    def fill_parameters(cls, hvparams: dict[str, Any]) -> dict[str, Any]:
        """Defaults plus ``hvparams``; unknown names and bad values raise HypervisorError."""
        unknown = sorted(set(hvparams) - set(cls.PARAMETERS))
        if unknown:
            raise errors.HypervisorError(
                f"Unknown {cls.name} hypervisor parameter(s): {', '.join(unknown)}")
        filled: dict[str, Any] = {}
        for key, param in cls.PARAMETERS.items():
            value = hvparams.get(key, param.default)
            problem = param.check(value)
            if problem:
                raise errors.HypervisorError(
                    f"Invalid {cls.name} hypervisor parameter {key}={value!r}: {problem}")
            filled[key] = value
        return filled

    @contextlib.contextmanager
    def quiesce(self, instance_name: str) -> Iterator[Quiesce]:
        """Hold a running instance still: frozen filesystems where a guest agent
        answers, then stopped vCPUs; what runs inside sees disks no guest write
        changes. Resumes (and thaws) whatever happens inside; an instance that
        was paused already stays paused.
        """
        with self._locked(instance_name):
            record = self._own_record(instance_name)
            if record is None or not record.is_alive():
                raise errors.HypervisorError(f"Instance {instance_name} is not running")
            result = Quiesce(instance_name)
            frozen_at = time.monotonic()
            frozen = self._freeze(record, result)
            if frozen:
                result.level = LEVEL_FROZEN
            try:
                was_paused = self._guest_state_for_quiesce(record) == STATE_PAUSED
                if was_paused:
                    result.notes.append("the instance was paused already; it stays paused")
                if not was_paused:
                    self._prepare_pause(record)
                paused_at = time.monotonic()
                try:
                    if not was_paused:
                        self._pause_vcpus(record)
                    yield result
                finally:
                    try:
                        if not was_paused:
                            result.stopped_ms = self._resume_vcpus(record)
                    finally:
                        result.pause_ms = (time.monotonic() - paused_at) * 1000.0
            finally:
                if frozen:
                    self._thaw(record, result)
                    result.frozen_ms = (time.monotonic() - frozen_at) * 1000.0

    # quiesce steps; the state-only default holds nothing because nothing writes

    def _freeze(self, record: RuntimeRecord, result: Quiesce) -> bool:
        """Freeze the guest's filesystems if its agent answers; False if not frozen."""
        return False

    def _thaw(self, record: RuntimeRecord, result: Quiesce) -> None:
        """Undo :meth:`_freeze` (errors go into ``result.notes``)."""
        return None

    def _guest_state_for_quiesce(self, record: RuntimeRecord) -> str:
        return STATE_RUNNING

    def _prepare_pause(self, record: RuntimeRecord) -> None:
        """Whatever can be done before the pause window (e.g. connecting)."""
        return None

    def _pause_vcpus(self, record: RuntimeRecord) -> None:
        """Stop the guest; return once it no longer runs and its I/O has completed."""
        return None

    def _resume_vcpus(self, record: RuntimeRecord) -> float | None:
        """Let the guest run again; how long it was stopped by the hypervisor's own
        clock, where it tells."""
        return None

    # -- runtime state ---------------------------------------------------

    def instance_dir(self, instance_name: str) -> Path:
        return self.instances_dir / check_instance_name(instance_name)

    @contextlib.contextmanager
    def _locked(self, instance_name: str) -> Iterator[Path]:
        """Serialize start/stop of one instance across threads and processes."""
        inst_dir = self.instance_dir(instance_name)
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.instances_dir / f".{instance_name}.lock",
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield inst_dir
        finally:
            os.close(fd)

    def _read_record(self, instance_name: str) -> RuntimeRecord | None:
        """The record of any hypervisor for this name; a damaged file counts as none."""
        path = self.instance_dir(instance_name) / RUNTIME_FILE
        try:
            return RuntimeRecord.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _own_record(self, instance_name: str) -> RuntimeRecord | None:
        record = self._read_record(instance_name)
        return record if record is not None and record.hypervisor == self.name else None

    def _write_record(self, record: RuntimeRecord) -> None:
        inst_dir = self.instance_dir(record.name)
        inst_dir.mkdir(parents=True, exist_ok=True)
        tmp = inst_dir / f".{RUNTIME_FILE}.tmp"
        tmp.write_text(json.dumps(record.to_dict(), indent=1, sort_keys=True))
        os.replace(tmp, inst_dir / RUNTIME_FILE)

    def _remove_state(self, instance_name: str) -> None:
        shutil.rmtree(self.instance_dir(instance_name), ignore_errors=True)

    def _records(self) -> Iterator[RuntimeRecord]:
        try:
            entries = sorted(os.listdir(self.instances_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.startswith(".") or not _NAME_RE.match(entry):
                continue
            record = self._own_record(entry)
            if record is not None:
                yield record

    def _prepare_start(self, instance_name: str) -> Path:
        """Refuse a running instance (of any hypervisor); clear stale state. Hold the lock."""
        record = self._read_record(instance_name)
        if record is not None and record.is_alive():
            where = "" if record.hypervisor == self.name else f" (hypervisor {record.hypervisor})"
            pid = f", pid {record.pid}" if record.pid else ""
            raise errors.HypervisorError(
                f"Instance {instance_name} is already running{where}{pid}")
        self._remove_state(instance_name)
        inst_dir = self.instance_dir(instance_name)
        inst_dir.mkdir(parents=True)
        return inst_dir

    @staticmethod
    def _uptime(record: RuntimeRecord) -> float:
        return max(0.0, time.time() - record.started_at)
