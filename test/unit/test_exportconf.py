"""config.ini: Ganeti-compatible layout, round trip, hostile input refused."""

from __future__ import annotations

import configparser
import re

import pytest

from ganeti import errors
from ganeti.backup import exportconf
from ganeti.objects import NIC, Cluster, Disk, Instance


def _instance() -> Instance:
    return Instance(
        name="inst1.example.com", primary_node="uuid-n1", os="debootstrap+default",
        hypervisor="process", disk_template="file", tags=["web", "prod"],
        beparams={"vcpus": 2}, hvparams={"write_interval_ms": 10},
        disks=[Disk(size=1024, dev_type="file", iv_name="disk/0", name="root"),
               Disk(size=512, dev_type="file", iv_name="disk/1", mode="ro")],
        nics=[NIC(mac="aa:00:00:11:22:33", nicparams={"mode": "bridged", "link": "br0"})])


def _cluster() -> Cluster:
    return Cluster(cluster_name="c", master_node="uuid-n1",
                   beparams={"maxmem": 256, "minmem": 128, "vcpus": 1})


def _ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_layout_matches_ganeti_sections_and_keys() -> None:
    info = exportconf.from_instance(_instance(), _cluster(), "node1",
                                    ["sha256-4m:aa", None], timestamp=1700000000)
    parser = _ini(exportconf.render(info))
    # Ganeti 3.0's sections in its order, then ours
    assert parser.sections() == ["export", "instance", "hypervisor", "backend", "os",
                                 "os_private", "ganeti-ng:hypervisor"]
    exp, inst = parser["export"], parser["instance"]
    assert (exp["version"], exp["timestamp"], exp["source"], exp["os"],
            exp["compression"]) == ("0", "1700000000", "node1", "debootstrap+default", "none")
    assert inst["name"] == "inst1.example.com"
    assert (inst["maxmem"], inst["minmem"], inst["memory"], inst["vcpus"]) == \
        ("256", "128", "256", "2")
    assert inst["tags"] == "web prod"
    assert inst["disk_count"] == "2" and inst["nic_count"] == "1"
    assert inst["disk0_dump"] == "disk0.img" and inst["disk0_size"] == "1024"
    assert inst["disk0_ivname"] == "disk/0" and inst["disk0_name"] == "root"
    assert inst["disk1_name"] == "None"          # Ganeti writes str(None)
    assert inst["disk0_checksum"] == "sha256-4m:aa"
    assert "disk1_checksum" not in inst
    assert inst["nic0_mac"] == "aa:00:00:11:22:33" and inst["nic0_link"] == "br0"
    assert inst["nic0_ip"] == "None"


def test_nic_vlan_unset_is_empty_as_ganeti_writes_it() -> None:
    inst = _ini(_valid_text())["instance"]
    assert inst["nic0_vlan"] == ""              # Ganeti's filled nicparams: vlan ""


def test_backend_section_is_complete() -> None:
    be = _ini(_valid_text())["backend"]
    assert dict(be) == {"always_failover": "False", "auto_balance": "True",
                        "maxmem": "256", "minmem": "128", "spindle_use": "1", "vcpus": "2"}


def test_os_private_section_written() -> None:
    inst = _instance()
    inst.osparams_private = {"root_password": "s3cret"}
    text = exportconf.render(exportconf.from_instance(inst, _cluster(), "node1",
                                                      [None, None], timestamp=5))
    assert dict(_ini(text)["os_private"]) == {"root_password": "s3cret"}
    assert exportconf.parse(text).osparams_private == {"root_password": "s3cret"}


def test_process_hypervisor_parameters_stay_out_of_ganeti_section() -> None:
    """Ganeti 3.0 refuses parameters it does not know: ours go to our own section."""
    parser = _ini(_valid_text())
    assert dict(parser["hypervisor"]) == {}
    assert dict(parser["ganeti-ng:hypervisor"]) == {"write_interval_ms": "10"}


def test_kvm_parameters_split_by_what_ganeti_accepts() -> None:
    inst = _instance()
    inst.hypervisor = "kvm"
    inst.hvparams = {"kvm_path": "", "kvm_flag": "enabled", "disk_cache": "unsafe",
                     "machine_version": "pc"}
    parser = _ini(exportconf.render(exportconf.from_instance(
        inst, _cluster(), "node1", [None, None], timestamp=5)))
    # "" is not an absolute path and "unsafe" not one of 3.0's cache modes
    assert dict(parser["hypervisor"]) == {"kvm_flag": "enabled", "machine_version": "pc"}
    assert dict(parser["ganeti-ng:hypervisor"]) == {"disk_cache": "unsafe",
                                                    "kvm_path": ""}
    assert exportconf.parse(exportconf.render(exportconf.from_instance(
        inst, _cluster(), "node1", [None, None], timestamp=5))).hvparams == inst.hvparams


def test_no_extension_section_when_nothing_is_ours() -> None:
    inst = _instance()
    inst.hypervisor, inst.hvparams = "kvm", {"kvm_flag": "disabled"}
    parser = _ini(exportconf.render(exportconf.from_instance(
        inst, _cluster(), "node1", [None, None], timestamp=5)))
    assert "ganeti-ng:hypervisor" not in parser.sections()
    assert dict(parser["hypervisor"]) == {"kvm_flag": "disabled"}


def test_round_trip() -> None:
    inst = _instance()
    inst.osparams = {"dhcp": "yes"}
    inst.osparams_private = {"key": "v"}
    info = exportconf.from_instance(inst, _cluster(), "node1",
                                    ["sha256-4m:aa", "sha256-4m:bb"], timestamp=5)
    parsed = exportconf.parse(exportconf.render(info))
    assert parsed.name == info.name and parsed.timestamp == 5
    assert [(d.dump, d.size, d.mode, d.checksum, d.name) for d in parsed.disks] == [
        ("disk0.img", 1024, "rw", "sha256-4m:aa", "root"),
        ("disk1.img", 512, "ro", "sha256-4m:bb", None)]
    assert parsed.nics[0].mac == "aa:00:00:11:22:33" and parsed.nics[0].ip is None
    assert parsed.nics[0].vlan is None and parsed.nics[0].mode == "bridged"
    assert (parsed.maxmem, parsed.minmem, parsed.vcpus) == (256, 128, 2)
    assert parsed.tags == ["web", "prod"]
    assert parsed.hvparams == {"write_interval_ms": "10"}
    assert parsed.osparams == {"dhcp": "yes"} and parsed.osparams_private == {"key": "v"}
    assert parsed.backend_params() == {"always_failover": False, "auto_balance": True,
                                       "maxmem": 256, "minmem": 128, "spindle_use": 1,
                                       "vcpus": 2}
    # and rendering what was parsed gives the same file
    assert exportconf.render(parsed) == exportconf.render(info)


# A config.ini as Ganeti 3.0 writes it (facts from its FinalizeExport): no
# disk mode or checksum, the source a node UUID, every kvm parameter
_GANETI_KVM = """\
[export]
version = 0
timestamp = 1700000000
source = 6c1f2b9e-5f0a-4a59-a3a2-8e1a9e0f2d11
os = debootstrap+default
compression = none

[instance]
name = web1
maxmem = 512
minmem = 256
memory = 512
vcpus = 2
disk_template = plain
hypervisor = kvm
tags = a b
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
disk0_size = 1024
disk0_name = None
disk_count = 1

[hypervisor]
kvm_flag = enabled
acpi = True
boot_order = disk

[backend]
always_failover = False
auto_balance = True
maxmem = 512
minmem = 256
spindle_use = 1
vcpus = 2

[os]
dhcp = yes

[os_private]
root_password = hunter2

"""


def test_genuine_ganeti_export_parses() -> None:
    info = exportconf.parse(_GANETI_KVM)
    assert info.source == "6c1f2b9e-5f0a-4a59-a3a2-8e1a9e0f2d11"
    assert info.hypervisor == "kvm"
    assert info.hvparams == {"kvm_flag": "enabled", "acpi": "True", "boot_order": "disk"}
    assert info.osparams == {"dhcp": "yes"}
    assert info.osparams_private == {"root_password": "hunter2"}
    assert info.disks[0].dump == "0d9a8e5c-1b2f-4f3e-9a7b-7c6d5e4f3a2b.snap"
    assert info.disks[0].mode == "rw" and info.disks[0].checksum is None
    assert info.nics[0].vlan is None
    assert info.backend_params() == {"always_failover": False, "auto_balance": True,
                                     "maxmem": 512, "minmem": 256, "spindle_use": 1,
                                     "vcpus": 2}


def _edit(text: str, *, drop: tuple[str, ...] = (), replace: dict[str, str] | None = None
          ) -> str:
    lines = [line for line in text.splitlines()
             if not any(line.startswith(f"{key} =") for key in drop)]
    out = "\n".join(lines) + "\n"
    for old, new in (replace or {}).items():
        assert old in out
        out = out.replace(old, new, 1)
    return out


def test_timestamp_may_be_missing() -> None:
    info = exportconf.parse(_edit(_GANETI_KVM, drop=("timestamp",)))
    assert info.timestamp is None


def test_counts_may_be_missing() -> None:
    """Ganeti's import finds disks by disk<N>_size and NICs by nic<N>_mac."""
    info = exportconf.parse(_edit(_GANETI_KVM, drop=("disk_count", "nic_count")))
    assert len(info.disks) == 1 and len(info.nics) == 1
    assert info.disks[0].size == 1024 and info.nics[0].mac == "aa:00:00:5e:01:02"


def test_size_zero_means_the_dumps_size() -> None:
    info = exportconf.parse(_edit(_GANETI_KVM,
                                  replace={"disk0_size = 1024": "disk0_size = 0"}))
    assert info.disks[0].size == 0


def test_disk_without_dump_is_a_blank_disk() -> None:
    info = exportconf.parse(_edit(_GANETI_KVM, drop=("disk0_dump",)))
    assert info.disks[0].dump is None and info.disks[0].size == 1024
    # and we write it back without a dump, as it was
    assert "disk0_dump" not in _ini(exportconf.render(info))["instance"]


def test_dump_in_a_subdirectory_is_accepted_as_ganeti_does() -> None:
    info = exportconf.parse(_edit(_GANETI_KVM, replace={
        "disk0_dump = 0d9a8e5c-1b2f-4f3e-9a7b-7c6d5e4f3a2b.snap":
        "disk0_dump = other/rawdisk.raw"}))
    assert info.disks[0].dump == "other/rawdisk.raw"


def test_memory_in_backend_stands_for_maxmem_and_minmem() -> None:
    text = _edit(_GANETI_KVM, drop=("maxmem", "minmem", "always_failover", "spindle_use",
                                    "auto_balance", "vcpus", "memory"))
    text = text.replace("[backend]\n", "[backend]\nmemory = 768\nvcpus = 3\n")
    assert exportconf.parse(text).backend_params() == {"maxmem": 768, "minmem": 768,
                                                       "vcpus": 3}


def test_old_export_without_backend_uses_instance_keys() -> None:
    text = _GANETI_KVM.split("[backend]")[0] + "[os]\n"
    assert exportconf.parse(text).backend_params() == {"maxmem": 512, "minmem": 256,
                                                       "vcpus": 2}


def test_none_is_read_in_any_case() -> None:
    info = exportconf.parse(_edit(_GANETI_KVM, replace={"nic0_ip = None": "nic0_ip = none"}))
    assert info.nics[0].ip is None


@pytest.mark.parametrize(("drop", "message"), [
    (("os",), "[export] os is missing"),
    (("version",), "[export] version is missing"),
])
def test_what_ganetis_import_requires(drop: tuple[str, ...], message: str) -> None:
    with pytest.raises(errors.OpPrereqError, match=re.escape(message)):
        exportconf.parse(_edit(_GANETI_KVM, drop=drop))


def _valid_text() -> str:
    return exportconf.render(exportconf.from_instance(
        _instance(), _cluster(), "node1", [None, None], timestamp=5))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("disk0_dump = disk0.img", "disk0_dump = ../../etc/passwd", "not a plain file name"),
    ("disk0_dump = disk0.img", "disk0_dump = /etc/shadow", "not a plain file name"),
    ("disk0_dump = disk0.img", "disk0_dump = a/./b", "not a plain file name"),
    ("disk0_dump = disk0.img", "disk0_dump = a/b/c/d/e", "not a plain file name"),
    ("disk1_dump = disk1.img", "disk1_dump = disk0.img", "used twice"),
    ("disk0_dump = disk0.img", "disk0_dump = config.ini", "not a plain file name"),
    ("disk_count = 2", "disk_count = 3", "disk2_size is missing"),
    ("disk_count = 2", "disk_count = 100000", "disk_count=100000 exceeds the limit 16"),
    ("disk0_size = 1024", "disk0_size = big", "must be an integer"),
    ("disk0_size = 1024", "disk0_size = -1", "out of range"),
    ("version = 0", "version = 7", "unsupported export version"),
    ("name = inst1.example.com", "name = ../x", "not a valid instance name"),
    ("disk1_mode = ro", "disk1_mode = rwx", "not rw or ro"),
    ("[instance]", "[instanz]", "section [instance] is missing"),
])
def test_hostile_or_broken_fields_are_refused(old: str, new: str, message: str) -> None:
    text = _valid_text()
    assert old in text
    with pytest.raises(errors.OpPrereqError, match=re.escape(message)) as err:
        exportconf.parse(text.replace(old, new, 1))
    assert err.value.ecode == errors.ECODE_INVAL


def test_garbage_is_refused() -> None:
    for text in ("", "not ini at all\n", "[export]\nversion=0\n", "\x00" * 10,
                 "[export]\n[export]\n"):
        with pytest.raises(errors.OpPrereqError):
            exportconf.parse(text)
