"""Node side of ``gnt-backup verify``: re-hash a dump against config.ini and its block index.

A dump is read in 4 MiB blocks (holes read as zeros, blocks that are all
hole cost no read) and each block digest is compared with the one the
block index beside the dump records, so a bad block is found by disk and
byte offset; the digests together must give config.ini's
``disk<N>_checksum`` (``ganeti.transfer.checksum``'s rule).  Dumps without
an index (Ganeti's exports, older ones) are checked against the checksum
only; dumps without either are unverifiable, which is said, not counted as
a problem.

One call per disk, so the master can report progress between disks; the
master records the outcome in the generation's sidecar with
:func:`export_verify_record` (doc/incremental-exports.md, "Verify").
Nothing here takes locks: a generation is found by its name, which never
changes, wherever finalize has moved it meanwhile.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ganeti import constants, errors
from ganeti.backend import NodeContext, RpcFail, export_meta
from ganeti.backend.export_generations import find_generation
from ganeti.backup import exportconf, exportmeta
from ganeti.backup.blockindex import (
    BlockIndex,
    IndexProblem,
    block_count,
    checksum_of,
    index_path,
)
from ganeti.rpc.contract import procedure
from ganeti.rpc.payloads import BadBlock, DiskVerifyResult
from ganeti.storage.extents import DiskReader
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import algorithm_of, block_digest, block_pieces, zero_digest

MIB = 1024 * 1024
# bad blocks listed per disk (the count is always exact)
MAX_BAD_BLOCKS = 256


def block_digests(reader: DiskReader, size: int, algorithm: str
                  ) -> Iterator[tuple[int, bytes, int]]:
    """(block, digest, bytes read) for each block of the first ``size`` bytes.

    Holes and bytes beyond the end of the file count as zeros; a block that
    is all hole is not read.
    """
    pieces = block_pieces(reader.extents())
    piece = next(pieces, None)
    buf = memoryview(bytearray(BLOCK_SIZE))
    for block in range(block_count(size)):
        start = block * BLOCK_SIZE
        length = min(BLOCK_SIZE, size - start)
        has_data = False
        while piece is not None and piece[0] < start + length:
            has_data = True      # each piece lies in one block, earlier ones are consumed
            piece = next(pieces, None)
        if not has_data:
            yield block, zero_digest(algorithm, length), 0
            continue
        view = buf[:length]
        got = reader.readinto(start, view)
        if got < length:
            view[got:] = bytes(length - got)
        yield block, block_digest(algorithm, view), got


def _result(disk: int, ivname: str, dump: Path, size: int) -> DiskVerifyResult:
    return {"disk": disk, "ivname": ivname, "dump": dump.name, "size": size,
            "read_bytes": 0, "seconds": 0.0, "method": "none", "ok": False,
            "problems": [], "notes": [], "bad_blocks": [], "bad_block_count": 0}


def _read_index(dump: Path, size: int, checksum: str | None, key: str,
                result: DiskVerifyResult) -> BlockIndex | None:
    """The dump's block index when it can locate bad blocks; problems go to ``result``."""
    path = index_path(dump)
    try:
        index = BlockIndex.read(path)
    except IndexProblem as err:
        if os.path.lexists(path):
            result["problems"].append(f"{err} (bad blocks cannot be located)")
        elif checksum is not None:
            result["notes"].append(f"no block index ({path.name}): checked against the"
                                   " checksum only, bad blocks cannot be located")
        return None
    if index.size != size:
        result["problems"].append(f"{path.name} is for a {index.size}-byte disk, the disk"
                                  f" has {size} bytes (bad blocks cannot be located)")
        return None
    if checksum is not None and index.checksum != checksum:
        result["problems"].append(f"{path.name}: its checksum {index.checksum} is not"
                                  f" config.ini's {key} {checksum} (bad blocks cannot be"
                                  " located)")
        return None
    return index


def verify_dump(dump: Path, size: int, checksum: str | None, disk: int = 0,
                ivname: str = "disk/0") -> DiskVerifyResult:
    """Check one dump of ``size`` bytes against ``checksum`` and its block index."""
    started = time.monotonic()
    result = _result(disk, ivname, dump, size)
    problems = result["problems"]
    key = f"disk{disk}_checksum"
    if checksum is not None:
        try:
            algorithm_of(checksum)
        except ValueError as err:
            problems.append(f"config.ini {key}: {err}")
            checksum = None
    index = _read_index(dump, size, checksum, key, result)
    expected = checksum if checksum is not None else (index.checksum if index else None)
    if expected is None:
        result["notes"].append(f"config.ini has no {key} and there is no block index:"
                               " unverifiable")
    elif checksum is None:
        result["notes"].append(f"config.ini has no {key}: checked against the block index")
    try:
        st = os.lstat(dump)
    except OSError as err:
        problems.append(f"{dump.name} is missing" if isinstance(err, FileNotFoundError)
                        else f"{dump.name} cannot be read: {err.strerror}")
        return _done(result, started)
    if not stat.S_ISREG(st.st_mode):
        problems.append(f"{dump.name} is not a regular file")
        return _done(result, started)
    short = st.st_size < size
    if short:
        problems.append(f"{dump.name} is short: {st.st_size} of {size} bytes")
    elif st.st_size > size:
        problems.append(f"{dump.name} is longer than the disk: {st.st_size} bytes,"
                        f" expected {size}")
    if expected is None:
        return _done(result, started)
    result["method"] = "index" if index is not None else "checksum"
    algorithm = algorithm_of(expected)
    digests = bytearray()
    bad: list[BadBlock] = result["bad_blocks"]
    try:
        with DiskReader(dump) as reader:
            for block, digest, got in block_digests(reader, size, algorithm):
                result["read_bytes"] += got
                digests += digest
                if index is None or digest == index.digest(block):
                    continue
                offset, length = index.block_range(block)
                if offset >= st.st_size:
                    continue    # beyond the end: the "short" problem says it
                result["bad_block_count"] += 1
                if len(bad) < MAX_BAD_BLOCKS:
                    bad.append({"block": block, "offset": offset, "length": length})
    except (OSError, errors.StorageError) as err:
        problems.append(f"{dump.name} cannot be read: {err}")
        return _done(result, started)
    computed = checksum_of(digests, algorithm)
    if computed != expected and not result["bad_block_count"] and not short:
        where = "" if index is not None else " (bad blocks cannot be located without a" \
                                              " block index)"
        problems.append(f"{dump.name}: its checksum {computed} is not the recorded"
                        f" {expected}{where}")
    return _done(result, started)


def _done(result: DiskVerifyResult, started: float) -> DiskVerifyResult:
    result["seconds"] = round(time.monotonic() - started, 3)
    result["ok"] = not result["problems"] and not result["bad_block_count"]
    return result


def _config(path: Path) -> exportconf.ExportInfo:
    try:
        return exportconf.parse((path / constants.EXPORT_CONF_FILE).read_text(
            errors="surrogateescape"))
    except errors.OpPrereqError as err:
        raise RpcFail(f"{constants.EXPORT_CONF_FILE}: {err.args[0]}") from None
    except OSError as err:
        raise RpcFail(f"Cannot read {constants.EXPORT_CONF_FILE}: {err.strerror}") from None


# a disk is read whole: allow for big disks on slow storage
@procedure("day", single_node=True)
def export_verify_disk(ctx: NodeContext, instance_name: str, generation: str,
                       disk_index: int) -> DiskVerifyResult:
    """Re-hash one dump of an export generation against config.ini and its block index."""
    path, _newest = find_generation(ctx, instance_name, generation)
    info = _config(path)
    if not 0 <= disk_index < len(info.disks):
        raise RpcFail(f"{instance_name}@{generation} has no disk {disk_index} (it has"
                      f" {len(info.disks)})")
    disk = info.disks[disk_index]
    ivname = disk.ivname or f"disk/{disk_index}"
    if disk.dump is None:
        # a Ganeti export may have none: the import creates that disk blank
        result = _result(disk_index, ivname, Path(""), disk.size * MIB)
        result["notes"].append("config.ini names no dump (an import creates the disk"
                               " blank): nothing to verify")
        return _done(result, time.monotonic())
    dump = path / disk.dump
    # size 0: Ganeti's "as large as the dump"
    size = disk.size * MIB if disk.size else _file_size(dump)
    return verify_dump(dump, size, disk.checksum, disk_index, ivname)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@procedure("normal", single_node=True)
def export_verify_record(ctx: NodeContext, instance_name: str, generation: str, ok: bool,
                         problems: list[str]) -> dict[str, Any]:
    """Record a verify's outcome in the generation's sidecar (protection and note kept)."""
    path, _newest = find_generation(ctx, instance_name, generation)
    record = exportmeta.verify_record(ok, problems)
    export_meta.update(path, lambda current: exportmeta.ExportMeta(
        protected=current.protected, note=current.note, verify=record))
    return record
