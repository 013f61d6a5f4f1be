"""The process hypervisor: real guest_sim processes writing real disk files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ganeti import errors
from ganeti.hypervisor import base, get_hypervisor, guest_sim, procutil
from ganeti.hypervisor.hv_process import ProcessHypervisor
from ganeti.objects import Instance
from ganeti.pathutils import Paths

WAIT = 60.0  # generous: other test workers share the two cores
FAST = {"write_interval_ms": 2, "blocks": 64}


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.for_root(tmp_path / "node")


@pytest.fixture
def hv(paths: Paths) -> Iterator[ProcessHypervisor]:
    hyp = get_hypervisor("process", paths)
    assert isinstance(hyp, ProcessHypervisor)
    yield hyp
    for name in hyp.list_instances():
        hyp.stop_instance(name, timeout=0, force=True)
    assert procutil.find_processes(str(paths.root)) == [], "guest processes leaked"


@pytest.fixture
def make_disk(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "disk0.img", size: int = 1 << 20) -> Path:
        path = tmp_path / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        return path
    return make


def instance(name: str = "inst1.example.com", **hvparams: object) -> Instance:
    return Instance(name=name, primary_node="node1", hypervisor="process",
                    hvparams={**FAST, **hvparams}, beparams={"maxmem": 256, "vcpus": 2})


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def open_mode(pid: int, path: Path) -> int | None:
    """Access mode with which ``pid`` has ``path`` open (None: not open)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(path.resolve()):
            flags = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
            return int(flags, 8) & os.O_ACCMODE
    return None


def generation(hv: ProcessHypervisor, name: str) -> int:
    status = hv.guest_status(name)
    return status.generation if status else -1


def test_start_info_list_and_graceful_stop(hv: ProcessHypervisor,
                                           make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk])
    info = hv.instance_info("inst1.example.com")
    assert info is not None
    assert (info.state, info.memory, info.vcpus) == (base.STATE_RUNNING, 256, 2)
    assert info.pid is not None and info.uptime >= 0
    assert "ganeti.hypervisor.guest_sim" in procutil.read_cmdline(info.pid)
    assert hv.list_instances() == ["inst1.example.com"]
    # the disk is open read-write by the guest before start returns
    assert open_mode(info.pid, disk) == os.O_RDWR

    hv.stop_instance("inst1.example.com", timeout=WAIT)
    assert not procutil.is_our_process(info.pid, None, ["ganeti.hypervisor.guest_sim"])
    assert hv.instance_info("inst1.example.com") is None
    assert hv.list_instances() == []
    assert not hv.instance_dir("inst1.example.com").exists()
    report = guest_sim.verify_disk(disk)
    assert report.clean, "graceful stop must leave the clean marker"


def test_guest_writes_and_clean_stop_verifies(hv: ProcessHypervisor,
                                              make_disk: Callable[..., Path]) -> None:
    disks = [make_disk("a.img"), make_disk("b.img", 2 << 20)]
    hv.start_instance(instance(), disks)
    wait_for(lambda: generation(hv, "inst1.example.com") > 0, "first status")
    first = generation(hv, "inst1.example.com")
    wait_for(lambda: generation(hv, "inst1.example.com") > first + 64, "generation to grow")
    last_seen = generation(hv, "inst1.example.com")
    hv.stop_instance("inst1.example.com", timeout=WAIT)

    status = guest_sim.read_status(disks[0].parent / "missing.json")
    assert status is None
    for disk in disks:
        report = guest_sim.verify_disk(disk)
        assert report.formatted and report.clean and report.consistent
        assert report.invalid_blocks == 0
        assert report.blocks == 64
        # more generations than blocks were written: every block has been rewritten
        assert report.valid_blocks == 64 and report.empty_blocks == 0
        assert report.max_generation >= last_seen
        assert report.clean_generation == report.max_generation


def test_restart_continues_generations(hv: ProcessHypervisor,
                                       make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk])
    wait_for(lambda: generation(hv, "inst1.example.com") > 5, "writes")
    hv.stop_instance("inst1.example.com", timeout=WAIT)
    before = guest_sim.verify_disk(disk).max_generation
    hv.start_instance(instance(), [disk])
    assert not guest_sim.verify_disk(disk).clean, "a running guest's disk is marked dirty"
    wait_for(lambda: generation(hv, "inst1.example.com") > before, "writes after restart")
    hv.stop_instance("inst1.example.com", timeout=WAIT)
    report = guest_sim.verify_disk(disk)
    assert report.max_generation > before and report.consistent


def test_guest_ignoring_sigterm_is_killed_after_timeout(
        hv: ProcessHypervisor, make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(ignore_sigterm=True), [disk])
    info = hv.instance_info("inst1.example.com")
    assert info is not None and info.pid is not None
    hv.stop_instance("inst1.example.com", timeout=0.3)
    assert procutil.wait_gone(info.pid, 0), "stop returned while the guest still ran"
    assert hv.instance_info("inst1.example.com") is None
    assert not guest_sim.verify_disk(disk).clean, "a killed guest cannot write its marker"


def test_forced_stop_skips_graceful_request(hv: ProcessHypervisor,
                                            make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk])
    hv.stop_instance("inst1.example.com", timeout=WAIT, force=True)
    assert hv.list_instances() == []
    assert not guest_sim.verify_disk(disk).clean


def test_stopping_a_stopped_instance_is_fine(hv: ProcessHypervisor) -> None:
    hv.stop_instance("never-started", timeout=1)
    assert hv.instance_info("never-started") is None


def test_double_start_refused(hv: ProcessHypervisor, make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk])
    pid = hv.instance_info("inst1.example.com").pid  # type: ignore[union-attr]
    with pytest.raises(errors.HypervisorError, match="already running"):
        hv.start_instance(instance(), [make_disk("other.img")])
    info = hv.instance_info("inst1.example.com")
    assert info is not None and info.pid == pid
    hv.stop_instance("inst1.example.com", timeout=WAIT)


def test_disk_owned_by_one_guest(hv: ProcessHypervisor, make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk])
    with pytest.raises(errors.HypervisorError, match="in use by another guest"):
        hv.start_instance(instance("inst2"), [disk])
    assert hv.list_instances() == ["inst1.example.com"]
    assert not hv.instance_dir("inst2").exists()
    hv.stop_instance("inst1.example.com", timeout=WAIT)


def test_state_survives_a_new_hypervisor_object(paths: Paths, hv: ProcessHypervisor,
                                                make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk])
    pid = hv.instance_info("inst1.example.com").pid  # type: ignore[union-attr]
    fresh = ProcessHypervisor(paths)
    assert fresh.list_instances() == ["inst1.example.com"]
    info = fresh.instance_info("inst1.example.com")
    assert info is not None and info.pid == pid and info.memory == 256
    with pytest.raises(errors.HypervisorError, match="already running"):
        fresh.start_instance(instance(), [disk])
    fresh.stop_instance("inst1.example.com", timeout=WAIT)
    assert hv.list_instances() == []
    assert guest_sim.verify_disk(disk).clean


def test_dead_guest_is_stale_state(hv: ProcessHypervisor, make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk])
    pid = hv.instance_info("inst1.example.com").pid  # type: ignore[union-attr]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert procutil.wait_gone(pid, WAIT)
    assert hv.instance_info("inst1.example.com") is None
    assert hv.list_instances() == []
    # the stale state does not block a new start
    hv.start_instance(instance(), [disk])
    assert hv.list_instances() == ["inst1.example.com"]
    hv.stop_instance("inst1.example.com", timeout=WAIT)


def test_reused_pid_is_not_taken_for_the_guest(hv: ProcessHypervisor,
                                               make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk])
    record = hv._own_record("inst1.example.com")
    assert record is not None
    hv.stop_instance("inst1.example.com", timeout=WAIT)

    # pretend the guest died and its pid went to an unrelated program
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        record.pid = stranger.pid
        record.start_ticks = procutil.read_stat(stranger.pid).start_ticks  # type: ignore[union-attr]
        hv._write_record(record)
        assert hv.instance_info("inst1.example.com") is None
        assert hv.list_instances() == []
        hv.stop_instance("inst1.example.com", timeout=0.1, force=True)
        assert stranger.poll() is None, "stop must never signal a stranger"
        assert not hv.instance_dir("inst1.example.com").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_startup_paused_then_resume(hv: ProcessHypervisor,
                                    make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk], startup_paused=True)
    info = hv.instance_info("inst1.example.com")
    assert info is not None and info.state == base.STATE_PAUSED
    hv.resume_instance("inst1.example.com")
    info = hv.instance_info("inst1.example.com")
    assert info is not None and info.state == base.STATE_RUNNING
    wait_for(lambda: generation(hv, "inst1.example.com") > 3, "writes after resume")
    hv.stop_instance("inst1.example.com", timeout=WAIT)
    assert guest_sim.verify_disk(disk).clean


def test_paused_guest_stops_gracefully(hv: ProcessHypervisor,
                                       make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    hv.start_instance(instance(), [disk], startup_paused=True)
    hv.stop_instance("inst1.example.com", timeout=WAIT)
    assert hv.list_instances() == []
    assert guest_sim.verify_disk(disk).clean


def test_start_failures_give_the_reason_and_leave_nothing(
        hv: ProcessHypervisor, make_disk: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(errors.HypervisorError, match="missing disk"):
        hv.start_instance(instance(), [tmp_path / "nope.img"])
    tiny = make_disk("tiny.img", 4096)
    with pytest.raises(errors.HypervisorError, match="too small"):
        hv.start_instance(instance(), [tiny])
    assert not hv.instance_dir("inst1.example.com").exists()
    assert hv.list_instances() == []
    with pytest.raises(errors.HypervisorError, match="Unknown process hypervisor parameter"):
        hv.start_instance(instance(bogus=1), [])
    with pytest.raises(errors.HypervisorError, match="write_interval_ms"):
        hv.start_instance(instance(write_interval_ms="fast"), [])
    with pytest.raises(errors.HypervisorError, match="Invalid instance name"):
        hv.start_instance(instance("../escape"), [])


def test_diskless_guest_runs(hv: ProcessHypervisor) -> None:
    hv.start_instance(instance(), [])
    assert hv.list_instances() == ["inst1.example.com"]
    status = hv.guest_status("inst1.example.com")
    assert status is not None and status.memory == 256 and status.vcpus == 2
    hv.stop_instance("inst1.example.com", timeout=WAIT)
    assert hv.list_instances() == []


def test_copy_taken_while_the_guest_writes_can_be_verified(
        hv: ProcessHypervisor, make_disk: Callable[..., Path], tmp_path: Path) -> None:
    disk = make_disk()
    hv.start_instance(instance(write_interval_ms=1), [disk])
    wait_for(lambda: generation(hv, "inst1.example.com") > 64, "a full lap of writes")
    copy = tmp_path / "copy.img"
    shutil.copyfile(disk, copy)
    hv.stop_instance("inst1.example.com", timeout=WAIT)
    report = guest_sim.verify_disk(copy)
    # torn blocks are possible in such a copy; the report must account for every block
    assert report.formatted and not report.clean
    assert report.valid_blocks + report.invalid_blocks + report.empty_blocks == 64


def test_verify_reports_no_problem(hv: ProcessHypervisor) -> None:
    assert hv.verify() == []


STARTER = """
import sys
from pathlib import Path
from ganeti.hypervisor.hv_process import ProcessHypervisor
from ganeti.objects import Instance
from ganeti.pathutils import Paths
hv = ProcessHypervisor(Paths.for_root(sys.argv[1]))
hv.start_instance(Instance(name="inst1", primary_node="n1", hvparams={"write_interval_ms": 2}),
                  [Path(sys.argv[2])])
print(hv.instance_info("inst1").pid)
"""


def test_guest_outlives_the_process_that_started_it(
        paths: Paths, hv: ProcessHypervisor, make_disk: Callable[..., Path]) -> None:
    disk = make_disk()
    # a short-lived "node daemon" starts the guest and exits
    result = subprocess.run([sys.executable, "-c", STARTER, str(paths.root), str(disk)],
                            capture_output=True, text=True, timeout=WAIT, check=True)
    pid = int(result.stdout)
    assert os.getsid(pid) == pid, "the guest leads its own session"
    assert hv.list_instances() == ["inst1"]
    info = hv.instance_info("inst1")
    assert info is not None and info.pid == pid
    wait_for(lambda: generation(hv, "inst1") > 5, "the orphaned guest to keep writing")
    hv.stop_instance("inst1", timeout=WAIT)
    assert procutil.wait_gone(pid, 0)
    assert guest_sim.verify_disk(disk).clean
