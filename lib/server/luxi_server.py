"""The master's LUXI server: a threaded Unix-socket server and its method table.

One thread per client connection.  Every request goes through a declarative
table (method name -> handler and argument checks), so no input can reach a
handler unchecked.  Envelope or argument errors get an error reply and the
connection is closed; errors raised by handlers are returned typed and the
connection stays usable.

At most ``--max-connections`` connections, with the limits every server
shares (:mod:`ganeti.server.connlimit`): idle and request timeouts, a memory
budget for unfinished requests, backoff when out of descriptors.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from ganeti import constants, errors, limits, luxi, opcodes, query
from ganeti.server import connlimit

LOG = logging.getLogger(__name__)



class JobQueueLike(Protocol):
    def submit_job(self, ops: list[opcodes.OpCode]) -> int: ...
    def submit_job_to_drained_queue(self, ops: list[opcodes.OpCode]) -> int: ...
    def submit_many_jobs(self, jobs: list[list[opcodes.OpCode]]) -> list[tuple[bool, Any]]: ...
    def cancel_job(self, job_id: int) -> tuple[bool, str]: ...
    def change_job_priority(self, job_id: int, priority: int) -> tuple[bool, str]: ...
    def archive_job(self, job_id: int) -> bool: ...
    def auto_archive_jobs(self, age: float, timeout: float) -> tuple[int, int]: ...
    def query_jobs(self, job_ids: list[int] | None,
                   fields: list[str]) -> list[list[Any] | None]: ...
    def wait_for_job_change(self, job_id: int, fields: list[str], prev_job_info: Any,
                            prev_log_serial: Any, timeout: float) -> Any: ...
    def set_drain_flag(self, flag: bool) -> None: ...
    def get_drain_flag(self) -> bool: ...


# --- argument checks ------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    name: str
    check: Callable[[Any], bool]
    description: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_job_seconds(v: Any) -> bool:
    """Ages and timeouts of AutoArchiveJobs, bounded by limits.JOB_AGE."""
    return _is_number(v) and limits.JOB_AGE.minimum <= v <= limits.JOB_AGE.maximum


_JOB_SECONDS = f"seconds in {limits.JOB_AGE.minimum}..{limits.JOB_AGE.maximum}"


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_ops(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


JOB_ID = Arg("job_id", _is_int, "a job id (integer)")
FIELDS = Arg("fields", _is_str_list, "a list of field names")
OPS = Arg("ops", _is_ops, "a non-empty list of opcode dicts")


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


@dataclass(frozen=True)
class Method:
    handler: Callable[..., Any]
    args: tuple[Arg, ...]


def validate_args(name: str, method: Method, args: list[Any]) -> None:
    if len(args) != len(method.args):
        raise errors.OpPrereqError(
            f"{name} takes {len(method.args)} argument(s), got {len(args)}", errors.ECODE_INVAL)
    for value, spec in zip(args, method.args, strict=True):
        if not spec.check(value):
            raise errors.OpPrereqError(
                f"{name}: argument '{spec.name}' must be {spec.description},"
                f" got {value!r:.80}", errors.ECODE_INVAL)


# --- handlers ------------------------------------------------------------------------


class MasterBackend:
    """What the LUXI methods act on: the job queue and (optionally) the context.

    Also the ``source`` handed to query data sources (``.queue``, ``.context``).
    """

    def __init__(self, queue: JobQueueLike, context: Any = None) -> None:
        self.queue = queue
        self.context = context

    # jobs
    def submit_job(self, ops: list[dict[str, Any]]) -> int:
        return self.queue.submit_job([opcodes.from_dict(op) for op in ops])

    def submit_job_to_drained_queue(self, ops: list[dict[str, Any]]) -> int:
        return self.queue.submit_job_to_drained_queue([opcodes.from_dict(op) for op in ops])

    def submit_many_jobs(self, jobs: list[list[dict[str, Any]]]) -> list[Any]:
        decoded = [[opcodes.from_dict(op) for op in ops] for ops in jobs]
        return [[ok, val] for ok, val in self.queue.submit_many_jobs(decoded)]

    def wait_for_job_change(self, job_id: int, fields: list[str], prev_job_info: Any,
                            prev_log_serial: Any, timeout: float) -> Any:
        timeout = max(0.0, min(float(timeout), luxi.WFJC_MAX_TIMEOUT))
        return self.queue.wait_for_job_change(job_id, fields, prev_job_info,
                                              prev_log_serial, timeout)

    def cancel_job(self, job_id: int) -> Any:
        return list(self.queue.cancel_job(job_id))

    def archive_job(self, job_id: int) -> bool:
        return bool(self.queue.archive_job(job_id))

    def auto_archive_jobs(self, age: float, timeout: float) -> Any:
        return list(self.queue.auto_archive_jobs(age, timeout))

    def change_job_priority(self, job_id: int, priority: int) -> Any:
        if not constants.OP_PRIO_HIGHEST <= priority <= constants.OP_PRIO_LOWEST:
            raise errors.OpPrereqError(f"Invalid priority {priority}", errors.ECODE_INVAL)
        return list(self.queue.change_job_priority(job_id, priority))

    def query_jobs(self, job_ids: list[int] | None, fields: list[str]) -> Any:
        return self.queue.query_jobs(job_ids, fields)

    def set_drain_flag(self, flag: bool) -> bool:
        self.queue.set_drain_flag(flag)
        return True

    # queries
    def query(self, what: str, fields: list[str], qfilter: Any) -> Any:
        return query.query(what, fields, qfilter, source=self)

    def query_fields(self, what: str, fields: list[str] | None) -> Any:
        return query.query_fields(what, fields)

    def query_exports(self, nodes: list[str], use_locking: bool) -> Any:
        """Run an OpBackupQuery job and hand back its result as if it were ours."""
        op = opcodes.OpBackupQuery.create(nodes=nodes, use_locking=use_locking)
        job_id = self.queue.submit_job([op])
        return wait_for_job_result(self.queue, job_id, luxi.QUERY_EXPORTS_TIMEOUT)[0]

    def _cfg(self) -> Any:
        if self.context is None:
            raise errors.OpPrereqError("No cluster configuration loaded", errors.ECODE_STATE)
        return self.context.cfg

    def query_cluster_info(self) -> dict[str, Any]:
        cfg = self._cfg()
        info = cfg.get_cluster_info()
        data = info.model_dump(mode="json") if hasattr(info, "model_dump") else dict(vars(info))
        data.setdefault("master", cfg.get_master_node_name())
        data["drain_flag"] = self.queue.get_drain_flag()
        return dict(data)

    def query_config_values(self, fields: list[str]) -> list[Any]:
        info = self.query_cluster_info()
        known = {"cluster_name", "master_node", "drain_flag", "master"}
        out = []
        for name in fields:
            if name == "master_node":
                out.append(info.get("master"))
            elif name in info or name in known:
                out.append(info.get(name))
            else:
                raise errors.OpPrereqError(f"Unknown config value '{name}'", errors.ECODE_INVAL)
        return out


def wait_for_job_result(queue: JobQueueLike, job_id: int, timeout: float) -> list[Any]:
    """Block until a job finishes; return its opresults or raise its error."""
    deadline = time.monotonic() + timeout
    prev: Any = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise errors.OpExecError(f"Timeout waiting for job {job_id}")
        change = queue.wait_for_job_change(job_id, ["status"], prev, None, min(left, 10.0))
        if change is None:
            raise errors.JobLost(f"Job {job_id} disappeared")
        if change != luxi.JOB_NOTCHANGED:
            prev = change[0]
            if prev[0] in constants.JOBS_FINALIZED:
                break
    return luxi.job_results(job_id, queue.query_jobs([job_id], luxi.RESULT_FIELDS),
                            "disappeared")


def build_method_table(backend: MasterBackend) -> dict[str, Method]:
    """The declarative LUXI table: name -> handler with its argument checks."""
    b = backend
    return {
        luxi.REQ_SUBMIT_JOB: Method(b.submit_job, (OPS,)),
        luxi.REQ_SUBMIT_JOB_TO_DRAINED_QUEUE: Method(b.submit_job_to_drained_queue, (OPS,)),
        luxi.REQ_SUBMIT_MANY_JOBS: Method(b.submit_many_jobs, (
            Arg("jobs", lambda v: isinstance(v, list) and all(_is_ops(j) for j in v),
                "a list of opcode lists"),)),
        luxi.REQ_WAIT_FOR_JOB_CHANGE: Method(b.wait_for_job_change, (
            JOB_ID, FIELDS,
            Arg("prev_job_info", _opt(lambda v: isinstance(v, list)), "a list or null"),
            Arg("prev_log_serial", _opt(_is_int), "an integer or null"),
            Arg("timeout", _is_number, "a number of seconds"))),
        luxi.REQ_CANCEL_JOB: Method(b.cancel_job, (JOB_ID,)),
        luxi.REQ_ARCHIVE_JOB: Method(b.archive_job, (JOB_ID,)),
        luxi.REQ_AUTO_ARCHIVE_JOBS: Method(b.auto_archive_jobs, (
            Arg("age", _is_job_seconds, f"an age in {_JOB_SECONDS} (-1: all)"),
            Arg("timeout", _is_job_seconds, f"a timeout in {_JOB_SECONDS}"))),
        luxi.REQ_CHANGE_JOB_PRIORITY: Method(b.change_job_priority, (
            JOB_ID, Arg("priority", _is_int, "an integer priority"))),
        luxi.REQ_QUERY_JOBS: Method(b.query_jobs, (
            Arg("job_ids", _opt(lambda v: isinstance(v, list) and all(_is_int(x) for x in v)),
                "a list of job ids or null"), FIELDS)),
        luxi.REQ_QUERY: Method(b.query, (
            Arg("what", lambda v: isinstance(v, str), "a resource name"), FIELDS,
            Arg("qfilter", _opt(lambda v: isinstance(v, list)), "a filter list or null"))),
        luxi.REQ_QUERY_FIELDS: Method(b.query_fields, (
            Arg("what", lambda v: isinstance(v, str), "a resource name"),
            Arg("fields", _opt(_is_str_list), "a list of field names or null"))),
        luxi.REQ_QUERY_EXPORTS: Method(b.query_exports, (
            Arg("nodes", _is_str_list, "a list of node names"),
            Arg("use_locking", lambda v: isinstance(v, bool), "a boolean"))),
        luxi.REQ_QUERY_CLUSTER_INFO: Method(b.query_cluster_info, ()),
        luxi.REQ_QUERY_CONFIG_VALUES: Method(b.query_config_values, (FIELDS,)),
        luxi.REQ_SET_DRAIN_FLAG: Method(b.set_drain_flag, (
            Arg("flag", lambda v: isinstance(v, bool), "a boolean"),)),
    }


# --- the server -----------------------------------------------------------------------


class _BadRequest(Exception):
    """Internal: the request itself was invalid; reply, then drop the connection."""

    def __init__(self, err: errors.GenericError) -> None:
        super().__init__(err)
        self.err = err


DEFAULT_LIMITS = connlimit.Limits(
    max_connections=constants.LUXI_MAX_CONNECTIONS,
    idle_timeout=constants.LUXI_IDLE_TIMEOUT,
    request_timeout=constants.LUXI_REQUEST_TIMEOUT,
    max_buffered=constants.LUXI_MAX_BUFFERED)
# the limits masterd takes from its command line
OPTION_FIELDS = ("max_connections", "idle_timeout", "request_timeout", "max_buffered")


class LuxiServer:
    """Accepts connections on a Unix socket; one handler thread per client."""

    def __init__(self, address: Path, methods: dict[str, Method],
                 max_message: int = constants.LUXI_MAX_MESSAGE,
                 limits: connlimit.Limits = DEFAULT_LIMITS) -> None:
        self.address = Path(address)
        self.methods = methods
        self.max_message = max_message
        self.limits = limits
        self.gate = connlimit.ConnectionGate("LUXI server", limits, LOG)
        self.budget = connlimit.ByteBudget(limits.max_buffered) if limits.max_buffered \
            else None
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._accept_thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # lifecycle
    def start(self) -> None:
        """Bind (mode 0660, directory 0750) and start accepting in a thread."""
        parent = self.address.parent
        parent.mkdir(parents=True, exist_ok=True)
        os.chmod(parent, 0o750)
        tmp = parent / f".{self.address.name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with luxi.short_unix_path(str(tmp)) as bind_path:
                sock.bind(bind_path)
            # chmod before the socket becomes visible under its real name
            os.chmod(tmp, 0o660)
            os.replace(tmp, self.address)
            sock.listen(128)
        except BaseException:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise
        self._listener = sock
        self._wake_r, self._wake_w = os.pipe()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="luxi-accept",
                                               daemon=True)
        self._accept_thread.start()
        LOG.info("LUXI server listening on %s", self.address)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, drop every connection and remove the socket."""
        if self._listener is None:
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        self._listener.close()
        self._listener = None
        try:
            self.address.unlink()
        except FileNotFoundError:
            pass
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        os.close(self._wake_r)
        os.close(self._wake_w)
        LOG.info("LUXI server stopped")

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                events = sel.select()
                if self._stopping.is_set():
                    break
                if not any(key.fileobj is listener for key, _ in events):
                    continue
                accepted = self.gate.accept(listener, self._stopping.wait)
                if accepted is None:
                    continue
                conn = accepted[0]
                slot = self.gate.admit(conn)
                if slot is None:
                    self._refuse(conn, errors.ServerBusyError(self.gate.busy_message()))
                    continue
                thread = threading.Thread(target=self._serve_client, args=(conn, slot),
                                          name="luxi-client", daemon=True)
                with self._lock:
                    self._conns.add(conn)
                    self._threads.add(thread)
                if not self.gate.start(thread, slot):
                    with self._lock:
                        self._conns.discard(conn)
                        self._threads.discard(thread)
                    self._refuse(conn, errors.ServerBusyError(
                        "The master daemon cannot start a thread for this connection;"
                        " try again later"))

    @staticmethod
    def _refuse(conn: socket.socket, err: errors.GenericError) -> None:
        """Say why (without blocking the accept loop) and close."""
        try:
            conn.setblocking(False)
            conn.send(luxi.encode_message(luxi.format_response(False, errors.encode(err))))
        except OSError:
            pass
        finally:
            conn.close()

    # one connection
    def _serve_client(self, conn: socket.socket, slot: connlimit.Slot) -> None:
        guarded = connlimit.GuardedConnection(conn, self.limits, self.budget)
        stream = luxi.MessageStream(cast(socket.socket, guarded), self.max_message)
        try:
            while not self._stopping.is_set():
                self.gate.set_reading(slot, True)
                try:
                    raw = stream.recv_raw()
                except errors.ConnectionClosedError:
                    LOG.debug("client disconnected mid-message")
                    break
                except (errors.ProtocolError, errors.ServerBusyError) as err:
                    self.gate.log.log(logging.WARNING, "refused-request",
                                      "LUXI request refused: %s", err)
                    self._reply(stream, False, errors.encode(err))
                    break
                except TimeoutError as err:
                    self.gate.log.log(logging.INFO, "timeout",
                                      "LUXI connection closed: %s", err)
                    if guarded.in_request:  # half-written: tell the client why
                        self._reply(stream, False, errors.encode(errors.TimeoutError(
                            f"LUXI {err} (--request-timeout)")))
                    break
                guarded.request_done()
                if raw is None:
                    break
                self.gate.set_reading(slot, False)
                try:
                    result = self.handle_request(raw)
                except _BadRequest as bad:
                    LOG.info("bad LUXI request: %s", bad.err)
                    self._reply(stream, False, errors.encode(bad.err))
                    break
                except errors.GenericError as err:
                    self._reply(stream, False, errors.encode(err))
                    continue
                except Exception as err:  # never let a handler bug kill the thread silently
                    LOG.exception("internal error in LUXI handler")
                    self._reply(stream, False, errors.encode(err))
                    continue
                if not self._reply(stream, True, result):
                    break
        except OSError as err:
            LOG.debug("client connection error: %s", err)
        finally:
            guarded.release()
            self.gate.release(slot)  # before closing: eviction shuts the socket down
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())
            conn.close()

    def _reply(self, stream: luxi.MessageStream, success: bool, result: Any) -> bool:
        try:
            stream.send(luxi.format_response(success, result))
        except (TypeError, ValueError) as err:
            LOG.error("unserialisable LUXI result: %s", err)
            return self._reply(stream, False, errors.encode(
                errors.ProgrammerError(f"Result cannot be serialised: {err}")))
        except OSError as err:
            LOG.debug("could not send reply: %s", err)
            return False
        return True

    def handle_request(self, raw: bytes) -> Any:
        try:
            name, args, version = luxi.parse_request(raw)
        except errors.ProtocolError as err:
            raise _BadRequest(err) from None
        if version is not None and version != constants.LUXI_VERSION:
            raise _BadRequest(errors.ProtocolError(
                f"LUXI version mismatch: server {constants.LUXI_VERSION}, client {version}"))
        method = self.methods.get(name)
        if method is None:
            raise _BadRequest(errors.ProtocolError(f"Unknown LUXI method '{name}'"))
        try:
            validate_args(name, method, args)
        except errors.OpPrereqError as err:
            raise _BadRequest(err) from None
        LOG.debug("LUXI request %s", name)
        return method.handler(*args)
