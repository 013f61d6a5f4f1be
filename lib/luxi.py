"""LUXI: the JSON protocol between command-line clients and the master daemon.

Each message is one JSON document followed by the byte 0x03 (ETX).  JSON never
contains a raw control character (they are escaped), so ETX is a safe
terminator.  Both sides refuse messages larger than ``LUXI_MAX_MESSAGE`` while
reading, so a misbehaving peer cannot make us buffer without bound.

The protocol and the method reference: doc/luxi.md.  The methods themselves
are defined once, by the server's table (:mod:`ganeti.server.luxi_methods`);
the typed :class:`Client` methods mirror it (a unit test checks they agree).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ganeti import constants, errors, pathutils, serializer

if TYPE_CHECKING:
    # only for annotations: importing opcodes (pydantic) costs a client ~0.4 s
    from ganeti.opcodes import OpCode

# Method names (the wire protocol spells them in CamelCase)
REQ_SUBMIT_JOB = "SubmitJob"
REQ_SUBMIT_JOB_TO_DRAINED_QUEUE = "SubmitJobToDrainedQueue"
REQ_SUBMIT_MANY_JOBS = "SubmitManyJobs"
REQ_WAIT_FOR_JOB_CHANGE = "WaitForJobChange"
REQ_CANCEL_JOB = "CancelJob"
REQ_ARCHIVE_JOB = "ArchiveJob"
REQ_AUTO_ARCHIVE_JOBS = "AutoArchiveJobs"
REQ_CHANGE_JOB_PRIORITY = "ChangeJobPriority"
REQ_QUERY_JOBS = "QueryJobs"
REQ_QUERY = "Query"
REQ_QUERY_FIELDS = "QueryFields"
REQ_QUERY_EXPORTS = "QueryExports"
REQ_QUERY_CLUSTER_INFO = "QueryClusterInfo"
REQ_QUERY_CONFIG_VALUES = "QueryConfigValues"
REQ_SET_DRAIN_FLAG = "SetDrainFlag"
REQ_QUERY_INSTANCES = "QueryInstances"
REQ_QUERY_NODES = "QueryNodes"
REQ_QUERY_GROUPS = "QueryGroups"
REQ_QUERY_NETWORKS = "QueryNetworks"
REQ_QUERY_TAGS = "QueryTags"

# Safe to resend after the connection dropped: repeating them changes nothing.
IDEMPOTENT_METHODS = frozenset({
    REQ_WAIT_FOR_JOB_CHANGE, REQ_QUERY_JOBS, REQ_QUERY, REQ_QUERY_FIELDS,
    REQ_QUERY_EXPORTS, REQ_QUERY_CLUSTER_INFO, REQ_QUERY_CONFIG_VALUES,
    REQ_SET_DRAIN_FLAG, REQ_QUERY_INSTANCES, REQ_QUERY_NODES, REQ_QUERY_GROUPS,
    REQ_QUERY_NETWORKS, REQ_QUERY_TAGS,
})

KEY_METHOD = "method"
KEY_ARGS = "args"
KEY_VERSION = "version"
KEY_SUCCESS = "success"
KEY_RESULT = "result"

# WaitForJobChange answer when nothing changed within the timeout
JOB_NOTCHANGED = "nochange"
# Longest a single WaitForJobChange blocks in the server (clients simply poll again)
WFJC_MAX_TIMEOUT = 30.0
# How long the server's QueryExports waits for its OpBackupQuery job
QUERY_EXPORTS_TIMEOUT = 300.0

_RECV_CHUNK = 64 * 1024


def encode_message(obj: Any) -> bytes:
    """Serialise one message including its terminator."""
    data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")
    return data + constants.LUXI_EOM


class MessageStream:
    """Splits a byte stream into ETX-terminated messages with a size limit."""

    def __init__(self, sock: socket.socket,
                 max_message: int = constants.LUXI_MAX_MESSAGE) -> None:
        self.sock = sock
        self.max_message = max_message
        self._buffer = bytearray()

    def send(self, obj: Any) -> None:
        self.sock.sendall(encode_message(obj))

    def recv_raw(self) -> bytes | None:
        """Next message without its terminator, or None on a clean EOF.

        Raises ConnectionClosedError when the peer disconnects mid-message and
        ProtocolError when the message exceeds the limit.
        """
        while True:
            idx = self._buffer.find(constants.LUXI_EOM)
            if idx >= 0:
                if idx > self.max_message:
                    raise errors.ProtocolError(
                        f"Message too large (limit {self.max_message} bytes)")
                msg = bytes(self._buffer[:idx])
                del self._buffer[:idx + 1]
                return msg
            if len(self._buffer) > self.max_message:
                raise errors.ProtocolError(
                    f"Message too large (limit {self.max_message} bytes)")
            # never read more than the limit allows us to hold
            want = min(_RECV_CHUNK, self.max_message + 1 - len(self._buffer))
            chunk = self.sock.recv(max(want, 1))
            if not chunk:
                if self._buffer:
                    raise errors.ConnectionClosedError(
                        "Connection closed in the middle of a message")
                return None
            self._buffer += chunk

    def recv(self) -> Any:
        """Next message decoded from JSON (None on clean EOF is an error here)."""
        raw = self.recv_raw()
        if raw is None:
            raise errors.ConnectionClosedError("Connection closed by peer")
        return parse_json(raw)


# sun_path holds 108 bytes; deeper paths go through a directory file descriptor
_MAX_UNIX_PATH = 100


@contextmanager
def short_unix_path(path: str) -> Iterator[str]:
    """A path usable for bind/connect even when ``path`` is too long for AF_UNIX."""
    if len(os.fsencode(path)) < _MAX_UNIX_PATH:
        yield path
        return
    dirfd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{dirfd}/{os.path.basename(path)}"
    finally:
        os.close(dirfd)


def parse_json(raw: bytes) -> Any:
    try:
        return serializer.load_json(raw)
    except errors.ParseError as err:
        raise errors.ProtocolError(str(err.args[0])) from None


def parse_request(raw: bytes) -> tuple[str, list[Any], int | None]:
    """Validate the envelope of a request: (method, args, version)."""
    msg = parse_json(raw)
    if not isinstance(msg, dict):
        raise errors.ProtocolError(f"Request must be a JSON object, got {type(msg).__name__}")
    method = msg.get(KEY_METHOD)
    args = msg.get(KEY_ARGS)
    version = msg.get(KEY_VERSION)
    if not isinstance(method, str):
        raise errors.ProtocolError("Request has no method name")
    if not isinstance(args, list):
        raise errors.ProtocolError("Request arguments must be a list")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise errors.ProtocolError("Request version must be an integer")
    return method, args, version


def format_request(method: str, args: Sequence[Any]) -> dict[str, Any]:
    return {KEY_METHOD: method, KEY_ARGS: list(args), KEY_VERSION: constants.LUXI_VERSION}


def format_response(success: bool, result: Any) -> dict[str, Any]:
    return {KEY_SUCCESS: success, KEY_RESULT: result}


def parse_response(msg: Any) -> Any:
    """Return the result of a response or raise the error it carries."""
    if not isinstance(msg, dict) or not isinstance(msg.get(KEY_SUCCESS), bool) \
            or KEY_RESULT not in msg:
        raise errors.ProtocolError(f"Invalid response from master: {msg!r:.200}")
    if msg[KEY_SUCCESS]:
        return msg[KEY_RESULT]
    raise errors.decode(msg[KEY_RESULT])


def _op_to_wire(op: OpCode | dict[str, Any]) -> dict[str, Any]:
    # an opcode object serialises itself; a dict is sent as it is (the master validates)
    return dict(op) if isinstance(op, dict) else op.to_dict()


def job_failure(job_id: int, status: str, opstatus: Sequence[str],
                opresult: Sequence[Any]) -> errors.GenericError:
    """The error a finished, unsuccessful job reports (as the CLI shows it)."""
    if status == constants.OP_STATUS_CANCELED:
        return errors.JobCanceled(f"Job {job_id} was canceled")
    for st, res in zip(opstatus, opresult, strict=False):
        if st == constants.OP_STATUS_ERROR:
            if isinstance(res, (list, tuple)) and len(res) == 2 and isinstance(res[0], str):
                return errors.decode(res)
            return errors.OpExecError(str(res))
    return errors.OpExecError(f"Job {job_id} finished with status {status}")


# the QueryJobs fields job_results() reads
RESULT_FIELDS = ["status", "opstatus", "opresult"]


def job_results(job_id: int, rows: Sequence[Any], missing: str) -> list[Any]:
    """Opcode results of a finished job from its RESULT_FIELDS row; its error otherwise."""
    if not rows or rows[0] is None:
        raise errors.JobLost(f"Job {job_id} {missing}")
    status, opstatus, opresult = rows[0]
    if status == constants.OP_STATUS_SUCCESS:
        return list(opresult)
    raise job_failure(job_id, status, opstatus, opresult)


# A Unix socket whose backlog is full refuses a connect with EAGAIN at once
# (the master is busy accepting, e.g. under a flood): try again for a while
_CONNECT_RETRY = 0.01


def _connect_patiently(sock: socket.socket, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(_CONNECT_RETRY)


def _pending_refusal(sock: socket.socket, stream: MessageStream) -> errors.GenericError | None:
    """The error reply a server sent before closing on us, if one is waiting."""
    try:
        sock.setblocking(False)
        raw = stream.recv_raw()
        msg = parse_json(raw) if raw is not None else None
        if isinstance(msg, dict) and msg.get(KEY_SUCCESS) is False:
            return errors.decode(msg.get(KEY_RESULT))
    except (OSError, errors.GenericError):
        pass
    return None


class _SendFailed(Exception):
    """Internal: the request could not be sent, so the server never saw it."""


class Client:
    """A LUXI client keeping one connection to the master daemon.

    A request that cannot even be sent on an old connection (the master
    restarted between two calls) is resent on a fresh one; a request whose
    answer was lost is repeated only when repeating it is harmless.
    """

    def __init__(self, address: str | None = None, timeout: float = 60) -> None:
        self.address = address or str(pathutils.current().master_socket)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._stream: MessageStream | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> MessageStream:
        if self._stream is not None:
            return self._stream
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with short_unix_path(self.address) as path:
                _connect_patiently(sock, path, self.timeout)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            sock.close()
            raise errors.NoMasterError(
                f"Master daemon is not running (socket {self.address}: {err.strerror})"
            ) from None
        except PermissionError as err:
            sock.close()
            raise errors.PermissionError(
                f"Not allowed to talk to the master at {self.address}: {err.strerror}"
            ) from None
        except OSError as err:
            sock.close()
            raise errors.NoMasterError(f"Cannot connect to {self.address}: {err}") from None
        self._sock = sock
        self._stream = MessageStream(sock)
        return self._stream

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._stream = None

    def _exchange(self, request: dict[str, Any], timeout: float | None) -> Any:
        stream = self._connect()
        assert self._sock is not None
        self._sock.settimeout(max(self.timeout, timeout or 0))
        try:
            try:
                stream.send(request)
            except (BrokenPipeError, ConnectionResetError) as err:
                # the server only acts on complete messages: nothing happened;
                # it may have said why it closed (a limit reached)
                refusal = _pending_refusal(self._sock, stream)
                if refusal is not None:
                    raise refusal from None
                raise _SendFailed(str(err)) from None
            return stream.recv()
        except BaseException:
            self.close()
            raise

    def call_method(self, method: str, args: Sequence[Any],
                    timeout: float | None = None) -> Any:
        """Send one request; ``timeout`` extends the socket timeout for long calls."""
        request = format_request(method, args)
        was_connected = self._stream is not None
        for attempt in (1, 2):
            retry_ok = was_connected and attempt == 1
            try:
                response = self._exchange(request, timeout)
                break
            except _SendFailed as err:
                # a stale connection (e.g. the master restarted): safe to resend anything
                if not retry_ok:
                    raise errors.ConnectionClosedError(
                        f"Connection to master closed before {method} was sent: {err}"
                    ) from None
            except (errors.ConnectionClosedError, ConnectionError):
                # the request may have been processed: only repeat harmless ones
                if not (retry_ok and method in IDEMPOTENT_METHODS):
                    raise errors.ConnectionClosedError(
                        f"Connection to master closed during {method}") from None
            except TimeoutError:
                raise errors.TimeoutError(
                    f"Timeout waiting for the master's answer to {method}") from None
            except OSError as err:
                raise errors.ConnectionClosedError(f"Error talking to master: {err}") from None
        return parse_response(response)

    # --- one typed method per table entry (ganeti.server.luxi_methods.SPECS) ------

    # --- jobs ----------------------------------------------------------------

    def submit_job(self, ops: Iterable[OpCode | dict[str, Any]]) -> int:
        return int(self.call_method(REQ_SUBMIT_JOB, [[_op_to_wire(op) for op in ops]]))

    def submit_job_to_drained_queue(self, ops: Iterable[OpCode | dict[str, Any]]) -> int:
        return int(self.call_method(REQ_SUBMIT_JOB_TO_DRAINED_QUEUE,
                                    [[_op_to_wire(op) for op in ops]]))

    def submit_many_jobs(self, jobs: Iterable[Iterable[OpCode | dict[str, Any]]]
                         ) -> list[tuple[bool, Any]]:
        wire = [[_op_to_wire(op) for op in ops] for ops in jobs]
        return [(bool(ok), val) for ok, val in self.call_method(REQ_SUBMIT_MANY_JOBS, [wire])]

    def wait_for_job_change_once(self, job_id: int, fields: list[str],
                                 prev_job_info: list[Any] | None, prev_log_serial: int | None,
                                 timeout: float = 30) -> Any:
        """One long poll: ``"nochange"`` or ``[job_info, log_entries]`` (None: no job)."""
        return self.call_method(REQ_WAIT_FOR_JOB_CHANGE,
                                [job_id, fields, prev_job_info, prev_log_serial, timeout],
                                timeout=min(timeout, WFJC_MAX_TIMEOUT) + 30)

    def cancel_job(self, job_id: int, kill: bool = False) -> tuple[bool, str]:
        ok, msg = self.call_method(REQ_CANCEL_JOB, [job_id, kill])
        return bool(ok), str(msg)

    def archive_job(self, job_id: int) -> bool:
        return bool(self.call_method(REQ_ARCHIVE_JOB, [job_id]))

    def auto_archive_jobs(self, age: float, timeout: float) -> tuple[int, int]:
        count, left = self.call_method(REQ_AUTO_ARCHIVE_JOBS, [age, timeout])
        return int(count), int(left)

    def change_job_priority(self, job_id: int, priority: int) -> tuple[bool, str]:
        ok, msg = self.call_method(REQ_CHANGE_JOB_PRIORITY, [job_id, priority])
        return bool(ok), str(msg)

    def query_jobs(self, job_ids: list[int] | None, fields: list[str]) -> list[Any]:
        return list(self.call_method(REQ_QUERY_JOBS, [job_ids, fields]))

    def set_drain_flag(self, flag: bool) -> bool:
        return bool(self.call_method(REQ_SET_DRAIN_FLAG, [flag]))

    # --- queries ---------------------------------------------------------------

    def query(self, what: str, fields: list[str], qfilter: Any = None) -> dict[str, Any]:
        return dict(self.call_method(REQ_QUERY, [what, fields, qfilter]))

    def query_fields(self, what: str, fields: list[str] | None = None) -> dict[str, Any]:
        return dict(self.call_method(REQ_QUERY_FIELDS, [what, fields]))

    def query_exports(self, nodes: list[str], use_locking: bool = False) -> Any:
        return self.call_method(REQ_QUERY_EXPORTS, [nodes, use_locking],
                                timeout=QUERY_EXPORTS_TIMEOUT + 30)

    def query_cluster_info(self) -> dict[str, Any]:
        return dict(self.call_method(REQ_QUERY_CLUSTER_INFO, []))

    def query_config_values(self, fields: list[str]) -> list[Any]:
        return list(self.call_method(REQ_QUERY_CONFIG_VALUES, [fields]))

    def query_instances(self, names: list[str], fields: list[str],
                        use_locking: bool = False) -> list[list[Any]]:
        return list(self.call_method(REQ_QUERY_INSTANCES, [names, fields, use_locking]))

    def query_nodes(self, names: list[str], fields: list[str],
                    use_locking: bool = False) -> list[list[Any]]:
        return list(self.call_method(REQ_QUERY_NODES, [names, fields, use_locking]))

    def query_groups(self, names: list[str], fields: list[str],
                     use_locking: bool = False) -> list[list[Any]]:
        return list(self.call_method(REQ_QUERY_GROUPS, [names, fields, use_locking]))

    def query_networks(self, names: list[str], fields: list[str],
                       use_locking: bool = False) -> list[list[Any]]:
        return list(self.call_method(REQ_QUERY_NETWORKS, [names, fields, use_locking]))

    def query_tags(self, kind: str, name: str | None) -> list[str]:
        return list(self.call_method(REQ_QUERY_TAGS, [kind, name]))
