"""kill -9 of the master during a burst of instance creates loses no acknowledged create.

The configuration store acknowledges a change only once the journal append
holding it is durable (group commit, lib/config.py); a crash at any moment
leaves a file and journal that load and hold every create a client saw succeed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
from support.cluster import E2ECluster, cluster_fixture

from ganeti import config_journal, constants, daemon, opcodes
from ganeti.config import ConfigStore

pytestmark = pytest.mark.e2e

cluster = cluster_fixture("cfgcrash", node_count=2)

BURST = 30
ROUNDS = 3
WAIT = 300.0  # generous: the machine is shared


def _master_pid(cluster: E2ECluster) -> int:
    pid = daemon.read_pid(cluster.master.paths.pid_file(constants.MASTERD))
    assert pid is not None
    return pid


def _configured(cluster: E2ECluster) -> set[str]:
    """Instance names in the master's configuration file (which must load)."""
    snap = ConfigStore(cluster.master.paths.cluster_conf_file).snapshot()
    return {i.name for i in snap.get_all_instances_info().values()}


def _kill_master(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # a killed daemon nobody reaps stays a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split(")")[-1].split()[0] == "Z":
                return
        time.sleep(0.02)
    raise AssertionError(f"masterd {pid} survived SIGKILL")


def _final_statuses(cluster: E2ECluster, job_ids: list[int]) -> list[str]:
    deadline = time.monotonic() + WAIT
    with cluster.luxi_client() as cl:
        while True:
            statuses = [row[0] for row in cl.query_jobs(job_ids, ["status"])]
            if all(s in constants.JOBS_FINALIZED for s in statuses):
                return statuses
            assert time.monotonic() < deadline, f"jobs not finished: {statuses}"
            time.sleep(0.2)


def test_kill_master_during_create_burst(cluster: E2ECluster) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"kill points from seed {seed}")
    acked: set[str] = set()
    succeeded: set[str] = set()
    interrupted = 0
    for rnd in range(ROUNDS):
        names = [f"burst{rnd}-{i}" for i in range(BURST)]
        ops = [[opcodes.OpInstanceCreate.create(
            instance_name=name, disk_template=constants.DT_FILE, disks=[{"size": 1}],
            nics=[{}], start=False)] for name in names]
        with cluster.luxi_client() as cl:
            results = cl.submit_many_jobs(ops)
        assert all(ok for ok, _ in results), results
        job_ids = [int(job_id) for _, job_id in results]
        by_job = dict(zip(job_ids, names, strict=True))
        pid = _master_pid(cluster)
        # watch the burst like a client would, then kill the master at a random moment
        kill_at = time.monotonic() + rng.uniform(0.2, 4.0)
        with cluster.luxi_client() as cl:
            while time.monotonic() < kill_at:
                rows = cl.query_jobs(job_ids, ["status"])
                acked |= {by_job[j] for j, row in zip(job_ids, rows, strict=True)
                          if row[0] == constants.OP_STATUS_SUCCESS}
                time.sleep(0.02)
        _kill_master(pid)
        # the file left behind loads and holds every create a client saw succeed
        on_disk = _configured(cluster)
        assert acked <= on_disk, sorted(acked - on_disk)
        cluster.start(log=lambda _msg: None)
        assert _master_pid(cluster) != pid
        statuses = _final_statuses(cluster, job_ids)
        interrupted += sum(s != constants.OP_STATUS_SUCCESS for s in statuses)
        succeeded |= {by_job[j] for j, s in zip(job_ids, statuses, strict=True)
                      if s == constants.OP_STATUS_SUCCESS}
        # a job the queue recorded as successful has its instance in the configuration
        on_disk = _configured(cluster)
        assert succeeded <= on_disk, sorted(succeeded - on_disk)
    assert acked <= succeeded
    listed = set(cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name",
                             check=True).stdout.split())
    assert listed == _configured(cluster)
    print(f"acknowledged before a kill: {len(acked)}, jobs interrupted: {interrupted}")


def test_clean_stop_leaves_config_data_complete(cluster: E2ECluster) -> None:
    """After a clean masterd stop config.data alone holds everything (Ganeti's tools
    and people read it as plain JSON): the journal was folded in."""
    conf = cluster.master.paths.cluster_conf_file
    op = opcodes.OpInstanceCreate.create(
        instance_name="cleanstop1", disk_template=constants.DT_FILE, disks=[{"size": 1}],
        nics=[{}], start=False)
    with cluster.luxi_client() as cl:
        ((ok, job_id),) = cl.submit_many_jobs([[op]])
    assert ok, job_id
    assert _final_statuses(cluster, [int(job_id)]) == [constants.OP_STATUS_SUCCESS]
    everything, serial = config_journal.load(conf)
    cluster.stop(log=lambda _msg: None)
    try:
        journal = config_journal.journal_path(conf)
        assert not journal.exists() or journal.stat().st_size == 0
        plain = json.loads(conf.read_bytes())
        assert plain == everything and plain["serial_no"] == serial
        assert "cleanstop1" in {i["name"] for i in plain["instances"].values()}
    finally:
        cluster.start(log=lambda _msg: None)
    assert "cleanstop1" in _configured(cluster)
