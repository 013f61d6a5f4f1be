"""The import mode reading Ganeti-format exports, on the loopback RPC harness.

Real node procedures and TLS streams (support.loopback), the cluster enabling
the fake and process hypervisors: which hypervisor an import takes, which of
the export's parameters it keeps, and what it leaves for the hooks.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env, certified_env

from ganeti import errors, opcodes
from ganeti.cmdlib import backup_import

MIB = 1 << 20


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return certified_env(tmp_path)


def _config(hypervisor: str, hv_section: str, ext_section: str = "") -> str:
    return f"""\
[export]
version = 0
source = node2
os = debootstrap

[instance]
name = g1
hypervisor = {hypervisor}
disk0_dump = d0.raw
disk0_size = 1
disk1_size = 2

[hypervisor]
{hv_section}

[backend]
memory = 200
vcpus = 3
spindle_use = 4

[os]
a = 1

[os_private]
secret = s
{ext_section}
"""


def _put(env: Env, config: str) -> Path:
    path = env.roots["node3"].paths.export_dir / "g1"
    path.mkdir(parents=True)
    (path / "config.ini").write_text(config)
    (path / "d0.raw").write_bytes(b"\x5a" * MIB)
    return path


def _import(env: Env, name: str = "g1", **fields: Any) -> Any:
    return env.run(opcodes.OpInstanceCreate.create(
        instance_name=name, mode="import", src_path="g1", src_node="node3", pnode="node1",
        start=False, **fields))


def _mode_of(monkeypatch: pytest.MonkeyPatch) -> list[backup_import.LocalImport]:
    """Collects the import mode objects (what the hooks read from)."""
    seen: list[backup_import.LocalImport] = []
    original = backup_import.LocalImport.check_prereq

    def check_prereq(self: backup_import.LocalImport, specs: Any) -> None:
        seen.append(self)
        original(self, specs)

    monkeypatch.setattr(backup_import.LocalImport, "check_prereq", check_prereq)
    return seen


def test_export_hypervisor_parameters_and_blank_disk(env: Env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    export = _put(env, _config("process", "acpi = True",
                               "[ganeti-ng:hypervisor]\nblocks = 64\n"))
    seen = _mode_of(monkeypatch)
    _import(env)
    inst = env.inst("g1")
    assert inst.hypervisor == "process" and inst.hvparams == {"blocks": 64}
    assert inst.osparams == {"a": "1"} and inst.osparams_private == {"secret": "s"}
    assert inst.beparams == {"maxmem": 200, "minmem": 200, "vcpus": 3, "spindle_use": 4}
    assert [d.size for d in inst.disks] == [1, 2]
    d0, d1 = (Path(d.logical_id[1]) for d in inst.disks)
    assert d0.read_bytes() == b"\x5a" * MIB
    assert hashlib.sha256(d1.read_bytes()).digest() == hashlib.sha256(bytes(2 * MIB)).digest()
    mode = seen[0]
    assert mode.src_node == "node3"
    assert mode.src_path == str(export.resolve())
    assert mode.src_images == [f"{export.resolve()}/d0.raw"]


def test_another_hypervisor_given_drops_the_exports_parameters(env: Env) -> None:
    _put(env, _config("process", "", "[ganeti-ng:hypervisor]\nblocks = 64\n"))
    _import(env, hypervisor="fake")
    inst = env.inst("g1")
    assert inst.hypervisor == "fake" and inst.hvparams == {}
    # the rest still comes from the export
    assert inst.osparams == {"a": "1"} and inst.beparams["vcpus"] == 3


def test_hypervisor_not_enabled_is_refused_naming_it(env: Env) -> None:
    _put(env, _config("kvm", "kvm_flag = enabled"))
    with pytest.raises(errors.OpPrereqError, match="hypervisor kvm is not enabled") as err:
        _import(env)
    assert err.value.ecode == errors.ECODE_STATE
    assert "-H" in str(err.value.args[0])
    assert env.cfg.get_instance_info_by_name("g1") is None


def test_bad_backend_parameter_names_the_section(env: Env) -> None:
    _put(env, _config("fake", "").replace("vcpus = 3", "vcpus = many"))
    with pytest.raises(errors.OpPrereqError, match=r"\[backend\] of the export"):
        _import(env)


def test_named_dump_missing_is_blank_without_checksum_refused_with_one(env: Env) -> None:
    """As Ganeti: a dump that is not there leaves a blank disk; but an export of ours
    recorded the dump's checksum, so its dump missing is damage, not a blank disk."""
    export = _put(env, _config("fake", ""))
    (export / "d0.raw").unlink()
    _import(env)
    inst = env.inst("g1")
    assert Path(inst.disks[0].logical_id[1]).read_bytes() == bytes(MIB)
    checksummed = _config("fake", "").replace(
        "disk0_size = 1", "disk0_size = 1\ndisk0_checksum = sha256-4m:" + "0" * 64)
    (export / "config.ini").write_text(checksummed)
    with pytest.raises(errors.OpPrereqError, match=re.escape(
            "records a checksum for its dump d0.raw, which is missing")) as err:
        _import(env, name="g2")
    assert err.value.ecode == errors.ECODE_NOENT
    assert env.cfg.get_instance_info_by_name("g2") is None
