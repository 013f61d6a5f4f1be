"""Master side of the node RPC: parallel HTTPS calls with connection reuse.

``RpcRunner.call_<name>(nodes, *args)`` exists for every entry of
:data:`ganeti.rpc.defs.CALLS`: typed methods generated from the backend
procedures (:class:`ganeti.rpc.stubs.RpcStubs`), so mypy checks every call
site.  Multi-node calls return ``{node: RpcResult[payload]}``, single-node
calls one :class:`RpcResult`.  Every failure (offline node,
unknown node, refused connection, TLS error, timeout, remote error) ends up in
that node's result, so one bad node never hides the answers of the others.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

from ganeti import errors, pathutils, serializer
from ganeti.rpc import calltypes, defs
from ganeti.rpc.result import RpcResult
from ganeti.rpc.stubs import RpcStubs

LOG = logging.getLogger(__name__)

# Idle connections kept per node address (more concurrent calls open more)
MAX_IDLE_PER_NODE = 4
MAX_WORKERS = 256
# A node that does not answer the TCP/TLS handshake is down, whatever the call's timeout
CONNECT_TIMEOUT = 15.0


class NodeAddress(NamedTuple):
    address: str
    port: int
    offline: bool = False


# node name -> (address, port, offline); KeyError or None for unknown nodes
Resolver = Callable[[str], "tuple[str, int, bool] | NodeAddress | None"]
SslContextFactory = Callable[[], ssl.SSLContext]


def static_resolver(nodes: Mapping[str, tuple[str, int, bool]]) -> Resolver:
    """A resolver over a fixed table (tests, tools without a config)."""
    return lambda name: nodes.get(name)


def default_ssl_context_factory(paths: pathutils.Paths | None = None) -> SslContextFactory:
    """The master talks to nodes with its own node certificate."""
    from ganeti import crypto

    use = paths or pathutils.current()
    return lambda: crypto.client_ssl_context(use.node_cert_file, use.cluster_ca_file)


def _describe_os_error(err: OSError) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate of the node not accepted: {err.verify_message}"
    if isinstance(err, ssl.SSLError):
        return f"TLS error: {err.reason or err}"
    if err.errno is not None and err.strerror:
        return f"Error {err.errno}: {err.strerror}"
    return f"{type(err).__name__}: {err}"


class PreparedCall(NamedTuple):
    """A call encoded once (:meth:`RpcRunner.prepare`), then sent to nodes one by one
    (:meth:`RpcRunner.run_prepared`): a big payload, such as the configuration file
    for each master candidate, is read and encoded once, not once per node."""

    name: str
    procedure: str
    args: list[Any]
    body: bytes
    timeout: float


class RpcRunner(RpcStubs):
    """Runs node RPC calls; thread-safe, one instance per master process.

    :meth:`run` is the transport: a subclass may replace it (an in-process
    loopback for tests) and keep the typed methods, encoders and timeouts;
    such a subclass replaces :meth:`run_prepared` too.
    """

    def __init__(self, resolver: Resolver, ssl_ctx_factory: SslContextFactory,
                 paths: pathutils.Paths | None = None,
                 calls: Mapping[str, calltypes.RpcCall] = defs.CALLS,
                 max_workers: int = MAX_WORKERS) -> None:
        self._resolver = resolver
        self._ssl_ctx_factory = ssl_ctx_factory
        self._ssl_ctx: ssl.SSLContext | None = None
        self._paths = paths or pathutils.current()
        self._calls = calls
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, int], list[http.client.HTTPSConnection]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc")
        self._closed = False

    # --- public API -----------------------------------------------------------------

    def call(self, name: str, nodes: str | Iterable[str], *args: Any,
             timeout: float | None = None, **kwargs: Any) -> Any:
        """Make the table call ``name``; ``timeout`` overrides its timeout class.

        The typed ``call_<name>`` methods come here; arguments are checked
        against the table at run time too (tools calling by name).
        """
        call, wire_args, tmo = self._encode_call(name, args, kwargs, timeout)
        if call.single_node:
            if not isinstance(nodes, str):
                raise errors.ProgrammerError(f"RPC call {name} takes a single node name")
            return self.run(call.procedure, [nodes], wire_args, tmo, name)[nodes]
        if isinstance(nodes, str):
            raise errors.ProgrammerError(f"RPC call {name} takes a list of node names")
        return self.run(call.procedure, nodes, wire_args, tmo, name)

    def _encode_call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                     timeout: float | None) -> tuple[calltypes.RpcCall, list[Any], float]:
        """The table entry of ``name``, its wire arguments and its timeout."""
        try:
            call = self._calls[name]
        except KeyError:
            raise errors.ProgrammerError(f"Unknown RPC call {name!r}") from None
        values = self._bind(call, args, kwargs)
        try:
            wire_args = call.encode_args(self._paths, values)
            tmo = timeout if timeout is not None else call.timeout_for(values)
        except (OSError, ValueError, TypeError, KeyError, errors.RpcFail) as err:
            raise errors.OpExecError(f"Cannot prepare RPC call {name}: {err}") from err
        return call, wire_args, tmo

    def prepare(self, name: str, *args: Any, timeout: float | None = None,
                **kwargs: Any) -> PreparedCall:
        """Encode the multi-node call ``name`` once, for :meth:`run_prepared`."""
        call, wire_args, tmo = self._encode_call(name, args, kwargs, timeout)
        if call.single_node:
            raise errors.ProgrammerError(f"RPC call {name} takes a single node name")
        return PreparedCall(name, call.procedure, wire_args,
                            self._encode_body(wire_args, name), tmo)

    def run_prepared(self, prepared: PreparedCall, nodes: Iterable[str]
                     ) -> dict[str, RpcResult[Any]]:
        """Send a prepared call to ``nodes`` (in parallel); as :meth:`run`."""
        return self._send(prepared.procedure, nodes, prepared.body, prepared.timeout,
                          prepared.name)

    def run(self, procedure: str, nodes: Iterable[str], args: list[Any], timeout: float,
            call_name: str = "") -> dict[str, RpcResult[Any]]:
        """Call ``procedure`` with wire ``args`` on all ``nodes`` in parallel."""
        return self._send(procedure, nodes, self._encode_body(args, call_name or procedure),
                          timeout, call_name)

    @staticmethod
    def _encode_body(args: list[Any], label: str) -> bytes:
        try:
            if any(type(arg) is calltypes.Base64Text for arg in args):
                # the same JSON array, without scanning the base64 text for escapes
                return b"[" + b", ".join(
                    b'"' + arg.encode("ascii") + b'"' if type(arg) is calltypes.Base64Text
                    else json.dumps(arg).encode("utf-8") for arg in args) + b"]"
            return json.dumps(args).encode("utf-8")
        except (TypeError, ValueError) as err:
            raise errors.OpExecError(
                f"Cannot encode arguments of RPC call {label}: {err}") from err

    def _send(self, procedure: str, nodes: Iterable[str], body: bytes, timeout: float,
              call_name: str) -> dict[str, RpcResult[Any]]:
        if self._closed:
            raise errors.ProgrammerError("RPC runner already closed")
        label = call_name or procedure
        results: dict[str, RpcResult[Any]] = {}
        pending: dict[str, Future[RpcResult[Any]]] = {}
        order = list(dict.fromkeys(nodes))
        for node in order:
            target = self._resolve(node)
            if isinstance(target, RpcResult):
                target.call = label
                results[node] = target
            elif target.offline:
                results[node] = RpcResult(node, offline=True, call=label)
            else:
                pending[node] = self._pool.submit(
                    self._request, node, target, procedure, body, timeout, label)
        for node, future in pending.items():
            results[node] = future.result()
        return {node: results[node] for node in order}

    def close(self) -> None:
        """Stop the worker threads and close idle connections."""
        self._closed = True
        self._pool.shutdown(wait=True)
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def __enter__(self) -> RpcRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------

    @staticmethod
    def _bind(call: calltypes.RpcCall, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> dict[str, Any]:
        names = [arg.name for arg in call.args]
        if len(args) > len(names):
            raise errors.ProgrammerError(
                f"RPC call {call.name} takes {len(names)} arguments, got {len(args)}")
        values = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in names or key in values:
                raise errors.ProgrammerError(f"RPC call {call.name}: bad argument {key!r}")
            values[key] = value
        missing = [n for n in names if n not in values]
        if missing:
            raise errors.ProgrammerError(f"RPC call {call.name}: missing {', '.join(missing)}")
        return values

    def _resolve(self, node: str) -> NodeAddress | RpcResult[Any]:
        try:
            resolved = self._resolver(node)
        except KeyError:
            resolved = None
        if resolved is None:
            return RpcResult(node, fail_msg=f"Node {node} is unknown to the cluster")
        address, port, offline = resolved
        return NodeAddress(address, int(port), bool(offline))

    def _context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_ctx is None:
                self._ssl_ctx = self._ssl_ctx_factory()
            return self._ssl_ctx

    def _checkout(self, key: tuple[str, int]) -> tuple[http.client.HTTPSConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        conn = http.client.HTTPSConnection(key[0], key[1], context=self._context())
        return conn, False

    def _checkin(self, key: tuple[str, int], conn: http.client.HTTPSConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_NODE and not self._closed:
                idle.append(conn)
                return
        conn.close()

    def _request(self, node: str, target: NodeAddress, procedure: str, body: bytes,
                 timeout: float, label: str) -> RpcResult[Any]:
        key = (target.address, target.port)
        where = f"node {node} at {target.address}:{target.port}"
        while True:
            conn, reused = self._checkout(key)
            try:
                if conn.sock is None:
                    connect_timeout = min(timeout, CONNECT_TIMEOUT)
                    conn.timeout = connect_timeout
                    try:
                        conn.connect()
                    except TimeoutError:
                        conn.close()
                        return RpcResult(node, call=label, fail_msg=(
                            f"Timeout after {connect_timeout:g}s connecting to {where}"))
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.request("POST", f"/{procedure}", body,
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except TimeoutError:
                conn.close()
                return RpcResult(node, call=label, fail_msg=(
                    f"Timeout after {timeout:g}s waiting for {procedure} on {where}"))
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError, ssl.SSLEOFError) as err:
                conn.close()
                if reused:
                    # The node closed an idle kept-alive connection; retry fresh
                    LOG.debug("Reused connection to %s failed (%s), reconnecting", where, err)
                    continue
                return RpcResult(node, call=label, fail_msg=(
                    f"{_describe_remote_close(err)} from {where}"))
            except OSError as err:
                conn.close()
                return RpcResult(node, call=label,
                                 fail_msg=f"{_describe_os_error(err)} ({where})")
            except http.client.HTTPException as err:
                conn.close()
                return RpcResult(node, call=label, fail_msg=(
                    f"Invalid HTTP response from {where}: {type(err).__name__}: {err}"))
            if response.will_close:
                conn.close()
            else:
                self._checkin(key, conn)
            return _parse_reply(node, label, where, response.status, data)


def _describe_remote_close(err: Exception) -> str:
    if isinstance(err, ssl.SSLEOFError):
        return "Connection closed during TLS session (certificate refused?)"
    if isinstance(err, OSError) and err.errno is not None:
        return _describe_os_error(err)
    return "Connection closed without a reply"


def _parse_reply(node: str, label: str, where: str, status: int,
                 data: bytes) -> RpcResult[Any]:
    try:
        reply = serializer.load_json(data, f"the reply from {where}")
        valid = isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], bool)
    except errors.ParseError:
        reply, valid = None, False
    if status != 200:
        detail = str(reply[1]) if valid else data[:200].decode("utf-8", "replace")
        return RpcResult(node, call=label, fail_msg=f"Error {status}: {detail} ({where})")
    if not valid:
        return RpcResult(node, call=label, fail_msg=f"Invalid reply from {where}")
    if reply[0]:
        return RpcResult(node, data=reply[1], call=label)
    return RpcResult(node, call=label, fail_msg=str(reply[1]))
