"""Hook environments against Ganeti 3.0.2's own code (the oracle).

The same instance data goes to our builders and to Ganeti's pure functions
(``cmdlib.instance_utils.BuildInstanceHookEnvByObject`` for a configured
instance, ``BuildInstanceHookEnv`` with disk specifications for a new one,
``hooksmaster.HooksMaster`` for the phase environments, and each LU's own
``BuildHooksEnv`` for every hook path we have); the variables, after each side's
final formatting, must be identical: names, presence and values.
Ganeti fills its defaults from its own constants (BEC_DEFAULTS, NICC_DEFAULTS);
the only input we adapt is the default NIC link (we have no default bridge).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.ganeti_oracle import Ganeti3

from ganeti import constants, objects, opcodes
from ganeti.hooks import build_instance_hook_env, build_new_instance_hook_env
from ganeti.hooks.instance_env import NIC_DEFAULTS, filled_hvparams
from ganeti.hooks.master import HooksMaster, prefixed_env

NODES = {"uuid-1": "node1.example.com", "uuid-2": "node2.example.com"}

# Ganeti's side: a cluster filled from its own defaults, a config stub for the
# lookups BuildInstanceHookEnvByObject makes, and the instance as Ganeti 3.0 keeps
# it (disks by uuid in the config)
_ORACLE = """
import json
from ganeti import constants, objects, opcodes
from ganeti.cmdlib import instance_utils as iu

data = json.loads(DATA)
cluster = objects.Cluster(
    beparams={"default": objects.FillDict(constants.BEC_DEFAULTS, data["cluster_be"])},
    hvparams=data["cluster_hv"], os_hvp={},
    nicparams={"default": objects.FillDict(constants.NICC_DEFAULTS, data["nic_overrides"])})
disks = [objects.Disk.FromDict(d) for d in data["disks"]]

class Cfg:
    def GetClusterInfo(self):
        return cluster
    def GetInstanceSecondaryNodes(self, uuid):
        return data["instance"]["secondary_nodes"]
    def GetInstanceDisks(self, uuid):
        return disks
    def GetNodeName(self, uuid):
        return data["names"][uuid]
    def GetNodeNames(self, uuids):
        return [data["names"][u] for u in uuids]
    def GetNetwork(self, uuid):
        return None

class LU:
    cfg = Cfg()

inst = dict(data["instance"])
inst.pop("secondary_nodes")
inst["disks"] = [d.uuid for d in disks]
instance = objects.Instance.FromDict(inst)
if data["new"]:
    env = iu.BuildInstanceHookEnv(
        name=instance.name, primary_node_name=data["names"][instance.primary_node],
        secondary_node_names=[], status=data["start"], os_type=instance.os,
        minmem=cluster.FillBE(instance)["minmem"], maxmem=cluster.FillBE(instance)["maxmem"],
        vcpus=cluster.FillBE(instance)["vcpus"], nics=iu.NICListToTuple(LU(), instance.nics),
        disk_template=data["disk_template"],
        disks=[{k: v for k, v in d.items() if k in ("size", "mode", "name")}
               for d in data["disks"]],
        bep=cluster.FillBE(instance), hvp=cluster.FillHV(instance),
        hypervisor_name=instance.hypervisor, tags=data["tags"])
else:
    env = iu.BuildInstanceHookEnvByObject(LU(), instance)
result = {k: str(v) for k, v in env.items()}
"""


def _instance(disks: list[objects.Disk], nics: list[objects.NIC],
              hypervisor: str = constants.HT_PROCESS) -> tuple[objects.Instance,
                                                               objects.Cluster]:
    cluster = objects.Cluster(
        cluster_name="cluster.example.com", master_node="uuid-1",
        beparams={"maxmem": 512, "minmem": 256, "vcpus": 1},
        hvparams={constants.HT_PROCESS: {"blocks": 64}, constants.HT_KVM: {
            "disk_cache": "none"}})
    instance = objects.Instance(
        name="web1.example.com", primary_node="uuid-1", secondary_nodes=["uuid-2"],
        os="debootstrap+default", hypervisor=hypervisor, hvparams={"ignore_sigterm": True}
        if hypervisor == constants.HT_PROCESS else {"kvm_flag": "disabled"},
        beparams={"vcpus": 2, "auto_balance": False}, admin_state="up",
        disk_template=constants.DT_FILE, disks=disks, nics=nics, tags=["prod", "web"])
    return instance, cluster


def _oracle_env(ganeti3: Ganeti3, instance: objects.Instance, cluster: objects.Cluster,
                new: bool = False, start: bool = True) -> dict[str, str]:
    """Ganeti's variables for the same data (our hypervisor defaults filled in the
    cluster, as Ganeti's clusters hold every parameter)."""
    inst = instance.to_dict()
    disks = inst.pop("disks")
    for disk in disks:
        disk.pop("iv_name", None)
        disk.pop("params", None)
    inst.pop("admin_state_source", None)
    inst.pop("disk_template", None)
    inst["nics"] = [{k: v for k, v in nic.items() if k in
                     ("uuid", "name", "mac", "ip", "network", "nicparams")}
                    for nic in inst["nics"]]
    inst = {k: v for k, v in inst.items() if k in (
        "uuid", "name", "primary_node", "os", "hypervisor", "hvparams", "beparams",
        "admin_state", "nics", "tags", "secondary_nodes")}
    data = {
        "instance": inst, "disks": disks, "names": NODES, "new": new, "start": start,
        "disk_template": instance.disk_template, "tags": sorted(instance.tags),
        "cluster_be": cluster.beparams,
        "cluster_hv": {hv: filled_hvparams(cluster, hv, {}) for hv in constants.HYPER_TYPES},
        "nic_overrides": {"link": NIC_DEFAULTS["link"]},
    }
    result: dict[str, str] = ganeti3.eval(f"DATA = {json.dumps(json.dumps(data))}\n" + _ORACLE)
    # Ganeti keeps tags in a set: their order is arbitrary there (ours: sorted)
    result["INSTANCE_TAGS"] = " ".join(sorted(result["INSTANCE_TAGS"].split()))
    return result


def _ours(env: dict[str, Any]) -> dict[str, str]:
    """Our LU environment as it reaches a script (without the GANETI_ prefix)."""
    return prefixed_env(env, "")


def _disk(uuid: str, size: int, dev_type: objects.DiskType, logical_id: list[str],
          mode: objects.DiskMode = "rw", name: str | None = None) -> objects.Disk:
    return objects.Disk(uuid=uuid, size=size, dev_type=dev_type, logical_id=logical_id,
                        mode=mode, name=name)


CASES = {
    "file-and-plain-disks-and-every-nic-mode": (
        [_disk("d-0", 1024, "file", ["loop", "/srv/ganeti/file-storage/web1/disk0"],
               name="root"),
         _disk("d-1", 2048, "plain", ["xenvg", "web1-disk1"], mode="ro")],
        [objects.NIC(uuid="n-0", name="eth0", mac="aa:00:00:00:00:01", ip="192.0.2.10",
                     nicparams={"mode": "bridged", "link": "br0"}),
         objects.NIC(uuid="n-1", mac="aa:00:00:00:00:02",
                     nicparams={"mode": "openvswitch", "link": "ovs0", "vlan": ".5:7"}),
         objects.NIC(uuid="n-2", mac="aa:00:00:00:00:03",
                     nicparams={"mode": "routed", "link": "100"}),
         objects.NIC(uuid="n-3", mac="aa:00:00:00:00:04")]),
    "diskless-without-nics": ([], []),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("hypervisor", [constants.HT_PROCESS, constants.HT_KVM])
def test_instance_env_is_ganetis(ganeti3: Ganeti3, case: str, hypervisor: str) -> None:
    disks, nics = CASES[case]
    instance, cluster = _instance(disks, nics, hypervisor)
    ours = _ours(build_instance_hook_env(instance, cluster, NODES.__getitem__))
    theirs = _oracle_env(ganeti3, instance, cluster)
    assert ours == theirs


@pytest.mark.parametrize("start", [True, False])
def test_new_instance_env_is_ganetis(ganeti3: Ganeti3, start: bool) -> None:
    disks, nics = CASES["file-and-plain-disks-and-every-nic-mode"]
    instance, cluster = _instance(disks[:1], nics)
    instance.secondary_nodes = []
    ours = _ours(build_new_instance_hook_env(instance, cluster, NODES.__getitem__, start,
                                             instance.disk_template))
    theirs = _oracle_env(ganeti3, instance, cluster, new=True, start=start)
    assert ours == theirs


_MASTER_ORACLE = """
import json
from ganeti import hooksmaster

data = json.loads(DATA)
state = {"env": data["pre"]}
seen = []

def execute(nodes, hpath, phase, env):
    seen.append(env)
    return {n: (None, False, []) for n in nodes}

hm = hooksmaster.HooksMaster(
    data["op_id"], data["hpath"], (["node1"], ["node1"]), execute, None,
    lambda: state["env"], None, None, data["htype"], "cluster.example.com", "node1")
hm.RunPhase("pre")
state["env"] = data["post"]
hm.RunPhase("post")
result = seen
"""


@pytest.mark.parametrize("htype", [constants.HTYPE_INSTANCE, None])
def test_phase_environments_are_ganetis(ganeti3: Ganeti3, htype: str | None) -> None:
    # values of every type LUs pass: Ganeti formats them all with str()
    pre = {"EXPORT_MODE": "local", "EXPORT_DO_SHUTDOWN": True, "SHUTDOWN_TIMEOUT": 120,
           "REMOVE_INSTANCE": "False", "OFFLINE": None, "INSTANCE_NIC0_IP": "",
           "TARGET": ["a", 1]}
    post = {**pre, "EXPORT_DO_SHUTDOWN": False, "EXTRA_AFTER": 3}
    state = {"env": pre}
    seen: list[dict[str, str]] = []

    class Answer:
        fail_msg = None
        offline = False
        payload: list[Any] = []

    def execute(nodes: list[str], hpath: str, phase: str,
                env: dict[str, str]) -> dict[str, Answer]:
        seen.append({"PATH": constants.HOOKS_PATH, **env})
        return {n: Answer() for n in nodes}

    hm = HooksMaster("OP_BACKUP_EXPORT", "instance-export", htype, (["node1"], ["node1"]),
                     execute, lambda: state["env"], "cluster.example.com", "node1",
                     "/var/lib/ganeti", lambda _msg: None)
    hm.run_phase(constants.HOOKS_PHASE_PRE)
    state["env"] = post
    hm.run_phase(constants.HOOKS_PHASE_POST)

    data = {"op_id": "OP_BACKUP_EXPORT", "hpath": "instance-export", "htype": htype,
            "pre": pre, "post": post}
    theirs = ganeti3.eval(f"DATA = {json.dumps(json.dumps(data))}\n" + _MASTER_ORACLE)
    assert seen == theirs


# --- whole LU environments ------------------------------------------------------
#
# Each hook path of ours runs on the loopback harness; Ganeti's own BuildHooksEnv of
# the matching LU is then called on a stand-in object carrying the same data (the
# opcode's fields, the instance, the cluster), and both environments must agree.

_LU_ORACLE = """
import importlib, json
from types import SimpleNamespace
from ganeti import constants, objects, utils

data = json.loads(DATA)
result = {}
for case in data["cases"]:
    c = data["cluster"]
    cluster = objects.Cluster(
        cluster_name=c["name"], tags=set(c["tags"]), os_hvp={},
        beparams={"default": objects.FillDict(constants.BEC_DEFAULTS, c["be"])},
        hvparams=c["hv"],
        nicparams={"default": objects.FillDict(constants.NICC_DEFAULTS, c["nic"])})
    names = data["names"]
    disks = [objects.Disk.FromDict(d) for d in case.get("disks", [])]

    class Cfg:
        def GetClusterInfo(self): return cluster
        def GetClusterName(self): return c["name"]
        def GetInstanceSecondaryNodes(self, uuid): return []
        def GetInstanceDisks(self, uuid): return disks
        def GetNodeName(self, uuid): return names[uuid]
        def GetNodeNames(self, uuids): return [names[u] for u in uuids]
        def GetNetwork(self, uuid): return None

    lu = SimpleNamespace(cfg=Cfg(), cluster=cluster, op=SimpleNamespace(**case["op"]))
    if "instance" in case:
        inst = dict(case["instance"], disks=[d.uuid for d in disks])
        lu.instance = objects.Instance.FromDict(inst)
        lu.secondary_nodes, lu.inst_disks = [], disks
    extra = case.get("extra", {})
    if "be_new_own" in extra:
        lu.be_new, lu._new_nics = cluster.SimpleFillBE(extra["be_new_own"]), None
    if "create" in extra:
        x = extra["create"]
        lu.secondaries = []
        lu.be_full = cluster.SimpleFillBE(x["beparams"])
        lu.hv_full = cluster.SimpleFillHV(case["op"]["hypervisor"], case["op"]["os_type"],
                                          x["hvparams"])
        lu.nics = [objects.NIC.FromDict(n) for n in x["nics"]]
        lu.disks = x["disks"]
        lu.src_images = [utils.PathJoin(case["op"]["src_path"], d) for d in x["dumps"]]
    if "nodes" in extra:
        lu.my_node_info = {n["uuid"]: objects.Node(uuid=n["uuid"], name=n["name"],
                                                  tags=set(n["tags"]))
                           for n in extra["nodes"]}
    module, name = case["lu"].split(":")
    env = getattr(importlib.import_module(module), name).BuildHooksEnv(lu)
    result[case["path"]] = {k: str(v) for k, v in env.items()}
"""

_COMMON = {"HOOKS_VERSION", "HOOKS_PHASE", "HOOKS_PATH", "OP_CODE", "OBJECT_TYPE",
           "CLUSTER", "MASTER", "DATA_DIR"}


def _ganeti_instance(inst: objects.Instance) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An instance and its disks as Ganeti 3.0's objects take them."""
    data = inst.to_dict()
    disks = [{k: v for k, v in d.items() if k in ("uuid", "name", "size", "mode", "dev_type",
                                                  "logical_id")} for d in data["disks"]]
    keep = ("uuid", "name", "primary_node", "os", "hypervisor", "hvparams", "beparams",
            "admin_state", "tags")
    ganeti = {k: v for k, v in data.items() if k in keep}
    ganeti["nics"] = [{k: v for k, v in nic.items() if k in
                       ("uuid", "name", "mac", "ip", "network", "nicparams")}
                      for nic in data["nics"]]
    return ganeti, disks


@pytest.fixture(scope="module")
def lu_cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any],
                                                                 dict[str, dict[str, str]]]:
    """(data for Ganeti, our pre-phase environments on the master), per hook path."""
    from support.loopback import certified_env

    from ganeti import pathutils
    from ganeti.backup import exportconf
    from ganeti.cmdlib.node import LUNodeAdd
    from ganeti.hooks.master import hooks_master_for

    env = certified_env(tmp_path_factory.mktemp("lus"))
    cases: list[dict[str, Any]] = []

    def run(path: str, lu: str, op: Any, op_fields: dict[str, Any], name: str | None = None,
            **extra: Any) -> None:
        case: dict[str, Any] = {"path": path, "lu": lu, "op": op_fields, "extra": extra}
        if name is not None:
            case["instance"], case["disks"] = _ganeti_instance(env.inst(name))
        env.run(op)
        cases.append(case)

    create = opcodes.OpInstanceCreate.create(
        instance_name="web1", pnode="node2", hypervisor="process", start=False,
        disks=[{"size": 4, "name": "root"}, {"size": 2}], tags=["web", "prod"],
        nics=[{"mode": "bridged", "link": "br0", "name": "eth0"}, {"mode": "routed",
                                                                   "link": "10"}],
        beparams={"vcpus": 2}, hvparams={"blocks": 32})
    env.run(create)
    inst, disks = _ganeti_instance(env.inst("web1"))
    cases.append({"path": "instance-add", "lu": "ganeti.cmdlib.instance_create:"
                  "LUInstanceCreate", "op": {
                      "mode": "create", "instance_name": "web1", "pnode": "node2",
                      "start": False, "os_type": "", "disk_template": "file",
                      "hypervisor": "process", "tags": ["prod", "web"], "src_path": ""},
                  "extra": {"create": {"beparams": {"vcpus": 2}, "hvparams": {"blocks": 32},
                                       "nics": inst["nics"], "dumps": [],
                                       "disks": [{k: d[k] for k in ("size", "mode", "name")
                                                  if d.get(k)} for d in disks]}}})
    run("instance-start", "ganeti.cmdlib.instance_operation:LUInstanceStartup",
        opcodes.OpInstanceStartup.create(instance_name="web1", force=True),
        {"force": True}, "web1")
    run("instance-reboot", "ganeti.cmdlib.instance_operation:LUInstanceReboot",
        opcodes.OpInstanceReboot.create(instance_name="web1", reboot_type="hard"),
        {"ignore_secondaries": False, "reboot_type": "hard", "shutdown_timeout": 120},
        "web1")
    run("instance-stop", "ganeti.cmdlib.instance_operation:LUInstanceShutdown",
        opcodes.OpInstanceShutdown.create(instance_name="web1", timeout=33),
        {"timeout": 33}, "web1")
    run("instance-modify", "ganeti.cmdlib.instance_set_params:LUInstanceSetParams",
        opcodes.OpInstanceSetParams.create(instance_name="web1", beparams={"maxmem": 256}),
        {"disk_template": None, "runtime_mem": None}, "web1",
        be_new_own={"vcpus": 2, "maxmem": 256})
    run("instance-export", "ganeti.cmdlib.backup:LUBackupExport",
        opcodes.OpBackupExport.create(instance_name="web1", target_node="node3",
                                      shutdown_timeout=60),
        {"mode": "local", "target_node": "node3", "shutdown": True, "shutdown_timeout": 60,
         "remove_instance": False}, "web1")
    node3 = env.roots["node3"].paths
    src_path = pathutils.to_wire_name(node3, node3.export_dir / "web1")
    env.run(opcodes.OpInstanceCreate.create(instance_name="copy1", mode="import",
                                            src_path="web1", pnode="node1", start=False))
    inst, disks = _ganeti_instance(env.inst("copy1"))
    cases.append({"path": "instance-import", "lu": "ganeti.cmdlib.instance_create:"
                  "LUInstanceCreate", "op": {
                      "mode": "import", "instance_name": "copy1", "pnode": "node1",
                      "start": False, "os_type": inst["os"], "disk_template": "file",
                      "hypervisor": inst["hypervisor"], "tags": [], "src_node": "node3",
                      "src_path": src_path},
                  "extra": {"create": {
                      "beparams": inst["beparams"], "hvparams": inst["hvparams"],
                      "nics": inst["nics"],
                      "dumps": [exportconf.dump_name(i) for i in range(len(disks))],
                      "disks": [{k: d[k] for k in ("size", "mode", "name") if d.get(k)}
                                for d in disks]}}})
    run("instance-remove", "ganeti.cmdlib.instance:LUInstanceRemove",
        opcodes.OpInstanceRemove.create(instance_name="copy1", shutdown_timeout=44),
        {"shutdown_timeout": 44}, "copy1")
    run("node-modify", "ganeti.cmdlib.node:LUNodeSetParams",
        opcodes.OpNodeSetParams.create(node_name="node3", drained=True),
        {"node_name": "node3", "master_candidate": None, "offline": None, "drained": True,
         "master_capable": None, "vm_capable": None})
    cluster_nodes = [{"uuid": n.uuid, "name": n.name, "tags": n.tags}
                     for n in env.cfg.get_all_nodes_info().values()]
    run("cluster-verify", "ganeti.cmdlib.cluster.verify:LUClusterVerifyGroup",
        opcodes.OpClusterVerifyGroup.create(group_name="default"), {},
        nodes=cluster_nodes)
    run("cluster-modify", "ganeti.cmdlib.cluster:LUClusterSetParams",
        opcodes.OpClusterSetParams.create(backup_defaults={"bwlimit": 5}), {"vg_name": None})
    run("node-remove", "ganeti.cmdlib.node:LUNodeRemove",
        opcodes.OpNodeRemove.create(node_name="node3"), {"node_name": "node3"})

    ours: dict[str, dict[str, str]] = {}
    for call in env.rpc.hooks:
        path = call["hpath"]
        if path == "instance-add" and call["env"]["GANETI_ADD_MODE"] == "import":
            path = "instance-import"
        ours.setdefault(path, {k.removeprefix("GANETI_"): v for k, v in call["env"].items()
                               if not k.startswith("GANETI_POST_")
                               and k.removeprefix("GANETI_") not in _COMMON})
    # node-add: its daemon check needs a real node; the environment is the LU's own
    lu = LUNodeAdd(env.ctx, opcodes.OpNodeAdd.create(node_name="node4",
                                                     primary_ip="127.0.0.4"), env.cbs.feedback)
    lu.ExpandNames()
    lu.CheckPrereq()
    ours["node-add"] = {k.removeprefix("GANETI_"): v for k, v in
                        hooks_master_for(lu).build_env("pre").items()
                        if k.removeprefix("GANETI_") not in _COMMON}
    cases.append({"path": "node-add", "lu": "ganeti.cmdlib.node:LUNodeAdd", "op": {
        "node_name": "node4", "primary_ip": "127.0.0.4", "secondary_ip": "127.0.0.4",
        "master_capable": True, "vm_capable": True}, "extra": {}})
    cluster = env.cfg.get_cluster_info()
    # the removed node's name is still needed for the cases recorded before
    names = {n["uuid"]: n["name"] for n in cluster_nodes}
    data: dict[str, Any] = {
        "cases": cases, "names": names,
        "cluster": {"name": cluster.cluster_name, "tags": cluster.tags,
                    "be": cluster.beparams,
                    "hv": {hv: filled_hvparams(cluster, hv, {}) for hv in constants.HYPER_TYPES},
                    "nic": {"link": NIC_DEFAULTS["link"]}}}
    return data, ours


# our additions to Ganeti's variables (doc/hooks.md, "Deliberate differences")
_EXTENSIONS = {"node-modify": {"NODE_NAME", "BACKUP_BWLIMIT"}}


def test_lu_environments_are_ganetis(ganeti3: Ganeti3, lu_cases: tuple[
        dict[str, Any], dict[str, dict[str, str]]]) -> None:
    data, ours = lu_cases
    theirs: dict[str, dict[str, str]] = ganeti3.eval(
        f"DATA = {json.dumps(json.dumps(data))}\n" + _LU_ORACLE)
    assert sorted(theirs) == sorted(ours)
    for path, env in ours.items():
        mine = {k: v for k, v in env.items() if k not in _EXTENSIONS.get(path, set())}
        if "INSTANCE_TAGS" in theirs[path]:   # a set in Ganeti: any order
            theirs[path]["INSTANCE_TAGS"] = " ".join(sorted(
                theirs[path]["INSTANCE_TAGS"].split()))
        assert mine == theirs[path], path
