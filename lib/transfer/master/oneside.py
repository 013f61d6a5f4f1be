"""Master side of one end of inter-cluster streams (remote export and import).

In a remote export each cluster's master drives only its own end: the
destination starts receivers and publishes where they listen, the source
starts senders towards them.  Receivers here hash what they write and
compare with the sender's checksum (``verify_receive``): the destination
cluster does not take the other cluster's word for the data.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ganeti.transfer import (
    DEFAULT_COMPRESS_LEVEL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_PROGRESS_TIMEOUT,
)
from ganeti.transfer.master.coordinator import (
    RPC_FAILURE_LIMIT,
    DoneFn,
    FeedbackFn,
    TransferResult,
    format_size,
    stream_row,
    track,
)
from ganeti.transfer.master.policy import TransferLimits, describe_status

if TYPE_CHECKING:
    from ganeti.rpc.client import RpcRunner


@dataclass
class _End:
    index: int
    label: str
    node: str
    transfer_id: str
    started: float
    status: dict[str, Any] | None = None
    result: TransferResult | None = None
    rpc_failures: int = 0
    limits_reported: bool = False


class OneSide:
    """Streams of one cluster: start them, follow them, always clean up."""

    def __init__(self, rpc: RpcRunner, feedback_fn: FeedbackFn, options: dict[str, Any],
                 verb: str, limits: TransferLimits | None = None) -> None:
        self.rpc = rpc
        self.feedback = feedback_fn
        self.options = {"connect_timeout": DEFAULT_CONNECT_TIMEOUT,
                        "progress_timeout": DEFAULT_PROGRESS_TIMEOUT,
                        "compress_level": DEFAULT_COMPRESS_LEVEL, **options}
        self.verb = verb
        self.limits = limits or TransferLimits()
        self.run_id = uuid.uuid4().hex[:12]
        self.ends: list[_End] = []
        track(self.run_id, self.rows)  # until cleanup

    def rows(self) -> list[dict[str, Any]]:
        """The running ends, for the "transfer" query resource (the peer is elsewhere)."""
        rows = []
        for end in self.ends:
            if end.result is None:
                send = end.transfer_id.endswith("-s")
                rows.append(stream_row(end.transfer_id, "remote-send" if send
                                       else "remote-receive", end.label,
                                       end.node if send else None,
                                       None if send else end.node, end.status, end.started))
        return rows

    def _new_end(self, label: str, node: str, role: str) -> _End:
        end = _End(len(self.ends), label, node, f"{self.run_id}-{len(self.ends)}-{role}",
                   time.monotonic())
        self.ends.append(end)
        return end

    def start_receive(self, label: str, node: str, dest: dict[str, Any], magic: str,
                      compress: str, bind: str, size: int | None = None) -> tuple[str, int]:
        """Listen for one stream; returns the ``(host, port)`` to publish."""
        end = self._new_end(label, node, "r")
        res = self.rpc.call_transfer_receive_start(
            node, end.transfer_id, dest, size, magic, compress,
            {**self.options, **self.limits.receive_options(node), "bind": bind,
             "verify_receive": True})
        res.raise_on_failure(f"Cannot start the receiver of {label} on {node}")
        return str(res.payload["host"]), int(res.payload["port"])

    def start_send(self, label: str, node: str, source: dict[str, Any], host: str,
                   port: int, magic: str, compress: str) -> None:
        end = self._new_end(label, node, "s")
        res = self.rpc.call_transfer_send_start(
            node, end.transfer_id, source, host, port, magic, compress,
            {**self.options, **self.limits.send_options(node, self.run_id)})
        if res.failed:
            self._finish(end, False, f"cannot start the sender on {node}: {res.fail_msg}")

    def _finish(self, end: _End, ok: bool, error: str | None = None) -> None:
        status = end.status or {}
        elapsed = float(status.get("elapsed") or (time.monotonic() - end.started))
        nbytes = int(status.get("bytes", 0))
        end.result = TransferResult(end.label, ok, nbytes, status.get("checksum"),
                                    None if ok else f"{end.label}: {error}", elapsed,
                                    wire_bytes=int(status.get("wire_bytes", 0)))
        if ok:
            rate = nbytes / elapsed if elapsed > 0 else 0.0
            self.feedback(f"{end.label} finished: {format_size(nbytes)} in {elapsed:.1f}s,"
                          f" {rate / 1048576:.1f} MiB/s, checksum {status.get('checksum')}")
        else:
            self.feedback(f"{end.label} failed: {error}")

    def poll(self) -> None:
        running = [e for e in self.ends if e.result is None]
        by_node: dict[str, list[str]] = {}
        for end in running:
            by_node.setdefault(end.node, []).append(end.transfer_id)
        for node, ids in sorted(by_node.items()):
            res = self.rpc.call_transfer_status([node], ids)[node]
            for end in (e for e in running if e.node == node):
                self._update(end, res)

    def _update(self, end: _End, res: Any) -> None:
        if res.failed:
            end.rpc_failures += 1
            if end.rpc_failures >= RPC_FAILURE_LIMIT:
                self._finish(end, False, f"node {end.node} is unreachable: {res.fail_msg}")
            return
        end.rpc_failures = 0
        status = res.payload.get(end.transfer_id)
        if status is None:
            self._finish(end, False, f"unknown to the node daemon on {end.node}"
                                     " (was it restarted?)")
            return
        end.status = status
        if not end.limits_reported:
            end.limits_reported = True
            applied = describe_status(status)
            if applied:
                self.feedback(f"{end.label} on {end.node}: {applied}")
        if status["done"]:
            self._finish(end, bool(status["success"]), status.get("error"))

    def report(self) -> None:
        for end in self.ends:
            status = end.status
            if end.result is not None or not status:
                continue
            done, total = int(status["bytes"]), int(status["data_total"])
            parts = [f"{end.label} {self.verb} {format_size(done)}",
                     f"{float(status['rate']) / 1048576:.1f} MiB/s"]
            if total > 0:
                parts.append(f"{min(100, done * 100 // total)}%")
            self.feedback(", ".join(parts))

    def wait(self, poll_interval: float = 1.0, report_interval: float = 5.0,
             on_done: DoneFn | None = None,
             sleep_fn: Callable[[float], Any] = time.sleep) -> list[TransferResult]:
        """Follow every stream to its end; one result per stream, in start order."""
        notified: set[int] = set()
        next_report = time.monotonic() + report_interval
        while True:
            for end in self.ends:
                if end.result is not None and end.index not in notified:
                    notified.add(end.index)
                    if on_done is not None:
                        on_done(end.index, end.result)
            if all(e.result is not None for e in self.ends):
                break
            sleep_fn(poll_interval)
            self.poll()
            if time.monotonic() >= next_report:
                self.report()
                next_report = time.monotonic() + report_interval
        return [e.result for e in self.ends if e.result is not None]

    def cleanup(self) -> None:
        """Stop what still runs and forget every stream (failed receivers drop output)."""
        track(self.run_id, None)
        by_node: dict[str, list[str]] = {}
        for end in self.ends:
            by_node.setdefault(end.node, []).append(end.transfer_id)
        for node, ids in sorted(by_node.items()):
            try:
                res = self.rpc.call_transfer_cleanup([node], ids)[node]
            except Exception as err:  # never hide the real outcome
                self.feedback(f"warning: cleanup of transfers on {node} failed: {err}")
                continue
            if res.failed:
                self.feedback(f"warning: cleanup of transfers on {node} failed:"
                              f" {res.fail_msg}")
