"""Typed payloads of RPC calls whose results are JSON objects.

Backend procedures return these (their return annotations), so the generated
master-side methods give typed ``RpcResult[...]`` payloads.  They describe
the JSON form: what a node sends is what the master reads.  Neutral module:
the master and the node both import it.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class NodeInfo(TypedDict):
    hostname: str
    memory_total: int
    memory_free: int
    cpu_count: int
    disk_total: int
    disk_free: int
    root: str


class ExportLocation(TypedDict):
    """An export's (or generation's) root-relative path and config.ini text."""

    path: str
    config: str
    files: NotRequired[dict[str, int]]   # byte size of each dump config.ini names, if there
    real_path: NotRequired[str]          # the directory's real path on the node (hooks)


class DiskBase(TypedDict, total=False):
    """One disk's base for an incremental export: a dump to build on, or why not."""

    base: str          # root-relative path of the base dump
    checksum: str      # its checksum (= its block index's)
    full: str          # the reason this disk is exported in full


class BaseChoice(TypedDict):
    """export_base_info: the newest export's generation and each disk's base."""

    generation: str | None
    disks: list[DiskBase]


class FinalizeResult(TypedDict):
    path: str
    warnings: list[str]
    # the generation name of the new export (absent for a first export)
    generation: NotRequired[str]


class GenerationInfo(TypedDict):
    instance: str
    generation: str
    timestamp: float
    size: int
    # only when asked for (export_generations' usage): allocated bytes, and of them
    # those no other generation of the instance here uses / another one uses too
    used: NotRequired[int]
    unique: NotRequired[int]
    shared: NotRequired[int]
    newest: bool
    path: str
    protected: bool
    note: str
    meta_problem: str | None
    # the last verify (ExportMeta.verify): {"time", "ok", "problems"}, None: never verified
    verify: dict[str, Any] | None


class ExportMetaInfo(TypedDict):
    protected: bool
    note: str


class ReceiveEndpoint(TypedDict):
    """Where a sender connects to reach a receiver."""

    host: str
    port: int


class BadBlock(TypedDict):
    """A block of a dump whose digest is not the one its block index records."""

    block: int
    offset: int
    length: int


class DiskVerifyResult(TypedDict):
    """One dump checked by ``export_verify_disk`` (gnt-backup verify)."""

    disk: int
    ivname: str
    dump: str
    size: int
    read_bytes: int
    seconds: float
    # "index" (block by block), "checksum" (the whole dump only) or "none" (unverifiable)
    method: str
    ok: bool
    problems: list[str]
    # facts that are no problem, e.g. "no block index: bad blocks cannot be located"
    notes: list[str]
    bad_blocks: list[BadBlock]
    bad_block_count: int


class LiveSnapshot(TypedDict):
    """instance_snapshot_disks: every disk snapshotted inside one pause of the guest."""

    snapshots: list[list[Any]]     # the snapshots' logical ids, one per disk, in disk order
    level: str                     # "frozen" or "crash-consistent" (hypervisor.base)
    pause_ms: float                # upper bound of the time the guest could not run
    frozen_ms: float | None        # filesystems frozen (level "frozen" only)
    stopped_ms: float | None       # the stop by the hypervisor's own clock (QEMU's events)
    notes: list[str]               # e.g. why no guest agent froze the filesystems
