"""Tests for ganeti.objects: JSON round trips, strict loading, helpers."""

from __future__ import annotations

import json
import typing
import uuid as uuid_mod
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ganeti import constants, errors, objects
from ganeti.objects import (
    NIC,
    Cluster,
    ConfigData,
    ConfigObject,
    Disk,
    Instance,
    Network,
    Node,
    NodeGroup,
)


def _json_round_trip(obj: ConfigObject) -> ConfigObject:
    text = json.dumps(obj.to_dict())
    return type(obj).from_dict(json.loads(text))


def _sample_instance() -> Instance:
    return Instance(
        name="inst1.example.com", primary_node="n1", secondary_nodes=["n2"], os="debian+min",
        hypervisor=constants.HT_KVM, hvparams={"kernel_path": "/boot/vmlinuz"},
        beparams={"maxmem": 512}, osparams={"mirror": "http://deb"},
        admin_state=constants.ADMINST_UP, admin_state_source=constants.USER_SOURCE,
        disk_template=constants.DT_PLAIN,
        disks=[Disk(size=1024, dev_type=constants.DT_PLAIN, logical_id=["xenvg", "lv0"],
                    iv_name="disk/0", name="root", params={"stripes": 1}),
               Disk(size=10, dev_type=constants.DT_FILE, mode=constants.DISK_RDONLY,
                    logical_id=["file", "/srv/d1"], iv_name="disk/1")],
        nics=[NIC(mac="aa:00:00:00:00:01", ip="192.0.2.5", network=None,
                  nicparams={"mode": "bridged", "link": "br0", "vlan": ""})],
        tags=["web", "prod"], serial_no=3)


def _sample_config() -> ConfigData:
    group = NodeGroup(name="default", ndparams={"oob": None}, tags=["g"])
    n1 = Node(name="n1.example.com", primary_ip="192.0.2.10", group=group.uuid,
              master_candidate=True, port=11811)
    n2 = Node(name="n2.example.com", primary_ip="192.0.2.11", secondary_ip="10.0.0.11",
              group=group.uuid, offline=True)
    net = Network(name="net1", network="192.0.2.0/24", gateway="192.0.2.1")
    inst = _sample_instance()
    inst.primary_node, inst.secondary_nodes = n1.uuid, [n2.uuid]
    inst.nics[0].network = net.uuid
    cluster = Cluster(cluster_name="cluster.example.com", master_node=n1.uuid,
                      master_ip="192.0.2.1", hvparams={constants.HT_KVM: {"acpi": True}},
                      osparams={"debian": {"mirror": "x"}}, tags=["t"])
    return ConfigData(cluster=cluster, nodes={n1.uuid: n1, n2.uuid: n2},
                      nodegroups={group.uuid: group}, instances={inst.uuid: inst},
                      networks={net.uuid: net}, serial_no=7)


SAMPLES: dict[str, Any] = {
    "disk": lambda: Disk(size=1, dev_type=constants.DT_FILE, logical_id=["file", "/x"]),
    "nic": lambda: NIC(mac="aa:00:00:00:00:02", nicparams={"mode": "routed"}),
    "instance": _sample_instance,
    "node": lambda: Node(name="n9", primary_ip="192.0.2.99", drained=True, tags=["a"]),
    "nodegroup": lambda: NodeGroup(name="g2"),
    "network": lambda: Network(name="net2", mac_prefix="aa:00:01"),
    "cluster": lambda: Cluster(cluster_name="c", master_node="m", shared_export_dir=True),
    "configdata": _sample_config,
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_round_trip(kind: str) -> None:
    obj = SAMPLES[kind]()
    back = _json_round_trip(obj)
    assert back == obj
    assert back.to_dict() == obj.to_dict()
    assert back is not obj


def test_round_trip_keeps_nested_types() -> None:
    back = _json_round_trip(_sample_config())
    assert isinstance(back, ConfigData)
    inst = next(iter(back.instances.values()))
    assert isinstance(inst.disks[1], Disk)
    assert inst.disks[1].mode == constants.DISK_RDONLY
    assert isinstance(inst.nics[0], NIC)
    assert inst.nics[0].nicparams["link"] == "br0"


def test_common_fields_and_defaults() -> None:
    a, b = Node(name="a", primary_ip="1.2.3.4"), Node(name="b", primary_ip="1.2.3.5")
    assert a.uuid != b.uuid
    assert uuid_mod.UUID(a.uuid).version == 4
    assert a.serial_no == 0
    assert a.ctime > 0 and a.mtime > 0
    cluster = Cluster(cluster_name="c", master_node="m")
    assert cluster.noded_port == constants.DEFAULT_NODED_PORT
    assert cluster.compression_tools == list(constants.IEC_DEFAULT_TOOLS)
    assert cluster.hooks_timeout == constants.DEFAULT_HOOK_TIMEOUT
    assert cluster.beparams == {"maxmem": 128, "minmem": 128, "vcpus": 1}
    assert (cluster.max_running_jobs, cluster.max_queued_jobs) == (25, 10000)
    assert cluster.shared_export_dir is False
    # defaults must not be shared between objects
    cluster.beparams["vcpus"] = 4
    assert Cluster(cluster_name="d", master_node="m").beparams["vcpus"] == 1
    inst = Instance(name="i", primary_node="n")
    assert inst.admin_state == constants.ADMINST_DOWN
    assert inst.admin_state_source == constants.ADMIN_SOURCE
    assert ConfigData(cluster=cluster).version == constants.CONFIG_VERSION


def test_literal_types_match_constants() -> None:
    assert set(typing.get_args(objects.DiskMode)) == {constants.DISK_RDWR, constants.DISK_RDONLY}
    assert set(typing.get_args(objects.DiskType)) == {constants.DT_FILE, constants.DT_PLAIN}
    assert set(typing.get_args(objects.AdminState)) == constants.ADMINST_ALL
    assert set(typing.get_args(objects.AdminStateSource)) == {constants.ADMIN_SOURCE,
                                                              constants.USER_SOURCE}


def test_unknown_top_level_key_named() -> None:
    data = Node(name="n", primary_ip="1.1.1.1").to_dict()
    data["colour"] = "blue"
    with pytest.raises(errors.ConfigurationError, match=r"unknown key 'colour'"):
        Node.from_dict(data)


def test_unknown_nested_key_names_full_path() -> None:
    data = _sample_config().to_dict()
    inst_uuid = next(iter(data["instances"]))
    data["instances"][inst_uuid]["disks"][1]["sizee"] = 5
    with pytest.raises(errors.ConfigurationError) as exc:
        ConfigData.from_dict(data)
    assert f"unknown key 'instances.{inst_uuid}.disks.1.sizee'" in str(exc.value)


@pytest.mark.parametrize(("path", "value"), [
    (("cluster", "noded_port"), "1811"),
    (("cluster", "noded_port"), 70000),
    (("cluster", "shared_export_dir"), "yes"),
    (("cluster", "enabled_hypervisors"), "kvm"),
    (("serial_no", ), -1),
    (("cluster", "master_node"), None),
])
def test_wrong_types_named(path: tuple[str, ...], value: Any) -> None:
    data = _sample_config().to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(errors.ConfigurationError) as exc:
        ConfigData.from_dict(data)
    assert f"'{'.'.join(path)}'" in str(exc.value)


def test_invalid_literal_and_missing_key_named() -> None:
    disk = Disk(size=1, dev_type=constants.DT_FILE).to_dict()
    disk["mode"] = "rx"
    with pytest.raises(errors.ConfigurationError, match=r"invalid value at 'mode'"):
        Disk.from_dict(disk)
    node = Node(name="n", primary_ip="1.1.1.1").to_dict()
    del node["primary_ip"]
    with pytest.raises(errors.ConfigurationError, match=r"missing key 'primary_ip'"):
        Node.from_dict(node)
    with pytest.raises(errors.ConfigurationError, match=r"<root>"):
        Node.from_dict(["not", "a", "dict"])


def test_table_key_must_match_uuid() -> None:
    data = _sample_config().to_dict()
    node_uuid = next(iter(data["nodes"]))
    data["nodes"]["other-key"] = data["nodes"].pop(node_uuid)
    with pytest.raises(errors.ConfigurationError, match=r"nodes\.other-key"):
        ConfigData.from_dict(data)


def test_assignment_is_validated() -> None:
    inst = Instance(name="i", primary_node="n")
    inst.admin_state = constants.ADMINST_UP
    with pytest.raises(ValidationError):
        inst.admin_state = "sideways"  # type: ignore[assignment]
    with pytest.raises(ValidationError):
        inst.disks = [{"size": "big"}]  # type: ignore[list-item]


def test_validated_copy_catches_bad_nested_values() -> None:
    inst = Instance(name="i", primary_node="n")
    copy = inst.validated_copy()
    assert copy == inst and copy is not inst
    copy.beparams["maxmem"] = 1
    assert "maxmem" not in inst.beparams
    inst.beparams["weird"] = object()
    with pytest.raises(errors.ConfigurationError, match="cannot be serialized"):
        inst.validated_copy()


def test_all_nodes_primary_first_without_duplicates() -> None:
    inst = Instance(name="i", primary_node="p", secondary_nodes=["s1", "p", "s2", "s1"])
    assert inst.all_nodes == ["p", "s1", "s2"]
    assert Instance(name="j", primary_node="p").all_nodes == ["p"]


def test_find_disk() -> None:
    inst = _sample_instance()
    assert inst.find_disk(0) is inst.disks[0]
    assert inst.find_disk("1") is inst.disks[1]
    for bad in (2, -1, "x", "1.5"):
        with pytest.raises(errors.OpPrereqError) as exc:
            inst.find_disk(bad)
        assert exc.value.ecode == errors.ECODE_INVAL


def test_fill_parameters() -> None:
    cluster = Cluster(cluster_name="c", master_node="m",
                      hvparams={constants.HT_KVM: {"acpi": True, "kernel_path": "/k"}},
                      osparams={"debian": {"mirror": "a", "arch": "amd64"},
                                "debian+min": {"arch": "i386"}},
                      ndparams={"oob": "c", "spindles": 1})
    inst = _sample_instance()
    assert cluster.fill_beparams(inst) == {"maxmem": 512, "minmem": 128, "vcpus": 1}
    assert cluster.fill_hvparams(inst) == {"acpi": True, "kernel_path": "/boot/vmlinuz"}
    assert cluster.fill_osparams(inst) == {"mirror": "http://deb", "arch": "i386"}
    group = NodeGroup(name="g", ndparams={"oob": "g"})
    node = Node(name="n", primary_ip="1.1.1.1", ndparams={"spindles": 3})
    assert cluster.fill_ndparams(node, group) == {"oob": "g", "spindles": 3}
    assert cluster.fill_ndparams(node) == {"oob": "c", "spindles": 3}
    assert cluster.node_port(node) == constants.DEFAULT_NODED_PORT
    node.port = 12000
    assert cluster.node_port(node) == 12000


def test_verify_reports_dangling_references() -> None:
    data = _sample_config()
    assert data.verify() == []
    inst = next(iter(data.instances.values()))
    inst.secondary_nodes = ["ghost-node"]
    inst.nics[0].network = "ghost-net"
    next(iter(data.nodes.values())).group = "ghost-group"
    data.cluster.master_node = "ghost-master"
    dup = Node(name="n2.example.com", primary_ip="1.1.1.1",
               group=next(iter(data.nodegroups)))
    data.nodes[dup.uuid] = dup
    problems = "\n".join(data.verify())
    for needle in ("ghost-node", "ghost-net", "ghost-group", "ghost-master",
                   "duplicate node name n2.example.com"):
        assert needle in problems


@settings(max_examples=40, deadline=None)
@given(name=st.text(min_size=1, max_size=30),
       sizes=st.lists(st.integers(min_value=0, max_value=2**40), max_size=4),
       tags=st.lists(st.text(max_size=10), max_size=5),
       params=st.dictionaries(st.text(max_size=8),
                              st.one_of(st.none(), st.booleans(), st.integers(),
                                        st.text(max_size=8)), max_size=4))
def test_instance_round_trip_property(name: str, sizes: list[int], tags: list[str],
                                      params: dict[str, Any]) -> None:
    inst = Instance(name=name, primary_node="p", tags=tags, hvparams=params,
                    disks=[Disk(size=s, dev_type=constants.DT_FILE, iv_name=f"disk/{i}")
                           for i, s in enumerate(sizes)])
    assert _json_round_trip(inst) == inst


def test_to_json_matches_to_dict() -> None:
    data = _sample_config()
    assert json.loads(data.to_json()) == data.to_dict()
    inst = Instance(name="i", primary_node="n", hvparams={"x": object()})
    with pytest.raises(errors.ConfigurationError, match="cannot be serialized"):
        inst.to_json()
