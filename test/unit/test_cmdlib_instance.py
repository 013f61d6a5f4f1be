"""Instance logical units, run by the real processor over a loopback RPC.

The "RPC" (test/support/loopback.py) calls the node procedures directly, with
one node root per node under tmp_path and the fake hypervisor, so the LUs'
effects on disks and instances are real while no daemon runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.loopback import Callbacks, Env

from ganeti import constants, errors, locking, opcodes, query, query_resources
from ganeti.backend import instance as bk
from ganeti.client import gnt_instance
from ganeti.cmdlib import instance_utils as iu
from ganeti.context import MasterContext
from ganeti.objects import Disk
from ganeti.query_resources import instance as qinstance


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    harness = Env(tmp_path)
    yield harness
    harness.close()


def test_create_makes_disks_config_lock_and_starts(env: Env) -> None:
    assert env.create() == ["node2"]
    inst = env.inst()
    assert inst.admin_state == constants.ADMINST_UP
    assert [d.size for d in inst.disks] == [4, 2]
    assert [d.iv_name for d in inst.disks] == ["disk/0", "disk/1"]
    assert inst.disks[1].name == "data"
    assert [Path(d.logical_id[1]) for d in inst.disks] == [
        p for d in inst.disks for p in env.disk_files() if str(p) == d.logical_id[1]]
    assert len(env.disk_files()) == 2 and env.disk_files("node1") == []
    live = env.live()
    assert live is not None and live["memory"] == 128
    assert "inst1" in env.ctx.glm.names(locking.LEVEL_INSTANCE)
    # hooks: master and primary, both phases, with instance variables
    add_hooks = [h for h in env.rpc.hooks if h["hpath"] == "instance-add"]
    assert [(h["node"], h["phase"]) for h in add_hooks] == [
        ("node1", "pre"), ("node2", "pre"), ("node1", "post"), ("node2", "post")]
    pre = add_hooks[0]["env"]
    assert pre["GANETI_INSTANCE_NAME"] == "inst1"
    assert pre["GANETI_INSTANCE_PRIMARY"] == "node2"
    assert pre["GANETI_INSTANCE_DISK_COUNT"] == "2"
    assert pre["GANETI_INSTANCE_DISK1_SIZE"] == "2"
    assert pre["GANETI_ADD_MODE"] == "create"
    assert pre["GANETI_OBJECT_TYPE"] == "INSTANCE"
    # as in Ganeti, an instance being created has the status "to be started"
    assert add_hooks[2]["env"]["GANETI_POST_INSTANCE_STATUS"] == "True"
    # the new name (added by the processor in level order) and the primary node
    assert add_hooks[0]["locks"] == {locking.LEVEL_INSTANCE: ["inst1"],
                                     locking.LEVEL_NODE: ["node2"],
                                     locking.LEVEL_NODE_RES: ["node2"]}


def test_create_generates_unique_macs_and_keeps_given_ones(env: Env) -> None:
    env.create(nics=[{}, {"mac": "AA:BB:CC:DD:EE:01", "link": "br0", "mode": "bridged"}])
    nics = env.inst().nics
    assert nics[0].mac.startswith("aa:00:00:") and len(nics[0].mac) == 17
    assert nics[1].mac == "aa:bb:cc:dd:ee:01"
    assert nics[1].nicparams == {"link": "br0", "mode": "bridged"}
    with pytest.raises(errors.OpPrereqError, match="already in use"):
        env.create("inst2", nics=[{"mac": "aa:bb:cc:dd:ee:01"}])
    assert iu.generate_mac({"x"}) not in {"x"}


def test_create_without_start_and_with_params(env: Env) -> None:
    env.create(start=False, beparams={"memory": 256, "vcpus": 2}, tags=["b", "a"])
    inst = env.inst()
    assert inst.admin_state == constants.ADMINST_DOWN
    assert inst.beparams == {"maxmem": 256, "minmem": 256, "vcpus": 2}
    assert inst.tags == ["a", "b"]
    assert env.live() is None


def test_create_picks_least_used_usable_node(env: Env) -> None:
    env.create("a", pnode=None, start=False)
    env.create("b", pnode=None, start=False)
    env.create("c", pnode=None, start=False)
    by_node = sorted(qinstance.instance_rows(env.cfg), key=lambda r: r["name"])
    assert sorted(r["pnode"] for r in by_node) == ["node1", "node2", "node3"]
    env.set_offline("node1", True)
    node2 = env.cfg.get_node_info_by_name("node2")
    assert node2 is not None
    node2.drained = True
    env.cfg.update(node2)
    env.create("d", pnode=None, start=False)
    assert env.inst("d").primary_node == env.cfg.expand_node_name("node3")


@pytest.mark.parametrize("fields, message", [
    ({"mode": "import", "compress": "lzma"}, "Unknown compression tool 'lzma'"),
    ({"mode": "import", "src_path": "/srv/export/.hidden"}, "Invalid export source"),
    ({"mode": "remote-import"}, "source_handshake is required"),
    ({"disks": [{"size": 0}]}, "invalid size 0"),
    ({"disks": [{"size": "1G"}]}, "invalid size '1G'"),
    ({"disks": [{"size": 1, "colour": "red"}]}, "unknown parameter"),
    ({"disks": [{"size": 1, "mode": "rx"}]}, "invalid mode"),
    ({"disks": []}, "needs at least one disk"),
    ({"disk_template": "diskless"}, "Diskless instances cannot have disks"),
    ({"disk_template": "drbd"}, "Invalid disk template"),
    ({"nics": [{"mac": "zz:00:00:00:00:00"}]}, "invalid MAC"),
    ({"beparams": {"maxmem": -5}}, "must be a positive integer"),
    ({"beparams": {"colour": 1}}, "Unknown backend parameter"),
    ({"instance_name": "../evil"}, "Invalid instance name"),
    ({"hypervisor": "xen"}, "Unknown hypervisor"),
])
def test_create_argument_errors(env: Env, fields: dict[str, Any], message: str) -> None:
    fields.setdefault("instance_name", "inst1")
    fields.setdefault("disks", [{"size": 4}])
    # disk and NIC specs are refused when the opcode is built, the rest by the LU
    with pytest.raises(errors.OpPrereqError, match=message) as info:
        env.run(opcodes.OpInstanceCreate.create(pnode="node2", **fields))
    assert info.value.ecode == errors.ECODE_INVAL
    assert env.cfg.get_all_instances_info() == {}


@pytest.mark.parametrize("fields, message, ecode", [
    ({"pnode": "nodeX"}, "Node 'nodeX' not known", errors.ECODE_NOENT),
    ({"disk_template": "plain"}, "Disk template plain is not enabled", errors.ECODE_STATE),
    ({"hypervisor": "kvm"}, "Hypervisor kvm is not enabled", errors.ECODE_STATE),
    ({"hypervisor": "process", "hvparams": {"blocks": 0}}, "blocks", errors.ECODE_INVAL),
    ({"hypervisor": "process", "hvparams": {"cdrom": "x"}}, "Unknown process",
     errors.ECODE_INVAL),
    ({"beparams": {"maxmem": 64, "minmem": 128}}, "minmem", errors.ECODE_INVAL),
])
def test_create_prereq_errors_leave_nothing(env: Env, fields: dict[str, Any], message: str,
                                            ecode: str) -> None:
    fields.setdefault("pnode", "node2")
    with pytest.raises(errors.OpPrereqError, match=message) as info:
        env.create(**fields)
    assert info.value.ecode == ecode
    assert env.cfg.get_all_instances_info() == {}
    assert env.disk_files() == []
    assert env.ctx.glm.names(locking.LEVEL_INSTANCE) == set()


def test_create_duplicate_and_offline_node(env: Env) -> None:
    env.create()
    with pytest.raises(errors.OpPrereqError, match="already in the cluster"):
        env.create()
    assert len(env.disk_files()) == 2
    env.set_offline("node3", True)
    with pytest.raises(errors.OpPrereqError, match="offline primary node node3"):
        env.create("inst2", pnode="node3")


def test_failed_disk_creation_removes_created_disks(env: Env) -> None:
    env.rpc.fail_after["blockdev_create"] = 1
    with pytest.raises(errors.OpExecError, match="Cannot create disk disk/1 on node node2"):
        env.create()
    assert env.disk_files() == []
    assert env.cfg.get_all_instances_info() == {}


def test_failed_start_keeps_instance_down(env: Env) -> None:
    env.rpc.fail["instance_start"] = "no memory left"
    with pytest.raises(errors.OpExecError, match=r"created but could not be started.*no memory"):
        env.create()
    assert env.inst().admin_state == constants.ADMINST_DOWN
    assert len(env.disk_files()) == 2


def test_shutdown_startup_reboot(env: Env) -> None:
    env.create()
    env.run(opcodes.OpInstanceShutdown.create(instance_name="inst1", timeout=7))
    assert env.live() is None
    assert env.inst().admin_state == constants.ADMINST_DOWN
    stop_pre = next(h for h in env.rpc.hooks if h["hpath"] == "instance-stop")
    assert stop_pre["env"]["GANETI_TIMEOUT"] == "7"
    assert stop_pre["locks"][locking.LEVEL_INSTANCE] == ["inst1"]
    assert stop_pre["locks"][locking.LEVEL_NODE] == ["node2"]
    with pytest.raises(errors.OpPrereqError, match="administratively down"):
        env.run(opcodes.OpInstanceReboot.create(instance_name="inst1"))
    env.run(opcodes.OpInstanceStartup.create(instance_name="inst1",
                                             beparams={"maxmem": 96}))
    live = env.live()
    assert live is not None and live["memory"] == 96  # temporary override
    assert env.inst().admin_state == constants.ADMINST_UP
    assert env.inst().beparams == {}
    before = live["uptime"]
    env.run(opcodes.OpInstanceStartup.create(instance_name="inst1"))  # already running
    assert any("already running" in str(m) for m in env.cbs.log)
    env.run(opcodes.OpInstanceReboot.create(instance_name="inst1", reboot_type="hard"))
    after = env.live()
    assert after is not None and after["memory"] == 128 and after["uptime"] <= before + 60
    env.run(opcodes.OpInstanceShutdown.create(instance_name="inst1", no_remember=True))
    assert env.live() is None and env.inst().admin_state == constants.ADMINST_UP


def test_shutdown_failure_is_reported(env: Env) -> None:
    env.create()
    env.rpc.fail["instance_shutdown"] = "guest stuck"
    with pytest.raises(errors.OpExecError, match=r"Could not shut down instance inst1.*stuck"):
        env.run(opcodes.OpInstanceShutdown.create(instance_name="inst1"))


def test_remove_stops_and_deletes_everything(env: Env) -> None:
    env.create()
    env.run(opcodes.OpInstanceRemove.create(instance_name="inst1", shutdown_timeout=3))
    assert env.cfg.get_all_instances_info() == {}
    assert env.disk_files() == []
    assert env.live() is None
    assert "inst1" not in env.ctx.glm.names(locking.LEVEL_INSTANCE)
    hooks = [h for h in env.rpc.hooks if h["hpath"] == "instance-remove"]
    assert [(h["node"], h["phase"]) for h in hooks] == [
        ("node1", "pre"), ("node1", "post"), ("node2", "post")]
    assert hooks[0]["locks"][locking.LEVEL_NODE_RES] == ["node2"]
    with pytest.raises(errors.OpPrereqError, match="not known"):
        env.run(opcodes.OpInstanceRemove.create(instance_name="inst1"))


def test_remove_failures_abort_unless_ignored(env: Env) -> None:
    env.create()
    env.rpc.fail["instance_shutdown"] = "node hiccup"
    with pytest.raises(errors.OpExecError, match="node hiccup"):
        env.run(opcodes.OpInstanceRemove.create(instance_name="inst1"))
    assert env.inst().name == "inst1" and len(env.disk_files()) == 2
    env.rpc.fail["blockdev_remove"] = "disk busy"
    env.run(opcodes.OpInstanceRemove.create(instance_name="inst1", ignore_failures=True))
    assert env.cfg.get_all_instances_info() == {}
    warnings = [m for m in env.cbs.log if isinstance(m, str) and m.startswith("WARNING")]
    assert any("node hiccup" in w for w in warnings)
    assert any("disk busy" in w for w in warnings)


def test_set_params(env: Env) -> None:
    env.create(hypervisor="process", start=False)
    changes = env.run(opcodes.OpInstanceSetParams.create(
        instance_name="inst1", beparams={"maxmem": 256, "vcpus": 2},
        hvparams={"blocks": 32}))
    assert changes == [["be/maxmem", 256], ["be/vcpus", 2], ["hv/blocks", 32]] or \
        changes == [("be/maxmem", 256), ("be/vcpus", 2), ("hv/blocks", 32)]
    inst = env.inst()
    assert inst.beparams == {"maxmem": 256, "vcpus": 2}
    assert inst.hvparams == {"blocks": 32}
    env.run(opcodes.OpInstanceSetParams.create(instance_name="inst1",
                                               beparams={"vcpus": "default"}))
    assert env.inst().beparams == {"maxmem": 256}
    with pytest.raises(errors.OpPrereqError, match="No changes"):
        env.run(opcodes.OpInstanceSetParams.create(instance_name="inst1"))
    with pytest.raises(errors.OpPrereqError, match="blocks"):
        env.run(opcodes.OpInstanceSetParams.create(instance_name="inst1",
                                                   hvparams={"blocks": -1}))
    with pytest.raises(errors.OpPrereqError, match="minmem"):
        env.run(opcodes.OpInstanceSetParams.create(instance_name="inst1",
                                                   beparams={"minmem": 512}))
    assert env.inst().beparams == {"maxmem": 256}


class _Source:
    def __init__(self, ctx: MasterContext) -> None:
        self.context = ctx


def _query(env: Env, fields: list[str], qfilter: Any = None) -> dict[str, list[Any]]:
    query_resources.register_all()
    result = query.query("instance", fields, qfilter, source=_Source(env.ctx))
    return {row[0][1]: row for row in result["data"]}


def test_query_by_name_contacts_only_that_primary(env: Env) -> None:
    """GET /2/instances/NAME (a name filter) must not ask every node's hypervisor."""
    env.create("a2")
    env.create("b3", pnode="node3")
    env.rpc.calls.clear()
    rows = _query(env, ["name", "status"], ["=", "name", "b3"])
    assert list(rows) == ["b3"] and rows["b3"][1][1] == "running"
    assert env.rpc.calls == [("all_instances_info", "node3")]
    env.rpc.calls.clear()
    # an | of names, a short host name: still only the primaries of the matches
    rows = _query(env, ["name", "status"], ["|", ["=", "name", "B3"], ["==", "name", "zz"]])
    assert list(rows) == ["b3"] and env.rpc.calls == [("all_instances_info", "node3")]
    env.rpc.calls.clear()
    # anything else may match any instance: every primary is asked
    rows = _query(env, ["name", "status"], ["!", ["=", "name", "b3"]])
    assert list(rows) == ["a2"]
    assert sorted(env.rpc.calls) == [("all_instances_info", "node2"),
                                     ("all_instances_info", "node3")]


def test_requested_names() -> None:
    assert query.requested_names(["=", "name", "a"]) == frozenset({"a"})
    both = ["|", ["==", "name", "a"], ["=", "name", "b"]]
    assert query.requested_names(both) == frozenset({"a", "b"})
    for flt in (None, [], ["=", "pnode", "a"], ["|", ["=", "name", "a"], ["?", "name"]],
                ["&", ["=", "name", "a"]], ["!=", "name", "a"], ["=", "name", 1]):
        assert query.requested_names(flt) is None, flt
    assert query.name_matches("web1.example.com", frozenset({"WEB1"}))
    assert not query.name_matches("web10", frozenset({"web1"}))


def test_query_status_values(env: Env) -> None:
    env.create("up1")
    env.create("down1", start=False)
    env.create("errup", start=False)
    env.create("errdown")
    env.create("off3", pnode="node3")
    bk.instance_start(env.roots["node2"], iu.filled_instance(env.cfg, env.inst("errup"))
                      .to_dict(), False)
    bk.instance_shutdown(env.roots["node2"], "errdown", "fake", 1)
    env.set_offline("node3", True)
    rows = _query(env, ["name", "status", "oper_state", "oper_ram", "pnode"])
    assert {n: r[1][1] for n, r in rows.items()} == {
        "up1": "running", "down1": "ADMIN_down", "errup": "ERROR_up",
        "errdown": "ERROR_down", "off3": "ERROR_nodeoffline"}
    assert rows["up1"][2] == [query.RS_NORMAL, True]
    assert rows["up1"][3] == [query.RS_NORMAL, 128]
    # Ganeti's markers: a stopped instance's memory is unavailable ("-"), that of an
    # instance on an offline node unknown ("?")
    assert rows["down1"][3] == [query.RS_UNAVAIL, None]
    assert rows["off3"][3] == [query.RS_NODATA, None]
    assert rows["off3"][2] == [query.RS_NODATA, None]


def test_query_config_fields_do_not_contact_nodes(env: Env) -> None:
    env.create(nics=[{}], beparams={"maxmem": 64})
    env.rpc.calls.clear()
    rows = _query(env, ["name", "pnode", "disk.count", "disk.sizes", "disk_usage",
                        "nic.count", "be/maxmem", "admin_state", "hypervisor",
                        "disk_template"])
    assert [v for _, v in rows["inst1"]] == ["inst1", "node2", 2, [4, 2], 6, 1, 64, "up",
                                             "fake", "file"]
    assert env.inst().beparams == {"maxmem": 64, "minmem": 64}  # minmem follows
    assert env.rpc.calls == []
    _query(env, ["name", "status"])
    assert env.rpc.calls == [("all_instances_info", "node2")]


def test_query_data_and_query_lus(env: Env) -> None:
    env.create(hvparams={}, nics=[{"link": "br0", "name": "eth0"}])
    data = env.run(opcodes.OpInstanceQueryData.create(instances=["inst1"]))
    info = data["inst1"]
    assert info["pnode"] == "node2" and info["run_state"] == "up"
    assert [d["size"] for d in info["disks"]] == [4, 2]
    assert info["be_actual"]["maxmem"] == 128
    # every key Ganeti 3.0's gnt-instance info reads, with its shapes
    inst = env.inst()
    assert info["config_state"] == "up" and info["network_port"] is None
    assert info["pnode_group_name"] == "default" and info["snodes_group_names"] == []
    assert info["os_actual"] == {}
    assert [d["uuid"] for d in info["disks"]] == [d.uuid for d in inst.disks]
    assert all(d["pstatus"] is None and d["children"] == [] and d["spindles"] is None
               for d in info["disks"])
    nic = inst.nics[0]
    assert info["nics"] == [["eth0", nic.uuid, None, nic.mac, "bridged", "br0", "", None,
                             None]]
    static = env.run(opcodes.OpInstanceQueryData.create(instances=["inst1"], static=True))
    assert static["inst1"]["run_state"] is None
    rows = env.run(opcodes.OpInstanceQuery.create(output_fields=["name", "status",
                                                                 "oper_ram"]))
    assert rows == [["inst1", "running", 128]]
    with pytest.raises(errors.OpPrereqError, match="Unknown output fields: bogus"):
        env.run(opcodes.OpInstanceQuery.create(output_fields=["bogus"]))


def test_parallel_creates_on_different_nodes(env: Env) -> None:
    errors_seen: list[BaseException] = []

    def create(name: str, node: str) -> None:
        try:
            env.processor.execute_opcode(opcodes.OpInstanceCreate.create(
                instance_name=name, pnode=node, hypervisor="fake",
                disks=[{"size": 1}]), Callbacks())
        except BaseException as err:
            errors_seen.append(err)

    threads = [threading.Thread(target=create, args=(f"p{i}", f"node{i % 3 + 1}"))
               for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors_seen == []
    assert sorted(i.name for i in env.cfg.get_all_instances_info().values()) == \
        [f"p{i}" for i in range(6)]


# --- gnt-instance argument parsing (what reaches the opcode) ------------------------


@pytest.mark.parametrize("text, mib", [("512", 512), ("512M", 512), ("1G", 1024),
                                       ("1.5g", 1536), ("2T", 2 * 1024 * 1024)])
def test_cli_parse_size(text: str, mib: int) -> None:
    assert gnt_instance.parse_size(text) == mib


@pytest.mark.parametrize("text", ["", "0", "-1", "1Q", "0.3M", "G"])
def test_cli_parse_size_rejects(text: str) -> None:
    with pytest.raises(errors.OpPrereqError, match="Invalid size"):
        gnt_instance.parse_size(text)


def test_cli_disk_nic_and_param_options() -> None:
    disks = gnt_instance.disks_from_opts(["1:size=1G,mode=ro", "0:size=512M,name=root"], None)
    assert disks == [{"size": 512, "name": "root"}, {"size": 1024, "mode": "ro"}]
    assert gnt_instance.disks_from_opts([], "2G") == [{"size": 2048}]
    for specs, message in ((["0:size=1G", "2:size=1G"], "without gaps"),
                           (["0:mode=rw"], "missing size"),
                           (["x:size=1G"], "expected N:key=value"),
                           (["0:size"], "expected key=value"),
                           (["0:size=1G,speed=9"], "unknown parameter")):
        with pytest.raises(errors.OpPrereqError, match=message):
            gnt_instance.disks_from_opts(specs, None)
    with pytest.raises(errors.OpPrereqError, match="not both"):
        gnt_instance.disks_from_opts(["0:size=1G"], "1G")
    assert gnt_instance.beparams_from_opt("maxmem=1G,vcpus=2,auto_balance=no") == {
        "maxmem": 1024, "vcpus": 2, "auto_balance": False}
    assert gnt_instance.hv_from_opt("process:blocks=64,ignore_sigterm=yes") == (
        "process", {"blocks": 64, "ignore_sigterm": True})
    assert gnt_instance.hv_from_opt("blocks=8") == (None, {"blocks": 8})
    assert gnt_instance.hv_from_opt("fake") == ("fake", {})


# --- limits and leftovers of failed creates ---------------------------------------


def _storage_entries(env: Env, node: str = "node2") -> list[str]:
    base = env.roots[node].paths.file_storage_dir
    return sorted(str(p.relative_to(base)) for p in base.rglob("*")) if base.exists() else []


def test_failure_after_the_first_disk_leaves_nothing(env: Env) -> None:
    """Disk, instance directory, config entry and the added instance lock all go."""
    env.rpc.fail_after["blockdev_create"] = 1
    with pytest.raises(errors.OpExecError, match="disk/1"):
        env.create("inst9", disks=[{"size": 1}, {"size": 1}, {"size": 1}])
    assert _storage_entries(env) == []
    assert env.cfg.get_all_instances_info() == {}
    assert env.ctx.glm.names(locking.LEVEL_INSTANCE) == set()
    env.rpc.fail_after.clear()
    env.create("inst9")  # the name is free again
    assert len(env.disk_files()) == 2


def test_failure_when_adding_to_the_config_leaves_nothing(env: Env,
                                                          monkeypatch: Any) -> None:
    def broken(_inst: Any) -> None:
        raise errors.ConfigurationError("injected: config full")
    monkeypatch.setattr(env.ctx, "add_instance", broken)
    with pytest.raises(errors.ConfigurationError, match="injected"):
        env.create("inst8")
    assert _storage_entries(env) == []
    assert env.ctx.glm.names(locking.LEVEL_INSTANCE) == set()


@pytest.mark.parametrize("fields, needle", [
    ({"disks": [{"size": 2**63}]}, "disks[0].size"),
    ({"disks": [{"size": 1}, {"size": 2**63}]}, "disks[1].size"),
    ({"os_type": "../../bin/sh"}, "os_type"),
    ({"os_type": "/bin/sh"}, "os_type"),
    ({"beparams": {"memory": 2**63}}, "beparams.maxmem"),
])
def test_create_beyond_limits_is_refused_before_any_disk(env: Env, fields: dict[str, Any],
                                                         needle: str) -> None:
    with pytest.raises(errors.OpPrereqError) as err:
        env.create("inst7", **fields)
    assert needle in err.value.args[0] and err.value.ecode == errors.ECODE_INVAL
    assert _storage_entries(env) == []
    assert ("blockdev_create", "node2") not in env.rpc.calls
    assert env.ctx.glm.names(locking.LEVEL_INSTANCE) == set()


def test_export_refuses_what_import_could_not_restore(env: Env) -> None:
    """An instance beyond a limit (made before it existed) is not exported; nothing moves."""
    env.create()
    inst = env.inst()
    inst.disks = inst.disks + [Disk(size=1, dev_type="file", iv_name=f"disk/{i}")
                               for i in range(2, 17)]
    inst.tags = ["t" * 129]
    env.cfg.update(inst)
    env.rpc.calls.clear()
    with pytest.raises(errors.OpPrereqError, match="could not be imported again") as err:
        env.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3"))
    assert "disks: 17 items" in err.value.args[0] and "tags[0]" in err.value.args[0]
    assert err.value.ecode == errors.ECODE_INVAL
    procedures = {proc for proc, _node in env.rpc.calls}
    assert not procedures & {"instance_shutdown", "export_prepare", "blockdev_snapshot"}
    assert env.live() is not None  # still running
    export_dir = env.roots["node3"].paths.export_dir
    assert not export_dir.exists() or list(export_dir.iterdir()) == []


def test_verify_reports_orphan_disk_files(env: Env) -> None:
    env.create()
    owned = sorted(str(p) for p in env.disk_files())
    assert env.run_submitted(opcodes.OpClusterVerify.create()) == [[True]]
    stray = env.roots["node3"].paths.file_storage_dir / "gone.example.com" / "u.disk0"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    env.cbs.log.clear()
    assert env.run_submitted(opcodes.OpClusterVerify.create()) == [[False]]
    problems = [m for m in env.cbs.log if "ERROR" in str(m)]
    assert problems == [f"  - ERROR: node node3: orphan disk file {stray} (no instance in"
                        " the configuration owns it)"]
    assert not any(path in " ".join(problems) for path in owned)
