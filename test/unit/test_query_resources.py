"""The master's query resources: registered in one place, exports answered from the nodes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.loopback import Env, certified_env
from support.luxi_fakes import running_server

from ganeti import luxi, opcodes, query, query_resources

WAIT = 30.0


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """An Env with the cluster certificates exports use."""
    return certified_env(tmp_path)


def test_importing_the_master_registers_nothing() -> None:
    """Registration is explicit (masterd calls register_all), never an import side effect."""
    code = ("import ganeti.server.masterd, ganeti.cmdlib.query, ganeti.query_resources;"
            " from ganeti import query; print(query.resources())")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.stdout.strip() == "[]"


def test_register_all_registers_every_resource() -> None:
    query_resources.register_all()
    assert {query.RESOURCE_JOB, query.RESOURCE_LOCK, query.RESOURCE_NODE,
            query.RESOURCE_INSTANCE, query.RESOURCE_EXPORT} <= set(query.resources())
    fields = query.query_fields(query.RESOURCE_EXPORT)["fields"]
    assert [f["name"] for f in fields] == ["export", "node"]


def test_export_query_over_luxi_lists_real_exports(env: Env, tmp_path: Path) -> None:
    env.create("inst1", start=False)
    env.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3"))
    address = tmp_path / "run" / "ganeti-master"
    with running_server(address, context=env.ctx), \
            luxi.Client(str(address), timeout=WAIT) as cl:
        result = cl.query("export", ["node", "export"])
        assert result["data"] == [[[query.RS_NORMAL, "node3"], [query.RS_NORMAL, "inst1"]]]
        filtered = cl.query("export", ["export"], ["=", "node", "node2"])
        assert filtered["data"] == []
        # an offline node is listed, not silently dropped, and not contacted
        node2 = env.cfg.get_node_info_by_name("node2")
        assert node2 is not None
        node2.offline = True
        env.cfg.update(node2)
        rows = cl.query("export", ["node", "export"])["data"]
        assert [[query.RS_NORMAL, "node2"], [query.RS_OFFLINE, None]] in rows
        assert [[query.RS_NORMAL, "node3"], [query.RS_NORMAL, "inst1"]] in rows
