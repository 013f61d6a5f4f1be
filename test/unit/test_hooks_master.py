"""Master-side hooks: environment and phase semantics, with real scripts per fake node."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ganeti import constants, errors, objects, opcodes
from ganeti.hooks import (
    HooksMaster,
    build_instance_hook_env,
    build_new_instance_hook_env,
    run_hooks,
)
from ganeti.hooks.master import env_value

HPATH = "instance-export"
DUMP_ENV = f"""#!{sys.executable}
import json
raw = open("/proc/self/environ", "rb").read().decode()
print(json.dumps(dict(item.split("=", 1) for item in raw.split("\\0") if item)))
"""


@dataclass
class FakeResult:
    payload: Any = None
    fail_msg: str | None = None
    offline: bool = False


@dataclass
class FakeRpc:
    """Stands in for call_hooks_runner: runs hooks locally, one hooks dir per node."""

    root: Path
    unreachable: set[str] = field(default_factory=set)
    offline: set[str] = field(default_factory=set)
    calls: list[tuple[list[str], str, str, dict[str, str]]] = field(default_factory=list)

    def node_dir(self, node: str) -> Path:
        return self.root / node

    def add_script(self, node: str, phase: str, name: str, body: str) -> None:
        directory = self.node_dir(node) / f"{HPATH}-{phase}.d"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        path.write_text(body)
        path.chmod(0o755)

    def __call__(self, nodes: list[str], hpath: str, phase: str,
                 env: dict[str, str]) -> dict[str, FakeResult]:
        self.calls.append((list(nodes), hpath, phase, dict(env)))
        answers = {}
        for node in nodes:
            if node in self.offline:
                answers[node] = FakeResult(fail_msg="Node is marked offline", offline=True)
            elif node in self.unreachable:
                answers[node] = FakeResult(fail_msg="Connection refused")
            else:
                answers[node] = FakeResult(run_hooks(self.node_dir(node), hpath, phase, env))
        return answers


class FakeExportLU:
    HPATH: str | None = HPATH
    HTYPE: str | None = constants.HTYPE_INSTANCE

    def __init__(self, pre_nodes: list[str], post_nodes: list[str]) -> None:
        self.op = opcodes.OpBackupExport.create(instance_name="inst1", target_node="node2")
        self.nodes = (pre_nodes, post_nodes)
        self.state = "before"
        self.exec_called = False
        self.env_calls = 0

    def BuildHooksEnv(self) -> dict[str, Any]:
        self.env_calls += 1
        return {
            "EXPORT_MODE": "local",
            "INSTANCE_NAME": "inst1",
            "REMOVE_INSTANCE": False,
            "SHUTDOWN_TIMEOUT": 120,
            "INSTANCE_SECONDARIES": ["node3", "node4"],
            "INSTANCE_NIC0_IP": None,
            "STATE": self.state,
        }

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        return self.nodes

    def Exec(self) -> None:
        self.exec_called = True
        self.state = "after"


class NoHooksLU(FakeExportLU):
    HPATH = None
    HTYPE = None

    def BuildHooksEnv(self) -> dict[str, Any]:
        raise AssertionError("BuildHooksEnv must not be called without HPATH")

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        raise AssertionError("BuildHooksNodes must not be called without HPATH")


def _master(lu: Any, rpc: Any, warnings: list[str]) -> HooksMaster:
    return HooksMaster.build_from_lu(lu, rpc, cluster_name="cluster.example.com",
                                     master_name="node1", data_dir="/var/lib/ganeti",
                                     log_warning=warnings.append)


def _process(lu: FakeExportLU, hm: HooksMaster) -> Any:
    """The processor's order: pre hooks, Exec, post hooks."""
    hm.run_phase(constants.HOOKS_PHASE_PRE)
    lu.Exec()
    return hm.run_phase(constants.HOOKS_PHASE_POST)


def _dumped_env(results: dict[str, list[tuple[str, str, str]]], node: str) -> dict[str, str]:
    [(_, status, output)] = results[node]
    assert status == constants.HKR_SUCCESS, output
    parsed: dict[str, str] = json.loads(output)
    return parsed


@pytest.fixture
def rpc(tmp_path: Path) -> FakeRpc:
    return FakeRpc(tmp_path)


def test_pre_and_post_environment(rpc: FakeRpc) -> None:
    for node in ("node1", "node2"):
        for phase in ("pre", "post"):
            rpc.add_script(node, phase, "dump", DUMP_ENV)
    lu = FakeExportLU(["node1", "node2"], ["node1", "node2"])
    warnings: list[str] = []
    hm = _master(lu, rpc, warnings)

    pre = hm.run_phase(constants.HOOKS_PHASE_PRE)
    lu.Exec()
    post = hm.run_phase(constants.HOOKS_PHASE_POST)

    assert warnings == []
    assert sorted(pre) == sorted(post) == ["node1", "node2"]
    base = {
        "PATH": constants.HOOKS_PATH,
        "GANETI_HOOKS_VERSION": "2",
        "GANETI_OP_CODE": "OP_BACKUP_EXPORT",
        "GANETI_DATA_DIR": "/var/lib/ganeti",
        "GANETI_HOOKS_PATH": HPATH,
        "GANETI_OBJECT_TYPE": "INSTANCE",
        "GANETI_CLUSTER": "cluster.example.com",
        "GANETI_MASTER": "node1",
        "GANETI_EXPORT_MODE": "local",
        "GANETI_INSTANCE_NAME": "inst1",
        "GANETI_REMOVE_INSTANCE": "False",
        "GANETI_SHUTDOWN_TIMEOUT": "120",
        # Ganeti's str() of every value: an LU joins its own lists
        "GANETI_INSTANCE_SECONDARIES": "['node3', 'node4']",
        "GANETI_INSTANCE_NIC0_IP": "None",
        "GANETI_STATE": "before",
    }
    assert _dumped_env(pre, "node2") == {**base, "GANETI_HOOKS_PHASE": "pre"}
    post_env = _dumped_env(post, "node1")
    post_keys = {k: v for k, v in post_env.items() if k.startswith("GANETI_POST_")}
    assert post_keys == {
        "GANETI_POST_EXPORT_MODE": "local",
        "GANETI_POST_INSTANCE_NAME": "inst1",
        "GANETI_POST_REMOVE_INSTANCE": "False",
        "GANETI_POST_SHUTDOWN_TIMEOUT": "120",
        "GANETI_POST_INSTANCE_SECONDARIES": "['node3', 'node4']",
        "GANETI_POST_INSTANCE_NIC0_IP": "None",
        "GANETI_POST_STATE": "after",
    }
    # the pre-Exec values are kept unprefixed-by-POST in the post phase
    assert {k: v for k, v in post_env.items() if k not in post_keys} == {
        **base, "GANETI_HOOKS_PHASE": "post"}
    assert lu.env_calls == 2


def test_pre_failure_aborts_before_exec(rpc: FakeRpc) -> None:
    rpc.add_script("node1", "pre", "10-ok", "#!/bin/sh\necho fine\n")
    rpc.add_script("node2", "pre", "20-veto", "#!/bin/sh\necho no space left; exit 1\n")
    rpc.add_script("node3", "pre", "30-veto", "#!/bin/sh\necho instance busy >&2; exit 2\n")
    lu = FakeExportLU(["node1", "node2", "node3"], ["node1"])
    warnings: list[str] = []

    with pytest.raises(errors.HooksAbort) as info:
        _process(lu, _master(lu, rpc, warnings))

    assert not lu.exec_called
    assert [call[2] for call in rpc.calls] == ["pre"]
    message, failures = info.value.args
    assert failures == [
        ("node2", f"{HPATH}-pre.d/20-veto", "no space left\n"),
        ("node3", f"{HPATH}-pre.d/30-veto", "instance busy\n"),
    ]
    for text in ("node2", "20-veto", "node3", "30-veto"):
        assert text in message
    shown = errors.format_error(info.value)
    assert "no space left" in shown and "instance busy" in shown
    # the abort survives the wire encoding with its details
    decoded = errors.decode(errors.encode(info.value))
    assert isinstance(decoded, errors.HooksAbort)
    assert [tuple(f) for f in decoded.args[1]] == failures


def test_post_failure_is_only_a_warning(rpc: FakeRpc) -> None:
    rpc.add_script("node1", "post", "broken", "#!/bin/sh\necho cleanup failed; exit 1\n")
    rpc.add_script("node1", "post", "fine", "#!/bin/sh\necho ok\n")
    lu = FakeExportLU(["node1"], ["node1"])
    warnings: list[str] = []

    results = _process(lu, _master(lu, rpc, warnings))

    assert lu.exec_called
    assert results == {"node1": [
        (f"{HPATH}-post.d/broken", constants.HKR_FAIL, "cleanup failed\n"),
        (f"{HPATH}-post.d/fine", constants.HKR_SUCCESS, "ok\n"),
    ]}
    [warning] = warnings
    assert "broken" in warning and "node1" in warning and "cleanup failed" in warning


def test_unreachable_and_offline_nodes_do_not_veto(rpc: FakeRpc) -> None:
    rpc.add_script("node1", "pre", "ok", "#!/bin/sh\necho ran\n")
    rpc.unreachable.add("node2")
    rpc.offline.add("node3")
    lu = FakeExportLU(["node1", "node2", "node3"], ["node1", "node2", "node3"])
    warnings: list[str] = []

    _process(lu, _master(lu, rpc, warnings))

    assert lu.exec_called
    # one warning per bad node and phase
    assert len(warnings) == 4
    assert sum("node2" in w and "Connection refused" in w for w in warnings) == 2
    assert sum("node3" in w and "offline" in w for w in warnings) == 2


def test_unreachable_node_does_not_hide_a_veto_elsewhere(rpc: FakeRpc) -> None:
    rpc.add_script("node1", "pre", "veto", "#!/bin/sh\nexit 1\n")
    rpc.unreachable.add("node2")
    lu = FakeExportLU(["node1", "node2"], [])
    warnings: list[str] = []

    with pytest.raises(errors.HooksAbort) as info:
        _master(lu, rpc, warnings).run_phase(constants.HOOKS_PHASE_PRE)

    assert [f[0] for f in info.value.args[1]] == ["node1"]
    assert len(warnings) == 1 and "node2" in warnings[0]


def test_rpc_layer_failure(rpc: FakeRpc) -> None:
    def broken_rpc(*_args: Any) -> dict[str, FakeResult]:
        raise errors.RemoteError("rpc layer down")

    lu = FakeExportLU(["node1"], ["node1"])
    warnings: list[str] = []
    hm = _master(lu, broken_rpc, warnings)
    with pytest.raises(errors.HooksFailure, match="rpc layer down"):
        hm.run_phase(constants.HOOKS_PHASE_PRE)
    assert hm.run_phase(constants.HOOKS_PHASE_POST) == {}
    assert len(warnings) == 1 and "rpc layer down" in warnings[0]


def test_lu_without_hooks_runs_nothing(rpc: FakeRpc) -> None:
    lu = NoHooksLU(["node1"], ["node1"])
    warnings: list[str] = []
    hm = _master(lu, rpc, warnings)
    assert _process(lu, hm) == {}
    assert rpc.calls == [] and warnings == []


def test_explicit_node_list_and_empty_phase(rpc: FakeRpc) -> None:
    rpc.add_script("node5", "pre", "ok", "#!/bin/sh\necho here\n")
    lu = FakeExportLU(["node1"], [])
    hm = _master(lu, rpc, [])
    assert hm.run_phase(constants.HOOKS_PHASE_PRE, ["node5", "node5"]) == {
        "node5": [(f"{HPATH}-pre.d/ok", constants.HKR_SUCCESS, "here\n")]}
    assert rpc.calls[0][0] == ["node5"]
    assert hm.run_phase(constants.HOOKS_PHASE_POST) == {}
    assert len(rpc.calls) == 1


def test_prefixed_keys_from_lu_are_rejected(rpc: FakeRpc) -> None:
    class BadLU(FakeExportLU):
        def BuildHooksEnv(self) -> dict[str, Any]:
            return {"GANETI_INSTANCE_NAME": "x"}

    hm = _master(BadLU(["node1"], []), rpc, [])
    with pytest.raises(errors.ProgrammerError):
        hm.run_phase(constants.HOOKS_PHASE_PRE)
    with pytest.raises(errors.ProgrammerError):
        hm.run_phase("middle")


def test_env_value_formatting() -> None:
    # Ganeti's hooks master formats every value with str()
    assert env_value(None) == "None"
    assert env_value(True) == "True" and env_value(False) == "False"
    assert env_value(0) == "0"
    assert env_value(["a", 3]) == "['a', 3]"
    assert env_value("x y") == "x y"


def test_unreachable_nodes_are_reported_in_the_results(rpc: FakeRpc) -> None:
    rpc.add_script("node1", "post", "ok", "#!/bin/sh\necho ran\n")
    rpc.unreachable.add("node2")
    rpc.offline.add("node3")
    lu = FakeExportLU([], ["node1", "node2", "node3"])
    results = _process(lu, _master(lu, rpc, []))
    assert list(results) == ["node1"]
    # offline nodes are skipped silently, as in Ganeti; unreachable ones are failures
    assert results.failures == {"node2": "communication failure: Connection refused"}


def test_object_type_only_with_an_htype_and_op_code_override(rpc: FakeRpc) -> None:
    class ClusterLU(FakeExportLU):
        HTYPE = None
        HOOKS_OP_ID = "OP_CLUSTER_VERIFY_GROUP"

    rpc.add_script("node1", "pre", "dump", DUMP_ENV)
    env = _dumped_env(_master(ClusterLU(["node1"], []), rpc, []).run_phase(
        constants.HOOKS_PHASE_PRE), "node1")
    assert "GANETI_OBJECT_TYPE" not in env
    assert env["GANETI_OP_CODE"] == "OP_CLUSTER_VERIFY_GROUP"


def _instance() -> tuple[objects.Instance, objects.Cluster]:
    cluster = objects.Cluster(
        cluster_name="cluster.example.com", master_node="uuid-1",
        beparams={"maxmem": 512, "minmem": 256, "vcpus": 1, "auto_balance": False},
        hvparams={constants.HT_PROCESS: {"blocks": 64, "ignore_sigterm": True}})
    instance = objects.Instance(
        name="inst1", primary_node="uuid-1", secondary_nodes=["uuid-2"], os="debian",
        hypervisor=constants.HT_PROCESS, hvparams={"ignore_sigterm": False},
        beparams={"vcpus": 4}, admin_state="up", disk_template=constants.DT_FILE,
        disks=[objects.Disk(uuid="d-0", size=1024, mode="rw", dev_type="file", name="root",
                            logical_id=["loop", "/srv/inst1/disk0"]),
               objects.Disk(uuid="d-1", size=2048, mode="ro", dev_type="plain",
                            logical_id=["xenvg", "inst1-disk1"])],
        nics=[objects.NIC(uuid="n-0", mac="aa:00:00:00:00:01", ip="192.0.2.10", name="eth0",
                          nicparams={"mode": "bridged", "link": "br0"}),
              objects.NIC(uuid="n-1", mac="aa:00:00:00:00:02",
                          nicparams={"mode": "openvswitch", "link": "ovs0", "vlan": ".5"}),
              objects.NIC(uuid="n-2", mac="aa:00:00:00:00:03",
                          nicparams={"mode": "routed", "link": "100"}),
              objects.NIC(uuid="n-3", mac="aa:00:00:00:00:04")],
        tags=["web", "prod"])
    return instance, cluster


def test_instance_hook_env() -> None:
    instance, cluster = _instance()
    names = {"uuid-1": "node1", "uuid-2": "node2"}

    env = build_instance_hook_env(instance, cluster, names.__getitem__)

    assert env == {
        "OP_TARGET": "inst1",
        "INSTANCE_NAME": "inst1",
        "INSTANCE_PRIMARY": "node1",
        "INSTANCE_SECONDARIES": "node2",
        "INSTANCE_OS_TYPE": "debian",
        "INSTANCE_STATUS": "up",
        "INSTANCE_MINMEM": 256,
        "INSTANCE_MAXMEM": 512,
        "INSTANCE_MEMORY": 512,
        "INSTANCE_VCPUS": 4,
        # Ganeti's summary of the disks' types
        "INSTANCE_DISK_TEMPLATE": "mixed",
        "INSTANCE_HYPERVISOR": constants.HT_PROCESS,
        "INSTANCE_NIC0_NAME": "eth0",
        "INSTANCE_NIC0_UUID": "n-0",
        "INSTANCE_NIC0_IP": "192.0.2.10",
        "INSTANCE_NIC0_MAC": "aa:00:00:00:00:01",
        "INSTANCE_NIC0_MODE": "bridged",
        "INSTANCE_NIC0_LINK": "br0",
        "INSTANCE_NIC0_VLAN": "",
        "INSTANCE_NIC0_BRIDGE": "br0",
        "INSTANCE_NIC1_UUID": "n-1",
        "INSTANCE_NIC1_IP": "",
        "INSTANCE_NIC1_MAC": "aa:00:00:00:00:02",
        "INSTANCE_NIC1_MODE": "openvswitch",
        "INSTANCE_NIC1_LINK": "ovs0",
        "INSTANCE_NIC1_VLAN": ".5",
        "INSTANCE_NIC1_BRIDGE": "ovs0",
        "INSTANCE_NIC2_UUID": "n-2",
        "INSTANCE_NIC2_IP": "",
        "INSTANCE_NIC2_MAC": "aa:00:00:00:00:03",
        "INSTANCE_NIC2_MODE": "routed",
        "INSTANCE_NIC2_LINK": "100",
        "INSTANCE_NIC2_VLAN": "",
        # no parameters: Ganeti's defaults, but no default bridge
        "INSTANCE_NIC3_UUID": "n-3",
        "INSTANCE_NIC3_IP": "",
        "INSTANCE_NIC3_MAC": "aa:00:00:00:00:04",
        "INSTANCE_NIC3_MODE": "bridged",
        "INSTANCE_NIC3_LINK": "",
        "INSTANCE_NIC3_VLAN": "",
        "INSTANCE_NIC3_BRIDGE": "",
        "INSTANCE_NIC_COUNT": 4,
        "INSTANCE_DISK0_DRIVER": "loop",
        "INSTANCE_DISK0_ID": "/srv/inst1/disk0",
        "INSTANCE_DISK0_DEV_TYPE": "file",
        "INSTANCE_DISK0_NAME": "root",
        "INSTANCE_DISK0_UUID": "d-0",
        "INSTANCE_DISK0_SIZE": 1024,
        "INSTANCE_DISK0_MODE": "rw",
        "INSTANCE_DISK1_VG": "xenvg",
        "INSTANCE_DISK1_ID": "inst1-disk1",
        "INSTANCE_DISK1_DEV_TYPE": "plain",
        "INSTANCE_DISK1_UUID": "d-1",
        "INSTANCE_DISK1_SIZE": 2048,
        "INSTANCE_DISK1_MODE": "ro",
        "INSTANCE_DISK_COUNT": 2,
        "INSTANCE_TAGS": "prod web",
        # every backend parameter, Ganeti's defaults under the cluster's
        "INSTANCE_BE_always_failover": False,
        "INSTANCE_BE_auto_balance": False,
        "INSTANCE_BE_maxmem": 512,
        "INSTANCE_BE_minmem": 256,
        "INSTANCE_BE_spindle_use": 1,
        "INSTANCE_BE_vcpus": 4,
        # every hypervisor parameter: its default, the cluster's, the instance's
        "INSTANCE_HV_write_interval_ms": 20,
        "INSTANCE_HV_blocks": 64,
        "INSTANCE_HV_ignore_sigterm": False,
    }
    # the instance objects are not modified by filling defaults
    assert instance.beparams == {"vcpus": 4}


def test_new_instance_hook_env_is_built_from_specifications() -> None:
    instance, cluster = _instance()
    env = build_new_instance_hook_env(instance, cluster, str, True, constants.DT_FILE)
    # Ganeti's LUInstanceCreate: status is "start", disks have no uuid and no logical id
    assert env["INSTANCE_STATUS"] is True
    assert env["INSTANCE_DISK_TEMPLATE"] == constants.DT_FILE
    assert env["INSTANCE_DISK0_UUID"] == "" and env["INSTANCE_DISK0_NAME"] == "root"
    assert not any(k.endswith(("_DEV_TYPE", "_DRIVER", "_VG", "_ID")) for k in env
                   if k.startswith("INSTANCE_DISK"))
    assert env["INSTANCE_NIC0_UUID"] == "n-0" and env["INSTANCE_BE_spindle_use"] == 1


def test_instance_hook_env_override_and_no_devices() -> None:
    instance, cluster = _instance()
    instance.disks = []
    instance.nics = []
    instance.secondary_nodes = []
    env = build_instance_hook_env(instance, cluster, lambda uuid: uuid.upper(),
                                  override={"INSTANCE_STATUS": "down", "EXTRA": 1})
    assert env["INSTANCE_PRIMARY"] == "UUID-1"
    assert env["INSTANCE_SECONDARIES"] == ""
    assert env["INSTANCE_DISK_COUNT"] == env["INSTANCE_NIC_COUNT"] == 0
    assert env["INSTANCE_DISK_TEMPLATE"] == constants.DT_DISKLESS
    assert not any(k.startswith(("INSTANCE_DISK0", "INSTANCE_NIC0")) for k in env)
    assert env["INSTANCE_STATUS"] == "down" and env["EXTRA"] == 1


def test_instance_env_reaches_scripts(rpc: FakeRpc) -> None:
    instance, cluster = _instance()

    class InstanceLU(FakeExportLU):
        def BuildHooksEnv(self) -> dict[str, Any]:
            return build_instance_hook_env(instance, cluster, str)

    rpc.add_script("node1", "pre", "dump", DUMP_ENV)
    results = _master(InstanceLU(["node1"], []), rpc, []).run_phase(constants.HOOKS_PHASE_PRE)
    env = _dumped_env(results, "node1")
    assert env["GANETI_INSTANCE_DISK1_SIZE"] == "2048"
    assert env["GANETI_INSTANCE_BE_always_failover"] == "False"
    assert env["GANETI_INSTANCE_BE_auto_balance"] == "False"
    assert env["GANETI_INSTANCE_NIC1_IP"] == ""
    assert env["GANETI_INSTANCE_NIC0_VLAN"] == ""
    assert env["GANETI_INSTANCE_TAGS"] == "prod web"
