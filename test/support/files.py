"""Small file helpers the tests share: content digests, bit rot, whole-second stamps."""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

MIB = 1024 * 1024


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's content (holes read as zeros), read in 4 MiB steps."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def flip_byte(path: str | os.PathLike[str], offset: int, mask: int = 0x01) -> None:
    """Change one byte in place, as bit rot would (``mask`` XORed into it)."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        assert byte, f"{path} has no byte at {offset}"
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ mask]))


def sparse_file(path: str | os.PathLike[str], size: int,
                pieces: list[tuple[int, bytes]]) -> Path:
    """A sparse file of ``size`` bytes holding ``pieces`` (offset, data), holes elsewhere."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as handle:
        handle.truncate(size)
        for offset, data in pieces:
            handle.seek(offset)
            handle.write(data)
    return target


def wait_for_the_next_second() -> None:
    """Sleep to the start of the next wall-clock second, so that a timestamp in whole
    seconds taken before the call (an export's, a generation's name: truncated, as
    time.gmtime does) differs from any taken after it; at most a second, half on average,
    instead of a fixed wait of more than one."""
    now = time.time()
    time.sleep(math.floor(now) + 1 - now)
