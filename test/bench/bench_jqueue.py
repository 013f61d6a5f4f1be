"""Job queue throughput and start latency.

8 client threads each submit a no-op job and follow it to the end, over and
over.  Prints durable jobs/s, submit->running latency (p50/p99) and, as a
baseline from the same disk and run, raw sqlite single-row commits/s (WAL,
synchronous=FULL).  Goals: p50 < 20 ms, p99 < 100 ms, >= 300 jobs/s.

Usage: bench_jqueue.py [jobs per client, default 250]
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ganeti import constants, opcodes
from ganeti.jqueue import JobQueue, OpExecCallbacks

CLIENTS = 8


class NoopExecutor:
    def execute_opcode(self, op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
        cbs.notify_start()
        return None


def follow(queue: JobQueue, job_id: int) -> None:
    prev: Any = None
    while True:
        res = queue.wait_for_job_change(job_id, ["status"], prev, None, 60.0)
        if res is None:
            raise RuntimeError(f"job {job_id} lost")
        if res == "nochange":
            continue
        prev = res[0]
        if prev[0] in constants.JOBS_FINALIZED:
            if prev[0] != constants.OP_STATUS_SUCCESS:
                raise RuntimeError(f"job {job_id} ended {prev[0]}")
            return


def client(queue: JobQueue, count: int, latencies: list[float], start: threading.Barrier
           ) -> None:
    op = opcodes.OpTestDelay.create(duration=0.0)
    start.wait()
    for _ in range(count):
        submitted = time.time()
        job_id = queue.submit_job([op])
        follow(queue, job_id)
        (row,) = queue.query_jobs([job_id], ["opexec"])
        assert row is not None
        sec, usec = row[0][0]
        latencies.append(sec + usec / 1e6 - submitted)


def bench_queue(tmp: Path, per_client: int) -> tuple[float, list[float]]:
    queue = JobQueue(tmp / "queue.db", NoopExecutor())
    queue.start()
    latencies: list[float] = []
    start = threading.Barrier(CLIENTS + 1)
    threads = [threading.Thread(target=client, args=(queue, per_client, latencies, start))
               for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    queue.shutdown(timeout=60)
    if len(latencies) != CLIENTS * per_client:
        raise RuntimeError("some clients failed")
    return len(latencies) / elapsed, latencies


def bench_raw_commits(tmp: Path, count: int = 2000) -> float:
    conn = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    began = time.perf_counter()
    for num in range(count):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (v) VALUES (?)", (str(num),))
        conn.execute("COMMIT")
    rate = count / (time.perf_counter() - began)
    conn.close()
    return rate


def main() -> None:
    per_client = int(sys.argv[1]) if len(sys.argv) > 1 else 250
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        raw = bench_raw_commits(tmp)
        jobs_per_s, latencies = bench_queue(tmp, per_client)
    cuts = statistics.quantiles([x * 1000 for x in latencies], n=100)
    print(f"jobs: {len(latencies)} ({CLIENTS} clients)")
    print(f"durable jobs/s: {jobs_per_s:.0f}")
    print(f"submit->running latency: p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms")
    print(f"baseline sqlite WAL synchronous=FULL commits/s: {raw:.0f}")
    print(f"ratio jobs/s : commits/s = {jobs_per_s / raw:.2f}")


if __name__ == "__main__":
    main()
