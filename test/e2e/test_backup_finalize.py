"""Finalize as a transaction, end to end through gnt-backup on a 3-node cluster.

Issue 21 defect 1 (a keep-generations export deleted another node's newest
export), defect 2 (a failure after the swap deleted the previous export),
names create accepts (``inst.new``, 200 characters), stale leftovers in
``gnt-cluster verify``, and a half-done finalize the watcher recovers.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import E2ECluster
from support.files import wait_for_the_next_second

from ganeti.backend import NodeContext, RpcFail, export_layout
from ganeti.backend import export as ex
from ganeti.backup import exportconf
from ganeti.tools.local_cluster import SOURCE_TOP
from ganeti.transfer import checksum

pytestmark = pytest.mark.e2e

MIB = 1 << 20


def node_ctx(cluster: E2ECluster, name: str) -> NodeContext:
    return NodeContext(paths=cluster.node(name).paths)


def disk_file(cluster: E2ECluster, instance: str) -> Path:
    inst = cluster.instance_conf(instance)
    assert inst is not None, f"{instance} not in the configuration"
    return Path(inst["disks"][0]["logical_id"][1])


def add_instance(cluster: E2ECluster, name: str, marker: bytes) -> Path:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node1", "--disk", "0:size=2M",
                "--no-start", name)
    disk = disk_file(cluster, name)
    write(disk, marker)
    return disk


def write(disk: Path, marker: bytes) -> None:
    with open(disk, "r+b") as handle:
        handle.write(marker * (MIB // len(marker)))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exports(cluster: E2ECluster, node_name: str, instance: str) -> dict[str, str]:
    """{generation dir or "newest": sha256 of its dump}, each checked against config.ini."""
    base = cluster.node(node_name).paths.export_dir
    found = {}
    dirs = [("newest", base / instance)]
    gens = base / ".generations" / instance
    if gens.is_dir():
        dirs += [(p.name, p) for p in sorted(gens.iterdir()) if not p.name.startswith(".")]
    for label, path in dirs:
        if not (path / "config.ini").is_file():
            continue
        info = exportconf.parse((path / "config.ini").read_text())
        assert info.disks[0].dump is not None
        dump = path / info.disks[0].dump
        # the export's own record of its bytes (blake3 per 4 MiB) matches the dump
        assert info.disks[0].checksum and checksum.file_matches(dump, info.disks[0].checksum)
        found[label] = sha(dump)
    return found


def listing(cluster: E2ECluster, instance: str) -> list[tuple[str, str]]:
    out = cluster.gnt("gnt-backup", "list", "-g", "--no-headers", "--separator", "|",
                      "-o", "node,export,newest").stdout
    return sorted((n, newest) for n, export, newest in
                  (line.split("|") for line in out.splitlines()) if export == instance)


def test_keep_generations_never_removes_other_nodes_exports(cluster: E2ECluster) -> None:
    """Defect 1: two targets (two schedules, say) must not delete each other's newest."""
    disk = add_instance(cluster, "kg1", b"one!")
    cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node2", "kg1")
    one = sha(disk)
    write(disk, b"two!")
    cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node2", "kg1")
    two = sha(disk)
    write(disk, b"three")
    wait_for_the_next_second()  # export timestamps are seconds: node3's is the newest
    out = cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node3",
                      "kg1").stdout
    three = sha(disk)
    assert "Removed the older export" not in out
    on2 = exports(cluster, "node2", "kg1")
    assert on2["newest"] == two and sorted(on2.values()) == sorted([one, two])
    assert exports(cluster, "node3", "kg1") == {"newest": three}
    assert listing(cluster, "kg1") == [("node2", "N"), ("node2", "Y"), ("node3", "Y")]
    # an import by name takes the newest export of all nodes (node3's)
    out = cluster.gnt("gnt-backup", "import", "-n", "node2", "--src-dir", "kg1",
                      "--no-start", "kg1-copy").stdout
    assert sha(disk_file(cluster, "kg1-copy")) == three, out
    cluster.gnt("gnt-instance", "remove", "-f", "kg1-copy")
    # both nodes are in the export index: a plain export still replaces them all
    # (Ganeti's semantics) and says so
    out = cluster.gnt("gnt-backup", "export", "-n", "node1", "kg1").stdout
    assert "Removed the older export of kg1 on node2" in out
    assert "Removed the older export of kg1 on node3" in out
    assert not (cluster.node("node3").paths.export_dir / "kg1").exists()
    cluster.gnt("gnt-backup", "remove", "kg1")
    cluster.gnt("gnt-instance", "remove", "-f", "kg1")


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Directories made immutable (chattr +i) by a test, released afterwards."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@pytest.mark.parametrize("which", ["generations", "instance-generations"])
def test_unwritable_generations_dir_loses_nothing(cluster: E2ECluster, which: str,
                                                  immutable: list[Path]) -> None:
    """Defect 2: retiring the previous export fails after the swap."""
    name = f"im-{which[:4]}"
    disk = add_instance(cluster, name, b"old!")
    cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node2", name)
    before = exports(cluster, "node2", name)
    base = cluster.node("node2").paths.export_dir / ".generations"
    target = base if which == "generations" else base / name
    target.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["chattr", "+i", str(target)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"chattr +i does not work here: {made.stderr.strip()}")
    immutable.append(target)
    write(disk, b"new!")
    proc = cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node2", name,
                       ok=False)
    assert proc.returncode == 1
    assert "Export failed, errors in export finalization" in proc.stderr, proc.stderr
    assert exports(cluster, "node2", name) == before          # bytes and checksums
    assert "previous export is untouched" in proc.stdout + proc.stderr
    assert ex.export_leftovers(node_ctx(cluster, "node2")) == []
    subprocess.run(["chattr", "-i", str(target)], check=True)
    cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node2", name)
    after = exports(cluster, "node2", name)
    assert after["newest"] == sha(disk) and before["newest"] in after.values()
    cluster.gnt("gnt-backup", "remove", name)
    cluster.gnt("gnt-instance", "remove", "-f", name)


@pytest.mark.parametrize("name", ["inst.new", "x" * 196 + ".new"], ids=["inst.new", "200"])
def test_names_create_accepts_can_be_exported_and_imported(cluster: E2ECluster,
                                                           name: str) -> None:
    assert len(name) in (8, 200)
    disk = add_instance(cluster, name, b"name")
    for _ in range(2):      # the second export retires the first as a generation
        cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node3", name)
    assert len(exports(cluster, "node3", name)) == 2
    copy = name[:-4] + ".cpy"
    cluster.gnt("gnt-backup", "import", "-n", "node2", "--src-node", "node3", "--src-dir",
                name, "--no-start", copy)
    assert sha(disk_file(cluster, copy)) == sha(disk)
    cluster.gnt("gnt-instance", "remove", "-f", copy)
    cluster.gnt("gnt-backup", "remove", name)
    cluster.gnt("gnt-instance", "remove", "-f", name)


def test_verify_reports_leftovers_and_the_watcher_recovers_a_crashed_finalize(
        cluster: E2ECluster) -> None:
    disk = add_instance(cluster, "cr1", b"old!")
    cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node2", "cr1")
    before = exports(cluster, "node2", "cr1")
    # node2's own finalize code dies right after the swap (as a killed noded would)
    ctx = node_ctx(cluster, "node2")
    staging = ctx.paths.root / ex.export_prepare(ctx, "cr1").lstrip("/")
    (staging / "disk0.img").write_bytes(b"half-done" * 1000)
    conf = (cluster.node("node2").paths.export_dir / "cr1" / "config.ini").read_text()

    class Crash(BaseException):
        pass

    def crash_after_exchange(op: str, _paths: tuple[Path, ...]) -> None:
        if op == "fsync" and swapped:
            raise Crash
        if op == "exchange":
            swapped.append(True)

    swapped: list[bool] = []
    export_layout.FAULT_HOOK = crash_after_exchange
    try:
        with pytest.raises(Crash):
            ex.export_finalize(ctx, "cr1", conf, True)
    finally:
        export_layout.FAULT_HOOK = None
    (cluster.node("node3").paths.export_dir / ".staging" / "ghost").mkdir(parents=True)
    proc = cluster.gnt("gnt-cluster", "verify", ok=False)
    assert proc.returncode == 1
    text = proc.stdout + proc.stderr
    assert "node node3: stale export leftovers" in text and ".staging/ghost" in text, text
    assert "node node2: stale export leftovers" in text and ".journal/" in text, text
    watcher = subprocess.run(
        [sys.executable, str(SOURCE_TOP / "daemons" / "ganeti-watcher"), "--root",
         str(cluster.master.root)], env=cluster.env(cluster.master), capture_output=True,
        text=True, timeout=300)
    assert watcher.returncode == 0, watcher.stdout + watcher.stderr
    assert "removed export leftovers on node2" in watcher.stdout
    assert exports(cluster, "node2", "cr1") == before       # undone: the previous state
    assert ex.export_leftovers(ctx) == []
    assert cluster.gnt("gnt-cluster", "verify").returncode == 0
    write(disk, b"new!")
    cluster.gnt("gnt-backup", "export", "--keep-generations", "-n", "node2", "cr1")
    assert sorted(exports(cluster, "node2", "cr1").values()) == sorted(
        [before["newest"], sha(disk)])
    cluster.gnt("gnt-backup", "remove", "cr1")
    cluster.gnt("gnt-instance", "remove", "-f", "cr1")


def test_node_refuses_to_finalize_nothing(cluster: E2ECluster) -> None:
    with pytest.raises(RpcFail, match="No export of nothing1 is being written"):
        ex.export_finalize(node_ctx(cluster, "node2"), "nothing1", "", True)
