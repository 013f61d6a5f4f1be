"""/metrics from the RAPI daemon of a real cluster.

Exports (gnt-backup) show up in the metrics and in the ``export.*`` instance
fields, failures count and a success resets them, the figures survive a master
restart (the RAPI daemon keeps serving), jobs by status match gnt-job list, a
throttled export is a transfer in flight; read-only users may scrape, nobody
unauthenticated.

The tests of this module run in order on one cluster (each builds on the
previous one's exports).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.cluster import E2ECluster, output
from support.rapi import RapiAnswer, RapiClient

from ganeti import constants, daemon, luxi, query

pytestmark = pytest.mark.e2e

MIB = 1 << 20
WAIT = 60.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_raw(cluster: E2ECluster, user: str | None = "reader",
               password: str = "secret") -> RapiAnswer:
    """GET /metrics from the cluster's RAPI daemon (reader: the fixture's read-only user)."""
    return RapiClient(cluster, user=user, password=password).request("GET", "/metrics")


def scrape(cluster: E2ECluster) -> Samples:
    resp = scrape_raw(cluster)
    assert resp.status == 200, resp.body
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.body)
            for s in family.samples}


def inst(samples: Samples, metric: str, name: str) -> float | None:
    return samples.get((f"ganeti_{metric}", (("instance_name", name),)))


def by_label(samples: Samples, metric: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (name, labels), value in samples.items()
            if name == f"ganeti_{metric}"}


def fields(cluster: E2ECluster, name: str, *names: str) -> dict[str, Any]:
    """The instance's export.* fields from RAPI's /2/query/instance (a read-only user)."""
    resp = RapiClient(cluster, user="reader").request(
        "PUT", "/2/query/instance", body={"fields": ["name", *names],
                                          "qfilter": ["=", "name", name]})
    assert resp.status == 200, resp.body
    (row,) = resp.body["data"]
    return {n: value if status == query.RS_NORMAL else None
            for n, (status, value) in zip(names, row[1:], strict=True)}


def list_fields(cluster: E2ECluster, name: str, *names: str) -> list[str]:
    """What gnt-instance list -o prints for them."""
    proc = cluster.gnt("gnt-instance", "list", "--no-headers", "--separator=|", "-o",
                       ",".join(names), name)
    return proc.stdout.strip().split("|")


def fill_disk(cluster: E2ECluster, name: str, size: int) -> None:
    with open(cluster.disk_path(name), "r+b") as handle:
        handle.write(os.urandom(size))


def wait_job(cluster: E2ECluster, job_id: int) -> str:
    deadline = time.monotonic() + WAIT
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        while time.monotonic() < deadline:
            ((status,),) = cl.query_jobs([job_id], ["status"])
            if status in constants.JOBS_FINALIZED:
                return str(status)
            time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def instances(cluster: E2ECluster) -> list[str]:
    for name in ("web1", "idle1"):
        cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                    "0:size=8M", "--no-start", name)
    fill_disk(cluster, "web1", 4 * MIB)
    return ["web1", "idle1"]


def test_never_exported_instances_alert(cluster: E2ECluster, instances: list[str]) -> None:
    got = scrape(cluster)
    for name in instances:
        # 0, not absent: time() - 0 > 26 h makes "no backup in 26 hours" fire
        assert inst(got, "instance_export_last_success_timestamp_seconds", name) == 0
        assert inst(got, "instance_export_consecutive_failures", name) == 0
        assert inst(got, "instance_export_last_duration_seconds", name) is None
        created = inst(got, "instance_created_timestamp_seconds", name)
        assert created is not None and abs(created - time.time()) < 600
    assert fields(cluster, "web1", "export.last_success", "export.failures") == {
        "export.last_success": None, "export.failures": 0}
    # unavailable, as Ganeti prints it with a separator
    assert list_fields(cluster, "web1", "export.last_success", "export.failures") == [
        "(unavail)", "0"]


def test_export_shows_time_duration_bytes(cluster: E2ECluster, instances: list[str]) -> None:
    before = time.time()
    cluster.gnt("gnt-backup", "export", "-n", "node3", "web1")
    after = time.time()
    got = scrape(cluster)
    last = inst(got, "instance_export_last_success_timestamp_seconds", "web1")
    assert last is not None and before <= last <= after
    duration = inst(got, "instance_export_last_duration_seconds", "web1")
    assert duration is not None and 0 < duration <= after - before
    sent = inst(got, "instance_export_last_sent_bytes", "web1")
    data = inst(got, "instance_export_last_data_bytes", "web1")
    # 4 MiB of random data: incompressible, all of it sent (plus the framing)
    assert data is not None and data >= 4 * MIB
    assert sent is not None and sent >= data
    assert inst(got, "instance_export_last_disk_bytes", "web1") == 8 * MIB
    assert inst(got, "instance_export_consecutive_failures", "web1") == 0
    # the other instance is untouched
    assert inst(got, "instance_export_last_success_timestamp_seconds", "idle1") == 0
    # the same figures as instance fields, in /2/query/instance and gnt-instance list
    values = fields(cluster, "web1", "export.last_success", "export.duration",
                    "export.bytes", "export.data_bytes", "export.target",
                    "export.failures")
    assert values == {"export.last_success": last, "export.duration": duration,
                      "export.bytes": sent, "export.data_bytes": data,
                      "export.target": "node3", "export.failures": 0}
    shown = list_fields(cluster, "web1", "export.bytes", "export.target", "export.failures")
    assert shown == [str(int(sent)), "node3", "0"]


def test_failures_count_and_success_resets(cluster: E2ECluster,
                                           instances: list[str]) -> None:
    first = fields(cluster, "web1", "export.last_success")["export.last_success"]
    staging = cluster.node("node3").paths.export_dir / ".staging"
    # 1. the target cannot prepare its staging directory (a file is in the way): Exec fails
    os.rmdir(staging)
    staging.write_text("in the way")
    try:
        proc = cluster.gnt("gnt-backup", "export", "-n", "node3", "web1", ok=False)
    finally:
        staging.unlink()
    assert proc.returncode != 0 and "staging" in output(proc)
    got = scrape(cluster)
    assert inst(got, "instance_export_consecutive_failures", "web1") == 1
    # 2. a drained target: refused before anything is touched (CheckPrereq)
    cluster.gnt("gnt-node", "modify", "--drained", "yes", "node3")
    try:
        proc = cluster.gnt("gnt-backup", "export", "-n", "node3", "web1", ok=False)
    finally:
        cluster.gnt("gnt-node", "modify", "--drained", "no", "node3")
    assert proc.returncode != 0 and "drained" in output(proc)
    got = scrape(cluster)
    assert inst(got, "instance_export_consecutive_failures", "web1") == 2
    failed_at = inst(got, "instance_export_last_failure_timestamp_seconds", "web1")
    assert failed_at is not None and failed_at > first
    # the last success is still the first export
    assert inst(got, "instance_export_last_success_timestamp_seconds", "web1") == first
    values = fields(cluster, "web1", "export.failures", "export.last_error")
    assert values["export.failures"] == 2 and "drained" in values["export.last_error"]
    # a dry run is no attempt
    cluster.gnt("gnt-backup", "export", "--dry-run", "-n", "node3", "web1", ok=False)
    assert fields(cluster, "web1", "export.failures") == {"export.failures": 2}

    # 3. the figures survive a master restart; without a master the scrape fails
    # (a 502: Prometheus' up is 0, and GanetiMetricsMissing fires after a while)
    stop_master(cluster)
    try:
        resp = scrape_raw(cluster)
        assert resp.status == 502, (resp.status, resp.body)
    finally:
        cluster.start(log=lambda _msg: None)
    got = scrape(cluster)
    assert inst(got, "instance_export_consecutive_failures", "web1") == 2
    assert inst(got, "instance_export_last_success_timestamp_seconds", "web1") == first

    # 4. a success resets the count
    cluster.gnt("gnt-backup", "export", "-n", "node3", "web1")
    got = scrape(cluster)
    assert inst(got, "instance_export_consecutive_failures", "web1") == 0
    last = inst(got, "instance_export_last_success_timestamp_seconds", "web1")
    assert last is not None and last > first


def stop_master(cluster: E2ECluster) -> None:
    pid_file = cluster.master.paths.pid_file(constants.MASTERD)
    pid = daemon.read_pid(pid_file)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT
    while cluster.is_running(constants.MASTERD, cluster.master):
        assert time.monotonic() < deadline, "masterd did not stop"
        time.sleep(0.05)


def test_transfer_in_flight(cluster: E2ECluster, instances: list[str]) -> None:
    fill_disk(cluster, "idle1", 4 * MIB)
    out = cluster.gnt("gnt-backup", "export", "--submit", "--full", "--bwlimit", "512",
                      "-n", "node3", "idle1").stdout
    job_id = int(out.split()[-1])
    deadline = time.monotonic() + WAIT
    seen: dict[str, float] = {}
    while time.monotonic() < deadline and not seen.get("local"):
        seen = by_label(scrape(cluster), "transfers_in_flight", "kind")
        time.sleep(0.1)
    assert seen == {"local": 1, "remote-send": 0, "remote-receive": 0}
    resp = RapiClient(cluster, user="reader").request(
        "GET", "/2/query/transfer", query={"fields": "kind,label,source_node,dest_node"})
    assert resp.status == 200, resp.body
    rows = resp.body["data"]
    assert [[value for _, value in row] for row in rows] == [
        ["local", "disk/0", "node2", "node3"]]
    assert wait_job(cluster, job_id) == constants.OP_STATUS_SUCCESS
    got = scrape(cluster)
    assert by_label(got, "transfers_in_flight", "kind")["local"] == 0
    assert inst(got, "instance_export_last_success_timestamp_seconds", "idle1")


def test_jobs_by_status_match_gnt_job_list(cluster: E2ECluster,
                                           instances: list[str]) -> None:
    listed = Counter(cluster.gnt("gnt-job", "list", "--no-headers", "-o", "status")
                     .stdout.split())
    jobs = by_label(scrape(cluster), "jobs", "status")
    assert sum(listed.values()) >= 5 and listed["error"] >= 2
    assert jobs == {status: float(listed.get(status, 0))
                    for status in constants.JOB_STATUS_ALL}


def test_permissions(cluster: E2ECluster) -> None:
    # a read-only user may scrape (above, every scrape is one); so may an administrator
    assert scrape_raw(cluster, "admin").status == 200
    for user, password in ((None, "secret"), ("reader", "wrong")):
        resp = scrape_raw(cluster, user, password)
        assert resp.status == 401 and "WWW-Authenticate" in resp.headers
