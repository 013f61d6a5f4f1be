"""A real VM through the cluster: the tiny guest (tools/build-guest) on a 2-disk kvm instance.

``gnt-instance add`` boots it on node2 with direct kernel boot (the guest's kernel_path,
initrd_path, kernel_args as -H parameters); the guest reports on its serial console,
writes both disks, stops cleanly on ``gnt-instance stop`` and its disks pass the
project's verifier; started again, it checks its own data and goes on writing.

Forced to TCG (``kvm_flag=disabled``) unless ``GANETI_TEST_KVM_FLAG`` says otherwise
(``enabled``, or empty for automatic): it must pass without /dev/kvm, and on nested
virtualization /dev/kvm may open yet be too slow to boot a kernel (doc/kvm.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cluster import E2ECluster, cluster_fixture, output

from ganeti import errors
from ganeti.hypervisor import guest_verify, hv_kvm
from ganeti.tools import guest_image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # three boots under TCG on shared cores
    pytest.mark.skipif(shutil.which(hv_kvm.QEMU_BINARY) is None,
                       reason=f"{hv_kvm.QEMU_BINARY} is not installed"
                              " (Debian package qemu-system-x86)"),
]

BOOT_TIMEOUT = 600.0  # TCG on two busy shared cores
KVM_FLAG = os.environ.get("GANETI_TEST_KVM_FLAG", hv_kvm.KVM_FLAG_DISABLED)
NAME = "vm1"

cluster = cluster_fixture("kvmguest", node_count=2, enabled_hypervisors=["process", "kvm"])


@pytest.fixture(scope="module")
def guest() -> guest_image.GuestImage:
    try:
        return guest_image.ensure_guest()
    except errors.HypervisorError as err:
        pytest.skip(f"cannot build the tiny guest (Debian packages unavailable?): {err}")


def serial_log(cluster: E2ECluster) -> Path:
    return cluster.node("node2").paths.run_dir / "instances" / NAME / hv_kvm.SERIAL_LOG


def verify_cli(disks: list[Path]) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-m", "ganeti.hypervisor.guest_verify",
                           *map(str, disks)], capture_output=True, text=True, timeout=120,
                          check=False)
    report: dict[str, object] = json.loads(proc.stdout)
    assert proc.returncode == (0 if report["consistent"] else 1)
    return report


def test_guest_boots_writes_stops_and_verifies(cluster: E2ECluster,
                                               guest: guest_image.GuestImage) -> None:
    hv = f"{guest.cli_hvparams()},kvm_flag={KVM_FLAG}"
    started = time.monotonic()
    add = cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                      "0:size=4M", "--disk", "1:size=4M", "-H", hv, "-B", "maxmem=128M",
                      "--no-nics", NAME, timeout=BOOT_TIMEOUT)
    accel = "tcg" if KVM_FLAG == hv_kvm.KVM_FLAG_DISABLED else None
    assert "runs with accelerator" in output(add)
    if accel:
        assert f"runs with accelerator {accel}" in output(add)
    info = cluster.gnt("gnt-instance", "info", NAME).stdout
    assert f"Accelerator: {accel or ''}" in info and f"kernel_path: {guest.kernel}" in info

    log = serial_log(cluster)
    line, offset = guest_image.wait_for_line(
        log, [guest_image.VERIFY_OK, guest_image.VERIFY_FAILED], BOOT_TIMEOUT)
    assert line == f"{guest_image.VERIFY_OK} gen=0"  # fresh disks: nothing written yet
    ready, offset = guest_image.wait_for_line(log, [guest_image.READY_LINE], 60, offset)
    boot_seconds = time.monotonic() - started
    fields = guest_image.console_fields(ready)
    assert fields["disks"] == "vda,vdb" and fields["writing"] == "yes"
    assert int(fields["blocks"]) == guest.blocks
    print(f"\nkvm guest ({KVM_FLAG or 'auto'}): add + boot to {guest_image.READY_LINE}"
          f" {boot_seconds:.1f}s")
    progress, offset = guest_image.wait_for_line(log, [guest_image.PROGRESS_LINE], 300,
                                                 offset)
    written = int(guest_image.console_fields(progress)["gen"])

    # a clean stop: the power button makes the guest finish its generation on both disks
    cluster.gnt("gnt-instance", "stop", "--timeout", "120", NAME)
    disks = [cluster.disk_path(NAME, 0), cluster.disk_path(NAME, 1)]
    report = guest_verify.verify_guest_disks(disks)
    assert report.consistent, report.to_dict()
    assert report.generation >= written
    assert report.disks_at_generation == 2, report.to_dict()
    assert verify_cli(disks)["consistent"] is True

    # started again it checks what it wrote and continues from there
    cluster.gnt("gnt-instance", "start", NAME, timeout=BOOT_TIMEOUT)
    line, offset = guest_image.wait_for_line(
        log, [guest_image.VERIFY_OK, guest_image.VERIFY_FAILED], BOOT_TIMEOUT)
    assert line == f"{guest_image.VERIFY_OK} gen={report.generation}"
    guest_image.wait_for_line(log, [guest_image.PROGRESS_LINE], 300, offset)
    cluster.gnt("gnt-instance", "stop", "--timeout", "120", NAME)
    again = guest_verify.verify_guest_disks(disks)
    assert again.consistent and again.generation > report.generation

    # the verifier sees a block torn by hand
    with open(disks[1], "r+b") as f:
        f.seek(guest_verify.HEADER_SIZE + 100)
        f.write(b"torn")
    bad = verify_cli(disks)
    assert bad["consistent"] is False
    # ... and so does the guest: it reports the damage and leaves the disks alone
    before = [d.read_bytes() for d in disks]
    cluster.gnt("gnt-instance", "start", NAME, timeout=BOOT_TIMEOUT)
    line, offset = guest_image.wait_for_line(
        log, [guest_image.VERIFY_OK, guest_image.VERIFY_FAILED], BOOT_TIMEOUT)
    assert line.startswith(f"{guest_image.VERIFY_FAILED} gen={again.generation}:"), line
    assert "vdb:0:damaged" in line, line
    ready, _ = guest_image.wait_for_line(log, [guest_image.READY_LINE], 60, offset)
    assert guest_image.console_fields(ready)["writing"] == "no"
    stopped = time.monotonic()
    cluster.gnt("gnt-instance", "stop", "--timeout", "120", NAME)
    assert time.monotonic() - stopped < 100  # the power button, not the kill after 120 s
    assert [d.read_bytes() for d in disks] == before
    cluster.gnt("gnt-instance", "remove", "-f", NAME)
