"""Physical extent maps (``FIEMAP``) and what two reflinked files still share.

An export base is a reflink clone of the disk; the next export's snapshot is
another.  Where both map a byte range to the same physical bytes, the range
was not rewritten in between and need not be read.  This needs no state that
a VM stop or a reboot loses: the filesystem's own extent tree is the record.

Everything the kernel reports with less than an exact physical address
(delayed allocation, inline or tail-packed data, compressed or encrypted
extents, unknown locations) counts as changed: the caller then hashes those
blocks, so a wrong answer can only cost reads, never a stale backup.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

FS_IOC_FIEMAP = 0xC020660B

# fm_flags (request)
FIEMAP_FLAG_SYNC = 0x00000001    # sync the file before mapping
FIEMAP_FLAG_XATTR = 0x00000002   # map the extended attribute tree
FIEMAP_FLAG_CACHE = 0x00000004   # request caching of the extents

# fe_flags (per extent)
FIEMAP_EXTENT_LAST = 0x00000001            # last extent in the file
FIEMAP_EXTENT_UNKNOWN = 0x00000002         # data location unknown
FIEMAP_EXTENT_DELALLOC = 0x00000004        # location still pending (sets UNKNOWN)
FIEMAP_EXTENT_ENCODED = 0x00000008         # data cannot be read while fs is unmounted
FIEMAP_EXTENT_DATA_ENCRYPTED = 0x00000080  # data is encrypted by the fs (sets ENCODED)
FIEMAP_EXTENT_NOT_ALIGNED = 0x00000100     # extent offsets may not be block aligned
FIEMAP_EXTENT_DATA_INLINE = 0x00000200     # data mixed with metadata (sets NOT_ALIGNED)
FIEMAP_EXTENT_DATA_TAIL = 0x00000400       # multiple files in one block (sets NOT_ALIGNED)
FIEMAP_EXTENT_UNWRITTEN = 0x00000800       # allocated but not written: reads as zeros
FIEMAP_EXTENT_MERGED = 0x00001000          # block-mapped file, result merged
FIEMAP_EXTENT_SHARED = 0x00002000          # space shared with other files (reflink)

# short names (the contract: fiemap.SHARED, fiemap.ENCODED, ...)
LAST = FIEMAP_EXTENT_LAST
UNKNOWN = FIEMAP_EXTENT_UNKNOWN
DELALLOC = FIEMAP_EXTENT_DELALLOC
ENCODED = FIEMAP_EXTENT_ENCODED
DATA_ENCRYPTED = FIEMAP_EXTENT_DATA_ENCRYPTED
NOT_ALIGNED = FIEMAP_EXTENT_NOT_ALIGNED
DATA_INLINE = FIEMAP_EXTENT_DATA_INLINE
DATA_TAIL = FIEMAP_EXTENT_DATA_TAIL
UNWRITTEN = FIEMAP_EXTENT_UNWRITTEN
MERGED = FIEMAP_EXTENT_MERGED
SHARED = FIEMAP_EXTENT_SHARED

# Flags whose physical address does not name the extent's own bytes.  btrfs
# reports a compressed extent's start for every piece of it, whatever the
# piece's offset inside, so ENCODED extents cannot be compared either.
_INEXACT = (UNKNOWN | DELALLOC | ENCODED | DATA_ENCRYPTED | NOT_ALIGNED | DATA_INLINE
            | DATA_TAIL)

# struct fiemap: fm_start, fm_length, fm_flags, fm_mapped_extents,
# fm_extent_count, fm_reserved; then fm_extent_count struct fiemap_extent:
# fe_logical, fe_physical, fe_length, fe_reserved64[2], fe_flags, fe_reserved[3]
_HEADER = struct.Struct("=QQIIII")
_EXTENT = struct.Struct("=QQQ16xI12x")
_BATCH = 1024
_MAX_OFFSET = 0xFFFFFFFFFFFFFFFF

# errno values meaning "this filesystem cannot map extents"
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS})


class FiemapUnsupportedError(OSError):
    """The file's filesystem has no FIEMAP (tmpfs, some network filesystems)."""


@dataclass(frozen=True, slots=True)
class Extent:
    logical: int
    physical: int
    length: int
    flags: int

    @property
    def end(self) -> int:
        return self.logical + self.length


def _map_fd(fd: int, flags: int) -> list[Extent]:
    buf = bytearray(_HEADER.size + _BATCH * _EXTENT.size)
    found: list[Extent] = []
    start = 0
    while True:
        _HEADER.pack_into(buf, 0, start, _MAX_OFFSET - start, flags, 0, _BATCH, 0)
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
        except OSError as err:
            if err.errno in _UNSUPPORTED:
                raise FiemapUnsupportedError(err.errno, os.strerror(err.errno)) from None
            raise
        mapped = _HEADER.unpack_from(buf, 0)[3]
        if mapped == 0:
            return found
        batch = [Extent(*_EXTENT.unpack_from(buf, _HEADER.size + i * _EXTENT.size))
                 for i in range(mapped)]
        found.extend(batch)
        last = batch[-1]
        if last.flags & LAST or last.end <= start:
            return found
        start = last.end
        flags &= ~FIEMAP_FLAG_SYNC  # synced once is enough


def extents(path: str | os.PathLike[str], *, sync: bool = True) -> list[Extent]:
    """The file's extents in logical order (holes are simply absent).

    ``sync`` flushes dirty pages first, so delayed allocations get their
    final place.  Raises :class:`FiemapUnsupportedError` (an ``OSError``)
    where the filesystem cannot map extents, other ``OSError`` as they come.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _map_fd(fd, FIEMAP_FLAG_SYNC if sync else 0)
    finally:
        os.close(fd)


# region kinds for the comparison
_ZERO = 0      # a hole or an unwritten extent: reads as zeros
_DATA = 1      # data at a known physical place: (kind, physical - logical)
_UNSURE = 2    # data whose place cannot be compared


def _regions(exts: list[Extent], size: int) -> tuple[list[int], list[int], list[int]]:
    """Cover [0, size) with (ends, kinds, deltas); gaps between extents are holes."""
    ends: list[int] = []
    kinds: list[int] = []
    deltas: list[int] = []
    pos = 0
    for ext in exts:
        start, end = max(ext.logical, pos), min(ext.end, size)
        if end <= start:
            continue
        if start > pos:
            ends.append(start)
            kinds.append(_ZERO)
            deltas.append(0)
        if ext.flags & UNWRITTEN:
            kind = _ZERO
        elif ext.flags & _INEXACT:
            kind = _UNSURE
        else:
            kind = _DATA
        ends.append(end)
        kinds.append(kind)
        deltas.append(ext.physical - ext.logical)
        pos = end
    if pos < size:
        ends.append(size)
        kinds.append(_ZERO)
        deltas.append(0)
    return ends, kinds, deltas


def compare_extents(base: list[Extent], new: list[Extent], size: int) -> list[tuple[int, int]]:
    """Merged (offset, length) ranges of ``new`` that may differ from ``base``.

    Unchanged: both read as zeros there (hole or unwritten extent), or both
    map to the same physical bytes (equal physical - logical over the
    overlap) with exact addresses.  One sweep over both sorted lists.
    """
    b_ends, b_kinds, b_deltas = _regions(base, size)
    n_ends, n_kinds, n_deltas = _regions(new, size)
    out: list[tuple[int, int]] = []
    run_start = -1   # start of the changed run being built, -1: none
    pos = 0
    i = j = 0
    while pos < size:
        end = min(b_ends[i], n_ends[j])
        bk, nk = b_kinds[i], n_kinds[j]
        same = (bk == nk == _ZERO) or (bk == nk == _DATA and b_deltas[i] == n_deltas[j])
        if same:
            if run_start >= 0:
                out.append((run_start, pos - run_start))
                run_start = -1
        elif run_start < 0:
            run_start = pos
        pos = end
        if b_ends[i] == end:
            i += 1
        if n_ends[j] == end:
            j += 1
    if run_start >= 0:
        out.append((run_start, size - run_start))
    return out


def changed_ranges(base_path: str | os.PathLike[str],
                   new_path: str | os.PathLike[str]) -> list[tuple[int, int]] | None:
    """Byte ranges of ``new_path`` that may differ from ``base_path``.

    None when it cannot be told: the sizes differ, or the filesystem has no
    FIEMAP.  Other errors (a missing file) raise ``OSError``.
    """
    size = os.stat(new_path).st_size
    if os.stat(base_path).st_size != size:
        return None
    try:
        base = extents(base_path)
        new = extents(new_path)
    except FiemapUnsupportedError:
        return None
    if os.stat(new_path).st_size != size or os.stat(base_path).st_size != size:
        return None   # a file changed size while being mapped
    return compare_extents(base, new, size)
