"""Ganeti 3.0's own move-instance moves an instance between two of our clusters.

Two local clusters (their own roots and loopback subnets) share a cluster
domain secret; Ganeti's tool talks only to their ganeti-rapi daemons, with each
cluster's rapi.pem as the CA file it verifies the daemon with, and drives
OpBackupPrepare, OpInstanceCreate(remote-import) and OpBackupExport(remote)
through them.  The disks' data is compared after the move; failures leave the
source instance as it was and nothing at the destination.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import E2ECluster, cluster_pair, output
from support.ganeti_oracle import Ganeti3

from ganeti.hypervisor import guest_sim

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIB = 1 << 20


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[E2ECluster, E2ECluster]]:
    """Two 2-node clusters sharing one cluster domain secret."""
    with cluster_pair(tmp_path_factory.mktemp("move")) as pair:
        yield pair


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_with_data(cluster: E2ECluster, name: str, disks: int = 2) -> list[str]:
    """A stopped instance whose disks hold known, distinct data; their checksums."""
    specs = [arg for idx in range(disks) for arg in ("--disk", f"{idx}:size=4M")]
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", *specs,
                "--net", "0:mode=bridged,link=br7", "--no-start", name)
    for idx in range(disks):
        with open(cluster.disk_path(name, idx), "r+b") as handle:
            handle.write(os.urandom(MIB))
            handle.seek(3 * MIB)
            handle.write(f"disk{idx}".encode() * 1000)
    return [sha256(cluster.disk_path(name, idx)) for idx in range(disks)]


def move_instance(ganeti3: Ganeti3, src: E2ECluster, dst: E2ECluster, tmp: Path,
                  *instances: str, dest_password: str = "secret",
                  options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Ganeti 3.0's move-instance, as an administrator runs it: the cluster "names" are
    the RAPI addresses, each daemon verified with its own rapi.pem."""
    (tmp / "src-pw").write_text("secret\n")
    (tmp / "dst-pw").write_text(dest_password + "\n")
    (src_host, src_port), (dst_host, dst_port) = src.rapi_address, dst.rapi_address
    command = [
        str(ganeti3.python), str(ganeti3.share / "move-instance"), "--verbose",
        "--src-ca-file", str(src.master.paths.rapi_cert), "--src-rapi-port", str(src_port),
        "--src-username", "admin", "--src-password-file", str(tmp / "src-pw"),
        "--dest-ca-file", str(dst.master.paths.rapi_cert),
        "--dest-rapi-port", str(dst_port), "--dest-username", "admin",
        "--dest-password-file", str(tmp / "dst-pw"),
        # 3.0 compares a None --opportunistic-tries with 0 under Python 3: give it
        "--dest-primary-node", "node2", "--opportunistic-tries", "0", *options,
        src_host, dst_host, *instances]
    return subprocess.run(command, env=ganeti3.env(), capture_output=True, text=True,
                          timeout=300, check=False)


def test_move_instance_moves_the_data(ganeti3: Ganeti3, clusters: tuple[E2ECluster,
                                                                         E2ECluster],
                                      tmp_path: Path) -> None:
    src, dst = clusters
    digests = add_with_data(src, "mv1")
    # 3.0's gzip-fast is gzip here, on both sides
    proc = move_instance(ganeti3, src, dst, tmp_path, "mv1",
                         options=("--compress", "gzip-fast"))
    assert proc.returncode == 0, output(proc)
    assert "mv1: Success" in proc.stderr, output(proc)
    # 3.0's move-instance always removes the source instance after a good export
    assert src.instance_conf("mv1") is None
    conf = dst.instance_conf("mv1")
    assert conf is not None and [d["size"] for d in conf["disks"]] == [4, 4]
    assert [d["name"] for d in conf["disks"]] == [None, None]
    assert [(n["nicparams"]["mode"], n["nicparams"]["link"]) for n in conf["nics"]] == \
        [("bridged", "br7")]
    assert [sha256(dst.disk_path("mv1", idx)) for idx in range(2)] == digests
    assert conf["admin_state"] == "down"      # the source was stopped
    dst.gnt("gnt-instance", "remove", "-f", "mv1")


def test_a_running_instance_moves_and_runs_on_its_data(
        ganeti3: Ganeti3, clusters: tuple[E2ECluster, E2ECluster], tmp_path: Path) -> None:
    src, dst = clusters
    src.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
            "-H", "process:write_interval_ms=2,blocks=128", "run1")
    written = src.wait_guest_generation("node2", "run1", 20)
    proc = move_instance(ganeti3, src, dst, tmp_path, "run1")
    assert proc.returncode == 0 and "run1: Success" in proc.stderr, output(proc)
    assert src.instance_conf("run1") is None
    conf = dst.instance_conf("run1")
    assert conf is not None and conf["admin_state"] == "up"   # the source was up
    # the guest goes on from the generations it wrote at the source: the copy was whole
    assert dst.wait_guest_generation("node2", "run1", written) > written
    dst.gnt("gnt-instance", "stop", "run1")
    report = guest_sim.verify_disk(dst.disk_path("run1"))
    assert report.consistent and report.clean, report
    assert report.max_generation > written
    dst.gnt("gnt-instance", "remove", "-f", "run1")


def test_failed_moves_leave_the_source_and_no_destination_instance(
        ganeti3: Ganeti3, clusters: tuple[E2ECluster, E2ECluster], tmp_path: Path) -> None:
    src, dst = clusters
    digests = add_with_data(src, "mv2", disks=1)
    # a wrong password at the destination: refused before anything is prepared
    proc = move_instance(ganeti3, src, dst, tmp_path, "mv2", dest_password="wrong")
    assert proc.returncode != 0, output(proc)
    assert "401" in output(proc) or "Unauthorized" in output(proc), output(proc)
    # a destination that does not share the secret refuses the source's handshake
    dst.gnt("gnt-cluster", "renew-crypto", "--new-cluster-domain-secret")
    try:
        proc = move_instance(ganeti3, src, dst, tmp_path, "mv2")
    finally:
        dst.gnt("gnt-cluster", "renew-crypto", "--cluster-domain-secret",
                str(src.master.paths.cluster_domain_secret_file))
    assert proc.returncode != 0, output(proc)
    assert "source_handshake" in output(proc), output(proc)
    assert "mv2: Failed" in proc.stderr, output(proc)
    # the source instance is intact, and nothing was made at the destination
    conf = src.instance_conf("mv2")
    assert conf is not None and sha256(src.disk_path("mv2")) == digests[0]
    assert dst.instance_conf("mv2") is None
    leftovers = [p for node in dst.nodes for p in node.paths.file_storage_dir.glob("mv2*")]
    assert leftovers == []
    src.gnt("gnt-instance", "remove", "-f", "mv2")
