"""Exports to a compressing filesystem (btrfs with zstd), end to end through the CLI.

The target node's export dir compresses what is written into it (the
``btrfs.compression`` property, as doc/incremental-exports.md recommends);
the dumps stay plain raw files, and ``gnt-backup list -g`` shows what they
really occupy next to their apparent size.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import E2ECluster
from support.files import sha256_file, wait_for_the_next_second
from support.fsfixture import FsUnavailable, set_compression

from ganeti.backup import exportconf

pytestmark = pytest.mark.e2e

MIB = 1 << 20
# what compresses and what is shared does not depend on the size (btrfs compresses
# 128 KiB extents one by one); 80 MiB keeps the change below a round 5 %
DISK_MIB = 80
# repeated text, as logs or a freshly installed system compress
LINES = b"".join(b"%08d GET /index.html HTTP/1.1 200 4096 \"-\" \"curl/8.5\"\n" % n
                 for n in range(4096))


@pytest.fixture(scope="module")
def ccluster(reflink_fs: Path) -> Iterator[E2ECluster]:
    """A 3-node cluster on the btrfs test filesystem; node3's export dir compresses."""
    root = reflink_fs / f"ccluster-{os.getpid()}-{time.monotonic_ns()}"
    lc = E2ECluster.create_and_start(root)
    try:
        export_dir = lc.node("node3").paths.export_dir
        export_dir.mkdir(parents=True, exist_ok=True)
        try:
            set_compression(export_dir, "zstd")
        except FsUnavailable as err:
            pytest.skip(f"the test filesystem cannot compress: {err}")
        yield lc
    finally:
        lc.stop(log=lambda _m: None)
        shutil.rmtree(root, ignore_errors=True)   # 80 MiB disks: give the space back


def fill_with_text(path: Path) -> None:
    with open(path, "r+b") as handle:
        for _ in range(DISK_MIB * MIB // len(LINES)):
            handle.write(LINES)
        handle.write(LINES[:DISK_MIB * MIB % len(LINES)])
        handle.flush()
        os.fsync(handle.fileno())


def generations(cluster: E2ECluster, instance: str) -> list[dict[str, str]]:
    fields = ("node", "export", "generation", "size", "used", "unique", "shared")
    out = cluster.gnt("gnt-backup", "list", "-g", "--no-headers", "--separator", "|",
                      "-o", ",".join(fields)).stdout
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]
    return [r for r in rows if r["export"] == instance]


def add_text_instance(cluster: E2ECluster, name: str) -> Path:
    """A stopped instance on node2 whose disk is full of (very compressible) text."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                f"0:size={DISK_MIB}M", "--no-start", name)
    src = cluster.disk_path(name)
    fill_with_text(src)
    return src


def test_export_to_a_compressing_filesystem_is_stored_compressed(
        ccluster: E2ECluster) -> None:
    src = add_text_instance(ccluster, "cz1")
    want = sha256_file(src)
    # --compress only compresses the stream; the filesystem compresses the dump
    out = ccluster.gnt("gnt-backup", "export", "-n", "node3", "--compress", "zstd",
                       "cz1").stdout
    assert "disk/0 finished" in out, out
    exp = ccluster.node("node3").paths.export_dir / "cz1"
    info = exportconf.parse((exp / "config.ini").read_text())
    assert info.disks[0].dump is not None
    dump = exp / info.disks[0].dump
    # a plain raw file of the disk's size, byte for byte the disk
    assert dump.is_file() and not dump.is_symlink()
    assert dump.stat().st_size == DISK_MIB * MIB
    assert sha256_file(dump) == want
    # st_blocks reports the uncompressed size on btrfs; list -g shows the real one
    assert dump.stat().st_blocks * 512 >= DISK_MIB * MIB
    row, = generations(ccluster, "cz1")
    size, used = int(row["size"]), int(row["used"])
    assert row["node"] == "node3"
    assert size >= DISK_MIB * MIB
    assert 0 < used < size // 10, row
    assert int(row["unique"]) == used and int(row["shared"]) == 0
    print(f"\n{DISK_MIB} MiB text disk exported to compressing btrfs: list -g {row}")
    # the default -g table has the size columns, in human units
    table = ccluster.gnt("gnt-backup", "list", "-g", "--node", "node3").stdout
    header = table.splitlines()[0].split()
    assert header[header.index("Size"):header.index("Size") + 4] == [
        "Size", "Used", "Unique", "Shared"]
    human = ccluster.gnt("gnt-backup", "list", "-g", "--no-headers", "--node", "node3",
                         "-o", "export,size,used,unique,shared").stdout.split()
    assert human[:2] == ["cz1", f"{DISK_MIB}M"] and human[2] == human[3] and human[4] == "0B", \
        human
    assert human[2].endswith(("K", "M")), human
    used_mib = float(human[2][:-1]) / (1024 if human[2].endswith("K") else 1)
    assert used_mib < DISK_MIB / 10, human
    # the import reads the compressed dump back as the same bytes
    ccluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                 "--src-dir", "cz1", "--no-start", "cz1-copy")
    assert sha256_file(ccluster.disk_path("cz1-copy")) == want
    ccluster.gnt("gnt-instance", "remove", "-f", "cz1-copy")
    ccluster.gnt("gnt-instance", "remove", "-f", "cz1")



def test_incremental_generations_share_their_compressed_extents(
        ccluster: E2ECluster) -> None:
    src = add_text_instance(ccluster, "cz2")
    first_sha = sha256_file(src)
    ccluster.gnt("gnt-backup", "export", "-n", "node3", "--keep-generations", "cz2")
    first, = (r["generation"] for r in generations(ccluster, "cz2"))
    with open(src, "r+b") as handle:              # 4 MiB of the 80 change, incompressibly
        handle.seek(40 * MIB)
        handle.write(os.urandom(4 * MIB))
    wait_for_the_next_second()                    # generations are named by the second
    out = ccluster.gnt("gnt-backup", "export", "-n", "node3", "--keep-generations",
                       "cz2").stdout
    assert f"disk/0: 4.0M of {DISK_MIB}M changed (5.0%)" in out and f"base {first}" in out, out
    newest, older = generations(ccluster, "cz2")
    assert older["generation"] == first
    new_used, new_unique, new_shared = (int(newest[k]) for k in ("used", "unique", "shared"))
    old_used, old_unique, old_shared = (int(older[k]) for k in ("used", "unique", "shared"))
    print(f"\nincremental generations on compressing btrfs: {newest} {older}")
    assert new_used == new_unique + new_shared and old_used == old_unique + old_shared
    # the unchanged 76 MiB are stored once, compressed, and shared by both
    assert new_shared == old_shared and 0 < new_shared < DISK_MIB * MIB // 10
    # the new 4 MiB do not compress; the 4 MiB of text they replaced did
    assert 4 * MIB <= new_unique < 5 * MIB
    assert 0 < old_unique < MIB
    # the older generation still imports to its own data
    ccluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                 "--src-dir", f"cz2@{first}", "--no-start", "cz2-old")
    assert sha256_file(ccluster.disk_path("cz2-old")) == first_sha
    ccluster.gnt("gnt-instance", "remove", "-f", "cz2-old")
    ccluster.gnt("gnt-instance", "remove", "-f", "cz2")
