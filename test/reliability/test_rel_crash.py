"""kill -9 of ganeti-masterd mid-export and mid-burst: nothing lost, nothing left behind.

The watcher (run as cron would) restarts the master, removes the leftovers
of the interrupted export (staging dir, transfers, snapshots) through its
cleanup job and starts the instance the export had shut down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import E2ECluster, cluster_fixture
from support.reliability import (
    WAIT,
    add_instance,
    client,
    fill_disk,
    instance_running,
    kill9,
    leftovers,
    scaled,
    wait_final,
    watcher,
)

from ganeti import constants, errors, opcodes
from ganeti.rpc.client import RpcRunner
from ganeti.tools.local_cluster import SOURCE_TOP

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


cluster = cluster_fixture("crash", 2)



def _staging_has_data(staging: Path) -> bool:
    try:
        return any(f.stat().st_size > 0 for f in staging.iterdir())
    except OSError:
        return False


def _export_cli(cluster: E2ECluster, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SOURCE_TOP / "scripts" / "gnt-backup"), "export", *argv],
        env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_master_killed_during_export(cluster: E2ECluster, rpc: RpcRunner) -> None:
    add_instance(cluster, "crash1", "node1", "160M", "--no-start")
    fill_disk(cluster, "crash1", 128)
    cluster.gnt("gnt-instance", "start", "crash1")
    # a complete older export must survive the interrupted one untouched
    cluster.gnt("gnt-backup", "export", "-n", "node2", "--long-sleep", "crash1")
    old_conf = (cluster.node("node2").paths.export_dir / "crash1" /
                constants.EXPORT_CONF_FILE).read_text()
    assert instance_running(cluster, "crash1")

    staging = cluster.node("node2").paths.export_dir / ".staging" / "crash1"
    proc = _export_cli(cluster, "-n", "node2", "--long-sleep", "--compress", "gzip", "crash1")
    deadline = time.monotonic() + WAIT
    while not _staging_has_data(staging):
        assert proc.poll() is None, f"export ended before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline, "the export never started copying"
        time.sleep(0.01)
    kill9(cluster, constants.MASTERD)
    _out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode != 0
    assert "master" in err.lower()
    assert not instance_running_on_node(cluster, "crash1")  # the export had stopped it

    res = watcher(cluster)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "restarted ganeti-masterd" in res.stdout
    assert "removed export leftovers on node2: .staging/crash1" in res.stdout
    assert "restarted instance crash1" in res.stdout

    with client(cluster) as cl:
        rows = cl.query_jobs(None, ["id", "status", "summary", "opresult"])
    exports = [r for r in rows if r[2] == ["BACKUP_EXPORT(crash1)"]]
    assert [r[1] for r in exports] == ["success", "error"]
    assert "Unclean master daemon shutdown" in str(exports[1][3])
    assert all(r[1] in constants.JOBS_FINALIZED for r in rows)
    assert leftovers(cluster, rpc) == {}
    assert instance_running(cluster, "crash1")
    assert (cluster.node("node2").paths.export_dir / "crash1" /
            constants.EXPORT_CONF_FILE).read_text() == old_conf
    # a second run finds nothing left to do
    again = watcher(cluster)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def instance_running_on_node(cluster: E2ECluster, name: str) -> bool:
    from ganeti.hypervisor import procutil
    run_dir = cluster.master.paths.run_dir / "instances" / name
    return bool(procutil.find_processes(str(run_dir)))


def test_master_killed_during_submission_burst(cluster: E2ECluster) -> None:
    """Clients keep submitting through the kill and the watcher's restart."""
    clients, per_client = 8, scaled(40, 400)
    accepted: list[int] = []
    refused: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    halfway = threading.Event()

    def submit() -> None:
        op = opcodes.OpTestDelay.create(duration=0.01)
        for _ in range(per_client):
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    with client(cluster, timeout=10) as cl:
                        job_id = cl.submit_job([op])
                    break
                except (errors.NoMasterError, errors.ConnectionClosedError) as err:
                    # typed: no master, or the connection died mid-request; retry
                    with lock:
                        refused.append(type(err).__name__)
                except errors.GenericError as err:
                    with lock:
                        failures.append(f"{type(err).__name__}: {err}")
                    return
                if time.monotonic() > deadline:
                    with lock:
                        failures.append("master did not come back")
                    return
                time.sleep(0.05)
            with lock:
                accepted.append(job_id)
                if len(accepted) >= clients * per_client // 2:
                    halfway.set()

    threads = [threading.Thread(target=submit) for _ in range(clients)]
    for thread in threads:
        thread.start()
    assert halfway.wait(WAIT)
    kill9(cluster, constants.MASTERD)
    res = watcher(cluster)   # while the clients keep trying
    assert "restarted ganeti-masterd" in res.stdout, res.stdout + res.stderr
    for thread in threads:
        thread.join(WAIT)
    assert not failures, failures[:5]
    assert refused, "the kill should have refused some submissions"
    with client(cluster) as cl:
        status = wait_final(cl, accepted)
        errored = [j for j, v in status.items() if v == "error"]
        results = cl.query_jobs(errored, ["opresult"]) if errored else []
    # every acknowledged job exists and ended; only those running at the kill failed
    assert all("Unclean master daemon shutdown" in str(r) for r in results), results
    assert len(accepted) == clients * per_client
    assert set(status) == set(accepted)
    assert set(status.values()) <= {"success", "error"}
    print(f"\nburst: {len(accepted)} jobs acknowledged across a kill -9 of the master"
          f" ({len(refused)} refused attempts retried), all final:"
          f" {sum(v == 'success' for v in status.values())} success,"
          f" {sum(v == 'error' for v in status.values())} error (running at the kill),"
          " 0 lost")


@pytest.fixture(scope="module")
def rcluster(reflink_fs: Path) -> Iterator[E2ECluster]:
    """Node roots on a reflink filesystem: running instances are exported from snapshots."""
    lc = E2ECluster.create_and_start(
        reflink_fs / f"crash-{os.getpid()}-{time.monotonic_ns()}", node_count=2)
    try:
        yield lc
    finally:
        lc.stop(log=lambda _m: None)


def test_master_killed_during_snapshot_export(rcluster: E2ECluster) -> None:
    add_instance(rcluster, "snap1", "node1", "160M", "--no-start")
    fill_disk(rcluster, "snap1", 128)
    rcluster.gnt("gnt-instance", "start", "snap1")
    staging = rcluster.node("node2").paths.export_dir / ".staging" / "snap1"
    proc = _export_cli(rcluster, "-n", "node2", "--noshutdown", "--compress", "gzip", "snap1")
    deadline = time.monotonic() + WAIT
    while not _staging_has_data(staging):
        assert proc.poll() is None, f"export ended before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline, "the export never started copying"
        time.sleep(0.01)
    kill9(rcluster, constants.MASTERD)
    proc.communicate(timeout=WAIT)
    runner = rcluster.rpc_runner()
    try:
        before = leftovers(rcluster, runner)
        assert any(".snap-export-" in item for item in before.get("node1", [])), before
        res = watcher(rcluster)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "removed leftover snapshot" in res.stdout, res.stdout
        assert leftovers(rcluster, runner) == {}
    finally:
        runner.close()
    assert instance_running(rcluster, "snap1")
    assert not (rcluster.node("node2").paths.export_dir / "snap1").exists()
