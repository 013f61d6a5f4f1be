"""Incremental exports end to end through the CLI (doc/incremental-exports.md).

Both on the reflink loop filesystem (``rcluster``: the primary keeps an export
base and compares extents, the target clones the base dump) and on a plain
filesystem (``cluster``: the sender hashes blocks, the target copies the base
locally).  Every generation must import back to exactly the data it was taken
from, whatever happened to the exports after or around it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import E2ECluster, reflink_cluster_fixture
from support.files import flip_byte, sha256_file

from ganeti.backup import blockindex
from ganeti.hypervisor import guest_sim
from ganeti.storage import fiemap

pytestmark = pytest.mark.e2e

MIB = 1 << 20
DISK_MIB = 64
# "disk/0: 5.0M of 64M changed (7.8%), read 8.0M, sent 5.0M in 0.1s, base 2026...Z (extents)"
CHANGED_RE = re.compile(r"disk/(\d+): (\S+) of (\S+) changed \(([\d.]+)%\), read (\S+),"
                        r" sent (\S+) in [\d.]+s, base (\S+) \((\w+)\)")


rcluster = reflink_cluster_fixture("incr")


@pytest.fixture(autouse=True)
def _tidy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Remove the test's instances and exports: the loop filesystem is small."""
    yield
    for name in ("rcluster", "cluster"):
        if name not in request.fixturenames:
            continue
        lc: E2ECluster = request.getfixturevalue(name)
        listed = lc.gnt("gnt-instance", "list", "--no-headers", "-o", "name", ok=False)
        for inst in listed.stdout.split():
            lc.gnt("gnt-instance", "remove", "-f", inst, ok=False)
        for node in lc.nodes:
            base = node.paths.export_dir
            for path in [*base.glob("inc*"), *base.glob("live*"),
                         *base.glob(".generations/*")]:
                shutil.rmtree(path, ignore_errors=True)


def add_stopped(cluster: E2ECluster, name: str, size_mib: int = DISK_MIB) -> Path:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                f"0:size={size_mib}M", "--no-start", name)
    disk = cluster.disk_path(name)
    with open(disk, "r+b") as handle:           # 3/4 data, the rest holes
        handle.write(os.urandom(size_mib * MIB * 3 // 4))
    return disk


def write_at(disk: Path, offset: int, data: bytes) -> None:
    with open(disk, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)
        os.fsync(handle.fileno())


def export(cluster: E2ECluster, name: str, *extra: str, ok: bool = True
           ) -> subprocess.CompletedProcess[str]:
    return cluster.gnt("gnt-backup", "export", "-n", "node3", "--keep-generations", *extra,
                       name, ok=ok)


def changed(out: str) -> dict[int, tuple[str, str, str]]:
    """disk index -> (sent, base, mode) of the job log's incremental lines."""
    return {int(m.group(1)): (m.group(6), m.group(7), m.group(8))
            for m in CHANGED_RE.finditer(out)}


def changed_bytes(out: str) -> int:
    match = CHANGED_RE.search(out)
    assert match, out
    return _bytes(match.group(2))


def generations(cluster: E2ECluster, name: str) -> list[str]:
    """Generation names on node3, oldest first."""
    out = cluster.gnt("gnt-backup", "list", "-g", "--no-headers", "--separator", "|",
                      "-o", "node,export,generation").stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    return sorted(gen for node, inst, gen in rows if node == "node3" and inst == name)


def gen_dir(cluster: E2ECluster, name: str, generation: str) -> Path:
    base = cluster.node("node3").paths.export_dir
    older = base / ".generations" / name / generation
    return older if older.is_dir() else base / name


def dump_of(cluster: E2ECluster, name: str, generation: str) -> Path:
    return gen_dir(cluster, name, generation) / "disk0.img"


def import_sha(cluster: E2ECluster, name: str, generation: str, new_name: str) -> str:
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3", "--src-dir",
                f"{name}@{generation}", "--no-start", new_name)
    digest = sha256_file(cluster.disk_path(new_name))
    cluster.gnt("gnt-instance", "remove", "-f", new_name)
    return digest


def shared_bytes(a: Path, b: Path) -> int:
    """Bytes of ``b`` stored in the same physical extents as in ``a``."""
    spans = {(e.physical - e.logical, e.logical, e.length) for e in fiemap.extents(a)}
    total = 0
    for ext in fiemap.extents(b):
        for delta, logical, length in spans:
            if ext.physical - ext.logical != delta:
                continue
            lo, hi = max(logical, ext.logical), min(logical + length,
                                                    ext.logical + ext.length)
            total += max(0, hi - lo)
    return total


def run_generations(cluster: E2ECluster, name: str, mode: str) -> None:
    disk = add_stopped(cluster, name)
    shas = [sha256_file(disk)]
    out = export(cluster, name).stdout
    assert "disk/0: exporting in full: this is the first export" in out
    assert not changed(out)
    # a contiguous 5 MiB change, scattered pages, and a block that becomes zeros
    write_at(disk, 20 * MIB + 123, os.urandom(5 * MIB))
    for page in range(8):
        write_at(disk, (40 + page * 2) * MIB + 4096 * page, os.urandom(4096))
    write_at(disk, 4 * MIB, bytes(4 * MIB))
    shas.append(sha256_file(disk))
    out = export(cluster, name).stdout
    first, second = generations(cluster, name)
    sent, base, seen_mode = changed(out)[0]
    assert (base, seen_mode) == (first, mode)
    # 5 MiB + 8 pages + one zeroed block; hashing sends the whole changed blocks
    limit = 10 * MIB if mode == "extents" else 28 * MIB
    assert _bytes(sent) <= limit, out
    newest = dump_of(cluster, name, second)
    assert sha256_file(newest) == shas[1]
    index = blockindex.BlockIndex.read(blockindex.index_path(newest))
    assert index.base == first
    # the zeroed block is a hole again
    with open(newest, "rb") as handle:
        assert os.lseek(handle.fileno(), 4 * MIB, os.SEEK_DATA) >= 8 * MIB
    # a third generation with nothing changed sends nothing but the block digests
    shas.append(shas[-1])
    out = export(cluster, name).stdout
    assert changed_bytes(out) == 0 and _bytes(changed(out)[0][0]) < 4096, out
    gens = generations(cluster, name)
    assert len(gens) == 3
    for idx, gen in enumerate(gens):
        assert sha256_file(dump_of(cluster, name, gen)) == shas[idx]
        assert import_sha(cluster, name, gen, f"{name}-r{idx}") == shas[idx]


def _bytes(text: str) -> int:
    units = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(text[:-1]) * units[text[-1]])


# --- reflink: extents on the primary, clones on the target -----------------------------


def test_generations_on_reflink_share_data_and_import_identically(rcluster: E2ECluster
                                                                    ) -> None:
    run_generations(rcluster, "inc1", "extents")
    gens = generations(rcluster, "inc1")
    first, second = dump_of(rcluster, "inc1", gens[0]), dump_of(rcluster, "inc1", gens[1])
    # the second generation shares nearly all of its data with the first
    assert shared_bytes(first, second) >= 30 * MIB
    # the primary keeps the base snapshot; no other snapshot is left
    snaps = sorted(p.name for p in rcluster.disk_path("inc1").parent.iterdir()
                   if ".snap-" in p.name)
    assert len(snaps) == 1 and snaps[0].endswith(".snap-backup-base"), snaps


def test_pruning_a_middle_generation_keeps_the_later_ones(rcluster: E2ECluster) -> None:
    disk = add_stopped(rcluster, "inc2")
    export(rcluster, "inc2")
    write_at(disk, 8 * MIB, os.urandom(MIB))
    export(rcluster, "inc2")
    write_at(disk, 30 * MIB, os.urandom(MIB))
    export(rcluster, "inc2")
    gens = generations(rcluster, "inc2")
    before = {gen: sha256_file(dump_of(rcluster, "inc2", gen)) for gen in gens}
    rcluster.gnt("gnt-backup", "remove", f"inc2@{gens[1]}")
    assert generations(rcluster, "inc2") == [gens[0], gens[2]]
    for gen in (gens[0], gens[2]):
        assert sha256_file(dump_of(rcluster, "inc2", gen)) == before[gen]
    # and the next export still builds on the newest one
    write_at(disk, 50 * MIB, os.urandom(MIB))
    out = export(rcluster, "inc2").stdout
    assert changed(out)[0][1] == gens[2]
    assert sha256_file(dump_of(rcluster, "inc2", generations(rcluster, "inc2")[-1])) == \
        sha256_file(disk)


def test_failed_incremental_exports_leave_every_generation_intact(rcluster: E2ECluster
                                                                  ) -> None:
    disk = add_stopped(rcluster, "inc3")
    export(rcluster, "inc3")
    write_at(disk, 12 * MIB, os.urandom(2 * MIB))
    export(rcluster, "inc3")
    gens = generations(rcluster, "inc3")
    before = {gen: sha256_file(dump_of(rcluster, "inc3", gen)) for gen in gens}
    base_snap = disk.with_name(disk.name + ".snap-backup-base")
    base_before = sha256_file(base_snap)
    write_at(disk, 33 * MIB, os.urandom(3 * MIB))
    node3 = rcluster.node("node3")
    # 1. vetoed by a pre hook, before anything is copied
    hook_dir = node3.paths.hooks_dir / "instance-export-pre.d"
    hook_dir.mkdir(parents=True, exist_ok=True)
    hook = hook_dir / "10-veto"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    try:
        assert export(rcluster, "inc3", ok=False).returncode != 0
    finally:
        hook.unlink()
    # 2. finalize fails: the generations dir cannot take the replaced export
    gen_root = node3.paths.export_dir / ".generations" / "inc3"
    subprocess.run(["chattr", "+i", str(gen_root)], check=True)
    try:
        proc = export(rcluster, "inc3", ok=False)
        assert proc.returncode != 0
    finally:
        subprocess.run(["chattr", "-i", str(gen_root)], check=True)
    assert not (node3.paths.export_dir / ".staging" / "inc3").exists()
    # 3. the target's node daemon dies in the middle of the (throttled) copy
    job = rcluster.gnt("gnt-backup", "export", "--submit", "-n", "node3",
                       "--keep-generations", "--bwlimit", "512", "inc3").stdout.split()[-1]
    try:
        rcluster.kill_noded_when("node3",
                                 node3.paths.export_dir / ".staging" / "inc3" / "disk0.img")
        assert rcluster.gnt("gnt-job", "watch", job, ok=False).returncode != 0
    finally:
        rcluster.start(log=lambda _m: None)
    assert generations(rcluster, "inc3") == gens
    for gen in gens:
        assert sha256_file(dump_of(rcluster, "inc3", gen)) == before[gen]
    assert sha256_file(base_snap) == base_before
    leftovers = [p.name for p in disk.parent.iterdir() if ".snap-export-" in p.name]
    assert leftovers == []
    # the next export works, incrementally, from the same base
    out = export(rcluster, "inc3").stdout
    assert changed(out)[0][1:] == (gens[-1], "extents")
    assert sha256_file(dump_of(rcluster, "inc3", generations(rcluster, "inc3")[-1])) == \
        sha256_file(disk)


def test_corrupted_base_makes_the_next_export_full(rcluster: E2ECluster) -> None:
    disk = add_stopped(rcluster, "inc4")
    export(rcluster, "inc4")
    gen = generations(rcluster, "inc4")[-1]
    dump = dump_of(rcluster, "inc4", gen)
    # bit rot in the first data block of the base dump: the spot check reads it
    flip_byte(dump, 100)
    write_at(disk, 40 * MIB, os.urandom(MIB))
    out = export(rcluster, "inc4").stdout
    assert "disk/0: exporting in full:" in out and "spot check" in out, out
    assert not changed(out)
    newest = dump_of(rcluster, "inc4", generations(rcluster, "inc4")[-1])
    assert sha256_file(newest) == sha256_file(disk)
    # a damaged index: full again, saying so
    index = blockindex.index_path(newest)
    index.write_bytes(index.read_bytes()[:-5])
    out = export(rcluster, "inc4").stdout
    assert "disk/0: exporting in full:" in out and "block index" in out, out
    assert sha256_file(dump_of(rcluster, "inc4", generations(rcluster, "inc4")[-1])) == \
        sha256_file(disk)


def test_full_option_and_grown_disk_export_in_full(rcluster: E2ECluster) -> None:
    disk = add_stopped(rcluster, "inc5", size_mib=16)
    export(rcluster, "inc5")
    out = export(rcluster, "inc5", "--full").stdout
    assert "Exporting every disk in full (--full)" in out and not changed(out)
    # the instance comes back with a bigger disk (its exports stay)
    rcluster.gnt("gnt-instance", "remove", "-f", "inc5")
    disk = add_stopped(rcluster, "inc5", size_mib=24)
    out = export(rcluster, "inc5").stdout
    assert "disk/0: exporting in full: the disk's size changed" in out, out
    assert sha256_file(dump_of(rcluster, "inc5", generations(rcluster, "inc5")[-1])) == \
        sha256_file(disk)


def test_live_incremental_export_of_a_running_instance(rcluster: E2ECluster) -> None:
    rcluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=16M",
                 "-H", "process:write_interval_ms=2,blocks=256", "live9")
    rcluster.gnt("gnt-backup", "export", "-n", "node3", "--noshutdown", "live9")
    time.sleep(0.5)                               # the guest keeps writing
    out = rcluster.gnt("gnt-backup", "export", "-n", "node3", "--noshutdown",
                       "live9").stdout
    assert "Shutting down" not in out
    assert changed(out)[0][2] == "extents", out
    report = guest_sim.verify_disk(rcluster.node("node3").paths.export_dir / "live9"
                                   / "disk0.img")
    assert report.formatted and report.invalid_blocks == 0
    rcluster.gnt("gnt-instance", "remove", "-f", "live9")


# --- no reflink: hashes on the primary, local copies on the target ---------------------


def test_generations_without_reflink_hash_and_import_identically(cluster: E2ECluster
                                                                 ) -> None:
    run_generations(cluster, "inc6", "hash")
