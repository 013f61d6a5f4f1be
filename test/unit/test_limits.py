"""The table of limits and every place that applies it: opcodes, LU helpers, config.ini,
JSON decoding (LUXI and RPC), LUXI argument checks, the file driver and transfer errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ganeti import errors, limits, luxi, opcodes, pathutils, serializer
from ganeti.backup import exportconf
from ganeti.cmdlib import instance_utils as iu
from ganeti.objects import Disk
from ganeti.server import luxi_server
from ganeti.storage import FileDiskDriver, get_driver
from ganeti.transfer import protocol as proto

DOC = Path(__file__).resolve().parents[2] / "doc" / "reliability.md"


# --- the table ------------------------------------------------------------------------


def test_table_keys_unique_and_exported() -> None:
    keys = [limit.key for limit in limits.TABLE]
    assert len(keys) == len(set(keys))
    assert set(limits.BY_KEY) == set(keys)
    for limit in limits.TABLE:
        assert limit.fields and limit.why and limit.minimum <= limit.maximum


def test_doc_section_is_generated_from_the_table() -> None:
    """doc/reliability.md shows exactly render_markdown(): one source of truth."""
    assert limits.render_markdown() in DOC.read_text()


@pytest.mark.parametrize("limit", limits.TABLE, ids=lambda lim: lim.key)
def test_every_limit_accepts_its_bounds_and_refuses_beyond(limit: limits.Limit) -> None:
    sized = limit.unit in (limits.ITEMS, limits.CHARACTERS, limits.BYTES)

    def value(n: int) -> Any:
        return "x" * n if sized else n

    limit.check(value(limit.maximum))
    limit.check(value(limit.minimum))
    with pytest.raises(errors.OpPrereqError, match=limit.fields[0].replace("[", r"\[")) as err:
        limit.check(value(limit.maximum + 1))
    assert err.value.ecode == errors.ECODE_INVAL
    assert str(limit.maximum) in err.value.args[0]
    if limit.minimum > 0:
        with pytest.raises(errors.OpPrereqError):
            limit.check(value(limit.minimum - 1))
    if not sized:
        for bad in (math.nan, math.inf, -math.inf, True, "1"):
            with pytest.raises(errors.OpPrereqError, match="not a finite number"):
                limit.check(bad)


def test_name_length_leaves_room_for_node_side_suffixes() -> None:
    assert limits.MAX_NAME_LENGTH == 200
    # the longest node-side name: ".removed-<name>.new-<pid>-<id()>"
    longest_suffix = len(".removed-") + len(".new") + len("-4194304-") + len(str(2**64))
    assert limits.MAX_NAME_LENGTH + longest_suffix <= 255


# --- opcodes --------------------------------------------------------------------------


def _create(**fields: Any) -> opcodes.OpCode:
    fields.setdefault("instance_name", "inst1")
    return opcodes.OpInstanceCreate.create(**fields)


@pytest.mark.parametrize("fields, field", [
    ({"disks": [{"size": 1}] * 17}, "OP_INSTANCE_CREATE.disks"),
    ({"disks": [{"size": 1}] * 100_000}, "OP_INSTANCE_CREATE.disks"),
    ({"nics": [{}] * 9}, "OP_INSTANCE_CREATE.nics"),
    ({"tags": [f"t{i}" for i in range(4097)]}, "OP_INSTANCE_CREATE.tags"),
    ({"tags": ["x" * 129]}, "OP_INSTANCE_CREATE.tags[0]"),
    ({"tags": [""]}, "OP_INSTANCE_CREATE.tags[0]"),
    ({"instance_name": "x" * 201}, "OP_INSTANCE_CREATE.instance_name"),
    ({"comment": "c" * 4097}, "OP_INSTANCE_CREATE.comment"),
    ({"reason": [["cli", "r", 1]] * 65}, "OP_INSTANCE_CREATE.reason"),
    ({"reason": [["cli", "r" * 1025, 1]]}, "OP_INSTANCE_CREATE.reason[0][1]"),
])
def test_create_opcode_refuses_beyond_limits(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.OpPrereqError) as err:
        _create(**fields)
    message = err.value.args[0]
    assert f"'{field}'" in message
    assert err.value.ecode == errors.ECODE_INVAL
    assert len(message) < 1000  # the huge input is not echoed back


def test_create_opcode_accepts_the_limits() -> None:
    _create(disks=[{"size": 1}] * 16, nics=[{}] * 8, tags=["t" * 128] * 3,
            instance_name="n" * 200, comment="c" * 4096)


@pytest.mark.parametrize("duration", [1e308, -1.0, math.nan, math.inf, 86401])
def test_test_delay_duration_bounds(duration: float) -> None:
    with pytest.raises(errors.OpPrereqError, match=r"OP_TEST_DELAY\.duration"):
        opcodes.OpTestDelay.create(duration=duration)
    op = opcodes.OpTestDelay.create(duration=86400)
    assert isinstance(op, opcodes.OpTestDelay) and op.duration == 86400


@pytest.mark.parametrize("op, field", [
    (opcodes.OpInstanceShutdown, "timeout"), (opcodes.OpInstanceRemove, "shutdown_timeout"),
    (opcodes.OpInstanceReboot, "shutdown_timeout"),
])
def test_shutdown_timeouts_fit_time_t(op: type[opcodes.OpCode], field: str) -> None:
    """2^80 s once reached socket.settimeout: OverflowError in the RPC client."""
    with pytest.raises(errors.OpPrereqError, match=f"{op.OP_ID}.{field}"):
        op.create(instance_name="i", **{field: 2**80})
    op.create(instance_name="i", **{field: 86400})
    with pytest.raises(errors.OpPrereqError, match="shutdown_timeout"):
        opcodes.OpBackupExport.create(instance_name="i", target_node="n",
                                      shutdown_timeout=2**80)


def test_test_delay_repeat_and_reason_timestamp() -> None:
    with pytest.raises(errors.OpPrereqError, match=r"OP_TEST_DELAY\.repeat"):
        opcodes.OpTestDelay.create(duration=0, repeat=2**80)
    with pytest.raises(errors.OpPrereqError, match=r"OP_TEST_DELAY\.reason\[0\]\[2\]"):
        opcodes.OpTestDelay.create(duration=0, reason=[["a", "b", 2**80]])


def test_node_name_length() -> None:
    with pytest.raises(errors.OpPrereqError, match=r"OP_NODE_ADD\.node_name"):
        opcodes.OpNodeAdd.create(node_name="n" * 201)


# --- LU helpers -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [2**63, 64 * limits.TIB_IN_MIB + 1])
def test_disk_size_limit(size: int) -> None:
    with pytest.raises(errors.OpPrereqError, match=r"disks\[0\]\.size") as err:
        iu.check_disk_specs([{"size": size}])
    assert err.value.ecode == errors.ECODE_INVAL
    assert iu.check_disk_specs([{"size": 64 * limits.TIB_IN_MIB}])[0].size == 2**26


def test_disk_and_nic_counts_in_helpers() -> None:
    with pytest.raises(errors.OpPrereqError, match="disks: 17 items"):
        iu.check_disk_specs([{"size": 1}] * 17)
    with pytest.raises(errors.OpPrereqError, match="nics: 9 items"):
        iu.check_nic_specs([{}] * 9)


@pytest.mark.parametrize("params, field", [
    ({"memory": 2**63}, "beparams.maxmem"),
    ({"maxmem": 4 * limits.TIB_IN_MIB + 1}, "beparams.maxmem"),
    ({"vcpus": 257}, "beparams.vcpus"),
])
def test_beparams_limits(params: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.OpPrereqError, match=field):
        iu.check_beparams(params)
    with pytest.raises(errors.OpPrereqError, match=field):
        iu.check_beparams(params, allow_default=True)  # modify uses the same table


@pytest.mark.parametrize("name", ["../../bin/sh", "/bin/sh", "a/b", "..", ".hidden", "",
                                  "debian;rm", "x" * 65, "a+b+c", "deb\x00ian", "de bian"])
def test_os_names_with_path_components_are_refused(name: str) -> None:
    with pytest.raises(errors.OpPrereqError, match="os_type") as err:
        limits.check_os_name(name)
    assert err.value.ecode == errors.ECODE_INVAL


@pytest.mark.parametrize("name", ["debootstrap", "debootstrap+default", "image_1.2-x",
                                  "x" * 64])
def test_plain_os_names_pass(name: str) -> None:
    assert limits.check_os_name(name) == name


def _fake_instance(**over: Any) -> Any:
    values = {"name": "inst1", "disks": [SimpleNamespace(size=1)], "nics": [], "tags": [],
              "os": "debootstrap"}
    values.update(over)
    return SimpleNamespace(**values)


@pytest.mark.parametrize("over, needle", [
    ({"disks": [SimpleNamespace(size=1)] * 17}, "disks: 17 items"),
    ({"nics": [object()] * 9}, "nics: 9 items"),
    ({"name": "n" * 201}, "instance_name: 201 characters"),
    ({"disks": [SimpleNamespace(size=2**63)]}, "disks[0].size"),
    ({"tags": ["t" * 129]}, "tags[0]"),
    ({"os": "../../bin/sh"}, "os_type"),
])
def test_instance_problems_name_what_import_would_refuse(over: dict[str, Any],
                                                         needle: str) -> None:
    assert limits.instance_problems(_fake_instance()) == []
    problems = limits.instance_problems(_fake_instance(**over))
    assert len(problems) == 1 and needle in problems[0], problems


def test_instance_problems_check_the_filled_backend_parameters() -> None:
    inst = _fake_instance()
    assert limits.instance_problems(inst, {"maxmem": 128, "minmem": 128, "vcpus": 1}) == []
    problems = limits.instance_problems(inst, {"maxmem": 2**63, "vcpus": 300})
    assert len(problems) == 2 and "beparams.maxmem" in problems[0] \
        and "beparams.vcpus" in problems[1], problems


# --- config.ini -----------------------------------------------------------------------


def _config(**inst: str) -> str:
    fields = {"name": "inst1", "disk_count": "1", "disk0_dump": "disk0.img",
              "disk0_size": "1", "nic_count": "0", **inst}
    body = "".join(f"{k} = {v}\n" for k, v in fields.items())
    return f"[export]\nversion = 0\ntimestamp = 1\nsource = node1\nos = x\n[instance]\n{body}"


@pytest.mark.parametrize("fields, needle", [
    ({"disk_count": "17"}, "disk_count=17 exceeds the limit 16"),
    ({"nic_count": "9"}, "nic_count=9 exceeds the limit 8"),
    ({"disk0_size": str(2**63)}, f"disk0_size={2**63} exceeds the limit"),
    ({"maxmem": str(2**63)}, "maxmem="),
    ({"vcpus": "100000"}, "vcpus=100000 exceeds"),
    ({"name": "n" * 201}, "[instance] name: 201 characters"),
    ({"tags": "t" * 129}, "[instance] tags"),
])
def test_config_ini_caps_come_from_the_table(fields: dict[str, str], needle: str) -> None:
    assert exportconf.parse(_config()).name == "inst1"
    with pytest.raises(errors.OpPrereqError) as err:
        exportconf.parse(_config(**fields))
    assert needle in err.value.args[0]
    assert err.value.ecode == errors.ECODE_INVAL


def test_config_ini_os_with_path_is_refused() -> None:
    with pytest.raises(errors.OpPrereqError, match=r"\[export\] os"):
        exportconf.parse(_config().replace("os = x", "os = ../../bin/sh"))


def test_non_utf8_config_ini_names_the_file() -> None:
    """Nodes read config.ini with surrogateescape; the parser names the bad byte."""
    raw = _config().encode() + b"disk0_name = caf\xe9\n"
    text = raw.decode("utf-8", errors="surrogateescape")
    # it travels to the master as JSON (noded: json.dumps) and back (serializer)
    text = serializer.load_json(json.dumps([True, text]).encode())[1]
    with pytest.raises(errors.OpPrereqError, match=r"config\.ini is not UTF-8 text") as err:
        exportconf.parse(text)
    assert "line 12" in err.value.args[0]


# --- JSON decoding --------------------------------------------------------------------


@pytest.mark.parametrize("raw, needle", [
    (b"[" * 100_000, "nested deeper than 64 levels"),
    (b"[" * 65 + b"]" * 65, "nested deeper than 64 levels"),
    (b'{"a": NaN}', "NaN is not a JSON value"),
    (b"[Infinity]", "Infinity is not a JSON value"),
    (b"[-Infinity]", "Infinity is not a JSON value"),
    (b"[1e999]", "out of range"),
    (b'["\xff"]', "not UTF-8"),
    (b"{", "Invalid JSON"),
])
def test_strict_json(raw: bytes, needle: str) -> None:
    with pytest.raises(errors.ParseError, match=needle):
        serializer.load_json(raw)
    with pytest.raises(errors.ProtocolError, match=needle):
        luxi.parse_json(raw)


def test_strict_json_accepts_normal_documents() -> None:
    assert serializer.load_json(b"[" * 64 + b"]" * 64) == json.loads("[" * 64 + "]" * 64)
    assert serializer.load_json(b'{"a": [1, 2.5, "x", null, true]}') == \
        {"a": [1, 2.5, "x", None, True]}


@pytest.mark.parametrize("args, needle", [
    ([math.nan, 10], "argument 'age'"),
    ([1e308, 10], "argument 'age'"),
    ([-2, 10], "argument 'age'"),
    ([10, math.inf], "argument 'timeout'"),
    ([10, 1e308], "argument 'timeout'"),
])
def test_auto_archive_jobs_arguments(args: list[Any], needle: str) -> None:
    table = luxi_server.build_method_table(luxi_server.MasterBackend(queue=None))  # type: ignore[arg-type]
    method = table[luxi.REQ_AUTO_ARCHIVE_JOBS]
    with pytest.raises(errors.OpPrereqError, match=needle):
        luxi_server.validate_args(luxi.REQ_AUTO_ARCHIVE_JOBS, method, args)
    luxi_server.validate_args(luxi.REQ_AUTO_ARCHIVE_JOBS, method, [-1, 10])


# --- the file driver ------------------------------------------------------------------


@pytest.fixture
def driver(tmp_path: Path) -> FileDiskDriver:
    drv = get_driver("file", pathutils.Paths.for_root(tmp_path / "root"))
    assert isinstance(drv, FileDiskDriver)
    return drv


def test_unsizable_disk_leaves_no_file_and_no_directory(driver: FileDiskDriver) -> None:
    """2^63 MiB overflows ftruncate: the file and the directory made for it go again."""
    with pytest.raises(errors.StorageError, match="Cannot size disk file"):
        driver.create("inst1", Disk(size=2**63, dev_type="file", iv_name="disk/0"))
    assert not (driver.storage_dir / "inst1").exists()
    assert not driver.storage_dir.exists() or list(driver.storage_dir.rglob("*")) == []


def test_unsizable_second_disk_keeps_the_first(driver: FileDiskDriver) -> None:
    first = driver.create("inst1", Disk(size=1, dev_type="file", iv_name="disk/0"))
    with pytest.raises(errors.StorageError):
        driver.create("inst1", Disk(size=2**63, dev_type="file", iv_name="disk/1"))
    assert [str(p) for p in (driver.storage_dir / "inst1").iterdir()] == [first[1]]


def test_orphan_files(driver: FileDiskDriver) -> None:
    owned = driver.create("inst1", Disk(size=1, dev_type="file", iv_name="disk/0"))[1]
    stray = driver.storage_dir / "gone" / "x.disk0"
    stray.parent.mkdir()
    stray.write_bytes(b"")
    snapshot_of_owned = Path(owned + ".snap-export-1")
    snapshot_of_owned.write_bytes(b"")
    assert driver.orphan_files({owned}) == [str(stray)]
    assert driver.orphan_files(set()) == sorted([owned, str(stray), str(snapshot_of_owned)])


# --- transfer errors ------------------------------------------------------------------


@pytest.mark.parametrize("message, expected", [
    ("No space left on device", "Receiver failed: No space left on device"),
    ("Receiver failed: No space left", "Receiver failed: No space left"),
    ("Receiver: Wrong stream magic", "Receiver failed: Wrong stream magic"),
])
def test_peer_failure_says_the_prefix_once(message: str, expected: str) -> None:
    assert proto.peer_failure("Receiver", message) == expected


def test_remote_export_targets_are_bounded_by_the_disk_limit() -> None:
    target = ["host", 1, "magic", "hmac", "salt"]
    with pytest.raises(errors.OpPrereqError, match=r"OP_BACKUP_EXPORT\.target_node"):
        opcodes.OpBackupExport.create(instance_name="i", mode="remote",
                                      target_node=[target] * 17)
    opcodes.OpBackupExport.create(instance_name="i", mode="remote", target_node=[target] * 16)


@pytest.mark.parametrize("raw, needle", [
    (b"[" * 60_000, "nested deeper than 64 levels"),  # was a RecursionError
    (b'{"size": NaN}', "NaN is not a JSON value"),
    (b'{"size": 1e999}', "out of range"),
])
def test_transfer_control_frames_decode_strictly(raw: bytes, needle: str) -> None:
    with pytest.raises(proto.ProtocolError, match=needle):
        proto.decode_json(raw)
