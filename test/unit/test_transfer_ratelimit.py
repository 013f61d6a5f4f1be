"""Token buckets, limiters and I/O priority of the transfer engine (fake clock, no timing)."""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path

import pytest

from ganeti import crypto
from ganeti.backend import RpcFail
from ganeti.backend.transfer import _stream_options
from ganeti.storage.extents import DiskReader, DiskWriter
from ganeti.transfer import TransferAborted, TransferError, priority, ratelimit
from ganeti.transfer.master.policy import TransferLimits, describe_status, resolve
from ganeti.transfer.node import ioprio, registry

KIB = 1024
MIB = 1024 * KIB


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeAbort(threading.Event):
    """An abort event whose waits advance the fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.clock.now += timeout
        return self.is_set()


def test_bucket_spends_its_burst_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = ratelimit.TokenBucket(10 * KIB, clock=clock)
    burst = max(10 * KIB * ratelimit.SLICE, ratelimit.MIN_CHUNK)
    assert bucket.reserve(int(burst)) == 0.0
    assert bucket.reserve(5 * KIB) == pytest.approx(0.5)
    assert bucket.reserve(5 * KIB) == pytest.approx(1.0)  # queued behind the first
    clock.now += 1.0
    assert bucket.reserve(0) == 0.0  # the debt is paid off
    clock.now += 3600  # idle time earns no more than the burst
    assert bucket.reserve(int(burst) + 10 * KIB) == pytest.approx(1.0)


def test_unlimited_bucket_never_waits() -> None:
    bucket = ratelimit.TokenBucket(0, clock=FakeClock())
    assert bucket.reserve(1 << 40) == 0.0
    assert bucket.chunk() >= 1 << 40


def test_rate_change_keeps_the_debt_in_bytes() -> None:
    clock = FakeClock()
    bucket = ratelimit.TokenBucket(1 * KIB, burst=0, clock=clock)
    assert bucket.reserve(2 * KIB) == pytest.approx(2.0)
    bucket.set_rate(2 * KIB)
    assert bucket.reserve(0) == pytest.approx(1.0)
    bucket.set_rate(0)
    assert bucket.reserve(MIB) == 0.0


def _send_through(limiter: ratelimit.Limiter, nbytes: int, piece: int) -> list[int]:
    sent: list[int] = []
    data = memoryview(bytes(piece))
    for _ in range(nbytes // piece):
        limiter.sendall(lambda part: sent.append(len(part)), data)
    return sent


@pytest.mark.parametrize("rate_kib", [10 * 1024, 50 * 1024, 200 * 1024, 64])
def test_limiter_achieves_the_rate_in_fake_time(rate_kib: int) -> None:
    clock = FakeClock()
    abort = FakeAbort(clock)
    rate = rate_kib * KIB
    bucket = ratelimit.TokenBucket(rate, clock=clock)
    limiter = ratelimit.Limiter([bucket], abort)
    piece = MIB if rate >= MIB else 16 * KIB
    total = 32 * piece
    start = clock.now
    sent = _send_through(limiter, total, piece)
    assert sum(sent) == total
    assert max(sent) <= max(ratelimit.MIN_CHUNK, rate * ratelimit.SLICE)
    elapsed = clock.now - start
    burst = max(rate * ratelimit.SLICE, ratelimit.MIN_CHUNK)
    # every byte beyond the initial burst waited for its credit, and no longer
    assert elapsed == pytest.approx((total - burst) / rate, rel=1e-6)


def test_streams_sharing_a_bucket_share_the_rate() -> None:
    clock = FakeClock()
    rate = MIB
    bucket = ratelimit.TokenBucket(rate, burst=0, clock=clock)
    first = ratelimit.Limiter([bucket], FakeAbort(clock))
    second = ratelimit.Limiter([bucket], FakeAbort(clock))
    total = 0
    start = clock.now
    for _ in range(20):  # interleaved like two stream threads
        for limiter in (first, second):
            _send_through(limiter, 256 * KIB, 256 * KIB)
            total += 256 * KIB
    assert (clock.now - start) == pytest.approx(total / rate, rel=1e-6)


def test_limiter_waits_for_the_slowest_bucket() -> None:
    clock = FakeClock()
    export = ratelimit.TokenBucket(4 * MIB, burst=0, clock=clock)
    node = ratelimit.TokenBucket(1 * MIB, burst=0, clock=clock)
    limiter = ratelimit.Limiter([export, node], FakeAbort(clock))
    start = clock.now
    _send_through(limiter, 8 * MIB, MIB)
    assert clock.now - start == pytest.approx(8.0, rel=1e-6)


def test_abort_interrupts_a_paced_stream() -> None:
    clock = FakeClock()
    abort = FakeAbort(clock)
    abort.set()
    limiter = ratelimit.Limiter([ratelimit.TokenBucket(KIB, burst=0, clock=clock)], abort)
    with pytest.raises(TransferAborted):
        limiter.sendall(lambda _part: None, memoryview(bytes(8 * KIB)))


def test_limited_recv_reads_in_steps_and_pays_after() -> None:
    clock = FakeClock()
    abort = FakeAbort(clock)
    limiter = ratelimit.Limiter([ratelimit.TokenBucket(100 * KIB, burst=0, clock=clock)],
                                abort)
    asked: list[int] = []

    def recv(view: memoryview) -> int:
        asked.append(len(view))
        return len(view)

    recv_into = limiter.recv_into(recv)
    assert recv_into(memoryview(bytearray(MIB))) == 10 * KIB
    assert asked == [10 * KIB]
    assert abort.waits == [pytest.approx(0.1)]


def test_group_bucket_is_shared_while_used_then_dropped() -> None:
    with ratelimit.group_bucket("exp-1", MIB) as one, \
            ratelimit.group_bucket("exp-1", MIB) as two, \
            ratelimit.group_bucket("exp-2", MIB) as other:
        assert one is two and one is not other
        assert {"exp-1", "exp-2"} <= set(ratelimit.active_groups())
    assert "exp-1" not in ratelimit.active_groups()
    with ratelimit.group_bucket(None, MIB) as a, ratelimit.group_bucket(None, MIB) as b:
        assert a is not b


# --- I/O priority ------------------------------------------------------------------


def test_priority_values_follow_ionice() -> None:
    assert priority.IoPriority.create(None, None) is None
    assert priority.IoPriority.create(None, 6) == priority.IoPriority("best-effort", 6)
    default = priority.IoPriority.create("best-effort", None)
    assert default is not None and default.level == priority.DEFAULT_LEVEL
    assert priority.IoPriority.create("idle", 5) == priority.IoPriority("idle", 0)
    assert priority.IoPriority("best-effort", 7).value == (2 << 13) | 7
    assert priority.IoPriority("idle", 0).value == 3 << 13
    assert [priority.IoPriority("best-effort", n).nice for n in (0, 4, 5, 7)] == [0, 0, 5, 15]
    with pytest.raises(TransferError, match="ionice_class"):
        priority.IoPriority.create("realtime", 0)
    with pytest.raises(TransferError, match="ionice_level"):
        priority.IoPriority.create("best-effort", 8)


@pytest.mark.parametrize(("prio", "expected", "nice"), [
    (priority.IoPriority("best-effort", 6), (priority.IOPRIO_CLASS_BE, 6), 10),
    (priority.IoPriority("idle", 0), (priority.IOPRIO_CLASS_IDLE, 0), 19),
])
def test_apply_changes_only_the_calling_thread(prio: priority.IoPriority,
                                               expected: tuple[int, int], nice: int) -> None:
    before = ioprio.get(threading.get_native_id())
    seen: dict[str, object] = {}

    def copy_thread() -> None:
        ioprio.apply(prio, "gnt-xfer-test")
        tid = threading.get_native_id()
        seen["prio"] = ioprio.get(tid)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["comm"] = Path(f"/proc/self/task/{tid}/comm").read_text().strip()

    thread = threading.Thread(target=copy_thread)
    thread.start()
    thread.join()
    assert seen == {"prio": expected, "nice": max(nice, os.getpriority(os.PRIO_PROCESS, 0)),
                    "comm": "gnt-xfer-test"}
    assert ioprio.get(threading.get_native_id()) == before


# --- options and master-side resolution ----------------------------------------------


def test_stream_options_parse_limits_and_priority() -> None:
    opts = _stream_options({"bwlimit": 2048, "bwlimit_group": "run1", "node_bwlimit": 0,
                            "ionice_class": "idle"})
    assert (opts.bwlimit, opts.bwlimit_group, opts.node_bwlimit) == (2048, "run1", 0)
    assert opts.io_priority == priority.IoPriority("idle", 0)
    plain = _stream_options({})
    assert (plain.bwlimit, plain.node_bwlimit, plain.io_priority) == (0, None, None)
    for bad in ({"bwlimit": -1}, {"bwlimit": "fast"}, {"node_bwlimit": True},
                {"ionice_class": "rt"}, {"ionice_level": 9}, {"bwlimit_group": 5}):
        with pytest.raises(RpcFail, match=next(iter(bad)).split("_")[0]):
            _stream_options(bad)


class _Defaults:
    bwlimit = 4096
    ionice_class = "best-effort"
    ionice_level = 7


class _Node:
    def __init__(self, name: str, limit: int | None) -> None:
        self.name = name
        self.backup_bwlimit = limit


def test_resolve_prefers_the_opcode_then_the_cluster_default() -> None:
    nodes = [_Node("n1", None), _Node("n2", 1000)]
    limits = resolve(None, None, None, _Defaults, nodes)
    assert limits == TransferLimits(4096, {"n1": 0, "n2": 1000}, "best-effort", 7)
    assert resolve(0, "idle", None, _Defaults, nodes).bwlimit == 0  # 0: no limit
    assert resolve(10, "idle", None, _Defaults, nodes).io_priority == \
        priority.IoPriority("idle", 0)
    send = limits.send_options("n2", "run")
    assert send == {"bwlimit": 4096, "bwlimit_group": "run", "node_bwlimit": 1000,
                    "ionice_class": "best-effort", "ionice_level": 7}
    assert limits.receive_options("n1") == {"node_bwlimit": 0,
                                            "ionice_class": "best-effort",
                                            "ionice_level": 7}
    assert "node_bwlimit" not in limits.receive_options("n2", counted=False)
    line = limits.describe(2, ["n1", "n2"])
    assert line == ("Bandwidth limit 4096 KiB/s (4.0 MiB/s) for the whole export (shared"
                    " by its 2 disk streams); node limits: n1 none, n2 1000 KiB/s;"
                    " I/O priority: best-effort level 7")
    assert describe_status({"bwlimit": 0, "node_bwlimit": 0, "ionice": None}) is None


# --- real streams through the registry -----------------------------------------------


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    tmp = tmp_path_factory.mktemp("certs")
    ca_cert, ca_key = crypto.generate_cluster_ca("limit.test", 1)
    (tmp / "ca.pem").write_text(ca_cert)
    for name in ("a", "b"):
        cert, key = crypto.generate_node_certificate(ca_cert, ca_key, name, ["127.0.0.1"], 1)
        crypto.write_pem_pair(tmp / f"{name}.pem", cert, key)
    return (crypto.server_ssl_context(tmp / "b.pem", tmp / "ca.pem"),
            crypto.client_ssl_context(tmp / "a.pem", tmp / "ca.pem"))


def test_limited_streams_copy_exactly_and_report_their_limits(
        contexts: tuple[ssl.SSLContext, ssl.SSLContext], tmp_path: Path) -> None:
    server, client = contexts
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * MIB + 123))
    dest = tmp_path / "dest"
    prio = priority.IoPriority("best-effort", 7)
    recv_opts = registry.StreamOptions(listen_timeout=30, progress_timeout=30,
                                       node_bwlimit=64 * 1024, io_priority=prio)
    send_opts = registry.StreamOptions(listen_timeout=30, progress_timeout=30,
                                       bwlimit=32 * 1024, bwlimit_group="g1",
                                       node_bwlimit=64 * 1024, io_priority=prio)
    recv = registry.start_receive("lim-r", "t", "127.0.0.1", server, "magic-limit-01", None,
                                  lambda n: DiskWriter.create(dest, n), None, recv_opts)
    send = registry.start_send("lim-s", "t", "127.0.0.1", recv.port or 0, client,
                               "magic-limit-01", lambda: DiskReader(src), "none", send_opts)
    assert send.join(60) and recv.join(60)
    assert (send.success, recv.success) == (True, True), (send.error, recv.error)
    assert dest.read_bytes() == src.read_bytes()
    assert send.status()["bwlimit"] == 32 * 1024
    assert send.status()["node_bwlimit"] == recv.status()["node_bwlimit"] == 64 * 1024
    assert recv.status()["bwlimit"] == 0  # the export limit is the sender's
    assert recv.status()["ionice"] == "best-effort level 7"
    registry.cleanup(["lim-r", "lim-s"])
    assert "g1" not in ratelimit.active_groups()
