"""The block index of a dump: one digest per 4 MiB block (doc/incremental-exports.md).

Stored beside each dump as ``<dump>.index`` (``disk0.img.index``).  It is what
an incremental export compares the new disk with, and what ``gnt-backup
verify`` checks a dump against block by block.  Its digests are the same
per-block digests the disk checksum is made of (``ganeti.transfer.checksum``):
the checksum is the algorithm's hash over the concatenated digests, so an
index proves itself against ``disk<N>_checksum`` in config.ini without reading
the dump.

Binary, so that a 1 TiB disk's index (262,144 blocks) is 8 MiB, not 24::

    magic    8 bytes   b"GNTBIDX\\x01"
    length   4 bytes   big endian: length of the header
    header   JSON      version, algorithm, block_size, size, blocks, checksum,
                       base (generation name or null), created (seconds)
    digests  blocks x 32 bytes
    trailer  32 bytes  BLAKE3 of everything before it

Reading treats the file as hostile (anyone with access to the export dir can
change it): every field is checked and any problem is an
:class:`IndexProblem` naming it, which callers turn into "export in full" or
"verify: index unreadable".
"""

from __future__ import annotations

import json
import os
import stat
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

import blake3

from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import ALGORITHMS, DEFAULT_ALGORITHM, new_hash

INDEX_SUFFIX = ".index"
MAGIC = b"GNTBIDX\x01"
VERSION = 1
DIGEST_SIZE = 32
_LENGTH = struct.Struct("!I")
MAX_HEADER = 4096
# an index for disks up to 64 TiB (16 Mi blocks); larger files are not read
MAX_BLOCKS = 16 * 1024 * 1024


class IndexProblem(ValueError):
    """A block index is missing, unreadable or inconsistent; the message says which."""


def index_path(dump: str | os.PathLike[str]) -> Path:
    """Where the index of a dump lives."""
    path = Path(dump)
    return path.with_name(path.name + INDEX_SUFFIX)


def block_count(size: int, block_size: int = BLOCK_SIZE) -> int:
    return -(-size // block_size)


def checksum_of(digests: bytes | bytearray | memoryview, algorithm: str) -> str:
    """The disk checksum the digests make (``ganeti.transfer.checksum``'s rule)."""
    return f"{algorithm}:{new_hash(algorithm, digests).hexdigest()}"


@dataclass
class BlockIndex:
    """The digests of one dump, in block order."""

    size: int
    digests: bytes
    algorithm: str = DEFAULT_ALGORITHM
    block_size: int = BLOCK_SIZE
    base: str | None = None
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise IndexProblem(f"unknown algorithm {self.algorithm!r}")
        if self.block_size != BLOCK_SIZE:
            raise IndexProblem(f"block_size {self.block_size} is not {BLOCK_SIZE}")
        if self.size < 0:
            raise IndexProblem(f"size {self.size} is negative")
        if len(self.digests) != block_count(self.size) * DIGEST_SIZE:
            raise IndexProblem(f"{len(self.digests) // DIGEST_SIZE} digests for"
                               f" {block_count(self.size)} blocks of a {self.size}-byte disk")

    @property
    def blocks(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    @property
    def checksum(self) -> str:
        return checksum_of(self.digests, self.algorithm)

    def digest(self, block: int) -> bytes:
        return self.digests[block * DIGEST_SIZE:(block + 1) * DIGEST_SIZE]

    def block_range(self, block: int) -> tuple[int, int]:
        """(offset, length) of a block; the last one may be shorter."""
        offset = block * self.block_size
        return offset, min(self.block_size, self.size - offset)

    # --- encoding ------------------------------------------------------------------

    def encode(self) -> bytes:
        header = json.dumps({
            "version": VERSION, "algorithm": self.algorithm,
            "block_size": self.block_size, "size": self.size, "blocks": self.blocks,
            "checksum": self.checksum, "base": self.base, "created": int(self.created),
        }, sort_keys=True).encode()
        body = MAGIC + _LENGTH.pack(len(header)) + header + self.digests
        return body + blake3.blake3(body).digest()

    @classmethod
    def decode(cls, raw: bytes) -> BlockIndex:
        if len(raw) < len(MAGIC) + _LENGTH.size + DIGEST_SIZE or not raw.startswith(MAGIC):
            raise IndexProblem("not a block index (bad magic)")
        body, trailer = raw[:-DIGEST_SIZE], raw[-DIGEST_SIZE:]
        if blake3.blake3(body).digest() != trailer:
            raise IndexProblem("trailer hash does not match (truncated or changed)")
        (length,) = _LENGTH.unpack_from(raw, len(MAGIC))
        start = len(MAGIC) + _LENGTH.size
        if length > MAX_HEADER or start + length > len(body):
            raise IndexProblem(f"header length {length} is out of range")
        try:
            header = json.loads(body[start:start + length].decode())
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise IndexProblem(f"header is not valid JSON: {err}") from None
        if not isinstance(header, dict):
            raise IndexProblem("header is not a JSON object")
        if header.get("version") != VERSION:
            raise IndexProblem(f"version {header.get('version')!r} is not {VERSION}")
        size, blocks, base = header.get("size"), header.get("blocks"), header.get("base")
        if (not _is_int(size) or not _is_int(blocks) or blocks != block_count(size)
                or blocks > MAX_BLOCKS):
            raise IndexProblem(f"size {size!r} and blocks {blocks!r} do not fit")
        if base is not None and not isinstance(base, str):
            raise IndexProblem(f"base {base!r} is not a generation name")
        created, block_size = header.get("created", 0), header.get("block_size")
        digests = body[start + length:]
        index = cls(size=size, digests=bytes(digests),
                    algorithm=str(header.get("algorithm")),
                    block_size=block_size if _is_int(block_size) else -1,
                    base=base, created=float(created) if _is_int(created) else 0.0)
        if header.get("checksum") != index.checksum:
            raise IndexProblem("recorded checksum does not match the digests")
        return index

    # --- files ---------------------------------------------------------------------

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write durably next to its dump (temporary name, fsync, rename)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(self.encode())
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, target)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> BlockIndex:
        """The index at ``path``; IndexProblem (naming the file) for anything unusable."""
        limit = len(MAGIC) + _LENGTH.size + MAX_HEADER + (MAX_BLOCKS + 1) * DIGEST_SIZE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise IndexProblem(f"{Path(path).name} is missing") from None
        except OSError as err:
            raise IndexProblem(f"{Path(path).name} cannot be opened: {err.strerror}") \
                from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise IndexProblem(f"{Path(path).name} is not a regular file")
            if st.st_size > limit:
                raise IndexProblem(f"{Path(path).name} is larger than {limit} bytes")
            raw = os.pread(fd, st.st_size, 0)
        except OSError as err:
            raise IndexProblem(f"{Path(path).name} cannot be read: {err.strerror}") \
                from None
        finally:
            os.close(fd)
        try:
            return cls.decode(raw)
        except IndexProblem as err:
            raise IndexProblem(f"{Path(path).name}: {err}") from None


def from_digests(size: int, digests: Sequence[bytes] | bytes, *,
                 algorithm: str = DEFAULT_ALGORITHM, base: str | None = None) -> BlockIndex:
    joined = digests if isinstance(digests, bytes) else b"".join(digests)
    return BlockIndex(size=size, digests=joined, algorithm=algorithm, base=base)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
