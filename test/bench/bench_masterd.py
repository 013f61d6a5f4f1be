"""End-to-end job engine speed through a real ganeti-masterd over LUXI.

8 client threads (one LUXI connection each) submit OpTestDelay(0) jobs and
follow each to its end with WaitForJobChange, as gnt-* commands do.  The
master runs the full path: LUXI framing, durable sqlite queue, worker pool,
processor with BGL and LU phases.  Prints durable jobs/s and the
submit->running latency (client submit time to the opcode's exec timestamp)
p50/p99, and as the baseline from the same run the LUXI round trip of a
trivial call (QueryJobs of one job) on one connection.

Goals (issue "Engine"): p50 < 20 ms, p99 < 100 ms, >= 300 jobs/s.

Usage: bench_masterd.py [jobs per client, default 200]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from ganeti import constants, luxi, opcodes
from ganeti.tools.local_cluster import LocalCluster

CLIENTS = 8


def follow(cl: luxi.Client, job_id: int) -> None:
    prev = None
    while True:
        res = cl.wait_for_job_change_once(job_id, ["status"], prev, None, 30)
        if res is None:
            raise RuntimeError(f"job {job_id} lost")
        if res == luxi.JOB_NOTCHANGED:
            continue
        prev = res[0]
        if prev[0] in constants.JOBS_FINALIZED:
            if prev[0] != constants.OP_STATUS_SUCCESS:
                raise RuntimeError(f"job {job_id} ended {prev[0]}")
            return


def client(address: str, count: int, latencies: list[float],
           barrier: threading.Barrier) -> None:
    op = opcodes.OpTestDelay.create(duration=0.0)
    with luxi.Client(address) as cl:
        barrier.wait()
        for _ in range(count):
            submitted = time.time()
            job_id = cl.submit_job([op])
            follow(cl, job_id)
            (row,) = cl.query_jobs([job_id], ["opexec"])
            sec, usec = row[0][0]
            latencies.append(sec + usec / 1e6 - submitted)


def luxi_round_trip(address: str, rounds: int = 2000) -> float:
    with luxi.Client(address) as cl:
        job_id = cl.submit_job([opcodes.OpTestDelay.create(duration=0.0)])
        follow(cl, job_id)
        start = time.perf_counter()
        for _ in range(rounds):
            cl.query_jobs([job_id], ["status"])
        return (time.perf_counter() - start) / rounds


def main() -> int:
    per_client = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory(prefix="bench-masterd-") as tmp:
        cluster = LocalCluster.create_and_start(Path(tmp) / "c", node_count=1)
        try:
            address = str(cluster.master.paths.master_socket)
            rtt = luxi_round_trip(address)
            latencies: list[float] = []
            barrier = threading.Barrier(CLIENTS + 1)
            threads = [threading.Thread(target=client,
                                        args=(address, per_client, latencies, barrier))
                       for _ in range(CLIENTS)]
            for thread in threads:
                thread.start()
            barrier.wait()
            start = time.perf_counter()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - start
        finally:
            cluster.stop(log=lambda _m: None)
    jobs = CLIENTS * per_client
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    rate = jobs / elapsed
    print(f"clients={CLIENTS} jobs={jobs} elapsed={elapsed:.2f}s")
    print(f"baseline LUXI round trip (QueryJobs): {rtt * 1e3:.3f} ms")
    print(f"durable jobs/s:        {rate:8.1f}   (goal >= 300)  "
          f"= {rate * rtt:.2f} x the round-trip rate of one connection")
    print(f"submit->running p50:   {p50:8.2f} ms (goal < 20)   = {p50 / 1e3 / rtt:.1f} round trips")
    print(f"submit->running p99:   {p99:8.2f} ms (goal < 100)  = {p99 / 1e3 / rtt:.1f} round trips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
