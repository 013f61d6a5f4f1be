"""Incremental exports against a full export of the same disk, in the same run.

A real 3-node loopback cluster on a btrfs loop filesystem (reflink: the
primary keeps an export base, the target clones the base dump).  A stopped
instance with a disk full of data (4 GiB by default) on node2 is exported to
node3 with ``gnt-backup export --keep-generations``:

1. a full export (the baseline of every ratio);
2. 1 % of the disk changed as one contiguous write, exported again
   (extents: only the changed blocks are read);
3. 1 % changed as scattered 4 KiB writes (nearly every 4 MiB block touched);
4. the contiguous change again without the primary's export base (hashes:
   every block is read, only the changed ones are sent);
5. ten generations with 1 % (contiguous, at random offsets) changed each:
   the target's usage against ten full copies;
6. import of the newest incremental generation against the full one (cold
   page cache, interleaved runs, with the extent count of both dumps: the
   incremental one is a reflink clone with the changes written into it).

Per export: wall time of the CLI, bytes read on the source (the ``rchar``
of node2's node daemon), bytes sent (the job log) and bytes newly allocated
on the target (physical extents of the instance's dumps on node3 not used by
them before, from FIEMAP).  Goals (the issue's): contiguous change <= 10 %
of the full export's time and bytes sent, bytes read <= 2 % of the disk; ten
generations <= 1.3x one full copy plus the changed bytes.

Run: .venv/bin/python test/bench/bench_incremental.py [--size-mib 4096] [--tmpdir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/, for support.*

from support.fsfixture import FsUnavailable, mount_reflink_fs

from ganeti import config_journal, constants, daemon
from ganeti.storage import fiemap
from ganeti.tools.local_cluster import LocalCluster, random_subnet

MIB = 1024 * 1024
PAGE = 4096
_UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_CHANGED_RE = re.compile(r"disk/0: \S+ of \S+ changed \([\d.]+%\), read (\S+), sent (\S+)"
                         r" in [\d.]+s, base \S+ \((\w+)\)")
_FULL_RE = re.compile(r"disk/0 finished: (\S+) in")


def _bytes(text: str) -> int:
    return int(float(text[:-1]) * _UNITS[text[-1]])


@dataclass
class Run:
    label: str
    seconds: float
    read: int
    sent: int
    allocated: int
    mode: str


class Bench:
    def __init__(self, cluster: LocalCluster, size: int) -> None:
        self.cluster = cluster
        self.size = size
        self.src, self.dst = cluster.nodes[1], cluster.nodes[2]
        self.disk = Path()
        self.changed_total = 0

    def gnt(self, *argv: str) -> str:
        proc = self.cluster.gnt(*argv, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout + proc.stderr

    def add_instance(self) -> None:
        self.gnt("gnt-instance", "add", "-t", "file", "-n", self.src.name, "--disk",
                 f"0:size={self.size // MIB}M", "--no-start", "inc")
        data = config_journal.load(self.cluster.master.paths.cluster_conf_file)[0]
        inst = next(i for i in data["instances"].values() if i["name"] == "inc")
        self.disk = Path(inst["disks"][0]["logical_id"][1])
        pattern = bytearray(os.urandom(64 * MIB))
        with open(self.disk, "r+b") as handle:
            for offset in range(0, self.size, len(pattern)):
                pattern[:8] = offset.to_bytes(8, "big")   # no two chunks alike
                handle.write(pattern[:self.size - offset])
            os.fsync(handle.fileno())

    def _rchar(self) -> int:
        pid = daemon.read_pid(self.src.paths.pid_file(constants.NODED))
        with open(f"/proc/{pid}/io") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("rchar"))

    def _dumps(self) -> list[Path]:
        base = self.dst.paths.export_dir
        return sorted([*base.glob("inc/disk0.img"),
                       *base.glob(".generations/inc/*/disk0.img")])

    def _physical(self) -> set[tuple[int, int]]:
        """Physical (start, end) of every extent of the instance's dumps on the target."""
        return {(e.physical, e.physical + e.length) for dump in self._dumps()
                for e in fiemap.extents(dump)}

    @staticmethod
    def _union(ranges: set[tuple[int, int]]) -> int:
        total, end = 0, -1
        for start, stop in sorted(ranges):
            if stop <= end:
                continue
            total += stop - max(start, end)
            end = stop
        return total

    def usage(self) -> int:
        return self._union(self._physical())

    def export(self, label: str, *extra: str) -> Run:
        os.sync()
        before_alloc, rchar = self.usage(), self._rchar()
        start = time.monotonic()
        out = self.gnt("gnt-backup", "export", "-n", self.dst.name, "--keep-generations",
                       *extra, "inc")
        seconds = time.monotonic() - start
        read = self._rchar() - rchar
        allocated = self.usage() - before_alloc
        match = _CHANGED_RE.search(out)
        if match:
            return Run(label, seconds, read, _bytes(match.group(2)), allocated,
                       match.group(3))
        full = _FULL_RE.search(out)
        if not full:
            raise RuntimeError(f"no transfer line in the job log:\n{out}")
        return Run(label, seconds, read, _bytes(full.group(1)), allocated, "full")

    def change_contiguous(self, nbytes: int, offset: int | None = None) -> None:
        if offset is None:
            offset = random.randrange(0, (self.size - nbytes) // PAGE) * PAGE
        with open(self.disk, "r+b") as handle:
            handle.seek(offset)
            handle.write(os.urandom(nbytes))
            os.fsync(handle.fileno())
        self.changed_total += nbytes

    def change_scattered(self, nbytes: int) -> None:
        pages = random.sample(range(self.size // PAGE), nbytes // PAGE)
        with open(self.disk, "r+b") as handle:
            for page in pages:
                os.pwrite(handle.fileno(), os.urandom(PAGE), page * PAGE)
            os.fsync(handle.fileno())
        self.changed_total += nbytes

    def drop_base(self) -> None:
        self.disk.with_name(self.disk.name + ".snap-backup-base").unlink()

    def import_time(self, generation: str, name: str) -> float:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("1")
        start = time.monotonic()
        self.gnt("gnt-backup", "import", "-n", self.src.name, "--src-node", self.dst.name,
                 "--src-dir", f"inc@{generation}", "--no-start", name)
        seconds = time.monotonic() - start
        self.gnt("gnt-instance", "remove", "-f", name)
        return seconds

    def dump_of(self, generation: str) -> Path:
        base = self.dst.paths.export_dir
        older = base / ".generations" / "inc" / generation / "disk0.img"
        return older if older.exists() else base / "inc" / "disk0.img"

    def generations(self) -> list[str]:
        out = self.gnt("gnt-backup", "list", "-g", "--no-headers", "--separator", "|",
                       "-o", "export,generation")
        return sorted(g for inst, g in (line.split("|") for line in out.splitlines() if line)
                      if inst == "inc")


def _mib(n: float) -> str:
    return f"{n / MIB:,.1f} MiB"


def _runs(seconds: list[float]) -> str:
    return ", ".join(f"{value:.1f}s" for value in seconds)


def _report(full: Run, runs: list[Run], size: int) -> None:
    print(f"disk {_mib(size)}; full export: {full.seconds:.1f}s, read {_mib(full.read)},"
          f" sent {_mib(full.sent)}, allocated {_mib(full.allocated)}")
    print(f"{'export':34} {'mode':8} {'time':>7} {'read':>8} {'sent':>8} {'alloc':>8}"
          f" {'read/disk':>9}")
    for run in runs:
        print(f"{run.label:34} {run.mode:8} {run.seconds / full.seconds:7.3f}"
              f" {run.read / full.read:8.4f} {run.sent / full.sent:8.4f}"
              f" {run.allocated / max(1, full.allocated):8.4f} {run.read / size:9.4f}"
              f"   ({run.seconds:.1f}s, read {_mib(run.read)}, sent {_mib(run.sent)},"
              f" new {_mib(run.allocated)})")
    print("(ratios against the full export; read/disk: bytes read over the disk size)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=4096)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--import-runs", type=int, default=3)
    parser.add_argument("--tmpdir", default=None)
    opts = parser.parse_args()
    size = opts.size_mib * MIB
    change = size // 100 // PAGE * PAGE
    tmp = Path(tempfile.mkdtemp(prefix="bench-incremental-", dir=opts.tmpdir))
    try:
        mnt, unmount = mount_reflink_fs(tmp / "fs", size=4 * size + 4096 * MIB,
                                        fstypes=("btrfs",))
    except FsUnavailable as err:
        print(f"skipped: {err}")
        return 0
    cluster = LocalCluster.create(mnt / "cluster", 3, subnet=random_subnet())
    try:
        cluster.start(log=lambda _m: None)
        bench = Bench(cluster, size)
        bench.add_instance()
        full = bench.export("full (first)")
        runs = []
        bench.change_contiguous(change)
        runs.append(bench.export("1% contiguous"))
        bench.change_scattered(change)
        runs.append(bench.export("1% scattered 4 KiB writes"))
        bench.change_contiguous(change)
        bench.drop_base()
        runs.append(bench.export("1% contiguous, no base (hashes)"))
        runs.append(bench.export("nothing changed"))
        _report(full, runs, size)

        # ten generations of 1 % each, on top of what is there: usage of all of them
        before = bench.usage()
        bench.changed_total = 0
        for _ in range(opts.generations):
            bench.change_contiguous(change)
            bench.export("generation")
        total = bench.usage()
        kept = len(bench.generations())
        print(f"\n{opts.generations} more generations of 1% each ({kept} kept in all):"
              f" target usage {_mib(total)}, of which the new ones {_mib(total - before)}")
        print(f"  against one full copy plus the changed bytes"
              f" ({_mib(full.allocated + bench.changed_total)}):"
              f" {(total - before + full.allocated) / (full.allocated + bench.changed_total):.3f}x"
              " (goal <= 1.3x)")
        print(f"  against {opts.generations} full copies"
              f" ({_mib(opts.generations * full.allocated)}):"
              f" {(total - before + full.allocated) / (opts.generations * full.allocated):.3f}x")
        gens = bench.generations()
        firsts, lasts = [], []
        for _ in range(opts.import_runs):           # interleaved: load hits both alike
            firsts.append(bench.import_time(gens[0], "imp1"))
            lasts.append(bench.import_time(gens[-1], "imp2"))
        extents = [len(fiemap.extents(bench.dump_of(g))) for g in (gens[0], gens[-1])]
        print(f"\nimport (cold cache, best of {opts.import_runs}) of the first, full"
              f" generation: {min(firsts):.1f}s ({extents[0]} extents); of the newest,"
              f" incremental one: {min(lasts):.1f}s ({extents[1]} extents); ratio"
              f" {min(lasts) / min(firsts):.2f} (runs: {_runs(firsts)} / {_runs(lasts)})")
    finally:
        cluster.stop(log=lambda _m: None)
        unmount()
    return 0


if __name__ == "__main__":
    sys.exit(main())
