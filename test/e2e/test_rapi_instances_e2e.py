"""Instances, nodes and tags through the RAPI daemon of a real 3-node cluster with process
guests.

Every change is a job of the cluster's masterd; the tests wait for it and then
look at the real outcome: the guest process, the config file, the disk files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.cluster import E2ECluster
from support.rapi import RapiClient

from ganeti import cli, config_journal, luxi

pytestmark = pytest.mark.e2e


def rapi(cluster: E2ECluster, method: str, path: str, query: str = "",
         body: Any = None, user: str = "admin") -> tuple[int, Any]:
    """One request to the cluster's RAPI daemon (HTTPS, Basic auth): status and body."""
    answer = RapiClient(cluster, user=user).request(method, path, body=body, query=query)
    return answer.status, answer.body


def wait(cluster: E2ECluster, job_id: Any) -> Any:
    """The job's (one opcode's) result; raises the job's error if it failed."""
    assert isinstance(job_id, int), job_id
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        return cli.poll_job(job_id, cl, lambda _entry: None)[0]


def job_count(cluster: E2ECluster) -> int:
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        return len(cl.query_jobs(None, ["id"]))


@pytest.fixture(scope="module")
def instances(cluster: E2ECluster) -> E2ECluster:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=16M",
                "--disk", "1:size=8M,name=data", "-H", "process:write_interval_ms=5",
                "-B", "maxmem=256M,vcpus=2", "--tags", "web", "rapi1")
    cluster.gnt("gnt-instance", "add", "-n", "node3", "-s", "8M", "--no-start", "rapi2")
    return cluster


def test_list_bulk_and_one_instance(instances: E2ECluster) -> None:
    status, listed = rapi(instances, "GET", "/2/instances")
    assert status == 200
    assert {"id": "rapi1", "uri": "/2/instances/rapi1"} in listed
    assert [i["id"] for i in listed] == sorted(i["id"] for i in listed)

    status, bulk = rapi(instances, "GET", "/2/instances", "bulk=1")
    assert status == 200
    by_name = {i["name"]: i for i in bulk}
    one = by_name["rapi1"]
    assert (one["pnode"], one["snodes"], one["disk_template"]) == ("node2", [], "file")
    assert (one["admin_state"], one["status"], one["oper_state"]) == ("up", "running", True)
    assert one["oper_ram"] == 256 and one["oper_vcpus"] == 2
    assert one["disk.sizes"] == [16, 8] and one["disk.names"] == [None, "data"]
    assert one["disk_usage"] == 24 and len(one["disk.uuids"]) == 2
    assert one["beparams"]["maxmem"] == one["beparams"]["memory"] == 256
    assert one["custom_beparams"] == {"maxmem": 256, "vcpus": 2}
    assert one["hvparams"]["write_interval_ms"] == 5
    assert one["tags"] == ["web"] and one["network_port"] is None
    assert by_name["rapi2"]["status"] == "ADMIN_down"

    status, got = rapi(instances, "GET", "/2/instances/rapi1")
    assert status == 200
    assert {k: v for k, v in got.items() if k not in ("mtime", "serial_no")} == \
        {k: v for k, v in one.items() if k not in ("mtime", "serial_no")}


def test_unknown_instance_and_node_are_404(instances: E2ECluster) -> None:
    before = job_count(instances)
    for path in ("/2/instances/nosuch", "/2/instances/nosuch/tags", "/2/nodes/nosuch",
                 "/2/nodes/nosuch/tags"):
        status, body = rapi(instances, "GET", path)
        assert (status, body["code"], body["message"]) == (404, 404, "Not Found"), path
        assert "nosuch" in body["explain"]
    assert job_count(instances) == before
    # a change is a job, as in Ganeti: the job fails, naming the instance
    status, job = rapi(instances, "PUT", "/2/instances/nosuch/startup")
    assert status == 200
    with pytest.raises(Exception, match="nosuch"):
        wait(instances, job)


def test_shutdown_startup_and_reboot_change_the_guest(instances: E2ECluster) -> None:
    node2 = instances.node("node2")
    [pid] = instances.guest_pids(node2.name, "rapi1")

    status, job = rapi(instances, "PUT", "/2/instances/rapi1/shutdown", body={"timeout": 20})
    assert status == 200
    wait(instances, job)
    assert instances.guest_pids(node2.name, "rapi1") == []
    conf = instances.instance_conf("rapi1")
    assert conf is not None and conf["admin_state"] == "down"
    assert rapi(instances, "GET", "/2/instances/rapi1")[1]["status"] == "ADMIN_down"

    status, job = rapi(instances, "PUT", "/2/instances/rapi1/startup")
    wait(instances, job)
    [started] = instances.guest_pids(node2.name, "rapi1")
    assert started != pid
    assert rapi(instances, "GET", "/2/instances/rapi1")[1]["status"] == "running"

    status, job = rapi(instances, "POST", "/2/instances/rapi1/reboot", "type=hard")
    wait(instances, job)
    [rebooted] = instances.guest_pids(node2.name, "rapi1")
    assert rebooted != started
    conf = instances.instance_conf("rapi1")
    assert conf is not None and conf["admin_state"] == "up"


def test_info_is_a_job_with_ganetis_result(instances: E2ECluster) -> None:
    status, job = rapi(instances, "GET", "/2/instances/rapi1/info")
    assert status == 200
    info = wait(instances, job)["rapi1"]
    assert (info["config_state"], info["run_state"], info["pnode"]) == ("up", "up", "node2")
    assert [d["size"] for d in info["disks"]] == [16, 8]
    status, job = rapi(instances, "GET", "/2/instances/rapi1/info", "static=1")
    assert wait(instances, job)["rapi1"]["run_state"] is None


@pytest.mark.parametrize(("path", "kind"), [
    ("/2/instances/rapi2/tags", "instance"), ("/2/nodes/node3/tags", "node"),
    ("/2/tags", "cluster")])
def test_tags_set_list_and_delete(instances: E2ECluster, path: str, kind: str) -> None:
    status, job = rapi(instances, "PUT", path, "tag=b&tag=a:1&tag=c")
    assert status == 200
    wait(instances, job)
    assert rapi(instances, "GET", path) == (200, ["a:1", "b", "c"])
    data = config_journal.load(instances.master.paths.cluster_conf_file)[0]
    stored = (data["cluster"] if kind == "cluster" else next(
        o for o in data[f"{kind}s"].values() if o["name"] == path.split("/")[3]))["tags"]
    assert sorted(stored) == ["a:1", "b", "c"]

    status, job = rapi(instances, "DELETE", path, "tag=b&tag=c")
    wait(instances, job)
    assert rapi(instances, "GET", path) == (200, ["a:1"])

    # deleting a tag that is not there: the job fails, nothing changes
    status, job = rapi(instances, "DELETE", path, "tag=a:1&tag=zzz")
    with pytest.raises(Exception, match="zzz"):
        wait(instances, job)
    assert rapi(instances, "GET", path) == (200, ["a:1"])


def test_bad_input_submits_no_job(instances: E2ECluster) -> None:
    before = job_count(instances)
    for method, path, query, body in (
            ("PUT", "/2/instances/rapi1/tags", "tag=bad%20tag", None),
            ("PUT", "/2/instances/rapi1/shutdown", "", {"timeout": "soon"}),
            ("POST", "/2/instances/rapi1/reboot", "type=sideways", None),
            ("DELETE", "/2/instances/rapi2", "", {"ignore_failures": True})):
        status, answer = rapi(instances, method, path, query, body)
        assert status == 400, (path, answer)
    assert job_count(instances) == before


def test_a_reader_reads_but_changes_nothing(instances: E2ECluster) -> None:
    before = job_count(instances)
    assert rapi(instances, "GET", "/2/instances/rapi1", user="reader")[0] == 200
    assert rapi(instances, "GET", "/2/nodes", "bulk=1", user="reader")[0] == 200
    for method, path, query in (("PUT", "/2/instances/rapi1/shutdown", ""),
                                ("DELETE", "/2/instances/rapi2", ""),
                                ("PUT", "/2/tags", "tag=x")):
        status, answer = rapi(instances, method, path, query, user="reader")
        assert (status, answer["code"]) == (403, 403), path
    assert job_count(instances) == before
    conf = instances.instance_conf("rapi1")
    assert conf is not None and conf["admin_state"] == "up"


def test_delete_removes_the_instance_and_its_disks(instances: E2ECluster) -> None:
    instances.gnt("gnt-instance", "add", "-n", "node3", "-s", "8M", "rapi3")
    assert instances.instance_disk_files("rapi3")
    # a dry run changes nothing
    status, job = rapi(instances, "DELETE", "/2/instances/rapi3", "dry-run=1")
    wait(instances, job)
    assert instances.instance_conf("rapi3") is not None

    status, job = rapi(instances, "DELETE", "/2/instances/rapi3", body={"shutdown_timeout": 20})
    assert status == 200
    wait(instances, job)
    assert instances.instance_conf("rapi3") is None
    assert instances.instance_disk_files("rapi3") == []
    assert instances.guest_pids("node3", "rapi3") == []
    assert rapi(instances, "GET", "/2/instances/rapi3")[0] == 404


def test_nodes_list_bulk_and_one(instances: E2ECluster) -> None:
    status, listed = rapi(instances, "GET", "/2/nodes")
    names = [n.name for n in instances.nodes]
    assert status == 200 and listed == [{"id": n, "uri": f"/2/nodes/{n}"}
                                        for n in sorted(names)]
    status, bulk = rapi(instances, "GET", "/2/nodes", "bulk=1")
    node2 = next(n for n in bulk if n["name"] == "node2")
    assert "rapi1" in node2["pinst_list"] and node2["pinst_cnt"] >= 1
    assert node2["mtotal"] > 0 and node2["dfree"] > 0 and node2["ctotal"] >= 1
    assert node2["cnos"] is None and node2["sptotal"] is None
    assert node2["group.uuid"] and node2["role"] in ("C", "R")
    status, one = rapi(instances, "GET", "/2/nodes/node1")
    assert status == 200 and one["role"] == "M"
    assert one["secondary_ip"] == one["sip"]


def test_gnt_tag_commands_and_the_rapi_see_the_same_tags(instances: E2ECluster,
                                                          tmp_path: Path) -> None:
    instances.gnt("gnt-instance", "add-tags", "rapi1", "cli:1", "cli-2")
    assert "cli:1" in rapi(instances, "GET", "/2/instances/rapi1/tags")[1]
    tag_file = tmp_path / "tags"
    tag_file.write_text("from-file\n\nrack:9\n")
    instances.gnt("gnt-node", "add-tags", "--from", str(tag_file), "node2")
    assert rapi(instances, "GET", "/2/nodes/node2/tags") == (200, ["from-file", "rack:9"])
    instances.gnt("gnt-cluster", "add-tags", "cli-cluster")
    wait(instances, rapi(instances, "PUT", "/2/instances/rapi1/tags", "tag=via-rapi")[1])
    listed = instances.gnt("gnt-instance", "list-tags", "rapi1").stdout.split()
    assert {"cli:1", "cli-2", "via-rapi", "web"} <= set(listed) and listed == sorted(listed)
    assert "cli-cluster" in instances.gnt("gnt-cluster", "list-tags").stdout.split()

    instances.gnt("gnt-instance", "remove-tags", "rapi1", "cli:1", "via-rapi")
    assert not {"cli:1", "via-rapi"} & set(rapi(instances, "GET",
                                                "/2/instances/rapi1/tags")[1])
    # bad tags and missing ones fail, naming why; nothing changes
    bad = instances.gnt("gnt-instance", "add-tags", "rapi1", "two words", ok=False)
    assert bad.returncode != 0 and "invalid characters" in bad.stderr
    missing = instances.gnt("gnt-node", "remove-tags", "node2", "nosuchtag", ok=False)
    assert missing.returncode != 0 and "'nosuchtag' not found" in missing.stderr
    none = instances.gnt("gnt-cluster", "add-tags", ok=False)
    assert none.returncode != 0 and "no tags given" in none.stderr
    assert rapi(instances, "GET", "/2/nodes/node2/tags") == (200, ["from-file", "rack:9"])
