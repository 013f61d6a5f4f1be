"""Disk checksum that does not depend on where a filesystem keeps holes.

The disk is cut into fixed 4 MiB blocks; each block's bytes (holes read as
zeros) are hashed with SHA-256 and the disk checksum is SHA-256 over the
concatenated block digests, written ``sha256-4m:<hex>``.  Sender, receiver
and a later verifier therefore agree however each of them sees the extents,
and blocks that are entirely hole cost a cached digest instead of a read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from ganeti.storage.extents import DiskReader
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.protocol import CHECKSUM_ALGORITHM

_ZEROS = memoryview(bytes(BLOCK_SIZE))


@lru_cache(maxsize=8)
def _zero_digest(length: int) -> bytes:
    return hashlib.sha256(_ZEROS[:length]).digest()


class BlockChecksum:
    """Incremental checksum fed with data in ascending, non-overlapping order.

    Gaps between updates (holes, skipped zero blocks) count as zeros.
    """

    def __init__(self, size: int, block_size: int = BLOCK_SIZE) -> None:
        if size < 0:
            raise ValueError("size must not be negative")
        if not 0 < block_size <= BLOCK_SIZE:
            raise ValueError(f"block size must be 1..{BLOCK_SIZE}")
        self.size = size
        self._block = block_size
        self._pos = 0
        self._current: Any = None  # hash of the partly seen block, if any
        self._outer = hashlib.sha256()
        self._result: str | None = None

    @property
    def position(self) -> int:
        return self._pos

    def _block_end(self) -> int:
        return min(self._pos - self._pos % self._block + self._block, self.size)

    def _close_block_if_full(self, block_end: int) -> None:
        if self._pos == block_end and self._current is not None:
            self._outer.update(self._current.digest())
            self._current = None

    def _skip_to(self, target: int) -> None:
        while self._pos < target:
            block_end = self._block_end()
            block_start = self._pos - self._pos % self._block
            if self._current is None and self._pos == block_start and target >= block_end:
                self._outer.update(_zero_digest(block_end - block_start))
                self._pos = block_end
                continue
            step = min(target, block_end) - self._pos
            if self._current is None:
                self._current = hashlib.sha256()
            self._current.update(_ZEROS[:step])
            self._pos += step
            self._close_block_if_full(block_end)

    def update(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if self._result is not None:
            raise ValueError("checksum already finished")
        if offset < self._pos:
            raise ValueError(f"data at {offset} is before position {self._pos}")
        if offset + len(view) > self.size:
            raise ValueError(f"data at {offset}+{len(view)} is beyond size {self.size}")
        self._skip_to(offset)
        done = 0
        while done < len(view):
            block_end = self._block_end()
            step = min(len(view) - done, block_end - self._pos)
            part = view[done:done + step]
            if self._current is None and step == block_end - (self._pos - self._pos
                                                                 % self._block):
                self._outer.update(hashlib.sha256(part).digest())
                self._pos += step
            else:
                if self._current is None:
                    self._current = hashlib.sha256()
                self._current.update(part)
                self._pos += step
                self._close_block_if_full(block_end)
            done += step

    def finish(self) -> str:
        """The disk checksum; the rest of the disk after the last update counts as zeros."""
        if self._result is None:
            self._skip_to(self.size)
            self._result = f"{CHECKSUM_ALGORITHM}:{self._outer.hexdigest()}"
        return self._result


def block_pieces(extents: Iterable[tuple[int, int]],
                 block_size: int = BLOCK_SIZE) -> Iterator[tuple[int, int]]:
    """Split data regions at block boundaries, so each piece lies in one block."""
    for offset, length in extents:
        end = offset + length
        while offset < end:
            step = min(end, offset - offset % block_size + block_size) - offset
            yield offset, step
            offset += step


def checksum_reader(reader: DiskReader) -> str:
    summer = BlockChecksum(reader.size)
    buf = memoryview(bytearray(BLOCK_SIZE))
    for offset, length in block_pieces(reader.extents()):
        got = reader.readinto(offset, buf[:length])
        summer.update(offset, buf[:got])
    return summer.finish()


def checksum_file(path: str | os.PathLike[str]) -> str:
    """``sha256-4m:<hex>`` of an image file or block device."""
    with DiskReader(path) as reader:
        return checksum_reader(reader)
