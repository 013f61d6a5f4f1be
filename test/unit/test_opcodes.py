"""The opcode table documents itself: docstrings, field descriptions, result types.

doc/opcodes.md is generated from it, and results real LUs return validate
against the declared ``OP_RESULT``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter
from support.loopback import Env

from ganeti import errors, opcodes

DOC = Path(__file__).resolve().parents[2] / "doc" / "opcodes.md"
OPCODES = sorted(opcodes.project_opcodes().values(), key=lambda cls: cls.__name__)


@pytest.mark.parametrize("cls", OPCODES, ids=lambda cls: cls.__name__)
def test_every_opcode_documents_itself_and_its_result(cls: type[opcodes.OpCode]) -> None:
    assert (cls.__dict__.get("__doc__") or "").strip(), f"{cls.__name__} has no docstring"
    missing = [name for name, info in cls.model_fields.items()
               if not info.description]
    assert not missing, f"{cls.__name__}: fields without a description: {missing}"
    assert "OP_RESULT" in vars(cls), f"{cls.__name__} declares no OP_RESULT"
    TypeAdapter(cls.OP_RESULT)  # a type the processor can check results against


@pytest.mark.parametrize("model", [opcodes.DiskSpec, opcodes.NicSpec])
def test_nested_specs_describe_every_field(model: type[BaseModel]) -> None:
    assert model.__doc__ and all(info.description for info in model.model_fields.values())


def test_reference_doc_is_generated_from_the_table() -> None:
    """doc/opcodes.md is exactly render_markdown() (regenerate: python -m ganeti.opcodes)."""
    assert DOC.read_text() == opcodes.render_markdown()


def test_reference_lists_every_opcode_and_nested_type() -> None:
    text = opcodes.render_markdown()
    for op_id in opcodes.project_opcodes():
        assert f"\n## {op_id}\n" in text
    for name in ("DiskSpec", "NicSpec", "RetentionPolicy", "RemoteExportInfo"):
        assert f"\n### {name}\n" in text


def test_modify_is_the_optional_view_of_the_add_fields() -> None:
    add, modify = opcodes.OpBackupScheduleAdd, opcodes.OpBackupScheduleModify
    common = set(opcodes.OpCode.model_fields)
    assert set(add.model_fields) - common == set(modify.model_fields) - common
    assert all(not info.is_required() for name, info in modify.model_fields.items()
               if name != "name")


# --- disks and NICs: typed specs, Ganeti's wire format ---------------------------------


def test_disk_and_nic_specs_keep_the_wire_format() -> None:
    op = opcodes.from_dict({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1",
                            "disks": [{"size": 1024, "mode": "ro"}, {"size": 2}],
                            "nics": [{"mac": "AA:00:00:01:02:03", "link": "br0"},
                                     {"mac": "auto"}]})
    assert isinstance(op, opcodes.OpInstanceCreate)
    assert [(d.size, d.mode) for d in op.disks] == [(1024, "ro"), (2, "rw")]
    assert [(n.mac, n.link) for n in op.nics] == [("aa:00:00:01:02:03", "br0"), (None, None)]
    data = op.to_dict()
    assert data["disks"] == [{"size": 1024, "mode": "ro"}, {"size": 2, "mode": "rw"}]
    assert data["nics"] == [{"mac": "aa:00:00:01:02:03", "link": "br0"}, {}]
    assert opcodes.from_dict(json.loads(json.dumps(data))) == op


@pytest.mark.parametrize(("fields", "path", "problem"), [
    ({"disks": [{"size": 1}, {"size": 0}]}, "disks[1].size", "invalid size 0"),
    ({"disks": [{"size": 2**63}]}, "disks[0].size", "outside the limit"),
    ({"disks": [{"size": 1, "colour": "red"}]}, "disks[0].colour", "unknown parameter"),
    ({"disks": [{"size": 1, "mode": "rx"}]}, "disks[0].mode", "invalid mode 'rx'"),
    ({"disks": ["big"]}, "disks[0]", "valid dictionary"),
    ({"nics": [{}, {"mac": "zz:00:00:00:00:00"}]}, "nics[1].mac", "invalid MAC"),
    ({"nics": [{"mode": "nat"}]}, "nics[0].mode", "invalid mode 'nat'"),
])
def test_bad_specs_are_refused_naming_disk_or_nic_and_field(
        fields: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(errors.OpPrereqError) as err:
        opcodes.OpInstanceCreate.create(instance_name="i1", **fields)
    message = err.value.args[0]
    assert f"'OP_INSTANCE_CREATE.{path}'" in message and problem in message, message
    assert err.value.ecode == errors.ECODE_INVAL


def test_secret_input_is_not_echoed_in_errors() -> None:
    short = "tooshort-but-secret"
    with pytest.raises(errors.OpPrereqError) as err:
        opcodes.OpClusterRenewCrypto.create(cluster_domain_secret=short)
    assert "cluster_domain_secret" in err.value.args[0] and short not in err.value.args[0]


# --- real LU results against OP_RESULT --------------------------------------------------


def _checked(op: opcodes.OpCode, result: Any) -> Any:
    """The result validates against the opcode's OP_RESULT after a JSON round trip."""
    TypeAdapter(op.OP_RESULT).validate_json(json.dumps(result), strict=True)
    return result


def test_real_lu_results_match_op_result(tmp_path: Path) -> None:
    env = Env(tmp_path)
    ops: list[opcodes.OpCode] = [
        opcodes.OpInstanceCreate.create(instance_name="inst1", pnode="node2",
                                        hypervisor="fake", disks=[{"size": 4}],
                                        nics=[{}], start=False),
        opcodes.OpInstanceSetParams.create(instance_name="inst1", beparams={"vcpus": 2}),
        opcodes.OpInstanceQueryData.create(instances=["inst1"]),
        opcodes.OpInstanceQuery.create(output_fields=["name", "status", "nic.macs"]),
        opcodes.OpNodeQuery.create(output_fields=["name"]),
        opcodes.OpClusterQuery.create(),
        opcodes.OpClusterVerify.create(),
        opcodes.OpBackupScheduleAdd.create(name="nightly", instances=["inst1"],
                                           target_node="node3", cron="@daily",
                                           retention={"keep_daily": 7}),
        opcodes.OpBackupScheduleModify.create(name="nightly", enabled=False),
        opcodes.OpBackupScheduleQuery.create(),
        opcodes.OpBackupListGenerations.create(),
        opcodes.OpClusterRenewCrypto.create(new_cluster_domain_secret=True),
        opcodes.OpInstanceRemove.create(instance_name="inst1"),
    ]
    results = {type(op).__name__: _checked(op, env.run(op)) for op in ops}
    assert results["OpInstanceCreate"] == ["node2"]
    assert results["OpInstanceSetParams"] == [("be/vcpus", 2)]
    assert results["OpBackupScheduleModify"] == ["enabled"]
    assert results["OpBackupScheduleQuery"][0]["retention"] == {"keep_daily": 7}
    assert results["OpInstanceRemove"] is None


def test_a_result_of_the_wrong_shape_is_refused() -> None:
    from ganeti.mcpu import Processor
    op = opcodes.OpBackupScheduleModify.create(name="nightly", enabled=False)
    with pytest.raises(errors.OpResultError):
        Processor._check_result(op, "enabled")
