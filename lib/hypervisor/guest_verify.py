"""Verifier for the disks of the tiny real kvm guest (``ganeti.tools.guest_image``).

The guest's init (busybox sh) writes every virtio disk it finds in 4 KiB
blocks; this module is the one definition of that block format (the init
script is rendered from these constants) and checks a disk, or an export dump
of one, afterwards.  Run ``python -m ganeti.hypervisor.guest_verify DISK...``
(the disks of one instance, in instance order): prints a JSON report, exit 1
when the disks are not consistent.

Block format (``BLOCK_SIZE`` bytes; never-written blocks are all zero):

* header, ``HEADER_SIZE`` bytes of ASCII: ``GNTBLK1 g=G d=D i=I n=N sha256=HEX``
  left-justified, padded with spaces, ending in a newline; G the generation
  (1, 2, ...), D the disk's position in the instance (0, 1, ...), I the block
  index, N the number of blocks in the data region, HEX the sha256 of the
  payload;
* payload, the other ``PAYLOAD_SIZE`` bytes: ``PAYLOAD_LINES`` copies of the
  line ``gntguest:g=G:d=D:i=I`` left-justified to ``LINE_SIZE - 1`` characters
  plus a newline, so it is derived from (G, D, I) alone.

The guest writes generation G to block ``(G - 1) % N`` of disk 0, then disk 1,
..., each with one O_DIRECT write, and only then starts G + 1.

Rules (``verify_guest_disks``):

1. Per disk: each of the first N blocks is all zero or well-formed: magic,
   numbers, ``d`` = the disk's position, ``i`` = its index, ``n`` = N,
   ``(g - 1) % N == i``, checksum and payload matching.  Anything else is a
   torn or corrupt block.
2. Per disk, with ``M`` its highest generation: block i holds exactly the last
   generation <= M that maps to it (``M - (M - 1 - i) % N``; zero when
   ``M <= i``).  A block with another generation is a lost or stale write.
3. Across disks, one point in time: with ``M0`` the highest generation on disk
   0, the disks' highest generations are ``M0, ..., M0, M0 - 1, ..., M0 - 1``
   (non-increasing, the last >= ``M0 - 1``): the state right after the guest
   finished some disk of generation M0.  The report's ``generation`` is M0 and
   ``disks_at_generation`` how many leading disks have it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BLOCK_SIZE = 4096
HEADER_SIZE = 128
PAYLOAD_SIZE = BLOCK_SIZE - HEADER_SIZE
LINE_SIZE = 62
PAYLOAD_LINES = PAYLOAD_SIZE // LINE_SIZE
MAGIC = "GNTBLK1"
# how far to look for a well-formed header when block 0 is not one
MAX_SCAN_BLOCKS = 1024
MAX_ERRORS = 20

assert PAYLOAD_LINES * LINE_SIZE == PAYLOAD_SIZE


def payload(generation: int, disk: int, index: int) -> bytes:
    """The payload the guest writes for (generation, disk, index)."""
    line = f"gntguest:g={generation}:d={disk}:i={index}".ljust(LINE_SIZE - 1) + "\n"
    return (line * PAYLOAD_LINES).encode("ascii")


def header(generation: int, disk: int, index: int, blocks: int, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    text = f"{MAGIC} g={generation} d={disk} i={index} n={blocks} sha256={digest}"
    return (text.ljust(HEADER_SIZE - 1) + "\n").encode("ascii")


def block(generation: int, disk: int, index: int, blocks: int) -> bytes:
    """One whole block as the guest writes it (for tests and tools)."""
    body = payload(generation, disk, index)
    return header(generation, disk, index, blocks, body) + body


def expected_generation(highest: int, index: int, blocks: int) -> int:
    """The generation block ``index`` holds once ``highest`` was written (0: none)."""
    if highest <= index:
        return 0
    return highest - (highest - 1 - index) % blocks


@dataclass
class DiskReport:
    path: str
    position: int
    blocks: int = 0  # N, from the headers; 0 when nothing was written
    written: int = 0
    max_generation: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class GuestReport:
    disks: list[DiskReport]
    generation: int = 0
    disks_at_generation: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.errors and all(d.ok for d in self.disks)

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["consistent"] = self.consistent
        for entry, disk in zip(result["disks"], self.disks, strict=True):
            entry["ok"] = disk.ok
        return result


def _parse(raw: bytes) -> tuple[dict[str, int], str] | str:
    """The header's numbers and checksum, or why the block is not well-formed."""
    try:
        text = raw[:HEADER_SIZE].decode("ascii")
    except UnicodeDecodeError:
        return "header is not ASCII"
    if not text.endswith("\n"):
        return "header not terminated"
    fields = text.split()
    if len(fields) != 6 or fields[0] != MAGIC:
        return "bad magic or header layout"
    numbers: dict[str, int] = {}
    for item, key in zip(fields[1:5], ("g", "d", "i", "n"), strict=True):
        name, sep, value = item.partition("=")
        if name != key or not sep or not value.isdigit():
            return f"bad header field {item!r}"
        numbers[key] = int(value)
    name, _, digest = fields[5].partition("=")
    if name != "sha256" or len(digest) != 64:
        return "bad checksum field"
    return numbers, digest


def _check_block(raw: bytes, position: int, index: int,
                 blocks: int | None) -> tuple[int, int] | str:
    """(generation, n) of a well-formed block, (0, 0) for a zero one, else the defect."""
    if raw.count(0) == len(raw):
        return 0, 0
    if len(raw) != BLOCK_SIZE:
        return "short block"
    parsed = _parse(raw)
    if isinstance(parsed, str):
        return parsed
    numbers, digest = parsed
    gen, n = numbers["g"], numbers["n"]
    body = raw[HEADER_SIZE:]
    if hashlib.sha256(body).hexdigest() != digest:
        return "payload checksum mismatch (torn write)"
    if numbers["d"] != position:
        return f"written for disk {numbers['d']}, found on disk {position}"
    if numbers["i"] != index:
        return f"header says index {numbers['i']}"
    if n <= 0 or (blocks is not None and n != blocks):
        return f"header says {n} blocks, expected {blocks}"
    if gen <= 0 or (gen - 1) % n != index:
        return f"generation {gen} does not map to block {index}"
    if body != payload(gen, position, index):
        return "payload does not match its generation"
    return gen, n


def _region_size(fd: int, position: int) -> int:
    """N from the first well-formed block (0: none found among the first blocks)."""
    for index in range(MAX_SCAN_BLOCKS):
        raw = os.pread(fd, BLOCK_SIZE, index * BLOCK_SIZE)
        if not raw:
            break
        result = _check_block(raw, position, index, None)
        if isinstance(result, tuple) and result[1]:
            return result[1]
    return 0


def verify_disk(path: str | Path, position: int = 0) -> DiskReport:
    """Rules 1 and 2 for one disk at ``position`` in its instance."""
    report = DiskReport(path=str(path), position=position)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        report.errors.append(f"cannot open: {err.strerror}")
        return report
    try:
        blocks = _region_size(fd, position)
        scan = blocks or MAX_SCAN_BLOCKS
        gens: list[int] = []
        for index in range(scan):
            raw = os.pread(fd, BLOCK_SIZE, index * BLOCK_SIZE)
            if not raw:
                if blocks:
                    report.errors.append(f"disk ends at block {index} of {blocks}")
                break
            result = _check_block(raw, position, index, blocks or None)
            if isinstance(result, str):
                report.errors.append(f"block {index}: {result}")
                gens.append(-1)
            else:
                gens.append(result[0])
    finally:
        os.close(fd)
    report.blocks = blocks
    valid = [g for g in gens if g > 0]
    report.written = len(valid)
    report.max_generation = max(valid, default=0)
    if blocks:
        for index, gen in enumerate(gens):
            want = expected_generation(report.max_generation, index, blocks)
            if gen >= 0 and gen != want:
                report.errors.append(
                    f"block {index}: generation {gen}, expected {want} at generation"
                    f" {report.max_generation} (lost or stale write)")
    del report.errors[MAX_ERRORS:]
    return report


def verify_guest_disks(paths: Sequence[str | Path]) -> GuestReport:
    """All three rules for the disks of one instance, in instance order."""
    report = GuestReport(disks=[verify_disk(p, i) for i, p in enumerate(paths)])
    if not report.disks:
        report.errors.append("no disks given")
        return report
    highest = [d.max_generation for d in report.disks]
    sizes = {d.blocks for d in report.disks if d.blocks}
    if len(sizes) > 1:
        report.errors.append(f"disks disagree on the number of blocks: {sorted(sizes)}")
    first = highest[0]
    report.generation = first
    report.disks_at_generation = next(
        (i for i, g in enumerate(highest) if g != first), len(highest))
    ordered = all(a >= b for a, b in itertools.pairwise(highest))
    if not ordered or highest[-1] < first - 1:
        report.errors.append(
            f"not one point in time: highest generations {highest} (disk 0 at {first};"
            f" each later disk must be at the same or one less, never rising)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ganeti.hypervisor.guest_verify",
        description="Check the disks of the tiny kvm guest for torn blocks and one point"
                    " in time across disks (disks in instance order)")
    parser.add_argument("disks", nargs="+", metavar="DISK")
    args = parser.parse_args(argv)
    report = verify_guest_disks(args.disks)
    json.dump(report.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if report.consistent else 1


if __name__ == "__main__":
    sys.exit(main())
