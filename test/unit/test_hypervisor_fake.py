"""The fake hypervisor (state only) and the parts of the interface shared by all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ganeti import constants, errors
from ganeti.hypervisor import HYPERVISORS, base, get_hypervisor
from ganeti.hypervisor.hv_fake import FakeHypervisor
from ganeti.hypervisor.hv_kvm import KvmHypervisor
from ganeti.hypervisor.hv_process import ProcessHypervisor
from ganeti.objects import Instance
from ganeti.pathutils import Paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.for_root(tmp_path / "node")


@pytest.fixture
def hv(paths: Paths) -> FakeHypervisor:
    hyp = get_hypervisor("fake", paths)
    assert isinstance(hyp, FakeHypervisor)
    return hyp


def instance(name: str = "inst1", **beparams: object) -> Instance:
    return Instance(name=name, primary_node="node1", hypervisor="fake",
                    beparams={"maxmem": 512, "vcpus": 4, **beparams})


def test_registry_covers_every_hypervisor_type(paths: Paths) -> None:
    assert set(HYPERVISORS) == set(constants.HYPER_TYPES)
    assert isinstance(get_hypervisor("process", paths), ProcessHypervisor)
    assert isinstance(get_hypervisor("kvm", paths), KvmHypervisor)
    with pytest.raises(errors.HypervisorError, match="Unknown hypervisor 'xen'"):
        get_hypervisor("xen", paths)


def test_start_info_list_stop(hv: FakeHypervisor, paths: Paths) -> None:
    assert hv.list_instances() == []
    hv.start_instance(instance(), [Path("/dev/null")])
    info = hv.instance_info("inst1")
    assert info is not None
    assert (info.name, info.state, info.pid, info.memory, info.vcpus) == (
        "inst1", base.STATE_RUNNING, None, 512, 4)
    assert info.to_dict()["memory"] == 512
    assert hv.list_instances() == ["inst1"]
    # one JSON file per instance, under this node's run dir
    record = json.loads((paths.run_dir / "instances" / "inst1" / "runtime.json").read_text())
    assert record["hypervisor"] == "fake" and record["disks"] == ["/dev/null"]
    hv.stop_instance("inst1", timeout=1)
    assert hv.instance_info("inst1") is None
    assert hv.list_instances() == []
    hv.stop_instance("inst1", timeout=1)  # stopping a stopped instance is fine


def test_double_start_refused(hv: FakeHypervisor) -> None:
    hv.start_instance(instance(), [])
    with pytest.raises(errors.HypervisorError, match="already running"):
        hv.start_instance(instance(), [])


def test_state_survives_a_new_object(hv: FakeHypervisor, paths: Paths) -> None:
    hv.start_instance(instance("a"), [])
    hv.start_instance(instance("b"), [], startup_paused=True)
    fresh = FakeHypervisor(paths)
    assert fresh.list_instances() == ["a", "b"]
    info = fresh.instance_info("b")
    assert info is not None and info.state == base.STATE_PAUSED
    fresh.resume_instance("b")
    assert hv.instance_info("b").state == base.STATE_RUNNING  # type: ignore[union-attr]
    with pytest.raises(errors.HypervisorError, match="not running"):
        fresh.resume_instance("c")


def test_nodes_do_not_share_state(tmp_path: Path) -> None:
    node1 = FakeHypervisor(Paths.for_root(tmp_path / "n1"))
    node2 = FakeHypervisor(Paths.for_root(tmp_path / "n2"))
    node1.start_instance(instance(), [])
    assert node2.list_instances() == []
    node2.start_instance(instance(), [])
    node1.stop_instance("inst1", timeout=1)
    assert node2.list_instances() == ["inst1"]


def test_other_hypervisors_ignore_fake_instances_but_refuse_the_name(
        hv: FakeHypervisor, paths: Paths) -> None:
    hv.start_instance(instance(), [])
    process = ProcessHypervisor(paths)
    assert process.list_instances() == []
    assert process.instance_info("inst1") is None
    process.stop_instance("inst1", timeout=1)  # not its instance: left alone
    assert hv.list_instances() == ["inst1"]
    with pytest.raises(errors.HypervisorError, match=r"already running \(hypervisor fake\)"):
        process.start_instance(Instance(name="inst1", primary_node="node1"), [])


def test_damaged_runtime_file_counts_as_not_running(hv: FakeHypervisor) -> None:
    hv.start_instance(instance(), [])
    (hv.instance_dir("inst1") / "runtime.json").write_text("{not json")
    assert hv.instance_info("inst1") is None
    assert hv.list_instances() == []
    hv.start_instance(instance(), [])
    assert hv.list_instances() == ["inst1"]


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 300, "a b"])
def test_bad_instance_names_rejected(hv: FakeHypervisor, name: str) -> None:
    with pytest.raises(errors.HypervisorError, match="Invalid instance name"):
        hv.instance_info(name)


@pytest.mark.parametrize("beparams", [{"maxmem": 0}, {"maxmem": "big"}, {"vcpus": True},
                                      {"vcpus": -1}])
def test_bad_beparams_rejected(hv: FakeHypervisor, beparams: dict[str, object]) -> None:
    with pytest.raises(errors.HypervisorError, match="Invalid"):
        hv.start_instance(instance("inst1", **beparams), [])
    assert hv.list_instances() == []


def test_beparams_defaults(hv: FakeHypervisor) -> None:
    hv.start_instance(Instance(name="bare", primary_node="node1", hypervisor="fake"), [])
    info = hv.instance_info("bare")
    assert info is not None
    assert (info.memory, info.vcpus) == (base.DEFAULT_MEMORY, base.DEFAULT_VCPUS)


def test_fill_parameters() -> None:
    filled = ProcessHypervisor.fill_parameters({"blocks": 8})
    assert filled["blocks"] == 8
    assert filled["ignore_sigterm"] is False
    with pytest.raises(errors.HypervisorError, match="between"):
        ProcessHypervisor.fill_parameters({"blocks": 0})
    with pytest.raises(errors.HypervisorError, match="boolean"):
        ProcessHypervisor.fill_parameters({"ignore_sigterm": "yes"})
    with pytest.raises(errors.HypervisorError, match="one of"):
        KvmHypervisor.fill_parameters({"kvm_flag": "maybe"})
    with pytest.raises(errors.HypervisorError, match="Unknown fake"):
        FakeHypervisor.fill_parameters({"x": 1})


def test_verify(hv: FakeHypervisor) -> None:
    assert hv.verify() == []
