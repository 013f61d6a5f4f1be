"""Output of the gnt-* commands: field references in messages, the --dry-run message,
Ganeti's info layout, gnt-cluster info and verify's problem lines."""

from __future__ import annotations

import typing
from types import SimpleNamespace
from typing import Any

import pytest

from ganeti import cli, constants, errors, opcodes
from ganeti.client import gnt_backup, gnt_cluster, gnt_instance
from ganeti.cmdlib import cluster as cmdcluster


def _opts(prog: str, commands: dict[str, cli.Command], *argv: str) -> Any:
    return cli.parse_command_line(prog, commands, list(argv))


# --- messages naming opcode fields --------------------------------------------------


def test_field_ref_is_the_field_for_luxi_and_the_option_for_the_cli() -> None:
    text = f"confirm this with {errors.field_ref('long_sleep')}"
    assert text == "confirm this with `long_sleep`"
    flags = cli.option_flags(gnt_backup.COMMANDS["export"].options)
    assert cli.render_field_refs(text, flags) == "confirm this with --long-sleep"
    # a command without that option: the bare field name, never the backquotes
    assert cli.render_field_refs(text, {}) == "confirm this with long_sleep"


def test_option_flags_skip_options_storing_the_opposite() -> None:
    flags = cli.option_flags(gnt_backup.COMMANDS["export"].options)
    assert flags["long_sleep"] == "--long-sleep"
    assert flags["transport_compression"] == "--transport-compression"
    assert "shutdown" not in flags  # --noshutdown sets shutdown=False


def test_generic_main_renders_the_refs_of_the_running_command(
        capsys: pytest.CaptureFixture[str]) -> None:
    def fail(_opts: Any) -> int:
        raise errors.OpPrereqError(f"give {errors.field_ref('long_sleep')}",
                                   errors.ECODE_STATE)
    commands = {"export": cli.Command(fail, (), gnt_backup.COMMANDS["export"].options)}
    assert cli.generic_main("gnt-x", commands, ["export", "-n", "n1"]) == 1
    assert capsys.readouterr().err == ("Failure: prerequisites not met for this operation:"
                                       " give --long-sleep (wrong_state)\n")
    entry = [1, [0, 0], "message", f"Exporting in full ({errors.field_ref('full')})"]
    assert cli.format_log_entry(entry).endswith("Exporting in full (--full)")


# --- --dry-run ------------------------------------------------------------------------


def test_dry_run_message_says_what_would_have_been_done(
        capsys: pytest.CaptureFixture[str]) -> None:
    opts = _opts("gnt-instance", gnt_instance.COMMANDS, "start", "--dry-run", "web1")
    assert cli.dry_run_message("gnt-instance", opts) == (
        "Dry run: the checks passed; gnt-instance start web1 would start an instance."
        " Nothing was changed.")
    commands = {"go": cli.Command(lambda _o: 0, (cli.Arg("x"),), cli.SUBMIT_OPTS, "Do it"),
                "own": cli.Command(lambda _o: 0, (), cli.SUBMIT_OPTS, "Do it",
                                   reports_dry_run=True),
                "bad": cli.Command(lambda _o: 1, (), cli.SUBMIT_OPTS, "Do it")}
    assert cli.generic_main("gnt-x", commands, ["go", "--dry-run", "a"]) == 0
    assert capsys.readouterr().out == ("Dry run: the checks passed; gnt-x go a would do it."
                                       " Nothing was changed.\n")
    assert cli.generic_main("gnt-x", commands, ["go", "a"]) == 0
    assert cli.generic_main("gnt-x", commands, ["own", "--dry-run"]) == 0
    assert cli.generic_main("gnt-x", commands, ["bad", "--dry-run"]) == 1
    assert capsys.readouterr().out == ""


# --- Ganeti's info layout ---------------------------------------------------------------


def test_generic_info_layout() -> None:
    data = [("Name", "c1"), ("Params", {"b": 2, "a": {"x": None}}), ("Empty", {}),
            ("List", ["p", "q"]), ("Flag", False)]
    assert cli.format_generic_info(data) == [
        "Name: c1", "Params:", "  a:", "    x: (none)", "  b: 2", "Empty:",
        "List:", "  - p", "  - q", "Flag: False"]


_CLUSTER = {
    "name": "c.local", "uuid": "u-1", "ctime": 1764000000.25, "mtime": 1764000001.0,
    "master": "node1", "master_node": "a5b4-uuid", "architecture": ["64bit", "x86_64"],
    "tags": ["b", "a"], "default_hypervisor": "process", "enabled_hypervisors": ["process"],
    "hvparams": {"process": {"blocks": 64}}, "osparams": {}, "candidate_pool_size": 10,
    "max_running_jobs": 25, "max_tracked_jobs": 10000, "mac_prefix": "aa:00:00",
    "master_ip": None, "noded_port": 1811, "volume_group_name": "",
    "file_storage_dir": "/srv/ganeti", "shared_export_dir": False, "hooks_timeout": 30,
    "primary_ip_version": 4, "enabled_disk_templates": ["file"],
    "compression_tools": ["gzip", "zstd"], "ndparams": {}, "beparams": {"maxmem": 128},
    "backup_defaults": {"bwlimit": None, "ionice_class": "idle"},
    "software_version": "1.0", "protocol_version": 1, "config_version": 2,
    "export_version": 0,
}


def test_cluster_info_layout_is_ganetis() -> None:
    lines = cli.format_generic_info(gnt_cluster.cluster_info_layout(_CLUSTER))
    assert lines[:7] == [
        "Cluster name: c.local", "Cluster UUID: u-1",
        f"Creation time: {cli.format_time(1764000000.25)}",
        f"Modification time: {cli.format_time(1764000001.0)}",
        "Master node: node1", "Architecture (this node): 64bit (x86_64)", "Tags: a, b"]
    assert "  compression tools: gzip, zstd" in lines
    assert lines[lines.index("Default instance parameters:"):][:3] == \
        ["Default instance parameters:", "  default:", "    maxmem: 128"]
    text = "\n".join(lines)
    assert "a5b4-uuid" not in text and ".25" not in text and "{" not in text


# --- gnt-cluster verify ------------------------------------------------------------------


def test_verify_optional_checks_are_the_constants() -> None:
    assert set(typing.get_args(opcodes.VerifyOptionalCheck)) == \
        set(constants.VERIFY_OPTIONAL_CHECKS)
    op = opcodes.OpClusterVerify.create(error_codes=True, skip_checks=["nplusone_mem"])
    assert op.to_dict()["skip_checks"] == ["nplusone_mem"]
    with pytest.raises(errors.OpPrereqError, match="skip_checks"):
        opcodes.OpClusterVerify.create(skip_checks=["bogus"])


@pytest.mark.parametrize("problem, plain, coded", [
    (cmdcluster.verify_problem(constants.CV_ENODEVERSION, "node3", "protocol 1, master 2"),
     "  - ERROR: node node3: protocol 1, master 2",
     "  - ERROR:ENODEVERSION:node:node3:protocol 1, master 2"),
    (cmdcluster.verify_problem(constants.CV_ECLUSTERCFG, "", "no RPC"),
     "  - ERROR: no RPC", "  - ERROR:ECLUSTERCFG:cluster::no RPC"),
    # plain text (a check that gives no code): node problems keep their node
    ("node node2: lags 3 serials", "  - ERROR: node node2: lags 3 serials",
     "  - ERROR:ENODESETUP:node:node2:lags 3 serials"),
    ("something", "  - ERROR: something", "  - ERROR:ECLUSTERCFG:cluster::something"),
])
def test_verify_problem_lines(problem: str, plain: str, coded: str) -> None:
    assert cmdcluster.format_verify_problem(problem, False) == plain
    assert cmdcluster.format_verify_problem(problem, True) == coded


class _Cfg:
    def __init__(self, instances: list[Any], nodes: dict[str, Any]) -> None:
        self.instances = instances
        self.nodes = nodes

    def get_cluster_info(self) -> Any:
        return SimpleNamespace(fill_beparams=lambda inst: inst.be)

    def get_all_instances_info(self) -> dict[str, Any]:
        return {str(i): inst for i, inst in enumerate(self.instances)}

    def get_node_info(self, uuid: str) -> Any:
        return self.nodes.get(uuid)


class _Rpc:
    def __init__(self, free: dict[str, int]) -> None:
        self.free = free
        self.asked: list[list[str]] = []

    def call_node_info(self, names: list[str]) -> dict[str, Any]:
        self.asked.append(list(names))
        return {n: SimpleNamespace(fail_msg=None, payload={"memory_free": self.free[n]})
                for n in names}


def _n_plus_one(instances: list[Any], free: dict[str, int]) -> tuple[list[str], _Rpc]:
    nodes = {u: SimpleNamespace(uuid=u, name=f"node{u}", offline=False) for u in "123"}
    lu: Any = object.__new__(cmdcluster.LUClusterVerifyGroup)
    lu.cfg = _Cfg(instances, nodes)
    rpc = _Rpc(free)
    lu.rpc = rpc
    lu.group_nodes = list(nodes.values())
    problems: list[str] = lu._verify_n_plus_one()
    return problems, rpc


def _inst(pnode: str, snodes: list[str], minmem: int, auto: bool = True) -> Any:
    return SimpleNamespace(primary_node=pnode, secondary_nodes=snodes,
                           be={"minmem": minmem, "auto_balance": auto})


def test_n_plus_one_memory_check() -> None:
    # no secondaries (file and plain disks): nothing to check, no node asked
    problems, rpc = _n_plus_one([_inst("1", [], 512)], {})
    assert problems == [] and rpc.asked == []
    instances = [_inst("1", ["3"], 300), _inst("1", ["3"], 300), _inst("2", ["3"], 500),
                 _inst("2", ["3"], 900, auto=False)]
    problems, rpc = _n_plus_one(instances, {"node3": 550})
    assert rpc.asked == [["node3"]]
    assert [cmdcluster.format_verify_problem(p, True) for p in problems] == [
        "  - ERROR:ENODEN1:node:node3:not enough memory to accommodate instance failovers"
        " should node node1 fail (600 MiB needed, 550 MiB free)"]
