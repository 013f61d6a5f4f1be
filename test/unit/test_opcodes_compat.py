"""Opcodes as Ganeti 3.0 clients send them: every field, the unset ones too.

The rules (ganeti.opcodes_compat): None means the default; a 3.0 feature we
lack is accepted at its default and refused otherwise; a few fields are
ignored; ``*_uuid`` fields are checked against their names and fill them in
(the processor does it, for every LU); unknown fields are still refused.
Ganeti's own code builds these dicts in test/compat/test_compat_opcodes.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from support.jqueue_fakes import FakeExecutor, field, running_queue, wait_status

from ganeti import constants, errors, locking, opcodes, opcodes_compat
from ganeti.cmdlib.base import NoHooksLU
from ganeti.config import ConfigStore, make_initial_config
from ganeti.jqueue.queue import REDACTED
from ganeti.mcpu import Processor
from ganeti.objects import Instance, Node

# what a 3.0 client sends for fields the user left unset (OpCode.__getstate__)
COMMON_3_0 = {"dry_run": None, "debug_level": None, "priority": 0, "depends": None,
              "comment": None, "reason": [["gnt:client:gnt-backup", "export", 1]]}


def _export_3_0(**fields: Any) -> dict[str, Any]:
    """OP_BACKUP_EXPORT as 3.0's gnt-backup export sends it (its defaults)."""
    return {"OP_ID": "OP_BACKUP_EXPORT", **COMMON_3_0, "instance_name": "inst1",
            "instance_uuid": None, "compress": "none", "shutdown_timeout": 120,
            "target_node": "node2", "target_node_uuid": None, "shutdown": True,
            "remove_instance": False, "ignore_remove_failures": False, "mode": "local",
            "x509_key_name": None, "destination_x509_ca": None, "zero_free_space": False,
            "zeroing_timeout_fixed": None, "zeroing_timeout_per_mib": None,
            "long_sleep": False, **fields}


def _prereq(data: dict[str, Any]) -> errors.OpPrereqError:
    with pytest.raises(errors.OpPrereqError) as info:
        opcodes.from_dict(data)
    return info.value


# --- None means the default ------------------------------------------------------------


def test_a_3_0_export_dict_is_accepted_with_none_as_the_defaults() -> None:
    op = opcodes.from_dict(_export_3_0())
    assert isinstance(op, opcodes.OpBackupExport)
    assert (op.dry_run, op.debug_level) == (False, 0)
    assert (op.instance_name, op.target_node, op.compress) == ("inst1", "node2", "none")
    assert op.compat_values() == {}


def test_none_for_a_field_of_ours_that_takes_none_stays_none() -> None:
    op = opcodes.from_dict({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1",
                            "mode": None, "disk_template": None, "disks": None,
                            "nics": None, "osparams_private": None, "hypervisor": None})
    assert isinstance(op, opcodes.OpInstanceCreate)
    assert (op.mode, op.disk_template, op.disks, op.nics) == (
        constants.INSTANCE_CREATE, constants.DT_FILE, [], [])
    assert op.osparams_private == {} and op.hypervisor is None


def test_none_for_a_required_field_is_still_refused() -> None:
    err = _prereq(_export_3_0(instance_name=None))
    assert "OP_BACKUP_EXPORT.instance_name" in str(err)


# --- features we lack: accepted at 3.0's default, refused otherwise -------------------


@pytest.mark.parametrize(("field", "value"), [("zero_free_space", True),
                                              ("zeroing_timeout_fixed", 30),
                                              ("zeroing_timeout_per_mib", 0.5)])
def test_an_unsupported_feature_set_away_from_its_default_is_refused(field: str,
                                                                     value: Any) -> None:
    err = _prereq(_export_3_0(**{field: value}))
    assert err.args[1] == errors.ECODE_INVAL
    text = str(err.args[0])
    assert f"OP_BACKUP_EXPORT.{field}" in text and "not supported here" in text
    assert repr(value) in text


def test_empty_list_dict_and_none_all_count_as_an_unset_default() -> None:
    values: tuple[Any, ...] = (None, {})
    for value in values:
        op = opcodes.from_dict({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1",
                                "disks": [{"size": 10}], "osparams_secret": value})
        assert "osparams_secret" not in op.to_dict()
    err = _prereq({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1",
                   "disks": [{"size": 10}], "osparams_secret": {"x": "1"}})
    assert "OP_INSTANCE_CREATE.osparams_secret" in str(err)


def test_false_is_not_the_default_none() -> None:
    err = _prereq({"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": "i1",
                   "admin_state_source": "user"})
    assert "OP_INSTANCE_SHUTDOWN.admin_state_source" in str(err)
    assert "not supported here" in str(err)
    assert not opcodes_compat.is_default(False, None)
    assert not opcodes_compat.is_default(0, False)
    assert opcodes_compat.is_default([], None)


@pytest.mark.parametrize(("field", "value"), [("file_storage_dir", "/srv/disks")])
def test_our_own_fields_without_a_feature_behind_them_take_none_only(field: str,
                                                                     value: str) -> None:
    base = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1", "disks": [{"size": 10}]}
    assert getattr(opcodes.from_dict({**base, field: None}), field) is None
    err = _prereq({**base, field: value})
    assert f"OP_INSTANCE_CREATE.{field}" in str(err) and "not supported here" in str(err)


def test_iallocator_takes_the_built_in_allocator_only() -> None:
    base = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1", "disks": [{"size": 10}]}
    for name in (None, "hail", "."):
        op = opcodes.from_dict({**base, "iallocator": name})
        assert isinstance(op, opcodes.OpInstanceCreate) and op.iallocator == name
    err = _prereq({**base, "iallocator": "hspace"})
    assert "OP_INSTANCE_CREATE.iallocator" in str(err) and "'hail'" in str(err)


# --- ignored fields ---------------------------------------------------------------------


@pytest.mark.parametrize("no_locks", [True, False])
def test_test_delay_takes_gnt_debug_delays_fields(no_locks: bool) -> None:
    op = opcodes.from_dict({"OP_ID": "OP_TEST_DELAY", **COMMON_3_0, "duration": 1.0,
                            "on_master": True, "on_nodes": [], "on_node_uuids": None,
                            "repeat": 0, "interruptible": False, "no_locks": no_locks})
    assert isinstance(op, opcodes.OpTestDelay)
    assert "no_locks" not in op.to_dict()
    err = _prereq({"OP_ID": "OP_TEST_DELAY", "duration": 1.0, "interruptible": True})
    assert "OP_TEST_DELAY.interruptible" in str(err)
    # ignored, but not anything at all
    err = _prereq({"OP_ID": "OP_TEST_DELAY", "duration": 1.0, "no_locks": "yes"})
    assert "OP_TEST_DELAY.no_locks" in str(err) and "a bool is needed" in str(err)


# --- unknown fields ---------------------------------------------------------------------


def test_a_field_ganeti_does_not_know_either_is_still_refused() -> None:
    err = _prereq(_export_3_0(no_such_field=1))
    assert "OP_BACKUP_EXPORT.no_such_field" in str(err) and "unknown parameter" in str(err)
    # a 3.0 field of another opcode is unknown here
    err = _prereq(_export_3_0(on_node_uuids=None))
    assert "unknown parameter" in str(err)


# --- another spelling of a value we implement ---------------------------------------------


def test_a_nic_bridge_is_its_link() -> None:
    op = opcodes.from_dict({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1",
                            "disks": [{"size": 10}],
                            "nics": [{"bridge": "br0"}, {"bridge": "br1", "link": "br1"}]})
    assert isinstance(op, opcodes.OpInstanceCreate)
    assert [nic.link for nic in op.nics] == ["br0", "br1"]
    err = _prereq({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1",
                   "disks": [{"size": 10}], "nics": [{"bridge": "br0", "link": "br1"}]})
    assert "nics[0]" in str(err) and "bridge" in str(err)


def test_3_0_disk_keys_we_lack_are_refused_by_name_unless_unset() -> None:
    base = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1"}
    op = opcodes.from_dict({**base, "disks": [{"size": 10, "spindles": None}]})
    assert isinstance(op, opcodes.OpInstanceCreate) and op.disks[0].size == 10
    err = _prereq({**base, "disks": [{"size": 10}, {"size": 10, "vg": "xenvg"}]})
    assert "OP_INSTANCE_CREATE.disks[1]" in str(err)
    assert "vg is not supported here" in str(err)
    # a key Ganeti does not know either stays unknown
    err = _prereq({**base, "disks": [{"size": 10, "colour": "red"}]})
    assert "disks[0].colour" in str(err) and "unknown parameter" in str(err)


# --- osparams_private: a secret field ----------------------------------------------------


def test_private_os_parameters_are_a_secret_field_left_out_when_empty() -> None:
    cls = opcodes.OpInstanceCreate
    assert "osparams_private" in cls.OP_SECRET_FIELDS
    op = cls.create(instance_name="i1", disks=[{"size": 10}])
    assert "osparams_private" not in op.to_dict()
    op = cls.create(instance_name="i1", disks=[{"size": 10}],
                    osparams_private={"password": "x"})
    assert op.to_dict()["osparams_private"] == {"password": "x"}


def test_private_os_parameters_reach_the_lu_but_never_the_job_store(tmp_path: Path) -> None:
    secret = "private-os-parameter-value-42"
    seen: list[Any] = []
    executor = FakeExecutor()

    def script(op: Any, cbs: Any) -> Any:
        cbs.notify_start()
        seen.append(op.osparams_private)
        return ["node1"]
    executor.scripts["import"] = script
    op = opcodes.from_dict({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1",
                            "disks": [{"size": 10}], "comment": "import",
                            "osparams_private": {"password": secret}})
    with running_queue(tmp_path / "jobs.sqlite", executor) as queue:
        job_id = queue.submit_job([op])
        assert wait_status(queue, job_id) == constants.OP_STATUS_SUCCESS
        assert field(queue, job_id, "ops")[0]["osparams_private"] == REDACTED
    assert seen == [{"password": secret}]
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path


# --- uuid fields --------------------------------------------------------------------------


def test_a_uuid_field_must_be_a_uuid() -> None:
    for value in (5, ""):
        err = _prereq(_export_3_0(instance_uuid=value))
        assert "OP_BACKUP_EXPORT.instance_uuid" in str(err) and "a uuid" in str(err)
    err = _prereq({"OP_ID": "OP_TEST_DELAY", "duration": 1.0, "on_node_uuids": "u1"})
    assert "OP_TEST_DELAY.on_node_uuids" in str(err) and "a list of uuids" in str(err)


def test_uuids_survive_the_job_store() -> None:
    op = opcodes.from_dict(_export_3_0(instance_uuid="u-1", target_node_uuid="u-2"))
    data = op.to_dict()
    assert (data["instance_uuid"], data["target_node_uuid"]) == ("u-1", "u-2")
    assert opcodes.from_dict(data).compat_values() == {"instance_uuid": "u-1",
                                                       "target_node_uuid": "u-2"}


class _Context:
    def __init__(self, cfg: ConfigStore) -> None:
        self.cfg = cfg
        self.glm = locking.GanetiLockManager(nodes=[], nodegroups=[], instances=[],
                                             networks=[])
        self.rpc = None


class _Callbacks:
    def notify_start(self) -> None:
        pass

    def feedback(self, log_type: str, message: Any) -> None:
        pass

    def current_priority(self) -> int:
        return constants.OP_PRIO_NORMAL

    def check_cancel(self) -> None:
        pass

    def bump_priority(self) -> None:
        pass


class _RecordLU(NoHooksLU):
    """Stands in for every LU: records the names it was given."""

    REQ_BGL = False
    seen: ClassVar[list[dict[str, Any]]] = []

    def ExpandNames(self) -> None:
        self.seen.append(self.op.model_dump())
        self.needed_locks = {}


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Processor, ConfigStore, dict[str, str]]:
    data = make_initial_config("cluster.example.com", "node1.example.com", "192.0.2.1",
                               "192.0.2.10", port=11811)
    store = ConfigStore.initialize(tmp_path / "config.data", data)
    node2 = Node(name="node2.example.com", primary_ip="192.0.2.2")
    store.add_node(node2)
    inst = Instance(name="inst1.example.com", primary_node=store.get_master_node())
    store.add_instance(inst)
    uuids = {"node1": store.get_master_node(), "node2": node2.uuid, "inst1": inst.uuid}
    _RecordLU.seen = []
    processor = Processor(_Context(store), lu_lookup=lambda name: _RecordLU)  # type: ignore[arg-type]
    return processor, store, uuids


def _run(processor: Processor, data: dict[str, Any]) -> dict[str, Any]:
    """As the job queue runs it (stored, then rebuilt) through the processor, up to the
    pre hooks (a dry run: no Exec, no result check)."""
    stored = opcodes.from_dict({**data, "dry_run": True}).to_dict()
    processor.execute_opcode(opcodes.from_dict(stored), _Callbacks())  # type: ignore[arg-type]
    return _RecordLU.seen[-1]


def test_only_the_uuid_given_fills_the_name(cluster: Any) -> None:
    processor, _, uuids = cluster
    seen = _run(processor, {"OP_ID": "OP_BACKUP_REMOVE", "instance_uuid": uuids["inst1"]})
    assert seen["instance_name"] == "inst1.example.com"
    seen = _run(processor, {"OP_ID": "OP_TEST_DELAY", "duration": 0.0,
                            "on_node_uuids": [uuids["node2"], uuids["node1"]]})
    assert seen["on_nodes"] == ["node2.example.com", "node1.example.com"]
    seen = _run(processor, {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "new1",
                            "disks": [{"size": 10}], "pnode_uuid": uuids["node2"]})
    assert seen["pnode"] == "node2.example.com"


def test_a_uuid_matching_its_name_is_accepted(cluster: Any) -> None:
    processor, _, uuids = cluster
    seen = _run(processor, _export_3_0(instance_name="inst1", instance_uuid=uuids["inst1"],
                                       target_node="node2.example.com",
                                       target_node_uuid=uuids["node2"]))
    assert (seen["instance_name"], seen["target_node"]) == ("inst1.example.com",
                                                           "node2.example.com")


def test_an_unknown_uuid_is_not_found(cluster: Any) -> None:
    processor, _, _ = cluster
    with pytest.raises(errors.OpPrereqError) as info:
        _run(processor, _export_3_0(instance_uuid="no-such-uuid"))
    assert info.value.args[1] == errors.ECODE_NOENT
    assert "OP_BACKUP_EXPORT.instance_uuid" in info.value.args[0]
    assert "no-such-uuid" in info.value.args[0]
    assert _RecordLU.seen == []


def test_a_uuid_naming_another_object_than_its_name_is_refused(cluster: Any) -> None:
    processor, _, uuids = cluster
    with pytest.raises(errors.OpPrereqError) as info:
        _run(processor, _export_3_0(target_node="node2", target_node_uuid=uuids["node1"]))
    assert info.value.args[1] == errors.ECODE_INVAL
    text = info.value.args[0]
    assert "OP_BACKUP_EXPORT.target_node_uuid" in text and "node1.example.com" in text
    assert "'node2'" in text
    with pytest.raises(errors.OpPrereqError) as info:
        _run(processor, {"OP_ID": "OP_TEST_DELAY", "duration": 0.0, "on_nodes": ["node1"],
                         "on_node_uuids": [uuids["node1"], uuids["node2"]]})
    assert info.value.args[1] == errors.ECODE_INVAL
    assert _RecordLU.seen == []


# --- the table itself ----------------------------------------------------------------------


def test_the_table_matches_our_models() -> None:
    assert opcodes_compat.check_table(opcodes.project_opcodes()) == []


def test_the_reference_shows_the_table() -> None:
    text = opcodes.render_markdown()
    section = text.split("\n## OP_BACKUP_EXPORT\n")[1].split("\n## ")[0]
    assert "Ganeti 3.0 has this opcode too." in section
    assert "| `zero_free_space` | `false` | refused unless at its default" in section
    assert "| `target_node_uuid` | `null` | node uuid of `target_node`" in section


@pytest.mark.parametrize("tool", ["gzip-fast", "gzip-slow"])
def test_3_0s_gzip_variants_are_our_gzip(tool: str) -> None:
    op = opcodes.from_dict(_export_3_0(compress=tool))
    assert isinstance(op, opcodes.OpBackupExport) and op.compress == "gzip"
    create = opcodes.from_dict({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i1",
                                "mode": "import", "compress": tool, "disks": [],
                                "nics": []})
    assert isinstance(create, opcodes.OpInstanceCreate) and create.compress == "gzip"
    # a tool 3.0 knows and we lack still reaches the LU, which refuses it by name
    assert opcodes.from_dict(_export_3_0(compress="lzop")).to_dict()["compress"] == "lzop"
