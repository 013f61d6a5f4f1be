"""Node side of choosing an incremental export's base (doc/incremental-exports.md).

The base of each disk is the dump of the instance's newest export on this node,
when it can be trusted: its block index is readable and agrees with config.ini,
the size is the disk's, no verify found the generation bad, and a spot check of
a few blocks re-read from the dump matches the index.  Anything else makes that
disk run in full, and the reason goes to the job log.
"""

from __future__ import annotations

import os
import random

from ganeti import constants, errors, pathutils
from ganeti.backend import NodeContext, RpcFail, export_meta
from ganeti.backend.export_layout import export_name, export_path
from ganeti.backup import blockindex, exportconf
from ganeti.backup.blockindex import BlockIndex, IndexProblem
from ganeti.rpc.contract import procedure
from ganeti.rpc.payloads import BaseChoice, DiskBase
from ganeti.storage.extents import DiskReader
from ganeti.transfer.checksum import block_digest

# blocks of the base dump re-read before it is trusted
SPOT_CHECKS = 3
MIB = 1024 * 1024


def _spot_blocks(reader: DiskReader, index: BlockIndex) -> list[int]:
    """The first block holding data, one at random and the last."""
    if index.blocks == 0:
        return []
    first = next((offset // index.block_size for offset, _ in reader.extents()), 0)
    picks = [first, random.randrange(index.blocks), index.blocks - 1]
    return sorted(set(picks))[:SPOT_CHECKS]


def spot_check(dump: os.PathLike[str] | str, index: BlockIndex) -> str | None:
    """None when the sampled blocks of ``dump`` match ``index``, else the problem."""
    with DiskReader(dump) as reader:
        if reader.size != index.size:
            return f"the dump has {reader.size} bytes, its index {index.size}"
        buf = bytearray(index.block_size)
        for block in _spot_blocks(reader, index):
            offset, length = index.block_range(block)
            view = memoryview(buf)[:length]
            if reader.readinto(offset, view) != length:
                return f"the dump is short at offset {offset}"
            if block_digest(index.algorithm, view) != index.digest(block):
                return f"block {block} (offset {offset}) does not match the index"
    return None


def _disk_base(export: str, disk: exportconf.ExportDisk | None, dump_dir: os.PathLike[str],
               size: int, ctx: NodeContext) -> DiskBase:
    if disk is None:
        return {"full": f"{export} has no such disk"}
    if disk.dump is None:
        return {"full": f"{export} has no dump of this disk"}
    if disk.size * MIB != size:
        return {"full": f"the disk's size changed since {export} (from {disk.size} MiB"
                        f" to {size // MIB} MiB)"}
    dump = os.path.join(dump_dir, disk.dump)
    if not os.path.isfile(dump) or os.path.islink(dump):
        return {"full": f"{export} has no dump {disk.dump}"}
    try:
        index = BlockIndex.read(blockindex.index_path(dump))
    except IndexProblem as err:
        return {"full": f"the block index of {export} is unusable: {err}"}
    if disk.checksum is None or index.checksum != disk.checksum:
        return {"full": f"the block index of {export} does not match its config.ini"
                        " checksum"}
    try:
        problem = spot_check(dump, index)
    except (OSError, errors.StorageError) as err:
        problem = f"the dump cannot be read: {err}"
    if problem:
        return {"full": f"{export} fails a spot check: {problem}"}
    return {"base": pathutils.to_wire_name(ctx.paths, dump), "checksum": index.checksum}


def _all_full(generation: str | None, reason: str, sizes: list[int]) -> BaseChoice:
    return {"generation": generation, "disks": [{"full": reason} for _ in sizes]}


@procedure("normal", single_node=True)
def export_base_info(ctx: NodeContext, instance_name: str, sizes: list[int]) -> BaseChoice:
    """Which dumps of the newest export here can be the base of each disk (sizes in bytes).

    Per disk either ``{"base": path, "checksum": ...}`` or ``{"full": reason}``.
    """
    if any(not isinstance(s, int) or s < 0 for s in sizes):
        raise RpcFail(f"Invalid disk sizes {sizes!r}")
    path = export_path(ctx, instance_name)
    conf = path / constants.EXPORT_CONF_FILE
    if not conf.is_file():
        return _all_full(None, "this is the first export to this node", sizes)
    generation = export_name(path)
    export = f"the newest export {generation}"
    try:
        info = exportconf.parse(conf.read_text(errors="surrogateescape"))
    except (OSError, errors.OpPrereqError) as err:
        return _all_full(generation, f"{export} cannot be read: {err}", sizes)
    verify = export_meta.read(path).verify
    if verify is not None and verify.get("ok") is False:
        return _all_full(generation, f"a verify found {export} bad", sizes)
    disks = [_disk_base(export, info.disks[idx] if idx < len(info.disks) else None, path,
                        size, ctx) for idx, size in enumerate(sizes)]
    return {"generation": generation, "disks": disks}
