"""RAPI instance creation, local export and import on a real cluster.

The requests go to the cluster's ganeti-rapi daemon (HTTPS, Basic auth); the
jobs run for real, and the data of the disks is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from support.cluster import E2ECluster, cluster_fixture
from support.rapi import RapiClient

from ganeti import cli, errors, luxi

pytestmark = pytest.mark.e2e

MIB = 1 << 20
cluster = cluster_fixture("rapi-io", node_count=2)


def rapi(cluster: E2ECluster, method: str, path: str, body: Any = None,
         query: str = "") -> tuple[int, Any]:
    answer = RapiClient(cluster).request(method, path, body, query=query or None)
    return answer.status, answer.body


def run_job(cluster: E2ECluster, method: str, path: str, body: Any = None,
            query: str = "") -> Any:
    """Submit through RAPI, follow the job over LUXI; the opcode's result."""
    status, job_id = rapi(cluster, method, path, body, query)
    assert status == 200, job_id
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        return cli.poll_job(int(job_id), cl, lambda _entry: None)[0]


def job_count(cluster: E2ECluster) -> int:
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        return len(cl.query_jobs(None, ["id"]))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def create_body(name: str, **fields: Any) -> dict[str, Any]:
    return {"__version__": 1, "mode": "create", "name": name, "disk_template": "file",
            "disks": [{"size": 8}], "nics": [], "pnode": "node2", "start": False, **fields}


def test_create_dry_run_and_bad_body(cluster: E2ECluster) -> None:
    jobs = job_count(cluster)
    status, answer = rapi(cluster, "POST", "/2/instances",
                          create_body("bad1", disks=[{"size": 0}]))
    assert status == 400 and "OP_INSTANCE_CREATE.disks[0].size" in answer["explain"]
    assert job_count(cluster) == jobs, "a refused body was submitted"
    # a read-only user cannot create
    answer = RapiClient(cluster, user="reader").request("POST", "/2/instances",
                                                        create_body("ro1"))
    assert answer.status == 403 and job_count(cluster) == jobs, answer.body
    # a dry run answers the nodes a real creation would use, and creates nothing
    assert run_job(cluster, "POST", "/2/instances", create_body("dry1"),
                   query="dry-run=1") == ["node2"]
    assert cluster.instance_conf("dry1") is None
    nodes = run_job(cluster, "POST", "/2/instances", create_body("new1"))
    assert nodes == ["node2"]
    conf = cluster.instance_conf("new1")
    assert conf is not None and conf["disks"][0]["size"] == 8
    assert cluster.disk_path("new1").stat().st_size == 8 * MIB
    # a name in use is the job's error (checked by the LU), as in Ganeti
    with pytest.raises(errors.OpPrereqError, match="already in the cluster"):
        run_job(cluster, "POST", "/2/instances", create_body("new1"))
    cluster.gnt("gnt-instance", "remove", "-f", "new1")


def test_export_through_rapi_and_import_from_it(cluster: E2ECluster) -> None:
    run_job(cluster, "POST", "/2/instances", create_body("exp1"))
    with open(cluster.disk_path("exp1"), "r+b") as handle:
        handle.write(os.urandom(MIB))
        handle.seek(6 * MIB)
        handle.write(b"rapi" * 1000)
    digest = sha256(cluster.disk_path("exp1"))
    result = run_job(cluster, "PUT", "/2/instances/exp1/export",
                     {"mode": "local", "destination": "node1", "shutdown": True,
                      "note": "through RAPI"})
    assert result == [True, [True]]
    export = cluster.node("node1").paths.export_dir / "exp1"
    assert sha256(export / "disk0.img") == digest
    listing = cluster.gnt("gnt-backup", "list", "--no-headers", "--separator", "|").stdout
    assert "node1|exp1" in listing.splitlines()
    # local prepare-export: nothing to prepare
    assert run_job(cluster, "PUT", "/2/instances/exp1/prepare-export",
                   query="mode=local") is None
    # import as a new instance, with Ganeti's names for the fields
    nodes = run_job(cluster, "POST", "/2/instances",
                    {"__version__": 1, "mode": "import", "name": "imp1",
                     "disk_template": "file", "disks": [], "nics": [], "pnode": "node2",
                     "src_node": "node1", "src_path": "exp1", "start": False})
    assert nodes == ["node2"]
    assert sha256(cluster.disk_path("imp1")) == digest
    conf = cluster.instance_conf("imp1")
    assert conf is not None and conf["disks"][0]["size"] == 8
    for name in ("imp1", "exp1"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
    cluster.gnt("gnt-backup", "remove", "exp1")
