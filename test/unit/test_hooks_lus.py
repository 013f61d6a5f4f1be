"""Each LU's hook environment and nodes as Ganeti 3.0 passes them, run by the real
processor on the loopback RPC harness (real node procedures on per-node roots).

The loopback RPC records every hooks_runner call; for cluster verify, whose
result depends on the scripts, the calls run the real node-side runner on the
node's own hooks directory.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env, certified_env

from ganeti import opcodes, pathutils
from ganeti.backup import exportconf
from ganeti.rpc.result import RpcResult
from ganeti.server import noded


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    harness = certified_env(tmp_path)
    yield harness
    harness.close()


def _hooks(harness: Env, hpath: str, phase: str | None = None) -> list[dict[str, Any]]:
    return [h for h in harness.rpc.hooks
            if h["hpath"] == hpath and (phase is None or h["phase"] == phase)]


def _env(harness: Env, hpath: str, phase: str = "pre") -> dict[str, str]:
    calls = _hooks(harness, hpath, phase)
    assert calls, f"no {hpath} {phase} hooks ran"
    result: dict[str, str] = calls[0]["env"]
    return result


def _nodes(harness: Env, hpath: str, phase: str) -> list[str]:
    return [h["node"] for h in _hooks(harness, hpath, phase)]


def _run_real_hooks(harness: Env, monkeypatch: pytest.MonkeyPatch,
                    unreachable: str | None = None) -> None:
    """Let hooks_runner calls execute the scripts of each node's hooks directory."""
    recorded = harness.rpc._run

    def run(procedure: str, node: str, args: list[Any]) -> RpcResult:
        result = recorded(procedure, node, args)
        if procedure != "hooks_runner" or result.fail_msg or result.offline:
            return result
        if node == unreachable:
            return RpcResult(node, fail_msg="connection refused")
        return RpcResult(node, data=noded.TABLE[procedure].run(harness.roots[node], args))

    monkeypatch.setattr(harness.rpc, "_run", run)


def _script(harness: Env, node: str, hpath: str, phase: str, name: str, body: str) -> None:
    directory = harness.roots[node].paths.hooks_dir / f"{hpath}-{phase}.d"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(body)
    path.chmod(0o755)


def _create(harness: Env, **fields: Any) -> Any:
    fields.setdefault("nics", [{"mode": "bridged", "link": "br7"}, {"name": "eth1"}])
    return harness.create(**fields)


# --- instances ---------------------------------------------------------------------


def test_instance_add_environment(env: Env) -> None:
    _create(env, start=False, hypervisor="process",
            beparams={"auto_balance": False}, hvparams={"blocks": 32})
    pre = _env(env, "instance-add")
    assert pre["GANETI_ADD_MODE"] == "create"
    assert not any(k.startswith(("GANETI_SRC_", "GANETI_INSTANCE_ADD", "GANETI_INSTANCE_SRC"))
                   for k in pre)
    # Ganeti's create env: the status is "start", disks are specifications
    assert pre["GANETI_INSTANCE_STATUS"] == "False"
    assert pre["GANETI_INSTANCE_DISK0_UUID"] == ""
    assert pre["GANETI_INSTANCE_DISK1_NAME"] == "data"
    assert "GANETI_INSTANCE_DISK0_DEV_TYPE" not in pre
    assert pre["GANETI_OP_TARGET"] == "inst1"
    # every backend and hypervisor parameter, filled
    assert pre["GANETI_INSTANCE_BE_always_failover"] == "False"
    assert pre["GANETI_INSTANCE_BE_auto_balance"] == "False"
    assert pre["GANETI_INSTANCE_BE_spindle_use"] == "1"
    assert pre["GANETI_INSTANCE_HV_blocks"] == "32"
    assert pre["GANETI_INSTANCE_HV_ignore_sigterm"] == "False"
    assert pre["GANETI_INSTANCE_HV_write_interval_ms"].isdigit()
    inst = env.inst()
    assert pre["GANETI_INSTANCE_NIC0_UUID"] == inst.nics[0].uuid
    assert pre["GANETI_INSTANCE_NIC0_BRIDGE"] == "br7"
    assert pre["GANETI_INSTANCE_NIC0_VLAN"] == ""
    assert pre["GANETI_INSTANCE_NIC1_NAME"] == "eth1"
    assert pre["GANETI_INSTANCE_NIC1_MODE"] == "bridged"
    assert _nodes(env, "instance-add", "pre") == ["node1", "node2"]


def test_instance_remove_environment_and_nodes(env: Env) -> None:
    _create(env, start=False)
    inst = env.inst()
    env.rpc.hooks.clear()
    env.run(opcodes.OpInstanceRemove.create(instance_name="inst1", shutdown_timeout=9))
    pre = _env(env, "instance-remove")
    assert pre["GANETI_SHUTDOWN_TIMEOUT"] == "9"
    # a configured instance: disk uuid, type and logical id
    assert pre["GANETI_INSTANCE_DISK0_UUID"] == inst.disks[0].uuid
    assert pre["GANETI_INSTANCE_DISK0_DEV_TYPE"] == "file"
    assert pre["GANETI_INSTANCE_DISK0_DRIVER"] == inst.disks[0].logical_id[0]
    assert pre["GANETI_INSTANCE_DISK0_ID"] == inst.disks[0].logical_id[1]
    assert pre["GANETI_INSTANCE_STATUS"] == "down"
    assert pre["GANETI_INSTANCE_HYPERVISOR"] == "fake"
    assert _nodes(env, "instance-remove", "pre") == ["node1"]
    assert _nodes(env, "instance-remove", "post") == ["node1", "node2"]


def test_instance_start_stop_reboot_variables(env: Env) -> None:
    _create(env, start=False)
    env.run(opcodes.OpInstanceStartup.create(instance_name="inst1", force=True))
    env.run(opcodes.OpInstanceReboot.create(instance_name="inst1", reboot_type="hard",
                                            shutdown_timeout=11))
    env.run(opcodes.OpInstanceShutdown.create(instance_name="inst1", timeout=7))
    assert _env(env, "instance-start")["GANETI_FORCE"] == "True"
    reboot = _env(env, "instance-reboot")
    assert (reboot["GANETI_REBOOT_TYPE"], reboot["GANETI_SHUTDOWN_TIMEOUT"],
            reboot["GANETI_IGNORE_SECONDARIES"]) == ("hard", "11", "False")
    assert _env(env, "instance-stop")["GANETI_TIMEOUT"] == "7"
    assert _env(env, "instance-stop", "post")["GANETI_POST_INSTANCE_STATUS"] == "down"


def test_instance_modify_shows_new_memory(env: Env) -> None:
    _create(env, start=False)
    env.run(opcodes.OpInstanceSetParams.create(instance_name="inst1",
                                               beparams={"maxmem": 256, "vcpus": 2}))
    pre = _env(env, "instance-modify")
    # as in Ganeti: MAXMEM/VCPUS are the new values, BE_* the ones before the change
    assert (pre["GANETI_INSTANCE_MAXMEM"], pre["GANETI_INSTANCE_MEMORY"],
            pre["GANETI_INSTANCE_VCPUS"]) == ("256", "256", "2")
    assert (pre["GANETI_INSTANCE_BE_maxmem"], pre["GANETI_INSTANCE_BE_vcpus"]) == ("128", "1")
    assert _env(env, "instance-modify", "post")["GANETI_POST_INSTANCE_BE_maxmem"] == "256"


# --- export and import -----------------------------------------------------------


def test_export_and_import_environment(env: Env) -> None:
    _create(env, start=False)
    env.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3"))
    export = _env(env, "instance-export")
    assert export["GANETI_REMOVE_INSTANCE"] == "False"
    assert export["GANETI_EXPORT_DO_SHUTDOWN"] == "True"
    assert export["GANETI_EXPORT_NODE"] == "node3"
    assert export["GANETI_EXPORT_MODE"] == "local"
    assert _nodes(env, "instance-export", "pre") == ["node1", "node2", "node3"]

    env.rpc.hooks.clear()
    env.run(opcodes.OpInstanceCreate.create(instance_name="copy1", mode="import",
                                            src_path="inst1", pnode="node1", start=False))
    add = _env(env, "instance-add")
    node3 = env.roots["node3"].paths
    # the export directory as the node names it (its root is / on a real cluster)
    export_dir = pathutils.to_wire_name(node3, node3.export_dir / "inst1")
    assert add["GANETI_ADD_MODE"] == "import"
    assert add["GANETI_SRC_NODE"] == "node3"
    assert add["GANETI_SRC_PATH"] == export_dir
    # the Python list text Ganeti passes, one dump path per disk
    images = ast.literal_eval(add["GANETI_SRC_IMAGES"])
    assert images == [f"{export_dir}/{exportconf.dump_name(idx)}" for idx in (0, 1)]
    assert all(pathutils.from_wire_name(node3, image).is_file() for image in images)
    assert not any(k.startswith(("GANETI_INSTANCE_SRC", "GANETI_INSTANCE_ADD")) for k in add)
    assert _env(env, "instance-add", "post")["GANETI_POST_SRC_PATH"] == export_dir


def test_export_with_removal_says_true(env: Env) -> None:
    _create(env, start=False)
    env.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3",
                                          remove_instance=True))
    assert _env(env, "instance-export")["GANETI_REMOVE_INSTANCE"] == "True"


# --- nodes -------------------------------------------------------------------------


def test_node_modify_variables(env: Env) -> None:
    env.run(opcodes.OpNodeSetParams.create(node_name="node3", drained=True))
    pre = _env(env, "node-modify")
    assert (pre["GANETI_DRAINED"], pre["GANETI_OFFLINE"], pre["GANETI_MASTER_CANDIDATE"]) == (
        "True", "None", "None")
    assert (pre["GANETI_MASTER_CAPABLE"], pre["GANETI_VM_CAPABLE"]) == ("None", "None")
    assert pre["GANETI_OP_TARGET"] == "node3" and pre["GANETI_OBJECT_TYPE"] == "NODE"


def test_node_remove_runs_post_hooks_on_the_leaving_node(env: Env) -> None:
    env.run(opcodes.OpNodeRemove.create(node_name="node3"))
    assert _nodes(env, "node-remove", "pre") == ["node1", "node2"]
    # the leaving node during Exec, then the remaining ones
    assert _nodes(env, "node-remove", "post") == ["node3", "node1", "node2"]
    assert _env(env, "node-remove")["GANETI_NODE_NAME"] == "node3"


# --- cluster -----------------------------------------------------------------------


def test_cluster_modify_hooks(env: Env) -> None:
    env.run(opcodes.OpClusterSetParams.create(backup_defaults={"bwlimit": 1000}))
    pre = _env(env, "cluster-modify")
    assert pre["GANETI_OP_TARGET"] == "cluster.local"
    assert pre["GANETI_NEW_VG_NAME"] == "None"
    assert pre["GANETI_OBJECT_TYPE"] == "CLUSTER"
    assert _nodes(env, "cluster-modify", "pre") == _nodes(env, "cluster-modify", "post") == [
        "node1"]


def test_cluster_verify_hooks_run_post_only_on_every_node(env: Env) -> None:
    node2 = env.cfg.get_node_info_by_name("node2")
    assert node2 is not None
    node2.tags = ["a", "b"]
    env.cfg.update(node2)
    assert env.run_submitted(opcodes.OpClusterVerify.create()) == [[True]]
    assert _hooks(env, "cluster-verify", "pre") == []
    assert _nodes(env, "cluster-verify", "post") == ["node1", "node2", "node3"]
    post = _env(env, "cluster-verify", "post")
    assert post["GANETI_OP_CODE"] == "OP_CLUSTER_VERIFY_GROUP"
    assert post["GANETI_OBJECT_TYPE"] == "CLUSTER"
    assert post["GANETI_CLUSTER_TAGS"] == ""
    assert post["GANETI_NODE_TAGS_node2"] == "a b"
    assert post["GANETI_POST_NODE_TAGS_node2"] == "a b"
    assert post["GANETI_NODE_TAGS_node3"] == ""


def test_cluster_verify_fails_on_a_failed_hook(env: Env, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    _run_real_hooks(env, monkeypatch)
    _script(env, "node2", "cluster-verify", "post", "10-ok", "#!/bin/sh\necho fine\n")
    _script(env, "node3", "cluster-verify", "post", "20-disk",
            "#!/bin/sh\necho disk almost full\necho second line\nexit 1\n")
    assert env.run_submitted(opcodes.OpClusterVerify.create()) == [[False]]
    log = env.cbs.log
    start = log.index("* Hooks Results")
    assert log[start + 1:start + 3] == [
        "  - ERROR: node node3: Script cluster-verify-post.d/20-disk failed, output:",
        "      disk almost full\n      second line"]


def test_cluster_verify_reports_a_node_that_cannot_run_hooks(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    _run_real_hooks(env, monkeypatch, unreachable="node2")
    assert env.run_submitted(opcodes.OpClusterVerify.create()) == [[False]]
    assert ("  - ERROR: node node2: Communication failure in hooks execution:"
            " communication failure: connection refused") in env.cbs.log


def test_cluster_verify_ignores_offline_nodes(env: Env, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    _run_real_hooks(env, monkeypatch)
    env.run(opcodes.OpNodeSetParams.create(node_name="node3", offline=True))
    _script(env, "node3", "cluster-verify", "post", "10-fail", "#!/bin/sh\nexit 1\n")
    env.run_submitted(opcodes.OpClusterVerify.create())
    assert not [m for m in env.cbs.log if "ERROR" in str(m) and "node3" in str(m)]


def test_cluster_destroy_runs_post_hooks_on_the_master(env: Env) -> None:
    for name in ("node2", "node3"):
        env.run(opcodes.OpNodeRemove.create(node_name=name))
    env.rpc.hooks.clear()
    env.run(opcodes.OpClusterDestroy.create())
    assert [(h["node"], h["phase"]) for h in _hooks(env, "cluster-destroy")] == [
        ("node1", "post")]
    assert _env(env, "cluster-destroy", "post")["GANETI_POST_OP_TARGET"] == "cluster.local"
