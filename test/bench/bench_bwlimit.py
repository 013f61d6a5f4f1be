"""Bandwidth limits of the transfer engine on a real 3-node loopback cluster.

Streams go from node2 to node3 through the real node daemons (TLS, framing,
checksums), driven by ``run_transfers`` as an export drives them; every rate
is the streams' own clock (connect to the receiver's final ACK), so job and
CLI overheads stay out.  Printed as ratios achieved/limit:

* one stream at a few per-export limits (default 10, 50 and 200 MiB/s), each
  run long enough (``--seconds``) that the 100 ms burst hardly counts;
* the per-export limit with the export's 2 disk streams sharing it;
* the node-wide limit (``Node.backup_bwlimit`` of node2) with 2 concurrent
  exports of one disk each: their aggregate against the node limit;
* unlimited throughput: no limiter (the code path of every unlimited stream,
  as before this feature) against the limiter path with a limit far above
  what the machine reaches (its bookkeeping cost), interleaved.

With ``--before-rev REV`` (e.g. the commit before this feature) also: the
sender and receiver modules of REV against today's, unlimited, in one
process over TLS on 127.0.0.1 (no daemons), interleaved: the "as before"
comparison proper.

A limit above what this machine reaches unlimited cannot be met; such rows
say so.  Run: .venv/bin/python test/bench/bench_bwlimit.py [--runs 2]
[--seconds 3] [--limits 10,50,200] [--tmpdir /dev/shm] [--before-rev REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

from ganeti import constants, crypto, daemon
from ganeti.config import ConfigStore
from ganeti.server.masterd import build_rpc_runner
from ganeti.storage.extents import DiskReader, DiskWriter
from ganeti.tools.local_cluster import LocalCluster, random_subnet
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.master.coordinator import DiskTransfer, TransferResult, run_transfers
from ganeti.transfer.master.policy import TransferLimits
from ganeti.transfer.node import receiver as receiver_now
from ganeti.transfer.node import sender as sender_now

MIB = 1024 * 1024
KIB_PER_MIB = 1024
# a limit no stream reaches here: measures the limiter's own cost
HUGE_MIB = 1024 * 1024


def _fill(path: Path, size: int) -> None:
    """Mostly data, cheap to generate: 16 random 4 MiB blocks repeated."""
    blocks = [os.urandom(BLOCK_SIZE) for _ in range(16)]
    with open(path, "wb") as handle:
        for index in range(size // BLOCK_SIZE):
            handle.write(blocks[index % len(blocks)])


class Bench:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.src, self.dst = cluster.nodes[1], cluster.nodes[2]
        paths = cluster.master.paths
        self.rpc = build_rpc_runner(paths, ConfigStore(paths.cluster_conf_file))
        self.sources: dict[int, str] = {}
        self.src_dir = self.src.paths.file_storage_dir / "bench"
        self.src_dir.mkdir(parents=True, exist_ok=True)
        (self.dst.paths.export_dir / "bench").mkdir(parents=True, exist_ok=True)
        self.daemons = [pid for n in (self.src, self.dst)
                        if (pid := daemon.read_pid(n.paths.pid_file(constants.NODED)))]

    def cpu(self) -> float:
        """CPU seconds so far of both node daemons (sender and receiver)."""
        total = 0.0
        for pid in self.daemons:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def source(self, size: int) -> str:
        """The wire path of a source file of ``size`` bytes (made once)."""
        if size not in self.sources:
            _fill(self.src_dir / f"src-{size}", size)
            self.sources[size] = f"/var/lib/ganeti/file-storage/bench/src-{size}"
        return self.sources[size]

    def spec(self, size: int, name: str) -> DiskTransfer:
        return DiskTransfer(
            name, self.src.name, {"kind": "file", "path": self.source(size)},
            self.dst.name, {"kind": "file", "path": f"/srv/ganeti/export/bench/{name}"},
            size=size, dest_address=self.dst.address)

    def transfer(self, specs: list[DiskTransfer], limits: TransferLimits | None
                 ) -> list[TransferResult]:
        results = run_transfers(self.rpc, specs, lambda _m: None, poll_interval=0.25,
                                report_interval=3600, limits=limits)
        for spec, res in zip(specs, results, strict=True):
            if not res.success:
                raise RuntimeError(res.error)
            (self.dst.paths.export_dir / "bench" / spec.label).unlink()
        return results

    def one_stream(self, size: int, limit_mib: float | None) -> float:
        """MiB/s of one stream (limit None: no limiter at all)."""
        limits = None if limit_mib is None else TransferLimits(
            bwlimit=int(limit_mib * KIB_PER_MIB))
        (res,) = self.transfer([self.spec(size, "one")], limits)
        return res.bytes / MIB / res.elapsed

    def shared_export(self, size: int, limit_mib: float) -> float:
        """Aggregate MiB/s of one export's 2 disk streams under one export limit."""
        results = self.transfer([self.spec(size, "d0"), self.spec(size, "d1")],
                                TransferLimits(bwlimit=int(limit_mib * KIB_PER_MIB)))
        return sum(r.bytes for r in results) / MIB / max(r.elapsed for r in results)

    def node_limit(self, size: int, limit_mib: float) -> float:
        """Aggregate MiB/s of 2 concurrent exports under node2's limit."""
        limits = TransferLimits(node_bwlimits={self.src.name: int(limit_mib * KIB_PER_MIB)})
        results: list[TransferResult] = []
        errors: list[BaseException] = []
        start_lock = threading.Barrier(2)

        def export(name: str) -> None:
            try:
                start_lock.wait()
                results.extend(self.transfer([self.spec(size, name)], limits))
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=export, args=(f"e{i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        # the span of both streams: they started within one RPC of each other
        return sum(r.bytes for r in results) / MIB / max(r.elapsed for r in results)


def _module_at(rev: str, name: str) -> types.ModuleType:
    """``ganeti.transfer.node.<name>`` as it was at git revision ``rev``.

    Revisions before the master/node split kept it as ``ganeti.transfer.<name>``
    and imported the node-side names from the package and ``ioprio``; those
    are lent to the old source while it loads.
    """
    top = Path(__file__).resolve().parents[2]
    for path in (f"lib/transfer/node/{name}.py", f"lib/transfer/{name}.py"):
        shown = subprocess.run(["git", "-C", str(top), "show", f"{rev}:{path}"],
                               capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"{rev} has no transfer module {name}: {shown.stderr.strip()}")
    spec = importlib.util.spec_from_loader(f"bench_before_{name}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    import ganeti.transfer
    import ganeti.transfer.node
    from ganeti.transfer.node import ioprio

    lent = {"BufferPool": ganeti.transfer.node.BufferPool,
            "Progress": ganeti.transfer.node.Progress}
    for attr, value in lent.items():
        setattr(ganeti.transfer, attr, value)
    sys.modules.setdefault("ganeti.transfer.ioprio", ioprio)
    try:
        exec(compile(shown.stdout, f"{rev}:{path}", "exec"), module.__dict__)
    finally:
        for attr in lent:
            delattr(ganeti.transfer, attr)
        if sys.modules.get("ganeti.transfer.ioprio") is ioprio:
            del sys.modules["ganeti.transfer.ioprio"]
    return module


def in_process(src: Path, dest: Path, certs: Path, sender: types.ModuleType,
               receiver: types.ModuleType) -> tuple[float, float]:
    """(MiB/s, CPU s/GiB) of one unlimited stream between two threads of this process."""
    server = crypto.server_ssl_context(certs / "b.pem", certs / "ca.pem")
    client = crypto.client_ssl_context(certs / "a.pem", certs / "ca.pem")
    listener = receiver.Listener("127.0.0.1")
    size = src.stat().st_size
    result: dict[str, Any] = {}

    def receive() -> None:
        sock = listener.accept(server, 30)
        with sock:
            result["recv"] = receiver.receive_stream(
                sock, "magic-bench-0001", size, lambda n: DiskWriter.create(dest, n))

    thread = threading.Thread(target=receive)
    thread.start()
    start, cpu = time.monotonic(), time.process_time()
    with sender.connect("127.0.0.1", listener.port, client, 30) as sock, \
            DiskReader(src) as reader:
        sent = sender.send_stream(sock, reader, "magic-bench-0001")
    thread.join()
    elapsed, cpu = time.monotonic() - start, time.process_time() - cpu
    assert result.get("recv") == sent
    dest.unlink()
    return size / MIB / elapsed, cpu * 1024 * MIB / size


def before_vs_now(rev: str, tmp: Path, size: int, runs: int) -> str:
    certs = tmp / "certs"
    certs.mkdir()
    ca_cert, ca_key = crypto.generate_cluster_ca("bench.test", 1)
    (certs / "ca.pem").write_text(ca_cert)
    for name in ("a", "b"):
        cert, key = crypto.generate_node_certificate(ca_cert, ca_key, name, ["127.0.0.1"], 1)
        crypto.write_pem_pair(certs / f"{name}.pem", cert, key)
    src = tmp / "in-process-src"
    _fill(src, size)
    old = (_module_at(rev, "sender"), _module_at(rev, "receiver"))
    now = (sender_now, receiver_now)
    rates: dict[str, list[float]] = {"before": [], "now": []}
    cpus: dict[str, list[float]] = {"before": [], "now": []}
    in_process(src, tmp / "warm", certs, *now)
    for _ in range(runs):
        for name, (snd, rcv) in (("before", old), ("now", now)):
            rate, cpu = in_process(src, tmp / "dest", certs, snd, rcv)
            rates[name].append(rate)
            cpus[name].append(cpu)
    med = {name: statistics.median(values) for name, values in rates.items()}
    best_cpu = {name: min(values) for name, values in cpus.items()}
    return (f"in-process unlimited stream, {size // MIB} MiB, {runs} runs: {rev}"
            f" median {med['before']:.0f} MiB/s, {best_cpu['before']:.2f} CPU s/GiB (best);"
            f" now {med['now']:.0f} MiB/s, {best_cpu['now']:.2f} CPU s/GiB; ratios now/before:"
            f" rate {med['now'] / med['before']:.3f}, CPU per byte"
            f" {best_cpu['now'] / best_cpu['before']:.3f} (runs before"
            f" {', '.join(f'{r:.0f}' for r in rates['before'])};"
            f" now {', '.join(f'{r:.0f}' for r in rates['now'])})")


def _size(limit_mib: float, seconds: float, streams: int = 1) -> int:
    """Bytes for ``seconds`` at the limit, whole blocks, at least 4 blocks."""
    return max(4, int(limit_mib * MIB * seconds / streams) // BLOCK_SIZE) * BLOCK_SIZE


def _row(label: str, limit: float, rates: list[float], unlimited: float) -> None:
    ratios = [r / limit for r in rates]
    line = (f"{label:<46}{limit:8.0f} {statistics.mean(rates):8.1f}"
            f"   {statistics.mean(ratios):5.3f}  ({min(ratios):.3f}-{max(ratios):.3f})")
    if limit > 0.9 * unlimited:
        line += "  limit above what this machine reaches"
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="target duration of one limited run")
    parser.add_argument("--limits", default="10,50,200", help="MiB/s, comma separated")
    parser.add_argument("--node-limit", type=float, default=50.0, help="MiB/s")
    parser.add_argument("--unlimited-mib", type=int, default=512)
    parser.add_argument("--unlimited-runs", type=int, default=5,
                        help="runs of the unlimited pair (noisier than the limited ones)")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--before-rev", default=None,
                        help="also compare today's unlimited stream with this git revision's")
    opts = parser.parse_args()
    limits = [float(v) for v in opts.limits.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-bwlimit-", dir=opts.tmpdir))
    cluster = LocalCluster.create(tmp / "cluster", 3, subnet=random_subnet())
    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    try:
        cluster.start(log=lambda _m: None)
        bench = Bench(cluster)
        big = opts.unlimited_mib * MIB
        bench.one_stream(big, None)  # warm-up: page cache, daemons
        variants: dict[str, Any] = {
            "unlimited": lambda: bench.one_stream(big, None),
            "huge": lambda: bench.one_stream(big, HUGE_MIB)}
        for limit in limits:
            variants[f"one/{limit}"] = (
                lambda lim=limit: bench.one_stream(_size(lim, opts.seconds), lim))
        mid = limits[len(limits) // 2]
        variants["shared"] = lambda: bench.shared_export(_size(mid, opts.seconds, 2), mid)
        variants["node"] = lambda: bench.node_limit(
            _size(opts.node_limit, opts.seconds, 2), opts.node_limit)
        for run in range(max(opts.runs, opts.unlimited_runs)):
            # interleaved: load changes hit every variant
            for name, variant in variants.items():
                if run >= (opts.unlimited_runs if name in ("unlimited", "huge")
                           else opts.runs):
                    continue
                os.sync()
                before = bench.cpu()
                rates.setdefault(name, []).append(variant())
                cpu.setdefault(name, []).append(bench.cpu() - before)
        bench.rpc.close()
        history = (before_vs_now(opts.before_rev, tmp, big, opts.unlimited_runs)
                   if opts.before_rev else None)
    finally:
        cluster.stop(log=lambda _m: None)
        shutil.rmtree(tmp, ignore_errors=True)

    unlimited = max(rates["unlimited"])
    print(f"node2 -> node3 on loopback, cluster TLS, no compression; mean of {opts.runs}"
          f" interleaved runs (range); about {opts.seconds:g} s per limited run")
    print(f"{'variant':<46}{'limit':>8} {'MiB/s':>8}   achieved/limit")
    for limit in limits:
        _row("one stream, per-export limit", limit, rates[f"one/{limit}"], unlimited)
    _row("one export, 2 disk streams share its limit", mid, rates["shared"], unlimited)
    _row("2 exports at once, node2's node limit", opts.node_limit, rates["node"],
         unlimited)
    unlimited_med = statistics.median(rates["unlimited"])
    huge_med = statistics.median(rates["huge"])
    huge = max(rates["huge"])
    gib = opts.unlimited_mib / 1024
    cpu_plain, cpu_huge = min(cpu["unlimited"]) / gib, min(cpu["huge"]) / gib
    print(f"unlimited, no limiter (as before): {unlimited:.0f} MiB/s, node daemons"
          f" {cpu_plain:.2f} CPU s/GiB (best of {opts.unlimited_runs}; runs"
          f" {', '.join(f'{r:.0f}' for r in rates['unlimited'])})")
    print(f"unlimited, limiter path at {HUGE_MIB // 1024} GiB/s: {huge:.0f} MiB/s,"
          f" {cpu_huge:.2f} CPU s/GiB (runs {', '.join(f'{r:.0f}' for r in rates['huge'])})")
    print(f"limiter path / no limiter: rate {huge / unlimited:.3f} (best),"
          f" {huge_med / unlimited_med:.3f} (median), CPU per byte"
          f" {cpu_huge / cpu_plain:.3f} (best)")
    if history:
        print(history)
    return 0


if __name__ == "__main__":
    sys.exit(main())
