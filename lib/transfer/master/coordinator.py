"""Master side: start receivers and senders, watch them, report, always clean up.

``run_transfers`` drives several disks in parallel.  A disk is done when both
of its sides are; when one side fails the other is aborted at once, and
``transfer_cleanup`` is called on every involved node whatever happened.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ganeti.transfer import (
    COMPRESS_NONE,
    DEFAULT_COMPRESS_LEVEL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LISTEN_TIMEOUT,
    DEFAULT_PROGRESS_TIMEOUT,
)
from ganeti.transfer.master.policy import TransferLimits, describe_status

if TYPE_CHECKING:
    from ganeti.rpc.client import RpcRunner

LOG = logging.getLogger(__name__)

FeedbackFn = Callable[[str], Any]
# Called once per disk with its index and result (e.g. to drop its snapshot)
DoneFn = Callable[[int, "TransferResult"], Any]
# Consecutive failed status polls after which a node counts as gone
RPC_FAILURE_LIMIT = 3
# Shortest pause between polls when a disk is about to finish
MIN_POLL_INTERVAL = 0.1
_UNITS = "KMGT"

# The streams this process drives, for the "transfer" query resource (the master's
# view of what is in flight): run id -> a function giving a row per running stream
_IN_FLIGHT: dict[str, Callable[[], list[dict[str, Any]]]] = {}
_IN_FLIGHT_LOCK = threading.Lock()


def track(run_id: str, rows: Callable[[], list[dict[str, Any]]] | None) -> None:
    """Make a run's streams visible in :func:`in_flight` (None: forget them)."""
    with _IN_FLIGHT_LOCK:
        if rows is None:
            _IN_FLIGHT.pop(run_id, None)
        else:
            _IN_FLIGHT[run_id] = rows


def in_flight() -> list[dict[str, Any]]:
    """One row per stream still running: id, kind, label, nodes and progress."""
    with _IN_FLIGHT_LOCK:
        sources = list(_IN_FLIGHT.values())
    return [row for rows in sources for row in rows()]


def stream_row(transfer_id: str, kind: str, label: str, source_node: str | None,
               dest_node: str | None, status: dict[str, Any] | None, started: float
               ) -> dict[str, Any]:
    """An :func:`in_flight` row from a stream's last status (None: none yet)."""
    status = status or {}
    return {"id": transfer_id, "kind": kind, "label": label, "source_node": source_node,
            "dest_node": dest_node, "bytes": int(status.get("bytes", 0)),
            "total": int(status.get("data_total", 0)),
            "rate": float(status.get("rate", 0.0)),
            "elapsed": round(time.monotonic() - started, 3)}


@dataclass
class DiskTransfer:
    """One disk to copy; specs are the dicts ``transfer_*_start`` take."""

    label: str
    source_node: str
    source: dict[str, Any]
    dest_node: str
    dest: dict[str, Any]
    size: int | None = None
    compress: str = COMPRESS_NONE
    # Receiver's address as the config knows it (primary IP); it binds there
    dest_address: str | None = None
    # The sender's checksum algorithm (None: the default); imports verifying an
    # export pass the algorithm it was recorded with
    checksum: str | None = None
    # The destination names a base to build on (doc/incremental-exports.md)
    incremental: bool = False


@dataclass
class TransferResult:
    label: str
    success: bool
    bytes: int = 0
    checksum: str | None = None
    error: str | None = None
    elapsed: float = 0.0
    # "full", "hash" or "extents" (the sender's choice); None: unknown (failed early)
    mode: str | None = None
    size: int = 0
    read_bytes: int = 0
    changed_bytes: int = 0
    wire_bytes: int = 0
    base: str | None = None
    base_copy: str | None = None

    @property
    def incremental(self) -> bool:
        """Whether the disk was built on a base (only its changes were sent)."""
        return self.mode not in (None, "full")


def finished_line(result: TransferResult) -> str:
    """The job log's line for a finished disk; incremental ones say what changed."""
    elapsed = result.elapsed
    if not result.incremental:
        rate = result.bytes / elapsed if elapsed > 0 else 0.0
        return (f"{result.label} finished: {format_size(result.bytes)} in {elapsed:.1f}s,"
                f" {rate / 1048576:.1f} MiB/s, checksum {result.checksum}")
    share = result.changed_bytes * 100 / result.size if result.size else 0.0
    base = result.base or "previous export"
    return (f"{result.label}: {format_size(result.changed_bytes)} of"
            f" {format_size(result.size)} changed ({share:.1f}%),"
            f" read {format_size(result.read_bytes)}, sent {format_size(result.wire_bytes)}"
            f" in {elapsed:.1f}s, base {base} ({result.mode})")


def format_size(num: float) -> str:
    """Binary units, like "268M" or "1.0G"."""
    if num < 1024:
        return f"{int(num)}B"
    value = float(num)
    unit = ""
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            break
    return f"{value:.1f}{unit}" if value < 10 else f"{round(value)}{unit}"


def format_duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def progress_line(label: str, done: int, total: int, rate: float) -> str:
    """ "disk/0 sent 268M, 44.6 MiB/s, 12%, ETA 49m 1s" (ETA only when known)."""
    parts = [f"{label} sent {format_size(done)}", f"{rate / 1048576:.1f} MiB/s"]
    if total > 0:
        parts.append(f"{min(100, int(done * 100 / total))}%")
        if rate > 0 and done < total:
            parts.append(f"ETA {format_duration((total - done) / rate)}")
    return ", ".join(parts)


@dataclass
class _Disk:
    index: int
    spec: DiskTransfer
    transfer_id: str
    magic: str
    started: float = field(default_factory=time.monotonic)
    send_started: bool = False
    recv_status: dict[str, Any] | None = None
    send_status: dict[str, Any] | None = None
    recv_rpc_error: str | None = None
    send_rpc_error: str | None = None
    errors: list[str] = field(default_factory=list)
    finished: bool = False
    notified: bool = False
    result: TransferResult | None = None
    limits_reported: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        return self.spec.label

    # Each side has its own id: source and destination may be the same node
    @property
    def recv_id(self) -> str:
        return f"{self.transfer_id}-r"

    @property
    def send_id(self) -> str:
        return f"{self.transfer_id}-s"


class _Run:
    def __init__(self, rpc: RpcRunner, transfers: list[DiskTransfer], feedback_fn: FeedbackFn,
                 options: dict[str, Any], on_done: DoneFn | None = None,
                 limits: TransferLimits | None = None) -> None:
        self.rpc = rpc
        self.feedback = feedback_fn
        self.options = options
        self.on_done = on_done
        self.limits = limits or TransferLimits()
        run_id = uuid.uuid4().hex[:12]
        self.run_id = run_id
        self.disks = [_Disk(index, spec, f"{run_id}-{index}", secrets.token_hex(16))
                      for index, spec in enumerate(transfers)]
        self.rpc_failures: dict[str, int] = {}
        self.waiting_polls = 0

    # --- start -------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        return [stream_row(d.transfer_id, "local", d.label, d.spec.source_node,
                           d.spec.dest_node, d.send_status, d.started)
                for d in self.disks if not d.finished]

    def start(self) -> None:
        for disk in self.disks:
            spec = disk.spec
            options = {**self.options, **self.limits.receive_options(
                spec.dest_node, counted=spec.dest_node != spec.source_node)}
            if spec.dest_address:
                options["bind"] = spec.dest_address
            res = self.rpc.call_transfer_receive_start(
                spec.dest_node, disk.recv_id, spec.dest, spec.size, disk.magic,
                spec.compress, options)
            if res.failed:
                self._fail(disk, f"cannot start the receiver on {spec.dest_node}:"
                                 f" {res.fail_msg}")
                continue
            host, port = res.payload["host"], res.payload["port"]
            send_options = {**self.options,
                            **self.limits.send_options(spec.source_node, self.run_id)}
            if spec.checksum:
                send_options["checksum"] = spec.checksum
            if spec.incremental:
                send_options["incremental"] = True
            sent = self.rpc.call_transfer_send_start(
                spec.source_node, disk.send_id, spec.source, host, port, disk.magic,
                spec.compress, send_options)
            if sent.failed:
                self._fail(disk, f"cannot start the sender on {spec.source_node}:"
                                 f" {sent.fail_msg}")
                self._abort(spec.dest_node, [disk.recv_id])
                continue
            disk.send_started = True

    # --- polling -----------------------------------------------------------------

    def next_poll(self, poll_interval: float) -> float:
        """Pause before the next poll: shorter when a disk should finish sooner.

        Half the time left by the senders' rates, so the pauses shrink towards
        the end: a short transfer is noticed right after it ends, not up to a
        whole interval later.  While a node fails to answer, the full interval
        is kept so that the failure limit still means the same time.
        """
        if any(self.rpc_failures.values()):
            return poll_interval
        eta = poll_interval
        waiting = False  # for a first status or for a receiver's final sync
        for disk in self.disks:
            if disk.finished:
                continue
            status = disk.send_status
            left = rate = 0.0
            if status:
                left = float(status.get("data_total", 0)) - float(status.get("bytes", 0))
                rate = float(status.get("rate", 0.0))
            if not status or left <= 0:
                waiting = True
            elif rate > 0:  # half: the first rates are low (connection setup)
                eta = min(eta, left / rate / 2)
        if waiting:  # 0.1, 0.125, 0.156 s...: late by at most a quarter, few polls
            eta = min(eta, MIN_POLL_INTERVAL * 1.25 ** min(self.waiting_polls, 20))
            self.waiting_polls += 1
        else:
            self.waiting_polls = 0
        return min(poll_interval, max(MIN_POLL_INTERVAL, eta))

    def poll(self) -> None:
        running = [d for d in self.disks if not d.finished]
        by_node: dict[str, list[str]] = {}
        for disk in running:
            by_node.setdefault(disk.spec.dest_node, []).append(disk.recv_id)
            by_node.setdefault(disk.spec.source_node, []).append(disk.send_id)
        if not by_node:
            return
        ids = sorted({tid for tids in by_node.values() for tid in tids})
        results = self.rpc.call_transfer_status(sorted(by_node), ids)
        for node, res in results.items():
            if res.failed:
                self.rpc_failures[node] = self.rpc_failures.get(node, 0) + 1
            else:
                self.rpc_failures[node] = 0
        for disk in running:
            self._update(disk, results)

    def _side(self, tid: str, node: str, results: dict[str, Any], role: str
              ) -> tuple[dict[str, Any] | None, str | None]:
        res = results.get(node)
        if res is None or res.failed:
            msg = res.fail_msg if res is not None else "no answer"
            if self.rpc_failures.get(node, 0) >= RPC_FAILURE_LIMIT:
                return None, f"{role} node {node} is unreachable: {msg}"
            return None, None
        status = res.payload.get(tid)
        if status is None:
            return None, (f"{role} on {node} is unknown to the node daemon"
                          " (was it restarted?)")
        return status, None

    def _update(self, disk: _Disk, results: dict[str, Any]) -> None:
        spec = disk.spec
        recv, recv_err = self._side(disk.recv_id, spec.dest_node, results, "receiver")
        send, send_err = self._side(disk.send_id, spec.source_node, results, "sender")
        disk.recv_status = recv or disk.recv_status
        disk.send_status = send or disk.send_status
        self._report_limits(disk, "sender", spec.source_node, send)
        self._report_limits(disk, "receiver", spec.dest_node, recv)
        problems = []
        recv_reason = recv["error"] if recv and recv["done"] and not recv["success"] else None
        send_reason = send["error"] if send and send["done"] and not send["success"] else None
        # a side that only repeats what its peer told it adds nothing: say it once
        if recv_reason and send_reason:
            if str(recv_reason) in str(send_reason):
                send_reason = None
            elif str(send_reason) in str(recv_reason):
                recv_reason = None
        if recv_err:
            problems.append(recv_err)
        elif recv_reason:
            problems.append(f"receiver on {spec.dest_node}: {recv_reason}")
        if send_err:
            problems.append(send_err)
        elif send_reason:
            problems.append(f"sender on {spec.source_node}: {send_reason}")
        if problems:
            # a node that stopped answering is the likely root cause: name it first
            for node, role in ((spec.dest_node, "receiver"), (spec.source_node, "sender")):
                res = results.get(node)
                if res is not None and res.failed and not any(node in p for p in problems):
                    problems.insert(0, f"{role} node {node} does not answer: {res.fail_msg}")
            self._fail(disk, "; ".join(problems))
            return
        if recv and send and recv["done"] and send["done"]:
            if recv["checksum"] != send["checksum"]:
                self._fail(disk, f"checksum mismatch: sender on {spec.source_node}"
                                 f" {send['checksum']}, receiver on {spec.dest_node}"
                                 f" {recv['checksum']}")
                return
            # the sender's clock covers connect to the receiver's final ACK
            disk.finished = True
            disk.result = _result(spec.label, True, send, recv, send["checksum"], None,
                                  float(send["elapsed"]))
            self.feedback(finished_line(disk.result))
            self.notify(disk)  # both sides are done with source and destination

    def _report_limits(self, disk: _Disk, role: str, node: str,
                       status: dict[str, Any] | None) -> None:
        """Once per side: the limits the node says it applies (none: no line)."""
        if status is None or role in disk.limits_reported:
            return
        disk.limits_reported.add(role)
        applied = describe_status(status)
        if applied:
            self.feedback(f"{disk.label} {role} on {node}: {applied}")

    def notify(self, disk: _Disk) -> None:
        """Tell the caller a disk is done; its failure must not hide the others' results."""
        if disk.notified or self.on_done is None or disk.result is None:
            return
        disk.notified = True
        try:
            self.on_done(disk.index, disk.result)
        except Exception as err:
            LOG.exception("Completion callback for %s failed", disk.label)
            self.feedback(f"warning: completion handling of {disk.label} failed: {err}")

    def _fail(self, disk: _Disk, reason: str) -> None:
        disk.finished = True
        spec = disk.spec
        disk.result = _result(spec.label, False, disk.send_status or {},
                              disk.recv_status or {}, None, f"{spec.label}: {reason}",
                              time.monotonic() - disk.started)
        self.feedback(f"{spec.label} failed: {reason}")
        self._abort(spec.dest_node, [disk.recv_id])
        if disk.send_started:
            self._abort(spec.source_node, [disk.send_id])

    def _abort(self, node: str, ids: list[str]) -> None:
        res = self.rpc.call_transfer_abort([node], ids)[node]
        if res.failed:
            LOG.info("Abort of %s on %s failed: %s", ids, node, res.fail_msg)

    def report(self) -> None:
        for disk in self.disks:
            status = disk.send_status
            if disk.finished or not status:
                continue
            self.feedback(progress_line(disk.label, int(status["bytes"]),
                                        int(status["data_total"]), float(status["rate"])))

    def abort_all(self, reason: str) -> None:
        for disk in self.disks:
            if not disk.finished:
                self._fail(disk, reason)

    def cleanup(self) -> None:
        by_node: dict[str, list[str]] = {}
        for disk in self.disks:
            by_node.setdefault(disk.spec.dest_node, []).append(disk.recv_id)
            by_node.setdefault(disk.spec.source_node, []).append(disk.send_id)
        for node, ids in sorted(by_node.items()):
            try:
                res = self.rpc.call_transfer_cleanup([node], ids)[node]
            except Exception as err:  # cleanup must never hide the real outcome
                LOG.warning("Cleanup of transfers on %s failed: %s", node, err)
                continue
            if res.failed:
                self.feedback(f"warning: cleanup of transfers on {node} failed:"
                              f" {res.fail_msg}")


def _result(label: str, success: bool, send: dict[str, Any], recv: dict[str, Any],
            checksum: str | None, error: str | None, elapsed: float) -> TransferResult:
    """A disk's result from both sides' last status (the sender's counters)."""
    def count(key: str) -> int:
        value = send.get(key)
        return int(value) if isinstance(value, int | float) else 0

    return TransferResult(label, success, count("bytes"), checksum, error, elapsed,
                          mode=send.get("mode"), size=count("total"),
                          read_bytes=count("read_bytes"),
                          changed_bytes=count("changed_bytes"),
                          wire_bytes=count("wire_bytes"), base=send.get("base"),
                          base_copy=recv.get("base_copy"))


def run_transfers(rpc: RpcRunner, transfers: list[DiskTransfer], feedback_fn: FeedbackFn,
                  poll_interval: float = 1.0, report_interval: float = 5.0, *,
                  on_done: DoneFn | None = None,
                  connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                  listen_timeout: float = DEFAULT_LISTEN_TIMEOUT,
                  progress_timeout: float = DEFAULT_PROGRESS_TIMEOUT,
                  compress_level: int = DEFAULT_COMPRESS_LEVEL,
                  extra_options: dict[str, Any] | None = None,
                  limits: TransferLimits | None = None,
                  sleep_fn: Callable[[float], Any] = time.sleep) -> list[TransferResult]:
    """Copy every disk (in parallel); one result per transfer, in the given order.

    ``poll_interval`` is the longest pause between status polls (see
    ``_Run.next_poll``).

    ``rpc`` is an :class:`ganeti.rpc.client.RpcRunner`.  ``extra_options``
    reach both nodes (e.g. ``cert_file``/``ca_file``/``port_range``).
    ``on_done(index, result)`` runs once per disk: right away for a success,
    after the node cleanup (which stops the streams) for a failure.
    ``limits``: bandwidth limits and I/O priority (see ``ganeti.transfer.master.policy``).
    """
    options: dict[str, Any] = {"connect_timeout": connect_timeout,
                               "listen_timeout": listen_timeout,
                               "progress_timeout": progress_timeout,
                               "compress_level": compress_level, **(extra_options or {})}
    run = _Run(rpc, transfers, feedback_fn, options, on_done, limits)
    track(run.run_id, run.rows)
    try:
        run.start()
        next_report = time.monotonic() + report_interval
        while not all(d.finished for d in run.disks):
            sleep_fn(run.next_poll(poll_interval))
            run.poll()
            if time.monotonic() >= next_report:
                run.report()
                next_report = time.monotonic() + report_interval
    except BaseException as err:
        run.abort_all(f"transfer interrupted: {err or type(err).__name__}")
        raise
    finally:
        track(run.run_id, None)
        run.cleanup()
        for disk in run.disks:
            run.notify(disk)
    return [d.result or TransferResult(d.label, False, error=f"{d.label}: no result")
            for d in run.disks]
