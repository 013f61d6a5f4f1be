"""A threaded HTTPS server with the connection limits of :mod:`ganeti.server.connlimit`.

Each connection runs in a thread of its own, TLS handshake included, so a
slow or hostile client never blocks the accept loop.  At most
``max_connections`` are served (a few more get a 503 from a small pool of
refusers, the rest are closed); a handshake, the wait for a request and the
reading of a started request (line, headers, body) each have a deadline.
"""

from __future__ import annotations

import argparse
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from ganeti import pathutils
from ganeti.server import connlimit

# Over-cap connections answered with a 503 at once; beyond these they are just closed
REFUSERS = 16
REFUSE_TIMEOUT = 2.0


def format_peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class TlsHttpServer(ThreadingHTTPServer):
    """HTTPS, one thread per connection, bounded by a :class:`connlimit.ConnectionGate`."""

    daemon_threads = True
    request_queue_size = 128
    thread_prefix = "https"  # names the threads: "<prefix>-conn", "<prefix>-refuse"

    def __init__(self, address: tuple[str, int], ssl_context: ssl.SSLContext,
                 handler_class: type[GuardedHandler], limits: connlimit.Limits,
                 name: str, logger: logging.Logger) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.ssl_context = ssl_context
        self.limits = limits
        self.log = logger
        self.gate = connlimit.ConnectionGate(name, limits, logger)
        self._active: set[ssl.SSLSocket] = set()
        self._active_lock = threading.Lock()
        self._refusers = threading.BoundedSemaphore(REFUSERS)
        self._slot = threading.local()  # the slot of the connection a thread serves
        super().__init__(address, handler_class)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def busy_body(self) -> tuple[bytes, str]:
        """(body, content type) of the 503 for a connection over the cap."""
        return self.gate.busy_message().encode(), "text/plain"

    def busy_reply(self) -> bytes:
        """The whole HTTP answer (status line included) for a connection over the cap."""
        body, content_type = self.busy_body()
        return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: %s\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (content_type.encode(), len(body), body))

    def connection_context(self) -> ssl.SSLContext:
        """The TLS context of a new connection (a subclass may reload its certificate)."""
        return self.ssl_context

    def get_request(self) -> tuple[Any, Any]:
        accepted = self.gate.accept(self.socket)
        if accepted is None:
            raise OSError("accept failed")  # socketserver skips this round
        return accepted

    def process_request(self, request: Any, client_address: Any) -> None:
        slot = self.gate.admit(request)
        if slot is None:
            self._refuse(request)
            return
        thread = threading.Thread(target=self._connection_thread,
                                  args=(request, client_address, slot),
                                  name=f"{self.thread_prefix}-conn", daemon=True)
        if not self.gate.start(thread, slot):
            self.shutdown_request(request)

    def _connection_thread(self, request: Any, client_address: Any,
                           slot: connlimit.Slot) -> None:
        # finish_request gives the slot back before it closes the socket; this
        # release only covers a failure before that
        self._slot.value = slot
        try:
            self.process_request_thread(request, client_address)
        finally:
            self._slot.value = None
            self.gate.release(slot)

    def set_reading(self, reading: bool) -> None:
        """The calling thread's connection waits for a request (evictable) or runs one."""
        slot = getattr(self._slot, "value", None)
        if slot is not None:
            self.gate.set_reading(slot, reading)

    def _refuse(self, request: socket.socket) -> None:
        if not self._refusers.acquire(blocking=False):
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self._send_busy, args=(request,),
                                  name=f"{self.thread_prefix}-refuse", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            self._refusers.release()
            self.shutdown_request(request)

    def _send_busy(self, request: socket.socket) -> None:
        try:
            tls = connlimit.tls_handshake(request, self.connection_context(),
                                          REFUSE_TIMEOUT, REFUSE_TIMEOUT)
            with tls:
                tls.sendall(self.busy_reply())
                # read (and drop) the request so closing does not reset the reply
                deadline = time.monotonic() + REFUSE_TIMEOUT
                while time.monotonic() < deadline and tls.recv(65536):
                    pass
        except (OSError, ValueError):
            pass
        finally:
            request.close()
            self._refusers.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        peer = format_peer(client_address)
        slot: connlimit.Slot | None = getattr(self._slot, "value", None)

        def wrapped(tls: ssl.SSLSocket) -> None:
            if slot is not None:
                self.gate.rebind(slot, tls)

        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = connlimit.tls_handshake(request, self.connection_context(),
                                          self.limits.handshake_timeout,
                                          self.limits.request_timeout, wrapped)
        except (ssl.SSLError, OSError) as err:
            self.gate.log.log(logging.WARNING, "handshake",
                              "TLS handshake with %s failed: %s", peer, err)
            if slot is not None:
                self.gate.release(slot)
            request.close()
            return
        with self._active_lock:
            self._active.add(tls)
        self.log.debug("Connection from %s", peer)
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        except (ssl.SSLError, OSError) as err:
            self.log.debug("Connection from %s ended: %s", peer, err)
        finally:
            if slot is not None:
                self.gate.release(slot)
            with self._active_lock:
                self._active.discard(tls)
            tls.close()

    def server_close(self) -> None:
        """Stop listening and drop open (kept-alive) connections too."""
        super().server_close()
        with self._active_lock:
            active = list(self._active)
        for tls in active:
            try:
                tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.log.exception("Error while serving %s", format_peer(client_address))


class GuardedHandler(BaseHTTPRequestHandler):
    """Waits up to the idle timeout for a request, then gives it the request deadline.

    The deadline covers the request line, the headers and (until
    :meth:`request_read`) the body; handling the request then takes as
    long as it takes.
    """

    protocol_version = "HTTP/1.1"
    server: TlsHttpServer
    _deadline: Any = None

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.debug("%s %s", format_peer(self.client_address), format % args)

    def handle_one_request(self) -> None:
        conn = self.connection
        limits = self.server.limits
        self.server.set_reading(True)
        if not conn.pending():  # clients here never pipeline: rfile holds nothing
            try:
                readable, _, _ = select.select([conn], [], [], limits.idle_timeout)
            except (OSError, ValueError):
                readable = []
            if not readable:
                self.server.log.debug("Closing idle connection from %s",
                                      format_peer(self.client_address))
                self.close_connection = True
                return
        deadline = self._deadline = connlimit.WATCHDOG.arm(conn, limits.request_timeout)
        try:
            super().handle_one_request()
        finally:
            self.request_read()
            if deadline.expired:
                self.close_connection = True
                self.server.gate.log.log(
                    logging.WARNING, "request-timeout", "Request from %s not complete"
                    " within %gs (--request-timeout), closed",
                    format_peer(self.client_address), limits.request_timeout)

    def request_read(self) -> None:
        """The request is in: what follows is not bound by the request deadline."""
        connlimit.WATCHDOG.cancel(self._deadline)
        self._deadline = None
        self.server.set_reading(False)


def daemon_parser(prog: str, description: str, default_port: int,
                  limits: connlimit.Limits, option_fields: Sequence[str]
                  ) -> argparse.ArgumentParser:
    """The command line every HTTPS daemon shares (noded, rapi)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="do not detach; also log to stderr")
    parser.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    parser.add_argument("--root", metavar="DIR", default=None,
                        help=f"cluster root directory (sets {pathutils.ROOT_ENV})")
    parser.add_argument("-b", "--bind", metavar="ADDR", default="0.0.0.0",
                        help="address to listen on (default: %(default)s)")
    parser.add_argument("-p", "--port", type=int, default=default_port,
                        help="TCP port, 0 for any free port (default: %(default)s)")
    connlimit.add_options(parser, limits, option_fields)
    return parser


def parse_daemon_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                      ) -> argparse.Namespace:
    opts = parser.parse_args(argv)
    if not 0 <= opts.port <= 65535:
        parser.error(f"invalid port {opts.port}")
    return opts


_Server = TypeVar("_Server", bound=TlsHttpServer)


def serve(make_server: Callable[[], _Server], opts: argparse.Namespace, thread_name: str,
          log: logging.Logger, stopped: str) -> tuple[_Server, Callable[[], None]]:
    """Listen (an address in use is named), accept in a thread; the server and its stop."""
    try:
        server = make_server()
    except OSError as err:
        raise OSError(err.errno, f"cannot listen on {opts.bind}:{opts.port}: {err}") from None
    threading.Thread(target=server.serve_forever, name=thread_name, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        log.info(stopped)
    return server, stop
