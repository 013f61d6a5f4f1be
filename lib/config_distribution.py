"""Shipping the configuration to the master candidates, in the background.

A commit never waits for a node: the config store's write listener only
records the new serial and wakes one worker thread per target node.  A worker
that finds its node behind ships what the node lacks, *as it is when the
shipment starts*, so writes that arrive while one runs (or while a node is
down) coalesce into one shipment of the newest state:

- a **delta** (``append_config_records``) when the node is known to hold
  exactly serial B and the store still has every journal record after B
  (``records_since``): all of them in one call, as long as they are no bigger
  than the file; the node appends them to its own journal;
- otherwise (nothing known of the node, a refusal such as "base serial
  mismatch", records gone or too big) the **whole file** (``upload_file``),
  which replaces the node's file and journal and answers with its serial; the
  records after that serial follow in the same attempt.

A node that fails is retried with a growing delay and never holds up the
others; when it answers again it gets the newest state (a delta if the master
still has the records).

An LU that needs the file on a node before it goes on (node add, a node made
candidate) calls :meth:`ConfigDistributor.flush`, which waits until those
nodes hold at least the serial current at the call, or reports why not.

Guarantees (master failover relies on them; see doc/design.md, "Configuration
distribution"):

- a node's recorded ``shipped_serial`` is a lower bound of the serial it holds
  (the serial the node answered, or, from a node that does not say, the serial
  recorded before the file was read);
- after a write of serial S, every reachable candidate holds serial >= S
  within ``min_interval`` plus one shipment, without any further write;
- :meth:`flush` returns only when every node asked for holds serial >= the
  serial at the call, or gives, per node, the reason it does not;
- :meth:`stop` gives the candidates one bounded last chance (a flush) before
  the threads end, so a clean master shutdown leaves them up to date.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ganeti import config_journal, errors

if TYPE_CHECKING:
    from ganeti.rpc.client import PreparedCall
    from ganeti.rpc.result import RpcResult

LOG = logging.getLogger(__name__)

# Writes closer together than this share one upload per node (a burst of creates)
DEFAULT_MIN_INTERVAL = 0.5
# ... and than this many times the node's last upload took: uploading a big file
# takes at most about 1/DUTY_FACTOR of the time (and of the master's CPU) per node;
# at 10,000 instances (8 MB) an upload takes about 0.1 s, so about 1 s apart
DUTY_FACTOR = 10.0
# A failed node is retried after RETRY_MIN seconds, doubling up to RETRY_MAX
RETRY_MIN = 1.0
RETRY_MAX = 30.0
# How long a clean shutdown waits for the candidates to take the newest file
STOP_FLUSH_TIMEOUT = 5.0
# A delta is shipped while its records are no bigger than the file, between these
DELTA_MIN_BYTES = 256 * 1024
DELTA_MAX_BYTES = 16 * 1024 * 1024

# encoded deltas kept for other nodes at the same base (the newest bases)
_DELTAS_KEPT = 8

# ConfigStore.records_since: the journal records after a serial, None once gone
RecordsSince = Callable[[int], "Sequence[config_journal.Record] | None"]


class UploadRpc(Protocol):
    """What the distributor needs of the RPC runner (``RpcRunner`` has it): an
    upload (or a delta) is encoded once per version and sent to each node alone."""

    def prepare(self, name: str, *args: Any, timeout: float | None = None,
                **kwargs: Any) -> PreparedCall: ...

    def run_prepared(self, prepared: PreparedCall, nodes: Iterable[str]
                     ) -> dict[str, RpcResult[Any]]: ...


@dataclasses.dataclass(frozen=True)
class NodeStatus:
    """How far one node's copy of the configuration is behind the master's."""

    node: str
    candidate: bool
    master_serial: int
    # lower bound of the serial the node holds; None: nothing shipped by this master yet
    shipped_serial: int | None
    last_success: float | None  # wall-clock time of the last good upload
    last_attempt: float | None
    last_error: str | None  # of the last attempt, None if it succeeded
    consecutive_failures: int
    uploading: bool
    # what this master shipped: whole files, deltas, and the bytes of both (RPC bodies)
    full_uploads: int = 0
    delta_uploads: int = 0
    bytes_shipped: int = 0

    @property
    def lag(self) -> int:
        """Serials the node is behind (the master's serial when nothing was shipped)."""
        if self.shipped_serial is None:
            return self.master_serial
        return max(0, self.master_serial - self.shipped_serial)


class _Target:
    """Mutable state of one node; guarded by the distributor's condition."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.candidate = False
        self.shipped_serial: int | None = None
        # the serial the node said it holds, exactly (deltas start there); None: unknown
        self.exact_serial: int | None = None
        self.full_uploads = 0
        self.delta_uploads = 0
        self.bytes_shipped = 0
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.last_error: str | None = None
        self.failures = 0
        self.uploading = False
        self.attempts = 0  # number of the last attempt started
        self.failed_attempt = 0  # number of the last attempt that failed
        self.last_ship = float("-inf")  # monotonic start of the last attempt
        self.last_duration = 0.0  # seconds the last attempt took
        self.next_retry = float("-inf")  # monotonic; no attempt before
        self.urgent = False  # a flush waits: ignore min_interval and backoff once
        self.ca_wanted = 0  # generation of the newest CA request
        self.ca_shipped = 0
        self.thread: threading.Thread | None = None


class ConfigDistributor:
    """Per-node upload workers; see the module docstring."""

    def __init__(self, rpc: UploadRpc, conf_file: str | PathLike[str],
                 ca_file: str | PathLike[str], serial: int, *,
                 candidates: Callable[[], Iterable[str]] | None = None,
                 records_since: RecordsSince | None = None,
                 max_delta_bytes: int | None = None,
                 min_interval: float = DEFAULT_MIN_INTERVAL,
                 retry_min: float = RETRY_MIN, retry_max: float = RETRY_MAX,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._rpc = rpc
        # the candidates as the configuration says (None: only as callers tell)
        self._candidates = candidates
        self._conf_file = Path(conf_file)
        self._ca_file = Path(ca_file)
        self._serial = serial
        # None: the store keeps no journal, every shipment is the whole file
        self._records_since = records_since
        self._max_delta_bytes = max_delta_bytes
        self._min_interval = min_interval
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._clock = clock
        self._wall = wall_clock
        self._cond = threading.Condition()
        self._targets: dict[str, _Target] = {}
        self._stopping = False
        # the upload of the newest version of each file, encoded once for every node
        self._prepare_lock = threading.Lock()
        self._prepared: dict[Path, tuple[tuple[int, int, int], PreparedCall]] = {}
        # the delta from a base serial: (last serial, call), shared by nodes at that base
        self._prepared_deltas: dict[int, tuple[int, PreparedCall]] = {}

    # --- what the master tells it --------------------------------------------------

    def config_written(self, serial: int, candidates: Iterable[str] | None = None) -> None:
        """A write of ``serial`` reached the disk; ``candidates`` should follow it
        (None: ask the ``candidates`` callable).

        Cheap and never blocks on a node: it is called in the committing thread.
        """
        if candidates is None:
            candidates = self._current_candidates()
        with self._cond:
            self._serial = max(self._serial, serial)
            self._set_candidates(set(candidates))
            self._cond.notify_all()

    def set_candidates(self, candidates: Iterable[str] | None = None) -> None:
        """The nodes that always follow the configuration (start-up, no write yet;
        None: ask the ``candidates`` callable)."""
        if candidates is None:
            candidates = self._current_candidates()
        with self._cond:
            self._set_candidates(set(candidates))
            self._cond.notify_all()

    def flush(self, node_names: Iterable[str], timeout: float,
              with_ca: bool = False) -> dict[str, str]:
        """Wait until ``node_names`` hold the current configuration (and the CA).

        Returns the nodes that do not, each with the reason: its upload failed
        (an attempt started after this call), or ``timeout`` seconds passed.
        Candidates or not, the nodes get the file; non-candidates only this once.
        """
        deadline = self._clock() + timeout
        node_names = list(node_names)
        # who is a candidate decides whether a node is followed after the flush
        candidates = None if self._candidates is None else set(self._current_candidates())
        with self._cond:
            if candidates is not None and not self._stopping:
                self._set_candidates(candidates)
            if self._stopping:
                return {name: "the configuration distribution is stopped"
                        for name in node_names}
            target_serial = self._serial
            waits: dict[str, tuple[_Target, int, int]] = {}
            for name in node_names:
                tgt = self._target(name)
                if with_ca:
                    tgt.ca_wanted += 1
                if (tgt.ca_shipped < tgt.ca_wanted or tgt.shipped_serial is None
                        or tgt.shipped_serial < target_serial):
                    tgt.urgent = True
                waits[name] = (tgt, tgt.attempts, tgt.ca_wanted)
                self._ensure_thread(tgt)
            self._cond.notify_all()
            failed: dict[str, str] = {}
            while True:
                pending = []
                for name, (tgt, attempts_before, ca_gen) in waits.items():
                    if name in failed:
                        continue
                    done = (tgt.shipped_serial is not None
                            and tgt.shipped_serial >= target_serial
                            and tgt.ca_shipped >= ca_gen)
                    if done:
                        continue
                    if tgt.failed_attempt > attempts_before:
                        failed[name] = tgt.last_error or "upload failed"
                        continue
                    pending.append(name)
                remaining = deadline - self._clock()
                if not pending:
                    return failed
                if remaining <= 0 or self._stopping:
                    for name in pending:
                        tgt = waits[name][0]
                        reason = f"not uploaded within {timeout:g}s"
                        if tgt.last_error:
                            reason += f" (last error: {tgt.last_error})"
                        failed[name] = reason
                    return failed
                self._cond.wait(remaining)

    def status(self) -> list[NodeStatus]:
        """Every candidate's (and any node still being flushed) state, by node name."""
        with self._cond:
            return [NodeStatus(node=t.node, candidate=t.candidate, master_serial=self._serial,
                               shipped_serial=t.shipped_serial, last_success=t.last_success,
                               last_attempt=t.last_attempt, last_error=t.last_error,
                               consecutive_failures=t.failures, uploading=t.uploading,
                               full_uploads=t.full_uploads, delta_uploads=t.delta_uploads,
                               bytes_shipped=t.bytes_shipped)
                    for t in sorted(self._targets.values(), key=lambda t: t.node)]

    def stop(self, flush_timeout: float = STOP_FLUSH_TIMEOUT, join_timeout: float = 5.0
             ) -> dict[str, str]:
        """Give the candidates a last bounded flush, then end the workers.

        Returns the candidates the last flush did not reach.  An upload stuck in
        a connect is not waited for beyond ``join_timeout`` (the threads are daemons).
        """
        with self._cond:
            candidates = [t.node for t in self._targets.values() if t.candidate]
        missed = self.flush(candidates, flush_timeout) if flush_timeout > 0 else {}
        with self._cond:
            self._stopping = True
            threads = [t.thread for t in self._targets.values() if t.thread is not None]
            self._cond.notify_all()
        deadline = self._clock() + join_timeout
        for thread in threads:
            thread.join(max(0.0, deadline - self._clock()))
        return missed

    # --- workers -------------------------------------------------------------------

    def _current_candidates(self) -> list[str]:
        return [] if self._candidates is None else list(self._candidates())

    def _set_candidates(self, names: set[str]) -> None:
        for name in names:
            tgt = self._target(name)
            tgt.candidate = True
            self._ensure_thread(tgt)
        for tgt in list(self._targets.values()):
            if tgt.node not in names and tgt.candidate:
                tgt.candidate = False  # its worker ends once nothing is asked of it

    def _target(self, name: str) -> _Target:
        tgt = self._targets.get(name)
        if tgt is None:
            tgt = self._targets[name] = _Target(name)
        return tgt

    def _ensure_thread(self, tgt: _Target) -> None:
        if tgt.thread is None and not self._stopping:
            tgt.thread = threading.Thread(target=self._run, args=(tgt,), daemon=True,
                                          name=f"config-dist-{tgt.node}")
            tgt.thread.start()

    def _needs_upload(self, tgt: _Target) -> bool:
        behind = tgt.shipped_serial is None or tgt.shipped_serial < self._serial
        return tgt.ca_shipped < tgt.ca_wanted or (behind and (tgt.candidate or tgt.urgent))

    def _next_due(self, tgt: _Target) -> float:
        """Monotonic time the next shipment may start (it is needed)."""
        if tgt.urgent:
            return float("-inf")
        if tgt.exact_serial is not None and self._records_since is not None:
            # the next one is a delta: a whole file's duration (the node's first
            # shipment) must not hold it back for DUTY_FACTOR times as long
            interval = self._min_interval
        else:
            interval = max(self._min_interval, DUTY_FACTOR * tgt.last_duration)
        return max(tgt.next_retry, tgt.last_ship + interval)

    def _run(self, tgt: _Target) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        tgt.thread = None
                        return
                    if not self._needs_upload(tgt):
                        if not tgt.candidate:
                            # asked for once (flush) and done: forget the node
                            tgt.thread = None
                            if self._targets.get(tgt.node) is tgt:
                                del self._targets[tgt.node]
                            return
                        self._cond.wait()
                        continue
                    wait = self._next_due(tgt) - self._clock()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                serial = self._serial
                ca_gen = tgt.ca_wanted
                with_ca = tgt.ca_shipped < ca_gen
                behind = tgt.shipped_serial is None or tgt.shipped_serial < serial
                exact = tgt.exact_serial
                tgt.urgent = False
                tgt.uploading = True
                tgt.attempts += 1
                attempt = tgt.attempts
                tgt.last_ship = self._clock()
                tgt.last_attempt = self._wall()
            shipment = _Shipment(exact)
            error = self._ship(tgt.node, shipment, serial if behind else None, with_ca)
            with self._cond:
                tgt.uploading = False
                tgt.last_duration = self._clock() - tgt.last_ship
                tgt.exact_serial = shipment.exact
                tgt.full_uploads += shipment.fulls
                tgt.delta_uploads += shipment.deltas
                tgt.bytes_shipped += shipment.nbytes
                if shipment.exact is not None:
                    # what the node said it holds (with a journal, a whole file may be
                    # older than the last write if its records did not follow)
                    tgt.shipped_serial = shipment.exact
                elif shipment.fulls and error is None:
                    # a node that does not say: the file was read after ``serial``
                    tgt.shipped_serial = max(tgt.shipped_serial or 0, serial)
                if error is None:
                    if tgt.failures:
                        LOG.info("Node %s takes the configuration again (serial %s)",
                                 tgt.node, tgt.shipped_serial)
                    if with_ca:
                        tgt.ca_shipped = max(tgt.ca_shipped, ca_gen)
                    tgt.last_success = tgt.last_attempt
                    tgt.last_error = None
                    tgt.failures = 0
                    tgt.next_retry = float("-inf")
                else:
                    if tgt.failures == 0:
                        LOG.warning("Cannot copy the configuration to node %s (retrying in"
                                    " the background): %s", tgt.node, error)
                    tgt.last_error = error
                    tgt.failures += 1
                    tgt.failed_attempt = attempt
                    delay = min(self._retry_max, self._retry_min * 2 ** (tgt.failures - 1))
                    tgt.next_retry = self._clock() + delay
                idle = not any(t.uploading or self._needs_upload(t)
                               for t in self._targets.values())
                self._cond.notify_all()
            if idle:
                with self._prepare_lock:
                    # up to 2 copies of the file: not kept idle
                    self._prepared.clear()
                    self._prepared_deltas.clear()

    def _ship(self, node: str, shipment: _Shipment, serial: int | None, with_ca: bool
              ) -> str | None:
        """The configuration up to ``serial`` or newer (None: the node has it), then
        the CA; the error message, or None."""
        try:
            if serial is not None:
                error = self._ship_config(node, shipment, serial)
                if error is not None:
                    return error
            if with_ca:
                return self._send(node, self._prepare(self._ca_file), self._ca_file.name)
        except Exception as err:  # a bug or unreadable file must not kill the worker
            LOG.exception("Shipping the configuration to %s failed", node)
            return f"{self._conf_file.name}: {err}"
        return None

    def _ship_config(self, node: str, shipment: _Shipment, serial: int) -> str | None:
        """A delta from the serial the node holds if possible, else the whole file
        and the records after the file's serial."""
        name = self._conf_file.name
        if shipment.exact is not None:
            delta = self._prepare_delta(shipment.exact, serial, bounded=True)
            if delta is not None:
                res = self._delta(node, shipment, delta)
                if res is None:
                    return None
                if not errors.ConfigSerialMismatch.matches(res):
                    return f"{name}: {res}"
                LOG.info("Node %s refused the configuration records (%s); uploading the"
                         " whole file", node, res)
                shipment.exact = None
        prepared = self._prepare(self._conf_file)
        res_full = self._rpc.run_prepared(prepared, [node])[node]
        shipment.fulls += 1
        shipment.nbytes += len(prepared.body)
        if res_full.fail_msg:
            shipment.exact = None  # a reply lost after the node replaced its copy
            return f"{name}: {res_full.fail_msg}"
        got = res_full.payload
        shipment.exact = got if isinstance(got, int) and not isinstance(got, bool) else None
        if shipment.exact is not None:
            # the file may be older than the newest write (journal): its records follow
            delta = self._prepare_delta(shipment.exact, serial, bounded=False)
            if delta is not None:
                res = self._delta(node, shipment, delta)
                if res is not None:
                    return f"{name} records: {res}"
            elif shipment.exact < serial and self._records_since is not None:
                # retried with the backoff, not in a loop of whole files
                return (f"{name}: the file is at serial {shipment.exact}, and the records"
                        f" after it up to {serial} are not kept")
        return None

    def _delta(self, node: str, shipment: _Shipment, delta: tuple[int, PreparedCall]
               ) -> str | None:
        """Send one prepared delta; the failure message, or None."""
        last, prepared = delta
        res = self._rpc.run_prepared(prepared, [node])[node]
        shipment.deltas += 1
        shipment.nbytes += len(prepared.body)
        if res.fail_msg:
            if errors.ConfigSerialMismatch.matches(res.fail_msg):
                shipment.exact = None
            # else: lost before or after the node appended; the next delta finds out
            return res.fail_msg
        got = res.payload
        shipment.exact = got if isinstance(got, int) and not isinstance(got, bool) else last
        return None

    def _send(self, node: str, prepared: PreparedCall, name: str) -> str | None:
        res = self._rpc.run_prepared(prepared, [node])[node]
        return f"{name}: {res.fail_msg}" if res.fail_msg else None

    def _delta_limit(self) -> int:
        if self._max_delta_bytes is not None:
            return self._max_delta_bytes
        try:
            size = self._conf_file.stat().st_size
        except OSError:
            size = 0
        return max(DELTA_MIN_BYTES, min(DELTA_MAX_BYTES, size))

    def _prepare_delta(self, base: int, want: int, bounded: bool
                       ) -> tuple[int, PreparedCall] | None:
        """The encoded records after ``base`` (all the store has, at least up to
        ``want`` if it has them), shared by the nodes at ``base``; None when there
        are none, they are gone, or (``bounded``) they are bigger than the file."""
        if self._records_since is None:
            return None
        with self._prepare_lock:
            cached = self._prepared_deltas.get(base)
        if cached is not None and cached[0] >= want:
            return cached  # another node's, no need to ask the store again
        records = self._records_since(base)
        if not records or records[0].serial != base + 1:
            return None
        last = records[-1].serial
        with self._prepare_lock:
            cached = self._prepared_deltas.get(base)
            if cached is not None and cached[0] == last:
                return cached
        blob = b"".join(_line(r) for r in records)
        if bounded and len(blob) > self._delta_limit():
            return None
        prepared = self._rpc.prepare("append_config_records", base, blob.decode("utf-8"))
        with self._prepare_lock:
            self._prepared_deltas.pop(base, None)  # the newest last
            self._prepared_deltas[base] = (last, prepared)
            while len(self._prepared_deltas) > _DELTAS_KEPT:  # a burst that never idles
                del self._prepared_deltas[next(iter(self._prepared_deltas))]
        return last, prepared

    def _prepare(self, path: Path) -> PreparedCall:
        """The encoded upload of ``path`` as it is now; shared by the workers.

        Keyed by the file's identity: the store replaces the file on every
        write (or compaction), so a new version has a new key (a version newer
        than its key, read just after a replacement, only makes one upload ship
        more).
        """
        st = path.stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._prepare_lock:
            cached = self._prepared.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
            prepared = self._rpc.prepare("upload_file", str(path))
            self._prepared[path] = (key, prepared)
            return prepared


def _line(record: config_journal.Record) -> bytes:
    """A record's journal line (kept by the journal's records, else encoded)."""
    line = getattr(record, "line", None)
    if isinstance(line, bytes):
        return line
    return config_journal.encode_record(record.serial, record.ops, record.ts)


@dataclasses.dataclass
class _Shipment:
    """What one attempt did to a node (worker-local until it is recorded)."""

    exact: int | None  # the serial the node holds exactly, as far as known
    fulls: int = 0
    deltas: int = 0
    nbytes: int = 0
