"""Ganeti 3.0.2's own, unpatched command-line clients against our master daemon.

Each test runs one of Ganeti's gnt-* scripts (pointed at the cluster only
through GANETI_ROOTDIR/GANETI_HOSTNAME, so it connects to our ``ganeti-query``
socket with LUXI version 3000000) and checks what it printed against what our
own tools and the configuration say.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from support.cluster import E2ECluster
from support.ganeti_oracle import Ganeti3

from ganeti import constants, luxi, opcodes

WAIT = 60.0


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def _client(cluster: E2ECluster) -> luxi.Client:
    return luxi.Client(str(cluster.master.paths.master_socket), timeout=WAIT)


def _our_jobs(cluster: E2ECluster) -> dict[str, str]:
    """Job id -> status as our own gnt-job list prints them."""
    out = cluster.gnt("gnt-job", "list", "--no-headers", "-o", "id,status").stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _wait_status(cluster: E2ECluster, job_id: int, wanted: set[str]) -> str:
    return cluster.wait_job_status(job_id, wanted)


@pytest.fixture(scope="module")
def instance(cluster: E2ECluster) -> str:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", "g3cli1")
    return "g3cli1"


def test_the_query_socket_is_served(cluster: E2ECluster) -> None:
    paths = cluster.master.paths
    assert paths.query_socket.is_socket() and paths.master_socket.is_socket()


def test_gnt_job_list(ganeti3: Ganeti3, cluster: E2ECluster, instance: str) -> None:
    out = _ok(ganeti3.run(cluster, "gnt-job", "list", "--no-headers"))
    theirs = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert theirs == _our_jobs(cluster)
    assert any(f"INSTANCE_CREATE({instance})" in line for line in out.splitlines())
    # a status filter (qlang's MakeSimpleFilter) and the archived column
    out = _ok(ganeti3.run(cluster, "gnt-job", "list", "--no-headers", "--archived",
                          "-o", "id,status"))
    assert {line.split()[0] for line in out.splitlines()} == set(_our_jobs(cluster))


def test_gnt_job_info(ganeti3: Ganeti3, cluster: E2ECluster, instance: str) -> None:
    job_id = next(j for j, _ in _our_jobs(cluster).items())
    with _client(cluster) as cl:
        jobs = cl.query("job", ["id", "summary"])["data"]
    create = next(row[0][1] for row in jobs if row[1][1] == [f"INSTANCE_CREATE({instance})"])
    out = _ok(ganeti3.run(cluster, "gnt-job", "info", str(create), job_id))
    assert f"Job ID: {create}" in out and f"Job ID: {job_id}" in out
    assert "Opcode: OP_INSTANCE_CREATE" in out
    assert f"instance_name: {instance}" in out
    assert "Status: success" in out


def test_gnt_job_watch(ganeti3: Ganeti3, cluster: E2ECluster, instance: str) -> None:
    with _client(cluster) as cl:
        rows = cl.query("job", ["id", "summary", "oplog"])["data"]
    job_id, _, oplog = next((r[0][1], r[1][1], r[2][1]) for r in rows
                            if r[1][1] == [f"INSTANCE_CREATE({instance})"])
    messages = [entry[3] for entry in oplog[0]]
    assert messages
    # a finished job: its log is replayed; the job id travels as a string
    out = _ok(ganeti3.run(cluster, "gnt-job", "watch", str(job_id)))
    assert f"Output from job {job_id} follows" in out
    for message in messages:
        assert message in out
    # a job still running: watch follows it to the end
    with _client(cluster) as cl:
        running = cl.submit_job([opcodes.OpTestDelay.create(duration=2)])
    out = _ok(ganeti3.run(cluster, "gnt-job", "watch", str(running)))
    assert f"Output from job {running} follows" in out
    assert _our_jobs(cluster)[str(running)] == "success"


def test_gnt_job_cancel(ganeti3: Ganeti3, cluster: E2ECluster, instance: str) -> None:
    with cluster.holding_hypervisor_lock("node2", instance), _client(cluster) as cl:
        # the blocker: a shutdown of the (stopped) instance, holding the instance's lock
        # and running until the block ends (the node's stop waits for the held lock)
        blocker = cl.submit_job([opcodes.OpInstanceShutdown.create(instance_name=instance)])
        _wait_status(cluster, blocker, {constants.OP_STATUS_RUNNING})
        waiter = cl.submit_job([opcodes.OpTestDelay.create(duration=0,
                                                           lock_instances=[instance])])
        _wait_status(cluster, waiter, {constants.OP_STATUS_WAITING})
        out = _ok(ganeti3.run(cluster, "gnt-job", "cancel", str(waiter)))
        assert f"Job {waiter}" in out and "cancel" in out
        assert _wait_status(cluster, waiter, set(constants.JOBS_FINALIZED)) == \
            constants.OP_STATUS_CANCELED
        assert _our_jobs(cluster)[str(waiter)] == "canceled"
        # killing a running job is refused clearly; it goes on running
        proc = ganeti3.run(cluster, "gnt-job", "cancel", "--kill", "--yes-do-it",
                           str(blocker))
        assert proc.returncode != 0
        assert f"Job {blocker} is running and cannot be killed" in proc.stdout
        proc = ganeti3.run(cluster, "gnt-job", "cancel", str(blocker))
        assert proc.returncode != 0 and "cannot be canceled" in proc.stdout
        assert _our_jobs(cluster)[str(blocker)] == "running"
    # released: the blocker ends (later tests need the instance's lock and find it stopped)
    assert _wait_status(cluster, blocker, set(constants.JOBS_FINALIZED)) == \
        constants.OP_STATUS_SUCCESS


def test_gnt_cluster_info(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    out = _ok(ganeti3.run(cluster, "gnt-cluster", "info"))
    ours = cluster.gnt("gnt-cluster", "info").stdout.splitlines()
    assert "Master node: node1" in out.splitlines()
    assert re.search(r"^Architecture \(this node\): \S+ \(\S+\)$", out, re.M)
    assert "  lvm reserved volumes: (none)" in out.splitlines()
    # laid out as 3.0's: the lines both print are the same
    for key in ("Cluster name", "Cluster UUID", "Creation time", "Modification time",
                "Master node", "Architecture (this node)", "Default hypervisor",
                "Enabled hypervisors", "  mac prefix", "  file storage path",
                "  enabled disk templates"):
        mine = [line for line in ours if line.startswith(f"{key}: ")]
        assert len(mine) == 1 and mine[0] in out.splitlines(), (key, mine, out)


def test_gnt_cluster_version(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    out = _ok(ganeti3.run(cluster, "gnt-cluster", "version")).splitlines()
    assert f"Software version: {constants.RELEASE_VERSION}" in out
    assert f"Internode protocol: {constants.PROTOCOL_VERSION}" in out
    assert f"Configuration format: {constants.CONFIG_VERSION}" in out
    assert f"Export interface: {constants.EXPORT_VERSION}" in out


def test_gnt_instance_list(ganeti3: Ganeti3, cluster: E2ECluster, instance: str) -> None:
    out = _ok(ganeti3.run(cluster, "gnt-instance", "list"))
    header, *rows = out.splitlines()
    assert header.split() == ["Instance", "Hypervisor", "OS", "Primary_node", "Status",
                              "Memory"]
    # the OS column is empty here: the instance was added without an OS; a stopped
    # instance's memory is unavailable ("-"), as Ganeti shows it
    assert [instance, "process", "node2", "ADMIN_down", "-"] in [r.split() for r in rows]
    out = _ok(ganeti3.run(cluster, "gnt-instance", "list", "--no-headers", "--separator=|",
                          "-o", "name,pnode,status,disk.sizes,be/maxmem"))
    conf = cluster.instance_conf(instance)
    assert conf is not None
    size = conf["disks"][0]["size"]
    # with a separator Ganeti prints sizes in MiB without a unit
    assert f"{instance}|node2|ADMIN_down|{size}|128" in out.splitlines()
    # names as arguments (3.0 turns them into a filter)
    out = _ok(ganeti3.run(cluster, "gnt-instance", "list", "--no-headers", "-o", "name",
                          instance))
    assert out.split() == [instance]


def test_gnt_backup_list(ganeti3: Ganeti3, cluster: E2ECluster, instance: str) -> None:
    cluster.gnt("gnt-backup", "export", "-n", "node3", instance)
    ours = cluster.gnt("gnt-backup", "list", "--no-headers").stdout.split()
    out = _ok(ganeti3.run(cluster, "gnt-backup", "list", "--no-headers"))
    assert out.split() == ours and ["node3", instance] == ours[:2]
    out = _ok(ganeti3.run(cluster, "gnt-backup", "list", "--no-headers", "--node", "node1"))
    assert instance not in out


def test_gnt_debug_delay(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    before = set(_our_jobs(cluster))
    _ok(ganeti3.run(cluster, "gnt-debug", "delay", "0.1"))
    new = set(_our_jobs(cluster)) - before
    assert len(new) == 1 and _our_jobs(cluster)[new.pop()] == "success"
    proc = ganeti3.run(cluster, "gnt-debug", "delay", "--submit", "0.1")
    job_id = re.search(r"JobID: (\d+)", proc.stdout + proc.stderr)
    assert proc.returncode == 0 and job_id, proc.stdout + proc.stderr
    _ok(ganeti3.run(cluster, "gnt-job", "wait", job_id.group(1)))
    assert _our_jobs(cluster)[job_id.group(1)] == "success"


def test_3_0_client_keeps_its_connection_after_a_refusal(ganeti3: Ganeti3,
                                                         cluster: E2ECluster) -> None:
    """The same Transport carries a refused call and the next one (no 'Broken pipe')."""
    code = f"""
from ganeti import luxi, errors
cl = luxi.Client(address={str(cluster.master.paths.query_socket)!r})
refused = None
try:
    cl.CallMethod("NoSuchMethod", [])
except Exception as err:
    refused = type(err).__name__ + ": " + str(err)
transport = cl.transport
jobs = cl.QueryJobs(None, ["id"])
result = {{"refused": refused, "same": cl.transport is transport, "jobs": len(jobs),
          "instances": cl.QueryInstances([], ["name", "pnode"], False),
          "tags": cl.QueryTags("cluster", ""),
          "config": cl.QueryConfigValues(["cluster_name", "master_node"])}}
"""
    result = ganeti3.eval(code)
    assert result["refused"] and "Unknown LUXI method" in result["refused"]
    assert result["same"] is True, "the server closed the connection on a refusal"
    assert result["jobs"] == len(_our_jobs(cluster))
    with _client(cluster) as cl:
        ours = cl.query_instances([], ["name", "pnode"])
        name = cl.query_config_values(["cluster_name"])[0]
    assert result["instances"] == ours
    assert result["config"] == [name, "node1"]
    assert result["tags"] == []
