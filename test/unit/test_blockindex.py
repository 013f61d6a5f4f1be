"""The block index file: round trip, agreement with the disk checksum, hostile files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ganeti.backup import blockindex
from ganeti.backup.blockindex import BlockIndex, IndexProblem
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import checksum_file, new_hash


def _digests(data: bytes) -> list[bytes]:
    return [bytes(new_hash("blake3-4m", data[pos:pos + BLOCK_SIZE]).digest())
            for pos in range(0, len(data), BLOCK_SIZE)]


@pytest.fixture()
def dump(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(2 * BLOCK_SIZE + 12345)
    path = tmp_path / "disk0.img"
    path.write_bytes(data)
    return path, data


def test_index_checksum_is_the_disk_checksum(dump: tuple[Path, bytes]) -> None:
    path, data = dump
    index = blockindex.from_digests(len(data), _digests(data))
    assert index.blocks == 3
    assert index.checksum == checksum_file(path)
    assert index.block_range(2) == (2 * BLOCK_SIZE, 12345)


def test_round_trip(dump: tuple[Path, bytes]) -> None:
    path, data = dump
    index = blockindex.from_digests(len(data), _digests(data), base="20261130T031500Z")
    target = blockindex.index_path(path)
    assert target.name == "disk0.img.index"
    index.write(target)
    back = BlockIndex.read(target)
    assert (back.size, back.digests, back.base) == (index.size, index.digests, index.base)
    assert oct(target.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "magic"])
def test_damaged_index_is_refused(dump: tuple[Path, bytes], damage: str) -> None:
    path, data = dump
    target = blockindex.index_path(path)
    blockindex.from_digests(len(data), _digests(data)).write(target)
    raw = bytearray(target.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x40
    elif damage == "truncate":
        raw = raw[:-7]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw[0:8] = b"NOTINDEX"
    target.write_bytes(bytes(raw))
    with pytest.raises(IndexProblem, match=r"disk0\.img\.index"):
        BlockIndex.read(target)


def test_missing_and_non_regular(tmp_path: Path) -> None:
    with pytest.raises(IndexProblem, match="missing"):
        BlockIndex.read(tmp_path / "none.index")
    os.mkfifo(tmp_path / "fifo.index")
    with pytest.raises(IndexProblem, match="not a regular file"):
        BlockIndex.read(tmp_path / "fifo.index")


def test_wrong_digest_count_is_refused() -> None:
    with pytest.raises(IndexProblem, match="digests for 2 blocks"):
        blockindex.from_digests(BLOCK_SIZE + 1, [bytes(32)])
