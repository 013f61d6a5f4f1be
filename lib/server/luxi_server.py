"""The master's LUXI server: a threaded Unix-socket server in front of the method table.

One thread per client connection.  Every request goes through the method
table (:mod:`ganeti.server.luxi_methods`: name -> handler and argument
checks), so no input can reach a handler unchecked.  Envelope or argument
errors get an error reply and the connection is closed; errors raised by
handlers are returned typed and the connection stays usable.

At most ``--max-connections`` connections, with the limits every server
shares (:mod:`ganeti.server.connlimit`): idle and request timeouts, a memory
budget for unfinished requests, backoff when out of descriptors.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from pathlib import Path
from typing import Any, cast

from ganeti import constants, errors, luxi
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
            checked = validate_args(name, method, args)
        except errors.OpPrereqError as err:
            raise _BadRequest(err) from None
        LOG.debug("LUXI request %s", name)
        return method.handler(*checked)
