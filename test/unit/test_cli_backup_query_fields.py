"""The instance query fields disk.size/N, nic.mac/N and custom_beparams (Query and
OpInstanceQuery), and --identify-defaults seen through custom_beparams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env, certified_env

from ganeti import opcodes, query, query_resources


class _Source:
    def __init__(self, env: Env) -> None:
        self.context = env.ctx


def _query(env: Env, fields: list[str], qfilter: Any = None) -> dict[str, list[Any]]:
    query_resources.register_all()
    result = query.query("instance", ["name", *fields], qfilter, source=_Source(env))
    return {row[0][1]: row[1:] for row in result["data"]}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return certified_env(tmp_path)


def test_indexed_fields_and_their_kinds(env: Env) -> None:
    env.create("two", nics=[{}, {"mac": "aa:bb:cc:dd:ee:01"}], start=False)
    env.create("none", disks=[{"size": 8}], start=False)
    rows = _query(env, ["disk.size/0", "disk.size/1", "disk.size/2", "nic.mac/0",
                        "nic.mac/1"])
    macs = [n.mac for n in env.inst("two").nics]
    assert rows["two"] == [[query.RS_NORMAL, 4], [query.RS_NORMAL, 2],
                           [query.RS_UNAVAIL, None], [query.RS_NORMAL, macs[0]],
                           [query.RS_NORMAL, "aa:bb:cc:dd:ee:01"]]
    assert rows["none"] == [[query.RS_NORMAL, 8], [query.RS_UNAVAIL, None],
                            [query.RS_UNAVAIL, None], [query.RS_UNAVAIL, None],
                            [query.RS_UNAVAIL, None]]
    kinds = {f["name"]: f["kind"] for f in query.query_fields(
        "instance", ["disk.size/15", "nic.mac/7", "nic.mac/8", "custom_beparams"])["fields"]}
    assert kinds == {"disk.size/15": query.QFT_UNIT, "nic.mac/7": query.QFT_TEXT,
                     "nic.mac/8": query.QFT_UNKNOWN, "custom_beparams": query.QFT_OTHER}
    # filters read them too
    assert list(_query(env, [], ["=", "disk.size/1", 2])) == ["two"]
    # and so does OpInstanceQuery
    assert env.run(opcodes.OpInstanceQuery.create(
        output_fields=["name", "disk.size/1", "nic.mac/1"])) == [
        ["none", None, None], ["two", 2, "aa:bb:cc:dd:ee:01"]]


def test_identify_defaults_shows_in_custom_beparams(env: Env) -> None:
    cluster_maxmem = env.cfg.get_cluster_info().beparams["maxmem"]
    env.create("inst1", beparams={"maxmem": cluster_maxmem, "vcpus": 2}, start=False)
    assert _query(env, ["custom_beparams"])["inst1"][0][1]["maxmem"] == cluster_maxmem
    assert env.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3"))
    for name, identify in (("kept", False), ("identified", True)):
        env.run(opcodes.OpInstanceCreate.create(
            instance_name=name, mode="import", src_path="inst1", src_node="node3",
            pnode="node1", start=False, identify_defaults=identify))
    rows = _query(env, ["custom_beparams", "be/maxmem"])
    assert rows["kept"][0][1]["maxmem"] == cluster_maxmem
    assert "maxmem" not in rows["identified"][0][1]
    assert rows["identified"][0][1]["vcpus"] == 2
    # the value in effect is the same
    assert rows["identified"][1][1] == rows["kept"][1][1] == cluster_maxmem
