"""gnt-backup's Ganeti options and the shared list-fields/--units, through the real
gnt-* scripts against a running 3-node cluster."""

from __future__ import annotations

import pytest
from support.cluster import E2ECluster

pytestmark = pytest.mark.e2e

MAC1 = "aa:00:00:12:34:56"


def _rows(cluster: E2ECluster, *argv: str) -> list[list[str]]:
    out = cluster.gnt(*argv, "--no-headers", "--separator", "|").stdout
    return [line.split("|") for line in out.splitlines()]


def _job_count(cluster: E2ECluster) -> int:
    return len(cluster.gnt("gnt-job", "list", "--no-headers", "-o", "id").stdout.split())


@pytest.fixture(scope="module")
def web1(cluster: E2ECluster) -> str:
    """web1 on node2: disks of 4 and 8 MiB, two NICs, 2 vcpus; exported to node3."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--disk", "1:size=8M", "--net", "0:", "--net", f"1:mac={MAC1}",
                "-B", "vcpus=2", "--no-start", "web1")
    cluster.gnt("gnt-backup", "export", "-n", "node3", "web1")
    return "web1"


@pytest.mark.parametrize("script,field,kind", [
    ("gnt-instance", "disk.size/0", "Storage size"), ("gnt-node", "pinst_cnt", "Number"),
    ("gnt-job", "status", "Text"), ("gnt-backup", "used", "Storage size")])
def test_list_fields_of_every_list_command(cluster: E2ECluster, script: str, field: str,
                                           kind: str) -> None:
    lines = cluster.gnt(script, "list-fields", "--separator", "|").stdout.splitlines()
    assert lines[0] == "Name|Type|Title|Description"
    rows = {line.split("|")[0]: line.split("|") for line in lines[1:]}
    assert rows[field][1] == kind
    one = _rows(cluster, script, "list-fields", field)
    assert [row[:2] for row in one] == [[field, kind]]
    bad = cluster.gnt(script, "list-fields", field, "nosuch", ok=False)
    assert bad.returncode == 1 and "nosuch" in bad.stderr and "nosuch" not in bad.stdout
    assert bad.stdout.splitlines()[1].split()[0] == field


def test_schedule_list_fields(cluster: E2ECluster) -> None:
    rows = _rows(cluster, "gnt-backup", "schedule", "list-fields", "enabled", "cron")
    assert [row[:2] for row in rows] == [["enabled", "Boolean"], ["cron", "Text"]]


def test_indexed_fields_and_units(cluster: E2ECluster, web1: str) -> None:
    fields = "name,disk.size/0,disk.size/1,disk.size/2,nic.mac/1,disk.sizes"
    assert _rows(cluster, "gnt-instance", "list", "-o", fields, web1) == [
        [web1, "4", "8", "(unavail)", MAC1, "4,8"]]
    assert _rows(cluster, "gnt-instance", "list", "--units", "h", "-o", fields, web1) == [
        [web1, "4M", "8M", "(unavail)", MAC1, "4M,8M"]]
    assert _rows(cluster, "gnt-instance", "list", "--units", "g", "-o",
                 "disk.sizes,disk_usage", web1) == [["0.0,0.0", "0.0"]]
    # gnt-backup list's sizes are bytes; --units shows them as sizes
    size = _rows(cluster, "gnt-backup", "list", "-g", "-o", "size", web1)[0][0]
    assert int(size) >= 12 << 20
    assert _rows(cluster, "gnt-backup", "list", "-g", "--units", "m", "-o", "export,size",
                 web1) == [[web1, str(round(int(size) / (1 << 20)))]]


def test_import_no_nics(cluster: E2ECluster, web1: str) -> None:
    cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3", "--src-dir",
                web1, "--no-start", "--no-nics", "nonic")
    assert _rows(cluster, "gnt-instance", "list", "-o", "nic.count,nic.mac/0", "nonic") == [
        ["0", "(unavail)"]]
    conf = cluster.instance_conf("nonic")
    assert conf is not None and conf["nics"] == []
    cluster.gnt("gnt-instance", "remove", "-f", "nonic")


def test_import_iallocator_hail(cluster: E2ECluster, web1: str) -> None:
    # the nodes share one machine (the same free memory and disk): node2 holds web1,
    # so hail takes node1 (name order), then node3 (node1 has one now)
    for name, chosen in (("hailed", "node1"), ("hailed3", "node3")):
        out = cluster.gnt("gnt-backup", "import", "-I", "hail", "--src-node", "node3",
                          "--src-dir", web1, "--no-start", name).stdout
        assert f"Allocator hail chose {chosen}" in out
        assert _rows(cluster, "gnt-instance", "list", "-o", "pnode", name) == [[chosen]]
    # '.', the cluster's default allocator, on gnt-instance add too
    cluster.gnt("gnt-instance", "add", "-I", ".", "-t", "file", "--disk", "0:size=4M",
                "--no-start", "hailed2")
    assert _rows(cluster, "gnt-instance", "list", "-o", "pnode", "hailed2")[0][0] in (
        "node1", "node2", "node3")
    # no room: the job fails naming what was needed, nothing is created
    bad = cluster.gnt("gnt-backup", "import", "-I", "hail", "--src-node", "node3",
                      "--src-dir", web1, "--disk", "0:size=60T", "--disk", "1:size=8M",
                      "--no-start", "toobig", ok=False)
    assert bad.returncode == 1 and "hail found no node" in bad.stderr
    assert cluster.instance_conf("toobig") is None
    for name in ("hailed", "hailed2", "hailed3"):
        cluster.gnt("gnt-instance", "remove", "-f", name)


def test_bad_options_fail_before_any_job(cluster: E2ECluster, web1: str) -> None:
    jobs = _job_count(cluster)
    both = cluster.gnt("gnt-backup", "import", "-I", "hail", "-n", "node1", "--src-node",
                       "node3", "--src-dir", web1, "x1", ok=False)
    assert both.returncode == 1 and "-n/--node or -I/--iallocator" in both.stderr
    unknown = cluster.gnt("gnt-backup", "import", "-I", "hspace", "x1", ok=False)
    assert unknown.returncode == 2 and "unknown allocator 'hspace'" in unknown.stderr
    zero = cluster.gnt("gnt-backup", "export", "-n", "node3", "--zero-free-space", web1,
                       ok=False)
    assert zero.returncode == 1 and "--zero-free-space: not supported" in zero.stderr
    timeout = cluster.gnt("gnt-backup", "export", "-n", "node3", "--zeroing-timeout-fixed",
                          "30", web1, ok=False)
    assert timeout.returncode == 1 and "--zeroing-timeout-fixed" in timeout.stderr
    assert _job_count(cluster) == jobs
    helptext = cluster.gnt("gnt-backup", "export", "--help").stdout
    assert "--zero-free-space" in " ".join(helptext.split()) and "sparsely" in helptext


def test_name_check(cluster: E2ECluster, web1: str) -> None:
    bad = cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                      "--src-dir", web1, "--name-check", "--no-start", "nosuch.invalid",
                      ok=False)
    assert bad.returncode == 1 and "'nosuch.invalid' does not resolve" in bad.stderr
    assert cluster.instance_conf("nosuch.invalid") is None


def test_identify_defaults_shows_in_custom_beparams(cluster: E2ECluster, web1: str) -> None:
    for name, extra in (("kept", ()), ("identified", ("--identify-defaults",))):
        cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                    "--src-dir", web1, "--no-start", "--ignore-ipolicy", "--no-name-check",
                    "--no-ip-check", *extra, name)
    rows = {row[0]: row[1:] for row in _rows(
        cluster, "gnt-instance", "list", "-o", "name,custom_beparams,be/maxmem,be/vcpus",
        "kept", "identified")}
    assert '"maxmem"' in rows["kept"][0] and '"maxmem"' not in rows["identified"][0]
    assert '"vcpus": 2' in rows["identified"][0]
    assert rows["kept"][1:] == rows["identified"][1:]
    for name in ("kept", "identified"):
        cluster.gnt("gnt-instance", "remove", "-f", name)


def test_backup_list_verbose_with_a_silent_node(cluster: E2ECluster, web1: str) -> None:
    cluster.kill_noded("node2")
    try:
        quiet = cluster.gnt("gnt-backup", "list", "-g", "--no-headers", "--separator", "|",
                            "-o", "node,export", ok=False)
        loud = cluster.gnt("gnt-backup", "list", "-g", "-v", "--no-headers",
                           "--separator", "|", "-o", "node,export", ok=False)
    finally:
        cluster.start()
    assert quiet.returncode == 1 and "node2" in quiet.stderr
    assert "node2|(unavail)" not in quiet.stdout.splitlines()
    assert loud.returncode == 1 and "node2|(unavail)" in loud.stdout.splitlines()
    assert f"node3|{web1}" in loud.stdout.splitlines()
