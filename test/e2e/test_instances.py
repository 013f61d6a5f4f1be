"""Instances end to end: gnt-instance on a real 3-node cluster with process guests."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cluster import E2ECluster

from ganeti.hypervisor import guest_sim
from ganeti.tools.local_cluster import NodeSpec

pytestmark = pytest.mark.e2e

WAIT = 60.0


def _rows(cluster: E2ECluster, *fields: str) -> dict[str, list[str]]:
    out = cluster.gnt("gnt-instance", "list", "--no-headers", "--separator", "|", "-o",
                      ",".join(("name", *fields))).stdout
    return {cells[0]: cells[1:] for cells in (line.split("|") for line in out.splitlines())}


def test_instance_life_cycle(cluster: E2ECluster) -> None:
    node2 = cluster.node("node2")
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=16M",
                "--disk", "1:size=8M,name=data", "-H", "process:write_interval_ms=5,blocks=64",
                "-B", "maxmem=256M,vcpus=2", "life1")
    rows = _rows(cluster, "pnode", "status", "oper_state", "oper_ram", "disk.sizes",
                 "hypervisor")
    assert rows["life1"] == ["node2", "running", "Y", "256", "16,8", "process"]
    conf = cluster.instance_conf("life1")
    assert conf is not None and conf["admin_state"] == "up"
    disks = [Path(d["logical_id"][1]) for d in conf["disks"]]
    assert all(node2.paths.file_storage_dir in d.parents for d in disks)
    assert [d.stat().st_size for d in disks] == [16 << 20, 8 << 20]

    # the guest really runs on node2 and keeps writing its disks
    pids = cluster.guest_pids(node2.name, "life1")
    assert len(pids) == 1
    assert cluster.guest_pids("node3", "life1") == []
    gen = cluster.wait_guest_generation(node2.name, "life1", 0, timeout=WAIT)
    cluster.wait_guest_generation(node2.name, "life1", gen, timeout=WAIT)

    info = cluster.gnt("gnt-instance", "info", "life1").stdout
    assert "State: configured to be up, actual state is up" in info
    assert "primary: node2" in info and "disk/1 (data)" in info
    assert "write_interval_ms: 5" in info and "vcpus: 2" in info

    cluster.gnt("gnt-instance", "stop", "--timeout", "20", "life1")
    assert cluster.guest_pids(node2.name, "life1") == []
    assert not (node2.paths.run_dir / "instances" / "life1").exists()
    for disk in disks:
        report = guest_sim.verify_disk(disk)
        assert report.clean and report.invalid_blocks == 0 and report.consistent
        assert report.max_generation >= gen
    assert _rows(cluster, "status", "oper_state")["life1"] == ["ADMIN_down", "N"]

    cluster.gnt("gnt-instance", "start", "life1")
    first_pid = cluster.guest_pids(node2.name, "life1")
    assert len(first_pid) == 1 and first_pid != pids
    stopped_at = guest_sim.verify_disk(disks[0]).clean_generation
    # continues after the last generation
    cluster.wait_guest_generation(node2.name, "life1", stopped_at, timeout=WAIT)

    cluster.gnt("gnt-instance", "reboot", "life1")
    rebooted = cluster.guest_pids(node2.name, "life1")
    assert len(rebooted) == 1 and rebooted != first_pid
    assert _rows(cluster, "status")["life1"] == ["running"]

    out = cluster.gnt("gnt-instance", "modify", "-B", "maxmem=512M", "life1").stdout
    assert "be/maxmem -> 512" in out
    assert _rows(cluster, "be/maxmem", "oper_ram")["life1"] == ["512", "256"]
    cluster.gnt("gnt-instance", "reboot", "life1")  # parameters apply at the next start
    assert _rows(cluster, "oper_ram")["life1"] == ["512"]

    # remove asks first; "no" keeps everything
    proc = cluster.gnt("gnt-instance", "remove", "life1", input_text="n\n", ok=False)
    assert proc.returncode == 1 and cluster.instance_conf("life1") is not None
    cluster.gnt("gnt-instance", "remove", "--shutdown-timeout", "20", "life1", input_text="y\n")
    assert cluster.instance_conf("life1") is None
    assert cluster.guest_pids(node2.name, "life1") == []
    assert not any(d.exists() for d in disks)
    assert cluster.instance_disk_files("life1") == []
    assert not (node2.paths.run_dir / "instances" / "life1").exists()
    assert "life1" not in _rows(cluster)


@pytest.mark.parametrize("args, message", [
    (("-n", "nodeX", "-s", "8M", "bad1"), "Node 'nodeX' not known"),
    (("-n", "node2", "-s", "8M", "dup1"), "Instance 'dup1' is already in the cluster"),
    (("-t", "plain", "-n", "node2", "-s", "8M", "bad2"), "Disk template plain is not enabled"),
    (("-n", "node2", "-s", "12Q", "bad3"), "Invalid size '12Q'"),
    (("-n", "node2", "--disk", "0:size=-1", "bad4"), "Invalid size '-1'"),
    (("-n", "node2", "-s", "8M", "-H", "kvm", "bad5"), "Hypervisor kvm is not enabled"),
    (("-n", "node2", "-s", "8M", "-B", "color=red", "bad6"), "Unknown backend parameter"),
])
def test_bad_input_is_one_clear_line_and_leaves_nothing(
        cluster: E2ECluster, args: tuple[str, ...], message: str) -> None:
    if cluster.instance_conf("dup1") is None:
        cluster.gnt("gnt-instance", "add", "-n", "node3", "-s", "8M", "--no-start", "dup1")
    before = sorted(_rows(cluster))
    dup_disks = cluster.instance_disk_files("dup1")
    proc = cluster.gnt("gnt-instance", "add", *args, ok=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert sorted(_rows(cluster)) == before
    name = args[-1]
    if name != "dup1":
        assert cluster.instance_disk_files(name) == []
    assert cluster.instance_disk_files("dup1") == dup_disks


def _write_hook(node: NodeSpec, hpath: str, phase: str, out: Path) -> Path:
    hook_dir = node.paths.hooks_dir / f"{hpath}-{phase}.d"
    hook_dir.mkdir(parents=True, exist_ok=True)
    script = hook_dir / "50-dump"
    script.write_text(f"#!/bin/sh\nenv > {out}\n")
    script.chmod(0o755)
    return script


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_instance_hooks_run_on_master_and_primary(cluster: E2ECluster,
                                                   tmp_path: Path) -> None:
    scripts = []
    for node in cluster.nodes:
        for hpath, phase in (("instance-add", "post"), ("instance-start", "pre"),
                             ("instance-stop", "post")):
            scripts.append(_write_hook(node, hpath, phase,
                                       tmp_path / f"{node.name}-{hpath}-{phase}"))
    try:
        cluster.gnt("gnt-instance", "add", "-n", "node2", "-s", "8M", "--no-start", "--tags",
                    "web,db", "hook1")
        cluster.gnt("gnt-instance", "start", "hook1")
        cluster.gnt("gnt-instance", "stop", "--timeout", "15", "hook1")
    finally:
        for script in scripts:
            script.unlink()
        cluster.gnt("gnt-instance", "remove", "-f", "hook1")
    for hpath, phase in (("instance-add", "post"), ("instance-start", "pre"),
                         ("instance-stop", "post")):
        assert not (tmp_path / f"node3-{hpath}-{phase}").exists()
        envs = [_read_env(tmp_path / f"{n}-{hpath}-{phase}") for n in ("node1", "node2")]
        for env in envs:
            assert env["GANETI_HOOKS_PATH"] == hpath
            assert env["GANETI_HOOKS_PHASE"] == phase
            assert env["GANETI_OBJECT_TYPE"] == "INSTANCE"
            assert env["GANETI_INSTANCE_NAME"] == "hook1"
            assert env["GANETI_INSTANCE_PRIMARY"] == "node2"
            assert env["GANETI_INSTANCE_HYPERVISOR"] == "process"
            assert env["GANETI_INSTANCE_DISK_TEMPLATE"] == "file"
            assert env["GANETI_INSTANCE_DISK_COUNT"] == "1"
            assert env["GANETI_INSTANCE_DISK0_SIZE"] == "8"
            assert env["GANETI_INSTANCE_NIC_COUNT"] == "1"
            assert env["GANETI_INSTANCE_NIC0_MAC"].startswith("aa:00:00:")
            assert env["GANETI_INSTANCE_TAGS"] == "db web"
            assert env["GANETI_MASTER"] == "node1"
    add_env = _read_env(tmp_path / "node2-instance-add-post")
    assert add_env["GANETI_ADD_MODE"] == "create"
    assert add_env["GANETI_OP_CODE"] == "OP_INSTANCE_CREATE"
    assert _read_env(tmp_path / "node1-instance-start-pre")["GANETI_FORCE"] == "False"
    stop_env = _read_env(tmp_path / "node2-instance-stop-post")
    assert stop_env["GANETI_TIMEOUT"] == "15"
    assert stop_env["GANETI_POST_INSTANCE_STATUS"] == "down"
