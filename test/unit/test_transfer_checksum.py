"""The disk checksum depends on the bytes only, never on the hole layout."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import (
    BLAKE3_4M,
    SHA256_4M,
    BlockChecksum,
    algorithm_of,
    block_pieces,
    checksum_file,
    file_matches,
)


class _Hash(Protocol):
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...


_HASHES: dict[str, Callable[[bytes], _Hash]] = {SHA256_4M: hashlib.sha256,
                                                BLAKE3_4M: blake3.blake3}


def _reference(data: bytes, block: int = BLOCK_SIZE, algorithm: str = BLAKE3_4M) -> str:
    new = _HASHES[algorithm]
    digests = b"".join(new(data[i:i + block]).digest() for i in range(0, len(data), block))
    return f"{algorithm}:" + new(digests).hexdigest()


def _write_sparse(path: Path, size: int, pieces: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, data in pieces:
            handle.seek(offset)
            handle.write(data)


@pytest.mark.parametrize("algorithm", [BLAKE3_4M, SHA256_4M])
def test_checksum_file_matches_definition_unaligned_size(tmp_path: Path,
                                                         algorithm: str) -> None:
    size = 3 * BLOCK_SIZE + 12345
    path = tmp_path / "img"
    _write_sparse(path, size, [(BLOCK_SIZE - 10, os.urandom(20)),
                               (2 * BLOCK_SIZE + 100, os.urandom(BLOCK_SIZE))])
    assert checksum_file(path, algorithm) == _reference(path.read_bytes(),
                                                        algorithm=algorithm)


def test_default_is_blake3_and_old_sha256_values_still_verify(tmp_path: Path) -> None:
    path = tmp_path / "img"
    _write_sparse(path, BLOCK_SIZE + 5, [(7, os.urandom(3000))])
    new, old = checksum_file(path), checksum_file(path, SHA256_4M)
    assert new.startswith("blake3-4m:") and old.startswith("sha256-4m:")
    assert file_matches(path, new) and file_matches(path, old)
    _write_sparse(path, BLOCK_SIZE + 5, [(7, b"changed")])
    assert not file_matches(path, new) and not file_matches(path, old)


def test_algorithm_of_names_what_is_wrong(tmp_path: Path) -> None:
    assert algorithm_of("sha256-4m:" + "a" * 64) == SHA256_4M
    assert algorithm_of("blake3-4m:" + "0" * 64) == BLAKE3_4M
    with pytest.raises(ValueError, match="Unknown checksum algorithm in 'md5:aa'"):
        algorithm_of("md5:aa")
    with pytest.raises(ValueError, match="Unknown checksum algorithm"):
        algorithm_of("no-colon")
    with pytest.raises(ValueError, match="Malformed blake3-4m checksum"):
        algorithm_of("blake3-4m:" + "A" * 64)
    with pytest.raises(ValueError, match="Malformed sha256-4m checksum"):
        algorithm_of("sha256-4m:abc")
    path = tmp_path / "img"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="Unknown checksum algorithm 'crc32'"):
        checksum_file(path, "crc32")


def test_same_bytes_different_hole_layout_same_checksum(tmp_path: Path) -> None:
    size = 2 * BLOCK_SIZE + 777
    payload = os.urandom(5000)
    sparse = tmp_path / "sparse"
    _write_sparse(sparse, size, [(BLOCK_SIZE + 3, payload)])
    thick = tmp_path / "thick"
    thick.write_bytes(sparse.read_bytes())  # zeros written out: no holes at all
    assert os.stat(thick).st_blocks > os.stat(sparse).st_blocks
    assert checksum_file(sparse) == checksum_file(thick) == _reference(thick.read_bytes())


def test_different_content_differs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write_sparse(a, BLOCK_SIZE * 2, [(BLOCK_SIZE + 1, b"x")])
    _write_sparse(b, BLOCK_SIZE * 2, [(BLOCK_SIZE + 2, b"x")])
    assert checksum_file(a) != checksum_file(b)


def test_empty_and_all_hole(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert checksum_file(empty) == _reference(b"")
    holes = tmp_path / "holes"
    _write_sparse(holes, 5 * BLOCK_SIZE + 1, [])
    assert checksum_file(holes) == _reference(bytes(5 * BLOCK_SIZE + 1))


def test_out_of_order_and_overflow_refused() -> None:
    summer = BlockChecksum(100)
    summer.update(50, b"x")
    with pytest.raises(ValueError):
        summer.update(10, b"y")
    with pytest.raises(ValueError):
        summer.update(99, b"yz")


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 3 * 4096 + 50),
       cuts=st.lists(st.integers(0, 3 * 4096 + 50), max_size=12),
       seed=st.binary(min_size=1, max_size=64),
       algorithm=st.sampled_from([BLAKE3_4M, SHA256_4M]))
def test_any_split_of_the_data_gives_the_same_checksum(size: int, cuts: list[int],
                                                       seed: bytes, algorithm: str) -> None:
    # small block size so that hypothesis explores block boundaries cheaply
    block = 4096
    data = bytearray(size)
    for i in range(0, size, 97):
        data[i] = seed[i % len(seed)]
    points = sorted({c for c in cuts if c <= size} | {0, size})
    summer = BlockChecksum(size, block, algorithm)
    for start, end in itertools.pairwise(points):
        piece = data[start:end]
        if any(piece):  # zero pieces are skipped, as the sender skips them
            summer.update(start, piece)
    assert summer.finish() == _reference(bytes(data), block, algorithm)


def test_block_pieces_never_cross_blocks() -> None:
    pieces = list(block_pieces([(10, 3 * BLOCK_SIZE), (5 * BLOCK_SIZE, 5)]))
    assert sum(length for _, length in pieces) == 3 * BLOCK_SIZE + 5
    for offset, length in pieces:
        assert offset // BLOCK_SIZE == (offset + length - 1) // BLOCK_SIZE
