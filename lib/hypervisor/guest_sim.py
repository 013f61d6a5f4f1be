"""Guest simulator: a long-running "virtual machine" that keeps writing its disks.

It stands in for a real guest wherever the cluster needs one that does I/O
(the ``process`` hypervisor, export and snapshot tests), and its disks can be
checked afterwards with :func:`verify_disk`.

Run as ``python -m ganeti.hypervisor.guest_sim --run-dir DIR --name NAME
[--disk PATH ...] [options]``; ``python -m ganeti.hypervisor.guest_sim verify
PATH...`` prints a JSON verify report per disk (exit 1 if one is inconsistent).
Behaviour:

* Every disk is opened read-write and locked with an exclusive ``flock``: a
  disk belongs to one guest at a time (a second guest on it fails to start).
* Disk layout, in 4 KiB blocks: block 0 is a superblock, blocks 1..N the data
  region, N = ``--blocks`` (capped to what fits in the disk).
* The superblock holds magic ``GNTSIMSB``, a version, flags (bit 0: clean
  shutdown), a generation, N, the block size, a timestamp, and a sha256 over
  those fields.  At startup the guest writes it "dirty", fsyncs, and only then
  reports ready; at a clean shutdown it writes it "clean" with the last
  generation written.
* Every ``--interval-ms`` the generation (a counter that keeps growing across
  restarts: it continues after the highest generation found on the disks)
  goes up by one and data block ``(generation - 1) % N`` of every disk is
  rewritten with one ``pwrite``: magic ``GNTSIMDB``, generation, block index
  and sha256 of the payload (little endian ``<8sQQ32s``, 56 bytes), then a
  4040-byte payload derived from (generation, index) with SHAKE-256.  A block
  whose checksum, index or payload does not match is torn or corrupt.
* Disks are fsynced about once a second; the status file (JSON: pid, state,
  generation, disks, memory, vcpus) is replaced atomically at most ten times
  a second and at exit.
* SIGTERM or SIGINT: finish the current block, fsync, write the clean marker,
  fsync, write the final status, exit 0.  ``--ignore-sigterm`` makes it ignore
  SIGTERM (to test forced kills).  SIGKILL leaves the superblock dirty.
* ``--ready-fd N``: write ``ready`` (or ``error: <reason>``) there once the
  disks are open and marked, then close it.  Startup failures exit 1.
* Memory and vcpus are only recorded in the status file.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

BLOCK_SIZE = 4096
DATA_MAGIC = b"GNTSIMDB"
SUPER_MAGIC = b"GNTSIMSB"
SUPER_VERSION = 1
FLAG_CLEAN = 1
DEFAULT_INTERVAL_MS = 20
DEFAULT_BLOCKS = 256

_HEADER = struct.Struct("<8sQQ32s")
PAYLOAD_SIZE = BLOCK_SIZE - _HEADER.size
_SUPER = struct.Struct("<8sIIQQQd")
_PAYLOAD_SEED = struct.Struct("<8sQQ")
_ZERO_BLOCK = bytes(BLOCK_SIZE)
_FSYNC_INTERVAL = 1.0
_STATUS_INTERVAL = 0.1
_VERIFY_CHUNK = 256

STATE_STARTING = "starting"
STATE_RUNNING = "running"
STATE_STOPPED = "stopped"


def payload(generation: int, index: int) -> bytes:
    """The data block payload for (generation, index)."""
    seed = _PAYLOAD_SEED.pack(b"GNTSIMPL", generation, index)
    return hashlib.shake_256(seed).digest(PAYLOAD_SIZE)


def encode_block(generation: int, index: int) -> bytes:
    body = payload(generation, index)
    return _HEADER.pack(DATA_MAGIC, generation, index, hashlib.sha256(body).digest()) + body


def encode_superblock(generation: int, nblocks: int, clean: bool) -> bytes:
    fields = _SUPER.pack(SUPER_MAGIC, SUPER_VERSION, FLAG_CLEAN if clean else 0, generation,
                         nblocks, BLOCK_SIZE, time.time())
    data = fields + hashlib.sha256(fields).digest()
    return data + bytes(BLOCK_SIZE - len(data))


@dataclass(frozen=True)
class Superblock:
    generation: int
    nblocks: int
    clean: bool


def decode_superblock(data: bytes) -> Superblock | None:
    if len(data) < _SUPER.size + 32:
        return None
    fields = data[:_SUPER.size]
    if hashlib.sha256(fields).digest() != data[_SUPER.size:_SUPER.size + 32]:
        return None
    magic, version, flags, generation, nblocks, block_size, _ = _SUPER.unpack(fields)
    if magic != SUPER_MAGIC or version != SUPER_VERSION or block_size != BLOCK_SIZE:
        return None
    return Superblock(generation=generation, nblocks=nblocks, clean=bool(flags & FLAG_CLEAN))


def classify_block(data: bytes, index: int) -> int | None:
    """Generation of a valid block at data ``index``, 0 if never written, None if bad."""
    if data == _ZERO_BLOCK:
        return 0
    if len(data) != BLOCK_SIZE:
        return None
    magic, generation, got_index, digest = _HEADER.unpack_from(data)
    body = data[_HEADER.size:]
    if (magic != DATA_MAGIC or got_index != index or generation < 1
            or hashlib.sha256(body).digest() != digest or body != payload(generation, index)):
        return None
    return int(generation)


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_disk` found; ``consistent`` is the one-line verdict."""

    path: str
    formatted: bool  # a valid superblock was found
    clean: bool  # the clean-shutdown marker is present
    clean_generation: int  # generation recorded in the superblock
    blocks: int  # size of the data region, in blocks
    valid_blocks: int
    invalid_blocks: int  # torn or corrupt blocks
    empty_blocks: int  # never written
    max_generation: int

    @property
    def consistent(self) -> bool:
        """No torn block, and after a clean stop nothing was written past the marker."""
        if self.invalid_blocks:
            return False
        return not self.clean or self.clean_generation == self.max_generation


def verify_disk(path: str | os.PathLike[str]) -> VerifyReport:
    """Check every block of a guest disk (or a copy or snapshot of one)."""
    with open(path, "rb") as handle:
        superblock = decode_superblock(handle.read(BLOCK_SIZE))
        if superblock is None:
            return VerifyReport(str(path), False, False, 0, 0, 0, 0, 0, 0)
        valid = invalid = empty = max_gen = 0
        index = 0
        while index < superblock.nblocks:
            count = min(_VERIFY_CHUNK, superblock.nblocks - index)
            chunk = handle.read(count * BLOCK_SIZE)
            for offset in range(count):
                generation = classify_block(
                    chunk[offset * BLOCK_SIZE:(offset + 1) * BLOCK_SIZE], index + offset)
                if generation is None:
                    invalid += 1
                elif generation == 0:
                    empty += 1
                else:
                    valid += 1
                    max_gen = max(max_gen, generation)
            index += count
    return VerifyReport(str(path), True, superblock.clean, superblock.generation,
                        superblock.nblocks, valid, invalid, empty, max_gen)


@dataclass
class GuestStatus:
    """Contents of the status file."""

    name: str
    pid: int
    state: str
    generation: int
    updated: float
    memory: int
    vcpus: int
    disks: list[str] = field(default_factory=list)


def read_status(path: str | os.PathLike[str]) -> GuestStatus | None:
    try:
        data = json.loads(Path(path).read_text())
        return GuestStatus(**data)
    except (OSError, ValueError, TypeError):
        return None


def _write_status(path: Path, status: GuestStatus) -> None:
    status.updated = time.time()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, path)


class StartupError(Exception):
    pass


@dataclass
class _Disk:
    path: str
    fd: int
    nblocks: int


def _open_disk(path: str, wanted_blocks: int) -> tuple[_Disk, int]:
    """Open, lock and scan a disk; returns it and the highest generation on it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise StartupError(f"cannot open disk {path}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"disk {path} is in use by another guest") from None
    size = os.lseek(fd, 0, os.SEEK_END)
    nblocks = min(wanted_blocks, size // BLOCK_SIZE - 1)
    if nblocks < 1:
        os.close(fd)
        raise StartupError(f"disk {path} is too small ({size} bytes)")
    highest = 0
    superblock = decode_superblock(os.pread(fd, BLOCK_SIZE, 0))
    if superblock is not None:
        highest = superblock.generation
    for index in range(nblocks):
        generation = classify_block(os.pread(fd, BLOCK_SIZE, (index + 1) * BLOCK_SIZE), index)
        highest = max(highest, generation or 0)
    return _Disk(path, fd, nblocks), highest


class Guest:
    """The simulator's main loop and its clean shutdown."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop_requested = False
        self.disks: list[_Disk] = []
        self.generation = 0
        self.interval = args.interval_ms / 1000.0
        self.status = GuestStatus(name=args.name, pid=os.getpid(), state=STATE_STARTING,
                                  generation=0, updated=0.0, memory=args.memory,
                                  vcpus=args.vcpus, disks=list(args.disk))
        self.status_file = Path(args.status_file) if args.status_file else None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.stop_requested = True

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        if self.args.ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def start(self) -> None:
        highest = 0
        for path in self.args.disk:
            disk, disk_highest = _open_disk(path, self.args.blocks)
            self.disks.append(disk)
            highest = max(highest, disk_highest)
        self.generation = highest
        for disk in self.disks:
            os.pwrite(disk.fd, encode_superblock(highest, disk.nblocks, clean=False), 0)
            os.fsync(disk.fd)
        self.status.state = STATE_RUNNING
        self.status.generation = self.generation
        self._save_status()

    def run(self) -> None:
        next_tick = time.monotonic()
        last_sync = last_status = next_tick
        while not self.stop_requested:
            self.generation += 1
            for disk in self.disks:
                index = (self.generation - 1) % disk.nblocks
                os.pwrite(disk.fd, encode_block(self.generation, index),
                          (index + 1) * BLOCK_SIZE)
            now = time.monotonic()
            if now - last_sync >= _FSYNC_INTERVAL:
                for disk in self.disks:
                    os.fsync(disk.fd)
                last_sync = now
            if now - last_status >= _STATUS_INTERVAL:
                self.status.generation = self.generation
                self._save_status()
                last_status = now
            next_tick = max(next_tick + self.interval, now)
            self._sleep(next_tick - time.monotonic())

    def shutdown(self) -> None:
        for disk in self.disks:
            os.fsync(disk.fd)
            os.pwrite(disk.fd, encode_superblock(self.generation, disk.nblocks, clean=True), 0)
            os.fsync(disk.fd)
            os.close(disk.fd)
        self.status.state = STATE_STOPPED
        self.status.generation = self.generation
        self._save_status()

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0 or self.stop_requested:
            return
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)

    def _save_status(self) -> None:
        if self.status_file is not None:
            _write_status(self.status_file, self.status)


def _report(fd: int | None, message: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, message.encode("utf-8", "replace"))
    with contextlib.suppress(OSError):
        os.close(fd)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="guest_sim", description="Simulated guest.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--run-dir", required=True,
                        help="the instance's runtime directory (identifies the process)")
    parser.add_argument("--disk", action="append", default=[])
    parser.add_argument("--status-file")
    parser.add_argument("--interval-ms", type=_positive, default=DEFAULT_INTERVAL_MS)
    parser.add_argument("--blocks", type=_positive, default=DEFAULT_BLOCKS)
    parser.add_argument("--memory", type=_positive, default=128)
    parser.add_argument("--vcpus", type=_positive, default=1)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--ready-fd", type=int)
    return parser.parse_args(argv)


def verify_main(paths: Sequence[str]) -> int:
    """``guest_sim verify PATH...``: print one JSON report per disk; 1 if any is bad."""
    status = 0
    for path in paths:
        try:
            report = verify_disk(path)
        except OSError as err:
            print(json.dumps({"path": path, "error": str(err)}))
            status = 1
            continue
        print(json.dumps({**asdict(report), "consistent": report.consistent}))
        if not report.consistent:
            status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    args = parse_args(argv)
    os.chdir("/")
    guest = Guest(args)
    guest.install_signals()
    try:
        guest.start()
    except (StartupError, OSError) as err:
        print(f"guest_sim {args.name}: startup failed: {err}", file=sys.stderr)
        _report(args.ready_fd, f"error: {err}")
        return 1
    _report(args.ready_fd, "ready")
    try:
        guest.run()
    except OSError as err:
        print(f"guest_sim {args.name}: I/O error, stopping uncleanly: {err}", file=sys.stderr)
        return 3
    guest.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
