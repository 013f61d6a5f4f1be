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


def test_layout_matches_ganeti_sections_and_keys() -> None:
    info = exportconf.from_instance(_instance(), _cluster(), "node1",
                                    ["sha256-4m:aa", None], timestamp=1700000000)
    text = exportconf.render(info)
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    assert parser.sections() == ["export", "instance", "hypervisor", "backend", "os"]
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
    assert parser["hypervisor"]["write_interval_ms"] == "10"


def test_round_trip() -> None:
    info = exportconf.from_instance(_instance(), _cluster(), "node1",
                                    ["sha256-4m:aa", "sha256-4m:bb"], timestamp=5)
    parsed = exportconf.parse(exportconf.render(info))
    assert parsed.name == info.name and parsed.timestamp == 5
    assert [(d.dump, d.size, d.mode, d.checksum, d.name) for d in parsed.disks] == [
        ("disk0.img", 1024, "rw", "sha256-4m:aa", "root"),
        ("disk1.img", 512, "ro", "sha256-4m:bb", None)]
    assert parsed.nics[0].mac == "aa:00:00:11:22:33" and parsed.nics[0].ip is None
    assert (parsed.maxmem, parsed.minmem, parsed.vcpus) == (256, 128, 2)
    assert parsed.tags == ["web", "prod"]
    assert parsed.hvparams == {"write_interval_ms": "10"}


def _valid_text() -> str:
    return exportconf.render(exportconf.from_instance(
        _instance(), _cluster(), "node1", [None, None], timestamp=5))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("disk0_dump = disk0.img", "disk0_dump = ../../etc/passwd", "not a plain file name"),
    ("disk0_dump = disk0.img", "disk0_dump = /etc/shadow", "not a plain file name"),
    ("disk1_dump = disk1.img", "disk1_dump = disk0.img", "used twice"),
    ("disk0_dump = disk0.img", "disk0_dump = config.ini", "not a plain file name"),
    ("disk_count = 2", "disk_count = 3", "disk2_dump is missing"),
    ("disk_count = 2", "disk_count = 100000", "disk_count=100000 exceeds the limit 16"),
    ("disk0_size = 1024", "disk0_size = big", "must be an integer"),
    ("disk0_size = 1024", "disk0_size = 0", "out of range"),
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
