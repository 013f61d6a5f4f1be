"""A small fault-injecting TCP proxy for tests (threads, loopback only, bounded).

Placed between two daemons it forwards bytes both ways and injects, per
direction and per connection: latency, a bandwidth cap, a connection reset
(RST) after N bytes, or a silent cut after N bytes (the connection stays open
but nothing more passes, like a dead route).  Faults can be changed while the
proxy runs; counters tell a test what really happened.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from dataclasses import dataclass

CHUNK = 64 * 1024
MAX_CONNECTIONS = 64


@dataclass
class Faults:
    latency: float = 0.0            # seconds added before each forwarded chunk
    rate: float | None = None       # bytes per second and direction, None = unlimited
    reset_after: int | None = None  # send RST after this many bytes (per connection)
    cut_after: int | None = None    # stop forwarding after this many bytes, keep open
    refuse: bool = False            # reset every new connection at once
    # only the first N connections accepted after set_faults get the faults (None: all);
    # later ones pass untouched (one call hangs, the retry or the next call works)
    connections: int | None = None


@dataclass
class Counters:
    connections: int = 0
    refused: int = 0
    resets: int = 0
    cuts: int = 0
    bytes: int = 0


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    def __init__(self, listen_host: str, target_host: str, target_port: int,
                 faults: Faults | None = None, listen_port: int = 0) -> None:
        for host in (listen_host, target_host):
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError(f"FaultProxy is for loopback addresses only, not {host}")
        self.target = (target_host, target_port)
        self.faults = faults or Faults()
        self._faulted = 0   # connections accepted under these faults
        self.counters = Counters()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, listen_port))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="faultproxy")

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def set_faults(self, faults: Faults, drop: bool = False) -> None:
        """New faults for new data; ``drop`` also resets every open connection."""
        with self._lock:
            self.faults = faults
            self._faulted = 0
        if drop:
            with self._lock:
                socks = list(self._socks)
            for sock in socks:
                _reset(sock)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, value in deltas.items():
                setattr(self.counters, key, getattr(self.counters, key) + value)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                limit = self.faults.connections
                faulted = limit is None or self._faulted < limit
                self._faulted += 1
            if (faulted and self.faults.refuse) or not self._slots.acquire(blocking=False):
                self._count(refused=1)
                _reset(client)
                continue
            self._count(connections=1)
            threading.Thread(target=self._serve, args=(client, faulted), daemon=True).start()

    def _faults_for(self, faulted: bool) -> Faults:
        return self.faults if faulted else Faults()

    def _serve(self, client: socket.socket, faulted: bool = True) -> None:
        try:
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                return
            with self._lock:
                self._socks.update((client, upstream))
            state = {"sent": 0, "broken": False}
            pumps = [threading.Thread(target=self._pump,
                                      args=(a, b, state, client, upstream, faulted),
                                      daemon=True) for a, b in ((client, upstream),
                                                                (upstream, client))]
            for pump in pumps:
                pump.start()
            for pump in pumps:
                pump.join()
            with self._lock:
                self._socks.difference_update((client, upstream))
            for sock in (client, upstream):
                sock.close()
        finally:
            self._slots.release()

    def _pump(self, src: socket.socket, dst: socket.socket, state: dict[str, int | bool],
              client: socket.socket, upstream: socket.socket, faulted: bool = True) -> None:
        try:
            src.settimeout(0.5)
        except OSError:  # the other direction already reset the connection
            return
        while not self._stop.is_set() and not state["broken"]:
            try:
                data = src.recv(CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            faults = self._faults_for(faulted)
            with self._lock:
                before = int(state["sent"])
                state["sent"] = before + len(data)
            if faults.reset_after is not None and before + len(data) > faults.reset_after:
                state["broken"] = True
                self._count(resets=1)
                _reset(client)
                _reset(upstream)
                return
            if faults.cut_after is not None and before + len(data) > faults.cut_after:
                self._count(cuts=1)
                self._stop.wait()  # hold the connection open, forward nothing
                return
            if faults.latency:
                time.sleep(faults.latency)
            if faults.rate:
                time.sleep(len(data) / faults.rate)
            try:
                dst.sendall(data)
            except OSError:
                break
            self._count(bytes=len(data))
        state["broken"] = True
        for sock in (client, upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
