"""LUXI framing, server robustness and client behaviour."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from support.luxi_fakes import FakeQueue, running_server

from ganeti import constants, errors, luxi, opcodes
from ganeti.server import luxi_server

WAIT = 30.0  # generous: other test processes share two cores


@pytest.fixture
def address(tmp_path: Path) -> Path:
    return tmp_path / "run" / "socket" / "ganeti-master"


def _expect_error(reply: Any, cls: type[errors.GenericError]) -> errors.GenericError:
    assert reply["success"] is False
    err = errors.decode(reply["result"])
    assert type(err) is cls
    return err


# --- framing ----------------------------------------------------------------------------


def test_framing_round_trip_split_and_batched() -> None:
    left, right = socket.socketpair()
    with left, right:
        messages = [{"a": 1}, ["x\x03y", None], "tail \u00e9"]
        data = b"".join(luxi.encode_message(m) for m in messages)
        # deliver in awkward pieces: first byte, the rest in one go
        left.sendall(data[:1])
        left.sendall(data[1:])
        left.close()
        stream = luxi.MessageStream(right)
        assert [stream.recv() for _ in messages] == messages
        assert stream.recv_raw() is None


def test_encoded_message_has_single_terminator() -> None:
    data = luxi.encode_message({"text": "a\x03b"})
    assert data.count(constants.LUXI_EOM) == 1
    assert data.endswith(constants.LUXI_EOM)


def test_stream_rejects_oversized_message_without_terminator() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"x" * 200)
        stream = luxi.MessageStream(right, max_message=100)
        with pytest.raises(errors.ProtocolError, match="too large"):
            stream.recv_raw()


def test_stream_truncated_message_is_connection_closed() -> None:
    left, right = socket.socketpair()
    with right:
        left.sendall(b'{"method": "Qu')
        left.close()
        with pytest.raises(errors.ConnectionClosedError):
            luxi.MessageStream(right).recv_raw()


def test_parse_response_raises_typed_error() -> None:
    msg = luxi.format_response(False, errors.encode(errors.OpPrereqError("no", "wrong_state")))
    with pytest.raises(errors.OpPrereqError) as info:
        luxi.parse_response(json.loads(json.dumps(msg)))
    assert info.value.ecode == "wrong_state"
    with pytest.raises(errors.ProtocolError):
        luxi.parse_response({"success": "yes"})


# --- server: bad input -------------------------------------------------------------------


@pytest.mark.parametrize("payload, cls", [
    (b"\xff\xfe\x00garbage\x03", errors.ProtocolError),
    (b"{not json\x03", errors.ProtocolError),
    (b"[1, 2, 3]\x03", errors.ProtocolError),
    (b'{"method": 5, "args": []}\x03', errors.ProtocolError),
    (b'{"method": "NoSuchMethod", "args": []}\x03', errors.ProtocolError),
    (b'{"method": "QueryJobs", "args": "x"}\x03', errors.ProtocolError),
    (b'{"method": "QueryJobs", "args": [null]}\x03', errors.OpPrereqError),
    (b'{"method": "QueryJobs", "args": [null, ["id"], 3]}\x03', errors.OpPrereqError),
    (b'{"method": "CancelJob", "args": ["one"]}\x03', errors.OpPrereqError),
    (b'{"method": "CancelJob", "args": [true]}\x03', errors.OpPrereqError),
    (b'{"method": "SubmitJob", "args": [[]]}\x03', errors.OpPrereqError),
    (b'{"method": "QueryJobs", "args": [null, ["id"]], "version": 1}\x03',
     errors.ProtocolError),
])
def test_bad_requests_get_error_and_connection_stays(address: Path, payload: bytes,
                                                     cls: type[errors.GenericError]) -> None:
    """A refused request is answered; the same connection then serves a good one."""
    good = luxi.encode_message(luxi.format_request(luxi.REQ_QUERY_JOBS, [None, ["id"]]))
    with running_server(address), \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT)
        sock.connect(str(address))
        stream = luxi.MessageStream(sock)
        sock.sendall(payload)
        _expect_error(stream.recv(), cls)
        sock.sendall(good)
        assert stream.recv() == {"success": True, "result": []}, \
            "the connection must stay open after a refused request"
        # and the server still serves others
        with luxi.Client(str(address), timeout=WAIT) as cl:
            assert cl.query_jobs(None, ["id"]) == []


def test_oversized_message_rejected_daemon_keeps_serving(address: Path) -> None:
    with running_server(address, max_message=64 * 1024):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(WAIT)
        sock.connect(str(address))
        sender_done = threading.Event()

        def flood() -> None:
            try:
                sock.sendall(b"[" + b"1," * 1_000_000)
            except OSError:
                pass
            sender_done.set()

        thread = threading.Thread(target=flood)
        thread.start()
        reply = luxi.MessageStream(sock).recv()
        err = _expect_error(reply, errors.ProtocolError)
        assert "too large" in str(err)
        assert sender_done.wait(WAIT), "server must stop reading (close), not buffer"
        thread.join()
        sock.close()
        with luxi.Client(str(address), timeout=WAIT) as cl:
            assert cl.query_jobs(None, ["id"]) == []


def test_default_limit_is_enforced(address: Path) -> None:
    with running_server(address):
        payload = b'"' + b"a" * (constants.LUXI_MAX_MESSAGE + 10) + b'"\x03'
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(WAIT)
        sock.connect(str(address))
        thread = threading.Thread(target=lambda: _send_ignoring_errors(sock, payload))
        thread.start()
        _expect_error(luxi.MessageStream(sock).recv(), errors.ProtocolError)
        thread.join(WAIT)
        sock.close()


def _send_ignoring_errors(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_truncated_message_then_disconnect(address: Path) -> None:
    with running_server(address):
        for _ in range(5):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(address))
                sock.sendall(b'{"method": "QueryJobs", "ar')
        with luxi.Client(str(address), timeout=WAIT) as cl:
            assert cl.query_jobs(None, ["id"]) == []


def test_client_disconnect_during_wait_for_job_change(address: Path) -> None:
    queue = FakeQueue()
    with running_server(address, queue):
        cl = luxi.Client(str(address), timeout=WAIT)
        job_id = cl.submit_job([opcodes.OpTestDelay.create(duration=1)])
        info = cl.query_jobs([job_id], ["status"])[0]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(address))
        sock.sendall(luxi.encode_message(luxi.format_request(
            luxi.REQ_WAIT_FOR_JOB_CHANGE, [job_id, ["status"], info, None, 20])))
        with queue.cond:
            assert queue.cond.wait_for(lambda: queue.waiters == 1, WAIT)
        sock.close()
        queue.wait_returned.clear()
        queue.update(job_id, constants.OP_STATUS_RUNNING)
        assert queue.wait_returned.wait(WAIT)
        # the server survived the failed reply and the first client is unaffected
        assert cl.query_jobs([job_id], ["status"]) == [["running"]]
        cl.close()


def test_wait_for_job_change_returns_changes_and_log(address: Path) -> None:
    queue = FakeQueue()
    with running_server(address, queue), luxi.Client(str(address), timeout=WAIT) as cl:
        job_id = cl.submit_job([opcodes.OpTestDelay.create(duration=1)])
        first = cl.wait_for_job_change_once(job_id, ["status"], None, None, 5)
        assert first == [["queued"], []]
        assert cl.wait_for_job_change_once(job_id, ["status"], ["queued"], None, 0) == \
            luxi.JOB_NOTCHANGED
        waiter_result: list[Any] = []
        thread = threading.Thread(target=lambda: waiter_result.append(
            luxi.Client(str(address), timeout=WAIT).wait_for_job_change_once(
                job_id, ["status"], ["queued"], None, 25)))
        thread.start()
        with queue.cond:
            assert queue.cond.wait_for(lambda: queue.waiters == 1, WAIT)
        queue.update(job_id, log="hello")
        thread.join(WAIT)
        info, log = waiter_result[0]
        assert info == ["queued"]
        assert [e[3] for e in log] == ["hello"]


def test_wait_for_job_change_timeout_is_capped() -> None:
    queue = FakeQueue()
    backend = luxi_server.MasterBackend(queue)
    job_id = queue.submit_job([opcodes.OpTestDelay.create(duration=0)])
    backend.wait_for_job_change(job_id, ["status"], None, None, 10_000)
    backend.wait_for_job_change(job_id, ["status"], None, None, -5)
    assert queue.wait_timeouts == [luxi.WFJC_MAX_TIMEOUT, 0.0]


def test_typed_error_round_trip(address: Path) -> None:
    with running_server(address), luxi.Client(str(address), timeout=WAIT) as cl:
        with pytest.raises(errors.OpPrereqError) as info:
            cl.cancel_job(42)
        assert info.value.ecode == errors.ECODE_NOENT
        # the connection stays usable after a handler error
        assert cl.query_jobs([42], ["id"]) == [None]


def test_submit_decodes_opcodes_and_reports_bad_ones(address: Path) -> None:
    queue = FakeQueue()
    with running_server(address, queue), luxi.Client(str(address), timeout=WAIT) as cl:
        job_id = cl.submit_job([opcodes.OpTestDelay.create(duration=2.5)])
        op = queue.jobs[job_id].ops[0]
        assert isinstance(op, opcodes.OpTestDelay) and op.duration == 2.5
        with pytest.raises(errors.OpPrereqError, match="duration"):
            cl.submit_job([{"OP_ID": "OP_TEST_DELAY", "duration": -1}])
        with pytest.raises(errors.OpCodeUnknown):
            cl.submit_job([{"OP_ID": "OP_NO_SUCH_THING"}])
        results = cl.submit_many_jobs([[opcodes.OpTestDelay.create(duration=0)]] * 2)
        assert [ok for ok, _ in results] == [True, True]
        assert len({jid for _, jid in results}) == 2


def test_drain_flag_and_drained_submission(address: Path) -> None:
    queue = FakeQueue()
    with running_server(address, queue), luxi.Client(str(address), timeout=WAIT) as cl:
        assert cl.set_drain_flag(True) is True
        with pytest.raises(errors.JobQueueDrainError):
            cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
        cl.set_drain_flag(False)
        assert cl.submit_job([opcodes.OpTestDelay.create(duration=0)]) == 1


def test_job_management_calls(address: Path) -> None:
    queue = FakeQueue()
    with running_server(address, queue), luxi.Client(str(address), timeout=WAIT) as cl:
        j1 = cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
        j2 = cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
        assert cl.change_job_priority(j1, -10)[0] is True
        with pytest.raises(errors.OpPrereqError):
            cl.change_job_priority(j1, 100)
        assert cl.cancel_job(j1) == (True, f"Job {j1} canceled")
        assert cl.archive_job(j2) is False
        assert cl.archive_job(j1) is True
        queue.update(j2, constants.OP_STATUS_SUCCESS)
        assert cl.auto_archive_jobs(0, 10) == (1, 0)
        assert cl.query_jobs(None, ["id"]) == []


def test_many_concurrent_clients(address: Path) -> None:
    queue = FakeQueue()
    failures: list[BaseException] = []
    with running_server(address, queue):
        def worker() -> None:
            try:
                with luxi.Client(str(address), timeout=WAIT) as cl:
                    for _ in range(10):
                        job_id = cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
                        assert cl.query_jobs([job_id], ["id"]) == [[job_id]]
            except BaseException as err:
                failures.append(err)

        threads = [threading.Thread(target=worker) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
    assert not failures
    assert len(queue.jobs) == 300


def test_socket_permissions(address: Path) -> None:
    with running_server(address):
        assert stat.S_ISSOCK(os.stat(address).st_mode)
        assert stat.S_IMODE(os.stat(address).st_mode) == 0o660
        assert stat.S_IMODE(os.stat(address.parent).st_mode) == 0o750
    assert not address.exists(), "stop() removes the socket"


def test_stop_releases_connected_clients(address: Path) -> None:
    server_cm = running_server(address)
    server_cm.__enter__()
    cl = luxi.Client(str(address), timeout=WAIT)
    assert cl.query_jobs(None, ["id"]) == []
    server_cm.__exit__(None, None, None)
    with pytest.raises(errors.NoMasterError):
        cl.query_jobs(None, ["id"])


# --- client -----------------------------------------------------------------------------


def test_client_no_master_when_socket_missing(tmp_path: Path) -> None:
    with pytest.raises(errors.NoMasterError):
        luxi.Client(str(tmp_path / "nope"), timeout=WAIT).query_jobs(None, ["id"])


def test_client_no_master_when_refused(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the file stays, nobody listens
    with pytest.raises(errors.NoMasterError):
        luxi.Client(str(path), timeout=WAIT).query_cluster_info()


def test_client_survives_master_restart(address: Path) -> None:
    queue = FakeQueue()
    cl = luxi.Client(str(address), timeout=WAIT)
    with running_server(address, queue):
        assert cl.query_jobs(None, ["id"]) == []
    with running_server(address, queue):
        # the old connection is dead; the request never reached anyone, so even a
        # submission is simply sent again on a new connection
        assert cl.submit_job([opcodes.OpTestDelay.create(duration=0)]) == 1
        assert list(queue.jobs) == [1]
        assert cl.query_jobs(None, ["id"]) == [[1]]
    cl.close()


class _AnswerOnce:
    """A raw server that reads every request; it drops the first connection after
    answering one request, and never answers a submission."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(5)
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            count += 1
            answered = 0
            with conn:
                stream = luxi.MessageStream(conn)
                while True:
                    try:
                        raw = stream.recv_raw()
                    except errors.GenericError:
                        break
                    if raw is None:
                        break
                    self.requests.append(luxi.parse_request(raw)[0])
                    if (count == 1 and answered == 1) or \
                            self.requests[-1] == luxi.REQ_SUBMIT_JOB:
                        break  # drop the connection without answering
                    stream.send(luxi.format_response(True, []))
                    answered += 1

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(WAIT)


def test_client_repeats_only_idempotent_calls_after_lost_answer(tmp_path: Path) -> None:
    server = _AnswerOnce(tmp_path / "s")
    try:
        cl = luxi.Client(str(tmp_path / "s"), timeout=WAIT)
        assert cl.query_jobs(None, ["id"]) == []
        # the connection dies after reading the query: it is repeated on a new one
        assert cl.query_jobs(None, ["id"]) == []
        assert server.requests == ["QueryJobs"] * 3
        # a submission whose answer is lost must not be sent twice
        with pytest.raises(errors.ConnectionClosedError):
            cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
        assert server.requests.count("SubmitJob") == 1
        cl.close()
    finally:
        server.close()


def test_client_default_address_follows_root(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("GANETI_ROOT", str(tmp_path))
    assert luxi.Client().address == str(tmp_path / "var/run/ganeti/socket/ganeti-master")


def test_long_socket_path(tmp_path: Path) -> None:
    address = tmp_path / ("d" * 60) / ("e" * 60) / "ganeti-master"
    assert len(str(address)) > 108
    with running_server(address), luxi.Client(str(address), timeout=WAIT) as cl:
        assert cl.query_jobs(None, ["id"]) == []
        assert stat.S_IMODE(os.stat(address).st_mode) == 0o660


def _finish_job_when_waited(queue: FakeQueue, status: str, result: Any) -> threading.Thread:
    def finish() -> None:
        with queue.cond:
            assert queue.cond.wait_for(lambda: queue.waiters == 1, WAIT)
        queue.update(1, status, result=result)

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


def test_query_exports_runs_backup_query_job(address: Path) -> None:
    queue = FakeQueue()
    with running_server(address, queue), luxi.Client(str(address), timeout=WAIT) as cl:
        thread = _finish_job_when_waited(queue, constants.OP_STATUS_SUCCESS,
                                         {"node1": ["inst1"]})
        assert cl.query_exports(["node1"], False) == {"node1": ["inst1"]}
        thread.join(WAIT)
        op = queue.jobs[1].ops[0]
        assert isinstance(op, opcodes.OpBackupQuery) and op.nodes == ["node1"]


def test_query_exports_reports_job_error(address: Path) -> None:
    queue = FakeQueue()
    err = errors.encode(errors.OpPrereqError("No LU for OP_BACKUP_QUERY", errors.ECODE_INVAL))
    with running_server(address, queue), luxi.Client(str(address), timeout=WAIT) as cl:
        thread = _finish_job_when_waited(queue, constants.OP_STATUS_ERROR, err)
        with pytest.raises(errors.OpPrereqError, match="No LU"):
            cl.query_exports([], True)
        thread.join(WAIT)
