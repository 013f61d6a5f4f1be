"""-F/--filter and name globs on every gnt-* list command, against a real 3-node cluster.

The filters are parsed by the client (ganeti.qlang) and evaluated by the master
(LUXI Query), or by the client where a list comes from an opcode (export
generations, backup schedules); either way the rows printed are what is asserted.
"""

from __future__ import annotations

import pytest
from support.cluster import E2ECluster

pytestmark = pytest.mark.e2e


def _rows(cluster: E2ECluster, *argv: str) -> list[list[str]]:
    out = cluster.gnt(*argv, "--no-headers", "--separator", "|").stdout
    return sorted(line.split("|") for line in out.splitlines())


def _names(cluster: E2ECluster, *argv: str) -> list[str]:
    return [row[0] for row in _rows(cluster, *argv, "-o", "name")]


@pytest.fixture(scope="module")
def instances(cluster: E2ECluster) -> list[str]:
    for name, node, vcpus in (("web1", "node2", 1), ("web2", "node3", 2),
                              ("db1", "node2", 4)):
        cluster.gnt("gnt-instance", "add", "-t", "file", "-n", node, "--disk", "0:size=4M",
                    "-B", f"vcpus={vcpus}", "--no-start", name)
    cluster.gnt("gnt-backup", "export", "-n", "node3", "web1")
    cluster.gnt("gnt-backup", "export", "-n", "node1", "db1")
    return ["db1", "web1", "web2"]


def test_instance_list_names_globs_and_filters(cluster: E2ECluster,
                                               instances: list[str]) -> None:
    listing = ("gnt-instance", "list")
    assert _names(cluster, *listing) == instances
    assert _names(cluster, *listing, "web1", "db1") == ["db1", "web1"]
    assert _names(cluster, *listing, "web*") == ["web1", "web2"]
    assert _names(cluster, *listing, "?b1") == ["db1"]
    assert _names(cluster, *listing, "-F", "be/vcpus >= 2") == ["db1", "web2"]
    assert _names(cluster, *listing, "--filter", "name =~ m/^WEB/i and be/vcpus < 2") == \
        ["web1"]
    # one argument that looks like a filter is read as one, without -F
    assert _names(cluster, *listing, 'not name =* "web*"') == ["db1"]
    assert _names(cluster, *listing, 'pnode == "node2" or be/vcpus == 2') == instances
    assert _names(cluster, *listing, '"node3" not in pnode and disk.count == 1') == \
        ["db1", "web1"]
    assert _rows(cluster, *listing, "-o", "name,pnode", "-F",
                 'name == "web2"') == [["web2", "node3"]]
    # names are exact without a glob: one that is not there fails the command (the
    # CLI's one not-found rule)
    missing = cluster.gnt(*listing, "web", ok=False)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "Instance 'web' not known" in missing.stderr


def test_instance_list_bad_filters_say_what_and_where(cluster: E2ECluster,
                                                      instances: list[str]) -> None:
    bad = cluster.gnt("gnt-instance", "list", "-F", "name ==", ok=False)
    assert bad.returncode == 1 and bad.stdout == ""
    assert "QueryFilterParseError" in bad.stderr and "column 6" in bad.stderr
    assert "name ==\n" in bad.stderr and "       ^" in bad.stderr
    bad = cluster.gnt("gnt-instance", "list", "-F", 'colour == "red"', ok=False)
    assert bad.returncode == 1 and "Unknown field 'colour'" in bad.stderr
    bad = cluster.gnt("gnt-instance", "list", "-F", 'be/vcpus == "2"', ok=False)
    assert bad.returncode == 1 and "cannot compare field 'be/vcpus'" in bad.stderr
    bad = cluster.gnt("gnt-instance", "list", "-F", "web1", "db1", ok=False)
    assert bad.returncode == 1 and "Exactly one argument" in bad.stderr


def test_node_list(cluster: E2ECluster, instances: list[str]) -> None:
    assert _names(cluster, "gnt-node", "list", "node?") == ["node1", "node2", "node3"]
    assert _names(cluster, "gnt-node", "list", "-F", 'name != "node1"') == ["node2", "node3"]
    assert _names(cluster, "gnt-node", "list", "-F", "not offline and master_candidate") == \
        ["node1", "node2", "node3"]
    assert _names(cluster, "gnt-node", "list", "-F", "offline") == []
    assert _names(cluster, "gnt-node", "list", "node1", "node3") == ["node1", "node3"]
    # host names compare without case (and by their first labels)
    assert _names(cluster, "gnt-node", "list", "-F", 'name == "NODE2"') == ["node2"]


def test_job_list(cluster: E2ECluster, instances: list[str]) -> None:
    ids = [int(row[0]) for row in _rows(cluster, "gnt-job", "list", "-o", "id")]
    assert len(ids) >= 5  # three adds, two exports
    first, last = min(ids), max(ids)
    assert _rows(cluster, "gnt-job", "list", "-o", "id", str(first), str(last)) == \
        sorted([[str(first)], [str(last)]])
    assert _rows(cluster, "gnt-job", "list", "-o", "id", "-F", f"id > {last - 2}") == \
        sorted([[str(last - 1)], [str(last)]])
    assert _rows(cluster, "gnt-job", "list", "-o", "id,status", "-F",
                 f'id == {first} and status == "success"') == [[str(first), "success"]]
    # --finished and a filter together
    assert _rows(cluster, "gnt-job", "list", "-o", "id", "--finished", "-F",
                 f"id == {last}") == [[str(last)]]
    bad = cluster.gnt("gnt-job", "list", "x1", ok=False)
    assert bad.returncode == 1 and "Invalid job ID" in bad.stderr


def test_backup_list(cluster: E2ECluster, instances: list[str]) -> None:
    assert _rows(cluster, "gnt-backup", "list") == [["node1", "db1"], ["node3", "web1"]]
    assert _rows(cluster, "gnt-backup", "list", "web*") == [["node3", "web1"]]
    assert _rows(cluster, "gnt-backup", "list", "-F", 'node == "node1"') == \
        [["node1", "db1"]]
    assert _rows(cluster, "gnt-backup", "list", "--node", "node3", "-F",
                 'export =~ /1$/') == [["node3", "web1"]]
    # generation fields are filtered too (evaluated by the client)
    assert _rows(cluster, "gnt-backup", "list", "-g", "-o", "export,newest", "-F",
                 'newest and export == "db1"') == [["db1", "Y"]]
    assert _rows(cluster, "gnt-backup", "list", "-o", "export", "-F",
                 "size > 0 and not protected") == [["db1"], ["web1"]]
    bad = cluster.gnt("gnt-backup", "list", "-F", "newest == 1", ok=False)
    assert bad.returncode == 1 and "cannot compare field 'newest'" in bad.stderr


def test_backup_schedule_list(cluster: E2ECluster, instances: list[str]) -> None:
    for name, target in (("nightly-web", "node3"), ("weekly-db", "node1")):
        cluster.gnt("gnt-backup", "schedule", "add", name, "--instances", "web1", "-n",
                    target, "--cron", "0 3 * * *")
    cluster.gnt("gnt-backup", "schedule", "modify", "weekly-db", "--enabled", "no")
    listing = ("gnt-backup", "schedule", "list")
    assert _names(cluster, *listing) == ["nightly-web", "weekly-db"]
    assert _names(cluster, *listing, "nightly-web") == ["nightly-web"]
    assert _names(cluster, *listing, "*-db") == ["weekly-db"]
    assert _names(cluster, *listing, "-F", "enabled") == ["nightly-web"]
    assert _names(cluster, *listing, "-F", 'not enabled and target == "node1"') == \
        ["weekly-db"]
    for name in ("nightly-web", "weekly-db"):
        cluster.gnt("gnt-backup", "schedule", "remove", name)


def test_debug_locks(cluster: E2ECluster, instances: list[str]) -> None:
    names = _names(cluster, "gnt-debug", "locks")
    assert names
    wanted = sorted(n for n in names if n.startswith("instance/"))
    assert wanted, names
    assert _names(cluster, "gnt-debug", "locks", "-F", "name =~ m#^instance/#") == wanted
