"""gnt-backup import of exports in Ganeti 3.0's own format, on a real cluster.

One is Ganeti's own sample export (ganeti-testsuite: config.ini and its raw
dump rawdisk.raw, from the oracle's unpack; skipped where it is unavailable),
the other a config.ini laid out as Ganeti 3.0's FinalizeExport writes it
(source a node UUID, no disk modes or checksums, every section) with a disk
that has no dump.  What Ganeti's import does is what ours must do: the
export's hypervisor or a clear refusal or -H; [os], [os_private] and every
[backend] parameter applied; blank disks where there is no dump.
"""

from __future__ import annotations

import configparser
import shutil
import stat
from pathlib import Path

import pytest
from support.cluster import E2ECluster, output
from support.ganeti_oracle import OracleUnavailable, ganeti3

from ganeti import config_journal

pytestmark = pytest.mark.e2e

MIB = 1 << 20


def _export_dir(cluster: E2ECluster, node: str, name: str) -> Path:
    path = cluster.node(node).paths.export_dir / name
    path.mkdir(parents=True)
    return path


def _node_uuid(cluster: E2ECluster, name: str) -> str:
    data = config_journal.load(cluster.master.paths.cluster_conf_file)[0]
    return next(uuid for uuid, node in data["nodes"].items() if node["name"] == name)


def _samples() -> Path:
    try:
        oracle = ganeti3()
    except OracleUnavailable as err:
        pytest.skip(f"Ganeti 3.0's Debian packages are unavailable here: {err}")
    return oracle.testsuite / "test" / "data" / "ovfdata"


def test_import_of_ganetis_sample_export(cluster: E2ECluster) -> None:
    samples = _samples()
    exp = _export_dir(cluster, "node2", "ganeti-test-xen")
    shutil.copy(samples / "config.ini", exp / "config.ini")
    shutil.copy(samples / "rawdisk.raw", exp / "rawdisk.raw")
    dump = (samples / "rawdisk.raw").read_bytes()
    args = ("gnt-backup", "import", "-n", "node1", "--src-node", "node2", "--src-dir",
            "ganeti-test-xen", "--no-start", "--no-install")
    # its hypervisor, xen-pvm, is not enabled here: refused, naming it and the way out
    refused = cluster.gnt(*args, "gtx1", ok=False)
    assert refused.returncode != 0
    assert "hypervisor xen-pvm is not enabled" in output(refused)
    assert "-H" in output(refused)
    assert cluster.instance_conf("gtx1") is None
    # with another hypervisor given, as Ganeti takes -H
    proc = cluster.gnt(*args, "-H", "process", "gtx1")
    conf = cluster.instance_conf("gtx1")
    assert conf is not None
    assert conf["hypervisor"] == "process"
    # xen's parameters (root-path, kernel_args) are not process's: none carried over
    assert conf["hvparams"] == {}
    assert conf["os"] == "lenny-image"
    # [backend]: memory = 512 stands for maxmem and minmem, auto_balance = False
    assert conf["beparams"] == {"maxmem": 512, "minmem": 512, "vcpus": 1,
                                "auto_balance": False}
    # disk0_size = 0: the dump's size (5120 bytes), rounded up to a MiB
    assert [d["size"] for d in conf["disks"]] == [1]
    data = cluster.disk_path("gtx1").read_bytes()
    assert data[:len(dump)] == dump and data[len(dump):] == bytes(MIB - len(dump))
    text = output(proc)
    assert "disk/0: the export records no checksum, data not verified" in text
    assert "Disks: disk/0 imported, not verified" in text
    assert "All disks imported and verified" not in text
    cluster.gnt("gnt-instance", "remove", "-f", "gtx1")


def test_import_of_ganetis_sample_with_its_dump_in_a_subdirectory(
        cluster: E2ECluster) -> None:
    """unsafe_path.ini names other/rawdisk.raw: below the export dir, which Ganeti's
    import takes (its PathJoin only refuses what leaves the directory)."""
    samples = _samples()
    exp = _export_dir(cluster, "node2", "gtx-sub")
    shutil.copy(samples / "unsafe_path.ini", exp / "config.ini")
    (exp / "other").mkdir()
    shutil.copy(samples / "other" / "rawdisk.raw", exp / "other" / "rawdisk.raw")
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node2", "--src-dir",
                "gtx-sub", "--no-start", "--no-install", "-H", "process", "gtx2")
    dump = (samples / "other" / "rawdisk.raw").read_bytes()
    assert cluster.disk_path("gtx2").read_bytes()[:len(dump)] == dump
    conf = cluster.instance_conf("gtx2")
    assert conf is not None and conf["beparams"]["maxmem"] == 2048
    cluster.gnt("gnt-instance", "remove", "-f", "gtx2")


def _ganeti_config(source: str) -> str:
    """A config.ini laid out as Ganeti 3.0 writes one (FinalizeExport's keys and order)."""
    return f"""\
[export]
version = 0
timestamp = 1700000000
source = {source}
os = debootstrap+default
compression = none

[instance]
name = g3web
maxmem = 384
minmem = 256
memory = 384
vcpus = 2
disk_template = file
hypervisor = process
tags = web
nic0_mac = aa:00:00:5e:01:02
nic0_ip = None
nic0_network = None
nic0_name = None
nic0_mode = bridged
nic0_link = br0
nic0_vlan =
nic_count = 1
disk0_ivname = disk/0
disk0_dump = 0d9a8e5c-1b2f-4f3e-9a7b-7c6d5e4f3a2b.snap
disk0_size = 2
disk0_name = None
disk1_ivname = disk/1
disk1_size = 3
disk1_name = data
disk_count = 2

[hypervisor]
blocks = 64
acpi = True

[backend]
always_failover = True
auto_balance = False
maxmem = 384
minmem = 256
spindle_use = 2
vcpus = 2

[os]
dhcp = yes

[os_private]
root_password = hunter2

"""


def test_import_of_a_ganeti_layout_export(cluster: E2ECluster) -> None:
    exp = _export_dir(cluster, "node3", "g3web")
    # Ganeti 3.0 writes the primary node's UUID as the source
    (exp / "config.ini").write_text(_ganeti_config(_node_uuid(cluster, "node2")))
    payload = bytes(range(256)) * (2 * MIB // 256)
    (exp / "0d9a8e5c-1b2f-4f3e-9a7b-7c6d5e4f3a2b.snap").write_bytes(payload)
    proc = cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                       "--src-dir", "g3web", "--no-start", "--no-install", "g3web")
    conf = cluster.instance_conf("g3web")
    assert conf is not None
    # the export's own hypervisor, its parameters but the one it does not have here
    assert conf["hypervisor"] == "process"
    assert conf["hvparams"] == {"blocks": 64}
    text = output(proc)
    assert "not imported: acpi" in text
    assert conf["osparams"] == {"dhcp": "yes"}
    assert conf["osparams_private"] == {"root_password": "hunter2"}
    assert conf["beparams"] == {"always_failover": True, "auto_balance": False,
                                "maxmem": 384, "minmem": 256, "spindle_use": 2, "vcpus": 2}
    assert [(d["size"], d.get("name")) for d in conf["disks"]] == [(2, None), (3, "data")]
    assert conf["tags"] == ["web"]
    assert cluster.disk_path("g3web", 0).read_bytes() == payload
    # disk1 has no dump: created blank, as Ganeti does
    assert cluster.disk_path("g3web", 1).read_bytes() == bytes(3 * MIB)
    assert "disk/1: no dump in the export, the disk is created blank" in text
    assert "Disks: disk/0 imported, not verified; disk/1 blank" in text
    assert "All disks imported and verified" not in text
    # the source UUID read as the node it names
    assert "(exported from node2)" in text
    cluster.gnt("gnt-instance", "remove", "-f", "g3web")


def test_blank_disk_without_any_size_is_refused(cluster: E2ECluster) -> None:
    exp = _export_dir(cluster, "node3", "g3nosize")
    text = _ganeti_config("node2").replace("name = g3web", "name = g3nosize") \
        .replace("disk1_size = 3", "disk1_size = 0")
    (exp / "config.ini").write_text(text)
    (exp / "0d9a8e5c-1b2f-4f3e-9a7b-7c6d5e4f3a2b.snap").write_bytes(bytes(2 * MIB))
    proc = cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                       "--src-dir", "g3nosize", "--no-start", "g3nosize", ok=False)
    assert proc.returncode != 0
    assert ("disk/1: the export gives no size (disk1_size = 0) and has no dump to take it"
            " from; give it with --disk 1:size=SIZE") in output(proc)
    assert cluster.instance_conf("g3nosize") is None
    # with the size given, the disk is made blank at that size
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3", "--src-dir",
                "g3nosize", "--no-start", "--no-install", "--disk", "0:size=2M",
                "--disk", "1:size=5M", "-O", "dhcp=no,mirror=local",
                "--os-parameters-private", "root_password=other", "g3nosize")
    conf = cluster.instance_conf("g3nosize")
    assert conf is not None and [d["size"] for d in conf["disks"]] == [2, 5]
    # the command line's OS parameters win over the export's
    assert conf["osparams"] == {"dhcp": "no", "mirror": "local"}
    assert conf["osparams_private"] == {"root_password": "other"}
    cluster.gnt("gnt-instance", "remove", "-f", "g3nosize")


def test_our_export_is_written_as_ganeti_writes_it(cluster: E2ECluster) -> None:
    """gnt-backup export: config.ini 0600, the full [backend], [os_private], and the
    process parameters where Ganeti ignores them; our import brings them back."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "-H", "process:write_interval_ms=3,blocks=128", "--no-start", "ours1")
    cluster.gnt("gnt-backup", "export", "-n", "node3", "ours1")
    conf = cluster.node("node3").paths.export_dir / "ours1" / "config.ini"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(conf.read_text())
    assert parser.sections() == ["export", "instance", "hypervisor", "backend", "os",
                                 "os_private", "ganeti-ng:hypervisor"]
    assert dict(parser["hypervisor"]) == {}
    assert dict(parser["ganeti-ng:hypervisor"]) == {"blocks": "128",
                                                    "write_interval_ms": "3"}
    assert {"always_failover", "auto_balance", "spindle_use", "maxmem", "minmem",
            "vcpus"} <= set(parser["backend"])
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3", "--src-dir",
                "ours1", "--no-start", "ours1-copy")
    copy = cluster.instance_conf("ours1-copy")
    assert copy is not None and copy["hypervisor"] == "process"
    assert copy["hvparams"] == {"blocks": 128, "write_interval_ms": 3}
    for name in ("ours1-copy", "ours1"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
