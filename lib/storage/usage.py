"""What the generations of one export cost on disk: allocated, unique and shared bytes.

Incremental generations on a reflink filesystem share every unchanged extent,
so ``st_blocks`` (which counts a shared extent in every file using it)
overstates their cost N-fold; on a compressing btrfs it also reports the
uncompressed size.  Instead each file is mapped to the physical byte ranges
it occupies, and the ranges are compared across the generations of one
instance (doc/incremental-exports.md, "What gnt-backup list -g shows").

Where the map comes from, best first:

1. btrfs, as root: the file's extent items (``BTRFS_IOC_TREE_SEARCH_V2``,
   like ``compsize``).  They give a compressed extent's real on-disk size,
   which FIEMAP cannot (it reports the uncompressed length).
2. FIEMAP (``ganeti.storage.fiemap``): exact on XFS, ext4 and uncompressed
   btrfs; it names only a compressed extent's start, so compressed data
   counts up to the next extent's start (at most its uncompressed length).
3. ``st_blocks``: filesystems without either (tmpfs); nothing is shared.

Bytes without a physical address (inline data, delayed allocation) belong
to their generation alone.  Only the ranges are read, never the data, so a
listing costs a few ioctls per file.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ganeti.storage import fiemap

# struct btrfs_ioctl_search_args_v2: the search key (tree_id, min/max objectid,
# min/max offset, min/max transid, min/max type, nr_items, 4 unused) and
# buf_size, then the result buffer of items, each a search header (transid,
# objectid, offset, type, len; host order) and the item: here a struct
# btrfs_file_extent_item (little endian, packed: generation, ram_bytes,
# compression, encryption, other_encoding, type; regular extents then have
# disk_bytenr, disk_num_bytes, offset, num_bytes).  One unpack reads both,
# so the extent items are only used on little-endian hosts (others: FIEMAP).
_SEARCH_KEY = struct.Struct("=7Q4I4Q")
_BUF_SIZE = struct.Struct("=Q")
_ITEM = struct.Struct("<3Q2I" "QQBBHB" "4Q")
_ITEM_HEADER = 32
_FILE_EXTENT_FIXED = 21         # up to the inline data or disk_bytenr
BTRFS_IOC_TREE_SEARCH_V2 = 0xC0709411        # _IOWR(0x94, 17, 112 bytes)
_EXTENT_DATA_KEY = 108
_FILE_EXTENT_INLINE = 0
_U64_MAX = (1 << 64) - 1
_RESULT_BYTES = 256 * 1024
_LITTLE_ENDIAN = sys.byteorder == "little"

# (device, physical start, physical end) of bytes a file occupies
Range = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Usage:
    """One generation's bytes: ``used == unique + shared``."""

    size: int     # apparent size of its files
    used: int     # allocated on disk (compressed where the filesystem compresses)
    unique: int   # allocated bytes no other generation of the instance uses
    shared: int   # allocated bytes another generation of the instance uses too


@dataclass(slots=True)
class _Placement:
    dev: int
    ranges: list[tuple[int, int]]     # physical (start, end) on device ``dev``
    private: int = 0                  # allocated bytes without a physical address


def _btrfs_ranges(fd: int, st: os.stat_result) -> _Placement | None:
    """The file's extents from its btrfs extent items; None: not btrfs or not root."""
    if not _LITTLE_ENDIAN:
        return None
    start_of_items = _SEARCH_KEY.size + _BUF_SIZE.size
    # slack: an inline item at the very end is unpacked like a regular one too
    buf = bytearray(start_of_items + _RESULT_BYTES + _ITEM.size)
    place = _Placement(st.st_dev, [])
    ranges = place.ranges
    covered = 0                  # logical bytes the items account for
    min_offset = 0
    unpack = _ITEM.unpack_from
    while True:
        _SEARCH_KEY.pack_into(buf, 0, 0, st.st_ino, st.st_ino, min_offset, _U64_MAX,
                              0, _U64_MAX, _EXTENT_DATA_KEY, _EXTENT_DATA_KEY,
                              0xFFFFFFFF, 0, 0, 0, 0, 0)
        _BUF_SIZE.pack_into(buf, _SEARCH_KEY.size, _RESULT_BYTES)
        try:
            fcntl.ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, buf, True)
        except OSError:
            return None          # not btrfs, not root, or any other refusal: FIEMAP
        count = _SEARCH_KEY.unpack_from(buf, 0)[9]
        if count == 0:
            break
        pos = start_of_items
        offset = 0
        for _ in range(count):
            (_transid, _objectid, offset, _type, length, _gen, ram_bytes, compression,
             encryption, other, kind, bytenr, disk_bytes, extent_offset,
             num_bytes) = unpack(buf, pos)
            pos += _ITEM_HEADER + length
            if kind == _FILE_EXTENT_INLINE:
                # stored in the metadata tree, compressed or not: no place to share
                place.private += length - _FILE_EXTENT_FIXED
                covered += -(-ram_bytes // st.st_blksize) * st.st_blksize
                continue
            if not bytenr:                # an explicit hole
                continue
            covered += num_bytes
            if compression or encryption or other:
                # any piece of an encoded extent keeps all of it on disk
                start, end = bytenr, bytenr + disk_bytes
            else:
                start = bytenr + extent_offset
                end = start + num_bytes
            if ranges and ranges[-1][1] == start:     # contiguous: one range
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((start, end))
        if offset >= _U64_MAX:
            break
        min_offset = offset + 1
    # dirty data not yet written out has no extent item; st_blocks counts it
    place.private += max(0, st.st_blocks * 512 - covered)
    return place


def _fiemap_ranges(path: Path, st: os.stat_result) -> _Placement | None:
    """The file's extents from FIEMAP; None: the filesystem cannot map them."""
    try:
        exts = fiemap.extents(path, sync=False)
    except OSError:
        return None
    place = _Placement(st.st_dev, [])
    ranges = place.ranges
    for ext in exts:
        if ext.flags & (fiemap.UNKNOWN | fiemap.DELALLOC | fiemap.DATA_INLINE):
            place.private += ext.length
            continue
        start, end = ext.physical, ext.physical + ext.length
        if ranges and ranges[-1][0] <= start <= ranges[-1][1]:    # contiguous: one range
            ranges[-1] = (ranges[-1][0], max(end, ranges[-1][1]))
        else:
            ranges.append((start, end))
    return place


def _placement(path: Path, tree_search: dict[int, bool]) -> tuple[int, _Placement]:
    """(apparent size, placement) of one file; a file that vanished counts nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return 0, _Placement(0, [])
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return 0, _Placement(0, [])
        place = None
        if tree_search.get(st.st_dev, True):
            place = _btrfs_ranges(fd, st)
            tree_search[st.st_dev] = place is not None
        if place is None:
            place = _fiemap_ranges(path, st)
        if place is None:
            place = _Placement(st.st_dev, [], st.st_blocks * 512)
        return st.st_size, place
    except OSError:
        return 0, _Placement(0, [])
    finally:
        os.close(fd)


def _merge(ranges: list[Range]) -> list[Range]:
    """Sorted, non-overlapping ranges: a range used twice in a generation counts once."""
    merged: list[Range] = []
    for dev, start, end in sorted(ranges):
        if merged and merged[-1][0] == dev and start <= merged[-1][2]:
            if end > merged[-1][2]:
                merged[-1] = (dev, merged[-1][1], end)
        else:
            merged.append((dev, start, end))
    return merged


def _split(per_generation: list[list[Range]]) -> tuple[list[int], list[int]]:
    """(unique, shared) bytes of each generation's merged ranges, in one sweep."""
    events: list[tuple[int, int, int, int]] = []
    for gen, ranges in enumerate(per_generation):
        for dev, start, end in ranges:
            events.append((dev, start, 1, gen))
            events.append((dev, end, 0, gen))      # leaving sorts before entering
    events.sort()
    unique = [0] * len(per_generation)
    shared = [0] * len(per_generation)
    active: set[int] = set()
    prev = 0
    for _dev, pos, entering, gen in events:
        if active and pos > prev:
            if len(active) == 1:
                unique[next(iter(active))] += pos - prev
            else:
                for other in active:
                    shared[other] += pos - prev
        prev = pos
        if entering:
            active.add(gen)
        else:
            active.discard(gen)
    return unique, shared


def generation_usage(generations: Sequence[Sequence[Path]]) -> list[Usage]:
    """The usage of each generation (given as its files) of one instance on one node."""
    tree_search: dict[int, bool] = {}
    sizes: list[int] = []
    privates: list[int] = []
    ranges: list[list[Range]] = []
    for files in generations:
        size = private = 0
        gen_ranges: list[Range] = []
        for path in files:
            nbytes, place = _placement(path, tree_search)
            size += nbytes
            private += place.private
            gen_ranges.extend((place.dev, start, end) for start, end in place.ranges)
        sizes.append(size)
        privates.append(private)
        ranges.append(_merge(gen_ranges))
    unique, shared = _split(ranges)
    return [Usage(size=size, used=uniq + share + private, unique=uniq + private,
                  shared=share)
            for size, private, uniq, share in zip(sizes, privates, unique, shared,
                                                  strict=True)]


def directory_files(path: Path) -> list[Path]:
    """The regular files directly in an export directory (symlinks are not followed)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries if e.is_file(follow_symlinks=False))
