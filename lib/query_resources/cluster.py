"""The cluster's identity and settings, as ``QueryClusterInfo`` and OpClusterQuery give them.

One builder for both, so LUXI and the LU never disagree.  The dict holds our
own configuration (what ``gnt-cluster info`` of this project prints) plus
every key Ganeti 3.0's ``gnt-cluster info`` and ``gnt-cluster version`` read,
under Ganeti's names.  Where we lack the feature a key describes (DRBD,
shared file storage, OS definitions, instance policies, ...) the value says
so in Ganeti's own terms: empty, off or null; doc/luxi.md lists them.
"""

from __future__ import annotations

import platform
import struct
from typing import TYPE_CHECKING, Any

from ganeti import constants

if TYPE_CHECKING:
    from ganeti.config import ConfigStore
    from ganeti.pathutils import Paths

# The keys whose value stands for a feature we do not have (doc/luxi.md says why);
# the value each has.  One table, so the docs and the code cannot drift apart.
PLACEHOLDERS: dict[str, tuple[Any, str]] = {
    "os_api_version": (0, "no OS definitions: an instance's OS is a label"),
    "os_hvp": ({}, "no per-OS hypervisor parameters"),
    "hidden_os": ([], "no OS definitions"),
    "blacklisted_os": ([], "no OS definitions"),
    "master_netdev": ("", "no master IP address is brought up"),
    "master_netmask": (32, "no master IP address is brought up"),
    "use_external_mip_script": (False, "no master IP address is brought up"),
    "reserved_lvs": ([], "no reserved logical volumes"),
    "drbd_usermode_helper": ("", "no DRBD"),
    "shared_file_storage_dir": ("", "no shared file storage"),
    "gluster_storage_dir": ("", "no Gluster storage"),
    "maintain_node_health": (False, "no node health maintenance"),
    "uid_pool": ([], "no user-id pool"),
    "default_iallocator": ("", "no instance allocators"),
    "default_iallocator_params": ({}, "no instance allocators"),
    "prealloc_wipe_disks": (False, "disks are not wiped"),
    "install_image": ("", "no install images"),
    "instance_communication_network": ("", "no instance communication network"),
    "zeroing_image": ("", "no zeroing image: exports copy allocated blocks"),
    "enabled_user_shutdown": (False, "no user shutdown"),
    "modify_ssh_setup": (False, "SSH keys are set up only by gnt-node add"),
    "nicparams": ({}, "no cluster-wide NIC defaults"),
    "diskparams": ({}, "no disk parameters"),
    "enabled_data_collectors": ({}, "no data collectors (no monitoring daemon)"),
    "data_collector_interval": ({}, "no data collectors (no monitoring daemon)"),
    "ssh_key_type": (None, "no cluster SSH key pair: nodes keep their own host keys"),
    "ssh_key_bits": (None, "no cluster SSH key pair: nodes keep their own host keys"),
    "vcs_version": ("unknown", "not recorded: the package is not built from a VCS tree"),
}

# an instance policy that limits nothing (we enforce none); 3.0 reads these keys
_NO_POLICY: dict[str, Any] = {"minmax": [], "std": {}, "vcpu-ratio": None,
                              "spindle-ratio": None}


def cluster_policy(cluster: Any) -> dict[str, Any]:
    """The instance policy 3.0's clients show: no limits, the enabled disk templates."""
    return {**_NO_POLICY, "disk-templates": list(cluster.enabled_disk_templates)}


def architecture() -> list[str]:
    """(pointer width, machine) of this node, as Ganeti's runtime.GetArchInfo.

    The width from the interpreter's pointer size: platform.architecture()
    runs file(1) on every call, which cost each QueryClusterInfo 8 ms."""
    return [f"{8 * struct.calcsize('P')}bit", platform.machine()]


def cluster_info(cfg: ConfigStore, paths: Paths | None = None) -> dict[str, Any]:
    """Our configuration's fields, then Ganeti 3.0's keys (ours win where both exist)."""
    cluster = cfg.get_cluster_info()
    data: dict[str, Any] = {key: value for key, (value, _) in PLACEHOLDERS.items()}
    enabled_hv = list(cluster.enabled_hypervisors)
    file_dir = cluster.file_storage_dir or (str(paths.file_storage_dir) if paths else "")
    data.update(cluster.model_dump(mode="json"))
    data.update({
        "software_version": constants.RELEASE_VERSION,
        "protocol_version": constants.PROTOCOL_VERSION,
        "config_version": constants.CONFIG_VERSION,
        "export_version": constants.EXPORT_VERSION,
        "architecture": architecture(),
        "name": cluster.cluster_name,
        "master": cfg.get_master_node_name(),
        "default_hypervisor": enabled_hv[0] if enabled_hv else "",
        "enabled_hypervisors": enabled_hv,
        "hvparams": {hv: dict(cluster.hvparams.get(hv, {})) for hv in enabled_hv},
        "ipolicy": cluster_policy(cluster),
        "candidate_pool_size": constants.CANDIDATE_POOL_SIZE,
        # our queue refuses jobs beyond max_queued_jobs: the most it ever tracks
        "max_tracked_jobs": cluster.max_queued_jobs,
        "mac_prefix": constants.MAC_PREFIX,
        "volume_group_name": (constants.DEFAULT_VG if constants.DT_PLAIN
                              in cluster.enabled_disk_templates else ""),
        "file_storage_dir": file_dir,
        "tags": sorted(cluster.tags),
        "primary_ip_version": 4,
        "serial_no": cfg.get_serial(),
    })
    return data
