"""Typed master-side RPC methods and the call table: GENERATED, do not edit.

Made by ``python -m ganeti.tools.rpc_gen`` from the backend procedures (their
annotated signatures and ``ganeti.rpc.contract.procedure`` marks), so the
master never imports the node side; ``test_rpc_contract`` fails when this
file is stale.  Payloads are typed in their JSON form.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ganeti.rpc import encoders
from ganeti.rpc.calltypes import Arg, RpcCall
from ganeti.rpc.result import RpcResult

if TYPE_CHECKING:
    from collections.abc import Mapping
    from os import PathLike

    from ganeti.objects import Disk, Instance
    from ganeti.rpc.payloads import (
        BaseChoice,
        DiskVerifyResult,
        ExportLocation,
        ExportMetaInfo,
        FinalizeResult,
        GenerationInfo,
        LiveSnapshot,
        NodeInfo,
        ReceiveEndpoint,
    )

# One entry per node procedure (ganeti.rpc.defs checks and indexes them)
CALLS: tuple[RpcCall, ...] = (
    RpcCall(
        "all_instances_info", "all_instances_info", "fast",
        (Arg("hypervisors"),),
        doc="Per node: {instance name: live state} of the instances of these hypervisors.",
    ),
    RpcCall(
        "append_config_records", "append_config_records", "normal",
        (Arg("base_serial"), Arg("records")),
        doc="Append the master's configuration journal records to a candidate's copy.",
    ),
    RpcCall(
        "blockdev_can_snapshot", "blockdev_can_snapshot", "fast",
        (Arg("dev_type"), Arg("logical_id")),
        single_node=True,
        doc="Whether a live snapshot of a disk is expected to work (reflink, LVM).",
    ),
    RpcCall(
        "blockdev_create", "blockdev_create", "slow",
        (Arg("instance_name"), Arg("disk", encoders.disk)),
        single_node=True,
        doc="Create one disk of an instance (Disk.to_dict()); payload is the logical id to store.",
    ),
    RpcCall(
        "blockdev_exists", "blockdev_exists", "fast",
        (Arg("dev_type"), Arg("logical_id")),
        single_node=True,
        doc="Whether a disk exists.",
    ),
    RpcCall(
        "blockdev_grow", "blockdev_grow", "slow",
        (Arg("dev_type"), Arg("logical_id"), Arg("new_size")),
        single_node=True,
        doc="Grow a disk to new_size MiB.",
    ),
    RpcCall(
        "blockdev_keep_export_base", "blockdev_keep_export_base", "normal",
        (Arg("dev_type"), Arg("logical_id"), Arg("snap_logical_id"), Arg("record")),
        single_node=True,
        doc="Keep an export's snapshot as the disk's export base (False: this storage keeps none).",
    ),
    RpcCall(
        "blockdev_list_snapshots", "blockdev_list_snapshots", "fast",
        (Arg("dev_type"), Arg("logical_id")),
        single_node=True,
        doc="Logical ids of a disk's snapshots.",
    ),
    RpcCall(
        "blockdev_remove", "blockdev_remove", "normal",
        (Arg("dev_type"), Arg("logical_id")),
        single_node=True,
        doc="Remove a disk (one that is already gone is fine).",
    ),
    RpcCall(
        "blockdev_remove_snapshot", "blockdev_remove_snapshot", "normal",
        (Arg("dev_type"), Arg("snap_logical_id")),
        single_node=True,
        doc="Remove a snapshot.",
    ),
    RpcCall(
        "blockdev_snapshot", "blockdev_snapshot", "normal",
        (Arg("dev_type"), Arg("logical_id"), Arg("snap_name")),
        single_node=True,
        doc="Snapshot a disk (point-in-time copy); payload is the snapshot's logical id.",
    ),
    RpcCall(
        "export_abort", "export_abort", "normal",
        (Arg("instance_name"),),
        single_node=True,
        doc="Drop a staging dir (the previous export stays).",
    ),
    RpcCall(
        "export_base_info", "export_base_info", "normal",
        (Arg("instance_name"), Arg("sizes")),
        single_node=True,
        doc="Which dumps of the newest export here can be the base of each disk (sizes in bytes).",
    ),
    RpcCall(
        "export_cleanup", "export_cleanup", "normal",
        doc="Finish or undo interrupted finalizes, remove other export leftovers.",
    ),
    RpcCall(
        "export_finalize", "export_finalize", "slow",
        (Arg("instance_name"), Arg("config_text"), Arg("keep_generations")),
        single_node=True,
        doc=("Write config.ini and atomically replace the previous export (keeping it as an older "
             "generation when asked)."),
    ),
    RpcCall(
        "export_generation_info", "export_generation_info", "fast",
        (Arg("instance_name"), Arg("generation")),
        single_node=True,
        doc="config.ini text and path of one export generation (older or the newest).",
    ),
    RpcCall(
        "export_generation_modify", "export_generation_modify", "normal",
        (Arg("instance_name"), Arg("generation"), Arg("protected"), Arg("note")),
        single_node=True,
        doc=("Set the protection and/or note of a generation (generation None: the newest export)."
             "     "),
    ),
    RpcCall(
        "export_generation_remove", "export_generation_remove", "normal",
        (Arg("instance_name"), Arg("generation")),
        single_node=True,
        doc="Remove an older export generation (refused while it is protected).",
    ),
    RpcCall(
        "export_generations", "export_generations", "normal",
        (Arg("instance_names"), Arg("usage")),
        doc="Every export generation here (newest exports included) with timestamp and size.",
    ),
    RpcCall(
        "export_info", "export_info", "fast",
        (Arg("instance_name"),),
        single_node=True,
        doc="config.ini text and (root-relative) path of an export.",
    ),
    RpcCall(
        "export_leftovers", "export_leftovers", "fast",
        doc="Staging, trash and journal entries of exports (only looks).",
    ),
    RpcCall(
        "export_list", "export_list", "fast",
        doc="Instances with a complete export here.",
    ),
    RpcCall(
        "export_prepare", "export_prepare", "normal",
        (Arg("instance_name"),),
        single_node=True,
        doc="Create an empty staging dir for a new export; returns its path.",
    ),
    RpcCall(
        "export_remove", "export_remove", "normal",
        (Arg("instance_name"),),
        single_node=True,
        doc="Remove an export: one rename to a trash name, then the deletion.",
    ),
    RpcCall(
        "export_verify_disk", "export_verify_disk", "day",
        (Arg("instance_name"), Arg("generation"), Arg("disk_index")),
        single_node=True,
        doc="Re-hash one dump of an export generation against config.ini and its block index.",
    ),
    RpcCall(
        "export_verify_record", "export_verify_record", "normal",
        (Arg("instance_name"), Arg("generation"), Arg("ok"), Arg("problems")),
        single_node=True,
        doc="Record a verify's outcome in the generation's sidecar (protection and note kept).",
    ),
    RpcCall(
        "file_storage_orphans", "file_storage_orphans", "normal",
        (Arg("owned_paths"),),
        single_node=True,
        doc="Files under the file storage dir that are none of the given disk paths.",
    ),
    RpcCall(
        "hooks_runner", "hooks_runner", "slow",
        (Arg("hpath"), Arg("phase"), Arg("env", encoders.string_env)),
        doc="Run hook scripts (<hpath>-<phase>.d); payload [[script, status, output], ...].",
    ),
    RpcCall(
        "hypervisor_verify", "hypervisor_verify", "normal",
        (Arg("hypervisors"),),
        doc="Per node: {hypervisor: [what keeps it from working on the node]}.",
    ),
    RpcCall(
        "instance_info", "instance_info", "fast",
        (Arg("instance_name"), Arg("hypervisor")),
        single_node=True,
        doc="Live state of one instance or None (not running here).",
    ),
    RpcCall(
        "instance_reboot", "instance_reboot", encoders.reboot_timeout,
        (Arg("instance", encoders.instance), Arg("reboot_type"), Arg("shutdown_timeout")),
        single_node=True,
        doc="Restart an instance: stop (if running) and start again, whatever the reboot type.",
    ),
    RpcCall(
        "instance_shutdown", "instance_shutdown", encoders.shutdown_timeout,
        (Arg("instance_name"), Arg("hypervisor"), Arg("shutdown_timeout")),
        single_node=True,
        doc="Stop an instance, killing it after the timeout (not running is fine).",
    ),
    RpcCall(
        "instance_snapshot_disks", "instance_snapshot_disks", "slow",
        (Arg("instance", encoders.instance), Arg("snap_name")),
        single_node=True,
        doc="Snapshot every disk of a running instance inside one pause of its guest.",
    ),
    RpcCall(
        "instance_start", "instance_start", "slow",
        (Arg("instance", encoders.instance), Arg("startup_paused")),
        single_node=True,
        doc="Start an instance (Instance.to_dict() with filled parameters); returns once it runs.",
    ),
    RpcCall(
        "instance_verify", "instance_verify", "normal",
        (Arg("instance", encoders.instance),),
        single_node=True,
        doc="Problems with an instance's disks on its node (missing disks); [] if none.",
    ),
    RpcCall(
        "node_info", "node_info", "fast",
        doc="Hostname, memory (MiB), CPUs and free disk (MiB, under the node's root) of each node.",
    ),
    RpcCall(
        "ping", "ping", "fast",
        doc="Liveness check.",
    ),
    RpcCall(
        "test_delay", "test_delay", encoders.test_delay_timeout,
        (Arg("duration", encoders.seconds),),
        doc="Sleep on the nodes (job engine and RPC timeout tests).",
    ),
    RpcCall(
        "transfer_abort", "transfer_abort", "fast",
        (Arg("transfer_ids"),),
        doc="Abort running transfers.",
    ),
    RpcCall(
        "transfer_cleanup", "transfer_cleanup", "normal",
        (Arg("transfer_ids"),),
        doc="Forget transfers (aborting live ones); failed receivers remove their partial output.",
    ),
    RpcCall(
        "transfer_list", "transfer_list", "fast",
        doc="All transfers a node remembers (leftovers of crashed masters).",
    ),
    RpcCall(
        "transfer_receive_start", "transfer_receive_start", "fast",
        (
            Arg("transfer_id"),
            Arg("dest"),
            Arg("size"),
            Arg("magic"),
            Arg("compress"),
            Arg("options"),
        ),
        single_node=True,
        doc="Listen for one disk stream into dest; payload {host, port} for the sender.",
    ),
    RpcCall(
        "transfer_send_start", "transfer_send_start", "fast",
        (
            Arg("transfer_id"),
            Arg("source"),
            Arg("host"),
            Arg("port"),
            Arg("magic"),
            Arg("compress"),
            Arg("options"),
        ),
        single_node=True,
        doc="Connect to a receiver and stream one disk (in a thread of the node daemon).",
    ),
    RpcCall(
        "transfer_status", "transfer_status", "fast",
        (Arg("transfer_ids"),),
        doc="Progress of transfers; payload {id: status} for the ids the node knows.",
    ),
    RpcCall(
        "upload_file", "upload_file", "normal",
        (Arg("file_name"),),
        prepare=encoders.upload_file,
        doc="Copy a master-side cluster file (config, CA) to the nodes.",
    ),
    RpcCall(
        "version", "version", "fast",
        doc="Protocol version of each node.",
    ),
    RpcCall(
        "write_ssconf_files", "write_ssconf_files", "fast",
        (Arg("values"),),
        doc="Write ssconf_<key> files on the nodes (local tools read cluster facts without RPC).",
    ),
    RpcCall(
        "x509_cert_create", "x509_cert_create", "normal",
        (Arg("validity"),),
        single_node=True,
        doc="New key and self-signed certificate; payload [name, cert PEM].",
    ),
    RpcCall(
        "x509_cert_remove", "x509_cert_remove", "fast",
        (Arg("name"),),
        single_node=True,
        doc="Remove a per-transfer key and certificate.",
    ),
    RpcCall(
        "x509_cleanup", "x509_cleanup", "fast",
        doc="Remove expired per-transfer keys; payload: removed names.",
    ),
)


class RpcStubs:
    """One typed method per call; RpcRunner provides ``call``."""

    def call(self, name: str, nodes: str | Iterable[str], *args: Any,
             timeout: float | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def call_all_instances_info(
        self,
        nodes: Iterable[str],
        hypervisors: list[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[dict[str, dict[str, Any]]]]:
        """Per node: {instance name: live state} of the instances of these hypervisors."""
        result: dict[str, RpcResult[dict[str, dict[str, Any]]]] = self.call(
            "all_instances_info", nodes, hypervisors, timeout=timeout)
        return result

    def call_append_config_records(
        self,
        nodes: Iterable[str],
        base_serial: int,
        records: str,
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[int]]:
        """Append the master's configuration journal records to a candidate's copy."""
        result: dict[str, RpcResult[int]] = self.call(
            "append_config_records", nodes, base_serial, records, timeout=timeout)
        return result

    def call_blockdev_can_snapshot(
        self,
        node: str,
        dev_type: str,
        logical_id: list[Any],
        *,
        timeout: float | None = None,
    ) -> RpcResult[bool]:
        """Whether a live snapshot of a disk is expected to work (reflink, LVM)."""
        result: RpcResult[bool] = self.call(
            "blockdev_can_snapshot", node, dev_type, logical_id, timeout=timeout)
        return result

    def call_blockdev_create(
        self,
        node: str,
        instance_name: str,
        disk: Disk,
        *,
        timeout: float | None = None,
    ) -> RpcResult[list[Any]]:
        """Create one disk of an instance (Disk.to_dict()); payload is the logical id to store."""
        result: RpcResult[list[Any]] = self.call(
            "blockdev_create", node, instance_name, disk, timeout=timeout)
        return result

    def call_blockdev_exists(
        self,
        node: str,
        dev_type: str,
        logical_id: list[Any],
        *,
        timeout: float | None = None,
    ) -> RpcResult[bool]:
        """Whether a disk exists."""
        result: RpcResult[bool] = self.call(
            "blockdev_exists", node, dev_type, logical_id, timeout=timeout)
        return result

    def call_blockdev_grow(
        self,
        node: str,
        dev_type: str,
        logical_id: list[Any],
        new_size: int,
        *,
        timeout: float | None = None,
    ) -> RpcResult[None]:
        """Grow a disk to new_size MiB."""
        result: RpcResult[None] = self.call(
            "blockdev_grow", node, dev_type, logical_id, new_size, timeout=timeout)
        return result

    def call_blockdev_keep_export_base(
        self,
        node: str,
        dev_type: str,
        logical_id: list[Any],
        snap_logical_id: list[Any],
        record: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> RpcResult[bool]:
        """Keep an export's snapshot as the disk's export base (False: this storage keeps none)."""
        result: RpcResult[bool] = self.call(
            "blockdev_keep_export_base", node, dev_type, logical_id, snap_logical_id,
            record, timeout=timeout)
        return result

    def call_blockdev_list_snapshots(
        self,
        node: str,
        dev_type: str,
        logical_id: list[Any],
        *,
        timeout: float | None = None,
    ) -> RpcResult[list[list[Any]]]:
        """Logical ids of a disk's snapshots."""
        result: RpcResult[list[list[Any]]] = self.call(
            "blockdev_list_snapshots", node, dev_type, logical_id, timeout=timeout)
        return result

    def call_blockdev_remove(
        self,
        node: str,
        dev_type: str,
        logical_id: list[Any],
        *,
        timeout: float | None = None,
    ) -> RpcResult[None]:
        """Remove a disk (one that is already gone is fine)."""
        result: RpcResult[None] = self.call(
            "blockdev_remove", node, dev_type, logical_id, timeout=timeout)
        return result

    def call_blockdev_remove_snapshot(
        self,
        node: str,
        dev_type: str,
        snap_logical_id: list[Any],
        *,
        timeout: float | None = None,
    ) -> RpcResult[None]:
        """Remove a snapshot."""
        result: RpcResult[None] = self.call(
            "blockdev_remove_snapshot", node, dev_type, snap_logical_id,
            timeout=timeout)
        return result

    def call_blockdev_snapshot(
        self,
        node: str,
        dev_type: str,
        logical_id: list[Any],
        snap_name: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[list[Any]]:
        """Snapshot a disk (point-in-time copy); payload is the snapshot's logical id."""
        result: RpcResult[list[Any]] = self.call(
            "blockdev_snapshot", node, dev_type, logical_id, snap_name, timeout=timeout)
        return result

    def call_export_abort(
        self,
        node: str,
        instance_name: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[bool]:
        """Drop a staging dir (the previous export stays)."""
        result: RpcResult[bool] = self.call("export_abort", node, instance_name, timeout=timeout)
        return result

    def call_export_base_info(
        self,
        node: str,
        instance_name: str,
        sizes: list[int],
        *,
        timeout: float | None = None,
    ) -> RpcResult[BaseChoice]:
        """Which dumps of the newest export here can be the base of each disk (sizes in bytes)."""
        result: RpcResult[BaseChoice] = self.call(
            "export_base_info", node, instance_name, sizes, timeout=timeout)
        return result

    def call_export_cleanup(
        self,
        nodes: Iterable[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[list[str]]]:
        """Finish or undo interrupted finalizes, remove other export leftovers."""
        result: dict[str, RpcResult[list[str]]] = self.call(
            "export_cleanup", nodes, timeout=timeout)
        return result

    def call_export_finalize(
        self,
        node: str,
        instance_name: str,
        config_text: str,
        keep_generations: bool = False,
        *,
        timeout: float | None = None,
    ) -> RpcResult[FinalizeResult]:
        """Write config.ini and atomically replace the previous export (keeping it as an older
        generation when asked).
        """
        result: RpcResult[FinalizeResult] = self.call(
            "export_finalize", node, instance_name, config_text, keep_generations,
            timeout=timeout)
        return result

    def call_export_generation_info(
        self,
        node: str,
        instance_name: str,
        generation: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[ExportLocation]:
        """config.ini text and path of one export generation (older or the newest)."""
        result: RpcResult[ExportLocation] = self.call(
            "export_generation_info", node, instance_name, generation, timeout=timeout)
        return result

    def call_export_generation_modify(
        self,
        node: str,
        instance_name: str,
        generation: str | None,
        protected: bool | None,
        note: str | None,
        *,
        timeout: float | None = None,
    ) -> RpcResult[ExportMetaInfo]:
        """Set the protection and/or note of a generation (generation None: the newest export)."""
        result: RpcResult[ExportMetaInfo] = self.call(
            "export_generation_modify", node, instance_name, generation, protected,
            note, timeout=timeout)
        return result

    def call_export_generation_remove(
        self,
        node: str,
        instance_name: str,
        generation: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[bool]:
        """Remove an older export generation (refused while it is protected)."""
        result: RpcResult[bool] = self.call(
            "export_generation_remove", node, instance_name, generation,
            timeout=timeout)
        return result

    def call_export_generations(
        self,
        nodes: Iterable[str],
        instance_names: list[str] | None = None,
        usage: bool = False,
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[list[GenerationInfo]]]:
        """Every export generation here (newest exports included) with timestamp and size."""
        result: dict[str, RpcResult[list[GenerationInfo]]] = self.call(
            "export_generations", nodes, instance_names, usage, timeout=timeout)
        return result

    def call_export_info(
        self,
        node: str,
        instance_name: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[ExportLocation]:
        """config.ini text and (root-relative) path of an export."""
        result: RpcResult[ExportLocation] = self.call(
            "export_info", node, instance_name, timeout=timeout)
        return result

    def call_export_leftovers(
        self,
        nodes: Iterable[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[list[str]]]:
        """Staging, trash and journal entries of exports (only looks)."""
        result: dict[str, RpcResult[list[str]]] = self.call(
            "export_leftovers", nodes, timeout=timeout)
        return result

    def call_export_list(
        self,
        nodes: Iterable[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[list[str]]]:
        """Instances with a complete export here."""
        result: dict[str, RpcResult[list[str]]] = self.call("export_list", nodes, timeout=timeout)
        return result

    def call_export_prepare(
        self,
        node: str,
        instance_name: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[str]:
        """Create an empty staging dir for a new export; returns its path."""
        result: RpcResult[str] = self.call("export_prepare", node, instance_name, timeout=timeout)
        return result

    def call_export_remove(
        self,
        node: str,
        instance_name: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[bool]:
        """Remove an export: one rename to a trash name, then the deletion."""
        result: RpcResult[bool] = self.call("export_remove", node, instance_name, timeout=timeout)
        return result

    def call_export_verify_disk(
        self,
        node: str,
        instance_name: str,
        generation: str,
        disk_index: int,
        *,
        timeout: float | None = None,
    ) -> RpcResult[DiskVerifyResult]:
        """Re-hash one dump of an export generation against config.ini and its block index."""
        result: RpcResult[DiskVerifyResult] = self.call(
            "export_verify_disk", node, instance_name, generation, disk_index,
            timeout=timeout)
        return result

    def call_export_verify_record(
        self,
        node: str,
        instance_name: str,
        generation: str,
        ok: bool,
        problems: list[str],
        *,
        timeout: float | None = None,
    ) -> RpcResult[dict[str, Any]]:
        """Record a verify's outcome in the generation's sidecar (protection and note kept)."""
        result: RpcResult[dict[str, Any]] = self.call(
            "export_verify_record", node, instance_name, generation, ok, problems,
            timeout=timeout)
        return result

    def call_file_storage_orphans(
        self,
        node: str,
        owned_paths: list[str],
        *,
        timeout: float | None = None,
    ) -> RpcResult[list[str]]:
        """Files under the file storage dir that are none of the given disk paths."""
        result: RpcResult[list[str]] = self.call(
            "file_storage_orphans", node, owned_paths, timeout=timeout)
        return result

    def call_hooks_runner(
        self,
        nodes: Iterable[str],
        hpath: str,
        phase: str,
        env: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[list[list[str]]]]:
        """Run hook scripts (<hpath>-<phase>.d); payload [[script, status, output], ...]."""
        result: dict[str, RpcResult[list[list[str]]]] = self.call(
            "hooks_runner", nodes, hpath, phase, env, timeout=timeout)
        return result

    def call_hypervisor_verify(
        self,
        nodes: Iterable[str],
        hypervisors: list[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[dict[str, list[str]]]]:
        """Per node: {hypervisor: [what keeps it from working on the node]}."""
        result: dict[str, RpcResult[dict[str, list[str]]]] = self.call(
            "hypervisor_verify", nodes, hypervisors, timeout=timeout)
        return result

    def call_instance_info(
        self,
        node: str,
        instance_name: str,
        hypervisor: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[dict[str, Any] | None]:
        """Live state of one instance or None (not running here)."""
        result: RpcResult[dict[str, Any] | None] = self.call(
            "instance_info", node, instance_name, hypervisor, timeout=timeout)
        return result

    def call_instance_reboot(
        self,
        node: str,
        instance: Instance,
        reboot_type: str,
        shutdown_timeout: float,
        *,
        timeout: float | None = None,
    ) -> RpcResult[None]:
        """Restart an instance: stop (if running) and start again, whatever the reboot type."""
        result: RpcResult[None] = self.call(
            "instance_reboot", node, instance, reboot_type, shutdown_timeout,
            timeout=timeout)
        return result

    def call_instance_shutdown(
        self,
        node: str,
        instance_name: str,
        hypervisor: str,
        shutdown_timeout: float,
        *,
        timeout: float | None = None,
    ) -> RpcResult[None]:
        """Stop an instance, killing it after the timeout (not running is fine)."""
        result: RpcResult[None] = self.call(
            "instance_shutdown", node, instance_name, hypervisor, shutdown_timeout,
            timeout=timeout)
        return result

    def call_instance_snapshot_disks(
        self,
        node: str,
        instance: Instance,
        snap_name: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[LiveSnapshot]:
        """Snapshot every disk of a running instance inside one pause of its guest."""
        result: RpcResult[LiveSnapshot] = self.call(
            "instance_snapshot_disks", node, instance, snap_name, timeout=timeout)
        return result

    def call_instance_start(
        self,
        node: str,
        instance: Instance,
        startup_paused: bool = False,
        *,
        timeout: float | None = None,
    ) -> RpcResult[None]:
        """Start an instance (Instance.to_dict() with filled parameters); returns once it runs."""
        result: RpcResult[None] = self.call(
            "instance_start", node, instance, startup_paused, timeout=timeout)
        return result

    def call_instance_verify(
        self,
        node: str,
        instance: Instance,
        *,
        timeout: float | None = None,
    ) -> RpcResult[list[str]]:
        """Problems with an instance's disks on its node (missing disks); [] if none."""
        result: RpcResult[list[str]] = self.call("instance_verify", node, instance, timeout=timeout)
        return result

    def call_node_info(
        self,
        nodes: Iterable[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[NodeInfo]]:
        """Hostname, memory (MiB), CPUs and free disk (MiB, under the node's root) of each node."""
        result: dict[str, RpcResult[NodeInfo]] = self.call("node_info", nodes, timeout=timeout)
        return result

    def call_ping(
        self,
        nodes: Iterable[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[bool]]:
        """Liveness check."""
        result: dict[str, RpcResult[bool]] = self.call("ping", nodes, timeout=timeout)
        return result

    def call_test_delay(
        self,
        nodes: Iterable[str],
        duration: float,
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[None]]:
        """Sleep on the nodes (job engine and RPC timeout tests)."""
        result: dict[str, RpcResult[None]] = self.call(
            "test_delay", nodes, duration, timeout=timeout)
        return result

    def call_transfer_abort(
        self,
        nodes: Iterable[str],
        transfer_ids: list[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[list[str]]]:
        """Abort running transfers."""
        result: dict[str, RpcResult[list[str]]] = self.call(
            "transfer_abort", nodes, transfer_ids, timeout=timeout)
        return result

    def call_transfer_cleanup(
        self,
        nodes: Iterable[str],
        transfer_ids: list[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[list[str]]]:
        """Forget transfers (aborting live ones); failed receivers remove their partial output."""
        result: dict[str, RpcResult[list[str]]] = self.call(
            "transfer_cleanup", nodes, transfer_ids, timeout=timeout)
        return result

    def call_transfer_list(
        self,
        nodes: Iterable[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[dict[str, dict[str, Any]]]]:
        """All transfers a node remembers (leftovers of crashed masters)."""
        result: dict[str, RpcResult[dict[str, dict[str, Any]]]] = self.call(
            "transfer_list", nodes, timeout=timeout)
        return result

    def call_transfer_receive_start(
        self,
        node: str,
        transfer_id: str,
        dest: dict[str, Any],
        size: int | None,
        magic: str,
        compress: str,
        options: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> RpcResult[ReceiveEndpoint]:
        """Listen for one disk stream into dest; payload {host, port} for the sender."""
        result: RpcResult[ReceiveEndpoint] = self.call(
            "transfer_receive_start", node, transfer_id, dest, size, magic, compress,
            options, timeout=timeout)
        return result

    def call_transfer_send_start(
        self,
        node: str,
        transfer_id: str,
        source: dict[str, Any],
        host: str,
        port: int,
        magic: str,
        compress: str,
        options: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> RpcResult[bool]:
        """Connect to a receiver and stream one disk (in a thread of the node daemon)."""
        result: RpcResult[bool] = self.call(
            "transfer_send_start", node, transfer_id, source, host, port, magic,
            compress, options, timeout=timeout)
        return result

    def call_transfer_status(
        self,
        nodes: Iterable[str],
        transfer_ids: list[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[dict[str, dict[str, Any]]]]:
        """Progress of transfers; payload {id: status} for the ids the node knows."""
        result: dict[str, RpcResult[dict[str, dict[str, Any]]]] = self.call(
            "transfer_status", nodes, transfer_ids, timeout=timeout)
        return result

    def call_upload_file(
        self,
        nodes: Iterable[str],
        file_name: str | PathLike[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[int | None]]:
        """Copy a master-side cluster file (config, CA) to the nodes."""
        result: dict[str, RpcResult[int | None]] = self.call(
            "upload_file", nodes, file_name, timeout=timeout)
        return result

    def call_version(
        self,
        nodes: Iterable[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[int]]:
        """Protocol version of each node."""
        result: dict[str, RpcResult[int]] = self.call("version", nodes, timeout=timeout)
        return result

    def call_write_ssconf_files(
        self,
        nodes: Iterable[str],
        values: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[None]]:
        """Write ssconf_<key> files on the nodes (local tools read cluster facts without RPC)."""
        result: dict[str, RpcResult[None]] = self.call(
            "write_ssconf_files", nodes, values, timeout=timeout)
        return result

    def call_x509_cert_create(
        self,
        node: str,
        validity: int,
        *,
        timeout: float | None = None,
    ) -> RpcResult[list[str]]:
        """New key and self-signed certificate; payload [name, cert PEM]."""
        result: RpcResult[list[str]] = self.call(
            "x509_cert_create", node, validity, timeout=timeout)
        return result

    def call_x509_cert_remove(
        self,
        node: str,
        name: str,
        *,
        timeout: float | None = None,
    ) -> RpcResult[bool]:
        """Remove a per-transfer key and certificate."""
        result: RpcResult[bool] = self.call("x509_cert_remove", node, name, timeout=timeout)
        return result

    def call_x509_cleanup(
        self,
        nodes: Iterable[str],
        *,
        timeout: float | None = None,
    ) -> dict[str, RpcResult[list[str]]]:
        """Remove expired per-transfer keys; payload: removed names."""
        result: dict[str, RpcResult[list[str]]] = self.call("x509_cleanup", nodes, timeout=timeout)
        return result
