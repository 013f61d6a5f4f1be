"""A hypervisor that only records state, so logic above it can be tested without guests."""

from __future__ import annotations

import time
from pathlib import Path

from ganeti import errors
from ganeti.hypervisor import base
from ganeti.hypervisor.base import InstanceInfo, RuntimeRecord
from ganeti.objects import Instance


class FakeHypervisor(base.Hypervisor):
    """Instances are a JSON record each; "running" means the record exists."""

    name = "fake"
    PARAMETERS = {}

    def start_instance(self, instance: Instance, disk_paths: list[Path],
                       startup_paused: bool = False) -> None:
        memory, vcpus = base.memory_and_vcpus(instance)
        hvparams = self.fill_parameters(instance.hvparams)
        with self._locked(instance.name):
            self._prepare_start(instance.name)
            state = base.STATE_PAUSED if startup_paused else base.STATE_RUNNING
            self._write_record(RuntimeRecord(
                name=instance.name, hypervisor=self.name, pid=None, start_ticks=None,
                markers=[], started_at=time.time(), memory=memory, vcpus=vcpus,
                disks=[str(p) for p in disk_paths], hvparams=hvparams,
                extra={"state": state}))

    def stop_instance(self, instance_name: str, timeout: float, force: bool = False) -> None:
        with self._locked(instance_name):
            if self._own_record(instance_name) is not None:
                self._remove_state(instance_name)

    def resume_instance(self, instance_name: str) -> None:
        with self._locked(instance_name):
            record = self._own_record(instance_name)
            if record is None:
                raise errors.HypervisorError(f"Instance {instance_name} is not running")
            record.extra["state"] = base.STATE_RUNNING
            self._write_record(record)

    def instance_info(self, instance_name: str) -> InstanceInfo | None:
        record = self._own_record(instance_name)
        if record is None:
            return None
        return InstanceInfo(name=record.name,
                            state=str(record.extra.get("state", base.STATE_RUNNING)),
                            pid=None, memory=record.memory, vcpus=record.vcpus,
                            uptime=self._uptime(record))

    def verify(self) -> list[str]:
        try:
            self.instances_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            return [f"Cannot create the instance state directory {self.instances_dir}: {err}"]
        return []
