"""Ganeti 3.0's own RAPI client (python3-ganeti-rapi) against our daemon: the basics.

The client runs in the oracle's interpreter with only its own package on the
path (``rapi_client=True``), as on a machine that has just the library.
"""

from __future__ import annotations

from typing import Any

from support.cluster import E2ECluster
from support.ganeti_oracle import Ganeti3

from ganeti import constants, luxi

_CLIENT = """
from ganeti.rapi import client
def make(user="admin", password="secret"):
    return client.GanetiRapiClient({host!r}, port={port}, username=user, password=password)
"""


def _run(ganeti3: Ganeti3, cluster: E2ECluster, code: str) -> Any:
    host, port = cluster.rapi_address
    return ganeti3.eval(_CLIENT.format(host=host, port=port) + code, rapi_client=True)


def test_version_info_and_features(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    result = _run(ganeti3, cluster, """
c = make("reader")
result = {"version": c.GetVersion(), "features": c.GetFeatures(), "info": c.GetInfo()}
""")
    assert result["version"] == constants.RAPI_VERSION
    assert result["features"] == ["instance-create-reqv1"]
    info = result["info"]
    assert info["name"] == cluster.cluster_name
    assert info["master"] == cluster.master.name
    assert info["software_version"] == constants.RELEASE_VERSION
    # the aliases Ganeti's /2/info adds
    assert info["vg_name"] == info["volume_group_name"]
    assert info["drbd_helper"] == info["drbd_usermode_helper"]


def test_bad_credentials_are_a_401_api_error(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    result = _run(ganeti3, cluster, """
result = []
for user, password in (("admin", "wrong"), ("nobody", "secret")):
    try:
        make(user, password).GetInfo()
        result.append(None)
    except client.GanetiApiError as err:
        result.append([err.code, str(err)])
""")
    for entry in result:
        assert entry is not None, "GetInfo succeeded with bad credentials"
        code, text = entry
        assert code == 401 and "Unauthorized" in text


def test_modify_cluster_is_a_job_and_read_only_users_get_403(
        ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    result = _run(ganeti3, cluster, """
job = make().ModifyCluster(dry_run=True, reason="compat",
                           backup_defaults={"notify": "always"})
try:
    make("reader").ModifyCluster(backup_defaults={"notify": "always"})
    denied = None
except client.GanetiApiError as err:
    denied = err.code
result = {"job": job, "denied": denied}
""")
    assert isinstance(result["job"], int)
    assert result["denied"] == 403
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        (ops,) = cl.query_jobs([result["job"]], ["ops"])[0]
    assert [op["OP_ID"] for op in ops] == ["OP_CLUSTER_SET_PARAMS"]
    assert ops[0]["dry_run"] is True
    assert ops[0]["backup_defaults"] == {"notify": "always"}
    assert ops[0]["reason"][0][:2] == ["gnt:user", "compat"]
