"""The master's LUXI server: a threaded Unix-socket server in front of the method table.

One thread per client connection.  Every request goes through the method
table (:mod:`ganeti.server.luxi_methods`: name -> handler and argument
checks), so no input can reach a handler unchecked.  A refused request (bad
envelope, unaccepted version, unknown method, bad arguments) and an error
raised by a handler get a typed error reply, and the connection stays usable:
clients such as Ganeti's retry on a closed connection as if the network had
failed.  Only a broken byte stream (a message over the size limit, a
half-written one) or a limit (memory budget, timeouts) ends the connection:
after those the start of the next message cannot be found.

One server may listen on several sockets (``ganeti-master`` and Ganeti 3.0's
``ganeti-query``): same methods, one set of connection limits.

At most ``--max-connections`` connections, with the limits every server
shares (:mod:`ganeti.server.connlimit`): idle and request timeouts, a memory
budget for unfinished requests, backoff when out of descriptors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from pathlib import Path
from typing import Any, cast

from ganeti import constants, errors, gc_pause, luxi
from ganeti.server import connlimit
from ganeti.server.luxi_methods import (
    JobQueueLike,
    MasterBackend,
    Method,
    build_method_table,
    validate_args,
    wait_for_job_result,
)

# the table lives in luxi_methods; these names stay importable from here
__all__ = ["DEFAULT_LIMITS", "OPTION_FIELDS", "JobQueueLike", "LuxiServer", "MasterBackend",
           "Method", "build_method_table", "validate_args", "wait_for_job_result"]

LOG = logging.getLogger(__name__)


# --- the server -----------------------------------------------------------------------


DEFAULT_LIMITS = connlimit.Limits(
    max_connections=constants.LUXI_MAX_CONNECTIONS,
    idle_timeout=constants.LUXI_IDLE_TIMEOUT,
    request_timeout=constants.LUXI_REQUEST_TIMEOUT,
    max_buffered=constants.LUXI_MAX_BUFFERED)
# the limits masterd takes from its command line
OPTION_FIELDS = ("max_connections", "idle_timeout", "request_timeout", "max_buffered")


def check_version(version: int | None) -> None:
    """Refuse a request from a LUXI version not in ``LUXI_ACCEPTED_VERSIONS``."""
    if version is not None and version not in constants.LUXI_ACCEPTED_VERSIONS:
        accepted = ", ".join(str(v) for v in sorted(constants.LUXI_ACCEPTED_VERSIONS))
        raise errors.ProtocolError(
            f"LUXI version mismatch: server accepts {accepted}, client {version}")


class LuxiServer:
    """Accepts connections on Unix sockets; one handler thread per client.

    ``address`` is the main socket; ``extra_addresses`` serve the same methods.
    """

    def __init__(self, address: Path, methods: dict[str, Method],
                 max_message: int = constants.LUXI_MAX_MESSAGE,
                 limits: connlimit.Limits = DEFAULT_LIMITS,
                 extra_addresses: tuple[Path, ...] = ()) -> None:
        self.address = Path(address)
        self.addresses = (self.address, *(Path(a) for a in extra_addresses))
        self.methods = methods
        self.max_message = max_message
        self.limits = limits
        self.gate = connlimit.ConnectionGate("LUXI server", limits, LOG)
        self.budget = connlimit.ByteBudget(limits.max_buffered) if limits.max_buffered \
            else None
        self._listeners: list[socket.socket] = []
        self._wake_r, self._wake_w = -1, -1
        self._accept_thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # lifecycle
    def start(self) -> None:
        """Bind every address (mode 0660, directory 0750) and start accepting in a thread."""
        try:
            for address in self.addresses:
                self._listeners.append(self._bind(address))
        except BaseException:
            self._close_listeners()
            raise
        self._wake_r, self._wake_w = os.pipe()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="luxi-accept",
                                               daemon=True)
        self._accept_thread.start()
        LOG.info("LUXI server listening on %s", ", ".join(map(str, self.addresses)))

    @staticmethod
    def _bind(address: Path) -> socket.socket:
        parent = address.parent
        parent.mkdir(parents=True, exist_ok=True)
        os.chmod(parent, 0o750)
        tmp = parent / f".{address.name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with luxi.short_unix_path(str(tmp)) as bind_path:
                sock.bind(bind_path)
            # chmod before the socket becomes visible under its real name
            os.chmod(tmp, 0o660)
            os.replace(tmp, address)
            sock.listen(128)
        except BaseException:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise
        return sock

    def _close_listeners(self) -> None:
        """Close the listening sockets and remove their files (only those we bound)."""
        for sock, address in zip(self._listeners, self.addresses, strict=False):
            sock.close()
            try:
                address.unlink()
            except FileNotFoundError:
                pass
        self._listeners = []

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, drop every connection and remove the sockets."""
        if not self._listeners:
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        self._close_listeners()
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
        listeners = list(self._listeners)
        with selectors.DefaultSelector() as sel:
            for listener in listeners:
                sel.register(listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                events = sel.select()
                if self._stopping.is_set():
                    break
                for key, _ in events:
                    if isinstance(key.fileobj, socket.socket):
                        self._accept_one(key.fileobj)

    def _accept_one(self, listener: socket.socket) -> None:
        accepted = self.gate.accept(listener, self._stopping.wait)
        if accepted is None:
            return
        conn = accepted[0]
        slot = self.gate.admit(conn)
        if slot is None:
            self._refuse(conn, errors.ServerBusyError(self.gate.busy_message()))
            return
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
                    method, args = self.parse_request(raw)
                    # a query's rows stay untraversed by the collector until sent
                    with gc_pause.paused() if method.rows else contextlib.nullcontext():
                        sent = self._reply(stream, True, method.handler(*args))
                except errors.GenericError as err:
                    if not self._reply(stream, False, errors.encode(err)):
                        break
                    continue
                except Exception as err:  # never let a handler bug kill the thread silently
                    LOG.exception("internal error in LUXI handler")
                    if not self._reply(stream, False, errors.encode(err)):
                        break
                    continue
                if not sent:
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
        """The result of one request; a refused one raises its typed error."""
        method, args = self.parse_request(raw)
        return method.handler(*args)

    def parse_request(self, raw: bytes) -> tuple[Method, list[Any]]:
        """The method a request calls and its checked arguments (or its typed error)."""
        try:
            name, args, version = luxi.parse_request(raw)
            check_version(version)
            method = self.methods.get(name)
            if method is None:
                raise errors.ProtocolError(f"Unknown LUXI method '{name}'")
            checked = validate_args(name, method, args)
        except errors.GenericError as err:
            LOG.info("LUXI request refused: %s", err)
            raise
        LOG.debug("LUXI request %s", name)
        return method, checked
