"""gnt-backup end to end on real clusters: export, import, list, remove.

Two clusters: ``cluster`` lives on the default tmp filesystem (no reflink:
running instances cannot be snapshotted there) and ``rcluster`` on a btrfs
(or xfs) loop filesystem where file disks are reflink-snapshotted live.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import E2ECluster
from support.files import wait_for_the_next_second

from ganeti import cli, constants, daemon, luxi, opcodes
from ganeti.backup import exportconf
from ganeti.hypervisor import guest_sim, procutil
from ganeti.storage import allocated_bytes
from ganeti.tools.local_cluster import NodeSpec

pytestmark = pytest.mark.e2e

MIB = 1 << 20
WAIT = 60.0


@pytest.fixture(scope="module")
def rcluster(reflink_fs: Path) -> Iterator[E2ECluster]:
    """A 3-node cluster whose node roots live on a reflink-capable filesystem."""
    root = reflink_fs / f"cluster-{os.getpid()}-{time.monotonic_ns()}"
    lc = E2ECluster.create_and_start(root)
    try:
        yield lc
    finally:
        lc.stop(log=lambda _m: None)


def disk_paths(cluster: E2ECluster, name: str) -> list[Path]:
    conf = cluster.instance_conf(name)
    assert conf is not None
    return [Path(d["logical_id"][1]) for d in conf["disks"]]


def export_dir(cluster: E2ECluster, node_name: str, instance: str) -> Path:
    return cluster.node(node_name).paths.export_dir / instance


def guest_pids(cluster: E2ECluster, node_name: str, instance: str) -> list[int]:
    return procutil.find_processes(
        str(cluster.node(node_name).paths.run_dir / "instances" / instance))


def snapshots_left(cluster: E2ECluster) -> list[Path]:
    return [p for n in cluster.nodes if n.paths.file_storage_dir.exists()
            for p in n.paths.file_storage_dir.rglob("*.snap-export-*")]


def add_instance(cluster: E2ECluster, name: str, pnode: str, *extra: str,
                 size: str = "8M") -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", pnode, "--disk",
                f"0:size={size}", "-H", "process:write_interval_ms=2,blocks=256", *extra, name)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def write_hook(cluster: E2ECluster, node_spec: NodeSpec, phase: str, name: str,
               body: str) -> Path:
    hook_dir = node_spec.paths.hooks_dir / f"instance-export-{phase}.d"
    hook_dir.mkdir(parents=True, exist_ok=True)
    script = hook_dir / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


# --- the non-reflink cluster ----------------------------------------------------------


def test_export_of_a_stopped_instance_and_import(cluster: E2ECluster) -> None:
    add_instance(cluster, "cold1", "node2", "--no-start")
    src = disk_paths(cluster, "cold1")[0]
    with open(src, "r+b") as handle:        # recognisable data at two offsets
        handle.write(os.urandom(MIB))
        handle.seek(5 * MIB)
        handle.write(b"tail" * 1000)
    cluster.gnt("gnt-backup", "export", "-n", "node3", "cold1")
    exp = export_dir(cluster, "node3", "cold1")
    info = exportconf.parse((exp / "config.ini").read_text())
    assert info.name == "cold1" and info.source == "node2"
    assert [d.size for d in info.disks] == [8]
    assert info.disks[0].checksum and info.disks[0].checksum.startswith("blake3-4m:")
    assert info.disks[0].dump is not None
    assert sha256(exp / info.disks[0].dump) == sha256(src)
    listing = cluster.gnt("gnt-backup", "list", "--no-headers", "--separator", "|").stdout
    assert "node3|cold1" in listing.splitlines()
    # import as a new instance on node1, from the export's name
    out = cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                      "--src-dir", "cold1", "--no-start", "cold1-copy").stdout
    assert "verified" in out
    copy = disk_paths(cluster, "cold1-copy")[0]
    assert cluster.node("node1").paths.file_storage_dir in copy.parents
    assert sha256(copy) == sha256(src)
    conf = cluster.instance_conf("cold1-copy")
    assert conf is not None and conf["disks"][0]["size"] == 8
    # parameters come from the export ([hypervisor] section)
    assert conf["hvparams"]["blocks"] == 256 and conf["hvparams"]["write_interval_ms"] == 2
    cluster.gnt("gnt-instance", "remove", "-f", "cold1-copy")
    cluster.gnt("gnt-instance", "remove", "-f", "cold1")


def test_running_instance_without_snapshots_needs_long_sleep(cluster: E2ECluster) -> None:
    add_instance(cluster, "warm1", "node2")
    pids = guest_pids(cluster, "node2", "warm1")
    assert pids
    for extra in ([], ["--noshutdown"]):
        proc = cluster.gnt("gnt-backup", "export", "-n", "node3", *extra, "warm1", ok=False)
        assert proc.returncode == 1
        assert "cannot be snapshotted" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    # nothing changed: same guest process, no export, no staging dir
    assert guest_pids(cluster, "node2", "warm1") == pids
    assert not export_dir(cluster, "node3", "warm1").exists()
    assert not (cluster.node("node3").paths.export_dir / ".staging" / "warm1").exists()
    out = cluster.gnt("gnt-backup", "export", "-n", "node3", "--long-sleep",
                      "--shutdown-timeout", "20", "warm1").stdout
    # the copy ran while the instance was down; it runs again afterwards
    assert out.index("Shutting down instance") < out.index("disk/0 finished")
    assert out.index("disk/0 finished") < out.rindex("Starting instance warm1 again")
    new_pids = guest_pids(cluster, "node2", "warm1")
    assert new_pids and new_pids != pids
    dump = export_dir(cluster, "node3", "warm1") / "disk0.img"
    report = guest_sim.verify_disk(dump)
    assert report.clean and report.consistent      # copied after a clean shutdown
    cluster.gnt("gnt-instance", "remove", "-f", "warm1")


def test_remove_instance_after_export(cluster: E2ECluster) -> None:
    add_instance(cluster, "gone1", "node2", "--no-start")
    disk = disk_paths(cluster, "gone1")[0]
    cluster.gnt("gnt-backup", "export", "-n", "node1", "--remove-instance", "gone1")
    assert cluster.instance_conf("gone1") is None
    assert not disk.exists()
    assert (export_dir(cluster, "node1", "gone1") / "config.ini").is_file()
    # the export can be listed and removed by name although the instance is gone
    cluster.gnt("gnt-backup", "remove", "gone1")
    assert not export_dir(cluster, "node1", "gone1").exists()
    proc = cluster.gnt("gnt-backup", "remove", "gone1", ok=False)
    assert proc.returncode == 1 and "No export of gone1" in proc.stderr


def test_new_export_replaces_old_one_and_removes_it_elsewhere(cluster: E2ECluster) -> None:
    add_instance(cluster, "gen1", "node2", "--no-start")
    cluster.gnt("gnt-backup", "export", "-n", "node3", "gen1")
    first = (export_dir(cluster, "node3", "gen1") / "config.ini").read_text()
    wait_for_the_next_second()                       # a new timestamp
    cluster.gnt("gnt-backup", "export", "-n", "node3", "gen1")
    second = (export_dir(cluster, "node3", "gen1") / "config.ini").read_text()
    assert first != second
    assert sorted(p.name for p in cluster.node("node3").paths.export_dir.iterdir()
                  if p.name.startswith("gen1")) == ["gen1"]
    out = cluster.gnt("gnt-backup", "export", "-n", "node1", "gen1").stdout
    assert "Removed the older export of gen1 on node3" in out
    assert not export_dir(cluster, "node3", "gen1").exists()
    cluster.gnt("gnt-backup", "remove", "gen1")
    cluster.gnt("gnt-instance", "remove", "-f", "gen1")


def test_export_hooks_on_three_nodes_and_pre_hook_veto(cluster: E2ECluster,
                                                      tmp_path: Path) -> None:
    add_instance(cluster, "hooked", "node2", "--no-start")
    scripts = []
    for spec in cluster.nodes:
        dump = tmp_path / f"{spec.name}.env"
        scripts.append(write_hook(cluster, spec, "pre", "10-env", f"env > {dump}\n"))
    try:
        cluster.gnt("gnt-backup", "export", "-n", "node3", "--shutdown-timeout", "30",
                    "hooked")
        for spec in cluster.nodes:                 # master node1, primary node2, target node3
            env = dict(line.split("=", 1) for line in
                       (tmp_path / f"{spec.name}.env").read_text().splitlines())
            assert env["GANETI_HOOKS_PATH"] == "instance-export"
            assert env["GANETI_OP_CODE"] == "OP_BACKUP_EXPORT"
            assert env["GANETI_OBJECT_TYPE"] == "INSTANCE"
            assert env["GANETI_EXPORT_MODE"] == "local"
            assert env["GANETI_EXPORT_NODE"] == "node3"
            assert env["GANETI_EXPORT_DO_SHUTDOWN"] == "True"
            assert env["GANETI_SHUTDOWN_TIMEOUT"] == "30"
            assert env["GANETI_REMOVE_INSTANCE"] == "False"
            assert env["GANETI_INSTANCE_NAME"] == "hooked"
            assert env["GANETI_INSTANCE_PRIMARY"] == "node2"
            assert env["GANETI_INSTANCE_DISK_COUNT"] == "1"
            assert env["GANETI_INSTANCE_DISK0_SIZE"] == "8"
        for script in scripts:
            script.unlink()
        cluster.gnt("gnt-backup", "remove", "hooked")
        veto = write_hook(cluster, cluster.node("node3"), "pre", "20-veto",
                          "echo 'no space for you'\nexit 1\n")
        scripts = [veto]
        proc = cluster.gnt("gnt-backup", "export", "-n", "node3", "hooked", ok=False)
        assert proc.returncode == 1
        assert "node3" in proc.stderr and "20-veto" in proc.stderr
        assert "no space for you" in proc.stderr
        assert not export_dir(cluster, "node3", "hooked").exists()
        assert not (cluster.node("node3").paths.export_dir / ".staging" / "hooked").exists()
    finally:
        for script in scripts:
            script.unlink(missing_ok=True)
        cluster.gnt("gnt-instance", "remove", "-f", "hooked")


def test_target_node_down_fails_clearly(cluster: E2ECluster) -> None:
    add_instance(cluster, "nodown", "node2")
    pids = guest_pids(cluster, "node2", "nodown")
    node3 = cluster.node("node3")
    pid = daemon.read_pid(node3.paths.pid_file(constants.NODED))
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    try:
        deadline = time.monotonic() + WAIT
        while cluster.is_running(constants.NODED, node3) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc = cluster.gnt("gnt-backup", "export", "-n", "node3", "--long-sleep", "nodown",
                           ok=False)
        assert proc.returncode == 1
        assert "node3" in proc.stderr
        # the instance was not touched: still the same guest
        assert guest_pids(cluster, "node2", "nodown") == pids
    finally:
        cluster.start(log=lambda _m: None)
    cluster.gnt("gnt-instance", "remove", "-f", "nodown")


def test_corrupt_dump_is_detected_on_import(cluster: E2ECluster) -> None:
    add_instance(cluster, "rot1", "node2", "--no-start")
    with open(disk_paths(cluster, "rot1")[0], "r+b") as handle:
        handle.write(b"\x55" * MIB)
    cluster.gnt("gnt-backup", "export", "-n", "node3", "rot1")
    dump = export_dir(cluster, "node3", "rot1") / "disk0.img"
    with open(dump, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\xaa")
    proc = cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                       "--src-dir", "rot1", "--no-start", "rot1-copy", ok=False)
    assert proc.returncode == 1
    assert "disk/0" in proc.stderr and "checksum mismatch" in proc.stderr
    # nothing half-imported: no instance, no disk files
    assert cluster.instance_conf("rot1-copy") is None
    assert not (cluster.node("node1").paths.file_storage_dir / "rot1-copy").exists()
    cluster.gnt("gnt-backup", "remove", "rot1")
    cluster.gnt("gnt-instance", "remove", "-f", "rot1")


def test_sparse_disk_stays_sparse_through_export_and_import(cluster: E2ECluster) -> None:
    # 64 data extents with holes between them: what the test proves (holes stay holes
    # through export and import) does not need a bigger disk, whose zeros the
    # checksums below would read in full
    add_instance(cluster, "sparse1", "node2", "--no-start", size="1G")
    src = disk_paths(cluster, "sparse1")[0]
    chunk = os.urandom(MIB)
    with open(src, "r+b") as handle:       # 64 MiB of data spread over the 1 GiB disk
        for i in range(64):
            handle.seek(i * 16 * MIB)
            handle.write(chunk)
    cluster.gnt("gnt-backup", "export", "-n", "node3", "sparse1")
    dump = export_dir(cluster, "node3", "sparse1") / "disk0.img"
    assert dump.stat().st_size == 1024 * MIB
    assert allocated_bytes(dump) < 80 * MIB
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                "--no-start", "--src-dir", "sparse1", "sparse1-copy")
    copy = disk_paths(cluster, "sparse1-copy")[0]
    assert allocated_bytes(copy) < 80 * MIB
    assert sha256(copy) == sha256(src)
    cluster.gnt("gnt-backup", "remove", "sparse1")
    for name in ("sparse1", "sparse1-copy"):
        cluster.gnt("gnt-instance", "remove", "-f", name)


def test_exports_of_different_instances_run_concurrently(cluster: E2ECluster) -> None:
    # node locks are shared: two exports overlap even though both read from node2
    # and the master runs both; proven by the opcodes' execution intervals (from
    # "locks acquired" to "done") overlapping.  gzip keeps each copy busy for a
    # while (64 MiB of random data: seconds, against milliseconds between the two
    # jobs' starts), so serialised exports could not overlap by accident.
    for name in ("par1", "par2"):
        add_instance(cluster, name, "node2", "--no-start", size="128M")
        with open(disk_paths(cluster, name)[0], "r+b") as handle:
            block = os.urandom(4 * MIB)
            for _ in range(16):
                handle.write(block)
    ops = [[opcodes.OpBackupExport.create(instance_name=name, target_node=target,
                                          compress="gzip")]
           for name, target in (("par1", "node1"), ("par2", "node3"))]
    with luxi.Client(str(cluster.master.paths.master_socket)) as cl:
        jobs = [job_id for ok, job_id in cl.submit_many_jobs(ops) if ok]
        assert len(jobs) == 2
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            rows = cl.query_jobs(jobs, ["status", "opexec", "opend"])
            if all(r[0] in constants.JOBS_FINALIZED for r in rows):
                break
            time.sleep(0.1)
    assert [r[0] for r in rows] == ["success", "success"], rows
    (start1, end1), (start2, end2) = [
        tuple(cli.merge_time(ts[0]) for ts in (r[1], r[2])) for r in rows]
    assert start1 < end2 and start2 < end1, rows
    cluster.gnt("gnt-backup", "remove", "par1")
    cluster.gnt("gnt-backup", "remove", "par2")
    for name in ("par1", "par2"):
        cluster.gnt("gnt-instance", "remove", "-f", name)


def test_bad_input_is_refused_clearly(cluster: E2ECluster) -> None:
    for argv, message in (
            (("-n", "node3", "no-such-instance"), "not known"),
            (("-n", "no-such-node", "x"), "not known"),
            (("-n", "node3", "--noshutdown", "--long-sleep", "x"), "needs shutdown"),
            (("-n", "node3", "--transport-compression", "lzma", "x"), "unknown compression"),
    ):
        proc = cluster.gnt("gnt-backup", "export", *argv, ok=False)
        assert proc.returncode in (1, 2), proc
        assert message in proc.stderr, proc.stderr


# --- the reflink cluster ----------------------------------------------------------------


def test_live_export_with_snapshot_is_consistent(rcluster: E2ECluster) -> None:
    add_instance(rcluster, "live1", "node2")
    pids = guest_pids(rcluster, "node2", "live1")
    generation = rcluster.wait_guest_generation("node2", "live1", 50, timeout=WAIT)
    out = rcluster.gnt("gnt-backup", "export", "-n", "node3", "--noshutdown",
                       "live1").stdout
    assert "Snapshotted 1 disk(s)" in out and "Shutting down" not in out
    assert guest_pids(rcluster, "node2", "live1") == pids      # never stopped
    later = rcluster.wait_guest_generation("node2", "live1", generation, timeout=WAIT)
    assert later > generation
    report = guest_sim.verify_disk(export_dir(rcluster, "node3", "live1") / "disk0.img")
    assert report.formatted and report.invalid_blocks == 0
    assert report.max_generation >= generation
    assert snapshots_left(rcluster) == []


def test_export_with_shutdown_restarts_before_the_copy(rcluster: E2ECluster) -> None:
    add_instance(rcluster, "live2", "node2")
    rcluster.wait_guest_generation("node2", "live2", 10, timeout=WAIT)
    pids = guest_pids(rcluster, "node2", "live2")
    out = rcluster.gnt("gnt-backup", "export", "-n", "node1", "live2").stdout
    # shutdown, snapshot, start again, and only then the copy
    order = [out.index("Shutting down instance live2"), out.index("Snapshotted"),
             out.index("Starting instance live2 again; copying from snapshots"),
             out.index("disk/0 finished")]
    assert order == sorted(order)
    new_pids = guest_pids(rcluster, "node2", "live2")
    assert new_pids and new_pids != pids
    report = guest_sim.verify_disk(export_dir(rcluster, "node1", "live2") / "disk0.img")
    assert report.clean and report.consistent      # snapshot of a cleanly stopped disk
    assert snapshots_left(rcluster) == []


def test_target_killed_mid_transfer_keeps_previous_export(rcluster: E2ECluster) -> None:
    # 64 MiB of random data: the gzip'd copy runs for seconds, while node3 dies within
    # milliseconds of its staging dump appearing
    add_instance(rcluster, "big1", "node2", "--no-start", size="256M")
    disk = disk_paths(rcluster, "big1")[0]
    with open(disk, "r+b") as handle:
        block = os.urandom(4 * MIB)
        for _ in range(16):
            handle.write(block)
    rcluster.gnt("gnt-backup", "export", "-n", "node3", "big1")
    previous = (export_dir(rcluster, "node3", "big1") / "config.ini").read_text()
    rcluster.gnt("gnt-instance", "start", "big1")
    pids = guest_pids(rcluster, "node2", "big1")
    node3 = rcluster.node("node3")
    job = rcluster.gnt("gnt-backup", "export", "--submit", "-n", "node3", "--noshutdown",
                       "--transport-compression", "gzip", "big1").stdout.split()[-1]
    try:
        rcluster.kill_noded_when("node3",
                                 node3.paths.export_dir / ".staging" / "big1" / "disk0.img",
                                 WAIT)
        proc = rcluster.gnt("gnt-job", "watch", job, ok=False)
        assert proc.returncode == 1
        assert "Export failed" in proc.stderr or "node3" in proc.stderr
    finally:
        rcluster.start(log=lambda _m: None)
    # previous export intact, no snapshot left, instance running as before
    assert (export_dir(rcluster, "node3", "big1") / "config.ini").read_text() == previous
    assert snapshots_left(rcluster) == []
    assert guest_pids(rcluster, "node2", "big1") == pids
