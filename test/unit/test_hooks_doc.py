"""doc/hooks.md stays true: every hook path of the code is documented with its opcode,
every variable a script receives is listed for its path, and every variable listed
for a path is really passed (each path run by the real processor on the loopback
harness, as in test_hooks_lus).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.loopback import Env, certified_env

from ganeti import cmdlib, constants, opcodes
from ganeti.cmdlib.node import LUNodeAdd
from ganeti.hooks.master import hooks_master_for

DOC = Path(__file__).resolve().parents[2] / "doc" / "hooks.md"
_NAME_RE = re.compile(r"`([A-Z][A-Za-z0-9_<>*]*)`")
# one variable name per indexed or per-parameter family, as the doc writes them
_FAMILIES = [(re.compile(r"^INSTANCE_(NIC|DISK)\d+_"), r"INSTANCE_\1<n>_"),
             (re.compile(r"^INSTANCE_(BE|HV)_.*"), r"INSTANCE_\1_<param>"),
             (re.compile(r"^NODE_TAGS_.*"), "NODE_TAGS_<name>")]


def _sections() -> dict[str, str]:
    """Heading -> its text, for the ## and ### headings of the doc."""
    parts = re.split(r"^#{2,3} (.+)$", DOC.read_text(), flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _variables(text: str) -> tuple[set[str], set[str]]:
    """The names of the section's "Variables:" paragraph, and those after "without"."""
    match = re.search(r"^Variables: (.+?)(?:\n\n|\Z)", text, flags=re.M | re.S)
    assert match, "a section without a Variables: paragraph"
    passed, _, without = match.group(1).partition("without")
    return set(_NAME_RE.findall(passed)), set(_NAME_RE.findall(without))


def documented() -> tuple[set[str], dict[str, set[str]], dict[str, str]]:
    """(common variables, path -> variables, path -> opcode) from the doc."""
    sections = _sections()
    common = _variables(sections["Variables of every hook"])[0]
    instance = _variables(sections["Instance variables"])[0]
    table = dict(re.findall(r"^\| `([a-z-]+)` \| `(OP_[A-Z_]+)` \|", sections["Hook paths"],
                            flags=re.M))
    paths = {}
    for path in table:
        names, without = _variables(sections[path])
        if "INSTANCE_*" in names:
            names = (names - {"INSTANCE_*"}) | instance
        paths[path] = names - without
    return common, paths, table


def normalised(env: dict[str, str]) -> set[str]:
    names = set()
    for key in env:
        if key == "PATH":
            continue
        name = key.removeprefix("GANETI_").removeprefix("POST_")
        for pattern, family in _FAMILIES:
            name = pattern.sub(family, name)
        names.add(name)
    return names


def test_every_hook_path_of_the_code_is_documented() -> None:
    _common, _paths, table = documented()
    op_ids = {cls.__name__: op_id for op_id, cls in opcodes.OPCODE_REGISTRY.items()}
    code = {}
    for lu in cmdlib._lu_table().values():
        if lu.HPATH is not None:
            op_id = op_ids["Op" + lu.__name__.removeprefix("LU")]
            code[lu.HPATH] = getattr(lu, "HOOKS_OP_ID", None) or op_id
    assert code == table


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Variable names per hook path, from running each path (both phases)."""
    env: Env = certified_env(tmp_path_factory.mktemp("doc"))
    env.create(nics=[{"mode": "bridged", "link": "br0", "name": "eth0",
                      "network": "net-uuid"}], start=False, hypervisor="process")
    env.run(opcodes.OpInstanceStartup.create(instance_name="inst1"))
    env.run(opcodes.OpInstanceReboot.create(instance_name="inst1"))
    env.run(opcodes.OpInstanceShutdown.create(instance_name="inst1"))
    env.run(opcodes.OpInstanceSetParams.create(instance_name="inst1",
                                               beparams={"vcpus": 2}))
    env.run(opcodes.OpBackupExport.create(instance_name="inst1", target_node="node3"))
    env.run(opcodes.OpInstanceCreate.create(instance_name="copy1", mode="import",
                                            src_path="inst1", pnode="node1", start=False))
    for name in ("inst1", "copy1"):
        env.run(opcodes.OpInstanceRemove.create(instance_name=name))
    env.run(opcodes.OpNodeSetParams.create(node_name="node3", drained=True))
    env.run_submitted(opcodes.OpClusterVerify.create())
    env.run(opcodes.OpClusterSetParams.create(backup_defaults={"bwlimit": 100}))
    for name in ("node2", "node3"):
        env.run(opcodes.OpNodeRemove.create(node_name=name))
    env.run(opcodes.OpClusterDestroy.create())
    names: dict[str, set[str]] = {}
    for call in env.rpc.hooks:
        names.setdefault(call["hpath"], set()).update(normalised(call["env"]))
    # node-add needs a node daemon to answer; its environment comes from the LU itself
    lu = LUNodeAdd(env.ctx, opcodes.OpNodeAdd.create(node_name="node4",
                                                     primary_ip="127.0.0.4"), env.cbs.feedback)
    lu.ExpandNames()
    lu.CheckPrereq()
    names["node-add"] = normalised(hooks_master_for(lu).build_env(constants.HOOKS_PHASE_PRE))
    return names


def test_scripts_get_exactly_the_documented_variables(observed: dict[str, set[str]]) -> None:
    common, paths, _table = documented()
    assert sorted(observed) == sorted(paths)
    for path, names in observed.items():
        assert common <= names, path
        undocumented = names - common - paths[path]
        assert not undocumented, f"{path} passes undocumented {sorted(undocumented)}"


def test_documented_path_variables_are_passed(observed: dict[str, set[str]]) -> None:
    _common, paths, _table = documented()
    # the instance variables that depend on the disk type: our harness has file disks
    plain_only = {"INSTANCE_DISK<n>_VG"}
    for path, names in paths.items():
        missing = names - observed[path] - plain_only
        assert not missing, f"{path} documents {sorted(missing)} but does not pass them"
