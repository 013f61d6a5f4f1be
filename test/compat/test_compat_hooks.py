"""Hook environments against Ganeti 3.0.2's own code (the oracle).

The same instance data goes to our builders and to Ganeti's pure functions
(``cmdlib.instance_utils.BuildInstanceHookEnvByObject`` for a configured
instance, ``BuildInstanceHookEnv`` with disk specifications for a new one,
``hooksmaster.HooksMaster`` for the phase environments); the variables, after
each side's final formatting, must be identical: names, presence and values.
Ganeti fills its defaults from its own constants (BEC_DEFAULTS, NICC_DEFAULTS);
the only input we adapt is the default NIC link (we have no default bridge).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.ganeti_oracle import Ganeti3

from ganeti import constants, objects
from ganeti.hooks import build_instance_hook_env, build_new_instance_hook_env
from ganeti.hooks.instance_env import NIC_DEFAULTS, filled_hvparams
from ganeti.hooks.master import HooksMaster, prefixed_env

NODES = {"uuid-1": "node1.example.com", "uuid-2": "node2.example.com"}

# Ganeti's side: a cluster filled from its own defaults, a config stub for the
# lookups BuildInstanceHookEnvByObject makes, and the instance as Ganeti 3.0 keeps
# it (disks by uuid in the config)
_ORACLE = """
import json
from ganeti import constants, objects
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
