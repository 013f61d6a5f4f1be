"""Sparse-aware reading, writing and copying of disk images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ganeti import errors
from ganeti.storage import (
    CHUNK,
    MIB,
    DiskWriter,
    allocated_bytes,
    copy_sparse,
    open_reader,
    open_writer,
)

REGIONS = [(5 * MIB, MIB), (20 * MIB, MIB), (63 * MIB, MIB)]


@pytest.fixture(params=["tmp", "reflink", "noreflink"])
def scratch(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The same tests on the default tmp fs, btrfs/xfs and a no-reflink fs (tmpfs/ext4)."""
    if request.param == "tmp":
        return tmp_path
    fixture = "reflink_dir" if request.param == "reflink" else "noreflink_dir"
    path: Path = request.getfixturevalue(fixture)
    return path


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def _make_sparse(path: Path, size: int, regions: list[tuple[int, int]]) -> None:
    with open_writer(path, size) as writer:
        for offset, length in regions:
            writer.write_at(offset, os.urandom(length))


def test_extents_are_exactly_the_data_regions(scratch: Path) -> None:
    path = scratch / "disk.img"
    _make_sparse(path, 64 * MIB, REGIONS)
    block = os.statvfs(path).f_bsize
    with open_reader(path) as reader:
        assert reader.size == 64 * MIB
        found = list(reader.extents())
        assert reader.data_bytes() == sum(length for _, length in found)
    assert len(found) == len(REGIONS)
    for (off, length), (want_off, want_len) in zip(found, REGIONS, strict=True):
        assert want_off - block < off <= want_off
        assert want_off + want_len <= off + length < want_off + want_len + block


def test_extents_are_split_into_chunks(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    _make_sparse(path, 64 * MIB, REGIONS)
    with open_reader(path) as reader:
        pieces = list(reader.extents(chunk=300_000))
        whole = list(reader.extents())
    assert max(length for _, length in pieces) == 300_000
    assert sum(length for _, length in pieces) == sum(length for _, length in whole)
    # pieces are contiguous inside each region and ascending overall
    offsets = [off for off, _ in pieces]
    assert offsets == sorted(offsets)
    with pytest.raises(ValueError):
        list(open_reader(path).extents(chunk=0))


def test_empty_and_all_hole_files_have_no_extents(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with open_writer(tmp_path / "holes", 32 * MIB):
        pass
    with open_reader(tmp_path / "empty") as reader:
        assert list(reader.extents()) == []
    with open_reader(tmp_path / "holes") as reader:
        assert reader.size == 32 * MIB
        assert list(reader.extents()) == []


def test_copy_sparse_keeps_holes_and_content(scratch: Path) -> None:
    src, dst = scratch / "src.img", scratch / "dst.img"
    _make_sparse(src, 64 * MIB, REGIONS)
    seen: list[tuple[int, int]] = []
    with open_reader(src) as reader, open_writer(dst, reader.size) as writer:
        copied = copy_sparse(reader, writer, lambda done, total: seen.append((done, total)))
    data = sum(length for _, length in REGIONS)
    assert data <= copied < data + 3 * 2 * os.statvfs(src).f_bsize
    assert dst.stat().st_size == 64 * MIB
    assert _file_hash(dst) == _file_hash(src)
    assert allocated_bytes(dst) < data + 2 * MIB
    assert seen and seen[-1] == (copied, copied)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


@pytest.mark.parametrize("chunk", [MIB, CHUNK, 3 * CHUNK])
def test_copy_sparse_turns_zero_data_into_holes(tmp_path: Path, chunk: int) -> None:
    src, dst = tmp_path / "thick.img", tmp_path / "thin.img"
    payload = os.urandom(MIB)
    with open(src, "wb") as fh:  # fully allocated: zeros are written, not holes
        fh.write(bytes(32 * MIB))
        fh.seek(8 * MIB)
        fh.write(payload)
    assert allocated_bytes(src) >= 32 * MIB
    with open_reader(src) as reader, open_writer(dst, reader.size) as writer:
        assert copy_sparse(reader, writer, chunk=chunk) == 32 * MIB
    assert _file_hash(dst) == _file_hash(src)
    # zero detection works per copy chunk: only the chunk holding the payload is written
    assert chunk <= allocated_bytes(dst) <= chunk + MIB // 4


def test_copy_to_target_whose_holes_are_not_zero(tmp_path: Path) -> None:
    """Like a block device: old content must be overwritten with zeros."""
    src, dst = tmp_path / "src.img", tmp_path / "dev.img"
    _make_sparse(src, 64 * MIB, REGIONS)
    dst.write_bytes(b"\xa5" * (64 * MIB))
    fd = os.open(dst, os.O_WRONLY)
    with open_reader(src) as reader, DiskWriter(dst, fd, 64 * MIB, holes_are_zero=False) as writer:
        assert not writer.holes_are_zero
        copy_sparse(reader, writer)
    assert _file_hash(dst) == _file_hash(src)


def test_copy_refuses_smaller_target(tmp_path: Path) -> None:
    src = tmp_path / "src.img"
    _make_sparse(src, 8 * MIB, [(0, MIB)])
    with open_reader(src) as reader, open_writer(tmp_path / "dst.img", 4 * MIB) as writer, \
            pytest.raises(errors.StorageError, match="smaller"):
        copy_sparse(reader, writer)


def test_large_offsets(tmp_path: Path) -> None:
    size = 2 * 1024**4  # 2 TiB, nearly all hole
    offsets = [0, 1024**4 + 12345, size - 4096]
    path = tmp_path / "huge.img"
    blobs = {off: os.urandom(4096) for off in offsets}
    with open_writer(path, size) as writer:
        for off, blob in blobs.items():
            writer.write_at(off, blob)
        with pytest.raises(errors.StorageError, match="outside"):
            writer.write_at(size - 10, b"x" * 11)
    assert allocated_bytes(path) < MIB
    with open_reader(path) as reader:
        assert reader.size == size
        for off, blob in blobs.items():
            assert reader.read(off, 4096) == blob
        assert reader.read(size - 100, 1000) == blobs[size - 4096][-100:]
        buf = bytearray(8192)
        assert reader.readinto(1024**4 + 12345 - 4096, memoryview(buf)) == 8192
        assert bytes(buf[4096:]) == blobs[1024**4 + 12345]
        assert bytes(buf[:4096]) == bytes(4096)
        extents = list(reader.extents())
    assert len(extents) == 3
    assert sum(length for _, length in extents) < MIB


def test_writer_without_clean_exit_still_closes(tmp_path: Path) -> None:
    path = tmp_path / "x.img"
    with pytest.raises(RuntimeError), open_writer(path, MIB) as writer:
        writer.write_at(0, b"abc")
        raise RuntimeError("boom")
    assert writer.fileno() == -1
    assert path.read_bytes()[:3] == b"abc"


def test_reader_of_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(errors.StorageError, match="Cannot open"):
        open_reader(tmp_path / "missing.img")
