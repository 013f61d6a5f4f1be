"""Shared life cycle of hypervisors whose instances are detached host processes.

Start, stop and info follow one pattern for the process and kvm hypervisors;
only launching, the graceful shutdown request and reading the guest state
differ.  Stopping always ends in a kill, so a guest that ignores the request
cannot block a node operation for longer than the caller's timeout.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

from ganeti import errors
from ganeti.hypervisor import base, procutil
from ganeti.hypervisor.base import InstanceInfo, RuntimeRecord
from ganeti.objects import Instance

# how long a SIGKILLed process may take to disappear before we call it a failure
KILL_WAIT = 30.0
LOG_FILE = "console.log"
_LOG_TAIL = 2000

logger = logging.getLogger(__name__)


class DetachedHypervisor(base.Hypervisor):
    """Instances run as processes in their own session, outliving the node daemon."""

    def start_instance(self, instance: Instance, disk_paths: list[Path],
                       startup_paused: bool = False) -> None:
        memory, vcpus = base.memory_and_vcpus(instance)
        hvparams = self.fill_parameters(instance.hvparams)
        disks = [Path(os.path.abspath(p)) for p in disk_paths]
        missing = [str(p) for p in disks if not p.exists()]
        if missing:
            raise errors.HypervisorError(
                f"Cannot start instance {instance.name}: missing disk(s) {', '.join(missing)}")
        with self._locked(instance.name):
            inst_dir = self._prepare_start(instance.name)
            try:
                self._launch(instance, disks, startup_paused, inst_dir, hvparams, memory, vcpus)
            except BaseException:
                self._discard(instance.name)
                raise

    def stop_instance(self, instance_name: str, timeout: float, force: bool = False) -> None:
        with self._locked(instance_name):
            record = self._own_record(instance_name)
            if record is None:
                return
            if record.pid is not None and record.is_alive():
                self._terminate(record, timeout, force)
            self._remove_state(instance_name)

    def instance_info(self, instance_name: str) -> InstanceInfo | None:
        record = self._own_record(instance_name)
        if record is None or not record.is_alive():
            return None
        return InstanceInfo(name=record.name, state=self._guest_state(record), pid=record.pid,
                            memory=record.memory, vcpus=record.vcpus,
                            uptime=self._uptime(record))

    def resume_instance(self, instance_name: str) -> None:
        with self._locked(instance_name):
            record = self._own_record(instance_name)
            if record is None or not record.is_alive():
                raise errors.HypervisorError(f"Instance {instance_name} is not running")
            self._resume(record)

    # -- for subclasses --------------------------------------------------

    @abstractmethod
    def _launch(self, instance: Instance, disks: list[Path], startup_paused: bool,
                inst_dir: Path, hvparams: dict[str, Any], memory: int, vcpus: int) -> None:
        """Start the process, record it (as early as possible), return once it runs."""

    @abstractmethod
    def _request_shutdown(self, record: RuntimeRecord) -> bool:
        """Ask the guest to shut down; False if the request could not be delivered."""

    @abstractmethod
    def _guest_state(self, record: RuntimeRecord) -> str:
        """One of the base.STATE_* values for a live instance."""

    @abstractmethod
    def _resume(self, record: RuntimeRecord) -> None:
        """Continue a paused guest."""

    @abstractmethod
    def _pause_vcpus(self, record: RuntimeRecord) -> None:
        """Stop the guest for a snapshot; return once it no longer runs or writes."""

    def _resume_vcpus(self, record: RuntimeRecord) -> float | None:
        self._resume(record)
        return None

    def _guest_state_for_quiesce(self, record: RuntimeRecord) -> str:
        return self._guest_state(record)

    def _new_record(self, instance: Instance, pid: int, markers: list[str], started_at: float,
                    disks: list[Path], hvparams: dict[str, Any], memory: int, vcpus: int,
                    extra: dict[str, Any] | None = None) -> RuntimeRecord:
        stat = procutil.read_stat(pid)
        record = RuntimeRecord(
            name=instance.name, hypervisor=self.name, pid=pid,
            start_ticks=stat.start_ticks if stat else None, markers=markers,
            started_at=started_at, memory=memory, vcpus=vcpus,
            disks=[str(d) for d in disks], hvparams=hvparams, extra=extra or {})
        self._write_record(record)
        return record

    def _signal(self, record: RuntimeRecord, sig: int) -> bool:
        if record.pid is None:
            return False
        return procutil.signal_ours(record.pid, record.start_ticks, record.markers, sig)

    def _proc_state(self, record: RuntimeRecord) -> str:
        stat = procutil.read_stat(record.pid) if record.pid else None
        if stat is not None and stat.state in ("T", "t"):
            return base.STATE_PAUSED
        return base.STATE_RUNNING

    def log_tail(self, instance_name: str) -> str:
        """End of the instance's console/error log, for error messages."""
        try:
            with open(self.instance_dir(instance_name) / LOG_FILE, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - _LOG_TAIL))
                return handle.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    # -- internals -------------------------------------------------------

    def _terminate(self, record: RuntimeRecord, timeout: float, force: bool) -> None:
        assert record.pid is not None
        if not force:
            try:
                delivered = self._request_shutdown(record)
            except (OSError, errors.HypervisorError) as err:
                logger.warning("Graceful shutdown request for %s failed: %s", record.name, err)
                delivered = False
            if delivered and procutil.wait_gone(record.pid, timeout, record.start_ticks,
                                                record.markers):
                return
            logger.info("Instance %s still running after %.1fs, killing it",
                        record.name, timeout if delivered else 0.0)
        if not procutil.kill_and_wait(record.pid, record.start_ticks, record.markers,
                                      KILL_WAIT):
            raise errors.HypervisorError(
                f"Instance {record.name} (pid {record.pid}) did not exit after SIGKILL")

    def _discard(self, instance_name: str) -> None:
        """After a failed start: no process and no state may be left behind."""
        record = self._own_record(instance_name)
        if record is not None and record.pid is not None:
            procutil.kill_and_wait(record.pid, record.start_ticks, record.markers, KILL_WAIT)
        self._remove_state(instance_name)

