"""Ganeti 3.0's own RAPI client (python3-ganeti-rapi) against this project's RAPI daemon:
instances, nodes and tags.

The client runs in Ganeti's interpreter (``ganeti3.eval(..., rapi_client=True)``);
each eval batches several calls.  Changes are waited for by polling what the
client reads back (the guest's status, the tags), and then checked here on the
real cluster: the guest process, the config file, the disk files.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.cluster import E2ECluster
from support.ganeti_oracle import Ganeti3

from ganeti import cli, config_journal, luxi
from ganeti.rapi.resources import instances as rapi_instances
from ganeti.rapi.resources import nodes as rapi_nodes

# what each eval starts with: Ganeti's client, logged in as the fixture's admin, and a
# poll that waits for a condition on what the client reads (no timing assertions)
_PROLOGUE = """
import time
from ganeti.rapi import client

cl = client.GanetiRapiClient(%(host)r, port=%(port)d, username="admin", password="secret")


def until(what, check, timeout=120):
    deadline = time.time() + timeout
    while True:
        value = what()
        if check(value):
            return value
        if time.time() > deadline:
            raise AssertionError("gave up waiting; last value: %%r" %% (value,))
        time.sleep(0.2)


def error_code(call, *args):
    try:
        call(*args)
    except client.GanetiApiError as err:
        return err.code
    return None
"""


def _client(ganeti3: Ganeti3, cluster: E2ECluster, code: str) -> Any:
    host, port = cluster.rapi_address
    return ganeti3.eval(_PROLOGUE % {"host": host, "port": port} + code, timeout=300,
                        rapi_client=True)


def wait(cluster: E2ECluster, job_id: int) -> None:
    """Wait for a job through our own LUXI (the client waits through /2/jobs)."""
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        cli.poll_job(job_id, cl, lambda _entry: None)


@pytest.fixture(scope="module")
def instances(cluster: E2ECluster) -> E2ECluster:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=16M",
                "--disk", "1:size=8M", "-H", "process:write_interval_ms=5",
                "-B", "maxmem=256M", "--tags", "web", "cpt1")
    cluster.gnt("gnt-instance", "add", "-n", "node3", "-s", "8M", "--no-start", "cpt2")
    return cluster


def test_the_field_lists_are_ganetis(ganeti3: Ganeti3) -> None:
    fields = ganeti3.eval("from ganeti.rapi import rlib2\n"
                          "result = [rlib2.I_FIELDS, rlib2.N_FIELDS]")
    assert [list(rapi_instances.I_FIELDS), list(rapi_nodes.N_FIELDS)] == fields


def test_reads_with_ganetis_client(ganeti3: Ganeti3, instances: E2ECluster) -> None:
    got = _client(ganeti3, instances, """
result = {
    "names": cl.GetInstances(),
    "bulk": cl.GetInstances(bulk=True),
    "one": cl.GetInstance("cpt1"),
    "missing": error_code(cl.GetInstance, "nosuch"),
    "nodes": cl.GetNodes(),
    "nodes_bulk": cl.GetNodes(bulk=True),
    "node": cl.GetNode("node1"),
    "missing_node": error_code(cl.GetNode, "nosuch"),
    "tags": cl.GetInstanceTags("cpt1"),
    "node_tags": cl.GetNodeTags("node2"),
    "cluster_tags": cl.GetClusterTags(),
}
""")
    assert got["names"] == ["cpt1", "cpt2"]
    bulk = {i["name"]: i for i in got["bulk"]}
    assert sorted(bulk) == ["cpt1", "cpt2"]
    assert all(sorted(i) == sorted(rapi_instances.I_FIELDS) for i in bulk.values())
    one = got["one"]
    assert (one["pnode"], one["status"], one["admin_state"]) == ("node2", "running", "up")
    assert one["disk.sizes"] == [16, 8] and one["beparams"]["memory"] == 256
    assert one["tags"] == ["web"] and bulk["cpt2"]["status"] == "ADMIN_down"
    assert got["missing"] == 404 and got["missing_node"] == 404
    assert got["nodes"] == sorted(n.name for n in instances.nodes)
    assert all(sorted(n) == sorted(rapi_nodes.N_FIELDS) for n in got["nodes_bulk"])
    assert got["node"]["name"] == "node1" and got["node"]["role"] == "M"
    assert got["tags"] == ["web"] and got["node_tags"] == []
    assert isinstance(got["cluster_tags"], list)


def test_startup_shutdown_reboot_and_tags_with_ganetis_client(
        ganeti3: Ganeti3, instances: E2ECluster) -> None:
    [pid] = instances.guest_pids("node2", "cpt1")
    got = _client(ganeti3, instances, """
status = lambda: cl.GetInstance("cpt1")["status"]
result = {}
result["shutdown_job"] = cl.ShutdownInstance("cpt1", timeout=20)
result["after_shutdown"] = until(status, lambda s: s == "ADMIN_down")
result["startup_job"] = cl.StartupInstance("cpt1")
result["after_startup"] = until(status, lambda s: s == "running")
result["reboot_job"] = cl.RebootInstance("cpt1", reboot_type="hard")
result["add_tags_job"] = cl.AddInstanceTags("cpt1", ["b:1", "a"])
result["tags"] = until(lambda: cl.GetInstanceTags("cpt1"), lambda t: len(t) == 3)
cl.DeleteInstanceTags("cpt1", ["web", "b:1"])
result["tags_after_delete"] = until(lambda: cl.GetInstanceTags("cpt1"), lambda t: len(t) == 1)
cl.AddNodeTags("node3", ["rack:7"])
result["node_tags"] = until(lambda: cl.GetNodeTags("node3"), lambda t: t)
cl.AddClusterTags(["prod"])
result["cluster_tags"] = until(cl.GetClusterTags, lambda t: "prod" in t)
cl.DeleteClusterTags(["prod"])
result["cluster_tags_after"] = until(cl.GetClusterTags, lambda t: "prod" not in t)
result["bad_tag"] = error_code(cl.AddInstanceTags, "cpt1", ["no spaces"])
""")
    assert all(isinstance(got[k], int) for k in ("shutdown_job", "startup_job", "reboot_job",
                                                 "add_tags_job"))
    assert got["tags"] == ["a", "b:1", "web"] and got["tags_after_delete"] == ["a"]
    assert got["node_tags"] == ["rack:7"]
    assert got["bad_tag"] == 400
    # the guest was really stopped and started again (a new process each time)
    wait(instances, got["reboot_job"])
    [now] = instances.guest_pids("node2", "cpt1")
    assert now != pid
    conf = instances.instance_conf("cpt1")
    assert conf is not None and conf["admin_state"] == "up" and conf["tags"] == ["a"]


def test_instance_info_job_with_ganetis_client(ganeti3: Ganeti3,
                                                instances: E2ECluster) -> None:
    got = _client(ganeti3, instances, """
job = cl.GetInstanceInfo("cpt1")
result = {"job": job, "done": cl.WaitForJobCompletion(job, period=1),
          "status": cl.GetJobStatus(job)}
static = cl.GetInstanceInfo("cpt1", static=True)
cl.WaitForJobCompletion(static, period=1)
result["static"] = cl.GetJobStatus(static)
""")
    assert got["done"] is True and got["status"]["status"] == "success"
    [info] = got["status"]["opresult"]
    assert info["cpt1"]["config_state"] == "up" and info["cpt1"]["run_state"] == "up"
    assert info["cpt1"]["pnode"] == "node2"
    [static] = got["static"]["opresult"]
    assert static["cpt1"]["run_state"] is None


def test_delete_instance_with_ganetis_client(ganeti3: Ganeti3, instances: E2ECluster) -> None:
    assert instances.instance_disk_files("cpt2")
    got = _client(ganeti3, instances, """
result = {"job": cl.DeleteInstance("cpt2", shutdown_timeout=20)}
result["names"] = until(cl.GetInstances, lambda names: "cpt2" not in names)
result["missing"] = error_code(cl.GetInstance, "cpt2")
""")
    assert isinstance(got["job"], int) and got["missing"] == 404
    assert "cpt2" not in got["names"]
    assert instances.instance_conf("cpt2") is None
    assert instances.instance_disk_files("cpt2") == []
    data = config_journal.load(instances.master.paths.cluster_conf_file)[0]
    assert all(i["name"] != "cpt2" for i in data["instances"].values())


def test_ganetis_own_tag_commands_over_luxi(ganeti3: Ganeti3, instances: E2ECluster) -> None:
    """3.0's gnt-instance add-tags, list-tags and remove-tags send
    OP_TAGS_SET/DEL and LUXI's QueryTags: the same opcodes the RAPI submits."""
    added = ganeti3.run(instances, "gnt-instance", "add-tags", "cpt1", "g3:x", "g3-y")
    assert added.returncode == 0, added.stderr
    listed = ganeti3.run(instances, "gnt-instance", "list-tags", "cpt1")
    assert listed.returncode == 0, listed.stderr
    assert {"g3:x", "g3-y"} <= set(listed.stdout.split())
    removed = ganeti3.run(instances, "gnt-instance", "remove-tags", "cpt1", "g3:x")
    assert removed.returncode == 0, removed.stderr
    conf = instances.instance_conf("cpt1")
    assert conf is not None and "g3-y" in conf["tags"] and "g3:x" not in conf["tags"]
    refused = ganeti3.run(instances, "gnt-instance", "add-tags", "cpt1", "bad tag")
    assert refused.returncode != 0
    assert "invalid characters" in refused.stdout + refused.stderr
