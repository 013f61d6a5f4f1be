"""reflink.clone_or_copy: a clone where blocks can be shared, else a sparse local copy.

The receiver of an incremental export starts the new dump this way from the
base dump, so both outcomes run on real filesystems (the reflink loop
filesystem, and one without reflink); failures must leave no file behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from ganeti import errors
from ganeti.storage import allocated_bytes, fiemap, reflink

MIB = 1024 * 1024


def _sparse_source(path: Path) -> str:
    """16 MiB with data at 1, 6-8 and the last MiB, holes elsewhere; its sha256."""
    with open(path, "wb") as fh:
        fh.truncate(16 * MIB)
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, length in ((MIB, MIB), (6 * MIB, 2 * MIB), (15 * MIB, MIB)):
            os.pwrite(fd, os.urandom(length), offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return _sha(path)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _data_regions(path: Path) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    found, pos, size = [], 0, os.fstat(fd).st_size
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            found.append((start, end - start))
            pos = end
    finally:
        os.close(fd)
    return found


def test_reflink_filesystem_clones(reflink_dir: Path) -> None:
    src, dst = reflink_dir / "base.img", reflink_dir / "new.img"
    digest = _sparse_source(src)
    assert reflink.clone_or_copy(src, dst) == "reflink"
    assert _sha(dst) == digest
    assert os.stat(dst).st_mode & 0o777 == 0o600
    assert fiemap.changed_ranges(src, dst) == [], "every extent is shared"


def test_without_reflink_a_sparse_copy(noreflink_dir: Path) -> None:
    src, dst = noreflink_dir / "base.img", noreflink_dir / "new.img"
    digest = _sparse_source(src)
    assert reflink.clone_or_copy(src, dst) == "copy"
    assert _sha(dst) == digest
    assert dst.stat().st_size == src.stat().st_size
    assert os.stat(dst).st_mode & 0o777 == 0o600
    assert _data_regions(dst) == _data_regions(src), "holes stay holes"
    assert allocated_bytes(dst) <= allocated_bytes(src) + MIB


def test_copy_falls_back_to_read_write(noreflink_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Where copy_file_range cannot do the pair (EXDEV: older kernels across mounts)."""
    def no_copy_range(*_args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", no_copy_range)
    src, dst = noreflink_dir / "base.img", noreflink_dir / "new.img"
    digest = _sparse_source(src)
    assert reflink.clone_or_copy(src, dst) == "copy"
    assert _sha(dst) == digest
    assert _data_regions(dst) == _data_regions(src)


def test_a_failed_copy_leaves_nothing(noreflink_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(*args: object) -> int:
        calls.append(args)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "copy_file_range", failing)
    src, dst = noreflink_dir / "base.img", noreflink_dir / "new.img"
    _sparse_source(src)
    with pytest.raises(errors.StorageError, match="Input/output error"):
        reflink.clone_or_copy(src, dst)
    assert calls and not dst.exists()


def test_an_empty_file(noreflink_dir: Path) -> None:
    src, dst = noreflink_dir / "empty", noreflink_dir / "copy"
    src.touch()
    assert reflink.clone_or_copy(src, dst) == "copy"
    assert dst.read_bytes() == b""


@pytest.mark.parametrize("where", ["reflink", "noreflink"])
def test_an_existing_destination_is_never_overwritten(request: pytest.FixtureRequest,
                                                      where: str) -> None:
    base: Path = request.getfixturevalue(f"{where}_dir")
    src, dst = base / "base.img", base / "new.img"
    _sparse_source(src)
    dst.write_bytes(b"keep me")
    with pytest.raises(errors.StorageError, match="already exists"):
        reflink.clone_or_copy(src, dst)
    assert dst.read_bytes() == b"keep me"


def test_a_missing_source_makes_nothing(noreflink_dir: Path) -> None:
    dst = noreflink_dir / "new.img"
    with pytest.raises(errors.StorageError, match="gone"):
        reflink.clone_or_copy(noreflink_dir / "gone", dst)
    assert not dst.exists()
