"""Load: many no-op jobs from concurrent clients while exports run.

Defaults fit the test suite (1,000 jobs, 16 clients, 4 exports); tools/soak
multiplies them.  Checked: every job succeeds, nothing is lost, the master's
memory stays bounded, no lock is left owned or pending, the log shows no
lock-order violation or traceback.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from support.cluster import E2ECluster, cluster_fixture
from support.reliability import (
    WAIT,
    add_instance,
    client,
    master_pid,
    rss_kib,
    scaled,
    wait_final,
)

from ganeti import constants, opcodes
from ganeti.tools.local_cluster import SOURCE_TOP

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 16
EXPORTS = 4
# generous: the queue keeps finished jobs in memory until archived
RSS_GROWTH_LIMIT_KIB = 256 * 1024


cluster = cluster_fixture("load", 3)


def _round(cluster: E2ECluster, per_client: int) -> tuple[dict[int, str], float]:
    """CLIENTS submitters, per_client jobs each, plus EXPORTS exports; all must succeed."""
    accepted: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def submitter() -> None:
        op = opcodes.OpTestDelay.create(duration=0)
        try:
            with client(cluster) as cl:
                ids = [cl.submit_job([op]) for _ in range(per_client)]
        except Exception as err:  # reported below; the test must see every failure
            with lock:
                failures.append(f"{type(err).__name__}: {err}")
            return
        with lock:
            accepted.extend(ids)

    start = time.monotonic()
    exports = [subprocess.Popen(
        [sys.executable, str(SOURCE_TOP / "scripts" / "gnt-backup"), "export", "-n",
         ("node2", "node3")[idx % 2], f"load{idx}"], env=cluster.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for idx in range(EXPORTS)]
    threads = [threading.Thread(target=submitter) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 5)
    assert not failures, failures[:5]
    with client(cluster) as cl:
        status = wait_final(cl, accepted, timeout=WAIT * 5)
    elapsed = time.monotonic() - start
    for proc in exports:
        out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, out + err
    assert len(accepted) == len(set(accepted)) == CLIENTS * per_client
    assert set(status.values()) == {"success"}
    return status, elapsed


def test_jobs_and_exports_under_load(cluster: E2ECluster) -> None:
    # soak: 5 rounds of 4,000, archiving in between as the watcher does (the
    # queue refuses more than max_queued_jobs unarchived jobs: JobQueueFull)
    rounds = scaled(1, 5)
    per_client = -(-scaled(1000, 4000) // CLIENTS)  # at least 1,000 per round
    for idx in range(EXPORTS):
        add_instance(cluster, f"load{idx}", "node1", "8M", "--no-start")
    rss = [rss_kib(master_pid(cluster))]
    total, elapsed = 0, 0.0
    for _ in range(rounds):
        status, seconds = _round(cluster, per_client)
        total += len(status)
        elapsed += seconds
        with client(cluster) as cl:
            archived, left = cl.auto_archive_jobs(-1, WAIT)
        assert archived >= len(status) and left == 0
        rss.append(rss_kib(master_pid(cluster)))

    for idx in range(EXPORTS):
        node = cluster.nodes[1 + idx % 2]
        assert (node.paths.export_dir / f"load{idx}" / constants.EXPORT_CONF_FILE).is_file()
    locks = cluster.gnt("gnt-debug", "locks", "--no-headers", "-o",
                        "name,mode,owner,pending").stdout
    assert "node1" in locks  # the monitor lists the locks, none owned or pending
    for line in locks.splitlines():
        name, *rest = line.split()
        assert all(cell == "-" for cell in rest), f"lock {name} still held: {line}"
    log = (cluster.master.paths.log_file(constants.MASTERD)).read_text()
    assert "Traceback" not in log
    assert "violat" not in log.lower()
    growth = rss[-1] - rss[0]
    assert growth < RSS_GROWTH_LIMIT_KIB, f"master RSS grew by {growth} KiB: {rss}"
    print(f"\nload: {total} jobs in {rounds} round(s) from {CLIENTS} clients + {EXPORTS}"
          f" exports per round in {elapsed:.1f}s = {total / elapsed:.0f} jobs/s; master RSS"
          f" (MiB) {[r // 1024 for r in rss]}; 0 lost, 0 locks held")
