"""Sparse copy (SEEK_DATA/SEEK_HOLE) versus a naive full read/write copy.

Usage: bench_extents.py [--size-gib 4] [--data-mib 64] [--dir /tmp] [--no-fsync]

Both copies run in the same process on the same source file, so the printed
ratio compares like with like on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ganeti.storage import MIB, allocated_bytes, copy_sparse, open_reader, open_writer

CHUNK = 4 * MIB


def make_source(path: Path, size: int, data: int) -> None:
    """``data`` bytes of random 1 MiB regions spread evenly over ``size`` bytes."""
    regions = data // MIB
    stride = size // regions
    block = os.urandom(MIB)
    with open_writer(path, size) as writer:
        for n in range(regions):
            writer.write_at(n * stride, block)


def naive_copy(src: Path, dst: Path, fsync: bool) -> int:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        while got := fin.readinto(buf):
            fout.write(view[:got])
            total += got
        if fsync:
            os.fsync(fout.fileno())
    return total


def sparse_copy(src: Path, dst: Path, fsync: bool) -> int:
    with open_reader(src) as reader:
        writer = open_writer(dst, reader.size)
        try:
            copied = copy_sparse(reader, writer)
            if fsync:
                writer.fsync()
        finally:
            writer.close()
    return copied


def timed(label: str, fn: Callable[[Path, Path, bool], int], src: Path, dst: Path,
          fsync: bool) -> float:
    start = time.perf_counter()
    moved = fn(src, dst, fsync)
    elapsed = time.perf_counter() - start
    print(f"{label:>12}: {elapsed:8.3f} s, {moved / MIB:9.1f} MiB read,"
          f" {moved / MIB / elapsed:9.1f} MiB/s")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=4.0)
    parser.add_argument("--data-mib", type=int, default=64)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    size = int(args.size_gib * 1024 * MIB)
    fsync = not args.no_fsync
    work = Path(tempfile.mkdtemp(prefix="bench-extents-", dir=args.dir))
    try:
        src = work / "src.img"
        make_source(src, size, args.data_mib * MIB)
        print(f"source: {size / 1024 / MIB:.1f} GiB, {args.data_mib} MiB data,"
              f" fsync={'yes' if fsync else 'no'}, dir={args.dir}")
        t_sparse = timed("sparse copy", sparse_copy, src, work / "sparse.img", fsync)
        t_naive = timed("naive copy", naive_copy, src, work / "naive.img", fsync)
        print(f"allocated: source {allocated_bytes(src) / MIB:.1f} MiB, sparse copy"
              f" {allocated_bytes(work / 'sparse.img') / MIB:.1f} MiB, naive copy"
              f" {allocated_bytes(work / 'naive.img') / MIB:.1f} MiB")
        with open_reader(src) as a, open_reader(work / "sparse.img") as b:
            for offset, length in a.extents(chunk=CHUNK):
                assert a.read(offset, length) == b.read(offset, length), "copy differs"
        print(f"speed-up: sparse copy is {t_naive / t_sparse:.1f}x faster than naive")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
