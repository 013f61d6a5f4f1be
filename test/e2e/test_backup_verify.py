"""gnt-backup verify end to end: real exports on a 3-node cluster, a flipped byte found
by disk and offset, the result in gnt-backup list -g, and a schedule that verifies.

The flipped byte is found both on the default tmp filesystem (no reflink) and on
the btrfs (or xfs) loop filesystem where generations can share extents.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.cluster import E2ECluster, output, reflink_cluster_fixture
from support.files import flip_byte

from ganeti.backup import blockindex
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import checksum_file

pytestmark = pytest.mark.e2e

MIB = 1 << 20


rcluster = reflink_cluster_fixture("verify")


@pytest.fixture(params=["cluster", "rcluster"])
def any_cluster(request: pytest.FixtureRequest) -> E2ECluster:
    found: E2ECluster = request.getfixturevalue(request.param)
    return found


def ensure_index(dump: Path) -> None:
    """The transfer receiver wrote the dump's block index, matching the dump."""
    index = blockindex.index_path(dump)
    assert index.is_file(), f"{index} is missing"
    assert blockindex.BlockIndex.read(index).checksum == checksum_file(dump)


def verified(cluster: E2ECluster, instance: str) -> dict[str, str]:
    """generation -> the verified column of gnt-backup list -g, on node3."""
    out = cluster.gnt("gnt-backup", "list", "-g", "--node", "node3", "--no-headers",
                      "--separator", "|", "-o", "export,generation,verified").stdout
    return {gen: value for name, gen, value in (line.split("|") for line in out.splitlines())
            if name == instance}


def test_verify_finds_a_flipped_byte_by_disk_and_offset(any_cluster: E2ECluster) -> None:
    cluster = any_cluster
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=12M",
                "--disk", "1:size=8M", "--no-start", "ver1")
    with open(cluster.disk_path("ver1", 0), "r+b") as handle:
        handle.write(os.urandom(3 * MIB))
        handle.seek(2 * BLOCK_SIZE)
        handle.write(os.urandom(MIB))            # block 2 holds data; block 1 partly
    with open(cluster.disk_path("ver1", 1), "r+b") as handle:
        handle.write(os.urandom(MIB))
    cluster.gnt("gnt-backup", "export", "-n", "node3", "ver1")
    exp = cluster.node("node3").paths.export_dir / "ver1"
    for dump in ("disk0.img", "disk1.img"):
        ensure_index(exp / dump)
    assert verified(cluster, "ver1") == {next(iter(verified(cluster, "ver1"))): "-"}

    proc = cluster.gnt("gnt-backup", "verify", "ver1")
    out = output(proc)
    (gen,) = verified(cluster, "ver1")
    label = f"ver1@{gen} on node3"
    # one line per disk as it is checked, with size, time and result
    assert f"{label}: disk/0: ok, 12M" in out and f"{label}: disk/1: ok, 8.0M" in out
    assert "block by block" in out
    assert verified(cluster, "ver1")[gen].startswith("ok 20")

    flip_byte(exp / "disk0.img", 2 * BLOCK_SIZE + 4097, 0x5A)
    proc = cluster.gnt("gnt-backup", "verify", "ver1", ok=False)
    out = output(proc)
    assert proc.returncode == 1, out
    assert f"{label}: disk/0: bad block at offset {2 * BLOCK_SIZE} (block 2, 4.0M)" in out
    assert f"{label}: disk/1: ok" in out
    assert verified(cluster, "ver1")[gen].startswith("BAD (1 problem) 20")

    # a newer export: the bad one is kept as an older generation, still known bad; the
    # newest verifies fine on its own, a verify of everything still fails
    cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node3", "ver1")
    for dump in ("disk0.img", "disk1.img"):
        ensure_index(exp / dump)
    newest = next(g for g in verified(cluster, "ver1") if g != gen)
    cluster.gnt("gnt-backup", "verify", "--newest", "ver1")
    states = verified(cluster, "ver1")
    assert states[gen].startswith("BAD") and states[newest].startswith("ok")
    proc = cluster.gnt("gnt-backup", "verify", ok=False)
    assert proc.returncode == 1 and f"ver1@{gen} on node3: BAD" in proc.stdout
    assert f"ver1@{newest} on node3: BAD" not in proc.stdout

    # without its index the dump is checked by checksum only, and the failure still found
    blockindex.index_path(exp / "disk0.img").unlink()
    flip_byte(exp / "disk0.img", 5, 0x5A)
    proc = cluster.gnt("gnt-backup", "verify", f"ver1@{newest}", ok=False)
    out = output(proc)
    assert proc.returncode == 1 and "bad blocks cannot be located" in out
    assert "disk/0: disk0.img: its checksum" in out

    # a generation that does not exist is refused naming it, nothing checked
    proc = cluster.gnt("gnt-backup", "verify", "ver1@20000101T000000Z", ok=False)
    assert proc.returncode != 0 and "ver1@20000101T000000Z" in output(proc)

    cluster.gnt("gnt-instance", "remove", "-f", "ver1")
    cluster.gnt("gnt-backup", "remove", "--generation", gen, "ver1")
    cluster.gnt("gnt-backup", "remove", "ver1")


def test_schedule_verifies_what_it_exported(cluster: E2ECluster) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", "ver2")
    with open(cluster.disk_path("ver2"), "r+b") as handle:
        handle.write(os.urandom(MIB))
    cluster.gnt("gnt-backup", "schedule", "add", "checked", "--instances", "ver2", "-n",
                "node3", "--cron", "@daily", "--verify")
    out = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "-o", "name,verify",
                      "checked").stdout
    assert out.split() == ["checked", "Y"]
    proc = cluster.gnt("gnt-backup", "schedule", "run-now", "checked")
    assert "OK        checked ver2 job" in proc.stdout
    (state,) = verified(cluster, "ver2").values()
    assert state.startswith("ok 20")
    cluster.gnt("gnt-backup", "schedule", "modify", "checked", "--verify", "no")
    out = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "-o", "verify",
                      "checked").stdout
    assert out.split() == ["N"]
    cluster.gnt("gnt-backup", "schedule", "remove", "checked")
    cluster.gnt("gnt-instance", "remove", "-f", "ver2")
    cluster.gnt("gnt-backup", "remove", "ver2")
