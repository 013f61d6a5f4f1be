"""What ``gnt-backup list -g``'s usage accounting costs (ganeti.storage.usage).

Ten generations of one 1 GiB disk, as incremental exports leave them on a
reflink filesystem: generation 0 written in full, each later one a reflink
clone of the one before with 1% (one contiguous 10 MiB range) rewritten.
Measured on a btrfs of its own (a loop device) mounted with
``compress=zstd``, twice: incompressible data (btrfs stores it uncompressed,
in few large extents) and text (compressed in 128 KiB extents, 8192 per GiB).

Printed per case: the time of ``generation_usage`` over the 10 generations
(median of ``--runs``) with btrfs extent items (as root) and with FIEMAP
only, against the baseline of what listing cost before (one ``stat`` per
file, st_blocks), as a ratio; and the usage figures themselves.

Run as root: .venv/bin/python test/bench/bench_usage.py [--runs 5] [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.fsfixture import mount_reflink_fs

from ganeti.storage import reflink, usage

MIB = 1 << 20
GENERATIONS = 10
TEXT = b"".join(b"%08d GET /index.html HTTP/1.1 200 4096 \"-\" \"curl/8.5\"\n" % n
                for n in range(4096))


def _chunk(n: int, text: bool) -> bytes:
    if text:
        return ((b"%d" % n) + TEXT * (4 * MIB // len(TEXT) + 1))[:4 * MIB]
    return os.urandom(4 * MIB)


def _make(base: Path, size: int, text: bool) -> list[list[Path]]:
    gens = []
    prev: Path | None = None
    for g in range(GENERATIONS):
        gen_dir = base / f"gen{g}"
        gen_dir.mkdir()
        dump = gen_dir / "disk0.img"
        if prev is not None:
            reflink.clone_file(prev, dump)
        fd = os.open(dump, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            if prev is None:
                for n in range(size // (4 * MIB)):
                    os.pwrite(fd, _chunk(n, text), n * 4 * MIB)
            else:
                change = size // 100
                offset = (g * 7919 * MIB) % (size - change) // 4096 * 4096
                data = b"".join(_chunk(g * 1000 + k, text)
                                for k in range(-(-change // (4 * MIB))))
                os.pwrite(fd, data[:change], offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        (gen_dir / "config.ini").write_text(f"[export]\nversion = 0\ntimestamp = {g}\n")
        gens.append(usage.directory_files(gen_dir))
        prev = dump
    return gens


@contextmanager
def _fiemap_only() -> Iterator[None]:
    real = fcntl.ioctl

    def ioctl(fd: int, request: int, *args: Any) -> Any:
        if request == usage.BTRFS_IOC_TREE_SEARCH_V2:
            raise OSError(errno.EPERM, "Operation not permitted")
        return real(fd, request, *args)

    with mock.patch.object(fcntl, "ioctl", ioctl):
        yield


def _stat_baseline(gens: list[list[Path]]) -> list[tuple[int, int]]:
    return [(sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512
                                                       for p in files))
            for files in gens]


def _median(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _case(label: str, base: Path, size: int, text: bool, runs: int) -> None:
    gens = _make(base, size, text)
    base_t, old = _median(lambda: _stat_baseline(gens), runs)
    tree_t, uses = _median(lambda: usage.generation_usage(gens), runs)
    with _fiemap_only():
        fiemap_t, fuses = _median(lambda: usage.generation_usage(gens), runs)
    print(f"\n{label}: {GENERATIONS} generations of a {size // MIB} MiB disk, 1% changed each")
    print(f"  stat only (before):          {base_t * 1000:8.1f} ms")
    print(f"  usage, btrfs extent items:   {tree_t * 1000:8.1f} ms  ({tree_t / base_t:.0f}x)")
    print(f"  usage, FIEMAP only:          {fiemap_t * 1000:8.1f} ms  ({fiemap_t / base_t:.0f}x)")
    print("  gen  size MiB  st_blocks MiB  used MiB  unique MiB  shared MiB  (FIEMAP used)")
    for g, (use, fuse, (_size, blocks)) in enumerate(zip(uses, fuses, old, strict=True)):
        print(f"  {g:3d}  {use.size / MIB:8.1f}  {blocks / MIB:13.1f}  {use.used / MIB:8.2f}"
              f"  {use.unique / MIB:10.2f}  {use.shared / MIB:10.2f}  ({fuse.used / MIB:.2f})")
    total = sum(u.unique for u in uses)
    print(f"  sum of unique {total / MIB:.1f} MiB; st_blocks total"
          f" {sum(b for _s, b in old) / MIB:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="bench-usage-") as tmp:
        # the recommended export filesystem: btrfs mounted with compress=zstd
        mnt, cleanup = mount_reflink_fs(Path(tmp), size=3 * size + 1024 * MIB,
                                        fstypes=("btrfs",), options=("compress=zstd",))
        try:
            plain = mnt / "random"
            plain.mkdir()
            _case("btrfs compress=zstd, incompressible data (stored uncompressed)", plain,
                  size, False, args.runs)
            for g in range(GENERATIONS):
                for f in (plain / f"gen{g}").iterdir():
                    f.unlink()
            packed = mnt / "text"
            packed.mkdir()
            _case("btrfs compress=zstd, text", packed, size, True, args.runs)
        finally:
            cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
