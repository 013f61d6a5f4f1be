"""What Ganeti 3.0's clients need from our LUXI server, on the wire as they send it.

Requests are written the way 3.0's ``rpc/client.py`` formats them (version
3000000, job ids as strings, CancelJob with ``kill``), through raw sockets
where the connection's fate matters.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from support.jqueue_fakes import FakeExecutor, running_queue, wait_status
from support.loopback import Env, certified_env
from support.luxi_fakes import FakeQueue, running_server

from ganeti import constants, errors, luxi, opcodes

WAIT = 30.0
GANETI_3 = 3_000_000
GANETI_216 = 2_160_000


@pytest.fixture
def address(tmp_path: Path) -> Path:
    return tmp_path / "run" / "socket" / "ganeti-master"


def _request(method: str, args: list[Any], version: int | None = GANETI_3) -> bytes:
    msg: dict[str, Any] = {"method": method, "args": args}
    if version is not None:
        msg["version"] = version
    return json.dumps(msg).encode() + constants.LUXI_EOM


class RawConnection:
    """One connection, many requests: what Ganeti's Transport does."""

    def __init__(self, address: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(str(address))
        self.stream = luxi.MessageStream(self.sock)

    def send_raw(self, payload: bytes) -> Any:
        self.sock.sendall(payload)
        return self.stream.recv()

    def call(self, method: str, args: list[Any], version: int | None = GANETI_3) -> Any:
        return self.send_raw(_request(method, args, version))

    def result(self, method: str, args: list[Any]) -> Any:
        reply = self.call(method, args)
        assert reply["success"] is True, reply
        return reply["result"]

    def close(self) -> None:
        self.sock.close()


def _error(reply: Any) -> errors.GenericError:
    assert reply["success"] is False, reply
    return errors.decode(reply["result"])


# --- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [GANETI_216, GANETI_3, constants.LUXI_VERSION, None])
def test_accepted_versions(address: Path, version: int | None) -> None:
    with running_server(address):
        conn = RawConnection(address)
        assert conn.call(luxi.REQ_QUERY_JOBS, [None, ["id"]], version) == \
            {"success": True, "result": []}
        conn.close()


def test_accepted_versions_are_one_table() -> None:
    assert {GANETI_216, GANETI_3, constants.LUXI_VERSION} <= \
        set(constants.LUXI_ACCEPTED_VERSIONS)


@pytest.mark.parametrize("version", [1, 2_150_000, 3_000_001, 3_010_000])
def test_other_versions_are_refused_clearly(address: Path, version: int) -> None:
    with running_server(address):
        conn = RawConnection(address)
        err = _error(conn.call(luxi.REQ_QUERY_JOBS, [None, ["id"]], version))
        assert isinstance(err, errors.ProtocolError)
        assert "LUXI version mismatch" in str(err) and str(version) in str(err)
        assert "3000000" in str(err), "names what the server accepts"
        conn.close()


# --- a refused request does not end the connection ----------------------------------------


@pytest.mark.parametrize("payload, cls", [
    (_request(luxi.REQ_QUERY_JOBS, [None, ["id"]], 1), errors.ProtocolError),
    (_request("NoSuchMethod", []), errors.ProtocolError),
    (_request(luxi.REQ_QUERY_JOBS, [None]), errors.OpPrereqError),
    (_request(luxi.REQ_CANCEL_JOB, ["one"]), errors.OpPrereqError),
    (_request(luxi.REQ_CANCEL_JOB, [True]), errors.OpPrereqError),
    (_request(luxi.REQ_SUBMIT_JOB, [[]]), errors.OpPrereqError),
    (_request(luxi.REQ_CANCEL_JOB, [42, False]), errors.OpPrereqError),  # handler error
    (b"{not json\x03", errors.ProtocolError),
    (b"[1, 2, 3]\x03", errors.ProtocolError),
    (b'{"method": "QueryJobs", "args": "x"}\x03', errors.ProtocolError),
    (b"\xff\xfe\x00garbage\x03", errors.ProtocolError),
])
def test_refused_request_then_good_one_on_the_same_connection(
        address: Path, payload: bytes, cls: type[errors.GenericError]) -> None:
    with running_server(address):
        conn = RawConnection(address)
        assert type(_error(conn.send_raw(payload))) is cls
        assert conn.result(luxi.REQ_QUERY_JOBS, [None, ["id"]]) == []
        conn.close()


def test_our_client_keeps_its_connection_after_a_refusal(address: Path) -> None:
    with running_server(address), luxi.Client(str(address), timeout=WAIT) as cl:
        with pytest.raises(errors.ProtocolError, match="Unknown LUXI method"):
            cl.call_method("NoSuchMethod", [])
        sock = cl._sock
        assert cl.query_jobs(None, ["id"]) == []
        assert cl._sock is sock and sock is not None, "no reconnect was needed"


def test_broken_stream_still_closes(address: Path) -> None:
    with running_server(address, max_message=1024):
        conn = RawConnection(address)
        err = _error(conn.send_raw(b'"' + b"a" * 2000 + b'"\x03'))
        assert "too large" in str(err)
        try:
            rest = conn.sock.recv(1)
        except ConnectionResetError:  # unread bytes were still queued at the server
            rest = b""
        assert rest == b"", "an oversized message ends the connection"
        conn.close()


# --- the query socket -------------------------------------------------------------------


def test_query_socket_serves_the_same_methods_and_is_removed(tmp_path: Path) -> None:
    from ganeti import pathutils, query_resources
    from ganeti.server import luxi_methods, luxi_server
    paths = pathutils.Paths.for_root(tmp_path)
    assert paths.query_socket.parent == paths.master_socket.parent
    assert paths.query_socket.name == "ganeti-query"
    query_resources.register_all()
    queue = FakeQueue()
    table = luxi_methods.build_method_table(luxi_methods.MasterBackend(queue))
    server = luxi_server.LuxiServer(paths.master_socket, table,
                                    extra_addresses=(paths.query_socket,))
    server.start()
    try:
        with luxi.Client(str(paths.query_socket), timeout=WAIT) as query_cl, \
                luxi.Client(str(paths.master_socket), timeout=WAIT) as master_cl:
            job_id = master_cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
            assert query_cl.query_jobs([job_id], ["id"]) == [[job_id]]
    finally:
        server.stop()
    assert not paths.master_socket.exists()
    assert not paths.query_socket.exists()


def test_masterd_listens_on_both_sockets() -> None:
    """The composition root passes the query socket (read from its source: no daemon)."""
    import inspect

    from ganeti.server import masterd
    assert "extra_addresses=(self.paths.query_socket,)" in inspect.getsource(masterd.Master)


# --- job ids as strings, CancelJob(job_id, kill) ----------------------------------------


def test_job_ids_as_strings_everywhere(address: Path) -> None:
    queue = FakeQueue()
    with running_server(address, queue):
        conn = RawConnection(address)
        job_id = conn.result(luxi.REQ_SUBMIT_JOB, [[{"OP_ID": "OP_TEST_DELAY",
                                                      "duration": 0}]])
        other = conn.result(luxi.REQ_SUBMIT_JOB, [[{"OP_ID": "OP_TEST_DELAY",
                                                     "duration": 0}]])
        sid = str(job_id)
        assert conn.result(luxi.REQ_QUERY_JOBS, [[sid, other], ["id"]]) == \
            [[job_id], [other]]
        assert conn.result(luxi.REQ_WAIT_FOR_JOB_CHANGE,
                           [sid, ["status"], None, None, 0]) == [["queued"], []]
        assert conn.result(luxi.REQ_CHANGE_JOB_PRIORITY, [sid, -5])[0] is True
        assert queue.jobs[job_id].priority == -5
        assert conn.result(luxi.REQ_CANCEL_JOB, [sid, False]) == [True, f"Job {job_id} canceled"]
        assert conn.result(luxi.REQ_ARCHIVE_JOB, [sid]) is True
        for bad in ("-1", "1.0", " 1", "0x1", "\u0661"):  # ARABIC-INDIC DIGIT ONE
            assert isinstance(_error(conn.call(luxi.REQ_ARCHIVE_JOB, [bad])),
                              errors.OpPrereqError), bad
        conn.close()


def test_cancel_job_with_and_without_kill(address: Path, tmp_path: Path) -> None:
    executor = FakeExecutor()
    with running_queue(tmp_path / "queue.db", executor, workers=1) as queue, \
            running_server(address, queue):  # type: ignore[arg-type]
        gate = executor.hold_running("run")
        running = queue.submit_job([opcodes.OpTestDelay.create(duration=0, comment="run")])
        wait_status(queue, running, frozenset({constants.OP_STATUS_RUNNING}))
        queued = [queue.submit_job([opcodes.OpTestDelay.create(duration=0)])
                  for _ in range(3)]
        conn = RawConnection(address)
        ok, msg = conn.result(luxi.REQ_CANCEL_JOB, [str(running), True])
        assert ok is False and "cannot be killed" in msg
        ok, msg = conn.result(luxi.REQ_CANCEL_JOB, [running, False])
        assert ok is False and "cannot be canceled" in msg
        # a job that is not running yet is canceled, kill or not; the old one-argument form too
        assert conn.result(luxi.REQ_CANCEL_JOB, [queued[0], True])[0] is True
        assert conn.result(luxi.REQ_CANCEL_JOB, [queued[1], False])[0] is True
        assert conn.result(luxi.REQ_CANCEL_JOB, [queued[2]])[0] is True
        conn.close()
        with luxi.Client(str(address), timeout=WAIT) as cl:
            assert cl.cancel_job(running, kill=True)[0] is False
        gate.release.set()
        assert wait_status(queue, running) == constants.OP_STATUS_SUCCESS
        for job_id in queued:
            assert wait_status(queue, job_id) == constants.OP_STATUS_CANCELED


# --- 3.0's classic queries, tags and cluster info, against a real configuration --------


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return certified_env(tmp_path)


@pytest.fixture
def conn(env: Env, tmp_path: Path) -> Any:
    address = tmp_path / "run" / "ganeti-query"
    with running_server(address, context=env.ctx):
        connection = RawConnection(address)
        yield connection
        connection.close()


def test_query_instances_and_nodes(env: Env, conn: RawConnection) -> None:
    env.create("inst2", start=False)
    env.create("inst1", start=False)
    rows = conn.result(luxi.REQ_QUERY_INSTANCES, [[], ["name", "admin_state"], False])
    assert rows == [["inst1", "down"], ["inst2", "down"]]
    # in the order asked for, values plain (no [status, value] pairs)
    assert conn.result(luxi.REQ_QUERY_INSTANCES, [["inst2", "inst1"], ["name"], False]) == \
        [["inst2"], ["inst1"]]
    nodes = conn.result(luxi.REQ_QUERY_NODES, [["node1"], ["name", "offline"], False])
    assert nodes == [["node1", False]]
    # what 3.0's gnt-node info selects
    [[powered, ndparams, custom]] = conn.result(
        luxi.REQ_QUERY_NODES, [["node1"], ["powered", "ndparams", "custom_ndparams"], False])
    assert powered is True and isinstance(ndparams, dict) and custom == {}
    all_nodes = conn.result(luxi.REQ_QUERY_NODES, [[], ["name"], False])
    assert [r[0] for r in all_nodes] == sorted(n.name for n in
                                               env.cfg.get_all_nodes_info().values())


@pytest.mark.parametrize("args, ecode, text", [
    ([["nosuch"], ["name"], False], errors.ECODE_NOENT, "Instance 'nosuch' not known"),
    ([[], ["name", "bogus"], False], errors.ECODE_INVAL, "Unknown output fields"),
    ([[], ["name"], True], errors.ECODE_INVAL, "use_locking"),
])
def test_query_instances_refusals(conn: RawConnection, args: list[Any], ecode: str,
                                  text: str) -> None:
    err = _error(conn.call(luxi.REQ_QUERY_INSTANCES, args))
    assert isinstance(err, errors.OpPrereqError) and err.ecode == ecode
    assert text in str(err)


def test_query_groups(env: Env, conn: RawConnection) -> None:
    rows = conn.result(luxi.REQ_QUERY_GROUPS, [[], ["name", "node_cnt", "node_list",
                                                    "alloc_policy"], False])
    groups = env.cfg.get_all_nodegroups_info().values()
    assert [r[0] for r in rows] == sorted(g.name for g in groups)
    assert sum(r[1] for r in rows) == len(env.cfg.get_all_nodes_info())
    assert {r[3] for r in rows} == {"preferred"}
    # what 3.0's gnt-group info selects
    [[policy, custom]] = conn.result(luxi.REQ_QUERY_GROUPS,
                                     [[rows[0][0]], ["ipolicy", "custom_ipolicy"], False])
    assert policy["disk-templates"] == env.cfg.get_cluster_info().enabled_disk_templates
    assert policy["minmax"] == [] and custom == {}


def test_query_tags(env: Env, conn: RawConnection) -> None:
    env.create("inst1", start=False)
    inst = env.cfg.get_instance_info_by_name("inst1")
    assert inst is not None
    inst.tags = ["web", "a-first"]
    env.cfg.update(inst)
    cluster = env.cfg.get_cluster_info()
    cluster.tags = ["prod"]
    env.cfg.update(cluster)
    assert conn.result(luxi.REQ_QUERY_TAGS, ["instance", "inst1"]) == ["a-first", "web"]
    assert conn.result(luxi.REQ_QUERY_TAGS, ["cluster", ""]) == ["prod"]
    assert conn.result(luxi.REQ_QUERY_TAGS, ["node", "node1"]) == []
    err = _error(conn.call(luxi.REQ_QUERY_TAGS, ["instance", "nosuch"]))
    assert isinstance(err, errors.OpPrereqError) and err.ecode == errors.ECODE_NOENT
    err = _error(conn.call(luxi.REQ_QUERY_TAGS, ["planet", "x"]))
    assert isinstance(err, errors.OpPrereqError) and "'kind'" in str(err)


# every key Ganeti 3.0's gnt-cluster info (ShowClusterConfig) and version read
GANETI3_CLUSTER_KEYS = {
    "software_version", "protocol_version", "config_version", "os_api_version",
    "export_version", "vcs_version", "tags", "reserved_lvs", "enabled_hypervisors",
    "hvparams", "name", "uuid", "ctime", "mtime", "master", "architecture",
    "default_hypervisor", "os_hvp", "osparams", "hidden_os", "blacklisted_os",
    "candidate_pool_size", "max_running_jobs", "max_tracked_jobs", "mac_prefix",
    "master_netdev", "master_netmask", "use_external_mip_script", "volume_group_name",
    "drbd_usermode_helper", "file_storage_dir", "shared_file_storage_dir",
    "gluster_storage_dir", "maintain_node_health", "uid_pool", "default_iallocator",
    "default_iallocator_params", "primary_ip_version", "prealloc_wipe_disks",
    "enabled_disk_templates", "install_image", "instance_communication_network",
    "zeroing_image", "compression_tools", "enabled_user_shutdown", "modify_ssh_setup",
    "ssh_key_type", "ssh_key_bits", "ndparams", "beparams", "nicparams", "diskparams",
    "ipolicy", "enabled_data_collectors", "data_collector_interval",
}


def test_cluster_info_has_every_key_ganeti3_reads(env: Env, conn: RawConnection) -> None:
    info = conn.result(luxi.REQ_QUERY_CLUSTER_INFO, [])
    assert set(info) >= GANETI3_CLUSTER_KEYS, GANETI3_CLUSTER_KEYS - set(info)
    assert info["software_version"] == constants.RELEASE_VERSION
    assert info["protocol_version"] == constants.PROTOCOL_VERSION
    assert info["config_version"] == constants.CONFIG_VERSION
    assert info["name"] == env.cfg.get_cluster_name()
    assert info["master"] == env.cfg.get_master_node_name()
    assert len(info["architecture"]) == 2
    assert {"minmax", "std", "disk-templates", "vcpu-ratio", "spindle-ratio"} <= \
        set(info["ipolicy"])
    # our own keys stay (our gnt-cluster info and the backup runner read them)
    assert "backup_defaults" in info and info["drain_flag"] is False
    # the same dict as OpClusterQuery's
    assert env.run(opcodes.OpClusterQuery.create())["software_version"] == \
        info["software_version"]
    assert conn.result(luxi.REQ_QUERY_CONFIG_VALUES,
                       [["cluster_name", "master_node", "watcher_pause",
                         "modify_ssh_setup"]]) == \
        [env.cfg.get_cluster_name(), env.cfg.get_master_node_name(), None, False]


def test_placeholders_are_documented() -> None:
    from ganeti.query_resources.cluster import PLACEHOLDERS
    doc = (Path(__file__).resolve().parents[2] / "doc" / "luxi.md").read_text()
    for key in PLACEHOLDERS:
        assert f"`{key}`" in doc, key


def test_job_archived_field(address: Path) -> None:
    """3.0's gnt-job list --archived selects it: asking for it lists archived jobs too."""
    queue = FakeQueue()
    with running_server(address, queue), luxi.Client(str(address), timeout=WAIT) as cl:
        old = cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
        job_id = cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
        queue.update(old, constants.OP_STATUS_SUCCESS)
        assert cl.archive_job(old)
        result = cl.query("job", ["id", "archived"])
        assert result["data"] == [[[0, old], [0, True]], [[0, job_id], [0, False]]]
        assert result["fields"][1]["kind"] == "bool"
        # without the field the archive stays out of the answer
        assert cl.query("job", ["id"])["data"] == [[[0, job_id]]]


def test_query_nodes_live_fields_ask_the_nodes(env: Env, conn: RawConnection) -> None:
    """3.0's gnt-node list selects mtotal, dfree, ...: real answers from the node daemons."""
    rows = conn.result(luxi.REQ_QUERY_NODES, [["node1"], ["mtotal", "mfree", "mnode",
                                                          "dtotal", "dfree", "ctotal",
                                                          "sinst_cnt"], False])
    [[mtotal, mfree, mnode, dtotal, dfree, ctotal, sinst_cnt]] = rows
    assert mtotal > 0 and 0 <= mfree <= mtotal and mnode == mtotal - mfree
    assert 0 <= dfree <= dtotal and ctotal >= 1 and sinst_cnt == 0
    node2 = env.cfg.get_node_info_by_name("node2")
    assert node2 is not None
    node2.offline = True
    env.cfg.update(node2)
    result = conn.result(luxi.REQ_QUERY, ["node", ["name", "mfree"], ["=", "name", "node2"]])
    assert result["data"] == [[[0, "node2"], [4, None]]], "offline: not contacted"


def test_query_networks(tmp_path: Path) -> None:
    """The config API cannot add networks yet: a config holding one, behind the server."""
    from types import SimpleNamespace

    from ganeti import objects
    net = objects.Network(name="net1", network="10.0.0.0/24", gateway="10.0.0.1",
                          tags=["lan"])
    inst = objects.Instance(name="inst1", primary_node="n1",
                            nics=[objects.NIC(mac="aa:00:00:00:00:01", network=net.uuid)])
    # the readers use a snapshot (ConfigSnapshot's read methods): the fake is its own
    cfg = SimpleNamespace(
        get_all_instances_info=lambda: {inst.uuid: inst},
        get_all_nodes_info=dict, get_all_nodegroups_info=dict,
        get_networks=lambda: {net.uuid: net})
    cfg.snapshot = lambda: cfg
    address = tmp_path / "ganeti-query"
    with running_server(address, context=SimpleNamespace(cfg=cfg)):
        conn = RawConnection(address)
        rows = conn.result(luxi.REQ_QUERY_NETWORKS,
                           [[], ["name", "network", "gateway", "group_list", "inst_list",
                                 "tags"], False])
        assert rows == [["net1", "10.0.0.0/24", "10.0.0.1", [], ["inst1"], ["lan"]]]
        assert conn.result(luxi.REQ_QUERY_TAGS, ["network", "net1"]) == ["lan"]
        conn.close()
