"""The export format against Ganeti 3.0's own code (doc/export-format.md).

Ganeti's config parser and its import's reading rules
(``LUInstanceCreate._ReadExportParams`` and the checks that follow it: the
hypervisor must be one it knows, every [hypervisor] key one of
``HVS_PARAMETER_TYPES`` with the right type and accepted by the hypervisor's
syntax check, [backend] of ``BES_PARAMETER_COMPAT``) read the config.ini we
write; our parser accepts and refuses Ganeti's own sample exports exactly
where Ganeti's import does; and 3.0's own gnt-backup scripts export, list,
import and remove against a local cluster.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from support.cluster import E2ECluster
from support.ganeti_oracle import Ganeti3

from ganeti import errors
from ganeti.backup import exportconf
from ganeti.hypervisor import HYPERVISORS
from ganeti.hypervisor.hv_kvm import AIO_CHOICES, CACHE_CHOICES
from ganeti.objects import NIC, Cluster, Disk, Instance

# 3.0's reading of one config.ini text, as LUInstanceCreate does it for an import
_READ = r'''
import json
import shutil
from ganeti import constants, hypervisor, objects, serializer, utils
from ganeti.cmdlib import instance_create

class _Op:
    pass

def read(text, hv=None):
    einfo = objects.SerializableConfigParser.Loads(text)
    for section in (constants.INISECT_EXP, constants.INISECT_INS):
        if not einfo.has_section(section):
            raise ValueError("Export info file doesn't have the required fields")
    version = einfo.get(constants.INISECT_EXP, "version")
    if int(version) != constants.EXPORT_VERSION:
        raise ValueError("Wrong export version %s" % version)
    op = _Op()
    op.disks, op.nics, op.tags = [], [], []
    op.hypervisor, op.hvparams, op.beparams = hv, {}, {}
    op.osparams, op.osparams_private = {}, {}
    op.disk_template = constants.DT_PLAIN
    lu = _Op()
    lu.op = op
    instance_create.LUInstanceCreate._ReadExportParams(lu, einfo)
    einfo.get(constants.INISECT_INS, "name")
    return op

def check(op):
    """The checks of LUInstanceCreate.CheckPrereq that need no cluster."""
    if op.hypervisor not in constants.HYPER_TYPES:
        raise ValueError("Unknown hypervisor %s" % op.hypervisor)
    utils.ForceDictType(op.hvparams, constants.HVS_PARAMETER_TYPES)
    filled = dict(constants.HVC_DEFAULTS[op.hypervisor])
    filled.update(op.hvparams)
    hypervisor.GetHypervisorClass(op.hypervisor).CheckParameterSyntax(filled)
    if set(op.hvparams) & constants.HVC_GLOBALS:
        raise ValueError("global hypervisor parameters")
    utils.ForceDictType(op.beparams, constants.BES_PARAMETER_COMPAT)
    objects.UpgradeBeParams(op.beparams)
    utils.ForceDictType(op.beparams, constants.BES_PARAMETER_TYPES)
    for nic in op.nics:
        params = dict((k, v) for k, v in nic.items()
                      if k in constants.NICS_PARAMETER_TYPES and v is not None)
        utils.ForceDictType(params, constants.NICS_PARAMETER_TYPES)
        if params.get("mode", "bridged") not in constants.NIC_VALID_MODES:
            raise ValueError("bad NIC mode")

def outcome(text, hv=None, full=False):
    try:
        op = read(text, hv)
        if full:
            check(op)
    except Exception as err:
        return {"ok": False, "error": "%s: %s" % (type(err).__name__, err)}
    return {"ok": True, "hypervisor": op.hypervisor, "hvparams": op.hvparams,
            "beparams": op.beparams, "osparams": op.osparams,
            "osparams_private": dict((k, v.Get()) for k, v in op.osparams_private.items()),
            "disks": op.disks, "nics": op.nics, "os": op.os_type, "tags": op.tags}
'''


def _ganeti_reads(ganeti3: Ganeti3, texts: dict[str, str], hv: str | None = None,
                  full: bool = False) -> dict[str, Any]:
    code = (_READ + f"\ntexts = json.loads({json.dumps(json.dumps(texts))})\n"
            f"result = dict((k, outcome(v, {hv!r}, {full!r})) for k, v in texts.items())\n")
    result: dict[str, Any] = ganeti3.eval(code)
    return result


def _samples(ganeti3: Ganeti3) -> dict[str, str]:
    found = sorted((ganeti3.testsuite / "test" / "data" / "ovfdata").glob("*.ini"))
    assert found, f"no sample exports in {ganeti3.testsuite}"
    return {path.name: path.read_text() for path in found}


# why we refuse each sample Ganeti's import refuses (its reason, in our words)
_REFUSED = {
    "empty.ini": "[export] version is missing",
    "no_disk.ini": "[export] os is missing",
    "no_os.ini": "[export] os is missing",
    "wrong_config.ini": "not an INI file",
}


def test_samples_accepted_and_refused_as_ganeti_does(ganeti3: Ganeti3) -> None:
    samples = _samples(ganeti3)
    theirs = _ganeti_reads(ganeti3, samples)
    assert set(_REFUSED) < set(samples)
    for name, text in samples.items():
        if not theirs[name]["ok"]:
            assert name in _REFUSED, f"Ganeti refuses {name}: {theirs[name]['error']}"
            with pytest.raises(errors.OpPrereqError) as err:
                exportconf.parse(text)
            assert _REFUSED[name] in str(err.value.args[0])
            assert err.value.ecode == errors.ECODE_INVAL
            continue
        assert name not in _REFUSED
        ours = exportconf.parse(text)
        want = theirs[name]
        assert ours.os == want["os"] and ours.hypervisor == want["hypervisor"]
        assert ours.hvparams == want["hvparams"]
        assert [d.size for d in ours.disks] == [d["size"] for d in want["disks"]]
        # 3.0 drops "memory" later (UpgradeBeParams), having set maxmem/minmem from it
        assert {k: str(v) for k, v in ours.backend_params().items()} == \
            {k: v for k, v in want["beparams"].items() if k != "memory"}
        assert [n.mac for n in ours.nics] == [n["mac"] for n in want["nics"]]
        assert [n.ip for n in ours.nics] == [n["ip"] for n in want["nics"]]
        assert ours.timestamp is None   # none of Ganeti's samples has one


def test_accepted_samples_are_the_ones_with_a_raw_dump(ganeti3: Ganeti3) -> None:
    """config.ini names rawdisk.raw (size 0: the dump's); unsafe_path.ini a dump in
    a subdirectory, below the export directory, which Ganeti's import takes too."""
    samples = _samples(ganeti3)
    assert exportconf.parse(samples["config.ini"]).disks[0].dump == "rawdisk.raw"
    assert exportconf.parse(samples["unsafe_path.ini"]).disks[0].dump == \
        "other/rawdisk.raw"


def _instance(hv: str, hvparams: dict[str, Any]) -> Instance:
    return Instance(
        name="web1", primary_node="uuid-n1", os="debootstrap+default", hypervisor=hv,
        disk_template="file", tags=["web"], beparams={"vcpus": 2}, hvparams=hvparams,
        osparams={"dhcp": "yes"}, osparams_private={"root_password": "hunter2"},
        disks=[Disk(size=1024, dev_type="file", iv_name="disk/0", name="root"),
               Disk(size=512, dev_type="file", iv_name="disk/1")],
        nics=[NIC(mac="aa:00:00:11:22:33", nicparams={"mode": "bridged", "link": "br0"}),
              NIC(mac="aa:00:00:11:22:34", nicparams={"mode": "routed", "link": "rt"})])


def _written(hv: str, hvparams: dict[str, Any]) -> str:
    cluster = Cluster(cluster_name="c", master_node="uuid-n1",
                      beparams={"maxmem": 256, "minmem": 128, "vcpus": 1})
    return exportconf.render(exportconf.from_instance(
        _instance(hv, hvparams), cluster, "node1", ["blake3-4m:" + "0" * 64, None],
        timestamp=1700000000))


def _check_params(read: dict[str, Any]) -> None:
    assert read["ok"], read.get("error")
    assert read["beparams"] == {"always_failover": False, "auto_balance": True,
                                "maxmem": 256, "minmem": 128, "spindle_use": 1, "vcpus": 2}
    assert read["osparams"] == {"dhcp": "yes"}
    assert read["osparams_private"] == {"root_password": "hunter2"}
    assert [d["size"] for d in read["disks"]] == [1024, 512]
    assert [n.get("vlan") for n in read["nics"]] == ["", ""]
    assert read["tags"] == ["web"]


def test_ganeti_imports_our_kvm_export(ganeti3: Ganeti3) -> None:
    text = _written("kvm", {"kvm_path": "", "kvm_flag": "enabled", "disk_cache": "unsafe",
                            "machine_version": "pc"})
    read = _ganeti_reads(ganeti3, {"kvm": text}, full=True)["kvm"]
    _check_params(read)
    assert read["hypervisor"] == "kvm"
    # what 3.0 accepts; our "" (default binary) and "unsafe" stay in our section
    assert read["hvparams"] == {"kvm_flag": "enabled", "machine_version": "pc"}


def test_ganeti_imports_our_process_export_with_another_hypervisor(
        ganeti3: Ganeti3) -> None:
    """As doc/export-format.md says: ``gnt-backup import -H kvm ...``; without -H
    Ganeti refuses the hypervisor it does not know, and nothing else."""
    text = _written("process", {"write_interval_ms": 10, "blocks": 64})
    read = _ganeti_reads(ganeti3, {"process": text}, hv="kvm", full=True)["process"]
    _check_params(read)
    assert read["hypervisor"] == "kvm" and read["hvparams"] == {}
    refused = _ganeti_reads(ganeti3, {"process": text}, full=True)["process"]
    assert not refused["ok"] and "Unknown hypervisor process" in refused["error"]


def test_ganeti_parses_what_we_write_like_we_do(ganeti3: Ganeti3) -> None:
    """Every section and key of ours, read by 3.0's SerializableConfigParser."""
    text = _written("process", {"write_interval_ms": 10})
    code = ("from ganeti import objects\n"
            f"cfg = objects.SerializableConfigParser.Loads({text!r})\n"
            "result = dict((s, dict((k, cfg.get(s, k)) for k in cfg.options(s)))"
            " for s in cfg.sections())\n")
    theirs = ganeti3.eval(code)
    assert list(theirs) == ["export", "instance", "hypervisor", "backend", "os",
                            "os_private", "ganeti-ng:hypervisor"]
    assert theirs["instance"]["nic0_vlan"] == ""
    assert theirs["instance"]["disk1_name"] is None          # "None" is None to 3.0
    assert theirs["ganeti-ng:hypervisor"] == {"write_interval_ms": "10"}


_SYNTAX = r'''
import json
from ganeti import constants, hypervisor
probes = json.loads(PROBES)
result = {"types": sorted(constants.HYPER_TYPES), "accepts": {}}
for hv, params in probes.items():
    cls = hypervisor.GetHypervisorClass(hv)
    for name, values in params.items():
        for value in values:
            filled = dict(constants.HVC_DEFAULTS[hv])
            filled[name] = value
            try:
                if name not in cls.PARAMETERS:
                    raise ValueError("unknown")
                cls.CheckParameterSyntax(filled)
                ok = True
            except Exception:
                ok = False
            result["accepts"]["%s %s %s" % (hv, name, value)] = ok
'''


def test_hypervisor_table_is_what_ganeti_accepts(ganeti3: Ganeti3) -> None:
    """exportconf.GANETI3_HV_PARAMETERS against 3.0's own hypervisor classes: every
    value of ours goes to [hypervisor] exactly when 3.0's syntax check takes it."""
    ours = {hv: HYPERVISORS[hv].PARAMETERS for hv in exportconf.GANETI3_HV_PARAMETERS}
    samples = {"kvm_path": ["", "/usr/bin/kvm", "kvm", "/a/../kvm"],
               "kvm_flag": ["", "enabled", "disabled", "auto"],
               "disk_cache": list(CACHE_CHOICES), "disk_aio": [*AIO_CHOICES, "posix"],
               "machine_version": ["", "pc-i440fx-7.2"],
               "kernel_path": ["", "/boot/vmlinuz", "vmlinuz"],
               "initrd_path": ["", "/boot/initrd.img", "initrd.img"],
               "kernel_args": ["", "console=ttyS0 quiet"]}
    probes = {hv: {name: samples[name] for name in params} for hv, params in ours.items()}
    theirs = ganeti3.eval(f"PROBES = {json.dumps(json.dumps(probes))}\n" + _SYNTAX)
    assert set(exportconf.GANETI3_HV_PARAMETERS) <= set(theirs["types"])
    assert "process" not in theirs["types"]
    assert set(ours) == set(exportconf.GANETI3_HV_PARAMETERS)
    for hv, params in probes.items():
        for name, values in params.items():
            for value in values:
                ganeti, _ = exportconf.split_hvparams(hv, {name: value})
                assert (name in ganeti) == theirs["accepts"][f"{hv} {name} {value}"], \
                    (hv, name, value)


# 3.0's backend.FinalizeExport for the same instance, its file writes captured
_FINALIZE = r'''
from ganeti import backend, constants, objects, serializer
captured = {}
backend.utils.WriteFile = lambda path, data=None, **kw: captured.update(text=data)
backend.shutil.rmtree = lambda *args, **kw: None
backend.shutil.move = lambda *args, **kw: None
backend.time.time = lambda: 1700000000
inst = objects.Instance(
    name="web1", primary_node="node1", os="debootstrap+default", hypervisor="kvm",
    beparams={"always_failover": False, "auto_balance": True, "maxmem": 256,
              "minmem": 128, "spindle_use": 1, "vcpus": 2},
    hvparams={"kvm_flag": "enabled", "machine_version": "pc"}, osparams={"dhcp": "yes"},
    osparams_private=serializer.PrivateDict({"root_password": "hunter2"}), tags=["web"],
    nics=[objects.NIC(mac="aa:00:00:11:22:33", ip=None, network=None, name=None,
                      nicparams={"mode": "bridged", "link": "br0", "vlan": ""}),
          objects.NIC(mac="aa:00:00:11:22:34", ip=None, network=None, name=None,
                      nicparams={"mode": "routed", "link": "rt", "vlan": ""})])
disks = [objects.Disk(dev_type=constants.DT_FILE, iv_name="disk/0", uuid="disk0.img",
                      size=1024, name="root"),
         objects.Disk(dev_type=constants.DT_FILE, iv_name="disk/1", uuid="disk1.img",
                      size=512, name=None)]
backend.FinalizeExport(inst, disks)
result = captured["text"]
'''


def test_we_write_what_ganetis_finalize_export_writes(ganeti3: Ganeti3) -> None:
    """Byte for byte, but for our extensions (disk modes and checksums, our section)."""
    theirs = ganeti3.eval(_FINALIZE)
    ours = _written("kvm", {"kvm_flag": "enabled", "machine_version": "pc"})
    extensions = [line for line in ours.splitlines(keepends=True)
                  if line.startswith(("disk0_mode", "disk1_mode", "disk0_checksum"))]
    assert len(extensions) == 3
    assert "".join(line for line in ours.splitlines(keepends=True)
                   if line not in extensions) == theirs


@pytest.mark.slow
def test_ganeti_gnt_backup_export_list_import_remove(ganeti3: Ganeti3,
                                                     cluster: E2ECluster) -> None:
    """3.0's own gnt-backup export, list, import and remove against our cluster."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-s", "8M", "--no-start",
                "-H", "process:blocks=64", "gbk1")
    source = cluster.disk_path("gbk1")
    with open(source, "r+b") as handle:
        handle.write(b"ganeti-3.0" * 1000)
    nodes = [n.name for n in cluster.nodes]
    try:
        exported = ganeti3.run(cluster, "gnt-backup", "export", "-n", nodes[1], "gbk1",
                               timeout=300)
        assert exported.returncode == 0, exported.stderr
        listed = ganeti3.run(cluster, "gnt-backup", "list", "--node", nodes[1])
        assert listed.returncode == 0, listed.stderr
        assert "gbk1" in listed.stdout.split()
        # no -H: the export's hypervisor, and its parameters from our section
        # 3.0's client asks for the name and IP checks unless told not to (the name
        # does not resolve here)
        imported = ganeti3.run(cluster, "gnt-backup", "import", "-n", nodes[0],
                               "-t", "file", "--src-node", nodes[1], "--src-dir", "gbk1",
                               "--no-name-check", "--no-ip-check", "gbk1-copy", timeout=300)
        assert imported.returncode == 0, imported.stderr
        copy = cluster.instance_conf("gbk1-copy")
        assert copy is not None and copy["hypervisor"] == "process"
        assert copy["hvparams"]["blocks"] == 64
        assert cluster.disk_path("gbk1-copy").read_bytes() == source.read_bytes()
        removed = ganeti3.run(cluster, "gnt-backup", "remove", "gbk1")
        assert removed.returncode == 0, removed.stderr
        assert not (cluster.node(nodes[1]).paths.export_dir / "gbk1").exists()
    finally:
        for name in ("gbk1-copy", "gbk1"):
            cluster.gnt("gnt-instance", "remove", "-f", name, ok=False)
        cluster.gnt("gnt-backup", "remove", "gbk1", ok=False)


def test_ganeti_gnt_backup_imports_its_own_sample(ganeti3: Ganeti3,
                                                  cluster: E2ECluster) -> None:
    """3.0's gnt-backup import of its sample export (xen-pvm: refused here, then -H)."""
    samples = ganeti3.testsuite / "test" / "data" / "ovfdata"
    nodes = [n.name for n in cluster.nodes]
    exp = cluster.node(nodes[2]).paths.export_dir / "ganeti-test-xen"
    exp.mkdir(parents=True)
    shutil.copy(samples / "config.ini", exp / "config.ini")
    shutil.copy(samples / "rawdisk.raw", exp / "rawdisk.raw")
    args = ("gnt-backup", "import", "-n", nodes[0], "-t", "file", "--src-node", nodes[2],
            "--src-dir", "ganeti-test-xen", "--no-name-check", "--no-ip-check")
    try:
        refused = ganeti3.run(cluster, *args, "gtx3", timeout=300)
        assert refused.returncode != 0
        assert "hypervisor xen-pvm is not enabled" in refused.stdout + refused.stderr
        imported = ganeti3.run(cluster, *args, "-H", "process", "gtx3", timeout=300)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        conf = cluster.instance_conf("gtx3")
        assert conf is not None and conf["hypervisor"] == "process"
        assert conf["beparams"]["maxmem"] == 512 and conf["os"] == "lenny-image"
        dump = (samples / "rawdisk.raw").read_bytes()
        assert cluster.disk_path("gtx3").read_bytes()[:len(dump)] == dump
    finally:
        cluster.gnt("gnt-instance", "remove", "-f", "gtx3", ok=False)
        shutil.rmtree(exp, ignore_errors=True)
