"""ganeti-watcher on a real cluster: dead daemons, expired crypto material, reports."""

from __future__ import annotations

import pytest
from support.cluster import E2ECluster, cluster_fixture
from support.reliability import kill9, watcher

from ganeti import constants, crypto
from ganeti.backend import x509

pytestmark = [pytest.mark.e2e]


cluster = cluster_fixture("watch", 2)


def test_watcher_restarts_a_dead_node_daemon(cluster: E2ECluster) -> None:
    node2 = cluster.nodes[1]
    kill9(cluster, constants.NODED, node2)
    res = cluster.gnt("gnt-cluster", "verify", ok=False)
    assert res.returncode != 0 and "node2" in res.stdout + res.stderr
    out = watcher(cluster, node2)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["ganeti-watcher: restarted ganeti-noded"]
    assert cluster.is_running(constants.NODED, node2)
    cluster.gnt("gnt-cluster", "verify")
    # nothing left to do: says so, changes nothing
    again = watcher(cluster, node2)
    assert again.stdout.strip() == "ganeti-watcher: nothing to do", again.stdout


def test_watcher_removes_expired_crypto_material_only(cluster: E2ECluster) -> None:
    base = x509.x509_dir(cluster.nodes[1].paths)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    old, new = "x509-1000000000-00000000000000aa", "x509-1000000000-00000000000000bb"
    for name, validity in ((old, -60), (new, 3600)):
        cert, key = crypto.generate_self_signed(name, validity)
        (base / name).mkdir(mode=0o700)
        crypto.write_pem_pair(base / name / x509.KEY_FILE, cert, key)
        (base / name / x509.CERT_FILE).write_text(cert)
    out = watcher(cluster, cluster.nodes[1])
    assert out.returncode == 0, out.stderr
    assert f"removed expired crypto material {old}" in out.stdout
    assert not (base / old).exists()
    assert (base / new / x509.KEY_FILE).is_file()


def test_watcher_on_the_master_with_nothing_to_clean(cluster: E2ECluster) -> None:
    out = watcher(cluster)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "ganeti-watcher: nothing to do"
    jobs = cluster.gnt("gnt-job", "list", "--no-headers", "-o", "summary,status").stdout
    assert "CLUSTER_CLEANUP_LEFTOVERS success" in " ".join(jobs.split())


def test_watcher_archives_old_finished_jobs(cluster: E2ECluster) -> None:
    cluster.gnt("gnt-debug", "delay", "0")
    before = cluster.gnt("gnt-job", "list", "--no-headers", "-o", "id").stdout.split()
    assert before
    out = watcher(cluster, None, 60, "--job-age", "0")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"archived {len(before)} finished job(s) older than 0s" in out.stdout, out.stdout
    after = cluster.gnt("gnt-job", "list", "--no-headers", "-o", "id").stdout.split()
    # only the watcher's own cleanup job (submitted after archiving) is left
    assert not set(after) & set(before)
    bad = watcher(cluster, None, 60, "--job-age", "-1")
    assert bad.returncode == 2 and "--job-age" in bad.stderr
