"""Live export of a real running kvm VM, end to end through gnt-backup (doc/kvm.md).

One booted 2-disk kvm instance (the tiny real guest of ganeti.tools.guest_image,
which keeps writing self-checking blocks to both disks) on a cluster whose node
roots are on the btrfs loop filesystem, and one on a cluster on /tmp's
filesystem (no reflink); both boot in parallel, once per module. The tests:

- a live export (--noshutdown) pauses the guest once for both disks: the dumps
  verify (no torn block, one point in time across the disks), and the pause
  reported (job log, config.ini) bounds what QEMU itself measured;
- on the filesystem without reflink a live export is refused before anything
  changes, and --long-sleep (shutdown for the whole copy) works;
- the import of the live export boots, and its guest verifies the data it
  inherited (its serial log);
- qemu killed with SIGKILL during the copy: no snapshot is left, the export
  taken from the snapshot completes, the job log says the instance died, and
  ganeti-watcher starts it again, as for the process hypervisor.

TCG works too (set GANETI_TEST_KVM_FLAG=disabled, the default here; "" lets
the hypervisor pick KVM where /dev/kvm opens). Skips without qemu or the guest.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import E2ECluster, output, stop_quietly
from support.reliability import watcher

from ganeti import constants, errors
from ganeti.backup import exportconf
from ganeti.hypervisor import hv_kvm, procutil
from ganeti.tools.local_cluster import SOURCE_TOP

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# qemu's TCG boots the guest in about a minute on a loaded 2-core machine
BOOT_WAIT = 600.0
WAIT = 300.0
NAME = "kvm1"
KVM_FLAG = os.environ.get("GANETI_TEST_KVM_FLAG", "disabled")
_PAUSE_RE = re.compile(r"guest paused (\d+) ms for the snapshot of 2 disks"
                       r" \((crash-consistent|frozen)\)")


def _guest_image() -> object:
    if shutil.which(hv_kvm.QEMU_BINARY) is None:
        pytest.skip(f"{hv_kvm.QEMU_BINARY} is not installed (Debian package qemu-system-x86)")
    try:
        from ganeti.tools.guest_image import ensure_guest
    except ImportError as err:
        pytest.skip(f"the tiny guest builder is missing: {err}")
    try:
        return ensure_guest()
    except (errors.GenericError, OSError) as err:  # no registry reachable, no apt-get
        pytest.skip(f"the tiny guest cannot be built here: {err}")


@pytest.fixture(scope="module")
def guest_hv() -> str:
    """The -H text booting the tiny guest (GANETI_GUEST_CACHE: built once per machine)."""
    image = _guest_image()
    text = image.cli_hvparams()  # type: ignore[attr-defined]
    return f"{text},kvm_flag={KVM_FLAG}"


def _new_cluster(root: Path, nodes: int) -> E2ECluster:
    return E2ECluster.create_and_start(root, node_count=nodes,
                                       enabled_hypervisors=["kvm", "process"])


def serial_log(cluster: E2ECluster, node: str, name: str) -> Path:
    return cluster.node(node).paths.run_dir / "instances" / name / hv_kvm.SERIAL_LOG


def wait_serial(cluster: E2ECluster, node: str, name: str, pattern: str,
                timeout: float = BOOT_WAIT, after: int = 0) -> re.Match[str]:
    """The first match of ``pattern`` in the instance's serial log after offset
    ``after``; fails with the log's end if it never comes."""
    path = serial_log(cluster, node, name)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = path.read_bytes()[after:].decode("utf-8", "replace")
        except FileNotFoundError:
            text = ""
        found = re.search(pattern, text)
        if found:
            return found
        assert "GUEST-ERROR" not in text and "Kernel panic" not in text, text[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not in {path} after {timeout:.0f}s:\n{text[-3000:]}")


def wait_written(cluster: E2ECluster, name: str, above: int, timeout: float = WAIT) -> int:
    """The highest generation on the instance's disk 0 once it is above ``above``
    (read from the live disk file while the guest writes)."""
    from ganeti.hypervisor.guest_verify import verify_disk
    path = cluster.disk_path(name, 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        highest = verify_disk(path).max_generation
        if highest > above:
            return highest
        time.sleep(0.2)
    raise AssertionError(f"the guest of {name} did not write past generation {above}")


def add_vm(cluster: E2ECluster, guest_hv: str, node: str = "node2") -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", node,
                "--disk", "0:size=8M", "--disk", "1:size=8M", "--no-nics",
                "-H", guest_hv, NAME)


def qemu_pids(cluster: E2ECluster, node: str, name: str) -> list[int]:
    return procutil.find_processes(str(cluster.node(node).paths.run_dir / "instances"
                                       / name))


def snapshots_left(cluster: E2ECluster) -> list[Path]:
    return [p for n in cluster.nodes if n.paths.file_storage_dir.exists()
            for p in n.paths.file_storage_dir.rglob(f"*{constants.SNAP_MARKER}export-*")]


def export_dir(cluster: E2ECluster, node: str, name: str = NAME) -> Path:
    return cluster.node(node).paths.export_dir / name


def dumps(cluster: E2ECluster, node: str, name: str = NAME) -> list[Path]:
    return [export_dir(cluster, node, name) / exportconf.dump_name(i) for i in range(2)]


def verify(paths: list[Path]) -> object:
    from ganeti.hypervisor.guest_verify import verify_guest_disks
    return verify_guest_disks(paths)


@pytest.fixture(scope="module")
def clusters(guest_hv: str, reflink_fs: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[E2ECluster, E2ECluster]]:
    """(btrfs cluster, 3 nodes; /tmp cluster, 2 nodes), each running kvm1 on node2,
    both guests booted (in parallel) and writing."""
    plain_root = tmp_path_factory.mktemp("kvmplain")
    rcluster = _new_cluster(reflink_fs / f"kvmexp-{os.getpid()}-{time.monotonic_ns()}", 3)
    try:
        pcluster = _new_cluster(plain_root, 2)
        try:
            started = time.monotonic()
            add_vm(rcluster, guest_hv)
            add_vm(pcluster, guest_hv)
            for cluster in (rcluster, pcluster):
                wait_serial(cluster, "node2", NAME, r"GUEST-READY disks=vda,vdb .*writing=yes")
            print(f"\ntwo kvm guests (kvm_flag={KVM_FLAG or 'auto'}) booted in parallel in"
                  f" {time.monotonic() - started:.0f} s")
            yield rcluster, pcluster
        finally:
            stop_quietly(pcluster)
    finally:
        stop_quietly(rcluster)
    for cluster in (rcluster, pcluster):
        assert procutil.find_processes(str(cluster.root)) == [], "qemu outlived its cluster"


def test_live_export_is_one_point_in_time(clusters: tuple[E2ECluster, E2ECluster]) -> None:
    rcluster, _ = clusters
    pids = qemu_pids(rcluster, "node2", NAME)
    gen_before = wait_written(rcluster, NAME, 2)
    res = rcluster.gnt("gnt-backup", "export", "-n", "node3", "--noshutdown", NAME)
    text = output(res)
    found = _PAUSE_RE.search(text)
    assert found, text
    assert "Shutting down" not in text
    assert qemu_pids(rcluster, "node2", NAME) == pids          # never stopped
    report = verify(dumps(rcluster, "node3"))
    assert report.consistent, report                        # type: ignore[attr-defined]
    assert report.generation >= gen_before, report          # type: ignore[attr-defined]
    info = exportconf.parse((export_dir(rcluster, "node3") / "config.ini").read_text())
    pause, stopped = float(info.snapshot["pause_ms"]), float(info.snapshot["stopped_ms"])
    assert info.snapshot["consistency"] == found.group(2) == "crash-consistent"
    # QEMU's own clock: the guest was never stopped longer than the pause reported
    assert 0 < stopped <= pause and round(pause) == int(found.group(1))
    assert snapshots_left(rcluster) == []
    # and it keeps writing after the export
    wait_written(rcluster, NAME, report.generation)  # type: ignore[attr-defined]
    print(f"\nlive export (kvm_flag={KVM_FLAG or 'auto'}): guest paused {pause:.1f} ms"
          f" (QEMU: vCPUs stopped {stopped:.1f} ms) for 2 disks;"
          f" dumps at generation {report.generation}")  # type: ignore[attr-defined]


def test_no_reflink_refuses_a_live_export_and_long_sleep_works(
        clusters: tuple[E2ECluster, E2ECluster]) -> None:
    _, pcluster = clusters
    pids = qemu_pids(pcluster, "node2", NAME)
    refused = pcluster.gnt("gnt-backup", "export", "-n", "node1", "--noshutdown", NAME,
                           ok=False)
    assert refused.returncode != 0
    assert "a live export (no shutdown) is impossible" in output(refused), output(refused)
    plain = pcluster.gnt("gnt-backup", "export", "-n", "node1", NAME, ok=False)
    assert plain.returncode != 0 and "--long-sleep" in output(plain), output(plain)
    assert qemu_pids(pcluster, "node2", NAME) == pids          # nothing changed
    assert not export_dir(pcluster, "node1").exists()
    res = pcluster.gnt("gnt-backup", "export", "-n", "node1", "--long-sleep",
                       "--shutdown-timeout", "120", NAME)
    text = output(res)
    assert "Shutting down instance kvm1" in text and "guest paused" not in text
    # the guest stopped at a generation boundary (ACPI power button): every disk alike
    report = verify(dumps(pcluster, "node1"))
    assert report.consistent, report                                # type: ignore[attr-defined]
    assert report.disks_at_generation == 2                          # type: ignore[attr-defined]
    assert qemu_pids(pcluster, "node2", NAME) not in ([], pids)     # started again
    info = exportconf.parse((export_dir(pcluster, "node1") / "config.ini").read_text())
    assert info.snapshot == {}                # not a live export


def test_import_of_the_live_export_boots_and_verifies(
        clusters: tuple[E2ECluster, E2ECluster]) -> None:
    rcluster, _ = clusters
    if not export_dir(rcluster, "node3").exists():
        rcluster.gnt("gnt-backup", "export", "-n", "node3", "--noshutdown", NAME)
    rcluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                 "--src-dir", NAME, f"{NAME}-copy")
    try:
        found = wait_serial(rcluster, "node1", f"{NAME}-copy",
                            r"GUEST-VERIFY (ok|FAILED)[^\n]*")
        assert found.group(1) == "ok", found.group(0)
        wait_serial(rcluster, "node1", f"{NAME}-copy", r"GUEST-READY .*writing=yes")
    finally:
        rcluster.gnt("gnt-instance", "remove", "-f", f"{NAME}-copy")


def _export_cli(cluster: E2ECluster, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SOURCE_TOP / "scripts" / "gnt-backup"), "export", *argv],
        env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_guest_killed_mid_export(clusters: tuple[E2ECluster, E2ECluster]) -> None:
    rcluster, _ = clusters
    [pid] = qemu_pids(rcluster, "node2", NAME)
    staging = rcluster.node("node3").paths.export_dir / ".staging" / NAME
    # slow enough to be killed mid-copy: 16 KiB/s for the guest's data regions
    proc = _export_cli(rcluster, "-n", "node3", "--noshutdown", "--bwlimit", "16", NAME)
    deadline = time.monotonic() + WAIT
    while not (staging.exists() and any(staging.iterdir())):
        assert proc.poll() is None, f"export ended before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline, "the export never started copying"
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    assert procutil.wait_gone(pid, WAIT)
    out, err = proc.communicate(timeout=WAIT)
    # the snapshot was taken while the guest ran: the export completes from it
    assert proc.returncode == 0, out + err
    assert "stopped running during the export" in out + err, out + err
    assert snapshots_left(rcluster) == []
    report = verify(dumps(rcluster, "node3"))
    assert report.consistent, report                    # type: ignore[attr-defined]
    listed = rcluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name,status").stdout
    assert f"{NAME} ERROR_down" in " ".join(listed.split()), listed     # reported
    res = watcher(rcluster)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"restarted instance {NAME}" in res.stdout, res.stdout
    assert qemu_pids(rcluster, "node2", NAME) not in ([], [pid])
    wait_serial(rcluster, "node2", NAME, r"GUEST-VERIFY ok", after=0)
