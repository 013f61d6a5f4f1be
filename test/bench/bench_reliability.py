"""Master throughput under load, on a real 3-node loopback cluster.

16 LUXI clients submit no-op jobs (OpTestDelay 0) as fast as they can.
Baseline: the same submission with nothing else running, measured in the
same run; then again while 4 exports copy 64 MiB of incompressible data
each.  Prints jobs/s of both, the ratio (goal: >= 0.5, exports must not
starve the queue) and the master's RSS growth per 1,000 jobs.

Usage: bench_reliability.py [jobs per client, default 200]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ganeti import constants, daemon, luxi, opcodes
from ganeti.tools.local_cluster import SOURCE_TOP, LocalCluster

CLIENTS = 16
EXPORTS = 4


def _rss_kib(cluster: LocalCluster) -> int:
    pid = daemon.read_pid(cluster.master.paths.pid_file(constants.MASTERD))
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def _burst(cluster: LocalCluster, per_client: int) -> float:
    """Submit and wait for CLIENTS * per_client jobs; returns jobs/s."""
    socket_path = str(cluster.master.paths.master_socket)
    ids: list[int] = []
    lock = threading.Lock()

    def submit() -> None:
        op = opcodes.OpTestDelay.create(duration=0)
        with luxi.Client(socket_path) as cl:
            mine = [cl.submit_job([op]) for _ in range(per_client)]
        with lock:
            ids.extend(mine)

    start = time.monotonic()
    threads = [threading.Thread(target=submit) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with luxi.Client(socket_path) as cl:
        while True:
            rows = cl.query_jobs(ids, ["status"])
            if all(r[0] in constants.JOBS_FINALIZED for r in rows):
                break
            time.sleep(0.05)
    return len(ids) / (time.monotonic() - start)


def main() -> int:
    per_client = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory(prefix="bench-rel-") as tmp:
        cluster = LocalCluster.create_and_start(Path(tmp), node_count=3)
        try:
            for idx in range(EXPORTS):
                cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node1", "--disk",
                            "0:size=80M", "--no-start", f"bench{idx}", check=True)
            for path in (cluster.master.paths.file_storage_dir).rglob("*disk0*"):
                with open(path, "r+b") as handle:
                    handle.write(os.urandom(64 << 20))
            rss0 = _rss_kib(cluster)
            baseline = _burst(cluster, per_client)
            exports = [subprocess.Popen(
                [sys.executable, str(SOURCE_TOP / "scripts" / "gnt-backup"), "export", "-n",
                 ("node2", "node3")[idx % 2], "--compress", "gzip", f"bench{idx}"],
                env=cluster.env(), stdout=subprocess.DEVNULL) for idx in range(EXPORTS)]
            time.sleep(0.5)  # let the copies start
            loaded = _burst(cluster, per_client)
            codes = [proc.wait() for proc in exports]
            rss1 = _rss_kib(cluster)
        finally:
            cluster.stop(log=lambda _m: None)
    jobs = 2 * CLIENTS * per_client
    print(f"baseline (no exports): {baseline:.0f} jobs/s")
    print(f"with {EXPORTS} exports:    {loaded:.0f} jobs/s  ratio {loaded / baseline:.2f}"
          f" (goal >= 0.5); exports exit codes {codes}")
    print(f"master RSS {rss0 // 1024} -> {rss1 // 1024} MiB,"
          f" {(rss1 - rss0) / (jobs / 1000):.0f} KiB per 1,000 jobs")
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
