"""Opcodes as Ganeti 3.0.2's own code builds and sends them are accepted here.

Ganeti's ``OpCode(...)`` fills every field with its default and its LUXI
client sends ``op.__getstate__()`` (private values in clear, as its
``SubmitJob`` does).  For every OP_ID we share with 3.0, that dict must pass
our ``opcodes.from_dict``, and ganeti.opcodes_compat's table must name every
field 3.0 has, with 3.0's default.  Then 3.0's own gnt-debug and gnt-backup
run against a local cluster (delay, backup export/import/remove, instance commands).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from support.cluster import E2ECluster
from support.ganeti_oracle import Ganeti3

from ganeti import opcodes, opcodes_compat

# values for the fields 3.0 leaves None but both sides need (3.0 checks them on the master)
_REQUIRED = {"instance_name": "inst1.example.com", "node_name": "node2.example.com",
             "kind": "cluster",
             "target_node": "node2.example.com", "duration": 1.0}
_REQUIRED_BY_OP = {"OP_BACKUP_PREPARE": {"mode": "local"},
                   "OP_CLUSTER_VERIFY_GROUP": {"group_name": "default"},
                   "OP_INSTANCE_CREATE": {"mode": "import", "disks": [], "nics": []},
                   "OP_INSTANCE_REBOOT": {"reboot_type": "hard"}}

_ORACLE_CODE = """
import json
from ganeti import opcodes, serializer

ours = %(ours)s
required = %(required)s
by_op = %(by_op)s


def _json(value):
    try:
        return json.loads(serializer.DumpJson(
            value, private_encoder=serializer.EncodeWithPrivateFields))
    except TypeError:
        return repr(value)


result = {}
for op_id, cls in sorted(opcodes.OP_MAPPING.items()):
    if op_id not in ours:
        continue
    params = cls.GetAllParams()
    names = [name for (name, _, _, _) in params]
    given = {k: v for k, v in required.items() if k in names}
    given.update(by_op.get(op_id, {}))
    op = cls(**given)
    result[op_id] = {
        "state": _json(op.__getstate__()),
        "defaults": {name: _json(default) for (name, default, _, _) in params},
        "given": sorted(given),
    }
"""


@pytest.fixture(scope="module")
def ganeti_ops(ganeti3: Ganeti3) -> dict[str, dict[str, Any]]:
    """OP_ID -> what 3.0 sends (``state``), its field defaults, the fields we set."""
    code = _ORACLE_CODE % {"ours": repr(sorted(opcodes.project_opcodes())),
                           "required": repr(_REQUIRED), "by_op": repr(_REQUIRED_BY_OP)}
    result: dict[str, dict[str, Any]] = ganeti3.eval(code)
    return result


def test_the_shared_opcodes_are_the_ones_the_table_covers(
        ganeti_ops: dict[str, dict[str, Any]]) -> None:
    assert set(ganeti_ops) == set(opcodes_compat.GANETI3_FIELDS)
    # the opcodes the tested 3.0 commands send are among them
    assert {"OP_BACKUP_EXPORT", "OP_INSTANCE_CREATE", "OP_BACKUP_REMOVE", "OP_TEST_DELAY",
            "OP_CLUSTER_VERIFY", "OP_INSTANCE_STARTUP", "OP_INSTANCE_SHUTDOWN",
            "OP_INSTANCE_REMOVE", "OP_CLUSTER_QUERY"} <= set(ganeti_ops)


@pytest.mark.parametrize("op_id", sorted(opcodes_compat.GANETI3_FIELDS))
def test_the_table_names_every_3_0_field_with_its_default(
        ganeti_ops: dict[str, dict[str, Any]], op_id: str) -> None:
    defaults = ganeti_ops[op_id]["defaults"]
    rules = opcodes_compat.rules_for(op_id)
    assert sorted(rules) == sorted(defaults), f"{op_id}: table and 3.0 differ"
    wrong = {name: (rule.default, defaults[name]) for name, rule in rules.items()
             if rule.default != defaults[name]}
    assert not wrong, f"{op_id}: (our table, 3.0) defaults differ: {wrong}"


@pytest.mark.parametrize("op_id", sorted(opcodes_compat.GANETI3_FIELDS))
def test_what_3_0_sends_is_accepted(ganeti_ops: dict[str, dict[str, Any]],
                                    op_id: str) -> None:
    state = ganeti_ops[op_id]["state"]
    assert state["OP_ID"] == op_id
    # every field goes over the wire, the unset ones too
    assert set(state) - {"OP_ID"} == set(ganeti_ops[op_id]["defaults"])
    op = opcodes.from_dict(state)
    assert type(op) is opcodes.OPCODE_REGISTRY[op_id]
    for name in ganeti_ops[op_id]["given"]:
        assert getattr(op, name) == state[name], name
    # and it survives the job store
    assert opcodes.from_dict(op.to_dict()).to_dict() == op.to_dict()


def test_the_disk_and_nic_keys_3_0_knows_are_ours_or_in_the_table(ganeti3: Ganeti3) -> None:
    keys = ganeti3.eval("from ganeti import constants\n"
                        "result = [sorted(constants.IDISK_PARAMS),"
                        " sorted(constants.INIC_PARAMS)]")
    specs: tuple[type[opcodes.Spec], ...] = (opcodes.DiskSpec, opcodes.NicSpec)
    for spec, known in zip(specs, keys, strict=True):
        table = opcodes_compat.SPEC_FIELDS[spec.__name__]
        assert not set(table) & set(spec.model_fields)
        assert sorted(set(spec.model_fields) | set(table)) == known, spec.__name__


def test_a_3_0_field_away_from_its_default_is_refused_by_name(ganeti3: Ganeti3) -> None:
    state = ganeti3.eval(
        "from ganeti import opcodes\n"
        "result = opcodes.OpBackupExport(instance_name='inst1', target_node='node2',"
        " zero_free_space=True).__getstate__()\n")
    with pytest.raises(Exception) as info:
        opcodes.from_dict(state)
    assert "OP_BACKUP_EXPORT.zero_free_space" in str(info.value)
    assert "not supported here" in str(info.value)


# --- Ganeti 3.0's own commands against a local cluster ---------------------------------


def _job_ids(text: str) -> list[str]:
    return re.findall(r"JobID: (\d+)", text)


def test_3_0s_gnt_debug_delay_runs(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    proc = ganeti3.run(cluster, "gnt-debug", "delay", "--submit", "-n", "node2", "0.1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_ids = _job_ids(proc.stdout + proc.stderr)
    assert job_ids, proc.stdout + proc.stderr
    cluster.gnt("gnt-job", "watch", job_ids[0])
    status = cluster.gnt("gnt-job", "list", "--no-headers", "-o", "id,status").stdout
    assert [job_ids[0], "success"] in [line.split() for line in status.splitlines()]


def test_3_0s_gnt_backup_export_runs(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "-H", "process:write_interval_ms=5,blocks=64", "--no-start", "g3exp1")
    proc = ganeti3.run(cluster, "gnt-backup", "export", "-n", "node3", "g3exp1",
                       timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listing = cluster.gnt("gnt-backup", "list", "--no-headers", "--separator", "|").stdout
    assert "node3|g3exp1" in listing.splitlines()
    # 3.0's option for a feature we lack is refused by name, and nothing is exported
    proc = ganeti3.run(cluster, "gnt-backup", "export", "-n", "node1", "--zero-free-space",
                       "g3exp1")
    assert proc.returncode != 0
    assert "OP_BACKUP_EXPORT.zero_free_space" in proc.stdout + proc.stderr
    listing = cluster.gnt("gnt-backup", "list", "--no-headers", "--separator", "|").stdout
    assert "node1|g3exp1" not in listing.splitlines()
    # OP_INSTANCE_CREATE in import mode, with every field 3.0 sends; its name and IP
    # checks are on by default, and local-cluster names do not resolve (as with Ganeti)
    proc = ganeti3.run(cluster, "gnt-backup", "import", "-n", "node1", "--src-node",
                       "node3", "--src-dir", "g3exp1", "--no-name-check", "--no-ip-check",
                       "g3exp1-copy", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copy = cluster.instance_conf("g3exp1-copy")
    assert copy is not None and len(copy["disks"]) == 1
    cluster.gnt("gnt-instance", "remove", "-f", "g3exp1-copy")
    proc = ganeti3.run(cluster, "gnt-backup", "remove", "g3exp1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listing = cluster.gnt("gnt-backup", "list", "--no-headers", "--separator", "|").stdout
    assert "node3|g3exp1" not in listing.splitlines()
    cluster.gnt("gnt-instance", "remove", "-f", "g3exp1")


def test_3_0s_instance_commands_run(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "-H", "process:write_interval_ms=5,blocks=64", "g3inst1")
    for command in ("shutdown", "startup", "reboot"):
        proc = ganeti3.run(cluster, "gnt-instance", command, "g3inst1")
        assert proc.returncode == 0, f"{command}: {proc.stdout}{proc.stderr}"
    proc = ganeti3.run(cluster, "gnt-instance", "remove", "-f", "g3inst1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cluster.instance_conf("g3inst1") is None
    summaries = cluster.gnt("gnt-job", "list", "--no-headers", "-o", "status,summary").stdout
    for op in ("INSTANCE_SHUTDOWN", "INSTANCE_STARTUP", "INSTANCE_REBOOT",
               "INSTANCE_REMOVE"):
        assert ["success", f"{op}(g3inst1)"] in [line.split() for line in
                                                 summaries.splitlines()], op
