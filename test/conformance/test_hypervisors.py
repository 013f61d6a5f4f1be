"""One contract, every hypervisor driver (as restic tests every backend).

Each test runs against every entry of ``ganeti.hypervisor.HYPERVISORS`` with
real guests: fake (state only), process (a guest_sim process) and kvm (qemu,
software emulation where /dev/kvm is missing; marked slow, skipped without
qemu).  ``guest_sim`` is the process hypervisor's guest program, not a
hypervisor, so it is covered through ``process``.  Per-driver details stay
in test/unit/test_hypervisor_*.py.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ganeti import errors
from ganeti.hypervisor import HYPERVISORS, base, get_hypervisor, hv_kvm, procutil
from ganeti.objects import Instance
from ganeti.pathutils import Paths

WAIT = 60.0  # generous: the machine's cores are shared


@dataclass(frozen=True)
class Case:
    name: str
    hvparams: dict[str, Any] = field(default_factory=dict)
    disk_size: int = 1 << 20
    # seconds a graceful stop may wait (kvm guests have no OS to answer ACPI)
    stop_timeout: float = WAIT
    skip: str | None = None
    # fake only records its disks' paths; the others open them before start returns
    opens_disks: bool = True


CASES = {
    "fake": Case("fake", opens_disks=False),
    "process": Case("process", {"write_interval_ms": 5, "blocks": 16}),
    "kvm": Case("kvm", {"kvm_flag": "disabled"} if not os.access("/dev/kvm", os.W_OK) else {},
                disk_size=16 << 20, stop_timeout=0.5,
                skip=None if shutil.which(hv_kvm.QEMU_BINARY) else
                f"{hv_kvm.QEMU_BINARY} is not installed (Debian package qemu-system-x86)"),
}
SLOW = {"kvm"}


def test_every_hypervisor_has_a_case() -> None:
    assert set(CASES) == set(HYPERVISORS)


@pytest.fixture(params=[pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else [])
                        for n in sorted(CASES)])
def case(request: pytest.FixtureRequest) -> Case:
    found = CASES[request.param]
    if found.skip:
        pytest.skip(found.skip)
    return found


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.for_root(tmp_path / "node")


@pytest.fixture
def hv(case: Case, paths: Paths) -> Iterator[base.Hypervisor]:
    driver = get_hypervisor(case.name, paths)
    assert driver.name == case.name
    yield driver
    for name in driver.list_instances():
        driver.stop_instance(name, timeout=0, force=True)
    assert procutil.find_processes(str(paths.root)) == [], "guest processes leaked"


class Harness:
    def __init__(self, case: Case, tmp_path: Path) -> None:
        self.case = case
        self.tmp_path = tmp_path

    def disk(self, name: str = "disk0.img") -> Path:
        path = self.tmp_path / name
        with open(path, "wb") as handle:
            handle.truncate(self.case.disk_size)
        return path

    def instance(self, name: str = "inst1.example.com", **hvparams: Any) -> Instance:
        return Instance(name=name, primary_node="node1", hypervisor=self.case.name,
                        hvparams={**self.case.hvparams, **hvparams},
                        beparams={"maxmem": 64, "vcpus": 2})


@pytest.fixture
def h(case: Case, tmp_path: Path) -> Harness:
    return Harness(case, tmp_path)


def _gone(hv: base.Hypervisor, name: str) -> None:
    assert hv.instance_info(name) is None
    assert name not in hv.list_instances()
    assert not hv.instance_dir(name).exists(), "stopping must leave no state behind"


def test_verify_finds_nothing_wrong(hv: base.Hypervisor) -> None:
    assert hv.verify() == []


def test_start_info_list_stop(hv: base.Hypervisor, h: Harness) -> None:
    assert hv.list_instances() == []
    assert hv.instance_info("inst1.example.com") is None
    hv.start_instance(h.instance(), [h.disk()])
    info = hv.instance_info("inst1.example.com")
    assert info is not None
    assert (info.name, info.state, info.memory, info.vcpus) == (
        "inst1.example.com", base.STATE_RUNNING, 64, 2)
    assert info.uptime >= 0
    assert info.pid is None or procutil.read_stat(info.pid) is not None
    assert hv.list_instances() == ["inst1.example.com"]
    hv.stop_instance("inst1.example.com", timeout=h.case.stop_timeout)
    if info.pid is not None:
        assert procutil.wait_gone(info.pid, WAIT)
    _gone(hv, "inst1.example.com")
    hv.stop_instance("inst1.example.com", timeout=h.case.stop_timeout)  # stopped: fine


def test_forced_stop(hv: base.Hypervisor, h: Harness) -> None:
    hv.start_instance(h.instance(), [h.disk()])
    pid = hv.instance_info("inst1.example.com").pid  # type: ignore[union-attr]
    hv.stop_instance("inst1.example.com", timeout=WAIT, force=True)
    if pid is not None:
        assert procutil.wait_gone(pid, WAIT)
    _gone(hv, "inst1.example.com")


def test_two_instances_are_listed_by_name(hv: base.Hypervisor, h: Harness) -> None:
    hv.start_instance(h.instance("inst2.example.com"), [h.disk("b.img")])
    hv.start_instance(h.instance("inst1.example.com"), [h.disk("a.img")])
    assert hv.list_instances() == ["inst1.example.com", "inst2.example.com"]
    hv.stop_instance("inst2.example.com", timeout=WAIT, force=True)
    assert hv.list_instances() == ["inst1.example.com"]


def test_state_survives_a_new_driver_object(hv: base.Hypervisor, h: Harness,
                                            paths: Paths) -> None:
    hv.start_instance(h.instance(), [h.disk()])
    first = hv.instance_info("inst1.example.com")
    again = get_hypervisor(h.case.name, paths)  # a restarted node daemon
    info = again.instance_info("inst1.example.com")
    assert info is not None and first is not None
    assert (info.pid, info.state) == (first.pid, first.state)
    assert again.list_instances() == ["inst1.example.com"]
    again.stop_instance("inst1.example.com", timeout=WAIT, force=True)
    _gone(hv, "inst1.example.com")


def test_double_start_is_refused_and_keeps_the_first(hv: base.Hypervisor, h: Harness) -> None:
    hv.start_instance(h.instance(), [h.disk()])
    first = hv.instance_info("inst1.example.com")
    with pytest.raises(errors.HypervisorError, match="already running"):
        hv.start_instance(h.instance(), [h.disk("other.img")])
    now = hv.instance_info("inst1.example.com")
    assert first is not None and now is not None
    assert (now.pid, now.state) == (first.pid, base.STATE_RUNNING)


def test_paused_start_then_resume(hv: base.Hypervisor, h: Harness) -> None:
    hv.start_instance(h.instance(), [h.disk()], startup_paused=True)
    assert hv.instance_info("inst1.example.com").state == base.STATE_PAUSED  # type: ignore[union-attr]
    hv.resume_instance("inst1.example.com")
    assert hv.instance_info("inst1.example.com").state == base.STATE_RUNNING  # type: ignore[union-attr]
    hv.stop_instance("inst1.example.com", timeout=WAIT, force=True)
    _gone(hv, "inst1.example.com")


def test_resume_of_a_stopped_instance_is_an_error(hv: base.Hypervisor) -> None:
    with pytest.raises(errors.HypervisorError, match="not running"):
        hv.resume_instance("inst1.example.com")


def test_dead_guest_is_stale_state_and_can_start_again(hv: base.Hypervisor,
                                                       h: Harness) -> None:
    disk = h.disk()
    hv.start_instance(h.instance(), [disk])
    pid = hv.instance_info("inst1.example.com").pid  # type: ignore[union-attr]
    if pid is None:
        pytest.skip(f"{h.case.name} instances have no process to die")
    os.kill(pid, signal.SIGKILL)
    assert procutil.wait_gone(pid, WAIT)
    assert hv.instance_info("inst1.example.com") is None
    assert hv.list_instances() == []
    hv.start_instance(h.instance(), [disk])
    assert hv.instance_info("inst1.example.com").pid != pid  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 300, "a b"])
def test_bad_instance_names_are_refused(hv: base.Hypervisor, h: Harness, name: str,
                                        paths: Paths) -> None:
    unchecked = h.instance().model_copy(update={"name": name})  # as if past the config
    with pytest.raises(errors.HypervisorError, match="Invalid instance name"):
        hv.start_instance(unchecked, [])
    for call in (lambda: hv.instance_info(name), lambda: hv.resume_instance(name),
                 lambda: hv.stop_instance(name, timeout=0)):
        with pytest.raises(errors.HypervisorError, match="Invalid instance name"):
            call()
    assert hv.list_instances() == []
    assert not (paths.root / "x").exists()


def test_unknown_parameter_is_refused_and_leaves_nothing(hv: base.Hypervisor,
                                                         h: Harness) -> None:
    with pytest.raises(errors.HypervisorError, match="no_such_param"):
        hv.start_instance(h.instance(no_such_param=1), [h.disk()])
    _gone(hv, "inst1.example.com")


@pytest.mark.parametrize("beparams", [{"maxmem": 0}, {"maxmem": "big"}, {"vcpus": True},
                                      {"vcpus": -1}])
def test_bad_beparams_are_refused_and_leave_nothing(hv: base.Hypervisor, h: Harness,
                                                    beparams: dict[str, Any]) -> None:
    inst = h.instance()
    inst.beparams = {**inst.beparams, **beparams}
    with pytest.raises(errors.HypervisorError, match=r"Invalid (maxmem|vcpus)"):
        hv.start_instance(inst, [h.disk()])
    _gone(hv, "inst1.example.com")


def test_instances_of_another_hypervisor_are_not_listed_nor_stopped(
        hv: base.Hypervisor, h: Harness, paths: Paths) -> None:
    other_name = next(n for n in sorted(CASES) if n != h.case.name and n not in SLOW
                      and not CASES[n].skip)
    other = get_hypervisor(other_name, paths)
    other_case = Harness(CASES[other_name], h.tmp_path)
    other.start_instance(other_case.instance(), [other_case.disk("other.img")])
    try:
        assert hv.list_instances() == []
        assert hv.instance_info("inst1.example.com") is None
        hv.stop_instance("inst1.example.com", timeout=0, force=True)  # not its own: left alone
        assert other.list_instances() == ["inst1.example.com"]
        with pytest.raises(errors.HypervisorError,
                           match=rf"already running \(hypervisor {other_name}\)"):
            hv.start_instance(h.instance(), [h.disk()])
    finally:
        other.stop_instance("inst1.example.com", timeout=0, force=True)
    assert other.list_instances() == []


def test_missing_disk_fails_the_start_with_its_path_and_leaves_nothing(
        hv: base.Hypervisor, h: Harness) -> None:
    if not h.case.opens_disks:
        pytest.skip(f"{h.case.name} does not open disks")
    missing = h.tmp_path / "no-such-disk.img"
    with pytest.raises(errors.HypervisorError, match=r"no-such-disk\.img"):
        hv.start_instance(h.instance(), [h.disk(), missing])
    _gone(hv, "inst1.example.com")


def test_resume_of_a_running_instance_keeps_it_running(hv: base.Hypervisor,
                                                       h: Harness) -> None:
    hv.start_instance(h.instance(), [h.disk()])
    before = hv.instance_info("inst1.example.com")
    hv.resume_instance("inst1.example.com")
    after = hv.instance_info("inst1.example.com")
    assert before is not None and after is not None
    assert (after.pid, after.state) == (before.pid, base.STATE_RUNNING)


def test_paused_instance_stops(hv: base.Hypervisor, h: Harness) -> None:
    hv.start_instance(h.instance(), [h.disk()], startup_paused=True)
    pid = hv.instance_info("inst1.example.com").pid  # type: ignore[union-attr]
    hv.stop_instance("inst1.example.com", timeout=h.case.stop_timeout)
    if pid is not None:
        assert procutil.wait_gone(pid, WAIT)
    _gone(hv, "inst1.example.com")
