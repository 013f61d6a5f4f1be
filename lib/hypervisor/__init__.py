"""Hypervisor drivers (node side), chosen by the instance's ``hypervisor`` name."""

from __future__ import annotations

from ganeti import constants, errors
from ganeti.hypervisor.base import Hypervisor, InstanceInfo
from ganeti.hypervisor.hv_fake import FakeHypervisor
from ganeti.hypervisor.hv_kvm import KvmHypervisor
from ganeti.hypervisor.hv_process import ProcessHypervisor
from ganeti.pathutils import Paths

__all__ = ["HYPERVISORS", "Hypervisor", "InstanceInfo", "get_hypervisor"]

HYPERVISORS: dict[str, type[Hypervisor]] = {
    constants.HT_FAKE: FakeHypervisor,
    constants.HT_PROCESS: ProcessHypervisor,
    constants.HT_KVM: KvmHypervisor,
}


def get_hypervisor(name: str, paths: Paths) -> Hypervisor:
    """A driver for hypervisor ``name`` working in the node directories ``paths``."""
    try:
        cls = HYPERVISORS[name]
    except KeyError:
        raise errors.HypervisorError(f"Unknown hypervisor '{name}'") from None
    return cls(paths)
