"""LUXI Query against a real master: the resources masterd registers, exports included."""

from __future__ import annotations

import pytest
from support.cluster import E2ECluster

from ganeti import luxi, query

pytestmark = pytest.mark.e2e

WAIT = 60.0


def _values(result: dict[str, object]) -> list[list[object]]:
    rows = result["data"]
    assert isinstance(rows, list)
    return [[value for _status, value in row] for row in rows]


def test_export_resource_lists_real_exports(cluster: E2ECluster) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
         "--no-start", "qexp1")
    cluster.gnt("gnt-backup", "export", "-n", "node3", "qexp1")
    with luxi.Client(str(cluster.master.paths.master_socket), timeout=WAIT) as cl:
        exports = cl.query("export", ["node", "export"])
        assert [[query.RS_NORMAL, "node3"], [query.RS_NORMAL, "qexp1"]] in exports["data"]
        assert ["node2", "qexp1"] not in _values(exports)
        on_node3 = cl.query("export", ["export"], ["=", "node", "node3"])
        assert _values(on_node3) == [["qexp1"]]
        # the same answer as the gnt-backup list route (OpBackupQuery)
        assert cl.query_exports(["node3"], False) == {"node3": ["qexp1"]}
        # the other resources masterd registers answer too
        assert ["qexp1", "node2"] in _values(cl.query("instance", ["name", "pnode"]))
        assert sorted(str(v[0]) for v in _values(cl.query("node", ["name"]))) == \
            ["node1", "node2", "node3"]
        fields = {f["name"] for f in cl.query_fields("export")["fields"]}
        assert fields == {"node", "export"}
    cluster.gnt("gnt-backup", "remove", "qexp1")
    with luxi.Client(str(cluster.master.paths.master_socket), timeout=WAIT) as cl:
        assert ["node3", "qexp1"] not in _values(cl.query("export", ["node", "export"]))
