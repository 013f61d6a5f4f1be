"""FIEMAP extent maps and changed ranges, on real filesystems.

The reflink cases run on the suite's btrfs/XFS loop filesystem
(``reflink_dir``), the others on a filesystem without reflink
(``noreflink_dir``: ext4 or tmpfs) and on tmpfs, which has no FIEMAP.  Each
changed-range check also proves the bytes outside the reported ranges are
really equal, so a range the comparison misses would fail it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ganeti.storage import fiemap, reflink
from ganeti.storage.fiemap import Extent

MIB = 1024 * 1024
PAGE = 4096


def _random_file(path: Path, size: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    with open(path, "wb") as fh:
        left = size
        while left:
            step = min(left, 4 * MIB)
            fh.write(rnd.randbytes(step))
            left -= step
        fh.flush()
        os.fsync(fh.fileno())


def _pwrite(path: Path, changes: list[tuple[int, bytes]]) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, data in changes:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fs_type(path: Path) -> str:
    """The filesystem type of the mount holding ``path`` (from /proc/self/mounts)."""
    best, fstype = "", ""
    target = str(path.resolve())
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            mnt = fields[1].replace("\\040", " ")
            if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) \
                    and len(mnt) > len(best):
                best, fstype = mnt, fields[2]
    return fstype


def _check_ranges(ranges: list[tuple[int, int]], size: int) -> None:
    """Sorted, merged (no two touching), non-empty and inside the file."""
    pos = -1
    for offset, length in ranges:
        assert length > 0 and offset > pos and offset + length <= size, ranges
        pos = offset + length


def _assert_equal_outside(base: Path, new: Path, ranges: list[tuple[int, int]]) -> None:
    """Every byte the ranges do not cover is the same in both files."""
    size = new.stat().st_size
    gaps, pos = [], 0
    for offset, length in ranges:
        gaps.append((pos, offset - pos))
        pos = offset + length
    gaps.append((pos, size - pos))
    with open(base, "rb") as fb, open(new, "rb") as fn:
        for offset, length in gaps:
            while length > 0:
                step = min(length, 4 * MIB)
                assert os.pread(fb.fileno(), step, offset) == \
                    os.pread(fn.fileno(), step, offset), f"unreported change near {offset}"
                offset += step
                length -= step


def _covers(ranges: list[tuple[int, int]], offset: int, length: int) -> bool:
    return any(o <= offset and offset + length <= o + n for o, n in ranges)


def test_unchanged_clone_has_no_changed_ranges(reflink_dir: Path) -> None:
    base, new = reflink_dir / "base", reflink_dir / "new"
    _random_file(base, 64 * MIB)
    reflink.clone_file(base, new)
    exts = fiemap.extents(new)
    assert exts and sum(e.length for e in exts) >= 64 * MIB
    assert all(e.flags & fiemap.SHARED for e in exts), exts
    assert exts[-1].flags & fiemap.LAST
    assert fiemap.changed_ranges(base, new) == []


def test_changed_ranges_cover_every_change_and_little_else(reflink_dir: Path) -> None:
    size = 64 * MIB
    base, new = reflink_dir / "base", reflink_dir / "new"
    _random_file(base, size)
    reflink.clone_file(base, new)
    rnd = random.Random(7)
    # one contiguous 5 MiB write (not block aligned) and scattered pages, two
    # of them unaligned and one at the very end of the file
    changes = [(9 * MIB + 123, rnd.randbytes(5 * MIB))]
    changes += [(off, rnd.randbytes(PAGE)) for off in
                (0, 20 * MIB, 33 * MIB + 1000, 47 * MIB + 7 * PAGE, 60 * MIB + 2049,
                 size - PAGE)]
    _pwrite(new, changes)
    block = os.statvfs(reflink_dir).f_bsize

    ranges = fiemap.changed_ranges(base, new)
    assert ranges is not None
    _check_ranges(ranges, size)
    for offset, data in changes:
        assert _covers(ranges, offset, len(data)), (offset, ranges)
    _assert_equal_outside(base, new, ranges)
    changed = sum(len(data) for _, data in changes)
    total = sum(length for _, length in ranges)
    # each write may spill into one more filesystem block at either end
    assert changed <= total <= changed + 2 * block * len(changes), (total, changed, ranges)
    assert fiemap.changed_ranges(base, base) == []


def test_many_extents_are_mapped_in_batches(reflink_dir: Path) -> None:
    """More extents than one FIEMAP call returns (1024): the fm_start loop."""
    size = 64 * MIB
    base, new = reflink_dir / "base", reflink_dir / "new"
    _random_file(base, size)
    reflink.clone_file(base, new)
    pages = list(range(0, size // PAGE, 5))[:3000]   # every fifth page: none adjacent
    _pwrite(new, [(p * PAGE, b"\xa5" * PAGE) for p in pages])
    exts = fiemap.extents(new)
    assert len(exts) > 2 * 1024
    assert [e.logical for e in exts] == sorted(e.logical for e in exts)
    ranges = fiemap.changed_ranges(base, new)
    assert ranges == [(p * PAGE, PAGE) for p in pages]


def test_holes_and_preallocated_space_read_as_zeros(reflink_dir: Path) -> None:
    size = 16 * MIB
    base, new = reflink_dir / "base", reflink_dir / "new"
    with open(base, "wb") as fh:
        fh.truncate(size)
    _pwrite(base, [(4 * MIB, os.urandom(MIB)), (12 * MIB, os.urandom(MIB))])
    reflink.clone_file(base, new)
    fd = os.open(new, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 2 * MIB)        # a hole becomes unwritten: still zeros
        os.pwrite(fd, b"x" * PAGE, 8 * MIB)       # a hole gets data
        os.fsync(fd)
    finally:
        os.close(fd)
    exts = fiemap.extents(new)
    assert any(e.flags & fiemap.UNWRITTEN for e in exts), exts
    ranges = fiemap.changed_ranges(base, new)
    assert ranges is not None
    assert _covers(ranges, 8 * MIB, PAGE)
    assert sum(n for _, n in ranges) <= 2 * os.statvfs(reflink_dir).f_bsize + PAGE
    _assert_equal_outside(base, new, ranges)


def test_punched_data_is_a_change(reflink_dir: Path) -> None:
    size = 8 * MIB
    base, new = reflink_dir / "base", reflink_dir / "new"
    _random_file(base, size)
    reflink.clone_file(base, new)
    fd = os.open(new, os.O_RDWR)
    try:
        os.truncate(fd, MIB)          # shrink and grow back: the tail is a hole now
        os.truncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    ranges = fiemap.changed_ranges(base, new)
    assert ranges == [(MIB, size - MIB)]


def test_unrelated_copies_on_a_reflink_fs_differ_everywhere(reflink_dir: Path) -> None:
    base, new = reflink_dir / "base", reflink_dir / "new"
    _random_file(base, 8 * MIB)
    _random_file(new, 8 * MIB)       # the same bytes, other blocks
    assert fiemap.changed_ranges(base, new) == [(0, 8 * MIB)]


def test_unrelated_copies_without_reflink_differ_everywhere(noreflink_dir: Path) -> None:
    size = 8 * MIB
    base, new = noreflink_dir / "base", noreflink_dir / "new"
    _random_file(base, size)
    _random_file(new, size)
    ranges = fiemap.changed_ranges(base, new)
    if _fs_type(noreflink_dir) == "tmpfs":
        assert ranges is None
    else:
        assert ranges == [(0, size)]


def test_tmpfs_has_no_fiemap(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or _fs_type(shm) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    base = shm / f"ganeti-fiemap-{os.getpid()}-base"
    new = shm / f"ganeti-fiemap-{os.getpid()}-new"
    try:
        _random_file(base, MIB)
        _random_file(new, MIB)
        with pytest.raises(fiemap.FiemapUnsupportedError):
            fiemap.extents(base)
        assert fiemap.changed_ranges(base, new) is None
    finally:
        base.unlink(missing_ok=True)
        new.unlink(missing_ok=True)


def test_sizes_differ_or_files_missing(reflink_dir: Path) -> None:
    base, new = reflink_dir / "base", reflink_dir / "new"
    _random_file(base, 2 * MIB)
    reflink.clone_file(base, new)
    os.truncate(new, 3 * MIB)
    assert fiemap.changed_ranges(base, new) is None
    with pytest.raises(FileNotFoundError):
        fiemap.changed_ranges(base, reflink_dir / "gone")
    with pytest.raises(FileNotFoundError):
        fiemap.extents(reflink_dir / "gone")


def test_empty_files(reflink_dir: Path) -> None:
    base, new = reflink_dir / "base", reflink_dir / "new"
    base.touch()
    new.touch()
    assert fiemap.extents(base) == []
    assert fiemap.changed_ranges(base, new) == []


# -- the comparison itself, on made-up extent lists ---------------------------

K = 4096


def _ext(logical: int, physical: int, length: int, flags: int = 0) -> Extent:
    return Extent(logical * K, physical * K, length * K, flags)


def _r(*pairs: tuple[int, int]) -> list[tuple[int, int]]:
    return [(o * K, n * K) for o, n in pairs]


def test_compare_same_physical_bytes_even_when_split_differently() -> None:
    base = [_ext(0, 100, 10)]
    new = [_ext(0, 100, 4), _ext(4, 104, 6, fiemap.LAST)]
    assert fiemap.compare_extents(base, new, 10 * K) == []


def test_compare_moved_extent_and_adjacent_ranges_merge() -> None:
    base = [_ext(0, 100, 10)]
    new = [_ext(0, 100, 2), _ext(2, 500, 2), _ext(4, 600, 2), _ext(6, 106, 4)]
    assert fiemap.compare_extents(base, new, 10 * K) == _r((2, 4))


@pytest.mark.parametrize("flag", [fiemap.UNKNOWN, fiemap.DELALLOC | fiemap.UNKNOWN,
                                  fiemap.ENCODED, fiemap.DATA_ENCRYPTED | fiemap.ENCODED,
                                  fiemap.NOT_ALIGNED, fiemap.DATA_INLINE | fiemap.NOT_ALIGNED,
                                  fiemap.DATA_TAIL | fiemap.NOT_ALIGNED])
def test_compare_inexact_extents_count_as_changed(flag: int) -> None:
    same = [_ext(0, 100, 4)]
    for base, new in ((same, [_ext(0, 100, 4, flag)]), ([_ext(0, 100, 4, flag)], same),
                      ([_ext(0, 100, 4, flag)], [_ext(0, 100, 4, flag)])):
        assert fiemap.compare_extents(base, new, 4 * K) == _r((0, 4))


def test_compare_zeros_holes_and_unwritten() -> None:
    u = fiemap.UNWRITTEN
    # hole vs unwritten, unwritten vs unwritten elsewhere: zeros both
    assert fiemap.compare_extents([], [_ext(0, 9, 4, u)], 8 * K) == []
    assert fiemap.compare_extents([_ext(0, 1, 4, u)], [_ext(0, 9, 4, u)], 4 * K) == []
    # unwritten vs data (even at the same place: it was written since)
    assert fiemap.compare_extents([_ext(0, 9, 4, u)], [_ext(0, 9, 4)], 4 * K) == _r((0, 4))
    assert fiemap.compare_extents([_ext(0, 9, 4)], [_ext(0, 9, 4, u)], 4 * K) == _r((0, 4))
    # data vs hole, hole vs data
    assert fiemap.compare_extents([_ext(2, 9, 2)], [], 8 * K) == _r((2, 2))
    assert fiemap.compare_extents([], [_ext(2, 9, 2), _ext(6, 20, 2)], 8 * K) \
        == _r((2, 2), (6, 2))


def test_compare_clips_to_the_size() -> None:
    # the last block is mapped whole although the file ends inside it
    base = [_ext(0, 100, 2)]
    new = [_ext(0, 100, 1), _ext(1, 300, 1)]
    assert fiemap.compare_extents(base, new, K + 10) == [(K, 10)]
    assert fiemap.compare_extents(base, [_ext(0, 100, 1), _ext(1, 101, 5)], 2 * K) == []
    assert fiemap.compare_extents([], [], 0) == []
